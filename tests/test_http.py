"""The HTTP layer: every row of the error table in both envelopes, and the aiohttp transport."""

import asyncio
import email.utils
import json
import pathlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from kling_async import (
    AccountError,
    AiohttpTransport,
    APIError,
    AuthenticationError,
    BadRequest,
    ConcurrencyLimited,
    ConnectError,
    ConnectionLost,
    DuplicateExternalId,
    HttpRequest,
    HttpResponse,
    KlingError,
    MalformedResponse,
    MockTransport,
    NotFound,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    RequestTimeout,
    Scope,
    ServerError,
    Timeouts,
)
from kling_async._api.transport import decode_response, parse_retry_after
from tests._core_helpers import json_response, ok, task_body

# Copies of shared/fixtures/api-examples (the documented bodies), kept with the tests.
FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "api-examples"

# (HTTP status, business code, class, scope) -- one line per code of API.md's table.
TABLE: list[tuple[int, int, type[APIError], Scope]] = [
    *[(401, code, AuthenticationError, Scope.BATCH) for code in range(1000, 1005)],
    *[(429, code, AccountError, Scope.BATCH) for code in (1100, 1101, 1102)],
    (403, 1103, PermissionDenied, Scope.BATCH),
    (400, 1200, BadRequest, Scope.JOB),
    (400, 1201, BadRequest, Scope.JOB),
    (404, 1202, NotFound, Scope.JOB),
    (404, 1203, NotFound, Scope.JOB),
    (400, 1300, PolicyViolation, Scope.JOB),
    (400, 1301, PolicyViolation, Scope.JOB),
    (429, 1302, RateLimited, Scope.TRANSIENT),
    (429, 1303, ConcurrencyLimited, Scope.TRANSIENT),
    (429, 1304, PermissionDenied, Scope.BATCH),
    (500, 5000, ServerError, Scope.TRANSIENT),
    (503, 5001, ServerError, Scope.TRANSIENT),
    (504, 5002, ServerError, Scope.TRANSIENT),
]


def _raise(response: HttpResponse, **kwargs: Any) -> KlingError:
    with pytest.raises(KlingError) as caught:
        decode_response(response, **kwargs)
    return caught.value


@pytest.mark.parametrize(("status", "code", "cls", "scope"), TABLE)
def test_kling_envelope_table(status: int, code: int, cls: type, scope: Scope) -> None:
    """Each business code in Kling's envelope maps to its class and scope."""
    body = {"code": code, "message": f"reason {code}", "request_id": "rid-1"}
    error = _raise(json_response(status, body))
    assert type(error) is cls
    assert error.scope is scope
    assert (error.http_status, error.code, error.request_id) == (status, code, "rid-1")
    assert error.message == f"reason {code}"


@pytest.mark.parametrize(("status", "code", "cls", "scope"), TABLE)
def test_cometapi_envelope_table(status: int, code: int, cls: type, scope: Scope) -> None:
    """The same codes relayed in CometAPI's error envelope map the same way."""
    body = {
        "error": {
            "message": f"reason {code} (request id: 2026112312000012345)",
            "type": "comet_api_error",
            "param": "",
            "code": str(code),
        }
    }
    error = _raise(json_response(status, body))
    assert type(error) is cls
    assert error.scope is scope
    assert error.code == code
    assert error.request_id == "2026112312000012345"
    assert error.message == f"reason {code}"


@pytest.mark.parametrize("status", [401, 403, 404, 429, 400, 500, 502, 503, 504, 524])
def test_business_code_beats_http_status(status: int) -> None:
    """A 1303 is a concurrency limit whatever the HTTP status (even 200)."""
    error = _raise(json_response(status, {"code": 1303, "message": "busy"}))
    assert type(error) is ConcurrencyLimited
    assert type(_raise(json_response(200, {"code": 1303, "message": "busy"}))) is (
        ConcurrencyLimited
    )


@pytest.mark.parametrize(
    ("status", "cls", "scope"),
    [
        (400, BadRequest, Scope.JOB),
        (401, AuthenticationError, Scope.BATCH),
        (403, PermissionDenied, Scope.BATCH),
        (404, NotFound, Scope.JOB),
        (405, BadRequest, Scope.JOB),
        (408, ServerError, Scope.TRANSIENT),
        (422, BadRequest, Scope.JOB),
        (429, RateLimited, Scope.TRANSIENT),
        (500, ServerError, Scope.TRANSIENT),
        (502, ServerError, Scope.TRANSIENT),
        (503, ServerError, Scope.TRANSIENT),
        (504, ServerError, Scope.TRANSIENT),
        (524, ServerError, Scope.TRANSIENT),
    ],
)
def test_cometapi_envelope_without_code_uses_the_status(
    status: int, cls: type, scope: Scope
) -> None:
    """Without a business code, the HTTP status decides."""
    body = {"error": {"message": "nope", "type": "comet_api_error", "code": ""}}
    error = _raise(json_response(status, body))
    assert type(error) is cls
    assert error.scope is scope
    assert error.code is None


