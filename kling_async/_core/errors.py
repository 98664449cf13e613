# ruff: noqa: N818  -- the exception names are the public contract (httpx style, no Error suffix)
"""The exception tree of kling_async.

Every error raised at run time derives from :class:`KlingError` and says its scope:
``job`` (this job cannot succeed), ``transient`` (a retry may help; ``retry_after``
when the server said how long to wait) or ``batch`` (stop submitting anything)::

    KlingError(Exception)
    ├── InvalidRequest(KlingError, ValueError)   JOB        local validation, .field .rule
    ├── APIError                                 (by code)  the server answered with an error
    │   ├── AuthenticationError                  BATCH      401 / 1000-1004
    │   ├── AccountError                         BATCH      1100-1102 (arrears, pack used up)
    │   ├── PermissionDenied                     BATCH      403 / 1103, 1304
    │   ├── BadRequest                           JOB        400 / 1200, 1201, invalid_request
    │   │   └── DuplicateExternalId              JOB        1201 "external_task_id already exists"
    │   ├── NotFound                             JOB        404 / 1202, 1203
    │   ├── PolicyViolation                      JOB        1300, 1301
    │   ├── RateLimited                          TRANSIENT  1302 / CometAPI 429
    │   ├── ConcurrencyLimited                   TRANSIENT  1303
    │   └── ServerError                          TRANSIENT  5000-5002, 5xx without a code
    ├── TransportError                           TRANSIENT  no usable answer
    │   ├── ConnectError                         connection never made: request NOT sent
    │   ├── RequestTimeout                       timed out: may have reached the server
    │   ├── ConnectionLost                       reset after sending: may have reached it
    │   └── MalformedResponse                    bad JSON, HTML, redirect, odd shape; .path
    ├── TaskFailed                               JOB        the task ended ``failed``
    ├── JobTimedOut                              JOB        the job's deadline passed
    ├── BatchStopped                             BATCH      not sent: the batch circuit opened
    ├── DownloadError                            JOB        a result file could not be saved
    │   └── ResultExpired                        JOB        its URL answers 403/404/410
    ├── JournalError(KlingError, RuntimeError)   BATCH      the journal cannot be used
    │   └── JournalLost                          BATCH      it lost rows its anchor says it held
    └── WebhookVerificationError(.., ValueError) -          a delivery failed its checks

Misuse of the journal raises ``JournalConflict(ValueError)`` (same key, other request) and of
the downloader ``UnsafeKey(ValueError)``; both are ``ValueError``, not run-time errors.

No API key or token ever appears in an error's text or attributes: strings from an
answer are scrubbed at the API seam (``_api.transport.decode_response``), and every
error masks, once more, bearer tokens, JWTs and every key a Client of the process was
given in its message and request id, whoever built it.
"""

import enum
from typing import ClassVar

from .redact import scrub_known

__all__ = [
    "APIError",
    "AccountError",
    "AuthenticationError",
    "BadRequest",
    "BatchStopped",
    "ConcurrencyLimited",
    "ConnectError",
    "ConnectionLost",
    "DownloadError",
    "DuplicateExternalId",
    "InvalidRequest",
    "JobTimedOut",
    "KlingError",
    "MalformedResponse",
    "NotFound",
    "PermissionDenied",
    "PolicyViolation",
    "RateLimited",
    "RequestTimeout",
    "ResultExpired",
    "Scope",
    "ServerError",
    "TaskFailed",
    "TransportError",
    "may_have_created",
]


class Scope(enum.Enum):
    """How far an error reaches: one job, a passing condition, or the whole batch."""

    JOB = "job"
    TRANSIENT = "transient"
    BATCH = "batch"


class KlingError(Exception):
    """Root of every error kling_async raises at run time.

    Attributes:
        message: Human-readable text (never contains a secret).
        scope: :class:`Scope` of the error.
        http_status: HTTP status of the answer, when there was one.
        code: Business code of the answer (Kling ``code``), when there was one.
        request_id: The server's request id, when known.
        task_id: The task concerned, when known.
        job_key: The caller's job key, when the engine knows it.
        retry_after: Seconds the server asked to wait (``Retry-After``), when given.
    """

    default_scope: ClassVar[Scope] = Scope.JOB

    def __init__(
        self,
        message: str,
        *,
        scope: Scope | None = None,
        http_status: int | None = None,
        code: int | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        job_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = scrub_known(message)
        super().__init__(message)
        self.message = message
        self.scope = scope if scope is not None else self.default_scope
        self.http_status = http_status
        self.code = code
        self.request_id = None if request_id is None else scrub_known(request_id)
        self.task_id = task_id
        self.job_key = job_key
        self.retry_after = retry_after

    def _context(self) -> list[str]:
        parts: list[str] = []
        if self.job_key is not None:
            parts.append(f"job={self.job_key!r}")
        if self.task_id is not None:
            parts.append(f"task_id={self.task_id}")
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.request_id is not None:
            parts.append(f"request_id={self.request_id}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:g}s")
        return parts

    def __str__(self) -> str:
        parts = self._context()
        return f"{self.message} [{', '.join(parts)}]" if parts else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor: pickle through the attribute dict.
        return (_rebuild, (type(self), self.message), self.__dict__)


def _rebuild(cls: type[KlingError], message: str) -> KlingError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, message)
    return obj


