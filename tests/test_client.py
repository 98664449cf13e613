"""The Client: one call per method, typed results and errors, lifetimes, logging, secrets."""

import json
import logging
import pathlib
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
from aiohttp import web
from aioresponses import aioresponses

from kling_async import (
    AuthenticationError,
    Client,
    CometAPI,
    ConnectError,
    ConnectionLost,
    GeneratedImage,
    HttpRequest,
    HttpResponse,
    Image,
    InvalidRequest,
    Kind,
    Kling,
    KlingError,
    MalformedResponse,
    MockTransport,
    MultiImageToImage,
    MultiImageToVideo,
    NotFound,
    RequestTimeout,
    Timeouts,
)
from kling_async import _client as client_module
from kling_async._api.profiles import COMETAPI_BASE_URL
from kling_async._core.config import DEFAULT_TIMEOUTS
from kling_async._core.models import TaskStatus
from tests._core_helpers import CANARY_KEY, json_response, ok, png_bytes, task_body

JWT_SECRET = "kling-test-secret-key-0123456789abcdef"  # PyJWT warns under 32 bytes

URL = Image.from_url("https://example.invalid/a.png")
VIDEO = MultiImageToVideo(images=[URL, URL], prompt="walk")
IMAGE = MultiImageToImage(images=[URL, URL], scene_image=URL, n=2)
BASE = COMETAPI_BASE_URL  # the default profile; every request goes to a MockTransport


def _client(handler: Any, **kwargs: Any) -> tuple[Client, MockTransport]:
    transport = MockTransport(handler)
    return Client(CANARY_KEY, transport=transport, **kwargs), transport


# --- construction ---


def test_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key anywhere the client refuses to start, naming the variable."""
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    monkeypatch.delenv("KLING_API_KEY", raising=False)
    monkeypatch.delenv("KLING_ACCESS_KEY", raising=False)
    with pytest.raises(ValueError, match="COMETAPI_KEY"):
        Client()
    with pytest.raises(ValueError, match="KLING_API_KEY"):
        Client(profile=Kling())
    monkeypatch.setenv("COMETAPI_KEY", "from-env")
    assert Client().profile.authorization() == "Bearer from-env"


def test_profile_and_base_url_options() -> None:
    """api_key and base_url override the profile; http is refused off loopback."""
    client = Client("k2", profile=Kling("k1"), base_url="http://127.0.0.1:9")
    assert isinstance(client.profile, Kling)
    assert client.profile.authorization() == "Bearer k2"
    assert client.profile.base_url == "http://127.0.0.1:9"
    assert client.timeouts is DEFAULT_TIMEOUTS
    with pytest.raises(ValueError, match="plain http"):
        Client("k", base_url="http://api.example.com")


async def test_lifetime_rules() -> None:
    """Calls need an open client; a client opens once; aclose is idempotent."""
    client = Client("k")
    with pytest.raises(RuntimeError, match="not open"):
        await client.tasks.get("1", kind=Kind.VIDEO)
    async with client:
        assert "state=open" in repr(client)
        with pytest.raises(RuntimeError, match="opened once"):
            await client.__aenter__()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.tasks.get("1", kind=Kind.VIDEO)


async def test_injected_transport_needs_no_context() -> None:
    """With a custom transport the client works without async with, and leaves it open."""
    client, transport = _client(lambda r: json_response(200, ok(task_body())))
    assert (await client.tasks.get("1", kind=Kind.VIDEO)).task_id == "861309198188019719"
    async with client:
        await client.tasks.get("1", kind=Kind.VIDEO)
    assert len(transport.requests) == 2


# --- one call per method ---


async def test_create_video_task_sends_one_post() -> None:
    """tasks.create(video) POSTs the wire body with auth and JSON headers, returns the Task."""
    client, transport = _client(lambda r: json_response(200, ok(task_body())))
    task = await client.tasks.create(
        VIDEO, external_task_id="job-1", callback_url="https://cb.example/h"
    )
    assert task.status is TaskStatus.SUBMITTED
    (request,) = transport.requests
    assert request.method == "POST"
    assert request.url == f"{BASE}/kling/v1/videos/multi-image2video"
    assert request.headers["Authorization"] == f"Bearer {CANARY_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body is not None
    body = json.loads(request.body)
    assert body["external_task_id"] == "job-1"
    assert body["callback_url"] == "https://cb.example/h"
    assert body["prompt"] == "walk"
    assert body["image_list"] == [{"image": "https://example.invalid/a.png"}] * 2


async def test_create_image_task_uses_the_profile_spelling() -> None:
    """The image create goes to the profile's route with its scene field spelling."""
    client, transport = _client(lambda r: json_response(200, ok(task_body())))
    await client.tasks.create(IMAGE)
    kling, kling_transport = _client(
        lambda r: json_response(200, ok(task_body())), profile=Kling("k")
    )
    await kling.tasks.create(IMAGE)
    comet_body = json.loads(transport.requests[0].body or b"")
    kling_body = json.loads(kling_transport.requests[0].body or b"")
    assert transport.requests[0].url == f"{BASE}/kling/v1/images/generations"
    assert kling_transport.requests[0].url.endswith("/v1/images/multi-image2image")
    assert "scence_image" in comet_body
    assert "scene_image" in kling_body


