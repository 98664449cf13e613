"""A fake task API on a virtual clock, for the engine's unit tests."""

import collections
import itertools
from collections.abc import Callable, Iterator

import anyio.lowlevel
import attrs

from kling_async import (
    ConcurrencyLimited,
    DuplicateExternalId,
    GeneratedImage,
    Image,
    Kind,
    KlingError,
    MultiImageToImage,
    MultiImageToVideo,
    NotFound,
    Request,
    Task,
    Video,
    VirtualClock,
)
from kling_async._core.models import TaskStatus

URL = "https://example.com/a.png"


def video(prompt: str = "walk") -> MultiImageToVideo:
    """A valid video request with URL images (no I/O)."""
    return MultiImageToVideo(images=(Image.from_url(URL), Image.from_url(URL)), prompt=prompt)


def image(n: int = 1) -> MultiImageToImage:
    """A valid image request holding ``n`` slots."""
    return MultiImageToImage(images=(Image.from_url(URL), Image.from_url(URL)), n=n)


@attrs.define
class FakeTask:
    """One task on the fake server."""

    task_id: str
    kind: Kind
    external_id: str | None
    created: float
    duration: float
    slots: int
    fail: bool = False

    def ends(self) -> float:
        """When the task ends."""
        return self.created + self.duration


Fault = Callable[["FakeApi", str, Request | None], KlingError | None]


class FakeApi:
    """An in-memory Kling server with a slot limit per kind, driven by a virtual clock.

    ``faults`` is a queue of errors the next calls raise (by call type); an entry
    ``("create", exc, True)`` makes the create succeed on the server and then raise
    ``exc`` (an ambiguous create).
    """

    def __init__(
        self,
        clock: VirtualClock,
        *,
        durations: dict[Kind, float] | None = None,
        limits: dict[Kind, int | None] | None = None,
        fail_keys: frozenset[str] = frozenset(),
        serve_list: bool = True,
        latency: float = 0.0,
    ) -> None:
        self.clock = clock
        self.durations = durations or {Kind.VIDEO: 60.0, Kind.IMAGE: 15.0}
        self.limits = limits or {Kind.VIDEO: None, Kind.IMAGE: None}
        self.fail_keys = fail_keys
        self.serve_list = serve_list
        self.latency = latency
        self.tasks: dict[str, FakeTask] = {}
        self.by_external: dict[str, FakeTask] = {}
        self.created_per_external: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.faults: dict[str, collections.deque[tuple[KlingError, bool]]] = (
            collections.defaultdict(collections.deque)
        )
        self.peak: collections.Counter[Kind] = collections.Counter()
        self.rejected_1303 = 0
        self._ids: Iterator[int] = itertools.count(800_000_000_000_000_001)

    def inject(self, call: str, exc: KlingError, *, after: bool = False, times: int = 1) -> None:
        """Make the next ``times`` calls of ``call`` raise ``exc`` (after doing the work)."""
        for _ in range(times):
            self.faults[call].append((exc, after))

    def in_use(self, kind: Kind) -> int:
        """Slots held on the fake server now."""
        now = self.clock.now()
        return sum(
            t.slots for t in self.tasks.values() if t.kind is kind and t.created <= now < t.ends()
        )

    def _render(self, task: FakeTask) -> Task:
        now = self.clock.now()
        if now < task.ends():
            status = TaskStatus.PROCESSING if now > task.created else TaskStatus.SUBMITTED
        else:
            status = TaskStatus.FAILED if task.fail else TaskStatus.SUCCEEDED
        done = status is TaskStatus.SUCCEEDED
        return Task(
            task_id=task.task_id,
            status=status,
            status_message="risk control" if status is TaskStatus.FAILED else None,
            external_task_id=task.external_id,
            videos=(Video(id="v", url="https://x/v.mp4"),)
            if done and task.kind is Kind.VIDEO
            else (),
            images=(GeneratedImage(index=0, url="https://x/i.png"),)
            if done and task.kind is Kind.IMAGE
            else (),
            created_at=int(task.created * 1000),
            updated_at=int((task.ends() if status.is_terminal else task.created) * 1000),
        )

    async def _enter(self, call: str) -> tuple[KlingError, bool] | None:
        self.calls[call] += 1
        if self.latency:
            await self.clock.sleep(self.latency)
        else:
            await anyio.lowlevel.checkpoint()
        queue = self.faults.get(call)
        if queue:
            exc, after = queue.popleft()
            if not after:
                raise exc
            return exc, after
        return None

    async def create_task(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Create a task (or raise the next injected fault)."""
        fault = await self._enter("create")
        kind = request.kind
        if external_task_id is not None and external_task_id in self.by_external:
            raise DuplicateExternalId("external_task_id already exists", http_status=400, code=1201)
        limit = self.limits.get(kind)
        if limit is not None and self.in_use(kind) + request.slots > limit:
            self.rejected_1303 += 1
            raise ConcurrencyLimited("over the concurrency limit", http_status=429, code=1303)
        task = FakeTask(
            task_id=str(next(self._ids)),
            kind=kind,
            external_id=external_task_id,
            created=self.clock.now(),
            duration=self.durations[kind],
            slots=request.slots,
            fail=any(key in (external_task_id or "") for key in self.fail_keys),
        )
        self.tasks[task.task_id] = task
        if external_task_id is not None:
            self.by_external[external_task_id] = task
            self.created_per_external[external_task_id] += 1
        self.peak[kind] = max(self.peak[kind], self.in_use(kind))
        if fault is not None:
            raise fault[0]
        return self._render(task)

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        """Query one task by id or external id."""
        fault = await self._enter("get")
        task = self.tasks.get(task_id) or self.by_external.get(task_id)
        if task is None or task.kind is not kind:
            raise NotFound("task not found", http_status=404, code=1203)
        if fault is not None:
            raise fault[0]
        return self._render(task)

    async def list_tasks(self, kind: Kind, page: int = 1, page_size: int = 30) -> list[Task]:
        """One page of tasks, newest first."""
        fault = await self._enter("list")
        if not self.serve_list:
            raise NotFound("no such route", http_status=404)
        tasks = [t for t in reversed(self.tasks.values()) if t.kind is kind]
        chunk = tasks[(page - 1) * page_size : page * page_size]
        if fault is not None:
            raise fault[0]
        return [self._render(t) for t in chunk]
