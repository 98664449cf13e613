"""Journal rows: job states, the records a store keeps, resume plans and the journal errors.

The life of a row::

    PENDING ──▶ SUBMITTING ──▶ SUBMITTED ──▶ SUCCEEDED ──▶ DOWNLOADED
       │  ▲          │  ▲  │                     │
       │  └─STOPPED◀─┘  └──┘ (retry)             └─▶ SUCCEEDED + download error (URL, expiry)
       └──────────────┴──────────────┴──▶ FAILED | TIMED_OUT

Each state is written *before* the step it guards, so a crash never loses a job or pays twice.
"""

import enum
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._core.errors import KlingError, Scope

__all__ = [
    "FINAL_STATES",
    "TERMINAL_STATES",
    "ErrorRecord",
    "FileRecord",
    "JobRecord",
    "JobState",
    "JournalConflict",
    "JournalError",
    "JournalLost",
    "JournalStatistics",
    "ResumePlan",
    "fingerprint",
    "new_batch_id",
]


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _float_or_none(exc: BaseException) -> float | None:
    value = getattr(exc, "expires_at", None)
    return float(value) if isinstance(value, int | float) else None


class JobState(enum.Enum):
    """Where a job stands, as written in the journal."""

    PENDING = "PENDING"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    STOPPED = "STOPPED"
    DOWNLOADED = "DOWNLOADED"

    @property
    def is_final(self) -> bool:
        """True when a resume yields the job from the journal without any network call."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.DOWNLOADED})
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT})
# Allowed moves; anything else is an engine bug and raises instead of corrupting the row.
_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.SUBMITTING, JobState.FAILED, JobState.STOPPED, JobState.TIMED_OUT}
    ),
    JobState.STOPPED: frozenset(
        {JobState.SUBMITTING, JobState.FAILED, JobState.STOPPED, JobState.TIMED_OUT}
    ),
    JobState.SUBMITTING: frozenset(
        {
            JobState.SUBMITTING,
            JobState.SUBMITTED,
            JobState.FAILED,
            JobState.STOPPED,
            JobState.TIMED_OUT,
            # adopted from a lookup by external id that found the task already finished
            JobState.SUCCEEDED,
        }
    ),
    JobState.SUBMITTED: frozenset(
        {JobState.SUBMITTED, JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT}
    ),
    # a timed-out task keeps its slot and is polled until the server says it ended
    JobState.TIMED_OUT: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT}),
    JobState.SUCCEEDED: frozenset({JobState.DOWNLOADED}),
    JobState.FAILED: frozenset(),
    JobState.DOWNLOADED: frozenset(),
}


class JournalConflict(ValueError):  # noqa: N818 -- the name the contract uses
    """A key was added again with a different request (or a journal holds another batch)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class JournalError(KlingError, RuntimeError):
    """The journal cannot be used: disk full, corrupt file, in use, illegal state change.

    Scope BATCH: a batch that cannot record its steps must not take them.
    """

    default_scope = Scope.BATCH


class JournalLost(JournalError):  # noqa: N818 -- a JournalError named for what happened
    """The journal lost rows it once held (empty, missing, its ``-wal`` gone after a crash).

    Raised where the journal is only read; a batch opens it with ``recover=True`` and
    looks every job it cannot prove unsent up on the server before any create.
    """