async def test_local_files_are_read_at_send_time(tmp_path: pathlib.Path) -> None:
    """A path image is validated and Base64-encoded only when the create is sent."""
    client, transport = _client(lambda r: json_response(200, ok(task_body())))
    path = tmp_path / "a.png"
    request = MultiImageToVideo(images=[Image.from_path(path), URL])
    await anyio.Path(path).write_bytes(png_bytes(400, 400))
    await client.tasks.create(request)
    body = json.loads(transport.requests[0].body or b"")
    assert body["image_list"][0]["image"].startswith("iVBORw0KGgo")


@pytest.mark.parametrize(("padding", "in_thread"), [(0, False), (300 * 1024, True)])
async def test_only_large_bodies_are_dumped_in_a_thread(
    monkeypatch: pytest.MonkeyPatch, padding: int, in_thread: bool
) -> None:
    """Small inline images are dumped to JSON on the loop; a large body goes to a thread."""
    dumped_in_thread: list[bool] = []
    run_sync = anyio.to_thread.run_sync

    async def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        dumped_in_thread.append(func is client_module._dump)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    client, transport = _client(
        lambda r: json_response(200, ok(task_body())), profile=Kling(CANARY_KEY)
    )
    mask = Image.from_bytes(png_bytes(400, 400) + b"\0" * padding)
    await client.tasks.create(MultiImageToVideo(images=[URL, URL], static_mask=mask))
    assert any(dumped_in_thread) is in_thread
    body = json.loads(transport.requests[0].body or b"")
    assert body["static_mask"].startswith("iVBORw0KGgo")


async def test_invalid_request_sends_nothing() -> None:
    """A request breaking a rule raises InvalidRequest before any HTTP call."""
    client, transport = _client(lambda r: json_response(200, ok(task_body())))
    bad = MultiImageToVideo(images=[Image.from_bytes(png_bytes(280, 900)), URL])
    with pytest.raises(InvalidRequest, match=r"image_list\[0\]: 280x900 is below 300 px"):
        await client.tasks.create(bad)
    assert transport.requests == []


async def test_wrong_request_types() -> None:
    """Passing the wrong model is a TypeError."""
    client, _ = _client(lambda r: json_response(200, ok(task_body())))
    with pytest.raises(TypeError):
        await client.tasks.create("x")  # type: ignore[arg-type]


