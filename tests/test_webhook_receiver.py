"""The webhook receiver over real HTTP on 127.0.0.1: hints, rejections, bounds, mounting."""

import asyncio
import json
import logging
import pathlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from aiohttp import web

import kling_async._webhooks.receiver as webhook_module
from kling_async import (
    RejectReason,
    WebhookConfig,
    WebhookReceiver,
    WebhookStatistics,
    WebhookVerifier,
)
from kling_async._core.models import TaskStatus
from tests._webhook_helpers import (
    VECTOR_BODY,
    VECTOR_SECRET,
    VECTOR_TIMESTAMP,
    Hints,
    WallClock,
    task_body,
    vector_headers,
    wait_until,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "api-examples"


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> int:
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


def consistent(stats: WebhookStatistics) -> bool:
    return stats.received == (
        stats.accepted + stats.duplicates + stats.stale + stats.rejected_total
    )


async def test_unsigned_delivery_becomes_a_hint(session: aiohttp.ClientSession) -> None:
    """An unsigned task object on a known token answers 200 and calls on_hint once."""
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        assert sub.callback_url == f"{receiver.url}/{sub.token}"
        status = await post(session, sub.callback_url, task_body("t1", "succeed"))
        stats = receiver.statistics()
    assert status == 200
    assert hints.calls == [("t1", TaskStatus.SUCCEEDED)]
    assert (stats.received, stats.accepted, stats.rejected_total) == (1, 1, 0)
    assert consistent(stats)


async def test_documented_callback_fixture(session: aiohttp.ClientSession) -> None:
    """The documented callback-video.json body is accepted as a hint for its task."""
    hints = Hints()
    body = (FIXTURES / "callback-video.json").read_bytes()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        assert await post(session, sub.callback_url, body) == 200
    assert hints.calls == [("string", TaskStatus.SUCCEEDED)]


async def test_signed_fixture_vector_end_to_end(
    session: aiohttp.ClientSession, wall: WallClock
) -> None:
    """The Standard Webhooks vector, POSTed with its headers, hints its task id."""
    hints = Hints()
    config = WebhookConfig(secret=VECTOR_SECRET)
    async with WebhookReceiver(config, now=wall) as receiver:
        sub = receiver.subscribe(hints)
        status = await post(session, sub.callback_url, VECTOR_BODY, vector_headers())
    assert status == 200
    assert hints.calls == [("1234567890", TaskStatus.SUCCEEDED)]


@pytest.mark.parametrize(
    ("headers", "skew", "reason"),
    [
        (vector_headers("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), 0, "bad_signature"),
        ({}, 0, "missing_headers"),
        (vector_headers(), 301, "bad_timestamp"),
        (vector_headers(), -301, "bad_timestamp"),
    ],
)
async def test_bad_signatures_are_401_and_counted(
    session: aiohttp.ClientSession,
    wall: WallClock,
    headers: dict[str, str],
    skew: float,
    reason: str,
) -> None:
    """Forged, unsigned or out-of-window deliveries answer 401, count, and never hint."""
    hints = Hints()
    wall.t += skew
    async with WebhookReceiver(WebhookConfig(secret=VECTOR_SECRET), now=wall) as receiver:
        sub = receiver.subscribe(hints)
        status = await post(session, sub.callback_url, VECTOR_BODY, headers)
        stats = receiver.statistics()
    assert status == 401
    assert hints.calls == []
    assert stats.rejected == {RejectReason(reason): 1}
    assert consistent(stats)


async def test_unknown_and_closed_tokens_are_404(session: aiohttp.ClientSession) -> None:
    """A token never issued, or one whose subscription closed, answers 404."""
    hints = Hints()
    body = task_body("t1", "succeed")
    async with WebhookReceiver() as receiver:
        with receiver.subscribe(hints) as sub:
            assert receiver.statistics().subscriptions == 1
            assert await post(session, f"{receiver.url}/not-a-token", body) == 404
        assert sub.closed
        sub.close()  # idempotent
        assert await post(session, sub.callback_url, body) == 404
        stats = receiver.statistics()
    assert hints.calls == []
    assert stats.rejected == {RejectReason.UNKNOWN_TOKEN: 2}
    assert stats.subscriptions == 0


async def test_oversize_bodies_are_413(session: aiohttp.ClientSession) -> None:
    """A body past max_body answers 413, by Content-Length or by chunks; the cap itself fits."""
    hints = Hints()
    exact = task_body("t1", "succeed")
    config = WebhookConfig(max_body=len(exact))
    too_big = task_body("t2", "succeed", pad="x" * 10)

    async def chunks() -> AsyncIterator[bytes]:
        yield too_big[:20]
        yield too_big[20:]

    async with WebhookReceiver(config) as receiver:
        sub = receiver.subscribe(hints)
        assert await post(session, sub.callback_url, exact) == 200
        assert await post(session, sub.callback_url, too_big) == 413
        async with session.post(sub.callback_url, data=chunks()) as resp:
            assert resp.status == 413
        stats = receiver.statistics()
    assert hints.calls == [("t1", TaskStatus.SUCCEEDED)]
    assert stats.rejected == {RejectReason.TOO_LARGE: 2}
    assert consistent(stats)


@pytest.mark.parametrize(
    "body", [b"not json", b"\xff\xfe\x00", b"[1, 2]", b'{"hello": "world"}', b'{"task_id": 7}']
)
async def test_malformed_bodies_are_400(session: aiohttp.ClientSession, body: bytes) -> None:
    """Bodies that are not JSON task objects answer 400 and are counted MALFORMED."""
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        assert await post(session, sub.callback_url, body) == 400
        stats = receiver.statistics()
    assert hints.calls == []
    assert stats.rejected == {RejectReason.MALFORMED: 1}


async def test_signed_malformed_body_is_400(
    session: aiohttp.ClientSession, wall: WallClock
) -> None:
    """A correctly signed body that is no task object still answers 400."""
    verifier = WebhookVerifier(VECTOR_SECRET, now=wall)
    async with WebhookReceiver(WebhookConfig(secret=VECTOR_SECRET), now=wall) as receiver:
        sub = receiver.subscribe(Hints())
        body = b'{"nothing": 1}'
        assert await post(session, sub.callback_url, body, verifier.headers("m1", body)) == 400
        assert receiver.statistics().rejected == {RejectReason.MALFORMED: 1}


async def test_forged_flood_is_rate_bounded(
    session: aiohttp.ClientSession, wall: WallClock
) -> None:
    """Past the token bucket, posts answer 429 without work; the counts add up."""
    hints = Hints()
    config = WebhookConfig(max_rate=5, rate_period=60, secret=VECTOR_SECRET)
    statuses: list[int] = []
    async with WebhookReceiver(config, now=wall) as receiver:
        sub = receiver.subscribe(hints)

        async def forge(i: int) -> None:
            headers = vector_headers("v1,Zm9yZ2Vk") | {"webhook-id": f"f{i}"}
            statuses.append(await post(session, sub.callback_url, VECTOR_BODY, headers))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(forge, i)
        stats = receiver.statistics()
    assert sorted(statuses) == [401] * 5 + [429] * 35
    assert stats.rejected == {RejectReason.BAD_SIGNATURE: 5, RejectReason.RATE_LIMITED: 35}
    assert stats.received == 40
    assert hints.calls == []
    assert consistent(stats)


async def test_rate_bound_applies_to_unknown_tokens(session: aiohttp.ClientSession) -> None:
    """Token guessing is rate bounded too, in the strangers' bucket of its own."""
    config = WebhookConfig(max_rate=2, rate_period=60)
    async with WebhookReceiver(config) as receiver:
        statuses = [await post(session, f"{receiver.url}/guess{i}", b"{}") for i in range(4)]
    assert statuses == [404, 404, 429, 429]


async def test_random_token_flood_does_not_starve_genuine_deliveries(
    session: aiohttp.ClientSession,
) -> None:
    """Issue 12: 100 posts to random tokens first, then 20 genuine deliveries: all 20 land."""
    hints = Hints()
    config = WebhookConfig(max_rate=20, rate_period=60)
    async with WebhookReceiver(config) as receiver:
        sub = receiver.subscribe(hints)
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(post, session, f"{receiver.url}/random{i}", b"{}")
        genuine = [
            await post(session, sub.callback_url, task_body(f"t{i}", "succeed")) for i in range(20)
        ]
        stats = receiver.statistics()
    assert genuine == [200] * 20
    assert len(hints.calls) == 20
    assert stats.rejected == {RejectReason.UNKNOWN_TOKEN: 20, RejectReason.RATE_LIMITED: 80}
    assert consistent(stats)


async def test_rate_limit_is_per_token(session: aiohttp.ClientSession) -> None:
    """A flood on one batch's token (429 past its bucket) leaves another token's rate whole."""
    hints = Hints()
    config = WebhookConfig(max_rate=3, rate_period=60)
    async with WebhookReceiver(config) as receiver:
        flooded = receiver.subscribe(Hints())
        quiet = receiver.subscribe(hints)
        flood = [await post(session, flooded.callback_url, b"junk") for _ in range(10)]
        delivered = [
            await post(session, quiet.callback_url, task_body(f"q{i}", "succeed")) for i in range(3)
        ]
    assert flood == [400] * 3 + [429] * 7
    assert delivered == [200] * 3
    assert [task_id for task_id, _ in hints.calls] == ["q0", "q1", "q2"]


async def test_duplicates_change_nothing(session: aiohttp.ClientSession) -> None:
    """The same body re-sent hints once; the rest count as duplicates."""
    hints = Hints()
    body = task_body("t1", "processing")
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        for _ in range(3):
            assert await post(session, sub.callback_url, body) == 200
        # Another body with a status already hinted for the task is a duplicate too.
        assert await post(session, sub.callback_url, task_body("t1", "processing", x=1)) == 200
        stats = receiver.statistics()
    assert hints.calls == [("t1", TaskStatus.PROCESSING)]
    assert (stats.accepted, stats.duplicates) == (1, 3)
    assert consistent(stats)


async def test_signed_retry_with_same_id_is_duplicate(
    session: aiohttp.ClientSession, wall: WallClock
) -> None:
    """A signed retry (same webhook-id, new timestamp and signature) is a duplicate."""
    hints = Hints()
    verifier = WebhookVerifier(VECTOR_SECRET, now=wall)
    body = task_body("t1", "submitted")
    async with WebhookReceiver(WebhookConfig(secret=VECTOR_SECRET), now=wall) as receiver:
        sub = receiver.subscribe(hints)
        assert await post(session, sub.callback_url, body, verifier.headers("msg_1", body)) == 200
        wall.t += 30
        assert await post(session, sub.callback_url, body, verifier.headers("msg_1", body)) == 200
        # Different id, different status: a new delivery.
        other = task_body("t1", "processing")
        assert await post(session, sub.callback_url, other, verifier.headers("msg_2", other)) == 200
        stats = receiver.statistics()
    assert hints.calls == [("t1", TaskStatus.SUBMITTED), ("t1", TaskStatus.PROCESSING)]
    assert stats.duplicates == 1


async def test_reordered_deliveries_change_nothing(session: aiohttp.ClientSession) -> None:
    """Statuses older than one already hinted count as stale and do not hint."""
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        for status in ("succeed", "processing", "submitted"):
            assert await post(session, sub.callback_url, task_body("late", status)) == 200
        for status in ("submitted", "processing", "succeed"):
            assert await post(session, sub.callback_url, task_body("inorder", status)) == 200
        stats = receiver.statistics()
    assert hints.calls == [
        ("late", TaskStatus.SUCCEEDED),
        ("inorder", TaskStatus.SUBMITTED),
        ("inorder", TaskStatus.PROCESSING),
        ("inorder", TaskStatus.SUCCEEDED),
    ]
    assert (stats.accepted, stats.stale, stats.duplicates) == (4, 2, 0)
    assert consistent(stats)


async def test_conflicting_terminal_statuses_both_hint(session: aiohttp.ClientSession) -> None:
    """succeed then failed for one task both hint: the scheduler's re-query decides."""
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        await post(session, sub.callback_url, task_body("t", "succeed"))
        await post(session, sub.callback_url, task_body("t", "failed"))
    assert [s for _, s in hints.calls] == [TaskStatus.SUCCEEDED, TaskStatus.FAILED]


async def test_unknown_status_still_hints(session: aiohttp.ClientSession) -> None:
    """An unknown status spelling hints with None for each new body, once per body."""
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        first = task_body("t", "RENDERING")
        await post(session, sub.callback_url, first)
        await post(session, sub.callback_url, first)
        await post(session, sub.callback_url, task_body("t", "RENDERING", progress=50))
        stats = receiver.statistics()
    assert hints.calls == [("t", None), ("t", None)]
    assert stats.duplicates == 1


async def test_subscriptions_are_isolated(session: aiohttp.ClientSession) -> None:
    """Each token reaches only its own callback, with its own dedupe memory."""
    a, b = Hints(), Hints()
    body = task_body("t", "succeed")
    async with WebhookReceiver() as receiver:
        sub_a, sub_b = receiver.subscribe(a), receiver.subscribe(b)
        assert sub_a.token != sub_b.token
        assert len(sub_a.token) >= 32
        await post(session, sub_a.callback_url, body)
        await post(session, sub_b.callback_url, body)
    assert a.calls == b.calls == [("t", TaskStatus.SUCCEEDED)]


async def test_failing_hint_callback_is_contained(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """An on_hint that raises is logged and counted; the sender still gets 200."""

    def broken(task_id: str, status: TaskStatus | None) -> None:
        raise RuntimeError("subscriber bug")

    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(broken)
        with caplog.at_level(logging.WARNING, logger="kling_async.webhook"):
            assert await post(session, sub.callback_url, task_body("t9", "succeed")) == 200
        stats = receiver.statistics()
    assert stats.hint_errors == 1
    assert stats.accepted == 1
    assert any("t9" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_quiet_by_default(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Rejections and hints log nothing above DEBUG; serving logs one INFO line."""
    with caplog.at_level(logging.DEBUG, logger="kling_async.webhook"):
        async with WebhookReceiver(WebhookConfig(max_rate=3, rate_period=60)) as receiver:
            sub = receiver.subscribe(Hints())
            await post(session, sub.callback_url, task_body("t", "succeed"))
            await post(session, sub.callback_url, b"junk")
            for _ in range(3):
                await post(session, f"{receiver.url}/nope", b"{}")
    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r.getMessage() for r in loud] == [f"webhook receiver listening on {receiver.url}"]
    assert len(caplog.records) == 6


async def test_other_methods_are_405_and_not_counted(session: aiohttp.ClientSession) -> None:
    """Only POST is routed; a GET answers 405 and is not a delivery."""
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(Hints())
        async with session.get(sub.callback_url) as resp:
            assert resp.status == 405
        assert receiver.statistics().received == 0


async def test_mount_with_add_routes(session: aiohttp.ClientSession) -> None:
    """add_routes() mounts POST <path>/{token} beside a user's own routes."""
    hints = Hints()
    receiver = WebhookReceiver(WebhookConfig(public_url="https://me.example/hooks/"))
    with pytest.raises(RuntimeError, match="not serving"):
        _ = receiver.url
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    receiver.add_routes(app)
    sub = receiver.subscribe(hints)
    assert sub.callback_url == f"https://me.example/hooks/{sub.token}"
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with session.get(f"{base}/health") as resp:
            assert await resp.text() == "ok"
        url = f"{base}/hooks/{sub.token}"
        assert await post(session, url, task_body("m1", "processing")) == 200
    finally:
        await runner.cleanup()
        await receiver.aclose()
    assert hints.calls == [("m1", TaskStatus.PROCESSING)]
    assert sub.closed


async def test_mount_as_subapp(session: aiohttp.ClientSession) -> None:
    """make_app() gives a sub-application for app.add_subapp(prefix, ...)."""
    hints = Hints()
    receiver = WebhookReceiver(WebhookConfig(public_url="https://me.example/kling"))
    app = web.Application()
    app.add_subapp("/kling/", receiver.make_app())
    sub = receiver.subscribe(hints)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/kling/{sub.token}"
        assert await post(session, url, task_body("s1", "failed")) == 200
        assert await post(session, f"http://127.0.0.1:{port}/kling/zzz", b"{}") == 404
    finally:
        await runner.cleanup()
        await receiver.aclose()
    assert hints.calls == [("s1", TaskStatus.FAILED)]


async def test_add_routes_explicit_path(session: aiohttp.ClientSession) -> None:
    """add_routes(app, path) overrides the configured prefix."""
    receiver = WebhookReceiver()
    app = web.Application()
    receiver.add_routes(app, "/cb/")
    assert [r.resource.canonical for r in app.router.routes()] == ["/cb/{token}"]  # type: ignore[union-attr]
    await receiver.aclose()


async def test_public_url_and_path_when_serving(session: aiohttp.ClientSession) -> None:
    """Served with public_url, callbacks use it, the route keeps its path, reprs hide tokens."""
    hints = Hints()
    config = WebhookConfig(public_url="https://tunnel.example/k/")
    async with WebhookReceiver(config) as receiver:
        assert receiver.url.endswith("/k")
        assert receiver.url.startswith("http://127.0.0.1:")
        sub = receiver.subscribe(hints)
        assert sub.callback_url == f"https://tunnel.example/k/{sub.token}"
        assert await post(session, f"{receiver.url}/{sub.token}", task_body("p", "succeed")) == 200
        assert sub.token not in repr(sub)
        assert "tunnel.example" in repr(sub)
        assert "signed=False" in repr(receiver)
    assert hints.calls == [("p", TaskStatus.SUCCEEDED)]


async def test_lifetime_rules() -> None:
    """aclose is idempotent; a closed receiver refuses subscriptions and re-entry."""
    receiver = WebhookReceiver()
    assert "unbound" in repr(receiver)
    async with receiver:
        assert receiver.config.host == "127.0.0.1"
        with pytest.raises(RuntimeError, match="once"):
            await receiver.__aenter__()
    await receiver.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        receiver.subscribe(Hints())
    with pytest.raises(RuntimeError, match="once"):
        await receiver.__aenter__()


async def test_bind_failure_reaches_caller() -> None:
    """A port already in use raises from __aenter__ and leaves nothing open."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        receiver = WebhookReceiver(WebhookConfig(port=port))
        with pytest.raises(OSError):
            await receiver.__aenter__()
    with pytest.raises(RuntimeError):
        receiver.subscribe(Hints())


async def test_unsubscribed_while_reading_is_404(session: aiohttp.ClientSession) -> None:
    """A subscription closed while its delivery's body streams in gets no hint (404)."""
    hints = Hints()
    proceed = anyio.Event()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        body = task_body("t", "succeed")

        async def slow_body() -> AsyncIterator[bytes]:
            yield body[:10]
            await proceed.wait()
            yield body[10:]

        async def close_mid_body() -> None:
            await wait_until(lambda: receiver.statistics().received == 1)
            sub.close()
            proceed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_mid_body)
            async with session.post(sub.callback_url, data=slow_body()) as resp:
                assert resp.status == 404
        stats = receiver.statistics()
    assert hints.calls == []
    assert stats.rejected == {RejectReason.UNKNOWN_TOKEN: 1}


async def test_sender_disconnect_mid_body_is_counted() -> None:
    """A sender that hangs up mid-body is counted MALFORMED and breaks nothing."""
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(Hints())
        host, port = receiver.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /{sub.token} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n".encode()
            + b'{"task_id": '
        )
        await writer.drain()
        await wait_until(lambda: receiver.statistics().received == 1)
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: receiver.statistics().rejected_total == 1)
        assert receiver.statistics().rejected == {RejectReason.MALFORMED: 1}
        del reader


async def test_statistics_are_frozen_snapshots(session: aiohttp.ClientSession) -> None:
    """statistics() returns an immutable snapshot that later traffic does not change."""
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(Hints())
        before = receiver.statistics()
        await post(session, sub.callback_url, b"bad")
        after = receiver.statistics()
    assert before.received == 0
    assert after.rejected == {RejectReason.MALFORMED: 1}
    with pytest.raises(TypeError):
        after.rejected[RejectReason.MALFORMED] = 5  # type: ignore[index]
    with pytest.raises(AttributeError):
        after.received = 9  # type: ignore[misc]
    assert json.dumps({r.value: n for r, n in after.rejected.items()}) == '{"malformed": 1}'


async def test_no_secret_accepts_signed_deliveries(
    session: aiohttp.ClientSession, wall: WallClock
) -> None:
    """Without a secret, signature headers are ignored and the body's digest dedupes."""
    hints = Hints()
    async with WebhookReceiver(now=wall) as receiver:
        sub = receiver.subscribe(hints)
        headers = vector_headers("v1,whatever")
        assert await post(session, sub.callback_url, VECTOR_BODY, headers) == 200
        # Same webhook-id, different body: not a duplicate when ids prove nothing.
        other = task_body("other", "succeed")
        assert await post(session, sub.callback_url, other, headers) == 200
    assert hints.calls == [("1234567890", TaskStatus.SUCCEEDED), ("other", TaskStatus.SUCCEEDED)]
    assert int(wall()) == VECTOR_TIMESTAMP


async def test_dedupe_memory_is_bounded(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its bounds the dedupe memory forgets the oldest entries: one extra hint, no more."""
    monkeypatch.setattr(webhook_module, "_SEEN_TASKS", 2)
    monkeypatch.setattr(webhook_module, "_SEEN_DELIVERIES", 2)
    hints = Hints()
    async with WebhookReceiver() as receiver:
        sub = receiver.subscribe(hints)
        for task_id in ("a", "b", "a", "c", "d", "a"):
            await post(session, sub.callback_url, task_body(task_id, "succeed"))
        stats = receiver.statistics()
    # "a" was forgotten after "c" and "d" arrived, so its last copy hints again.
    assert [t for t, _ in hints.calls] == ["a", "b", "c", "d", "a"]
    assert stats.duplicates == 1
