"""The shared account limit: slot leases in PostgreSQL used by every process of an account."""

import asyncio

import pytest

from kling_async._client import Client
from kling_async._core.clock import SystemClock
from kling_async._core.config import Backoff, Limits, PollPolicy, Timeouts
from kling_async._core.models import Kind
from kling_async._durable.postgres_slots import PostgresSlots, account_id, shared_slots
from kling_async._durable.records import JournalError
from kling_async._engine._limits import SlotLimiter
from kling_async.simulator import LogNormal, Simulator, SimulatorConfig
from tests._journal_batch_child import SCALE, request_for


def _slots(url: str, holder: str, limit: int = 2, lease: float = 15.0) -> PostgresSlots:
    return PostgresSlots(
        f"{url}?kling_lease={lease}" if "?" not in url else f"{url}&kling_lease={lease}",
        account="acct",
        initial=dict.fromkeys(Kind, limit),
        maximum=dict.fromkeys(Kind, limit),
        holder=holder,
        poll=0.05,
    )


async def test_two_processes_share_one_limit_and_a_release_wakes_the_other(
    fresh_database: str,
) -> None:
    """With a limit of 2, a third slot waits until another holder gives one back."""
    clock = SystemClock()
    one, two = _slots(fresh_database, "one"), _slots(fresh_database, "two")
    await one.start()
    await two.start()
    try:
        assert await one.acquire(Kind.VIDEO, 1, clock, None)
        assert await two.acquire(Kind.VIDEO, 1, clock, None)
        assert one.limit(Kind.VIDEO) == 2
        # full: a deadline ends the wait
        assert not await two.acquire(Kind.VIDEO, 1, clock, clock.now() + 0.1)
        # the other kind is counted apart
        assert await two.acquire(Kind.IMAGE, 2, clock, None)
        waiter = asyncio.ensure_future(two.acquire(Kind.VIDEO, 1, clock, None))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        one.release(Kind.VIDEO, 1)
        assert await asyncio.wait_for(waiter, 5)
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_dead_holders_slots_expire_with_its_lease(fresh_database: str) -> None:
    """A holder that stops beating loses its slots once its lease ran out."""
    clock = SystemClock()
    dead, alive = _slots(fresh_database, "dead", lease=0.3), _slots(fresh_database, "alive")
    await dead.start()
    await alive.start()
    try:
        assert await dead.acquire(Kind.VIDEO, 2, clock, None)
        assert not await alive.acquire(Kind.VIDEO, 1, clock, clock.now() + 0.05)
        for task in dead._tasks:  # the process dies: no heartbeat, nothing given back
            task.cancel()
        assert await alive.acquire(Kind.VIDEO, 2, clock, clock.now() + 5)
    finally:
        await alive.aclose()
        dead._tasks = []
        await dead.aclose()


async def test_adaptive_limit_is_shared(fresh_database: str) -> None:
    """A 1303 seen by one process lowers the limit every process reads."""
    clock = SystemClock()
    one, two = _slots(fresh_database, "a", limit=8), _slots(fresh_database, "b", limit=8)
    await one.start()
    await two.start()
    try:
        assert await one.acquire(Kind.IMAGE, 1, clock, None)
        one.congested(Kind.IMAGE)
        one.release(Kind.IMAGE, 1)
        for _ in range(100):
            await asyncio.sleep(0.02)
            assert await two.acquire(Kind.IMAGE, 1, clock, None)
            two.release(Kind.IMAGE, 1)
            if two.limit(Kind.IMAGE) == 4:
                break
        assert two.limit(Kind.IMAGE) == 4
    finally:
        await one.aclose()
        await two.aclose()


def test_the_account_is_named_without_its_key() -> None:
    """The account id is a hash: the key never reaches the database; a bad URL is refused."""
    name = account_id("https://api.example", ["sk-secret"])
    assert "sk-secret" not in name
    assert name != account_id("https://api.example", ["sk-other"])
    with pytest.raises(ValueError, match="postgresql://"):
        shared_slots("sqlite:///x", base_url="https://a", secrets=["k"], limits=Limits())