def test_fixture_error_kling_1303() -> None:
    """The documented 1303 example (HTTP 429) is a concurrency limit with its request id."""
    body = json.loads((FIXTURES / "error-kling-1303.json").read_text())
    error = _raise(json_response(429, body, {"Retry-After": "3"}))
    assert type(error) is ConcurrencyLimited
    assert error.request_id == "9984d27b-a408-4073-ae28-17ca6a13622d"
    assert error.retry_after == 3.0


def test_fixture_error_cometapi_400() -> None:
    """The documented CometAPI error (HTTP 400) is a bad request; request id pulled out."""
    body = json.loads((FIXTURES / "error-cometapi.json").read_text())
    error = _raise(json_response(400, body))
    assert type(error) is BadRequest
    assert error.request_id == "20261123120000123456789"
    assert error.message == "model name is required"


def test_fixture_invalid_request_500_is_not_retryable() -> None:
    """A 500 with error.code invalid_request fails the job (not transient)."""
    body = json.loads((FIXTURES / "error-cometapi-invalid-request-500.json").read_text())
    error = _raise(json_response(500, body))
    assert type(error) is BadRequest
    assert error.scope is Scope.JOB
    assert error.request_id == "20261123120000987654321"


@pytest.mark.parametrize(
    "body",
    [
        {"code": 1201, "message": "external_task_id already exists", "request_id": "r"},
        {"error": {"message": "External_task_id already exists (request id: r)", "code": ""}},
    ],
)
def test_duplicate_external_id(body: dict[str, Any]) -> None:
    """1201 with 'external_task_id already exists' is DuplicateExternalId, in both envelopes."""
    error = _raise(json_response(400, body))
    assert type(error) is DuplicateExternalId
    assert error.request_id == "r"


def test_unknown_codes() -> None:
    """Undocumented codes fall back to the status, then to their family on a 2xx."""
    assert type(_raise(json_response(400, {"code": 1299, "message": "x"}))) is BadRequest
    assert type(_raise(json_response(200, {"code": 1005, "message": "x"}))) is (AuthenticationError)
    assert type(_raise(json_response(200, {"code": 1105, "message": "x"}))) is AccountError
    assert type(_raise(json_response(200, {"code": 1250, "message": "x"}))) is BadRequest
    assert type(_raise(json_response(200, {"code": 1399, "message": "x"}))) is PolicyViolation
    assert type(_raise(json_response(200, {"code": 5999, "message": "x"}))) is ServerError
    odd = _raise(json_response(200, {"code": 4242, "message": "x"}))
    assert type(odd) is APIError
    assert odd.scope is Scope.JOB
    odd_5xx = _raise(json_response(599, {"code": 4242, "message": ""}))
    assert type(odd_5xx) is ServerError
    assert odd_5xx.message == "HTTP 599"


def test_success_envelopes() -> None:
    """code 0 (or '0'/'success') on a 2xx answer returns data."""
    assert decode_response(json_response(200, ok({"a": 1}))) == {"a": 1}
    assert decode_response(json_response(201, {"code": "0", "data": [1]})) == [1]
    assert decode_response(json_response(200, {"code": "success", "data": None})) is None


@pytest.mark.parametrize(
    ("response", "path", "text"),
    [
        (HttpResponse(200, {}, b'{"code": 0, "data": {'), "$", "not JSON"),
        (HttpResponse(200, {}, b"\xff\xfe"), "$", "not JSON"),
        (HttpResponse(200, {"content-type": "text/html"}, b"<html>hi</html>"), "$", "HTML"),
        (HttpResponse(404, {}, b"  <!doctype html><p>no</p>"), "$", "HTML page"),
        (json_response(200, [1, 2]), "$", "expected a JSON object, got list"),
        (json_response(200, {"message": "ok", "data": {}}), "$.code", "without a business code"),
    ],
)
def test_malformed_answers(response: HttpResponse, path: str, text: str) -> None:
    """Bad JSON, HTML on a non-error status and odd shapes are MalformedResponse."""
    error = _raise(response)
    assert type(error) is MalformedResponse
    assert isinstance(error, MalformedResponse)
    assert error.path == path
    assert text in error.message


