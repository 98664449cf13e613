"""The engine in virtual time against a fake API: lane, scheduler, limits, batches."""

import contextlib
import logging
import pathlib
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest

from kling_async import (
    AuthenticationError,
    Backoff,
    BadRequest,
    BatchStatistics,
    BatchStopped,
    ConcurrencyLimited,
    ConnectError,
    ConnectionLost,
    DuplicateExternalId,
    JobTimedOut,
    Kind,
    Limits,
    MalformedResponse,
    NotFound,
    Outcome,
    PollPolicy,
    RateLimited,
    Request,
    RequestTimeout,
    ServerError,
    SystemClock,
    TaskFailed,
    VirtualClock,
)
from kling_async._core.clock import wait_event_until
from kling_async._core.models import TaskStatus
from kling_async._engine import Engine, JobStatus, NullStore, external_id_for
from kling_async._engine._ids import MAX_EXTERNAL_ID
from kling_async._engine._limits import RateLimiter, SlotLimiter
from kling_async._engine._scheduler import RunningMedian

from ._engine_helpers import FakeApi, image, video

NO_BLOCKING_MODULES = ["kling_async._engine", "kling_async._core.clock"]
pytestmark = pytest.mark.usefixtures("no_blocking_calls")


FAST = Limits(requests_per_second=None, video_slots=5, image_slots=9)


@contextlib.asynccontextmanager
async def running(
    *,
    limits: Limits = FAST,
    backoff: Backoff | None = None,
    poll: PollPolicy | None = None,
    **api: Any,
) -> AsyncIterator[tuple[VirtualClock, FakeApi, Engine]]:
    """A virtual clock, a fake API and an engine on them."""
    async with VirtualClock() as clock:
        fake = FakeApi(clock, **api)
        engine = Engine(
            fake,
            limits=limits,
            backoff=backoff or Backoff(),
            poll=poll or PollPolicy(expected_video=60, expected_image=15),
            clock=clock,
            seed=7,
        )
        async with engine:
            yield clock, fake, engine


# -- policies -----------------------------------------------------------------------------------


def test_backoff_full_jitter_stays_within_the_exponential_cap() -> None:
    """The n-th retry waits uniformly within [0, min(maximum, initial * multiplier**(n-1))]."""
    policy = Backoff(initial=0.5, maximum=8.0, multiplier=2.0)
    rng = random.Random(1)
    for retry in range(1, 12):
        bound = min(8.0, 0.5 * 2 ** (retry - 1))
        waits = [policy.delay(retry, rng=rng.random) for _ in range(200)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > bound * 0.8  # full jitter reaches the bound
    assert policy.delay(3, rng=lambda: 0.999999) == pytest.approx(2.0, rel=1e-3)


def test_backoff_honours_retry_after_up_to_its_cap() -> None:
    """Retry-After lengthens a wait but never beyond retry_after_cap."""
    policy = Backoff(initial=0.1, retry_after_cap=10.0)
    assert policy.delay(1, retry_after=4.0, rng=lambda: 0.0) == 4.0
    assert policy.delay(1, retry_after=400.0, rng=lambda: 0.0) == 10.0


def test_backoff_after_1303_waits_at_least_the_floor() -> None:
    """A concurrency refusal (1303) waits at least concurrency_floor, even on the first retry."""
    policy = Backoff(initial=0.1, concurrency_floor=1.0)
    assert policy.delay(1, concurrency=True, rng=lambda: 0.0) == 1.0
    assert 1.0 <= policy.delay(1, concurrency=True, rng=lambda: 0.99) <= 2.0


def test_server_time_scale_must_be_positive() -> None:
    """The server time scale is the client's (not the poll policy's), and must be > 0."""
    with pytest.raises(ValueError, match="server_time_scale"):
        Engine(FakeApi(VirtualClock()), server_time_scale=0)
    assert "time_scale" not in attrs.fields_dict(PollPolicy)


def test_policies_scale_every_duration() -> None:
    """scaled(f) multiplies each duration by f and leaves counts alone."""
    backoff = Backoff().scaled(0.01)
    assert backoff.initial == pytest.approx(0.005)
    assert backoff.max_attempts == Backoff().max_attempts
    poll = PollPolicy().scaled(0.01)
    assert poll.expected_video == pytest.approx(1.2)
    assert poll.list_interval == pytest.approx(0.02)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limits(max_creates=0),
        lambda: Limits(video_slots=10, max_video_slots=5),
        lambda: Limits(image_slots=10, max_image_slots=5),
        lambda: Limits(slot_decrease=1.0),
        lambda: Limits(requests_per_second=0),
        lambda: Backoff(initial=0),
        lambda: PollPolicy(jitter=2.0),
        lambda: PollPolicy(min_interval=10, max_interval=1),
        lambda: PollPolicy(list_page_size=501),
    ],
)
def test_policies_refuse_bad_values(make: Any) -> None:
    """Config objects validate their values when built."""
    with pytest.raises(ValueError):
        make()


