"""Scheduler 2.0: polls from the learned run-time distribution, cold start, budget, hints."""

import contextlib
import itertools
import math
import pathlib
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from kling_async._api.wire import parse_task
from kling_async._core.clock import SystemClock, VirtualClock
from kling_async._core.config import Backoff, Limits, PollPolicy
from kling_async._core.errors import ConcurrencyLimited, ServerError
from kling_async._core.models import Kind, Request, Task
from kling_async._durable.bridge import JournalBatchStore
from kling_async._durable.sqlite import SqliteJournal
from kling_async._durable.store import MemoryStore
from kling_async._engine._runner import Engine
from kling_async._engine._runtime import MAX_BUCKETS, RuntimeModel, RuntimeSketch, runtime_key

from ._engine_helpers import FakeApi, image, video

NO_JITTER = PollPolicy(expected_video=60, expected_image=15, jitter=0.0)
FAST = Limits(requests_per_second=None, video_slots=20, image_slots=20)


class RecordingApi(FakeApi):
    """The fake API, noting when each task is queried and optionally reporting progress."""

    def __init__(self, clock: VirtualClock, **kw: Any) -> None:
        super().__init__(clock, **kw)
        self.queries: list[tuple[float, str]] = []
        self.progress = False

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        """Record the query, then answer it (with a progress share when asked to)."""
        self.queries.append((self.clock.now(), task_id))
        task = await super().get_task(kind, task_id)
        fake = self.tasks.get(task_id)
        if self.progress and fake is not None and not task.status.is_terminal:
            done = (self.clock.now() - fake.created) / fake.duration
            task = attrs.evolve(task, progress=min(0.99, max(0.01, done)))
        return task

    def times(self, task_id: str | None = None) -> list[float]:
        """Query times (of one task, or all)."""
        return [t for t, tid in self.queries if task_id is None or tid == task_id]


@contextlib.asynccontextmanager
async def engine_on(
    *, poll: PollPolicy = NO_JITTER, limits: Limits = FAST, **api: Any
) -> AsyncIterator[tuple[VirtualClock, RecordingApi, Engine]]:
    """A virtual clock, a recording fake API and an engine."""
    async with VirtualClock() as clock:
        fake = RecordingApi(clock, **api)
        engine = Engine(fake, limits=limits, backoff=Backoff(), poll=poll, clock=clock, seed=3)
        async with engine:
            yield clock, fake, engine


def teach(engine: Engine, kind: Kind, request: Request, runs: list[float]) -> None:
    """Feed run times to the engine's model, as finished tasks would."""
    for seconds in runs:
        engine.scheduler.learn(kind, seconds, runtime_key(request))


# -- the sketch ---------------------------------------------------------------------------------


def test_sketch_quantiles_follow_the_samples() -> None:
    """The sketch's quantiles and CDF match those of its samples within a few percent."""
    rng = random.Random(5)
    samples = [60 * math.exp(rng.gauss(0, 0.4)) for _ in range(2000)]
    sketch = RuntimeSketch()
    for value in samples:  # in arrival order: the sketch forgets slowly, not by rank
        sketch.add(value)
    samples.sort()
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        exact = samples[int(q * len(samples))]
        found = sketch.quantile(q)
        assert found is not None
        assert found == pytest.approx(exact, rel=0.06)
        assert sketch.cdf(exact) == pytest.approx(q, abs=0.03)


def test_sketch_is_bounded_and_ignores_nonsense() -> None:
    """However spread the samples, the sketch keeps at most MAX_BUCKETS buckets."""
    sketch = RuntimeSketch()
    assert sketch.quantile(0.5) is None
    assert sketch.cdf(10.0) == 0.0
    for exponent in range(-200, 400):
        sketch.add(1.1**exponent)
    for bad in (0.0, -1.0, math.inf, math.nan):
        sketch.add(bad)
    assert len(sketch) == 600
    assert len(sketch.to_dict()["buckets"]) <= MAX_BUCKETS  # type: ignore[arg-type]
    assert sketch.cdf(0.0) == 0.0


