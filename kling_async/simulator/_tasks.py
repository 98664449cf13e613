"""The task table: tasks whose state is computed from the clock on read, and account slots."""

import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from ._validation import CreateSpec

__all__ = ["SimTask", "TaskStore", "render_task", "wrap_task"]

SUBMITTED, PROCESSING, SUCCEED, FAILED = "submitted", "processing", "succeed", "failed"
_WRAPPED_STATUS = {
    SUBMITTED: "SUBMITTED",
    PROCESSING: "IN_PROGRESS",
    SUCCEED: "SUCCESS",
    FAILED: "FAILURE",
}


@attrs.define(slots=True, eq=False)
class SimTask:
    """One task; times are simulated seconds. Nothing moves it: ``status_at`` reads the clock."""

    task_id: str
    owner: str
    spec: CreateSpec
    created: float
    started: float
    ended: float
    failure_message: str | None  # None: the task succeeds
    reorder_callbacks: bool = False

    @property
    def kind(self) -> str:
        """``"video"`` or ``"image"``."""
        return self.spec.kind

    def status_at(self, now: float) -> str:
        """The wire status at simulated time ``now``."""
        if now >= self.ended:
            return SUCCEED if self.failure_message is None else FAILED
        if now >= self.started:
            return PROCESSING
        return SUBMITTED

    def changed_at(self, status: str) -> float:
        """When the task entered ``status``."""
        if status == SUBMITTED:
            return self.created
        if status == PROCESSING:
            return self.started
        return self.ended

    def events(self) -> list[tuple[float, str]]:
        """(time, status) of every status change, in the order callbacks go out."""
        final = SUCCEED if self.failure_message is None else FAILED
        events = [(self.created, SUBMITTED), (self.started, PROCESSING), (self.ended, final)]
        if self.reorder_callbacks:
            # The processing notice is held back until just after the final one.
            events[1] = (self.ended, PROCESSING)
            events[1], events[2] = events[2], events[1]
        return events


def render_task(
    task: SimTask,
    status: str,
    epoch_ms: Callable[[float], int],
    result_url: Callable[[SimTask, int], str],
) -> dict[str, Any]:
    """The Kling task object of ``task`` as of ``status`` (create, query, list, callback body)."""
    body: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": status,
        "task_status_msg": task.failure_message if status == FAILED else None,
        "task_info": {}
        if task.spec.external_task_id is None
        else {"external_task_id": task.spec.external_task_id},
        "task_result": {},
        "created_at": epoch_ms(task.created),
        "updated_at": epoch_ms(task.changed_at(status)),
    }
    if status == SUCCEED:
        # watermark_* are fields the real API adds and a client must tolerate.
        if task.kind == "video":
            url = result_url(task, 0)
            video = {"id": f"{task.task_id}-0", "url": url, "watermark_url": url}
            body["task_result"] = {"videos": [{**video, "duration": task.spec.duration}]}
        else:
            body["task_result"] = {
                "images": [
                    {"index": index, "url": result_url(task, index), "watermark_url": ""}
                    for index in range(task.spec.n)
                ]
            }
        body["watermark_info"] = {"enabled": False}
        units = task.spec.slots if task.kind == "image" else int(task.spec.duration) // 5
        body["final_unit_deduction"] = str(units)
    elif status == FAILED:
        body["final_unit_deduction"] = "0"
    return body


def wrap_task(body: dict[str, Any]) -> dict[str, Any]:
    """The wrapped CometAPI shape: ``data.status`` with the Kling task nested in ``data.data``."""
    status = body["task_status"]
    return {
        "task_id": body["task_id"],
        "action": "multi-image",
        "status": _WRAPPED_STATUS[status],
        "fail_reason": body["task_status_msg"] or "",
        "submit_time": body["created_at"] // 1000,
        "progress": "100%" if status in (SUCCEED, FAILED) else "0%",
        "data": body,
    }


class TaskStore:
    """Tasks per kind, lookups by id and external id, per-key pages, and account slots."""

    def __init__(self, rng: random.Random, limits: dict[str, int | None]) -> None:
        self._rng = rng
        self._limits = limits
        self._by_id: dict[tuple[str, str], SimTask] = {}
        self._by_external: dict[tuple[str, str], SimTask] = {}
        self._by_owner: dict[tuple[str, str], list[SimTask]] = {}
        self._holding: dict[str, list[tuple[float, int]]] = {"video": [], "image": []}
        self._in_use: dict[str, int] = {"video": 0, "image": 0}

    def new_task_id(self) -> str:
        """A fresh 19-digit task id, unique in this store."""
        while True:
            task_id = str(
                self._rng.randrange(8 * 10**17, 9 * 10**17) * 10 + self._rng.randrange(10)
            )
            if not any((kind, task_id) in self._by_id for kind in ("video", "image")):
                return task_id

    def find(self, kind: str, owner: str, id_or_external: str) -> SimTask | None:
        """The task of ``owner`` with this task id or external id, or None."""
        task = self._by_id.get((kind, id_or_external)) or self._by_external.get(
            (kind, id_or_external)
        )
        if task is None or task.owner != owner:
            return None
        return task

    def external_exists(self, kind: str, external_task_id: str) -> bool:
        """Whether any key of the account already used this external id for this kind."""
        return (kind, external_task_id) in self._by_external

    def in_use(self, kind: str, now: float) -> int:
        """Slots held at ``now`` (ended tasks give theirs back lazily)."""
        heap = self._holding[kind]
        while heap and heap[0][0] <= now:
            _, slots = heapq.heappop(heap)
            self._in_use[kind] -= slots
        return self._in_use[kind]

    def fits(self, kind: str, slots: int, now: float) -> bool:
        """Whether ``slots`` more fit under the account limit of ``kind``."""
        limit = self._limits[kind]
        return limit is None or self.in_use(kind, now) + slots <= limit

    def add(self, task: SimTask) -> int:
        """Store a new task and take its slots; returns the slots now held for its kind."""
        self._by_id[(task.kind, task.task_id)] = task
        if task.spec.external_task_id is not None:
            self._by_external[(task.kind, task.spec.external_task_id)] = task
        self._by_owner.setdefault((task.owner, task.kind), []).append(task)
        heapq.heappush(self._holding[task.kind], (task.ended, task.spec.slots))
        self._in_use[task.kind] += task.spec.slots
        return self._in_use[task.kind]

    def page(self, kind: str, owner: str, page: int, size: int) -> list[SimTask]:
        """One page of ``owner``'s tasks of ``kind``, newest first."""
        tasks = self._by_owner.get((owner, kind), [])
        stop = len(tasks) - (page - 1) * size
        return tasks[max(0, stop - size) : max(0, stop)][::-1]

    def get(self, kind: str, task_id: str) -> SimTask | None:
        """The task with this id, whoever owns it."""
        return self._by_id.get((kind, task_id))
