"""The simulator's injected faults, each seen through real HTTP on loopback."""

import asyncio

import aiohttp
import pytest

from kling_async.simulator import Fault, FaultKind, RateLimitStyle
from tests._simulator_helpers import IMAGE, VIDEO, running, video_body


async def test_server_error_fault_answers_5xx_with_5000_codes() -> None:
    """SERVER_ERROR answers 500/503/504 with business code 5000/5001/5002 and creates nothing."""
    pairs = set()
    async with running(faults=[Fault(kind=FaultKind.SERVER_ERROR, on={"create"})], seed=3) as api:
        for _ in range(12):
            status, body = await api.create(VIDEO)
            pairs.add((status, body["code"]))
        assert pairs == {(500, 5000), (503, 5001), (504, 5002)}
        stats = api.sim.statistics()
        assert stats.tasks_created == 0
        assert stats.faults_injected == {"server_error": 12}
        assert (await api.call("GET", VIDEO))[0] == 200


async def test_gateway_fault_answers_without_a_business_code() -> None:
    """GATEWAY answers 502, 504 or 524 with an HTML or plain body, no JSON code."""
    statuses = set()
    async with running(faults=[Fault(kind=FaultKind.GATEWAY)], seed=1) as api:
        for _ in range(12):
            status, body = await api.call("GET", VIDEO)
            assert isinstance(body, str)
            statuses.add(status)
    assert statuses == {502, 504, 524}


async def test_html_fault_answers_a_200_html_page() -> None:
    """HTML answers 200 with text/html where JSON was expected."""
    async with running() as api:
        api.sim.inject(FaultKind.HTML, on={"query"})
        async with api.session.get(api.sim.url + f"{VIDEO}/1", headers=api.headers) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "<html>" in await response.text()


async def test_redirect_and_invalid_request_faults() -> None:
    """REDIRECT answers 302 to a login page; INVALID_REQUEST CometAPI's 500 invalid_request."""
    async with running() as api:
        api.sim.inject(FaultKind.REDIRECT, on={"create"})
        async with api.session.post(
            api.sim.url + VIDEO, json=video_body(), headers=api.headers, allow_redirects=False
        ) as response:
            assert (response.status, response.headers["Location"]) == (302, "/login")
        api.sim.inject(FaultKind.INVALID_REQUEST, on={"create"})
        status, body = await api.create(VIDEO)
        assert status == 500
        assert body["error"]["code"] == "invalid_request"
        assert "(request id: " in body["error"]["message"]
        assert api.sim.statistics().tasks_created == 0


async def test_reset_before_processing_creates_nothing() -> None:
    """RESET_BEFORE drops the connection and the create never happened."""
    async with running() as api:
        api.sim.inject(FaultKind.RESET_BEFORE, on={"create"})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.create(VIDEO, external_task_id="r1")
        status, _ = await api.call("GET", f"{VIDEO}/r1")
        assert status == 404
        stats = api.sim.statistics()
        assert stats.tasks_created == 0
        assert stats.requests_to("video.create", 0) == 1


async def test_reset_after_create_leaves_the_task_behind() -> None:
    """RESET_AFTER is the ambiguous create: the client sees a reset, the task exists."""
    async with running() as api:
        api.sim.inject(FaultKind.RESET_AFTER, on={"create"})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.create(VIDEO, external_task_id="amb")
        found = await api.task(VIDEO, "amb")
        assert found["task_status"] == "submitted"
        status, body = await api.create(VIDEO, external_task_id="amb")
        assert (status, body["code"]) == (400, 1201)
        assert api.sim.statistics().tasks_created_per_external_id == {"amb": 1}


async def test_slow_fault_outlasts_a_client_timeout_after_creating() -> None:
    """SLOW delays the answer past the client's timeout; the create still took effect."""
    async with running() as api:
        api.sim.inject(FaultKind.SLOW, on={"create"}, delay=1.0)
        timeout = aiohttp.ClientTimeout(total=0.1)
        with pytest.raises(asyncio.TimeoutError):
            async with api.session.post(
                api.sim.url + VIDEO,
                json=video_body(external_task_id="slow"),
                headers=api.headers,
                timeout=timeout,
            ) as response:
                await response.read()
        assert (await api.task(VIDEO, "slow"))["task_info"] == {"external_task_id": "slow"}


