"""Webhooks wired into the engine: hints make tasks due, polling backs off and resumes."""

import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from kling_async import (
    Backoff,
    Client,
    Image,
    Kind,
    Limits,
    MultiImageToImage,
    MultiImageToVideo,
    Outcome,
    PollPolicy,
    RejectReason,
    Request,
    ServerError,
    Task,
    Timeouts,
    VirtualClock,
    WebhookConfig,
    WebhookReceiver,
)
from kling_async._core.models import TaskStatus
from kling_async._engine import Engine, JobStatus, _scheduler
from kling_async.simulator import (
    CallbackConfig,
    LogNormal,
    Simulator,
    SimulatorConfig,
)
from tests._engine_helpers import FakeApi, video
from tests._webhook_helpers import VECTOR_SECRET

SCALE = 0.0005  # a 60 s video runs 30 ms
URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))
CALLBACK = "https://hooks.example/kling/token"


NO_BLOCKING_MODULES = [
    "kling_async._webhooks.receiver",
    "kling_async._engine",
    "kling_async._client",
]
pytestmark = pytest.mark.usefixtures("no_blocking_calls")


class RecordingApi(FakeApi):
    """The fake API, remembering each create's callback_url and when each query came."""

    def __init__(self, clock: VirtualClock, **kwargs: Any) -> None:
        super().__init__(clock, **kwargs)
        self.callback_urls: list[str | None] = []
        self.query_times: list[float] = []
        self.create_answer_delay = 0.0  # the server made the task; its answer is late

    async def create_task(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        self.callback_urls.append(callback_url)
        task = await super().create_task(
            request, external_task_id=external_task_id, callback_url=callback_url
        )
        await self.clock.sleep(self.create_answer_delay)
        return task

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        self.query_times.append(self.clock.now())
        return await super().get_task(kind, task_id)


POLL = PollPolicy(expected_video=60, expected_image=15, jitter=0.0)


@contextlib.asynccontextmanager
async def engine_on(
    duration: float, *, webhooks: bool = True, poll: PollPolicy = POLL, latency: float = 0.0
) -> AsyncIterator[tuple[VirtualClock, RecordingApi, Engine]]:
    async with VirtualClock() as clock:
        fake = RecordingApi(
            clock, durations={Kind.VIDEO: duration, Kind.IMAGE: duration}, latency=latency
        )
        engine = Engine(fake, poll=poll, clock=clock, seed=1)
        if webhooks:
            engine.use_webhooks(CALLBACK)
        async with engine:
            yield clock, fake, engine


async def test_without_deliveries_polling_resumes_after_the_grace() -> None:
    """No delivery: nothing is polled before 1.5x the expected time, then normal polling ends it."""
    async with engine_on(200.0) as (clock, fake, engine):
        task = await engine.generate(video())
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.callback_urls == [CALLBACK]
    assert fake.query_times[0] == pytest.approx(90.0)
    assert 200 <= clock.now() <= 200 + POLL.max_interval
    # Past the grace the pace is the normal one (interval x expected, growing), not 300 s.
    gaps = [b - a for a, b in zip(fake.query_times, fake.query_times[1:], strict=False)]
    assert gaps
    assert max(gaps) <= POLL.max_interval


async def test_safety_interval_caps_the_covered_wait() -> None:
    """A covered task is still polled every poll_interval before its grace runs out."""
    poll = PollPolicy(expected_video=600, jitter=0.0)
    async with engine_on(350.0, poll=poll) as (_, fake, engine):
        engine.use_webhooks(CALLBACK, poll_interval=100)
        await engine.generate(video())
    assert fake.query_times[:3] == pytest.approx([100.0, 200.0, 300.0])
    assert fake.query_times[3] == pytest.approx(400.0)
    assert len(fake.query_times) == 4


async def test_terminal_hint_requeries_at_once() -> None:
    """A delivery that says the task ended makes it due now: one query, no waiting."""
    async with engine_on(40.0) as (clock, fake, engine):
        async with anyio.create_task_group() as tg:

            async def deliver() -> None:
                await clock.sleep(40.5)
                (task_id,) = fake.tasks
                engine.hint(task_id, TaskStatus.SUCCEEDED)

            tg.start_soon(deliver)
            task = await engine.generate(video())
        assert clock.now() == pytest.approx(40.5)
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.query_times == [pytest.approx(40.5)]


async def test_forged_and_running_hints_never_end_a_job() -> None:
    """A forged 'failed' costs one query and ends nothing; running-status hints cost none."""
    async with engine_on(40.0) as (clock, fake, engine), anyio.create_task_group() as tg:

        async def deliver() -> None:
            await clock.sleep(10)
            (task_id,) = fake.tasks
            engine.hint(task_id, TaskStatus.FAILED)  # forged
            await clock.sleep(10)
            engine.hint(task_id, TaskStatus.PROCESSING)
            engine.hint(task_id, TaskStatus.SUBMITTED)
            engine.hint("not-a-task", TaskStatus.SUCCEEDED)
            await clock.sleep(20.5)
            engine.hint(task_id, TaskStatus.SUCCEEDED)
            engine.hint(task_id, TaskStatus.SUCCEEDED)  # duplicate
            await clock.sleep(1)
            engine.hint(task_id, None)  # after the end: unknown task now

        tg.start_soon(deliver)
        task = await engine.generate(video())
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.query_times == [pytest.approx(10.0), pytest.approx(40.5)]


async def test_hint_during_a_query_in_flight_coalesces() -> None:
    """A hint while the task's query is in flight sends no second query at once.

    After a running answer the task is checked once more; after an end it is not.
    """
    async with (
        engine_on(40.0, latency=2.0) as (clock, fake, engine),
        anyio.create_task_group() as tg,
    ):

        async def deliver() -> None:
            await clock.sleep(10)
            (task_id,) = fake.tasks
            engine.hint(task_id, TaskStatus.FAILED)  # early or forged: the query says running
            await clock.sleep(1)
            engine.hint(task_id, None)  # in flight: re-checked after the running answer
            await clock.sleep(31.5)  # t=42.5, the task ended at 42
            engine.hint(task_id, TaskStatus.SUCCEEDED)
            await clock.sleep(0.5)
            engine.hint(task_id, None)  # in flight, and its answer is the end: nothing more

        tg.start_soon(deliver)
        task = await engine.generate(video())
        assert clock.now() == pytest.approx(44.5)
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.query_times == [pytest.approx(t) for t in (10.0, 12.0, 42.5)]


async def test_hint_during_a_failed_query_asks_again_soon() -> None:
    """A hint while the task's query is in flight and then fails: asked again min_interval later."""
    async with (
        engine_on(40.0, latency=2.0) as (clock, fake, engine),
        anyio.create_task_group() as tg,
    ):
        fake.inject("get", ServerError("bad gateway", http_status=502))

        async def deliver() -> None:
            await clock.sleep(10)
            (task_id,) = fake.tasks
            engine.hint(task_id, TaskStatus.SUCCEEDED)
            await clock.sleep(1)
            engine.hint(task_id, None)  # in flight: the failure is followed by a re-check

        tg.start_soon(deliver)
        task = await engine.generate(video())
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.query_times[:2] == [pytest.approx(10.0), pytest.approx(12.0 + POLL.min_interval)]


@pytest.mark.parametrize(
    ("answer_delay", "others", "first_query"),
    [
        pytest.param(5.0, 0, 5.0, id="applied-when-the-task-is-known"),
        pytest.param(400.0, 0, 400.0 + 90.0, id="expired-after-minutes"),
        pytest.param(5.0, 2, 5.0 + 90.0, id="evicted-past-the-bound"),
    ],
)
async def test_end_delivery_before_the_create_answer_is_remembered(
    monkeypatch: pytest.MonkeyPatch, answer_delay: float, others: int, first_query: float
) -> None:
    """An end delivery for a task not yet known is kept (bounded, for minutes): due when known."""
    monkeypatch.setattr(_scheduler, "_EARLY_HINTS", 2)
    async with engine_on(3.0) as (clock, fake, engine), anyio.create_task_group() as tg:
        fake.create_answer_delay = answer_delay

        async def deliver() -> None:
            await clock.sleep(4)  # the task ended at 3; its create has not answered yet
            (task_id,) = fake.tasks
            engine.hint(task_id, TaskStatus.SUCCEEDED)
            for other in range(others):
                engine.hint(f"unknown-{other}", TaskStatus.SUCCEEDED)

        tg.start_soon(deliver)
        task = await engine.generate(video())
    assert task.status is TaskStatus.SUCCEEDED
    assert fake.query_times == [pytest.approx(first_query)]


async def test_callback_url_in_the_request_wins() -> None:
    """A request with its own callback_url keeps it and is polled at the normal pace."""
    own = MultiImageToVideo(images=URLS, callback_url="https://user.example/cb")
    async with engine_on(60.0) as (_, fake, engine):
        await engine.generate(own)
    assert fake.callback_urls == [None]
    assert fake.query_times[0] == pytest.approx(60.0 * POLL.cold_first)  # the cold probe


async def test_webhooks_off_polls_from_the_expected_time() -> None:
    """Without webhooks nothing changes: no callback_url, first poll at the cold probe."""
    async with engine_on(60.0, webhooks=False) as (_, fake, engine):
        await engine.generate(video())
    assert fake.callback_urls == [None]
    assert fake.query_times[0] == pytest.approx(60.0 * POLL.cold_first)


async def test_use_webhooks_none_turns_them_off() -> None:
    """use_webhooks(None) stops sending a callback_url."""
    async with engine_on(5.0) as (_, fake, engine):
        engine.use_webhooks(None)
        await engine.generate(video())
    assert fake.callback_urls == [None]


def test_webhook_poll_knobs_live_in_the_webhook_config() -> None:
    """poll_interval and poll_grace are WebhookConfig's (default 300 s, 1.5x); both positive."""
    config = WebhookConfig()
    assert (config.poll_interval, config.poll_grace) == (300.0, 1.5)
    assert not hasattr(PollPolicy(), "webhook_interval")
    with pytest.raises(ValueError, match="poll_interval"):
        WebhookConfig(poll_interval=0)
    with pytest.raises(ValueError, match="poll_grace"):
        WebhookConfig(poll_grace=-1)


# -- the client against the simulator --------------------------------------------------------


def scaled_client(sim: Simulator, webhook: WebhookConfig | WebhookReceiver | None) -> Client:
    return Client(
        api_key=sim.api_key,
        base_url=sim.url,
        timeouts=Timeouts(connect=1.0, read=1.0, total=2.0),
        limits=Limits(requests_per_second=None, max_queries=32),
        backoff=Backoff(max_elapsed=3600).scaled(SCALE * 20),
        poll=PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
        server_time_scale=SCALE,
        webhook=webhook,
    )


def sim_config(callbacks: CallbackConfig, *, seed: int = 5) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=SCALE,
        durations={"video": LogNormal(median=60, sigma=0.25), "image": LogNormal(median=15)},
        video_slots=None,
        image_slots=None,
        failure_rate=0.2,
        callbacks=callbacks,
        seed=seed,
    )