class InvalidRequest(KlingError, ValueError):
    """A request broke a rule of the API; found locally, before any network I/O.

    Attributes:
        field: Path of the offending field, with wire names (``image_list[2]``).
        rule: The rule it broke, in words (``280x900 is below 300 px``).
    """

    default_scope = Scope.JOB

    def __init__(self, field: str, rule: str, *, job_key: str | None = None) -> None:
        super().__init__(f"{field}: {rule}", job_key=job_key)
        self.field = field
        self.rule = rule

    def at(self, field: str) -> "InvalidRequest":
        """Return the same error re-rooted at ``field`` (a more precise path)."""
        return InvalidRequest(field, self.rule, job_key=self.job_key)


class APIError(KlingError):
    """The server answered with an error envelope or an error status."""


class AuthenticationError(APIError):
    """The key was refused (401, codes 1000-1004): nothing will work."""

    default_scope = Scope.BATCH


class AccountError(APIError):
    """Account problem: arrears or resource pack used up (codes 1100-1102)."""

    default_scope = Scope.BATCH


class PermissionDenied(APIError):
    """No access to this API or model, or IP not whitelisted (403, codes 1103, 1304)."""

    default_scope = Scope.BATCH


class BadRequest(APIError):
    """The server refused the parameters (400, codes 1200, 1201, ``invalid_request``)."""

    default_scope = Scope.JOB


class DuplicateExternalId(BadRequest):
    """A create reused an ``external_task_id``: the task already exists (1201)."""


class NotFound(APIError):
    """Unknown task, method or model (404, codes 1202, 1203).

    A lookup by external id answering this proves the task does not exist.
    """

    default_scope = Scope.JOB


class PolicyViolation(APIError):
    """Platform or content policy refused the request (codes 1300, 1301)."""

    default_scope = Scope.JOB


class RateLimited(APIError):
    """Request rate over the limit (code 1302, CometAPI 429): back off and slow down."""

    default_scope = Scope.TRANSIENT


class ConcurrencyLimited(APIError):
    """Tasks running over the account's concurrency limit (code 1303)."""

    default_scope = Scope.TRANSIENT


class ServerError(APIError):
    """Server trouble (codes 5000-5002, 5xx without a business code)."""

    default_scope = Scope.TRANSIENT


class TransportError(KlingError):
    """No usable answer came back: connection trouble, timeout or a malformed body."""

    default_scope = Scope.TRANSIENT


class ConnectError(TransportError):
    """The connection was never established, so the request was not sent."""


class RequestTimeout(TransportError):
    """The request timed out; it may have reached the server."""


class ConnectionLost(TransportError):
    """The connection broke after the request was sent; it may have reached the server."""


class MalformedResponse(TransportError):
    """The answer was not the expected JSON (HTML, redirect, truncated, odd shape).

    Attributes:
        path: JSON path of the offending value (``$.data.task_status``), ``$`` for the body.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "$",
        http_status: int | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, request_id=request_id, task_id=task_id)
        self.path = path

    def _context(self) -> list[str]:
        return [f"at {self.path}", *super()._context()]


class TaskFailed(KlingError):
    """The task ended ``failed``; ``message`` is the server's ``task_status_msg``."""

    default_scope = Scope.JOB


class JobTimedOut(KlingError):
    """The job's deadline passed; the task may still be running on the server."""

    default_scope = Scope.JOB


class BatchStopped(KlingError):
    """A pending job was not sent because the batch circuit opened.

    Attributes:
        reason: The batch-scoped error that opened the circuit.
    """

    default_scope = Scope.BATCH

    def __init__(self, reason: KlingError, *, job_key: str | None = None) -> None:
        super().__init__(f"batch stopped: {reason.message}", job_key=job_key)
        self.reason = reason


_AMBIGUOUS = (RequestTimeout, ConnectionLost, MalformedResponse, ServerError)


def may_have_created(exc: KlingError) -> bool:
    """Tell whether a failed create may still have created a task on the server."""
    return isinstance(exc, _AMBIGUOUS)


class DownloadError(KlingError):
    """A result file could not be downloaded; the task itself succeeded.

    Attributes:
        url: The result URL (kept so a later resume can try again).
        expires_at: When the URL stops working (Unix seconds), when known.
    """

    default_scope = Scope.JOB

    def __init__(
        self,
        message: str,
        *,
        url: str,
        http_status: int | None = None,
        task_id: str | None = None,
        job_key: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        super().__init__(message, http_status=http_status, task_id=task_id, job_key=job_key)
        self.url = scrub_known(url)
        self.expires_at = expires_at


class ResultExpired(DownloadError):
    """The result URL answered 403, 404 or 410: expired or gone, retrying will not help."""
