"""Test doubles for code that uses kling_async: no network, no real waiting.

A :class:`FakeKling` answers a :class:`MockTransport` the way the API does (creates,
queries by task id or external id), finishing every task ``run_time`` seconds after its
create on the given clock; with a :class:`VirtualClock` a whole batch runs at once::

    import kling_async as ka
    from kling_async.testing import FakeKling, MockTransport, VirtualClock

    async with VirtualClock() as clock:
        fake = FakeKling(clock=clock)
        async with ka.Client("test-key", transport=MockTransport(fake), clock=clock) as kling:
            task = await kling.generate(request)

For real HTTP (and faults, rate limits, webhooks) use :mod:`kling_async.simulator`.
"""

import itertools
import json
import urllib.parse

import attrs

from ._api.transport import HttpRequest, HttpResponse, MockTransport
from ._api.wire import task_to_wire
from ._core.clock import Clock, SystemClock, VirtualClock
from ._core.models import GeneratedImage, Kind, Task, TaskStatus, Video

__all__ = [
    "FakeKling",
    "HttpRequest",
    "HttpResponse",
    "MockTransport",
    "VirtualClock",
]


@attrs.define
class _FakeTask:
    task_id: str
    kind: Kind
    external_id: str | None
    created: float
    fail: bool


class FakeKling:
    """A :class:`MockTransport` handler that plays the API: every task succeeds after a while.

    Args:
        clock: Where run times are measured (the client's clock; a ``VirtualClock`` in
            tests). Default: the system clock.
        run_time: Seconds from a create until its task ends.
        fail_prompt: A request whose prompt contains this text ends FAILED instead.

    Attributes:
        creates: Create calls answered.
        queries: Query calls answered.
    """

    def __init__(
        self, *, clock: Clock | None = None, run_time: float = 10.0, fail_prompt: str = "FAIL"
    ) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._run_time = run_time
        self._fail_prompt = fail_prompt
        self._tasks: dict[str, _FakeTask] = {}
        self._ids = itertools.count(1_000_000)
        self.creates = 0
        self.queries = 0

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (the handler of a :class:`MockTransport`)."""
        path = urllib.parse.urlsplit(request.url).path
        kind = Kind.IMAGE if "/images/" in path else Kind.VIDEO
        if request.method == "POST":
            return self._create(kind, request.body or b"{}")
        last = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        task = self._tasks.get(last)
        if task is None or task.kind is not kind:
            return _answer(404, {"code": 1203, "message": "task not found", "data": None})
        self.queries += 1
        return _answer(200, {"code": 0, "message": "SUCCEED", "data": self._render(task)})

    def _create(self, kind: Kind, body: bytes) -> HttpResponse:
        wire = json.loads(body)
        external_id = wire.get("external_task_id")
        if external_id is not None and external_id in self._tasks:
            return _answer(400, {"code": 1201, "message": "external_task_id already exists"})
        self.creates += 1
        task = _FakeTask(
            task_id=str(next(self._ids)),
            kind=kind,
            external_id=external_id,
            created=self._clock.now(),
            fail=self._fail_prompt in str(wire.get("prompt", "")),
        )
        self._tasks[task.task_id] = task
        if external_id is not None:
            self._tasks[external_id] = task
        return _answer(200, {"code": 0, "message": "SUCCEED", "data": self._render(task)})

    def _render(self, task: _FakeTask) -> dict[str, object]:
        done = self._clock.now() - task.created >= self._run_time
        if not done:
            status = TaskStatus.PROCESSING
        else:
            status = TaskStatus.FAILED if task.fail else TaskStatus.SUCCEEDED
        ok = status is TaskStatus.SUCCEEDED
        created_ms = int(task.created * 1000)
        return task_to_wire(
            Task(
                task_id=task.task_id,
                status=status,
                status_message="failed on purpose" if status is TaskStatus.FAILED else None,
                external_task_id=task.external_id,
                videos=(Video(id=task.task_id, url=f"https://fake.invalid/{task.task_id}.mp4"),)
                if ok and task.kind is Kind.VIDEO
                else (),
                images=(GeneratedImage(index=0, url=f"https://fake.invalid/{task.task_id}.png"),)
                if ok and task.kind is Kind.IMAGE
                else (),
                created_at=created_ms,
                updated_at=created_ms + int(self._run_time * 1000) if done else created_ms,
            )
        )


def _answer(status: int, body: object) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())
