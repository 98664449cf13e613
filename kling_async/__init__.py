"""kling_async: an asyncio-first concurrent batch client for Kling multi-image generation.

Everything public is re-exported here; implementation modules are private. The local
server lives in the public subpackage :mod:`kling_async.simulator`.
"""

import types as _types

from ._api.images import validate_request as validate_request
from ._api.profiles import COMETAPI_RULES as COMETAPI_RULES
from ._api.profiles import KLING_RULES as KLING_RULES
from ._api.profiles import CometAPI as CometAPI
from ._api.profiles import KindRules as KindRules
from ._api.profiles import Kling as Kling
from ._api.profiles import Profile as Profile
from ._api.profiles import Rules as Rules
from ._api.transport import AiohttpTransport as AiohttpTransport
from ._api.transport import HttpRequest as HttpRequest
from ._api.transport import HttpResponse as HttpResponse
from ._api.transport import MockTransport as MockTransport
from ._api.transport import Transport as Transport
from ._client import Client as Client
from ._client import Tasks as Tasks
from ._core.clock import Clock as Clock
from ._core.clock import SystemClock as SystemClock
from ._core.clock import VirtualClock as VirtualClock
from ._core.config import Backoff as Backoff
from ._core.config import Limits as Limits
from ._core.config import PollPolicy as PollPolicy
from ._core.config import Timeouts as Timeouts
from ._core.errors import AccountError as AccountError
from ._core.errors import APIError as APIError
from ._core.errors import AuthenticationError as AuthenticationError
from ._core.errors import BadRequest as BadRequest
from ._core.errors import BatchStopped as BatchStopped
from ._core.errors import ConcurrencyLimited as ConcurrencyLimited
from ._core.errors import ConnectError as ConnectError
from ._core.errors import ConnectionLost as ConnectionLost
from ._core.errors import DownloadError as DownloadError
from ._core.errors import DuplicateExternalId as DuplicateExternalId
from ._core.errors import InvalidRequest as InvalidRequest
from ._core.errors import JobTimedOut as JobTimedOut
from ._core.errors import KlingError as KlingError
from ._core.errors import MalformedResponse as MalformedResponse
from ._core.errors import NotFound as NotFound
from ._core.errors import PermissionDenied as PermissionDenied
from ._core.errors import PolicyViolation as PolicyViolation
from ._core.errors import RateLimited as RateLimited
from ._core.errors import RequestTimeout as RequestTimeout
from ._core.errors import ResultExpired as ResultExpired
from ._core.errors import Scope as Scope
from ._core.errors import ServerError as ServerError
from ._core.errors import TaskFailed as TaskFailed
from ._core.errors import TransportError as TransportError
from ._core.models import Duration as Duration
from ._core.models import DynamicMask as DynamicMask
from ._core.models import GeneratedImage as GeneratedImage
from ._core.models import Image as Image
from ._core.models import ImageAspectRatio as ImageAspectRatio
from ._core.models import ImageOrigin as ImageOrigin
from ._core.models import Kind as Kind
from ._core.models import Mode as Mode
from ._core.models import MultiImageToImage as MultiImageToImage
from ._core.models import MultiImageToVideo as MultiImageToVideo
from ._core.models import Point as Point
from ._core.models import Request as Request
from ._core.models import Status as Status
from ._core.models import Task as Task
from ._core.models import Video as Video
from ._core.models import VideoAspectRatio as VideoAspectRatio
from ._durable.downloads import Downloader as Downloader
from ._durable.downloads import DownloadLimits as DownloadLimits
from ._durable.downloads import DownloadStatistics as DownloadStatistics
from ._durable.downloads import UnsafeKey as UnsafeKey
from ._durable.downloads import check_job_key as check_job_key
from ._durable.postgres import PostgresJournal as PostgresJournal
from ._durable.records import ErrorRecord as ErrorRecord
from ._durable.records import FileRecord as FileRecord
from ._durable.records import JobRecord as JobRecord
from ._durable.records import JobState as JobState
from ._durable.records import JournalConflict as JournalConflict
from ._durable.records import JournalError as JournalError
from ._durable.records import JournalLost as JournalLost
from ._durable.records import JournalStatistics as JournalStatistics
from ._durable.records import ResumePlan as ResumePlan
from ._durable.sqlite import SqliteJournal as SqliteJournal
from ._durable.store import JobStore as JobStore
from ._durable.store import MemoryStore as MemoryStore
from ._engine import Batch as Batch
from ._engine import BatchProducer as BatchProducer
from ._engine import BatchStatistics as BatchStatistics
from ._engine import BatchStore as BatchStore
from ._engine import EngineStatistics as EngineStatistics
from ._engine import LaneStatistics as LaneStatistics
from ._engine import Outcome as Outcome
from ._engine import RateStatistics as RateStatistics
from ._engine import SchedulerStatistics as SchedulerStatistics
from ._engine import SlotStatistics as SlotStatistics
from ._webhooks.config import WebhookConfig as WebhookConfig
from ._webhooks.receiver import WebhookReceiver as WebhookReceiver
from ._webhooks.receiver import WebhookStatistics as WebhookStatistics
from ._webhooks.receiver import WebhookSubscription as WebhookSubscription
from ._webhooks.signing import RejectReason as RejectReason
from ._webhooks.signing import WebhookVerificationError as WebhookVerificationError
from ._webhooks.signing import WebhookVerifier as WebhookVerifier

