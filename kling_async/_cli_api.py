"""The one place the command line takes library names from.

The CLI uses the public API only: every name comes from ``kling_async`` or the public
``kling_async.simulator``, through this one module.
"""

from kling_async import (
    Backoff,
    BatchStatistics,
    BatchStopped,
    Client,
    CometAPI,
    DynamicMask,
    Image,
    InvalidRequest,
    JobStatus,
    JournalConflict,
    JournalError,
    Kind,
    Kling,
    KlingError,
    Limits,
    MultiImageToImage,
    MultiImageToVideo,
    Outcome,
    Point,
    PollPolicy,
    Request,
    Scope,
    SqliteJournal,
    validate_request,
)
from kling_async.simulator import Simulator, SimulatorConfig

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
