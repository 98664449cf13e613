"""Counters the simulator keeps for assertions, and their frozen snapshot."""

from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Counters", "SimulatorStatistics"]

RESET = 0
"""The status recorded for a request answered by a dropped connection."""


@attrs.frozen(kw_only=True)
class SimulatorStatistics:
    """A snapshot of the simulator's counters.

    Attributes:
        requests: (endpoint, HTTP status) -> count; endpoints look like ``"video.create"``,
            ``"image.query"``, ``"video.list"``, ``"file"``, ``"admin"``, ``"unknown"``;
            status 0 means the connection was dropped without an answer.
        tasks_created: tasks created in total.
        tasks_created_per_external_id: external id -> tasks created with it.
        duplicates_rejected: creates refused because their external id existed.
        rejected_concurrency: creates refused with 1303.
        rejected_rate: requests refused by the rate limit (1302 / 429).
        peak_concurrency: kind -> the most slots ever held at once.
        running: kind -> slots held now.
        faults_injected: fault kind value -> count.
        callbacks_delivered / callbacks_failed: callback POSTs answered 2xx / given up.
        callback_attempts: callback POSTs tried, retries included.
        files_served: result files answered 200.
    """

    requests: Mapping[tuple[str, int], int]
    tasks_created: int
    tasks_created_per_external_id: Mapping[str, int]
    duplicates_rejected: int
    rejected_concurrency: int
    rejected_rate: int
    peak_concurrency: Mapping[str, int]
    running: Mapping[str, int]
    faults_injected: Mapping[str, int]
    callbacks_delivered: int
    callbacks_failed: int
    callback_attempts: int
    files_served: int

    def requests_to(self, endpoint: str, status: int | None = None) -> int:
        """Requests to ``endpoint`` (optionally only those answered ``status``)."""
        return sum(
            count
            for (name, code), count in self.requests.items()
            if name == endpoint and (status is None or code == status)
        )

    @property
    def max_creates_per_external_id(self) -> int:
        """The most tasks any one external id created (1 means no job was created twice)."""
        return max(self.tasks_created_per_external_id.values(), default=0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (request keys become ``"endpoint status"`` strings)."""
        return {
            "requests": {
                f"{name} {code}": count for (name, code), count in sorted(self.requests.items())
            },
            "tasks_created": self.tasks_created,
            "tasks_created_per_external_id": dict(self.tasks_created_per_external_id),
            "duplicates_rejected": self.duplicates_rejected,
            "rejected_concurrency": self.rejected_concurrency,
            "rejected_rate": self.rejected_rate,
            "peak_concurrency": dict(self.peak_concurrency),
            "running": dict(self.running),
            "faults_injected": dict(self.faults_injected),
            "callbacks_delivered": self.callbacks_delivered,
            "callbacks_failed": self.callbacks_failed,
            "callback_attempts": self.callback_attempts,
            "files_served": self.files_served,
        }


@attrs.define
class Counters:
    """The live, mutable counters behind ``SimulatorStatistics``."""

    requests: Counter[tuple[str, int]] = attrs.field(factory=Counter)
    tasks_created: int = 0
    per_external_id: Counter[str] = attrs.field(factory=Counter)
    duplicates_rejected: int = 0
    rejected_concurrency: int = 0
    rejected_rate: int = 0
    peak_concurrency: dict[str, int] = attrs.field(factory=lambda: {"video": 0, "image": 0})
    faults_injected: Counter[str] = attrs.field(factory=Counter)
    callbacks_delivered: int = 0
    callbacks_failed: int = 0
    callback_attempts: int = 0
    files_served: int = 0

    def snapshot(self, running: Mapping[str, int]) -> SimulatorStatistics:
        """Freeze the counters now."""
        return SimulatorStatistics(
            requests=dict(self.requests),
            tasks_created=self.tasks_created,
            tasks_created_per_external_id=dict(self.per_external_id),
            duplicates_rejected=self.duplicates_rejected,
            rejected_concurrency=self.rejected_concurrency,
            rejected_rate=self.rejected_rate,
            peak_concurrency=dict(self.peak_concurrency),
            running=dict(running),
            faults_injected=dict(self.faults_injected),
            callbacks_delivered=self.callbacks_delivered,
            callbacks_failed=self.callbacks_failed,
            callback_attempts=self.callback_attempts,
            files_served=self.files_served,
        )