def jobs(count: int) -> Iterator[tuple[str, Request]]:
    for i in range(count):
        if i % 2:
            yield f"v{i}", MultiImageToVideo(images=URLS, prompt=f"job {i}")
        else:
            yield f"i{i}", MultiImageToImage(images=URLS, n=1)


async def run_batch(client: Client, count: int, batch_id: str) -> list[Outcome]:
    async with client.batch(batch_id=batch_id) as batch:
        await batch.feed(jobs(count))
        return [o async for o in batch]


def assert_each_ends_once_truthfully(outcomes: list[Outcome], count: int) -> None:
    keys = collections.Counter(o.key for o in outcomes)
    assert len(keys) == count
    assert max(keys.values()) == 1
    for outcome in outcomes:
        assert outcome.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
        assert outcome.task is not None
        # Only the server's answer ends a job: the outcome's task is what a query said.
        if outcome.status is JobStatus.SUCCEEDED:
            assert outcome.task.status is TaskStatus.SUCCEEDED
            assert outcome.task.videos or outcome.task.images
        else:
            assert outcome.task.status is TaskStatus.FAILED


@pytest.mark.parametrize("signed", [True, False])
async def test_batch_with_duplicated_reordered_callbacks_ends_each_job_once(signed: bool) -> None:
    """Signed or not, duplicated and reordered deliveries: every job ends once, truthfully."""
    secret = VECTOR_SECRET if signed else None
    callbacks = CallbackConfig(duplicate_rate=0.5, reorder_rate=0.5, secret=secret)
    async with (
        Simulator(sim_config(callbacks)) as sim,
        # Time runs 2000x fast here: so do deliveries; lift the flood bound accordingly.
        scaled_client(sim, WebhookConfig(secret=secret, max_rate=100_000)) as client,
    ):
        outcomes = await run_batch(client, 60, "wh")
        assert client.webhook is not None
        hooks = client.webhook.statistics()
        requests = client.engine_statistics().requests
        stats = sim.statistics()
    assert_each_ends_once_truthfully(outcomes, 60)
    assert stats.max_creates_per_external_id == 1
    assert hooks.accepted > 0
    assert hooks.duplicates > 0
    assert hooks.rejected_total == 0
    # Deliveries replace polls: about one query per job (the re-query of its end).
    assert requests["query"] <= 60 * 1.5, requests