def test_policies_are_frozen_and_keyword_only() -> None:
    """Policies cannot be changed in place nor built positionally."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Limits().max_creates = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Backoff(1.0)  # type: ignore[call-arg]


# -- external ids ------------------------------------------------------------------------------


def test_external_id_is_plain_when_safe() -> None:
    """A safe, short batch id and key give f"{batch_id}-{key}"."""
    assert external_id_for("b1", "job-7") == "b1-job-7"


def test_external_id_is_hashed_when_unsafe_or_long() -> None:
    """Unsafe or long keys give a bounded, safe id that differs for different keys."""
    first = external_id_for("b1", "a/b c")
    second = external_id_for("b1", "a_b_c")
    long = external_id_for("batch", "k" * 500)
    assert first != second
    assert all(len(x) <= MAX_EXTERNAL_ID for x in (first, second, long))
    assert all(c.isalnum() or c in "._-" for c in first + long)
    assert external_id_for("b1", "a/b c") == first  # stable


# -- the clock ---------------------------------------------------------------------------------


async def test_virtual_clock_runs_sleeps_in_time_order_instantly() -> None:
    """Sleeps finish in virtual-time order and the time jumps to each deadline."""
    order: list[tuple[str, float]] = []
    async with VirtualClock() as clock:

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            order.append((name, clock.now()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "late", 3600.0)
            tg.start_soon(sleeper, "early", 5.0)
            tg.start_soon(sleeper, "now", 0.0)
    assert order == [("now", 0.0), ("early", 5.0), ("late", 3600.0)]
    assert clock.wall() > 1_000_000_000


async def test_virtual_clock_advances_by_hand_without_autojump() -> None:
    """advance() wakes the sleeps it passes; time never goes back."""
    clock = VirtualClock(autojump=False)
    async with clock:
        done = anyio.Event()

        async def sleeper() -> None:
            await clock.sleep(10)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.lowlevel.checkpoint()
            clock.advance(9)
            await anyio.lowlevel.checkpoint()
            assert not done.is_set()
            clock.advance(1)
            await done.wait()
        with pytest.raises(ValueError):
            clock.advance(-1)


async def test_wait_event_until_returns_on_event_or_deadline() -> None:
    """wait_event_until reports whether the event or the deadline came first."""
    async with VirtualClock() as clock:
        event = anyio.Event()
        assert not await wait_event_until(clock, event, clock.now() + 5)
        assert clock.now() == 5
        assert not await wait_event_until(clock, event, clock.now() - 1)
        event.set()
        assert await wait_event_until(clock, event, None)
        assert await wait_event_until(clock, event, clock.now() + 5)


async def test_system_clock_reads_real_time() -> None:
    """SystemClock sleeps on the loop and reads monotonic time."""
    clock = SystemClock()
    before = clock.now()
    await clock.sleep(0.001)
    await clock.sleep_until(clock.now() - 1)
    assert clock.now() >= before
    assert clock.wall() > 1_000_000_000
    assert repr(clock) == "SystemClock()"


# -- limiters ----------------------------------------------------------------------------------


async def test_slot_limiter_is_aimd_with_a_cap() -> None:
    """Slow start doubles, 1303 lowers once per round, then growth is additive, capped."""
    limiter = SlotLimiter(Kind.VIDEO, initial=2, maximum=6, decrease=0.5)
    assert limiter.acquire_nowait(2)
    assert not limiter.acquire_nowait(1)
    limiter.succeeded()
    assert limiter.limit == 3  # slow start: +1 per success
    epoch = limiter.epoch
    assert limiter.congested(epoch)
    assert not limiter.congested(epoch)  # same round: one signal
    assert limiter.limit == 1
    for _ in range(40):
        assert limiter.acquire_nowait(1) or True
        limiter.succeeded()
    assert limiter.limit <= 6
    stats = limiter.statistics()
    assert stats.decreases == 1
    assert stats.increases >= 1


async def test_slot_limiter_does_not_grow_when_not_binding() -> None:
    """Successes raise the limit only when the limit is what holds jobs back."""
    limiter = SlotLimiter(Kind.VIDEO, initial=5, maximum=50, decrease=0.5)
    limiter.succeeded()
    assert limiter.limit == 5


async def test_slot_limiter_serves_waiters_in_order_and_lets_wide_tasks_run_alone() -> None:
    """Waiters are served first come first served; a task wider than the limit runs alone."""
    async with VirtualClock() as clock:
        limiter = SlotLimiter(Kind.IMAGE, initial=3, maximum=3, decrease=0.5)
        assert limiter.acquire_nowait(9)  # alone: allowed
        order: list[int] = []

        async def take(slots: int) -> None:
            assert await limiter.acquire(slots, clock)
            order.append(slots)

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, 2)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(take, 1)
            await anyio.lowlevel.checkpoint()
            assert order == []
            limiter.release(9)
        assert order == [2, 1]
        assert limiter.in_use == 3


async def test_slot_limiter_wait_ends_at_the_deadline_or_on_cancel() -> None:
    """A waiter gives up at its deadline or when cancelled, leaving no trace."""
    async with VirtualClock() as clock:
        limiter = SlotLimiter(Kind.VIDEO, initial=1, maximum=1, decrease=0.5)
        assert limiter.acquire_nowait(1)
        assert not await limiter.acquire(1, clock, clock.now() + 5)
        with anyio.CancelScope() as scope:
            scope.deadline = anyio.current_time() + 0.01
            await limiter.acquire(1, clock)
        assert limiter.statistics().waiting == 0
        limiter.release(1)
        assert limiter.in_use == 0


async def test_rate_limiter_spaces_requests_and_pauses() -> None:
    """Tokens refill at the rate after the burst; pause() holds everyone."""
    async with VirtualClock() as clock:
        rate = RateLimiter(clock, 10.0, burst=5)
        for _ in range(25):
            await rate.acquire()
        assert clock.now() == pytest.approx(2.0, abs=0.01)
        rate.pause(30)
        await rate.acquire()
        assert clock.now() >= 32.0
        assert rate.statistics().pauses == 1
        free = RateLimiter(clock, None, burst=1)
        free.pause(5)
        await free.acquire()
        await free.acquire()
        assert free.statistics().granted == 2


def test_running_median_forgets_past_its_window() -> None:
    """The median covers the last ``window`` samples only."""
    median = RunningMedian(3)
    assert median.median() is None
    for value in (1.0, 2.0, 100.0, 101.0, 102.0):
        median.add(value)
    assert median.median() == 101.0
    median.add(103.0)
    assert len(median) == 3
    even = RunningMedian(4)
    for value in (1.0, 2.0, 3.0, 4.0):
        even.add(value)
    assert even.median() == 2.5


# -- generate() --------------------------------------------------------------------------------


async def test_generate_returns_the_finished_task_with_few_requests() -> None:
    """generate() creates once, probes from a fifth of the prior up, and returns the task."""
    async with running() as (clock, fake, engine):
        task = await engine.generate(video())
        assert task.status is TaskStatus.SUCCEEDED
        assert task.videos
        assert fake.calls["create"] == 1
        # Cold start: 0.2 x prior, then the age grows 1.15x per look (+/-10% jitter).
        assert fake.calls["get"] <= 14
        assert 60 <= clock.now() <= 60 * 1.15 * 1.1
        stats = engine.statistics()
        assert stats.slots[Kind.VIDEO].in_use == 0
        assert stats.scheduler.expected[Kind.VIDEO] == pytest.approx(60.0)


async def test_generate_raises_task_failed() -> None:
    """A task that ends failed raises TaskFailed with the server's message."""
    async with running(fail_keys=frozenset({"bad"})) as (_, _, engine):
        with pytest.raises(TaskFailed, match="risk control") as info:
            await engine.generate(video(), key="bad")
        assert info.value.task_id is not None
        assert info.value.job_key == "bad"