async def test_tasks_get_remembers_the_kind_of_created_tasks() -> None:
    """tasks.get(id) needs no kind for a task this client created (by id or external id)."""
    created = task_body("55")

    def answer(request: HttpRequest) -> HttpResponse:
        return json_response(200, ok(created))

    client, transport = _client(answer)
    assert "Tasks of Client" in repr(client.tasks)
    await client.tasks.create(IMAGE, external_task_id="mine-1")
    await client.tasks.get("55")
    await client.tasks.get("mine-1")
    assert [r.url for r in transport.requests[1:]] == [
        f"{BASE}/kling/v1/images/generations/55",
        f"{BASE}/kling/v1/images/generations/mine-1",
    ]
    with pytest.raises(ValueError, match="did not create task 'other'"):
        await client.tasks.get("other")
    await client.tasks.get("other", kind=Kind.VIDEO)
    assert transport.requests[-1].url == f"{BASE}/kling/v1/videos/multi-image2video/other"


def test_remembered_kinds_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kind memory forgets its oldest ids past MAX_REMEMBERED."""
    monkeypatch.setattr(client_module, "MAX_REMEMBERED", 2)
    tasks = Client(CANARY_KEY).tasks
    for task_id in ("a", "b", "c"):
        tasks._remember(task_id, Kind.VIDEO)
    assert list(tasks._kinds) == ["b", "c"]


async def test_get_task_by_id_or_external_id() -> None:
    """get_task GETs one task; the id is URL-quoted; results are typed."""
    body = {
        **task_body("9", "succeed"),
        "task_result": {"images": [{"index": 0, "url": "https://r/0.png"}]},
    }
    client, transport = _client(lambda r: json_response(200, ok(body)))
    task = await client.tasks.get("batch-1/job 2", kind=Kind.IMAGE)
    assert task.images == (GeneratedImage(0, "https://r/0.png"),)
    assert transport.requests[0].method == "GET"
    assert transport.requests[0].url == f"{BASE}/kling/v1/images/generations/batch-1%2Fjob%202"
    assert transport.requests[0].body is None
    with pytest.raises(ValueError, match="empty"):
        await client.tasks.get("", kind=Kind.IMAGE)


async def test_get_task_errors_carry_the_task_id() -> None:
    """A 404 or a malformed task body names the task asked for."""
    client, _ = _client(lambda r: json_response(404, {"code": 1203, "message": "not found"}))
    with pytest.raises(NotFound) as caught:
        await client.tasks.get("ext-7", kind=Kind.VIDEO)
    assert caught.value.task_id == "ext-7"
    broken, _ = _client(lambda r: json_response(200, ok({"task_id": "1"})))
    with pytest.raises(MalformedResponse) as bad:
        await broken.tasks.get("ext-8", kind=Kind.VIDEO)
    assert bad.value.task_id == "ext-8"
    assert bad.value.path == "$.data.task_status"


async def test_transport_errors_keep_their_own_task_id() -> None:
    """An error that already names a task keeps it; others get the task asked for."""

    def handler(request: HttpRequest) -> HttpResponse:
        raise ConnectError("down", task_id="from-transport")

    client, _ = _client(handler)
    with pytest.raises(ConnectError) as caught:
        await client.tasks.get("asked", kind=Kind.VIDEO)
    assert caught.value.task_id == "from-transport"


async def test_list_tasks() -> None:
    """list_tasks GETs one page and returns typed tasks; bounds are checked."""
    client, transport = _client(lambda r: json_response(200, ok([task_body("1"), task_body("2")])))
    tasks = await client.tasks.list(Kind.VIDEO, page=3, page_size=500)
    assert [task.task_id for task in tasks] == ["1", "2"]
    assert transport.requests[0].url.endswith("multi-image2video?pageNum=3&pageSize=500")
    for page, size in ((0, 10), (1001, 10), (1, 0), (1, 501)):
        with pytest.raises(ValueError, match="must be"):
            await client.tasks.list(Kind.VIDEO, page, size)


async def test_jwt_is_reminted_after_1004(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1003/1004 answer drops the cached JWT so the next call mints a fresh one."""
    dropped: list[str] = []
    monkeypatch.setattr(Kling, "invalidate_token", lambda self: dropped.append("x"))
    answers = [
        json_response(401, {"code": 1004, "message": "token expired"}),
        json_response(401, {"code": 1001, "message": "bad key"}),
    ]
    transport = MockTransport(lambda r: answers.pop(0))
    client = Client(profile=Kling(access_key="ak", secret_key=JWT_SECRET), transport=transport)
    with pytest.raises(AuthenticationError):
        await client.tasks.get("1", kind=Kind.VIDEO)
    assert dropped == ["x"]
    with pytest.raises(AuthenticationError):
        await client.tasks.get("1", kind=Kind.VIDEO)
    assert dropped == ["x"]
    assert transport.requests[0].headers["Authorization"].startswith("Bearer ey")