def test_model_round_trips_through_json_and_refuses_garbage() -> None:
    """dumps/loads keep every sketch; unreadable text leaves the model as it was."""
    model = RuntimeModel(min_samples=2)
    key = runtime_key(video())
    for seconds in (50.0, 60.0, 70.0):
        model.observe(Kind.VIDEO, key, seconds)
    model.observe(Kind.VIDEO, None, 65.0)
    model.observe(Kind.IMAGE, None, -1.0)
    copy = RuntimeModel(min_samples=2)
    assert copy.loads(model.dumps())
    original, restored = model.distribution(Kind.VIDEO, key), copy.distribution(Kind.VIDEO, key)
    assert original is not None
    assert restored is not None
    assert restored.quantile(0.5) == pytest.approx(original.quantile(0.5))
    assert copy.samples(Kind.VIDEO) == 4
    for garbage in ("", "[]", '{"format": 99}', '{"format": 1, "kinds": {"nope": {}}}'):
        assert not copy.loads(garbage)
    assert not copy.loads('{"format": 1, "kinds": {"video": {"count": "x"}}, "keys": {}}')
    assert copy.samples(Kind.VIDEO) == 4


def test_runtime_key_names_what_changes_run_time() -> None:
    """Requests differing in mode, duration or n learn apart; the kind comes first."""
    assert runtime_key(video()).startswith("video|")
    assert runtime_key(image(1)) != runtime_key(image(2))


def test_progress_is_read_as_a_share() -> None:
    """A task's progress reads as 0..1 whether sent as "50%", 50 or 0.5."""
    good: tuple[object, ...] = ("50%", 50, 0.5)
    for value in good:
        task = parse_task({"task_id": "1", "task_status": "processing", "progress": value})
        assert task.progress == pytest.approx(0.5)
    bad: tuple[object, ...] = ("soon", True, 150, [1])
    for value in bad:
        task = parse_task({"task_id": "1", "task_status": "processing", "progress": value})
        assert task.progress is None


# -- when the first look comes ------------------------------------------------------------------


async def test_first_look_follows_the_learned_quantile() -> None:
    """With run times learned, the first poll comes at their first_quantile, not the prior."""
    runs = [40 * math.exp(0.2 * random.Random(i).gauss(0, 1)) for i in range(50)]
    async with engine_on(durations={Kind.VIDEO: 40.0, Kind.IMAGE: 15.0}) as (_, fake, engine):
        teach(engine, Kind.VIDEO, video(), runs)
        sketch = engine.scheduler.model.distribution(Kind.VIDEO, runtime_key(video()))
        assert sketch is not None
        expected = sketch.quantile(NO_JITTER.first_quantile)
        await engine.generate(video())
    assert fake.times()[0] == pytest.approx(expected)
    assert fake.times()[0] < 40.0 < 60.0  # below the median learned, far below the prior
    # Dense where tasks end: every gap after the first is under a fifth of the run time.
    gaps = [b - a for a, b in zip(fake.times(), fake.times()[1:], strict=False)]
    assert all(gap < 8.0 for gap in gaps)


async def test_cold_start_probes_early_when_the_prior_is_too_long() -> None:
    """No run time learned, prior 4x too long: the first look is a fifth of the prior."""
    async with engine_on(durations={Kind.VIDEO: 15.0, Kind.IMAGE: 15.0}) as (clock, fake, engine):
        await engine.generate(video())
        done = clock.now()
    assert fake.times()[0] == pytest.approx(0.2 * 60)
    assert done <= 1.5 * 15.0


async def test_cold_start_grows_geometrically_when_the_prior_is_too_short() -> None:
    """Prior 3x too short: looks grow by cold_growth and find the task within 1.2x."""
    async with engine_on(durations={Kind.VIDEO: 180.0, Kind.IMAGE: 15.0}) as (clock, fake, engine):
        await engine.generate(video())
        done = clock.now()
    times = fake.times()
    ratios = [b / a for a, b in itertools.pairwise(times)]
    assert ratios == pytest.approx([NO_JITTER.cold_growth] * len(ratios))
    assert done <= 1.2 * 180.0


