"""The simulator's callbacks: each status change, retries, duplicates, order, signatures."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
from aiohttp import web

from kling_async.simulator import CallbackConfig, Fixed, sign_webhook
from tests._simulator_helpers import IMAGE, VIDEO, running

SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
FIXED = {"video": Fixed(seconds=60), "image": Fixed(seconds=20)}


@attrs.define
class Receiver:
    """A tiny webhook receiver on 127.0.0.1 that records deliveries."""

    url: str = ""
    fail_first: int = 0
    seen: int = 0
    deliveries: asyncio.Queue[tuple[dict[str, str], bytes]] = attrs.field(factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        """Record one delivery; answer 500 to the first ``fail_first`` of them."""
        self.seen += 1
        if self.seen <= self.fail_first:
            return web.Response(status=500)
        await self.deliveries.put((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def next(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The next delivery (bounded wait)."""
        headers, body = await asyncio.wait_for(self.deliveries.get(), 5)
        return headers, json.loads(body)


@contextlib.asynccontextmanager
async def receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    """A running receiver."""
    hook = Receiver(fail_first=fail_first)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield hook
    finally:
        await runner.cleanup()


def test_signature_matches_the_fixture_vector() -> None:
    """sign_webhook reproduces the Standard Webhooks test vector of the fixtures README."""
    body = (
        b'{"id":"1234567890","status":"succeeded","message":"",'
        b'"create_time":1781080778802,"update_time":1781080794151}'
    )
    assert (
        sign_webhook(SECRET, "9876543210", 1781080794, body)
        == "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="
    )


async def test_callbacks_follow_every_status_change_unsigned() -> None:
    """Each status change POSTs the task object; no signature headers without a secret."""
    async with receiver() as hook, running(durations=FIXED) as api:
        _, body = await api.create(VIDEO, callback_url=hook.url, external_task_id="cb")
        headers, first = await hook.next()
        assert first["task_status"] == "submitted"
        assert first["task_info"] == {"external_task_id": "cb"}
        assert "webhook-signature" not in {key.lower() for key in headers}
        api.sim.advance(6)
        assert (await hook.next())[1]["task_status"] == "processing"
        api.sim.advance(54)
        _, final = await hook.next()
        assert final["task_status"] == "succeed"
        assert final["task_id"] == body["data"]["task_id"]
        assert final["task_result"]["videos"][0]["url"].startswith(api.sim.url)
        assert api.sim.statistics().callbacks_delivered == 3


async def test_signed_callbacks_verify_with_the_secret() -> None:
    """With a secret, deliveries carry webhook-id/-timestamp/-signature verifying over the body."""
    async with (
        receiver() as hook,
        running(durations=FIXED, callbacks=CallbackConfig(secret=SECRET)) as api,
    ):
        await api.create(IMAGE, callback_url=hook.url)
        headers, _ = await hook.next()
        raw = json.dumps(_, separators=(",", ":")).encode()
        signature = sign_webhook(
            SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), raw
        )
        assert headers["webhook-signature"] == signature
        assert headers["webhook-id"].startswith("msg_")


async def test_failed_deliveries_are_retried_a_bounded_number_of_times() -> None:
    """A 5xx answer is retried; after max_attempts the event is given up and counted."""
    config = CallbackConfig(max_attempts=2, retry_delay=0.01)
    async with receiver(fail_first=3) as hook, running(durations=FIXED, callbacks=config) as api:
        await api.create(VIDEO, callback_url=hook.url)
        api.sim.advance(6)
        # submitted: 500, 500 -> given up; processing: 500, then delivered.
        assert (await hook.next())[1]["task_status"] == "processing"
        stats = api.sim.statistics()
        assert stats.callbacks_failed == 1
        assert stats.callback_attempts == 4
        assert stats.callbacks_delivered == 1


async def test_unreachable_callback_url_is_given_up() -> None:
    """A callback URL nobody listens on fails every attempt without hurting the server."""
    config = CallbackConfig(max_attempts=2, retry_delay=0.0, timeout=1.0)
    async with running(durations=FIXED, callbacks=config) as api:
        await api.create(VIDEO, callback_url="http://127.0.0.1:9/hook")
        for _ in range(200):
            if api.sim.statistics().callbacks_failed:
                break
            await asyncio.sleep(0.01)
        assert api.sim.statistics().callbacks_failed == 1
        assert (await api.call("GET", VIDEO))[0] == 200


async def test_duplicate_deliveries() -> None:
    """duplicate_rate=1 delivers each event twice with the same webhook-id."""
    config = CallbackConfig(duplicate_rate=1.0, secret=SECRET)
    async with receiver() as hook, running(durations=FIXED, callbacks=config) as api:
        await api.create(VIDEO, callback_url=hook.url)
        first, second = await hook.next(), await hook.next()
        assert first[1] == second[1]
        assert first[0]["webhook-id"] == second[0]["webhook-id"]


async def test_reordered_deliveries_send_processing_after_the_final_state() -> None:
    """reorder_rate=1 holds the processing notice back until after succeed."""
    config = CallbackConfig(reorder_rate=1.0)
    async with receiver() as hook, running(durations=FIXED, callbacks=config) as api:
        await api.create(VIDEO, callback_url=hook.url)
        api.sim.advance(100)
        statuses = [(await hook.next())[1]["task_status"] for _ in range(3)]
        assert statuses == ["submitted", "succeed", "processing"]


async def test_callbacks_on_the_scaled_real_clock() -> None:
    """With time_scale the scheduler fires each event itself, in order, without advance."""
    async with (
        receiver() as hook,
        running(manual_clock=False, time_scale=0.001, durations=FIXED) as api,
    ):
        await api.create(IMAGE, callback_url=hook.url)
        statuses = [(await hook.next())[1]["task_status"] for _ in range(3)]
        assert statuses == ["submitted", "processing", "succeed"]
