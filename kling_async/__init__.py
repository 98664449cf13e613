"""kling_async: an asyncio-first concurrent batch client for Kling multi-image generation.

Everything public is re-exported here; implementation modules are private. The local
server lives in the public subpackage :mod:`kling_async.simulator`.
"""

from ._client import Client as Client
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import VirtualClock as VirtualClock
from ._download import Downloader as Downloader
from ._download import DownloadStatistics as DownloadStatistics
from ._download import UnsafeKey as UnsafeKey
from ._engine import Batch as Batch
from ._engine import BatchStatistics as BatchStatistics
from ._engine import EngineStatistics as EngineStatistics
from ._engine import JobStatus as JobStatus
from ._engine import Outcome as Outcome
from ._errors import AccountError as AccountError
from ._errors import APIError as APIError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BadRequest as BadRequest
from ._errors import BatchStopped as BatchStopped
from ._errors import ConcurrencyLimited as ConcurrencyLimited
from ._errors import ConnectError as ConnectError
from ._errors import ConnectionLost as ConnectionLost
from ._errors import DownloadError as DownloadError
from ._errors import DuplicateExternalId as DuplicateExternalId
from ._errors import InvalidRequest as InvalidRequest
from ._errors import JobTimedOut as JobTimedOut
from ._errors import KlingError as KlingError
from ._errors import MalformedResponse as MalformedResponse
from ._errors import NotFound as NotFound
from ._errors import PermissionDenied as PermissionDenied
from ._errors import PolicyViolation as PolicyViolation
from ._errors import RateLimited as RateLimited
from ._errors import RequestTimeout as RequestTimeout
from ._errors import ResultExpired as ResultExpired
from ._errors import Scope as Scope
from ._errors import ServerError as ServerError
from ._errors import TaskFailed as TaskFailed
from ._errors import TransportError as TransportError
from ._http import AiohttpTransport as AiohttpTransport
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponse as HttpResponse
from ._http import MockTransport as MockTransport
from ._http import Transport as Transport
from ._images import validate_request as validate_request
from ._journal import JobState as JobState
from ._journal import JobStore as JobStore
from ._journal import JournalConflict as JournalConflict
from ._journal import JournalError as JournalError
from ._journal import MemoryStore as MemoryStore
from ._journal import SqliteJournal as SqliteJournal
from ._models import Duration as Duration
from ._models import DynamicMask as DynamicMask
from ._models import GeneratedImage as GeneratedImage
from ._models import Image as Image
from ._models import ImageAspectRatio as ImageAspectRatio
from ._models import ImageOrigin as ImageOrigin
from ._models import Kind as Kind
from ._models import Mode as Mode
from ._models import MultiImageToImage as MultiImageToImage
from ._models import MultiImageToVideo as MultiImageToVideo
from ._models import Point as Point
from ._models import Request as Request
from ._models import Task as Task
from ._models import TaskStatus as TaskStatus
from ._models import Video as Video
from ._models import VideoAspectRatio as VideoAspectRatio
from ._policy import Backoff as Backoff
from ._policy import Limits as Limits
from ._policy import PollPolicy as PollPolicy
from ._policy import Timeouts as Timeouts
from ._profiles import CometAPI as CometAPI
from ._profiles import Kling as Kling
from ._profiles import Profile as Profile
from ._webhook import RejectReason as RejectReason
from ._webhook import WebhookConfig as WebhookConfig
from ._webhook import WebhookReceiver as WebhookReceiver
from ._webhook import WebhookStatistics as WebhookStatistics
from ._webhook import WebhookSubscription as WebhookSubscription
from ._webhook import WebhookVerificationError as WebhookVerificationError
from ._webhook import WebhookVerifier as WebhookVerifier

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