async def test_learning_three_run_times_replans_the_cold_tasks() -> None:
    """Once a kind is learned, tasks still on the cold probe follow the distribution."""
    runs = {Kind.VIDEO: 600.0, Kind.IMAGE: 15.0}
    async with engine_on(durations=runs) as (clock, fake, engine), anyio.create_task_group() as tg:
        tg.start_soon(engine.generate, video())
        await clock.sleep(13.0)  # the cold probe looked at 12 s; next at 13.8 s
        teach(engine, Kind.VIDEO, video(), [500.0, 600.0, 700.0])
        await clock.sleep(1.0)
        assert len(fake.times()) == 1  # replanned past 13.8 s, towards the learned runs
        tg.cancel_scope.cancel()


# -- the budget ---------------------------------------------------------------------------------


async def test_budget_serves_slot_holders_with_a_queue_first() -> None:
    """When polls are due together and the rate is short, a slot queued jobs want goes first."""
    limits = Limits(
        requests_per_second=1.0, burst=1, max_queries=1, video_slots=1, max_video_slots=1
    )
    async with engine_on(limits=limits, durations={Kind.VIDEO: 30.0, Kind.IMAGE: 30.0}) as (
        clock,
        fake,
        engine,
    ):
        for kind, request in ((Kind.VIDEO, video()), (Kind.IMAGE, image())):
            teach(engine, kind, request, [30.0] * 5)
        async with engine.batch() as batch:
            for i in range(3):
                await batch.submit(image(), key=f"i{i}")
            await batch.submit(video(), key="v0")
            await batch.submit(video(), key="v1")  # waits for v0's slot
            await clock.sleep(8.0)
            assert engine.slots[Kind.VIDEO].waiting == 1
            images = [t.task_id for t in fake.tasks.values() if t.kind is Kind.IMAGE]
            videos = [t.task_id for t in fake.tasks.values() if t.kind is Kind.VIDEO]
            assert len(images) == 3
            assert len(videos) == 1
            before = len(fake.queries)
            for task_id in [*images, *videos]:  # all due now, the video last in line
                assert engine.refresh(task_id)
            await clock.sleep(5.0)
            asked = [tid for _, tid in fake.queries[before:]]
            outcomes = [o async for o in batch]
    assert all(o.ok for o in outcomes)
    assert asked[0] == videos[0]
    assert set(asked[1:4]) == set(images)


async def test_awaited_jobs_are_marked_for_the_budget() -> None:
    """A generate() job counts as awaited: it is polled at the dense pace of slot holders."""
    async with engine_on(durations={Kind.VIDEO: 40.0, Kind.IMAGE: 40.0}) as (_, fake, engine):
        teach(engine, Kind.VIDEO, video(), [40.0 * (1 + 0.01 * i) for i in range(-10, 11)])
        teach(engine, Kind.IMAGE, image(), [40.0 * (1 + 0.01 * i) for i in range(-10, 11)])
        await engine.generate(video())
        awaited = len(fake.queries)
        async with engine.batch() as batch:
            await batch.submit(image(), key="solo")  # nobody queued: idle spacing
            assert [o.ok async for o in batch] == [True]
        idle = len(fake.queries) - awaited
    assert awaited >= idle


# -- hints --------------------------------------------------------------------------------------


async def test_retry_after_on_a_query_moves_the_next_look() -> None:
    """A query answered 503 with Retry-After 7 s is asked again 7 s later."""
    async with engine_on(durations={Kind.VIDEO: 60.0, Kind.IMAGE: 15.0}) as (_, fake, engine):
        fake.inject("get", ServerError("busy", http_status=503, retry_after=7.0))
        await engine.generate(video())
    times = fake.times()
    assert times[0] == pytest.approx(12.0)
    assert times[1] == pytest.approx(19.0)


async def test_progress_moves_the_next_look() -> None:
    """A task reporting progress is looked at when that progress says it ends."""
    async with engine_on(durations={Kind.VIDEO: 100.0, Kind.IMAGE: 15.0}) as (clock, fake, engine):
        fake.progress = True
        await engine.generate(video())
        done = clock.now()
    # 20% at 12 s says 60 s total... then 100 s: two or three looks, not the cold ladder.
    assert len(fake.times()) <= 4
    assert done <= 101.0