async def test_slow_fault_answers_normally_when_the_client_waits() -> None:
    """A short SLOW delay ends with the normal answer."""
    async with running() as api:
        api.sim.inject(FaultKind.SLOW, delay=0.05)
        assert (await api.call("GET", IMAGE))[0] == 200


async def test_malformed_json_fault_after_creating() -> None:
    """MALFORMED_JSON answers 200 with a body that does not parse; the task exists."""
    async with running() as api:
        api.sim.inject(FaultKind.MALFORMED_JSON, on={"create"})
        status, body = await api.create(VIDEO, external_task_id="mj")
        assert status == 200
        assert isinstance(body, str)
        assert body.startswith('{"code": 0')
        assert (await api.task(VIDEO, "mj"))["task_status"] == "submitted"


async def test_truncated_fault_cuts_the_body_short() -> None:
    """TRUNCATED sends fewer bytes than Content-Length and closes the connection."""
    async with running() as api:
        api.sim.inject(FaultKind.TRUNCATED, on={"create"})
        with pytest.raises(aiohttp.ClientPayloadError):
            await api.create(VIDEO, external_task_id="tr")
        assert api.sim.statistics().tasks_created == 1


async def test_rate_limited_fault_is_a_429_burst() -> None:
    """RATE_LIMITED answers 429/1302 with Retry-After for the injected requests only."""
    async with running() as api:
        api.sim.inject(FaultKind.RATE_LIMITED, times=2, on={"list"})
        for _ in range(2):
            async with api.session.get(api.sim.url + VIDEO, headers=api.headers) as response:
                assert response.status == 429
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["code"] == 1302
        assert (await api.call("GET", VIDEO))[0] == 200
        assert api.sim.statistics().rejected_rate == 2


async def test_rate_limited_fault_in_the_cometapi_style_without_retry_after() -> None:
    """A RATE_LIMITED burst can answer CometAPI's 429 envelope with no Retry-After."""
    async with running() as api:
        api.sim.inject(FaultKind.RATE_LIMITED, style=RateLimitStyle.COMETAPI, retry_after=None)
        async with api.session.post(api.sim.url + VIDEO, json={}, headers=api.headers) as response:
            assert response.status == 429
            assert "Retry-After" not in response.headers
            assert (await response.json())["error"]["type"] == "comet_api_error"


async def test_restart_drops_every_response_in_flight() -> None:
    """RESTART resets its own connection and every other request still in flight."""
    async with running() as api:
        api.sim.inject(FaultKind.SLOW, on={"create"}, delay=0.3)
        slow = asyncio.create_task(api.create(VIDEO, external_task_id="inflight"))
        await asyncio.sleep(0.05)
        # POSTs: aiohttp re-sends an idempotent GET once when a reused connection drops.
        api.sim.inject(FaultKind.RESTART, on={"create"})
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.create(VIDEO, external_task_id="restarter")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await slow
        assert (await api.task(VIDEO, "inflight"))["task_status"] == "submitted"
        assert api.sim.statistics().requests_to("video.create", 0) == 2


async def test_fault_rates_are_seeded_and_partial() -> None:
    """A configured rate hits about that share of requests, identically for one seed."""
    outcomes = []
    for _ in range(2):
        async with running(
            faults=[Fault(kind=FaultKind.GATEWAY, rate=0.3, on={"list"})], seed=9
        ) as api:
            statuses = [(await api.call("GET", VIDEO))[0] for _ in range(60)]
            assert (await api.create(VIDEO))[0] == 200
            outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]
    assert 8 <= sum(status != 200 for status in outcomes[0]) <= 30


async def test_injected_faults_count_down_and_match_actions() -> None:
    """inject(times=2, on={'create'}) leaves queries alone and stops after two creates."""
    async with running() as api:
        api.sim.inject(FaultKind.SERVER_ERROR, times=2, on={"create"})
        assert (await api.call("GET", VIDEO))[0] == 200
        assert (await api.create(VIDEO))[0] >= 500
        assert (await api.create(VIDEO))[0] >= 500
        assert (await api.create(VIDEO))[0] == 200