def fingerprint(record: Mapping[str, Any]) -> str:
    """Return the sha256 hex digest of a request record in canonical JSON.

    Canonical: keys sorted, no whitespace, UTF-8; so the same request always gives the same
    fingerprint, across processes and Python versions.
    """
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@attrs.frozen
class ErrorRecord:
    """Why a job failed, or why its download did: enough to report it and to retry later."""

    type: str
    message: str
    code: int | None = None
    http_status: int | None = None
    url: str | None = None
    expires_at: float | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, url: str | None = None, expires_at: float | None = None
    ) -> "ErrorRecord":
        """Describe ``exc`` (a ``KlingError`` or any exception) for the journal."""
        code = getattr(exc, "code", None)
        status = getattr(exc, "http_status", None)
        message = getattr(exc, "message", None)
        return cls(
            type=type(exc).__name__,
            message=message if isinstance(message, str) else str(exc),
            code=code if isinstance(code, int) else None,
            http_status=status if isinstance(status, int) else None,
            url=url if url is not None else _str_or_none(getattr(exc, "url", None)),
            expires_at=expires_at if expires_at is not None else _float_or_none(exc),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ErrorRecord":
        """Rebuild a record written by ``to_json`` (unknown keys are ignored)."""
        names = {a.name for a in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@attrs.frozen
class FileRecord:
    """One downloaded result file: where it is and what it holds."""

    path: str
    sha256: str
    size: int
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON object."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FileRecord":
        """Rebuild a record written by ``to_json``."""
        return cls(
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            url=_str_or_none(data.get("url")),
        )


@attrs.frozen
class JobRecord:
    """One job's row as stored: a snapshot, never updated in place."""

    key: str
    kind: str
    fingerprint: str
    record: Mapping[str, Any]
    state: JobState = JobState.PENDING
    external_id: str | None = None
    task_id: str | None = None
    attempts: int = 0
    result: Mapping[str, Any] | None = None
    error: ErrorRecord | None = None
    files: tuple[FileRecord, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None

    def moved(self, state: JobState, **changes: Any) -> "JobRecord":
        """Return this row in ``state`` with ``changes``.

        Raises:
            JournalError: the move is not allowed from the current state.
        """
        if state not in _TRANSITIONS[self.state]:
            raise JournalError(
                f"job {self.key!r}: illegal state change {self.state.value} -> {state.value}"
            )
        now = time.time()
        if state in TERMINAL_STATES and self.finished_at is None:
            changes.setdefault("finished_at", now)
        return attrs.evolve(self, state=state, updated_at=now, **changes)


@attrs.frozen
class ResumePlan:
    """The rows of a journal grouped by what a resume does with them."""

    finished: tuple[JobRecord, ...] = ()
    """FAILED, TIMED_OUT, DOWNLOADED: yield from the journal, no network."""
    succeeded: tuple[JobRecord, ...] = ()
    """SUCCEEDED, not downloaded: yield (and download first when the batch has an out_dir)."""
    submitted: tuple[JobRecord, ...] = ()
    """SUBMITTED: the task exists (``task_id``); hand it straight to the poll scheduler."""
    submitting: tuple[JobRecord, ...] = ()
    """SUBMITTING (and STOPPED after a send): a create may have been sent; look it up by
    ``external_id``, adopt the task or, if provably absent, send the create again."""
    pending: tuple[JobRecord, ...] = ()
    """PENDING and STOPPED before any send: never created; submit (request from ``record``)."""

    @classmethod
    def from_rows(cls, rows: Iterable[JobRecord]) -> "ResumePlan":
        """Group ``rows`` by state, keeping their order."""
        groups: dict[str, list[JobRecord]] = {
            "finished": [],
            "succeeded": [],
            "submitted": [],
            "submitting": [],
            "pending": [],
        }
        for row in rows:
            group = _PLAN_GROUP[row.state]
            if row.state is JobState.STOPPED and row.attempts:
                # stopped after a create was sent: it may exist, so look it up first
                group = "submitting"
            groups[group].append(row)
        return cls(**{name: tuple(rows) for name, rows in groups.items()})

    def rows(self) -> tuple[JobRecord, ...]:
        """Every row of the plan, group after group."""
        return (*self.finished, *self.succeeded, *self.submitted, *self.submitting, *self.pending)

    def __len__(self) -> int:
        return (
            len(self.finished)
            + len(self.succeeded)
            + len(self.submitted)
            + len(self.submitting)
            + len(self.pending)
        )


_PLAN_GROUP: Mapping[JobState, str] = {
    JobState.FAILED: "finished",
    JobState.TIMED_OUT: "finished",
    JobState.DOWNLOADED: "finished",
    JobState.SUCCEEDED: "succeeded",
    JobState.SUBMITTED: "submitted",
    JobState.SUBMITTING: "submitting",
    JobState.PENDING: "pending",
    JobState.STOPPED: "pending",
}


@attrs.frozen
class JournalStatistics:
    """Counters of a job store, for benchmarks and progress displays."""

    jobs: int
    states: Mapping[JobState, int]
    writes: int
    """State changes and adds applied."""
    commits: int
    """Transactions committed (each one fsync with synchronous=FULL)."""
    largest_group: int
    """Most operations that shared one commit."""
    queued: int
    """Operations waiting for the writer thread."""


def new_batch_id() -> str:
    """Return a fresh batch id: short, unique, safe inside an external task id."""
    return uuid.uuid4().hex[:16]
