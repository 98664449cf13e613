"""The HTTP seam: a one-method transport, its aiohttp implementation, envelope decoding.

The transport only moves bytes and translates connection trouble into
:class:`~kling_async.TransportError` subclasses; :func:`decode_response` turns an answer
into the envelope's ``data`` or the typed error of the API.md error table (business
code first, HTTP status second). No aiohttp type crosses this module's boundary.
"""

import email.utils
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, Self

import aiohttp
import anyio
import attrs

from .._core import lifetime
from .._core.config import DEFAULT_TIMEOUTS, Timeouts
from .._core.errors import (
    AccountError,
    APIError,
    AuthenticationError,
    BadRequest,
    ConcurrencyLimited,
    ConnectError,
    ConnectionLost,
    DuplicateExternalId,
    MalformedResponse,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    RequestTimeout,
    Scope,
    ServerError,
    TransportError,
)
from .._core.redact import Redactor

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "AiohttpTransport",
    "HttpRequest",
    "HttpResponse",
    "MockTransport",
    "Transport",
    "decode_response",
    "logger",
    "parse_retry_after",
]

logger: Final = logging.getLogger("kling_async")
# A library stays quiet unless the application configures logging.
logger.addHandler(logging.NullHandler())

DEFAULT_MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024
_SECRET_HEADERS: Final = frozenset({"authorization", "x-api-key", "cookie"})
_REQUEST_ID_IN_MESSAGE: Final = re.compile(r"\s*\(request id:\s*([^)\s]+)\s*\)", re.IGNORECASE)
_DUPLICATE_MARKER: Final = "external_task_id already exists"


def _redact_headers(headers: Mapping[str, str]) -> str:
    shown = {
        name: ("***" if name.lower() in _SECRET_HEADERS else value)
        for name, value in headers.items()
    }
    return repr(shown)


def _body_repr(body: bytes | None) -> str:
    return "None" if body is None else f"<{len(body)} bytes>"


@attrs.frozen
class HttpRequest:
    """One HTTP request as the client hands it to a transport (secrets hidden in repr)."""

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=_redact_headers)
    body: bytes | None = attrs.field(default=None, repr=_body_repr)