async def test_generate_with_a_key_adopts_the_task_of_an_earlier_call() -> None:
    """The same key twice pays once: the second call adopts the first call's task."""
    async with running() as (_, fake, engine):
        first = await engine.generate(video(), key="same")
        second = await engine.generate(video(), key="same")
        assert first.task_id == second.task_id
        assert sum(fake.created_per_external.values()) == 1
        assert engine.statistics().lane.adopted == 1


async def test_deadline_times_out_but_keeps_the_slot_until_the_task_ends() -> None:
    """Past its deadline a job raises JobTimedOut; its slot stays held while the task runs."""
    async with running() as (clock, fake, engine):
        with pytest.raises(JobTimedOut) as info:
            await engine.generate(video(), deadline=20)
        assert clock.now() == pytest.approx(20)
        assert info.value.task_id is not None
        assert engine.statistics().slots[Kind.VIDEO].in_use == 1
        assert engine.statistics().scheduler.overdue == 1
        await clock.sleep(200)
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0
        assert engine.statistics().scheduler.watched == 0
        assert fake.calls["get"] >= 1


async def test_deadline_while_waiting_for_a_slot() -> None:
    """A job that cannot get a slot before its deadline times out without a create."""
    async with running(limits=attrs.evolve(FAST, video_slots=1, max_video_slots=1)) as (
        _clock,
        fake,
        engine,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, video())
            await anyio.lowlevel.checkpoint()
            with pytest.raises(JobTimedOut, match="before its task was created"):
                await engine.generate(video(), deadline=10)
        assert fake.calls["create"] == 1


async def test_transient_errors_are_retried_with_backoff() -> None:
    """Server errors and rate limits are retried; the job then succeeds."""
    async with running() as (_, fake, engine):
        fake.inject("create", ServerError("busy", http_status=503), after=False)
        fake.inject("create", ConnectError("refused"))
        fake.inject("create", RateLimited("slow down", retry_after=7.0))
        task = await engine.generate(video())
        assert task.status is TaskStatus.SUCCEEDED
        assert engine.statistics().lane.retries == 3
        assert engine.statistics().rate.pauses >= 1


