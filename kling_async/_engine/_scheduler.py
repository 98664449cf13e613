"""The poll scheduler: one task per client owns a min-heap of due polls."""

import bisect
import collections
import functools
import heapq
import itertools
import logging
import math
import random
from collections.abc import Mapping

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._core.clock import Clock, wait_event_until
from .._core.config import WEBHOOK_POLL_GRACE, WEBHOOK_POLL_INTERVAL, PollPolicy
from .._core.errors import JobTimedOut, KlingError, RateLimited, Scope, TaskFailed
from .._core.models import Kind, Task, TaskStatus
from ._job import Job, Phase, TaskApi
from ._limits import RateLimiter, SlotLimiter
from ._outcome import JobStatus, Outcome

__all__ = ["PollScheduler", "RunningMedian", "SchedulerStatistics"]

logger = logging.getLogger("kling_async")

_DEADLINE = -1  # heap entries with this generation are deadlines, not polls
_LIST_FAILURES = 3  # list pages failing in a row before list polling is turned off
# Hints for task ids not known yet (a delivery outran its create's answer): remembered,
# this many at most, for this many seconds, and applied when the task is watched.
_EARLY_HINTS = 4096
_EARLY_HINT_TTL = 300.0


class RunningMedian:
    """The median of the last ``window`` samples."""

    def __init__(self, window: int) -> None:
        self._recent: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []
        self._window = window

    def add(self, value: float) -> None:
        """Remember one sample (forgetting the oldest past the window)."""
        if len(self._recent) == self._window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(value)
        bisect.insort(self._sorted, value)

    def __len__(self) -> int:
        return len(self._sorted)

    def median(self) -> float | None:
        """Return the median, or None before the first sample."""
        size = len(self._sorted)
        if size == 0:
            return None
        middle = size // 2
        if size % 2:
            return self._sorted[middle]
        return (self._sorted[middle - 1] + self._sorted[middle]) / 2


@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """The poll scheduler at one instant.

    Attributes:
        watched: Tasks being polled (timed-out ones included).
        overdue: Watched tasks whose job already timed out.
        queries: Per-task queries sent.
        lists: List-endpoint pages read.
        query_errors: Queries or list pages that failed.
        expected: The expected run time per kind now used for first polls, seconds.
        list_enabled: Whether list polling is on per kind (it turns off on 404/405).
    """

    watched: int
    overdue: int
    queries: int
    lists: int
    query_errors: int
    expected: Mapping[Kind, float]
    list_enabled: Mapping[Kind, bool]