def test_redirect_is_a_typed_error() -> None:
    """A 3xx answer is never followed: it becomes MalformedResponse naming the target."""
    response = HttpResponse(302, {"location": "https://login.example/"}, b"")
    error = _raise(response)
    assert type(error) is MalformedResponse
    assert "redirect to 'https://login.example/'" in error.message
    assert error.http_status == 302


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, PermissionDenied),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (524, ServerError),
    ],
)
def test_html_error_pages_use_the_status(status: int, cls: type) -> None:
    """A gateway's HTML error page is classified by its HTTP status."""
    response = HttpResponse(status, {"content-type": "text/html", "retry-after": "7"}, b"<html>")
    error = _raise(response)
    assert type(error) is cls
    assert error.retry_after == 7.0
    assert "HTML page" in error.message


def test_non_object_json_error() -> None:
    """A JSON array on an error status is classified by the status."""
    assert type(_raise(json_response(503, ["busy"]))) is ServerError


def test_request_id_sources() -> None:
    """request_id comes from the body, the CometAPI message, or X-Request-Id."""
    headers = {"x-request-id": "hdr-1"}
    error = _raise(json_response(500, {"error": {"message": "boom"}}, headers))
    assert error.request_id == "hdr-1"
    error = _raise(json_response(429, {"code": 1302, "message": "slow"}, headers))
    assert error.request_id == "hdr-1"


def test_secrets_are_scrubbed_from_server_messages() -> None:
    """A server echoing the key does not put it into the exception text."""
    body = {"code": 1001, "message": "invalid key sk-secret-123"}
    error = _raise(json_response(401, body), secrets=["sk-secret-123", ""])
    assert "sk-secret-123" not in str(error)
    assert error.message == "invalid key ***"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:00", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or an HTTP date; nonsense is ignored."""
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:27:30 GMT").timestamp()
    assert parse_retry_after(value, now=now) == expected


def test_retry_after_reaches_the_error() -> None:
    """A 429 with Retry-After carries retry_after in seconds."""
    error = _raise(json_response(429, {"error": {"message": "slow"}}, {"retry-after": "12"}))
    assert type(error) is RateLimited
    assert error.retry_after == 12.0
    later = email.utils.formatdate(10_000_000_000, usegmt=True)
    assert (parse_retry_after(later) or 0) > 0


def test_request_and_response_reprs() -> None:
    """HttpRequest hides secret headers and bodies in its repr."""
    request = HttpRequest(
        "POST", "https://h/p", {"Authorization": "Bearer sk-xyz", "Accept": "x"}, b"{...}"
    )
    assert "sk-xyz" not in repr(request)
    assert "'Authorization': '***'" in repr(request)
    assert "<5 bytes>" in repr(request)
    assert "body=None" in repr(HttpRequest("GET", "https://h/p"))
    response = HttpResponse(200, {"x-a": "1"}, b"abc")
    assert response.header("X-A") == "1"
    assert response.header("missing") is None


async def test_mock_transport_sync_and_async_handlers() -> None:
    """MockTransport records requests and accepts plain or async handlers."""
    plain = MockTransport(lambda request: json_response(200, ok(task_body())))
    await plain.send(HttpRequest("GET", "https://h/1"))
    assert [r.url for r in plain.requests] == ["https://h/1"]

    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(204)

    assert (await MockTransport(handler).send(HttpRequest("GET", "https://h/2"))).status == 204


# --- the aiohttp transport against a real local server ---

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start an aiohttp.web app on 127.0.0.1 answering with the given handler."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


FAST = Timeouts(connect=2, read=0.3, total=5)


async def test_transport_round_trip(serve: Any) -> None:
    """A real request returns status, lower-cased headers and the body; body and headers sent."""
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers["Authorization"]
        seen["body"] = await request.read()
        return web.json_response({"code": 0}, headers={"X-Request-Id": "abc"})

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST) as transport:
        response = await transport.send(
            HttpRequest("POST", f"{url}/x", {"Authorization": "Bearer k"}, b'{"a":1}')
        )
    assert response.status == 200
    assert response.header("x-request-id") == "abc"
    assert json.loads(response.body) == {"code": 0}
    assert seen == {"auth": "Bearer k", "body": b'{"a":1}'}


async def test_transport_does_not_follow_redirects(serve: Any) -> None:
    """A 302 comes back as it is."""

    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere.example/")

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST) as transport:
        response = await transport.send(HttpRequest("GET", url))
    assert response.status == 302
    assert response.header("location") == "https://elsewhere.example/"


