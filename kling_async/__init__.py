"""kling_async: an asyncio-first concurrent batch client for Kling multi-image generation.

Everything public is re-exported here; implementation modules are private. The local
server lives in the public subpackage :mod:`kling_async.simulator`.
"""

from ._api.images import validate_request as validate_request
from ._api.profiles import CometAPI as CometAPI
from ._api.profiles import Kling as Kling
from ._api.profiles import Profile as Profile
from ._api.transport import AiohttpTransport as AiohttpTransport
from ._api.transport import HttpRequest as HttpRequest
from ._api.transport import HttpResponse as HttpResponse
from ._api.transport import MockTransport as MockTransport
from ._api.transport import Transport as Transport
from ._client import Client as Client
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
from ._core.models import Task as Task
from ._core.models import TaskStatus as TaskStatus
from ._core.models import Video as Video
from ._core.models import VideoAspectRatio as VideoAspectRatio
from ._durable.downloads import Downloader as Downloader
from ._durable.downloads import DownloadStatistics as DownloadStatistics
from ._durable.downloads import UnsafeKey as UnsafeKey
from ._durable.postgres import PostgresJournal as PostgresJournal
from ._durable.records import JobState as JobState
from ._durable.records import JournalConflict as JournalConflict
from ._durable.records import JournalError as JournalError
from ._durable.sqlite import SqliteJournal as SqliteJournal
from ._durable.store import JobStore as JobStore
from ._durable.store import MemoryStore as MemoryStore
from ._engine import Batch as Batch
from ._engine import BatchStatistics as BatchStatistics
from ._engine import EngineStatistics as EngineStatistics
from ._engine import JobStatus as JobStatus
from ._engine import Outcome as Outcome
from ._webhooks.config import WebhookConfig as WebhookConfig
from ._webhooks.receiver import WebhookReceiver as WebhookReceiver
from ._webhooks.receiver import WebhookStatistics as WebhookStatistics
from ._webhooks.receiver import WebhookSubscription as WebhookSubscription
from ._webhooks.signing import RejectReason as RejectReason
from ._webhooks.signing import WebhookVerificationError as WebhookVerificationError
from ._webhooks.signing import WebhookVerifier as WebhookVerifier

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AccountError",
    "AiohttpTransport",
    "AuthenticationError",
    "Backoff",
    "BadRequest",
    "Batch",
    "BatchStatistics",
    "BatchStopped",
    "Client",
    "Clock",
    "CometAPI",
    "ConcurrencyLimited",
    "ConnectError",
    "ConnectionLost",
    "DownloadError",
    "DownloadStatistics",
    "Downloader",
    "DuplicateExternalId",
    "Duration",
    "DynamicMask",
    "EngineStatistics",
    "GeneratedImage",
    "HttpRequest",
    "HttpResponse",
    "Image",
    "ImageAspectRatio",
    "ImageOrigin",
    "InvalidRequest",
    "JobState",
    "JobStatus",
    "JobStore",
    "JobTimedOut",
    "JournalConflict",
    "JournalError",
    "Kind",
    "Kling",
    "KlingError",
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
    "RejectReason",
    "Request",
    "RequestTimeout",
    "ResultExpired",
    "Scope",
    "ServerError",
    "SqliteJournal",
    "SystemClock",
    "Task",
    "TaskFailed",
    "TaskStatus",
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
    "validate_request",
]