def _lower_keys(headers: Mapping[str, str]) -> Mapping[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@attrs.frozen
class HttpResponse:
    """One HTTP answer; header names are stored lower case."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_keys)
    body: bytes = attrs.field(default=b"", repr=_body_repr)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        return self.headers.get(name.lower())


class Transport(Protocol):
    """Sends one request. Raises only :class:`~kling_async.TransportError` subclasses."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` and return the complete answer, whatever its status."""
        ...


Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


class MockTransport:
    """A transport that calls ``handler`` instead of the network (for tests).

    The handler returns an :class:`HttpResponse` (or an awaitable of one) or raises a
    :class:`~kling_async.TransportError`.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Record ``request`` and answer with the handler's response."""
        self.requests.append(request)
        result = self._handler(request)
        if inspect.isawaitable(result):
            return await result
        return result


class AiohttpTransport:
    """The real transport: one pooled aiohttp session, created in ``__aenter__``.

    Redirects are not followed (a 3xx comes back as an answer and becomes a typed
    error); bodies over ``max_response_bytes`` are refused.

    Args:
        timeouts: Connect, read and total timeouts of each call.
        max_connections: Size of the connection pool.
        max_response_bytes: Largest body accepted.
        user_agent: The ``User-Agent`` header.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_connections: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        user_agent: str = "kling-async",
    ) -> None:
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("AiohttpTransport is already open")
        timeout = aiohttp.ClientTimeout(
            total=self._timeouts.total,
            connect=self._timeouts.connect,
            sock_read=self._timeouts.read,
        )
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": self._user_agent},
            raise_for_status=False,
        )
        return self

    __aexit__ = lifetime.__aexit__

    async def aclose(self) -> None:
        """Close the session and its connections (shielded from cancellation)."""
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; connection trouble becomes a TransportError subclass.

        The error is raised outside the ``except`` block, with no cause and no context:
        aiohttp's exceptions hold the request record, live ``Authorization`` header
        included, and must not travel with it. Its text is scrubbed of that header too.
        """
        if self._session is None:
            raise RuntimeError("AiohttpTransport is not open: use `async with`")
        error: TransportError
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
            ) as response:
                body = await self._read(response)
                return HttpResponse(response.status, dict(response.headers), body)
        except TransportError as exc:
            error = exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = _translate(exc, request)
        raise _scrubbed(error, _request_redactor(request))

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_response_bytes
        length = response.content_length
        if length is not None and length > limit:
            raise MalformedResponse(
                f"response body of {length} bytes is over the {limit} bytes cap",
                http_status=response.status,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise MalformedResponse(
                    f"response body is over the {limit} bytes cap",
                    http_status=response.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    """The typed error of an aiohttp/OS failure; nothing of ``exc`` but its kind is kept."""
    what = f"{request.method} {_path(request.url)}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(f"connect timeout to {_origin(request.url)}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {_origin(request.url)}: {_reason(exc)}")
    if isinstance(exc, TimeoutError | aiohttp.SocketTimeoutError):
        return RequestTimeout(f"{what} timed out")
    if isinstance(exc, aiohttp.InvalidURL):
        return ConnectError(f"invalid URL {_origin(request.url)!r}: request not sent")
    if isinstance(exc, aiohttp.ClientResponseError):
        # The server sent something that is not HTTP (bad status line, bad headers).
        return MalformedResponse(f"{what}: invalid HTTP answer", http_status=None)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionLost(f"{what}: response body cut short")
    return ConnectionLost(f"{what}: connection lost ({type(exc).__name__})")


def _request_redactor(request: HttpRequest) -> Redactor:
    values = [
        value
        for name, value in request.headers.items()
        if name.lower() in _SECRET_HEADERS and value
    ]
    return Redactor([*values, *(value.partition(" ")[2] for value in values)])


def _scrubbed(error: TransportError, redactor: Redactor) -> TransportError:
    """``error`` with its text scrubbed and its cause/context/traceback links cut."""
    clean_message = redactor.text(error.message)
    if clean_message != error.message:
        error.message = clean_message
        error.args = (clean_message,)
    error.request_id = redactor.optional(error.request_id)
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _path(url: str) -> str:
    _, _, rest = url.partition("://")
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    return exc.os_error.strerror or type(exc.os_error).__name__


# --- envelope decoding ---------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header: seconds, or an HTTP date. None when absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        now = time.time() if now is None else now
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _business_code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    # ASCII digits only ("²".isdigit() is true), and no 5,000-digit "code".
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def _class_for_code(code: int) -> type[APIError] | None:
    if 1000 <= code <= 1004:
        return AuthenticationError
    if 1100 <= code <= 1102:
        return AccountError
    if code in (1103, 1304):
        return PermissionDenied
    if code in (1200, 1201):
        return BadRequest
    if code in (1202, 1203):
        return NotFound
    if code in (1300, 1301):
        return PolicyViolation
    if code == 1302:
        return RateLimited
    if code == 1303:
        return ConcurrencyLimited
    if 5000 <= code <= 5999:
        return ServerError
    return None


def _class_for_status(status: int) -> type[APIError] | None:
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDenied
    if status == 404:
        return NotFound
    if status == 429:
        return RateLimited
    if status == 408 or status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequest
    return None


def _class_for_family(code: int) -> type[APIError]:
    # An undocumented code on a 2xx answer: judge by its documented family.
    return {
        10: AuthenticationError,
        11: AccountError,
        12: BadRequest,
        13: PolicyViolation,
        50: ServerError,
    }.get(code // 100, APIError)


def _clip(text: str | None, limit: int) -> str | None:
    # After scrubbing, never before: a cut could leave half a key that no longer matches.
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "..."


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _json_body(response: HttpResponse) -> object:
    try:
        return json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NOT_JSON


_NOT_JSON: Final = object()


def _non_json_error(response: HttpResponse, retry_after: float | None) -> Exception:
    status = response.status
    content_type = response.header("content-type") or ""
    is_html = "html" in content_type or response.body.lstrip()[:1] == b"<"
    what = "an HTML page" if is_html else "a body that is not JSON"
    if status in (401, 403, 429) or status >= 500:
        cls = _class_for_status(status)
        assert cls is not None
        return cls(f"HTTP {status} with {what}", http_status=status, retry_after=retry_after)
    return MalformedResponse(
        f"HTTP {status} with {what} (wrong base URL or path?)",
        http_status=status,
        path="$",
    )


def _redirect_error(response: HttpResponse, redactor: Redactor) -> MalformedResponse:
    # Never followed: the Authorization header would go wherever the gateway points.
    location = _clip(redactor.text(response.header("location") or "nowhere"), 500)
    return MalformedResponse(
        f"HTTP {response.status} redirect to {location!r} not followed (wrong base URL or path?)",
        http_status=response.status,
        request_id=_clip(redactor.optional(response.header("x-request-id")), 200),
    )


def decode_response(
    response: HttpResponse,
    *,
    secrets: Iterable[str] | Redactor = (),
    now: float | None = None,
) -> Any:
    """Return the ``data`` of a success envelope, or raise the typed error.

    Success is a 2xx answer whose ``code`` is 0. Errors are classified by business
    code first (Kling ``code``, or a numeric CometAPI ``error.code``), then HTTP status.

    Args:
        response: The answer.
        secrets: The key and token of the call (or a :class:`Redactor` of them): masked,
            with any bearer token or JWT, in every string of the answer: the returned
            ``data`` (task ids, messages, URLs), the error's message, request id and
            redirect target.
        now: Current wall time for ``Retry-After`` dates (tests inject it).

    Raises:
        APIError: A subclass per the API.md error table.
        MalformedResponse: Redirect, HTML on a non-error status, bad JSON, odd shape.
    """
    redactor = secrets if isinstance(secrets, Redactor) else Redactor(secrets)
    status = response.status
    retry_after = parse_retry_after(response.header("retry-after"), now=now)
    if 300 <= status < 400:
        raise _redirect_error(response, redactor)
    body = _json_body(response)
    if body is _NOT_JSON:
        raise _non_json_error(response, retry_after)
    if not isinstance(body, dict):
        if 200 <= status < 300:
            raise MalformedResponse(
                f"expected a JSON object, got {type(body).__name__}", http_status=status
            )
        status_cls = _class_for_status(status) or APIError
        raise status_cls(f"HTTP {status}", http_status=status, retry_after=retry_after)
    error = body.get("error")
    if isinstance(error, dict):
        message = _text(error.get("message"))
        code = _business_code(error.get("code"))
        error_code = _text(error.get("code"))
        request_id = _text(body.get("request_id")) or None
    else:
        if 200 <= status < 300:
            raw_code = body.get("code")
            if raw_code == 0 or (
                isinstance(raw_code, str) and raw_code.lower() in ("0", "success")
            ):
                data = body.get("data")
                return redactor.tree(data) if redactor.may_touch(response.body) else data
            if raw_code is None:
                raise MalformedResponse(
                    "success answer without a business code", http_status=status, path="$.code"
                )
        message = _text(body.get("message"))
        code = _business_code(body.get("code"))
        error_code = ""
        request_id = _text(body.get("request_id")) or None
    found = _REQUEST_ID_IN_MESSAGE.search(message)
    if found:
        request_id = request_id or found.group(1)
        message = _REQUEST_ID_IN_MESSAGE.sub("", message).strip()
    request_id = _clip(redactor.optional(request_id or response.header("x-request-id")), 200)
    message = _clip(redactor.text(message), 2000) or f"HTTP {status}"

    cls: type[APIError] | None = _class_for_code(code) if code is not None else None
    if cls is None and error_code == "invalid_request":
        cls = BadRequest
    if cls is None:
        cls = _class_for_status(status)
    if cls is None:
        cls = _class_for_family(code) if code is not None else APIError
    if cls is BadRequest and _DUPLICATE_MARKER in message.lower():
        cls = DuplicateExternalId
    scope = None
    if cls is APIError:
        scope = Scope.TRANSIENT if status >= 500 else Scope.JOB
    raise cls(
        message,
        scope=scope,
        http_status=status,
        code=code,
        request_id=request_id,
        retry_after=retry_after,
    )
