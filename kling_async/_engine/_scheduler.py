"""The poll scheduler: one timer task and a fixed set of poll workers per client.

The timer owns a min-heap of due times; what is due moves to a ready queue ordered by
how much its answer matters (a task a caller awaits or whose slot queued jobs wait for
comes first), and ``max_queries`` workers take from it, each request paying the shared
request rate. No task is started per poll and no task group per wait.

When a task is polled follows the learned run-time distribution of tasks like it
(:mod:`._runtime`): the first look at a low quantile, later ones spaced in log time by
``spacing / sqrt(hazard)`` (the spacing that minimises the expected detection delay,
relative to the run time, for a given number of looks: dense where tasks usually end,
sparse in the tail). While too few run times are known, a cold-start probe: a fraction
of the prior, then geometric growth.
"""

import bisect
import collections
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

from .._core.clock import Clock
from .._core.config import WEBHOOK_POLL_GRACE, WEBHOOK_POLL_INTERVAL, PollPolicy
from .._core.errors import JobTimedOut, KlingError, RateLimited, Scope, TaskFailed
from .._core.models import Kind, Task, TaskStatus
from ._job import Job, Phase, TaskApi
from ._limits import RateLimiter, SlotLimiter
from ._outcome import JobStatus, Outcome
from ._runtime import RuntimeModel, runtime_key

__all__ = ["PollScheduler", "RunningMedian", "SchedulerStatistics"]

logger = logging.getLogger("kling_async")