__version__ = "0.1.0"

__all__ = [
    "COMETAPI_RULES",
    "KLING_RULES",
    "APIError",
    "AccountError",
    "AiohttpTransport",
    "AuthenticationError",
    "Backoff",
    "BadRequest",
    "Batch",
    "BatchProducer",
    "BatchStatistics",
    "BatchStopped",
    "BatchStore",
    "Client",
    "Clock",
    "CometAPI",
    "ConcurrencyLimited",
    "ConnectError",
    "ConnectionLost",
    "DownloadError",
    "DownloadLimits",
    "DownloadStatistics",
    "Downloader",
    "DuplicateExternalId",
    "Duration",
    "DynamicMask",
    "EngineStatistics",
    "ErrorRecord",
    "FileRecord",
    "GeneratedImage",
    "HttpRequest",
    "HttpResponse",
    "Image",
    "ImageAspectRatio",
    "ImageOrigin",
    "InvalidRequest",
    "JobRecord",
    "JobState",
    "JobStore",
    "JobTimedOut",
    "JournalConflict",
    "JournalError",
    "JournalLost",
    "JournalStatistics",
    "Kind",
    "KindRules",
    "Kling",
    "KlingError",
    "LaneStatistics",
    "Limits",
    "MalformedResponse",
    "MemoryStore",
    "MockTransport",
    "Mode",
    "MultiImageToImage",
    "MultiImageToVideo",
    "NotFound",
    "Outcome",
    "PermissionDenied",
    "Point",
    "PolicyViolation",
    "PollPolicy",
    "PostgresJournal",
    "Profile",
    "RateLimited",
    "RateStatistics",
    "RejectReason",
    "Request",
    "RequestTimeout",
    "ResultExpired",
    "ResumePlan",
    "Rules",
    "SchedulerStatistics",
    "Scope",
    "ServerError",
    "SlotStatistics",
    "SqliteJournal",
    "Status",
    "SystemClock",
    "Task",
    "TaskFailed",
    "Tasks",
    "Timeouts",
    "Transport",
    "TransportError",
    "UnsafeKey",
    "Video",
    "VideoAspectRatio",
    "VirtualClock",
    "WebhookConfig",
    "WebhookReceiver",
    "WebhookStatistics",
    "WebhookSubscription",
    "WebhookVerificationError",
    "WebhookVerifier",
    "check_job_key",
    "validate_request",
]


def _present_as_public() -> None:
    """Show public names as ``kling_async.X`` in help() and tracebacks (as httpx does).

    Implementation modules stay private; pickling still works, since each name is
    importable from the package root.
    """
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if isinstance(value, type | _types.FunctionType):
            value.__module__ = __name__


_present_as_public()