async def test_retry_after_is_honoured_in_virtual_time() -> None:
    """A Retry-After of 30 s delays the next create by at least 30 s."""
    async with running(backoff=Backoff(initial=0.01)) as (clock, fake, engine):
        fake.inject("create", RateLimited("slow down", retry_after=30.0))
        stamps: list[float] = []
        original = fake.create_task

        async def spy(request: Request, **kw: Any) -> Any:
            stamps.append(clock.now())
            return await original(request, **kw)

        fake.create_task = spy  # type: ignore[method-assign]
        await engine.generate(video())
        assert stamps[1] - stamps[0] >= 30.0


async def test_attempts_bound_ends_the_job_with_the_last_error() -> None:
    """After max_attempts sends the job raises the last transient error."""
    async with running(backoff=Backoff(max_attempts=3)) as (_, fake, engine):
        fake.inject("create", ConnectError("refused"), times=5)
        with pytest.raises(ConnectError):
            await engine.generate(video())
        assert fake.calls["create"] == 3


async def test_total_time_bound_ends_the_job() -> None:
    """Retrying stops once max_elapsed would be passed."""
    async with running(backoff=Backoff(initial=10, max_elapsed=25, max_attempts=100)) as (
        clock,
        fake,
        engine,
    ):
        fake.inject("create", ConnectError("refused"), times=100)
        with pytest.raises(ConnectError):
            await engine.generate(video())
        assert clock.now() <= 25


async def test_account_limit_is_never_exceeded_and_all_jobs_finish() -> None:
    """With the server limit below the client's, 1303s shrink the limit and every job ends."""
    limits = attrs.evolve(FAST, video_slots=6, max_video_slots=10)
    async with VirtualClock() as clock:
        fake = FakeApi(clock, limits={Kind.VIDEO: 3, Kind.IMAGE: None})
        async with Engine(fake, limits=limits, clock=clock, seed=3) as engine:
            async with engine.batch(batch_id="b") as batch:
                for i in range(30):
                    await batch.submit(video(), key=f"k{i}")
                outcomes = [o async for o in batch]
            assert all(o.ok for o in outcomes)
            assert fake.peak[Kind.VIDEO] <= 3
            assert fake.rejected_1303 >= 1
            assert engine.statistics().slots[Kind.VIDEO].decreases >= 1
            assert max(fake.created_per_external.values()) == 1


async def test_ambiguous_create_is_looked_up_and_adopted() -> None:
    """A create that made its task but lost the answer is adopted, not sent again."""
    async with running() as (_, fake, engine):
        fake.inject("create", ConnectionLost("reset"), after=True)
        task = await engine.generate(video(), key="amb")
        assert task.status is TaskStatus.SUCCEEDED
        assert fake.calls["create"] == 1
        assert fake.created_per_external == {"gen-amb": 1}
        assert engine.statistics().lane.adopted == 1


async def test_ambiguous_create_is_sent_again_only_when_provably_absent() -> None:
    """A timed-out create whose lookup answers NotFound is sent again, with the same id."""
    async with running() as (_, fake, engine):
        fake.inject("create", RequestTimeout("timed out"))
        fake.inject("get", ServerError("busy"))  # the lookup itself is retried
        await engine.generate(video(), key="gone")
        assert fake.calls["create"] == 2
        assert fake.created_per_external == {"gen-gone": 1}


async def test_duplicate_external_id_on_create_adopts_the_task() -> None:
    """A 1201 "external_task_id already exists" adopts the existing task."""
    async with running() as (_, fake, engine):
        first = await engine.generate(video(), key="dup")
        fake.inject("create", DuplicateExternalId("external_task_id already exists"))
        fake.by_external.pop("gen-dup")  # the lookup will not find it: give up honestly
        with pytest.raises(DuplicateExternalId):
            await engine.generate(video(), key="dup")
        assert first.task_id


async def test_job_errors_end_the_job_without_retry() -> None:
    """A job-scoped error (bad request) ends the job at once."""
    async with running() as (_, fake, engine):
        fake.inject("create", BadRequest("invalid", code=1201))
        with pytest.raises(BadRequest):
            await engine.generate(video())
        assert fake.calls["create"] == 1
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0


async def test_batch_scoped_error_is_raised_by_generate() -> None:
    """generate() raises the batch-scoped error itself (not BatchStopped)."""
    async with running() as (_, fake, engine):
        fake.inject("create", AuthenticationError("bad key", http_status=401, code=1000))
        with pytest.raises(AuthenticationError):
            await engine.generate(video())