async def test_a_create_accepted_after_1303_tells_the_scheduler() -> None:
    """A create refused 1303 and then accepted reports that a task of its kind ended."""
    news: list[Kind] = []
    async with engine_on(durations={Kind.VIDEO: 10.0, Kind.IMAGE: 10.0}) as (_, fake, engine):
        engine.scheduler.slot_freed = news.append  # type: ignore[method-assign,assignment]
        fake.inject("create", ConcurrencyLimited("busy", http_status=429, code=1303))
        await engine.generate(video())
    assert news == [Kind.VIDEO]


async def test_slot_news_polls_the_task_most_likely_finished() -> None:
    """slot_freed() makes the task furthest along its distribution due at once."""
    slow = PollPolicy(expected_video=60, expected_image=15, jitter=0.0, max_interval=300)
    async with engine_on(poll=slow, durations={Kind.VIDEO: 50.0, Kind.IMAGE: 15.0}) as (
        clock,
        fake,
        engine,
    ):
        teach(engine, Kind.VIDEO, video(), [300.0, 310.0, 320.0])  # we think tasks are slow
        async with engine.batch() as batch:
            await batch.submit(video(), key="old")
            await clock.sleep(10.0)
            await batch.submit(video(), key="new")
            await clock.sleep(45.0)  # "old" ended at 50 s on the server; no poll yet
            assert fake.queries == []
            assert engine.scheduler.slot_freed(Kind.VIDEO)
            ends = {o.key: clock.now() async for o in batch}
    assert ends["old"] == pytest.approx(55.0, abs=0.5)
    assert ends["new"] > 100.0


def test_slot_freed_without_candidates_says_so() -> None:
    """slot_freed() with no task of the kind watched changes nothing."""

    async def main() -> bool:
        async with engine_on() as (_, _fake, engine):
            return engine.scheduler.slot_freed(Kind.IMAGE)

    assert anyio.run(main) is False


# -- persistence --------------------------------------------------------------------------------


async def test_learned_model_survives_a_resume(tmp_path: pathlib.Path) -> None:
    """A second engine on the same journal starts from the run times the first learned.

    On the system clock with short runs: the journal commits from its own thread, in
    real time, which a virtual clock would run ahead of.
    """
    path = tmp_path / "run.sqlite"
    poll = PollPolicy(
        expected_video=3.0, expected_image=3.0, min_interval=0.01, max_interval=0.5, jitter=0.0
    )
    clock = SystemClock()
    runs = {Kind.VIDEO: 0.2, Kind.IMAGE: 0.2}
    fake = RecordingApi(clock, durations=runs)  # type: ignore[arg-type]
    async with (
        Engine(fake, limits=FAST, poll=poll, clock=clock, seed=1) as engine,
        SqliteJournal.open(path, batch_id="b1") as journal,
        engine.batch(store=JournalBatchStore(journal)) as batch,
    ):
        for i in range(5):
            await batch.submit(video(), key=f"k{i}")
        assert all([o.ok async for o in batch])
    fake = RecordingApi(clock, durations=runs)  # type: ignore[arg-type]
    async with Engine(fake, limits=FAST, poll=poll, clock=clock, seed=1) as engine:
        assert engine.scheduler.model.samples(Kind.VIDEO) == 0
        async with (
            SqliteJournal.open(path) as journal,
            engine.batch(store=JournalBatchStore(journal)) as batch,
        ):
            for _ in range(100):  # read in the background, from the journal's thread
                if engine.scheduler.model.samples(Kind.VIDEO):
                    break
                await clock.sleep(0.005)
            assert engine.scheduler.model.samples(Kind.VIDEO) == 5
            await batch.submit(video(), key="k9")
            assert all([o.ok async for o in batch])
            known = clock.now()
    created = next(iter(fake.tasks.values())).created
    # Warm: the end is seen near the learned 0.2 s, not after the cold probe (0.6 s on).
    assert 0.2 <= known - created < 0.45