_DEADLINE = -1  # heap entries with this generation are deadlines, not polls
_LIST_FAILURES = 3  # list pages failing in a row before list polling is turned off
# Hints for task ids not known yet (a delivery outran its create's answer): remembered,
# this many at most, for this many seconds, and applied when the task is watched.
_EARLY_HINTS = 4096
_EARLY_HINT_TTL = 300.0
_HAZARD_STEP = 0.04  # log-time step over which the learned hazard is measured
_TAIL = 0.003  # survival below which a task is past the learned tail (geometric growth)
_SAVE_EVERY = 16  # learned run times between two saves of the model to attached stores
# Cold tasks of one kind that probe on the cold-start ladder at once; the others wait at
# the prior (growing by ``growth``) until the scouts' run times are learned and replan them.
_SCOUTS = 3
_LIST_SPACING = 0.4  # factor on the learned spacing while list polling is on
_LIST_TAIL_STEP = 0.05  # log-age step per look past the learned tail while list polling
_BATCH = 256  # due polls moved to the ready queue per pass of the timer


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
        expected: The expected (median) run time per kind now, seconds.
        list_enabled: Whether list polling is on per kind (it turns off on 404/405).
        learned: Run times learned per kind (the journal's included).
        ready: Polls due and waiting for a worker or the request rate.
    """

    watched: int
    overdue: int
    queries: int
    lists: int
    query_errors: int
    expected: Mapping[Kind, float]
    list_enabled: Mapping[Kind, bool]
    learned: Mapping[Kind, int] = attrs.field(factory=dict)
    ready: int = 0


@attrs.define(eq=False)
class _ListPoll:
    """One list poll of ``kind`` answering ``jobs`` (an item of the ready queue)."""

    kind: Kind
    jobs: list[Job]


class PollScheduler:
    """Polls every running task of one client: one timer task, ``max_queries`` workers.

    ``watch(job)`` adds a task; the scheduler queries it when due (bounded concurrency,
    shared request rate, the most awaited first), learns run times per kind and request
    shape, ends the job when the server says so, and frees the job's account slots then.
    A job past its deadline ends TIMED_OUT for its owner while its task keeps its slots
    and is polled slowly.
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
        self._workers = max_queries
        self._heap: list[tuple[float, int, int, Job]] = []
        self._ready: list[tuple[int, float, int, Job | _ListPoll]] = []
        self._idle: collections.deque[anyio.Event] = collections.deque()
        self._seq = itertools.count()
        self._by_task: dict[str, Job] = {}
        self._early: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._running = dict.fromkeys(Kind, 0)
        self._scouts = dict.fromkeys(Kind, 0)
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleep_target = -math.inf
        self.model = RuntimeModel(min_samples=policy.min_samples)
        self._stores: list[object] = []
        self._to_load: collections.deque[object] = collections.deque()
        self._replan: collections.deque[Job] = collections.deque()
        self._saved = 0
        self._save_wanted = anyio.Event()
        self._list_enabled = dict.fromkeys(Kind, policy.use_list)
        self._listing = dict.fromkeys(Kind, False)
        self._list_failures = dict.fromkeys(Kind, 0)
        self._next_list = dict.fromkeys(Kind, -math.inf)
        self._n_queries = 0
        self._n_lists = 0
        self._n_errors = 0
        # Set by the engine: the client's time scale and the webhook pace (not PollPolicy's).
        self.time_scale = 1.0
        self.webhook_interval = WEBHOOK_POLL_INTERVAL
        self.webhook_grace = WEBHOOK_POLL_GRACE

    # -- public -----------------------------------------------------------------------------

    def prior(self, kind: Kind) -> float:
        """Return the prior expected run time of ``kind`` (the policy's)."""
        return self._policy.expected_video if kind is Kind.VIDEO else self._policy.expected_image

    def expected(self, kind: Kind) -> float:
        """Return the expected run time of ``kind`` (learned median, else the prior)."""
        sketch = self.model.distribution(kind)
        median = sketch.quantile(0.5) if sketch is not None else None
        return median if median is not None else self.prior(kind)

    def learn(self, kind: Kind, seconds: float, key: str | None = None) -> None:
        """Record the run time of one finished task of ``kind`` (``key``: its shape)."""
        before = self.model.distribution(kind) is not None
        self.model.observe(kind, key, seconds)
        if not before and self.model.distribution(kind) is not None:
            self._replan_cold(kind)
        if self._stores and self.model.added - self._saved >= _SAVE_EVERY:
            self._save_wanted.set()

    def attach_store(self, store: object) -> None:
        """Start from the run-time model ``store`` keeps, and keep it there from now on.

        A store without the optional ``load_runtime_model``/``save_runtime_model``
        capability is ignored. The model is read in the background (the caller does not
        wait for the journal): a model learned in this process already is kept (it is
        the fresher), otherwise the store's replaces it and replans the cold tasks.
        """
        if not (hasattr(store, "load_runtime_model") and hasattr(store, "save_runtime_model")):
            return
        self._stores.append(store)
        self._to_load.append(store)
        self._save_wanted.set()

    async def _load(self, store: object) -> None:
        try:
            text = await store.load_runtime_model()  # type: ignore[attr-defined]
        except Exception as exc:  # the model is a hint: never fatal
            logger.warning("could not read the run-time model: %s", exc)
            return
        if isinstance(text, str) and self.model.added == 0 and self.model.loads(text):
            for kind in Kind:
                if self.model.distribution(kind) is not None:
                    self._replan_cold(kind)  # tasks watched before the model was read

    async def detach_store(self, store: object) -> None:
        """Save the model to ``store`` a last time and stop saving there."""
        if store in self._to_load:
            self._to_load.remove(store)
        if store in self._stores:
            self._stores.remove(store)
            await self._save(store, self.model.dumps())

    @staticmethod
    async def _save(store: object, text: str) -> None:
        try:
            await store.save_runtime_model(text)  # type: ignore[attr-defined]
        except Exception as exc:  # the model is a hint: never fatal
            logger.warning("could not save the run-time model: %s", exc)

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
        if job.runtime_key is None:
            job.runtime_key = runtime_key(job.request)
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
            self._schedule(job, now)
        elif adopted or (task is not None and task.status is TaskStatus.PROCESSING):
            self._schedule(job, now + self._policy.min_interval)
        elif covered is not None:
            self._schedule(job, now + covered)
        else:
            self._schedule(job, now + self._next_interval(job, now))

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

    def slot_freed(self, kind: Kind) -> bool:
        """A create of ``kind`` succeeded after a 1303: some task of that kind has ended.

        The watched task most likely to be that one (the furthest along its learned
        distribution, else the oldest) is made due now.

        Returns:
            False when no task of ``kind`` could be made due.
        """
        now = self._clock.now()
        best: Job | None = None
        best_score = -math.inf
        for job in self._by_task.values():
            if job.kind is not kind or job.querying or job.phase is not Phase.RUNNING:
                continue
            age = now - job.submitted_at
            sketch = self.model.distribution(kind, job.runtime_key)
            score = age if sketch is None else sketch.cdf(age) + age * 1e-9
            if score > best_score:
                best, best_score = job, score
        if best is None:
            return False
        self._schedule(best, now)
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
            learned={kind: self.model.samples(kind) for kind in Kind},
            ready=len(self._ready),
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The service: the timer, the poll workers and the model saver, until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self._workers):
                tg.start_soon(self._worker)
            tg.start_soon(self._saver)
            task_status.started()
            await self._loop()

    # -- the timer ---------------------------------------------------------------------------

    def _push(self, due: float, gen: int, job: Job) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), gen, job))
        if due < self._sleep_target and self._sleep_scope is not None:
            self._sleep_scope.cancel()
            self._sleep_scope = None

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

    async def _loop(self) -> None:
        while True:
            if self._replan:
                self._replan_some()
                await anyio.lowlevel.checkpoint()
            now = self._clock.now()
            due: list[Job] = []
            # At most _BATCH per pass, then a checkpoint: a wave of due polls (thousands of
            # tasks created together) never stalls the loop for long.
            while self._heap and self._heap[0][0] <= now and len(due) < _BATCH:
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
                self._dispatch(due, now)
                await anyio.lowlevel.checkpoint()  # never starve the loop, whatever is due
                continue
            if self._replan:
                continue
            target = self._heap[0][0] if self._heap else None
            # One cancel scope per sleep (no task group): a push of an earlier due time
            # cancels it.
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                self._sleep_target = math.inf if target is None else target
                try:
                    if target is None:
                        await anyio.sleep_forever()
                    else:
                        await self._clock.sleep_until(target)
                finally:
                    self._sleep_scope = None
                    self._sleep_target = -math.inf

    def _priority(self, job: Job) -> int:
        """0: awaited, or its slot is wanted by queued jobs; 1: others; 2: timed out."""
        if job.timed_out:
            return 2
        if job.awaited or self._slots[job.kind].waiting:
            return 0
        return 1

    def _make_ready(self, item: Job | _ListPoll, priority: int, due: float) -> None:
        heapq.heappush(self._ready, (priority, due, next(self._seq), item))
        if self._idle:
            self._idle.popleft().set()

    def _dispatch(self, due: list[Job], now: float) -> None:
        by_kind: dict[Kind, list[Job]] = {}
        for job in due:
            by_kind.setdefault(job.kind, []).append(job)
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
                priority = min(self._priority(job) for job in jobs)
                self._make_ready(_ListPoll(kind, jobs), priority, now)
                continue
            for job in jobs:
                self._make_ready(job, self._priority(job), now)

    # -- the workers -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            if not self._ready:
                idle = anyio.Event()
                self._idle.append(idle)
                await idle.wait()
                continue
            item = heapq.heappop(self._ready)[3]
            if isinstance(item, _ListPoll):
                await self._list_poll(item.kind, item.jobs)
            else:
                await self._poll_one(item)

    async def _saver(self) -> None:
        while True:
            await self._save_wanted.wait()
            self._save_wanted = anyio.Event()
            while self._to_load:
                await self._load(self._to_load.popleft())
            if self.model.added - self._saved < _SAVE_EVERY:
                continue
            self._saved = self.model.added
            text = self.model.dumps()
            for store in list(self._stores):
                await self._save(store, text)

    async def _poll_one(self, job: Job) -> None:
        if job.phase is not Phase.RUNNING:
            self._answered(job)
            return
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
            now = self._clock.now()
            for job in due:
                self._make_ready(job, self._priority(job), now)
            return
        finally:
            self._listing[kind] = False
        self._list_failures[kind] = 0
        due_ids = {job.task_id for job in due}
        for task_id, task in seen.items():
            watched = self._by_task.get(task_id)
            if watched is not None and (task.status.is_terminal or task_id in due_ids):
                await self._observe(watched, task)
        now = self._clock.now()
        for job in due:
            if job.task_id not in seen:
                # Not on the pages read (older than they reach): ask for it by id.
                self._make_ready(job, self._priority(job), now)

    async def _query_failed(self, job: Job, exc: KlingError) -> None:
        self._n_errors += 1
        recheck = self._answered(job)
        if exc.scope is Scope.TRANSIENT:
            policy = self._policy
            if isinstance(exc, RateLimited):
                self._rate.pause(min(exc.retry_after or policy.min_interval, policy.max_interval))
            logger.info(
                "query of task %s failed (%s); polling it again later",
                job.task_id,
                type(exc).__name__,
                extra={"job_key": job.key, "task_id": job.task_id, "request_id": exc.request_id},
            )
            now = self._clock.now()
            if exc.retry_after is not None and exc.retry_after > 0:
                # The server said when to come back: then, not before (nor much later).
                wait = min(max(exc.retry_after, policy.min_interval), policy.overdue_interval)
                self._schedule(job, now + wait)
            elif recheck:  # hinted meanwhile: soon, not at once (the server just failed)
                self._schedule(job, now + policy.min_interval)
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
            return
        now = job.last_running_at = self._clock.now()
        if recheck:
            self._schedule(job, now)
        else:
            self._reschedule(job, task.progress)

    # -- when to look ------------------------------------------------------------------------

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

    def _next_interval(self, job: Job, now: float, progress: float | None = None) -> float:
        """Seconds from ``now`` to ``job``'s next look, within min..max interval, jittered."""
        policy = self._policy
        age = now - job.submitted_at
        if progress is not None and 0.0 < progress < 1.0 and age > 0:
            # The server's own estimate: the rest takes as long again as progress says.
            target = age / progress
            longest = policy.max_interval
        else:
            target, early = self._target_age(job, age)
            # Before the first learned quantile nothing ends: no need for a look per max_interval.
            longest = math.inf if early else policy.max_interval
        interval = max(policy.min_interval, min(longest, target - age))
        spread = policy.jitter * (2.0 * self._rng.random() - 1.0)
        return interval * (1.0 + spread)

    def _target_age(self, job: Job, age: float) -> tuple[float, bool]:
        """The task age at which to look next, and whether it is the first learned quantile."""
        policy = self._policy
        sketch = self.model.distribution(job.kind, job.runtime_key)
        if sketch is None:
            job.cold = True
            if not job.scout and (job.awaited or self._scouts[job.kind] < _SCOUTS):
                job.scout = True
                self._scouts[job.kind] += 1
            if job.scout:
                # A caller awaiting this one task gets the fine ladder; a batch's scouts
                # only need to find the first run times, and grow faster.
                growth = (
                    policy.cold_growth if job.awaited else max(policy.cold_growth, policy.growth)
                )
                first = policy.cold_first * self.prior(job.kind)
            else:  # the scouts' first run times will replan it: no look before the prior
                first, growth = self.prior(job.kind), policy.growth
                if age < first:
                    return first, True
            return max(first, age * growth), False
        job.cold = False
        self._unscout(job)
        low = sketch.quantile(policy.first_quantile)
        assert low is not None
        if age < low:
            return low, True
        listing = self._list_enabled[job.kind]
        # Past the learned tail the age grows by ``growth`` per look; with list polling
        # a look costs nothing of its own, so the tail is watched closely too.
        tail = math.log(policy.growth) if not listing else _LIST_TAIL_STEP
        done = sketch.cdf(age)
        survival = 1.0 - done
        if survival < _TAIL:
            return age * math.exp(tail), False
        hazard = (sketch.cdf(age * math.exp(_HAZARD_STEP)) - done) / (_HAZARD_STEP * survival)
        if listing:
            # One list page answers every running task of the kind, at most one page per
            # list_interval: denser looks cost little and refill slots sooner.
            spacing = policy.spacing * _LIST_SPACING
        else:
            spacing = policy.spacing * (1.0 if self._priority(job) == 0 else policy.idle_spacing)
            # A wide distribution would take many looks at this spacing: widen it to stay
            # within max_looks per task (about; the tail past the learned runs on top).
            spacing = max(spacing, sketch.look_density(low) / max(policy.max_looks - 1.0, 1.0))
        step = tail
        if hazard > 0:
            step = min(step, spacing / math.sqrt(hazard))
        return age * math.exp(step), False

    def _reschedule(self, job: Job, progress: float | None = None) -> None:
        if job.phase is not Phase.RUNNING:
            return
        now = self._clock.now()
        covered = self._webhook_delay(job, now)
        if covered is not None:
            base = covered
        elif job.timed_out:
            base = self._policy.overdue_interval
        else:
            self._schedule(job, now + self._next_interval(job, now, progress))
            return
        spread = self._policy.jitter * (2.0 * self._rng.random() - 1.0)
        self._schedule(job, now + base * (1.0 + spread))

    def _replan_cold(self, kind: Kind) -> None:
        """The kind's distribution was just learned: tasks planned cold follow it now.

        Thousands of tasks may be cold at once: the timer replans them a batch per pass.
        """
        self._replan.extend(job for job in self._by_task.values() if job.kind is kind and job.cold)
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()
            self._sleep_scope = None

    def _replan_some(self) -> None:
        now = self._clock.now()
        for _ in range(min(_BATCH, len(self._replan))):
            job = self._replan.popleft()
            if (
                job.cold
                and not job.querying
                and not job.timed_out
                and job.phase is Phase.RUNNING
                and self._webhook_delay(job, now) is None
            ):
                self._schedule(job, now + self._next_interval(job, now))

    # -- ends --------------------------------------------------------------------------------

    async def _finish_task(self, job: Job, task: Task) -> None:
        now = self._clock.now()
        if (
            task.created_at is not None
            and task.updated_at is not None
            and task.updated_at > task.created_at
        ):
            seconds = (task.updated_at - task.created_at) / 1000 * self.time_scale
        else:
            seconds = (job.last_running_at + now) / 2 - job.submitted_at
        self.learn(job.kind, seconds, job.runtime_key)
        if task.status is TaskStatus.SUCCEEDED:
            outcome = job.outcome(JobStatus.SUCCEEDED, self._clock.wall(), task=task)
        else:
            error = TaskFailed(
                task.status_message or "the task failed", task_id=task.task_id, job_key=job.key
            )
            outcome = job.outcome(JobStatus.FAILED, self._clock.wall(), task=task, error=error)
        await self._end(job, outcome)

    def _unscout(self, job: Job) -> None:
        if job.scout:
            job.scout = False
            self._scouts[job.kind] -= 1

    async def _end(self, job: Job, outcome: Outcome) -> None:
        self._unscout(job)
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
