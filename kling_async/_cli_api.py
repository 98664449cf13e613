"""The one place the command line takes library names from.

The CLI uses the public API only; names not yet re-exported by ``kling_async`` are taken
from their private modules here, and nowhere else.
"""

from ._client import Client
from ._engine._outcome import BatchStatistics, JobStatus, Outcome
from ._errors import BatchStopped, InvalidRequest, KlingError, Scope
from ._images import validate_request
from ._journal import JournalConflict, JournalError, SqliteJournal
from ._models import (
    DynamicMask,
    Image,
    Kind,
    MultiImageToImage,
    MultiImageToVideo,
    Point,
    Request,
)
from ._policy import Backoff, Limits, PollPolicy
from ._profiles import CometAPI, Kling
from .simulator import Simulator, SimulatorConfig

__all__ = [
    "Backoff",
    "BatchStatistics",
    "BatchStopped",
    "Client",
    "CometAPI",
    "DynamicMask",
    "Image",
    "InvalidRequest",
    "JobStatus",
    "JournalConflict",
    "JournalError",
    "Kind",
    "Kling",
    "KlingError",
    "Limits",
    "MultiImageToImage",
    "MultiImageToVideo",
    "Outcome",
    "Point",
    "PollPolicy",
    "Request",
    "Scope",
    "Simulator",
    "SimulatorConfig",
    "SqliteJournal",
    "validate_request",
]