# --- the real transport ---


async def test_against_a_local_server() -> None:
    """A loopback http base URL works end to end with the real transport."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}")
        if request.method == "POST":
            return web.json_response(
                {"error": {"message": "busy (request id: q-1)", "type": "x"}},
                status=429,
                headers={"Retry-After": "2"},
            )
        return web.json_response(ok(task_body("77", "processing")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with Client("k", base_url=url, timeouts=Timeouts(total=5)) as client:
            task = await client.tasks.get("77", kind=Kind.VIDEO)
            with pytest.raises(KlingError) as caught:
                await client.tasks.create(VIDEO)
    finally:
        await runner.cleanup()
    assert task.status is TaskStatus.PROCESSING
    assert seen == [
        "GET /kling/v1/videos/multi-image2video/77",
        "POST /kling/v1/videos/multi-image2video",
    ]
    assert (caught.value.retry_after, caught.value.request_id) == (2.0, "q-1")


# --- logging and secrets ---


async def test_logging_is_structured(caplog: pytest.LogCaptureFixture) -> None:
    """Each call logs one record with endpoint, kind, task id and request id fields."""
    client, _ = _client(
        lambda r: json_response(429, {"code": 1303, "message": "busy", "request_id": "r-9"})
    )
    with caplog.at_level(logging.DEBUG, logger="kling_async"), pytest.raises(KlingError):
        await client.tasks.get("t-1", kind=Kind.VIDEO)
    (record,) = caplog.records
    assert record.name == "kling_async"
    assert (record.endpoint, record.kind, record.task_id) == ("query", "video", "t-1")  # type: ignore[attr-defined]
    assert (record.request_id, record.code, record.scope) == ("r-9", 1303, "transient")  # type: ignore[attr-defined]
    caplog.clear()
    ok_client, _ = _client(lambda r: json_response(200, ok(task_body()), {"x-request-id": "z"}))
    with caplog.at_level(logging.DEBUG, logger="kling_async"):
        await ok_client.tasks.get("t-2", kind=Kind.VIDEO)
    (record,) = caplog.records
    assert (record.http_status, record.request_id) == (200, "z")  # type: ignore[attr-defined]


def test_library_logger_is_quiet_by_default() -> None:
    """The kling_async logger carries a NullHandler."""
    handlers = logging.getLogger("kling_async").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


def _error_answers() -> list[HttpResponse | Exception]:
    answers: list[HttpResponse | Exception] = []
    codes = [1000, 1001, 1002, 1003, 1004, 1100, 1101, 1102, 1103, 1200, 1201, 1202, 1203]
    codes += [1300, 1301, 1302, 1303, 1304, 5000, 5001, 5002, 4242]
    for code in codes:
        answers.append(
            json_response(
                400, {"code": code, "message": f"bad key {CANARY_KEY}", "request_id": "r"}
            )
        )
        answers.append(
            json_response(
                429,
                {"error": {"message": f"{CANARY_KEY} (request id: x)", "code": str(code)}},
            )
        )
    for status in (400, 401, 403, 404, 429, 500, 502, 503, 504, 524):
        answers.append(json_response(status, {"error": {"message": f"no {CANARY_KEY}"}}))
        answers.append(HttpResponse(status, {"content-type": "text/html"}, b"<html>"))
    answers += [
        json_response(400, {"code": 1201, "message": "external_task_id already exists"}),
        json_response(500, {"error": {"message": "x", "code": "invalid_request"}}),
        HttpResponse(302, {"location": "https://login.example/"}, b""),
        HttpResponse(200, {}, b"{not json"),
        json_response(200, {"code": 0, "data": {"task_id": "1", "task_status": "??"}}),
        ConnectError("cannot connect"),
        RequestTimeout("timed out"),
        ConnectionLost("lost"),
    ]
    return answers


def _assert_clean(thing: object) -> None:
    text = f"{thing!s} {thing!r}"
    assert CANARY_KEY not in text
    assert CANARY_KEY[3:20] not in text


@pytest.mark.parametrize(
    "profile",
    [CometAPI(CANARY_KEY), Kling(CANARY_KEY), Kling(access_key="ak", secret_key=CANARY_KEY)],
    ids=["cometapi", "kling-key", "kling-jwt"],
)
async def test_canary_key_never_leaks(
    profile: Any, caplog: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    """The key (or JWT secret) is in no repr, log record or exception, on every error path."""
    answers = _error_answers()

    def handler(request: HttpRequest) -> HttpResponse:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    transport = MockTransport(handler)
    client = Client(profile=profile, transport=transport)
    _assert_clean(client)
    _assert_clean(client.profile)
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG, logger="kling_async"):
        while answers:
            with pytest.raises(KlingError) as caught:
                await client.tasks.get("t", kind=Kind.VIDEO)
            errors.append(caught.value)
        with pytest.raises(InvalidRequest) as invalid:
            await client.tasks.create(
                MultiImageToVideo(images=[Image.from_path(tmp_path / "none.png"), URL])
            )
        errors.append(invalid.value)
    assert len(errors) > 70
    for error in errors:
        _assert_clean(error)
        _assert_clean(vars(error))
        cause = error.__cause__
        while cause is not None:
            _assert_clean(cause)
            cause = cause.__cause__
    for request in transport.requests:
        _assert_clean(request)
    assert caplog.records
    for record in caplog.records:
        _assert_clean(record.getMessage())
        _assert_clean(vars(record))


async def test_aiohttp_failures_do_not_leak_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """Exceptions raised inside aiohttp carry no header values into our errors."""
    async with Client(CANARY_KEY) as client:
        for exception in (
            aiohttp.ServerDisconnectedError(),
            aiohttp.ClientOSError(104, "reset"),
            TimeoutError(),
        ):
            with aioresponses() as mocked, caplog.at_level(logging.DEBUG, "kling_async"):
                mocked.get(f"{BASE}/kling/v1/videos/multi-image2video/1", exception=exception)
                with pytest.raises(KlingError) as caught:
                    await client.tasks.get("1", kind=Kind.VIDEO)
            _assert_clean(caught.value)
            _assert_clean(caught.value.__cause__)
    for record in caplog.records:
        _assert_clean(vars(record))


async def test_echoed_token_is_scrubbed() -> None:
    """A server echoing the Authorization header (key or JWT) does not leak it."""

    def handler(request: HttpRequest) -> HttpResponse:
        echoed = request.headers["Authorization"]
        return json_response(401, {"code": 1001, "message": f"bad auth: {echoed}"})

    for profile in (CometAPI(CANARY_KEY), Kling(access_key="ak", secret_key=JWT_SECRET)):
        client = Client(profile=profile, transport=MockTransport(handler))
        with pytest.raises(AuthenticationError) as caught:
            await client.tasks.get("1", kind=Kind.VIDEO)
        token = client.profile.authorization().removeprefix("Bearer ")
        assert token not in str(caught.value)
        assert caught.value.message == "bad auth: Bearer ***"