async def test_forged_deliveries_change_no_outcome() -> None:
    """Forged 'failed'/'succeed' posts for real tasks, unsigned: outcomes stay the server's."""
    callbacks = CallbackConfig()
    outcomes: list[Outcome] = []
    async with (
        Simulator(sim_config(callbacks, seed=9)) as sim,
        scaled_client(sim, WebhookConfig(max_rate=100_000)) as client,
        aiohttp.ClientSession() as session,
    ):
        assert client.webhook is not None
        assert client._subscription is not None
        url = client._subscription.callback_url
        forged = 0

        async def forge() -> None:
            nonlocal forged
            seen: set[str] = set()
            while True:
                for kind in Kind:
                    for task in await client.tasks.list(kind, 1, 500):
                        if task.task_id in seen or task.status.is_terminal:
                            continue
                        seen.add(task.task_id)
                        for lie in ("failed", "succeed"):
                            body = f'{{"task_id":"{task.task_id}","task_status":"{lie}"}}'
                            async with session.post(url, data=body) as resp:
                                assert resp.status == 200
                            forged += 1
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(forge)
            outcomes = await run_batch(client, 40, "forged")
            tg.cancel_scope.cancel()
        truth = {
            t.task_id: t.status for kind in Kind for t in await client.tasks.list(kind, 1, 500)
        }
    assert forged > 0
    assert_each_ends_once_truthfully(outcomes, 40)
    for outcome in outcomes:
        assert outcome.task is not None
        assert outcome.task.status is truth[outcome.task.task_id]