async def test_query_errors_are_retried_and_unknown_tasks_end_the_job() -> None:
    """Transient query errors re-poll later; a NotFound on a created task fails the job."""
    async with running() as (_, fake, engine):
        fake.inject("get", ServerError("busy"))
        fake.inject("get", RateLimited("slow", retry_after=1.0))
        assert (await engine.generate(video())).status is TaskStatus.SUCCEEDED
        fake.inject("get", NotFound("gone", code=1203))
        with pytest.raises(NotFound):
            await engine.generate(video())
        assert engine.statistics().scheduler.query_errors >= 3


async def test_image_task_holds_n_slots() -> None:
    """An image job with n=4 takes 4 of the image slots until it ends."""
    async with running(limits=attrs.evolve(FAST, image_slots=5, max_image_slots=5)) as (
        clock,
        fake,
        engine,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, image(4))
            tg.start_soon(engine.generate, image(4))
            await clock.sleep(1)
            assert engine.statistics().slots[Kind.IMAGE].in_use == 4
        assert fake.peak[Kind.IMAGE] == 4


async def test_refresh_makes_a_task_due_now() -> None:
    """refresh(task_id) polls the task at once (a webhook hint); unknown ids answer False."""
    async with running() as (clock, fake, engine):
        assert not engine.refresh("nope")
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, video())
            await clock.sleep(1)
            (task_id,) = fake.tasks
            before = fake.calls["get"]
            assert engine.refresh(task_id)
            await clock.sleep(0.5)
            assert fake.calls["get"] == before + 1


async def test_cancelling_generate_leaves_the_task_counted_and_polled() -> None:
    """Cancelling generate() after the create keeps the task's slot until it ends."""
    async with running() as (clock, _, engine):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, video())
            await clock.sleep(5)
            tg.cancel_scope.cancel()
        stats = engine.statistics()
        assert stats.lane.creates == 1
        assert stats.slots[Kind.VIDEO].in_use == 1
        await clock.sleep(300)
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0


async def test_cancelling_generate_before_its_create_gives_the_slot_back() -> None:
    """A generate() cancelled while it waits (backoff) holds no slot afterwards."""
    async with running() as (clock, fake, engine):
        fake.inject("create", ServerError("busy"), times=3)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, video())
            await clock.sleep(0.01)
            tg.cancel_scope.cancel()
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0
        assert not fake.tasks


async def test_nothing_runs_after_the_engine_closes() -> None:
    """aclose() cancels the scheduler; generate() afterwards is refused."""
    async with VirtualClock() as clock:
        engine = Engine(FakeApi(clock), clock=clock)
        await engine.start()
        with pytest.raises(RuntimeError):
            await engine.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.generate, video())
            await clock.sleep(1)
            tg.cancel_scope.cancel()
        await engine.aclose()
        await engine.aclose()
        with pytest.raises(RuntimeError):
            await engine.generate(video())
        with pytest.raises(ValueError):
            Engine(FakeApi(clock), clock=clock).batch(max_pending=0)


# -- list polling ------------------------------------------------------------------------------


async def test_list_polling_answers_many_tasks_with_one_request() -> None:
    """With use_list, one list page answers every running task of the kind."""
    poll = PollPolicy(expected_video=60, use_list=True, list_interval=5)
    async with running(poll=poll, limits=attrs.evolve(FAST, video_slots=50)) as (_, fake, engine):
        async with engine.batch() as batch:
            for i in range(40):
                await batch.submit(video(), key=str(i))
            outcomes = [o async for o in batch]
        assert len(outcomes) == 40
        assert all(o.ok for o in outcomes)
        # Cold start lists from 0.2 x 60 s on, every list_interval (5 s) at most.
        assert fake.calls["list"] + fake.calls["get"] <= 12
        assert batch.statistics().requests["list"] >= 1


async def test_list_polling_falls_back_to_queries_on_404() -> None:
    """A server without the list endpoint (404) is polled task by task."""
    poll = PollPolicy(expected_video=60, use_list=True)
    async with running(poll=poll, serve_list=False) as (_, fake, engine):
        async with engine.batch() as batch:
            for i in range(3):
                await batch.submit(video(), key=str(i))
            outcomes = [o async for o in batch]
        assert all(o.ok for o in outcomes)
        assert engine.statistics().scheduler.list_enabled[Kind.VIDEO] is False
        assert fake.calls["get"] >= 3


async def test_list_polling_errors_and_unlisted_tasks() -> None:
    """A failing list page re-polls later; tasks beyond the pages read are queried by id."""
    poll = PollPolicy(expected_video=60, use_list=True, list_page_size=2, list_max_pages=1)
    async with running(poll=poll) as (_, fake, engine):
        fake.inject("list", ServerError("busy"))
        async with engine.batch() as batch:
            for i in range(5):
                await batch.submit(video(), key=str(i))
            outcomes = [o async for o in batch]
        assert all(o.ok for o in outcomes)
        assert fake.calls["get"] >= 1


# -- batches -----------------------------------------------------------------------------------