class PollScheduler:
    """Polls every running task of one client, from one background task.

    ``watch(job)`` adds a task; the scheduler queries it when due (bounded concurrency,
    shared request rate), learns run times per kind, ends the job when the server
    says so, and frees the job's account slots then. A job past its deadline ends
    TIMED_OUT for its owner while its task keeps its slots and is polled slowly.
    """

    def __init__(
        self,
        api: TaskApi,
        clock: Clock,
        policy: PollPolicy,
        *,
        max_queries: int,
        rate: RateLimiter,
        slots: Mapping[Kind, SlotLimiter],
        rng: random.Random,
    ) -> None:
        self._api = api
        self._clock = clock
        self._policy = policy
        self._rate = rate
        self._slots = slots
        self._rng = rng
        self._queries = anyio.Semaphore(max_queries)
        self._heap: list[tuple[float, int, int, Job]] = []
        self._seq = itertools.count()
        self._by_task: dict[str, Job] = {}
        self._early: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._running = dict.fromkeys(Kind, 0)
        self._wake = anyio.Event()
        self._sleep_target = -math.inf
        self._medians = {kind: RunningMedian(policy.window) for kind in Kind}
        self._list_enabled = dict.fromkeys(Kind, policy.use_list)
        self._listing = dict.fromkeys(Kind, False)
        self._list_failures = dict.fromkeys(Kind, 0)
        self._next_list = dict.fromkeys(Kind, -math.inf)
        self._tg: anyio.abc.TaskGroup | None = None
        self._n_queries = 0
        self._n_lists = 0
        self._n_errors = 0
        # Set by the engine: the client's time scale and the webhook pace (not PollPolicy's).
        self.time_scale = 1.0
        self.webhook_interval = WEBHOOK_POLL_INTERVAL
        self.webhook_grace = WEBHOOK_POLL_GRACE

    # -- public -----------------------------------------------------------------------------

    def expected(self, kind: Kind) -> float:
        """Return the expected run time of ``kind`` (learned median, else the prior)."""
        learned = self._medians[kind].median()
        if learned is not None:
            return learned
        return self._policy.expected_video if kind is Kind.VIDEO else self._policy.expected_image

    def learn(self, kind: Kind, seconds: float) -> None:
        """Record the run time of one finished task of ``kind``."""
        if seconds > 0 and math.isfinite(seconds):
            self._medians[kind].add(seconds)

    async def watch(self, job: Job, task: Task | None = None, *, adopted: bool = False) -> None:
        """Poll ``job``'s task until it ends (``task``: what the create or lookup answered).

        A task that was adopted rather than just created is polled soon, since it may
        have been running for a while; one hinted before it was known is polled now.
        """
        assert job.task_id is not None
        now = self._clock.now()
        job.submitted_at = now
        job.last_running_at = now
        job.polls = 0
        if job.task_id not in self._by_task:
            self._running[job.kind] += 1
        self._by_task[job.task_id] = job
        if job.deadline is not None:
            self._push(job.deadline, _DEADLINE, job)
        hinted = self._early.pop(job.task_id, -math.inf) >= now - _EARLY_HINT_TTL
        if task is not None and task.status.is_terminal:
            await self._finish_task(job, task)
            return
        covered = self._webhook_delay(job, now)
        if hinted:
            first = 0.0
        elif adopted or (task is not None and task.status is TaskStatus.PROCESSING):
            first = self._policy.min_interval
        elif covered is not None:
            first = covered
        else:
            first = self._policy.first_poll * self.expected(job.kind)
        self._schedule(job, now + first)

    def refresh(self, task_id: str) -> bool:
        """Make ``task_id`` due now (a webhook delivery or a caller's hint).

        A task whose query is in flight is not asked twice at once: it is asked again
        after the answer, unless that answer is its end. An id not known yet (its
        create's answer may still be on its way) is remembered for a few minutes and
        made due when its task is watched.

        Returns:
            False when no running task has that id.
        """
        job = self._by_task.get(task_id)
        if job is None:
            self._remember_early(task_id)
            return False
        if job.phase is not Phase.RUNNING:
            return False
        if job.querying:
            job.recheck = True
            return True
        self._schedule(job, self._clock.now())
        return True

    def statistics(self) -> SchedulerStatistics:
        """Return the scheduler's counters."""
        return SchedulerStatistics(
            watched=len(self._by_task),
            overdue=sum(1 for job in self._by_task.values() if job.timed_out),
            queries=self._n_queries,
            lists=self._n_lists,
            query_errors=self._n_errors,
            expected={kind: self.expected(kind) for kind in Kind},
            list_enabled=dict(self._list_enabled),
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The service: poll due tasks until cancelled (the client closes)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await self._loop(tg)
            finally:
                self._tg = None

    # -- the loop ----------------------------------------------------------------------------

    def _push(self, due: float, gen: int, job: Job) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), gen, job))
        if due < self._sleep_target:
            self._wake.set()

    def _schedule(self, job: Job, due: float) -> None:
        job.poll_gen += 1
        self._push(due, job.poll_gen, job)

    def _remember_early(self, task_id: str) -> None:
        now = self._clock.now()
        early = self._early
        early[task_id] = now
        early.move_to_end(task_id)
        while len(early) > _EARLY_HINTS or next(iter(early.values())) < now - _EARLY_HINT_TTL:
            early.popitem(last=False)

    def _answered(self, job: Job) -> bool:
        """The query in flight for ``job`` answered; returns whether it was hinted meanwhile."""
        recheck = job.recheck
        job.querying = job.recheck = False
        return recheck

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        while True:
            now = self._clock.now()
            due: list[Job] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, gen, job = heapq.heappop(self._heap)
                if job.phase is not Phase.RUNNING:
                    continue
                if gen == _DEADLINE:
                    if not job.timed_out:
                        await self._time_out(job)
                elif gen == job.poll_gen:
                    # In flight: stale entries are dropped and refreshes wait for the answer.
                    job.poll_gen += 1
                    job.querying = True
                    due.append(job)
            if due:
                await self._dispatch(due, tg)
                await anyio.lowlevel.checkpoint()  # never starve the loop, whatever is due
                continue
            target = self._heap[0][0] if self._heap else None
            self._sleep_target = math.inf if target is None else target
            try:
                await wait_event_until(self._clock, self._wake, target)
            finally:
                self._sleep_target = -math.inf
            if self._wake.is_set():
                self._wake = anyio.Event()

    async def _dispatch(self, due: list[Job], tg: anyio.abc.TaskGroup) -> None:
        by_kind: dict[Kind, list[Job]] = {}
        for job in due:
            by_kind.setdefault(job.kind, []).append(job)
        now = self._clock.now()
        for kind, jobs in by_kind.items():
            if self._list_enabled[kind] and self._running[kind] > 1:
                if self._listing[kind] or now < self._next_list[kind]:
                    # A list is in flight or was just read: these wait for the next one.
                    later = max(now + self._policy.list_interval / 2, self._next_list[kind])
                    for job in jobs:
                        self._answered(job)
                        self._schedule(job, later)
                    continue
                self._listing[kind] = True
                self._next_list[kind] = now + self._policy.list_interval
                await self._queries.acquire()
                tg.start_soon(self._list_poll, kind, jobs)
                continue
            for job in jobs:
                await self._queries.acquire()
                tg.start_soon(self._poll_one, job)

    # -- polling -----------------------------------------------------------------------------

    async def _poll_one(self, job: Job, *, holding: bool = True) -> None:
        if not holding:
            await self._queries.acquire()
        try:
            assert job.task_id is not None
            await self._rate.acquire()
            self._n_queries += 1
            job.owner.count_request("query")
            try:
                task = await self._api.get_task(job.kind, job.task_id)
            except KlingError as exc:
                await self._query_failed(job, exc)
            else:
                await self._observe(job, task)
        finally:
            self._queries.release()

    async def _list_poll(self, kind: Kind, due: list[Job]) -> None:
        wanted = {job.task_id for job in due}
        seen: dict[str, Task] = {}
        try:
            # Newest first: the running tasks sit on the first page, so a page about twice
            # their number answers them without parsing hundreds of finished ones.
            size = min(self._policy.list_page_size, max(20, 2 * self._running[kind]))
            for page in range(1, self._policy.list_max_pages + 1):
                await self._rate.acquire()
                self._n_lists += 1
                for owner in {id(job.owner): job.owner for job in due}.values():
                    owner.count_request("list")
                tasks = await self._api.list_tasks(kind, page, size)
                seen.update((task.task_id, task) for task in tasks)
                if len(tasks) < size or wanted <= seen.keys():
                    break
        except KlingError as exc:
            self._n_errors += 1
            self._list_failures[kind] += 1
            gone = exc.http_status in (404, 405)
            if gone or self._list_failures[kind] >= _LIST_FAILURES:
                self._list_enabled[kind] = False
                logger.warning(
                    "list endpoint for %s failed (%s): falling back to per-task queries",
                    kind.value,
                    exc,
                    extra={"request_id": exc.request_id},
                )
            # Whatever broke the list, the due tasks are asked about one by one now.
            tg = self._tg
            for job in due:
                if job.phase is Phase.RUNNING and tg is not None:
                    tg.start_soon(functools.partial(self._poll_one, job, holding=False))
            return
        finally:
            self._listing[kind] = False
            self._queries.release()
        self._list_failures[kind] = 0
        due_ids = {job.task_id for job in due}
        for task_id, task in seen.items():
            watched = self._by_task.get(task_id)
            if watched is not None and (task.status.is_terminal or task_id in due_ids):
                await self._observe(watched, task)
        tg = self._tg
        for job in due:
            if job.task_id not in seen and job.phase is Phase.RUNNING and tg is not None:
                # Not on the pages read (older than they reach): ask for it by id.
                tg.start_soon(functools.partial(self._poll_one, job, holding=False))

    async def _query_failed(self, job: Job, exc: KlingError) -> None:
        self._n_errors += 1
        recheck = self._answered(job)
        if exc.scope is Scope.TRANSIENT:
            if isinstance(exc, RateLimited):
                self._rate.pause(
                    min(exc.retry_after or self._policy.min_interval, self._policy.max_interval)
                )
            logger.info(
                "query of task %s failed (%s); polling it again later",
                job.task_id,
                type(exc).__name__,
                extra={"job_key": job.key, "task_id": job.task_id, "request_id": exc.request_id},
            )
            if recheck:  # hinted meanwhile: soon, not at once (the server just failed)
                self._schedule(job, self._clock.now() + self._policy.min_interval)
            else:
                self._reschedule(job)
            return
        # The task cannot be followed any more (unknown task, key refused): the job ends.
        exc.job_key = exc.job_key or job.key
        exc.task_id = exc.task_id or job.task_id
        logger.warning(
            "query of task %s failed for good: %s",
            job.task_id,
            exc,
            extra={"job_key": job.key, "task_id": job.task_id, "request_id": exc.request_id},
        )
        await self._end(job, job.outcome(JobStatus.FAILED, self._clock.wall(), error=exc))

    async def _observe(self, job: Job, task: Task) -> None:
        if job.phase is not Phase.RUNNING:
            return
        recheck = self._answered(job)
        job.polls += 1
        if task.status.is_terminal:
            await self._finish_task(job, task)
        else:
            job.last_running_at = self._clock.now()
            if recheck:
                self._schedule(job, job.last_running_at)
            else:
                self._reschedule(job)

    def _webhook_delay(self, job: Job, now: float) -> float | None:
        """Seconds to the next safety poll of a task its webhook deliveries cover, else None.

        Covered until ``webhook_grace`` times the expected run time has passed since the
        task was created; a task still running then (its end delivery lost, or slow) is
        polled at the normal pace.
        """
        if not job.webhook or job.timed_out:
            return None
        resume_at = job.submitted_at + self.webhook_grace * self.expected(job.kind)
        if now >= resume_at:
            return None
        return min(self.webhook_interval, resume_at - now)

    def _reschedule(self, job: Job) -> None:
        if job.phase is not Phase.RUNNING:
            return
        policy = self._policy
        covered = self._webhook_delay(job, self._clock.now())
        if covered is not None:
            base = covered
        elif job.timed_out:
            base = policy.overdue_interval
        else:
            if job.next_interval <= 0:
                job.next_interval = policy.interval * self.expected(job.kind)
            else:
                job.next_interval *= policy.growth
            job.next_interval = min(
                policy.max_interval, max(policy.min_interval, job.next_interval)
            )
            base = job.next_interval
        spread = policy.jitter * (2.0 * self._rng.random() - 1.0)
        self._schedule(job, self._clock.now() + base * (1.0 + spread))

    async def _finish_task(self, job: Job, task: Task) -> None:
        now = self._clock.now()
        if (
            task.created_at is not None
            and task.updated_at is not None
            and task.updated_at > task.created_at
        ):
            self.learn(job.kind, (task.updated_at - task.created_at) / 1000 * self.time_scale)
        else:
            self.learn(job.kind, (job.last_running_at + now) / 2 - job.submitted_at)
        if task.status is TaskStatus.SUCCEEDED:
            outcome = job.outcome(JobStatus.SUCCEEDED, self._clock.wall(), task=task)
        else:
            error = TaskFailed(
                task.status_message or "the task failed", task_id=task.task_id, job_key=job.key
            )
            outcome = job.outcome(JobStatus.FAILED, self._clock.wall(), task=task, error=error)
        await self._end(job, outcome)

    async def _end(self, job: Job, outcome: Outcome) -> None:
        job.move(Phase.ENDED)
        if job.task_id is not None and self._by_task.pop(job.task_id, None) is not None:
            self._running[job.kind] -= 1
        if job.holds_slots:
            job.holds_slots = False
            self._slots[job.kind].release(job.slots)
        if not job.delivered:
            job.delivered = True
            await job.owner.finished(job, outcome)

    async def _time_out(self, job: Job) -> None:
        job.timed_out = True
        job.delivered = True
        error = JobTimedOut(
            "the job's deadline passed; its task may still be running on the server",
            task_id=job.task_id,
            job_key=job.key,
        )
        logger.info(
            "job %s timed out; task %s stays counted and is polled slowly until it ends",
            job.key,
            job.task_id,
            extra={"job_key": job.key, "task_id": job.task_id, "request_id": None},
        )
        await job.owner.finished(
            job, job.outcome(JobStatus.TIMED_OUT, self._clock.wall(), error=error)
        )
        # The next poll comes at the slow pace.
        self._reschedule(job)