async def test_dropped_deliveries_fall_back_to_polling() -> None:
    """Deliveries refused (429) and given up by the sender: polling still ends every job."""
    callbacks = CallbackConfig(max_attempts=1)
    config = WebhookConfig(max_rate=3, rate_period=3600)
    async with (
        Simulator(sim_config(callbacks, seed=13)) as sim,
        scaled_client(sim, config) as client,
    ):
        outcomes = await run_batch(client, 30, "dropped")
        assert client.webhook is not None
        hooks = client.webhook.statistics()
        sim_stats = sim.statistics()
    assert_each_ends_once_truthfully(outcomes, 30)
    assert hooks.rejected[RejectReason.RATE_LIMITED] > 0
    assert sim_stats.callbacks_failed > 0


async def test_mounted_receiver_is_shared_not_closed() -> None:
    """A receiver the caller mounted is subscribed to, not closed, when the client closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    receiver = WebhookReceiver(
        WebhookConfig(public_url=f"http://127.0.0.1:{port}/hooks", max_rate=100_000)
    )
    app = web.Application()
    receiver.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        async with (
            Simulator(sim_config(CallbackConfig(), seed=21)) as sim,
            scaled_client(sim, receiver) as client,
        ):
            assert client.webhook is receiver
            outcomes = await run_batch(client, 10, "mounted")
            assert receiver.statistics().subscriptions == 1
        stats = receiver.statistics()
        with receiver.subscribe(lambda task_id, status: None):
            pass  # still open: the client did not close it
    finally:
        await runner.cleanup()
        await receiver.aclose()
        sock.close()
    assert stats.subscriptions == 0
    assert stats.accepted > 0
    assert_each_ends_once_truthfully(outcomes, 10)


async def test_bind_failure_closes_the_client() -> None:
    """A webhook port in use fails the client's start and leaves nothing open."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        async with Simulator(sim_config(CallbackConfig())) as sim:
            client = scaled_client(sim, WebhookConfig(port=port))
            with pytest.raises(OSError):
                await client.__aenter__()
            with pytest.raises(RuntimeError, match="closed"):
                await client.generate(video())
