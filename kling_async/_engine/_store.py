"""The seam between a batch and its journal: a store told of every state change."""

from typing import Protocol

from .._core.models import Kind, Request
from ._outcome import Outcome

__all__ = ["BatchStore", "NullStore", "RuntimeModelStore"]


class BatchStore(Protocol):
    """Told of each state change of a batch's jobs, *before* the step it guards.

    The journal implements this to make a batch resumable; each call returns once the
    change is durable, except ``pending``, which may return before (the row guards
    nothing paid for; the journal commits it by the job's ``submitting`` at the latest).
    """

    async def pending(self, key: str, kind: Kind, request: Request, external_id: str) -> object:
        """The job was accepted and is about to be queued.

        Raises:
            Exception: The store refuses the job (e.g. its key is known with another
                request); the submit fails with it.
        """
        ...

    async def submitting(self, key: str, external_id: str) -> None:
        """A create for the job is about to be sent."""
        ...

    async def submitted(self, key: str, task_id: str) -> None:
        """The job's task exists on the server."""
        ...

    async def finished(self, outcome: Outcome) -> None:
        """The job ended (any :class:`JobStatus`)."""
        ...


class RuntimeModelStore(Protocol):
    """An optional capability of a :class:`BatchStore`: keeping the learned run times.

    A store that has both methods (the journal does) gets the engine's run-time model
    when a batch starts on it and keeps it as it learns, so a resumed run, or the next
    run on the same journal, polls from a warm model instead of the prior.
    """

    async def load_runtime_model(self) -> str | None:
        """Return the model saved last (JSON text), or None."""
        ...

    async def save_runtime_model(self, model: str) -> None:
        """Keep ``model`` (JSON text), replacing the one before."""
        ...


class NullStore:
    """The default store: remembers nothing (a batch without a journal)."""

    async def pending(self, key: str, kind: Kind, request: Request, external_id: str) -> object:
        """Do nothing."""
        return None

    async def submitting(self, key: str, external_id: str) -> None:
        """Do nothing."""

    async def submitted(self, key: str, task_id: str) -> None:
        """Do nothing."""

    async def finished(self, outcome: Outcome) -> None:
        """Do nothing."""
