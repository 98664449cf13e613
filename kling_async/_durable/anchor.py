"""The run's anchor: its batch id in a small file beside the journal, durable before any create.

The external id of every create is derived from the batch id, so the batch id is what
lets the server tell a job already paid for from a new one. The journal holds it too,
but a journal can be lost (truncated, deleted, its ``-wal`` file removed before a
checkpoint); ``<journal>.batch.json`` keeps it apart, written atomically and fsynced
before the journal takes its first step. It also says whether a session was writing
the journal when it was last seen (``live``): a session that died leaves the ``-wal``
file behind, so a dead session *without* one means its last commits were lost.
"""

import contextlib
import json
import os
import pathlib
import time

import attrs

from .files import replace_durably, write_all
from .records import JournalError

__all__ = [
    "ANCHOR_SUFFIX",
    "BatchAnchor",
    "anchor_path",
    "new_anchor",
    "read_anchor",
    "write_anchor",
]

ANCHOR_SUFFIX = ".batch.json"
_FORMAT = 1
_MAX_SIZE = 64 * 1024  # an anchor is a few hundred bytes; anything larger is not one


@attrs.frozen
class BatchAnchor:
    """What the file beside a journal says.

    Attributes:
        batch_id: The batch every external id of the run is derived from.
        created_at: When the run began (Unix seconds).
        live: A session had the journal open for writing and has not closed it cleanly.
    """

    batch_id: str
    created_at: float
    live: bool = False

    def to_json(self) -> dict[str, object]:
        """The anchor as saved."""
        return {
            "format": _FORMAT,
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "live": self.live,
        }


def anchor_path(journal: "str | os.PathLike[str]") -> pathlib.Path:
    """Where the anchor of ``journal`` lives: ``<journal>.batch.json``."""
    path = pathlib.Path(journal)
    return path.with_name(path.name + ANCHOR_SUFFIX)


def read_anchor(journal: "str | os.PathLike[str]") -> BatchAnchor | None:
    """Return the anchor beside ``journal``, or None when there is none.

    Raises:
        JournalError: the file exists but is not an anchor (then nobody can tell which
            jobs were paid for: the run refuses instead of guessing).
    """
    path = anchor_path(journal)
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot read the batch anchor {str(path)!r}: {exc}") from exc
    try:
        return _parse(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise JournalError(
            f"the batch anchor {str(path)!r} is damaged ({exc}); it names the batch whose"
            " jobs may already be paid for: restore it, or start a new run in another folder"
        ) from exc


def _parse(raw: bytes) -> BatchAnchor:
    if len(raw) > _MAX_SIZE:
        raise ValueError("too large")
    data = json.loads(raw.decode("utf-8"))
    batch_id = data["batch_id"]
    created_at = float(data["created_at"])
    live = data.get("live", False)
    if not isinstance(batch_id, str) or not batch_id or not isinstance(live, bool):
        raise ValueError("bad fields")
    return BatchAnchor(batch_id=batch_id, created_at=created_at, live=live)


def write_anchor(journal: "str | os.PathLike[str]", anchor: BatchAnchor) -> None:
    """Write the anchor of ``journal`` atomically and durably (blocking: run in a thread).

    The content goes to a temporary file that is fsynced and renamed over the anchor;
    then the folder is fsynced, so the rename itself survives a power loss.

    Raises:
        JournalError: it cannot be written.
    """
    path = anchor_path(journal)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = (json.dumps(anchor.to_json(), indent=2) + "\n").encode()
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        replace_durably(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise JournalError(f"cannot write the batch anchor {str(path)!r}: {exc}") from exc


def new_anchor(batch_id: str) -> BatchAnchor:
    """An anchor for a run that begins now, live."""
    return BatchAnchor(batch_id=batch_id, created_at=time.time(), live=True)