async def test_clients_sharing_an_account_never_exceed_its_limit_together(
    fresh_database: str,
) -> None:
    """Three clients on one account, each allowed the whole limit, never get a 1303."""
    config = SimulatorConfig(
        time_scale=SCALE,
        durations={"video": LogNormal(median=60, sigma=0.25), "image": LogNormal(median=15)},
        video_slots=4,
        image_slots=4,
        seed=11,
    )
    limits = Limits(
        requests_per_second=None, video_slots=4, image_slots=4, max_video_slots=4, max_image_slots=4
    )
    async with Simulator(config) as sim:
        clients = [
            Client(
                api_key=sim.api_key,
                base_url=sim.url,
                timeouts=Timeouts(connect=1.0, read=0.5, total=2.0),
                limits=limits,
                backoff=Backoff(max_elapsed=3600).scaled(SCALE * 20),
                poll=PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
                server_time_scale=SCALE,
                coordination=fresh_database,
            )
            for _ in range(3)
        ]
        for client in clients:
            await client.__aenter__()
        try:
            await asyncio.gather(*(clients[i % 3].generate(request_for(i)) for i in range(36)))
        finally:
            for client in clients:
                await client.aclose()
        stats = sim.statistics()
    assert stats.tasks_created == 36
    assert stats.rejected_concurrency == 0
    assert all(peak <= 4 for peak in stats.peak_concurrency.values())


class _Gate:
    """A SlotGate that records calls and answers as told."""

    def __init__(self, answer: bool | Exception = True, shared: int | None = None) -> None:
        self.answer = answer
        self.shared = shared
        self.calls: list[tuple[str, Kind, int]] = []

    async def acquire(self, kind: Kind, slots: int, clock: object, deadline: object) -> bool:
        self.calls.append(("acquire", kind, slots))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def release(self, kind: Kind, slots: int) -> None:
        self.calls.append(("release", kind, slots))

    def force(self, kind: Kind, slots: int) -> None:
        self.calls.append(("force", kind, slots))

    def succeeded(self, kind: Kind) -> None:
        self.calls.append(("up", kind, 0))

    def congested(self, kind: Kind) -> None:
        self.calls.append(("down", kind, 0))

    def limit(self, kind: Kind) -> int | None:
        return self.shared


def _limiter(gate: _Gate) -> SlotLimiter:
    return SlotLimiter(Kind.VIDEO, initial=2, maximum=6, decrease=0.5, gate=gate)


async def test_the_engine_takes_each_slot_from_its_gate_too() -> None:
    """With a gate, a slot is held only when the gate grants it; the gate hears every change."""
    clock = SystemClock()
    gate = _Gate(shared=3)
    limiter = _limiter(gate)
    assert limiter.limit == 3  # the shared limit wins
    assert await limiter.acquire(2, clock)
    assert limiter.in_use == 2
    limiter.force(1)
    limiter.release(1)
    limiter.succeeded()
    assert limiter.congested(limiter.epoch)
    assert not limiter.congested(limiter.epoch - 1)  # one decrease per round
    assert [c[0] for c in gate.calls] == ["acquire", "force", "release", "up", "down"]
    gate.shared = None
    assert limiter.limit == 6  # the process's own cap until the gate has looked


async def test_a_refused_or_failed_gate_gives_the_local_slot_back() -> None:
    """A gate that says no (deadline) or raises leaves nothing held in the process."""
    clock = SystemClock()
    refused = _limiter(_Gate(answer=False))
    assert not await refused.acquire(1, clock, clock.now() + 0.01)
    assert refused.in_use == 0
    failing = _limiter(_Gate(answer=RuntimeError("db down")))
    with pytest.raises(RuntimeError, match="db down"):
        await failing.acquire(1, clock)
    assert failing.in_use == 0


async def test_slots_survive_a_lost_connection_then_expire(fresh_database: str) -> None:
    """Connections killed: releases are retried; a holder cut off for good breaks clearly."""
    from tests.test_postgres import _cut  # noqa: PLC0415

    clock = SystemClock()
    slots = _slots(fresh_database, "cut", lease=1.0)
    await slots.start()
    try:
        assert await slots.acquire(Kind.VIDEO, 1, clock, None)
        await asyncio.to_thread(_cut, fresh_database, allow=True)
        slots.release(Kind.VIDEO, 1)
        slots.succeeded(Kind.VIDEO)
        assert await slots.acquire(Kind.VIDEO, 2, clock, clock.now() + 5)
        await asyncio.to_thread(_cut, fresh_database, allow=False)
        for _ in range(60):
            if slots._broken is not None:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(JournalError, match="lost the connection"):
            await slots.acquire(Kind.IMAGE, 1, clock, None)
    finally:
        await asyncio.to_thread(_cut, fresh_database, allow=True)
        await slots.aclose()
        await slots.aclose()  # idempotent