async def test_model_is_saved_as_it_learns_and_kept_by_memory_stores() -> None:
    """Every few learned run times the model goes to the attached store."""
    store = MemoryStore(batch_id="m")
    bridge = JournalBatchStore(store)
    assert await bridge.load_runtime_model() is None
    runs = {Kind.VIDEO: 10.0, Kind.IMAGE: 10.0}
    async with engine_on(durations=runs) as (_, _f, engine), engine.batch(store=bridge) as batch:
        for i in range(20):
            await batch.submit(image(), key=f"k{i}")
        saved_during_run = False
        async for _ in batch:
            await anyio.lowlevel.checkpoint()
            saved_during_run |= await store.load_runtime_model() is not None
        assert saved_during_run  # every 16 learned run times, not only at the end
    text = await store.load_runtime_model()
    assert text is not None
    model = RuntimeModel()
    assert model.loads(text)
    assert model.samples(Kind.IMAGE) == 20


async def test_a_store_without_the_capability_is_left_alone() -> None:
    """A store lacking load/save of the model works as before; saving errors are logged."""

    class Broken(MemoryStore):
        async def save_runtime_model(self, model: str) -> None:
            raise OSError("disk full")

    class Unreadable(MemoryStore):
        async def load_runtime_model(self) -> str | None:
            raise OSError("unreadable")

    class Plain:
        async def load_runtime_model(self) -> str | None:
            return None

    async with engine_on(durations={Kind.VIDEO: 10.0, Kind.IMAGE: 10.0}) as (_, _f, engine):
        engine.scheduler.attach_store(Plain())
        engine.scheduler.attach_store(Unreadable(batch_id="u"))
        async with engine.batch(store=JournalBatchStore(Broken(batch_id="x"))) as batch:
            for i in range(20):  # past the 16 after which the saver writes (and fails)
                await batch.submit(image(), key=f"k{i}")
            assert all([o.ok async for o in batch])
        stats = engine.statistics().scheduler
        assert stats.learned[Kind.IMAGE] == 20
        assert stats.ready == 0


async def test_cold_batch_tasks_wait_for_a_few_scouts() -> None:
    """Cold, only a few tasks of a batch probe early; the rest wait for their run times."""
    runs = {Kind.VIDEO: 60.0, Kind.IMAGE: 15.0}
    async with engine_on(durations=runs) as (_, fake, engine), engine.batch() as batch:
        for i in range(12):
            await batch.submit(video(), key=f"v{i}")
        assert all([o.ok async for o in batch])
    early = {tid for t, tid in fake.queries if t < 59.0}
    assert len(early) == 3
    assert engine.scheduler.model.samples(Kind.VIDEO) == 12


async def test_past_the_learned_tail_looks_grow_geometrically() -> None:
    """A task slower than every learned run is looked at with its age growing by growth."""
    async with engine_on(durations={Kind.VIDEO: 150.0, Kind.IMAGE: 15.0}) as (_, fake, engine):
        teach(engine, Kind.VIDEO, video(), [30.0] * 20)
        await engine.generate(video())
    ages = fake.times()
    late = [b / a for a, b in itertools.pairwise(ages) if a > 60.0 and b - a < 30.0]
    assert late
    assert late == pytest.approx([NO_JITTER.growth] * len(late), rel=0.01)


def test_sketch_renormalises_and_the_model_forgets_old_keys() -> None:
    """Thousands of samples keep the weights finite; past 64 keys the oldest is dropped."""
    sketch = RuntimeSketch()
    for i in range(6000):
        sketch.add(10.0 + i % 7)
    assert sketch.quantile(0.5) == pytest.approx(13.0, rel=0.1)
    assert all(math.isfinite(w) for w in sketch.to_dict()["buckets"].values())  # type: ignore[attr-defined]
    model = RuntimeModel(min_samples=1)
    for i in range(70):
        model.observe(Kind.IMAGE, f"key{i}", 5.0)
    assert model.distribution(Kind.IMAGE, "key69") is not None
    copy = RuntimeModel(min_samples=1)
    assert copy.loads(model.dumps())
    assert '"key0"' not in copy.dumps()
    assert copy.loads(
        '{"format": 1, "kinds": {}, "keys": {"k": {"count": 1, "buckets": {"3": -1}}}}'
    )
    assert sketch.look_density(5.0) == sketch.look_density(5.0)  # cached
    assert RuntimeSketch().look_density(1.0) == 0.0