class RecordingStore(NullStore):
    """Remembers every state change, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def pending(self, key: str, kind: Kind, request: Request, external_id: str) -> None:
        self.events.append(("pending", key))

    async def submitting(self, key: str, external_id: str) -> None:
        self.events.append(("submitting", key))

    async def submitted(self, key: str, task_id: str) -> None:
        self.events.append(("submitted", key))

    async def finished(self, outcome: Outcome) -> None:
        self.events.append((outcome.status.value, outcome.key))


async def test_submit_everything_then_iterate_never_deadlocks() -> None:
    """More jobs than max_pending, all submitted before reading: every outcome arrives."""
    limits = attrs.evolve(FAST, video_slots=3, max_video_slots=3)
    async with running(limits=limits) as (_, fake, engine):
        async with engine.batch(max_pending=4) as batch:
            for i in range(40):
                await batch.submit(video(), key=f"job{i}")
                assert batch.statistics().queued <= 4
            outcomes = [o async for o in batch]
        assert sorted(o.key for o in outcomes) == sorted(f"job{i}" for i in range(40))
        assert fake.peak[Kind.VIDEO] <= 3
        stats = batch.statistics()
        assert stats.succeeded == 40
        assert stats.finished == 40
        assert stats.requests["create"] == 40
        assert stats.limits[Kind.VIDEO] == 3


async def test_feed_runs_beside_reading_with_bounded_memory() -> None:
    """feed() from a generator beside the reading loop: back-pressure bounds what waits."""
    limits = attrs.evolve(FAST, video_slots=10, max_video_slots=10)
    peak_queued = 0

    async def jobs() -> AsyncIterator[tuple[str, Request]]:
        nonlocal peak_queued
        for i in range(300):
            peak_queued = max(peak_queued, batch.statistics().queued)
            yield f"j{i}", video()

    async with running(limits=limits) as (_, _, engine):
        async with engine.batch(max_pending=8) as batch, anyio.create_task_group() as tg:
            tg.start_soon(batch.feed, jobs())
            count = 0
            async for outcome in batch:
                assert outcome.ok
                count += 1
        assert count == 300
        assert peak_queued <= 8


async def test_feed_accepts_a_plain_iterable_and_keys_must_be_unique() -> None:
    """feed() takes a list too; a repeated or empty key is refused."""
    async with running() as (_, _, engine):
        async with engine.batch() as batch:
            await batch.feed([("a", video()), ("b", image())])
            with pytest.raises(ValueError, match="already used"):
                await batch.submit(video(), key="a")
            with pytest.raises(ValueError, match="non-empty"):
                await batch.submit(video(), key="")
            outcomes = {o.key: o for o in [o async for o in batch]}
            with pytest.raises(RuntimeError, match="loop has ended"):
                await batch.submit(video(), key="late")
        assert set(outcomes) == {"a", "b"}
        assert outcomes["b"].kind is Kind.IMAGE


async def test_batch_circuit_opens_on_a_batch_scoped_error() -> None:
    """An account error stops new creates: unsent jobs end STOPPED, running ones finish."""
    limits = attrs.evolve(FAST, video_slots=2, max_video_slots=2, max_creates=1)
    async with running(limits=limits) as (clock, fake, engine):
        store = RecordingStore()
        async with engine.batch(store=store, batch_id="b") as batch:
            for i in range(2):
                await batch.submit(video(), key=f"ok{i}")
            await clock.sleep(1)
            fake.inject("create", AuthenticationError("bad key", http_status=401, code=1002))
            for i in range(5):
                await batch.submit(video(), key=f"late{i}")
            outcomes = {o.key: o for o in [o async for o in batch]}
        assert outcomes["ok0"].ok
        assert outcomes["ok1"].ok
        stopped = [o for o in outcomes.values() if o.status is JobStatus.STOPPED]
        assert len(stopped) == 5
        for outcome in stopped:
            assert isinstance(outcome.error, BatchStopped)
            assert str(outcome.error).startswith("batch stopped: bad key")
        assert fake.calls["create"] == 3
        assert batch.statistics().stopped == 5
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0
        assert ("stopped", "late4") in store.events


async def test_store_hears_each_state_before_the_step() -> None:
    """PENDING, SUBMITTING, SUBMITTED then the end, in that order, for each job."""
    store = RecordingStore()
    async with running() as (_, _, engine), engine.batch(store=store) as batch:
        await batch.submit(video(), key="x")
        _ = [o async for o in batch]
    assert store.events == [
        ("pending", "x"),
        ("submitting", "x"),
        ("submitted", "x"),
        ("succeeded", "x"),
    ]


async def test_leaving_a_batch_early_stops_unsent_jobs() -> None:
    """Leaving the block stops creates; unsent jobs are recorded STOPPED; slots come back."""
    limits = attrs.evolve(FAST, video_slots=2, max_video_slots=2)
    store = RecordingStore()
    async with running(limits=limits) as (clock, fake, engine):
        async with engine.batch(store=store) as batch:
            for i in range(6):
                await batch.submit(video(), key=f"j{i}")
            await clock.sleep(1)
        assert fake.calls["create"] == 2
        assert sum(1 for e in store.events if e[0] == "stopped") == 4
        with pytest.raises(RuntimeError):
            await batch.submit(video(), key="after")
        await clock.sleep(300)  # the two running tasks end; their slots come back
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0


async def test_batch_deadline_and_failures_are_outcomes_not_exceptions() -> None:
    """Per-job deadline and failed tasks arrive as outcomes; the iteration never raises."""
    async with running(fail_keys=frozenset({"bad"})) as (_, _, engine):
        async with engine.batch(deadline=30, batch_id="b") as batch:
            await batch.submit(video(), key="slow")
            await batch.submit(image(), key="bad")
            outcomes = {o.key: o for o in [o async for o in batch]}
        assert outcomes["slow"].status is JobStatus.TIMED_OUT
        assert isinstance(outcomes["slow"].error, JobTimedOut)
        assert outcomes["bad"].status is JobStatus.FAILED
        assert isinstance(outcomes["bad"].error, TaskFailed)
        assert not outcomes["bad"].ok
        stats = batch.statistics()
        assert (stats.timed_out, stats.failed, stats.running) == (1, 1, 0)


async def test_batch_misuse_is_refused() -> None:
    """A batch must be entered once before use, with sane arguments."""
    async with running() as (_, _, engine):
        batch = engine.batch()
        with pytest.raises(RuntimeError):
            await batch.submit(video(), key="a")
        async with batch:
            with pytest.raises(RuntimeError):
                await batch.__aenter__()
        with pytest.raises(ValueError):
            engine.batch(deadline=0)
        with pytest.raises(ValueError):
            await engine.generate(video(), deadline=-1)


async def test_decisions_are_logged_with_job_context(caplog: pytest.LogCaptureFixture) -> None:
    """Retries and adoptions log one record each on "kling_async" with the job key."""
    caplog.set_level(logging.INFO, logger="kling_async")
    async with running() as (_, fake, engine):
        fake.inject("create", ConnectionLost("reset"), after=True)
        await engine.generate(video(), key="logged")
    records = [r for r in caplog.records if r.name == "kling_async"]
    assert any("adopted" in r.getMessage() for r in records)
    assert all(getattr(r, "job_key", None) == "logged" for r in records if "job" in r.msg)


async def test_concurrency_refusal_does_not_use_up_attempts() -> None:
    """Many 1303 answers in a row do not exhaust max_attempts."""
    async with running(backoff=Backoff(max_attempts=2)) as (_, fake, engine):
        fake.inject("create", ConcurrencyLimited("full", code=1303), times=5)
        task = await engine.generate(video())
        assert task.status is TaskStatus.SUCCEEDED
        assert fake.calls["create"] == 6


async def test_a_deadline_during_retries_times_the_job_out() -> None:
    """A job retrying past its deadline ends JobTimedOut, its slot given back."""
    async with running(backoff=Backoff(initial=20, max_attempts=50)) as (clock, fake, engine):
        fake.inject("create", ConnectError("refused"), times=50)
        with pytest.raises(JobTimedOut):
            await engine.generate(video(), deadline=30)
        assert clock.now() == pytest.approx(30, abs=1)
        assert engine.statistics().slots[Kind.VIDEO].in_use == 0


async def test_not_found_on_create_fails_the_job() -> None:
    """A create answering NotFound (unknown model) ends the job without a lookup."""
    async with running() as (_, fake, engine):
        fake.inject("create", NotFound("no such model", code=1203))
        with pytest.raises(NotFound):
            await engine.generate(video())
        assert fake.calls["get"] == 0


async def test_duplicate_seen_twice_fails_the_job() -> None:
    """Two 1201 duplicates around an absent task end the job with the duplicate error."""
    async with running() as (_, fake, engine):
        fake.inject("create", ConnectionLost("reset"))
        fake.inject("create", DuplicateExternalId("external_task_id already exists"), times=2)
        with pytest.raises(DuplicateExternalId):
            await engine.generate(video(), key="twice")


async def test_reading_after_leaving_ends_and_store_errors_free_the_room() -> None:
    """Iterating a left batch ends at once; a store that fails on PENDING frees the room."""

    class Failing(NullStore):
        async def pending(self, key: str, kind: Kind, request: Request, external_id: str) -> None:
            raise OSError("disk full")

    async with running() as (_, _, engine):
        async with engine.batch(store=Failing(), max_pending=1) as batch:
            with pytest.raises(OSError, match="disk full"):
                await batch.submit(video(), key="a")
            with pytest.raises(OSError, match="disk full"):
                await batch.submit(video(), key="a")  # the key and the room came back
        assert [o async for o in batch] == []


async def test_jobs_queued_when_the_circuit_opens_end_stopped() -> None:
    """Jobs still queued when the circuit opens end STOPPED without any create."""
    limits = attrs.evolve(FAST, video_slots=1, max_video_slots=1)
    async with running(limits=limits) as (_, fake, engine):
        fake.inject("create", AuthenticationError("bad key", code=1000))
        async with engine.batch() as batch:
            for i in range(4):
                await batch.submit(video(), key=f"q{i}")
            outcomes = [o async for o in batch]
        assert [o.status for o in outcomes] == [JobStatus.STOPPED] * 4
        assert fake.calls["create"] == 1


async def test_resume_polls_submitted_tasks_and_reconciles_submitting_ones() -> None:
    """A journaled batch resumes: outcomes restored, tasks adopted, creates reconciled."""
    async with running() as (clock, fake, engine):
        known = await fake.create_task(video(), external_task_id="b-running")
        await fake.create_task(video(), external_task_id="b-sent")
        async with engine.batch(batch_id="b") as batch:
            control = batch._control  # the durable layer's side of the batch
            control.restore(Outcome(key="done", kind=Kind.VIDEO, status=JobStatus.SUCCEEDED))
            with pytest.raises(ValueError, match="already used"):
                control.restore(Outcome(key="done", kind=Kind.VIDEO, status=JobStatus.FAILED))
            await control.resume(
                video(), key="running", external_id="b-running", task_id=known.task_id
            )
            assert engine.statistics().slots[Kind.VIDEO].in_use == 1
            await control.resume(video(), key="sent", external_id="b-sent")
            await control.resume(video(), key="lost", external_id="b-lost")
            outcomes = {o.key: o for o in [o async for o in batch]}
        assert set(outcomes) == {"done", "running", "sent", "lost"}
        assert all(o.ok for o in outcomes.values())
        assert outcomes["running"].task_id == known.task_id
        assert fake.created_per_external == {"b-running": 1, "b-sent": 1, "b-lost": 1}
        assert clock.now() < 200


async def test_finisher_runs_on_successes_before_they_are_yielded() -> None:
    """A finisher (downloads) transforms each SUCCEEDED outcome; its failure keeps the original."""
    seen: list[str] = []

    async def finisher(outcome: Outcome) -> Outcome:
        seen.append(outcome.key)
        if outcome.key == "boom":
            raise OSError("disk full")
        return attrs.evolve(outcome, files=(pathlib.Path(f"/out/{outcome.key}.mp4"),))

    async with (
        running(fail_keys=frozenset({"bad"})) as (_, _, engine),
        engine.batch(finisher=finisher, batch_id="b") as batch,
    ):
        for key in ("ok", "boom", "bad"):
            await batch.submit(video(), key=key)
        outcomes = {o.key: o for o in [o async for o in batch]}
    assert sorted(seen) == ["boom", "ok"]
    assert outcomes["ok"].files == (pathlib.Path("/out/ok.mp4"),)
    assert outcomes["boom"].files == ()
    assert outcomes["bad"].status is JobStatus.FAILED


async def test_statistics_count_downloads_and_download_failures_apart() -> None:
    """A job downloading is not yet succeeded; one whose files failed is download_failed."""
    release = anyio.Event()
    seen: list[BatchStatistics] = []

    async def finisher(outcome: Outcome) -> Outcome:
        await release.wait()
        if outcome.key == "lost":
            return attrs.evolve(outcome, status=JobStatus.DOWNLOAD_FAILED)
        return outcome

    async with (
        running() as (clock, _, engine),
        engine.batch(finisher=finisher, batch_id="b") as batch,
    ):
        for key in ("ok", "lost"):
            await batch.submit(video(), key=key)
        for _ in range(600):  # both tasks end within the virtual minutes this allows
            if batch.statistics().downloading == 2:
                break
            await clock.sleep(1.0)
        seen.append(batch.statistics())
        release.set()
        outcomes = {o.key: o.status for o in [o async for o in batch]}
        seen.append(batch.statistics())
    assert outcomes == {"ok": JobStatus.SUCCEEDED, "lost": JobStatus.DOWNLOAD_FAILED}
    during, after = seen
    assert (during.downloading, during.succeeded, during.finished) == (2, 0, 0)
    assert (after.downloading, after.succeeded, after.download_failed) == (0, 1, 1)
    assert after.finished == 2


async def test_list_polling_turns_off_after_repeated_failures() -> None:
    """Three failing list pages in a row turn list polling off; due tasks are queried by id."""
    poll = PollPolicy(expected_video=30, use_list=True)  # polls come before the tasks end
    async with running(poll=poll) as (_, fake, engine):
        fake.inject("list", MalformedResponse("odd shape", path="$.data"), times=3)
        async with engine.batch() as batch:
            for i in range(6):
                await batch.submit(video(), key=str(i))
            outcomes = [o async for o in batch]
        assert all(o.ok for o in outcomes)
        assert engine.statistics().scheduler.list_enabled[Kind.VIDEO] is False
        assert fake.calls["list"] == 3