async def test_transport_caps_the_body(serve: Any) -> None:
    """A body over the cap is refused, by Content-Length or while streaming."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/sized":
            return web.Response(body=b"x" * 2000)
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"y" * 600)
        await response.write_eof()
        return response

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST, max_response_bytes=1000) as transport:
        with pytest.raises(MalformedResponse, match="2000 bytes is over the 1000 bytes cap"):
            await transport.send(HttpRequest("GET", f"{url}/sized"))
        with pytest.raises(MalformedResponse, match="over the 1000 bytes cap"):
            await transport.send(HttpRequest("GET", f"{url}/streamed"))


async def test_connection_refused_is_connect_error() -> None:
    """Nobody listening: ConnectError (the request was not sent)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AiohttpTransport(timeouts=FAST) as transport:
        with pytest.raises(ConnectError, match=r"cannot connect to http://127\.0\.0\.1"):
            await transport.send(HttpRequest("GET", f"http://127.0.0.1:{port}/"))


async def test_slow_answer_is_request_timeout(serve: Any) -> None:
    """No answer within the read timeout: RequestTimeout (may have reached the server)."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST) as transport:
        with pytest.raises(RequestTimeout, match="GET /slow timed out"):
            await transport.send(HttpRequest("GET", f"{url}/slow"))
    release.set()


async def test_reset_after_sending_is_connection_lost(serve: Any) -> None:
    """The server closing the connection after reading the request: ConnectionLost."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.05)
        return web.Response()

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST) as transport:
        with pytest.raises(ConnectionLost, match="connection lost"):
            await transport.send(HttpRequest("POST", f"{url}/create", {}, b"{}"))


async def test_truncated_body_is_connection_lost(serve: Any) -> None:
    """A body shorter than its Content-Length: ConnectionLost (cut short)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"code": 0')
        assert request.transport is not None
        request.transport.close()
        return response

    url = await serve(handler)
    async with AiohttpTransport(timeouts=FAST) as transport:
        with pytest.raises(ConnectionLost, match="cut short"):
            await transport.send(HttpRequest("GET", f"{url}/t"))


async def test_waiting_for_a_pooled_connection_times_out_as_connect_error(serve: Any) -> None:
    """Connect timeout (pool exhausted) means the request was never sent: ConnectError."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response()

    url = await serve(handler)
    timeouts = Timeouts(connect=0.1, read=5, total=10)
    async with AiohttpTransport(timeouts=timeouts, max_connections=1) as transport:
        hold = asyncio.ensure_future(transport.send(HttpRequest("GET", f"{url}/hold")))
        await entered.wait()
        with pytest.raises(ConnectError, match="connect timeout"):
            await transport.send(HttpRequest("GET", f"{url}/second"))
        release.set()
        assert (await hold).status == 200


async def test_transport_lifetime() -> None:
    """send() needs an open transport; it opens once; aclose is idempotent."""
    transport = AiohttpTransport()
    with pytest.raises(RuntimeError, match="not open"):
        await transport.send(HttpRequest("GET", "http://127.0.0.1:1/"))
    async with transport:
        with pytest.raises(RuntimeError, match="already open"):
            await transport.__aenter__()
    await transport.aclose()


@pytest.mark.parametrize(
    ("exception", "cls"),
    [
        (aiohttp.ServerDisconnectedError(), ConnectionLost),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ConnectionLost),
        (aiohttp.ServerTimeoutError("read"), RequestTimeout),
        (aiohttp.ConnectionTimeoutError("connect"), ConnectError),
        (TimeoutError(), RequestTimeout),
        (aiohttp.ClientPayloadError("cut"), ConnectionLost),
        (aiohttp.InvalidURL("http://[bad"), ConnectError),
        (aiohttp.ClientResponseError(None, (), status=400, message="bad line"), MalformedResponse),  # type: ignore[arg-type]
    ],
)
async def test_aiohttp_exceptions_are_translated(exception: Exception, cls: type) -> None:
    """Each aiohttp failure becomes the matching TransportError, with no aiohttp cause kept."""
    async with AiohttpTransport(timeouts=FAST) as transport:
        with aioresponses() as mocked:
            mocked.get("https://api.example/x", exception=exception)
            with pytest.raises(cls) as caught:
                await transport.send(HttpRequest("GET", "https://api.example/x"))
    # aiohttp's exceptions carry the request record (live headers): translated, not chained.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_boolean_code_is_not_a_business_code() -> None:
    """A JSON true in 'code' is ignored; the status decides."""
    error = _raise(json_response(400, {"code": True, "message": "x"}))
    assert type(error) is BadRequest
    assert error.code is None


def test_timeouts_are_validated() -> None:
    """Timeouts are positive finite seconds or None; anything else is refused."""
    assert Timeouts(connect=None, read=1, total=2.5).connect is None
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must be > 0 seconds"):
            Timeouts(read=bad)
    for wrong in ("5", True):
        with pytest.raises(TypeError, match="number of seconds"):
            Timeouts(total=wrong)  # type: ignore[arg-type]
