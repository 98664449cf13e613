"""The batch in every common form, through the public API, with more jobs than max_pending."""

import asyncio
import contextlib
import gc
import pathlib
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

import kling_async as ka
from kling_async._engine import BatchControl
from kling_async.testing import FakeKling, MockTransport, VirtualClock

NO_BLOCKING_MODULES = ["kling_async._engine", "kling_async._client", "kling_async.testing"]
pytestmark = pytest.mark.usefixtures("no_blocking_calls")

PENDING = 4  # max_pending of every batch here
JOBS = 30  # several times more jobs than the batch holds unsent
URL = ka.Image.from_url("https://example.invalid/a.png")
LIMITS = ka.Limits(video_slots=6, max_video_slots=6, requests_per_second=None)


def video(prompt: str = "walk") -> ka.MultiImageToVideo:
    """A small valid video request."""
    return ka.MultiImageToVideo(images=[URL, URL], prompt=prompt)


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[tuple[ka.Client, FakeKling]]:
    """A client on a FakeKling under a virtual clock: a batch ends at once in real time."""
    async with VirtualClock() as clock:
        fake = FakeKling(clock=clock, run_time=30)
        async with ka.Client(
            "test-key", transport=MockTransport(fake), clock=clock, limits=LIMITS
        ) as kling:
            yield kling, fake


def keys(prefix: str, n: int = JOBS) -> list[str]:
    """n distinct job keys."""
    return [f"{prefix}{i}" for i in range(n)]


async def test_submit_all_then_iterate() -> None:
    """(a) Submit everything, then iterate: the end of input is implicit, nothing deadlocks."""
    async with client() as (kling, fake), kling.batch(max_pending=PENDING) as batch:
        for key in keys("a"):
            await batch.submit(video(), key=key)
        seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("a"))
    assert fake.creates == JOBS


async def produce(producer: ka.BatchProducer, prefix: str, n: int = JOBS) -> None:
    """A producer task: submits n jobs, yielding between them, then closes its handle."""
    async with producer:
        for key in keys(prefix, n):
            await producer.submit(video(), key=key)
            await anyio.lowlevel.checkpoint()


async def test_producer_task_beside_the_loop_asyncio_taskgroup() -> None:
    """(b) asyncio.TaskGroup: a producer task beside `async for` (the README form) works."""
    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        asyncio.TaskGroup() as tg,
    ):
        tg.create_task(produce(batch.producer(), "p"))
        seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("p"))


async def test_producer_task_beside_the_loop_anyio_task_group() -> None:
    """(b) anyio task group: a producer task beside `async for` works."""
    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(produce, batch.producer(), "p")
        seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("p"))


async def test_loop_started_first_in_its_own_task() -> None:
    """(b) Any order: the reading task is started before the producer task; all arrive."""
    seen: list[str] = []

    async def consume(batch: ka.Batch) -> None:
        seen.extend([outcome.key async for outcome in batch])

    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(consume, batch)
        tg.start_soon(produce, batch.producer(), "p")
    assert sorted(seen) == sorted(keys("p"))


async def test_producer_started_late_after_loop_is_waiting() -> None:
    """(b) A producer task that first runs after the loop already waits: the handle holds it."""
    async with client() as (kling, _), kling.batch(max_pending=PENDING) as batch:
        producer = batch.producer()

        async def late() -> None:
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # the loop is already waiting for outcomes
            await produce(producer, "late")

        async with anyio.create_task_group() as tg:
            tg.start_soon(late)
            seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("late"))


async def test_feed_task_started_beside_the_loop() -> None:
    """(b) A feed task beside the loop: its handle is taken at the call, not when it runs."""

    async def jobs() -> AsyncIterator[tuple[str, ka.Request]]:
        for key in keys("f"):
            await anyio.lowlevel.checkpoint()
            yield key, video()

    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        asyncio.TaskGroup() as tg,
    ):
        tg.create_task(batch.feed(jobs()))
        seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("f"))


async def test_several_producers_input_ends_with_the_last_handle() -> None:
    """(c) Three producers of different lengths: the loop ends only after the last closes."""
    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        anyio.create_task_group() as tg,
    ):
        for prefix, n in (("x", 5), ("y", JOBS), ("z", 12)):
            tg.start_soon(produce, batch.producer(), prefix, n)
        seen = [outcome.key async for outcome in batch]
    assert sorted(seen) == sorted(keys("x", 5) + keys("y") + keys("z", 12))


async def test_submit_from_inside_the_loop() -> None:
    """(d) Follow-up jobs submitted from the loop body are accepted and read by the same loop."""
    async with client() as (kling, fake), kling.batch(max_pending=PENDING) as batch:
        for key in keys("first", 10):
            await batch.submit(video(), key=key)
        seen: list[str] = []
        async for outcome in batch:
            seen.append(outcome.key)
            if "-then" not in outcome.key:  # each first job asks for 3 follow-ups
                for i in range(3):
                    await batch.submit(video(), key=f"{outcome.key}-then{i}")
    assert len(seen) == 40
    assert {f"first{i}-then2" for i in range(10)} <= set(seen)
    assert fake.creates == 40


async def test_submit_from_inside_the_loop_with_producers_closed() -> None:
    """(d) After every producer closed, a follow-up from the loop body still runs to its end."""
    async with (
        client() as (kling, _),
        kling.batch(max_pending=PENDING) as batch,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(produce, batch.producer(), "p", 8)
        seen: list[str] = []
        async for outcome in batch:
            seen.append(outcome.key)
            if outcome.key == "p7":
                for key in keys("more", 10):
                    await batch.submit(video(), key=key)
    assert sorted(seen) == sorted(keys("p", 8) + keys("more", 10))


async def test_producer_handle_rules() -> None:
    """A closed handle refuses jobs; close() is idempotent; after the loop ends, no submits."""
    async with client() as (kling, _), kling.batch(max_pending=PENDING) as batch:
        producer = batch.producer()
        assert "open" in repr(producer)
        await producer.submit(video(), key="one")
        await producer.aclose()
        producer.close()
        assert producer.closed
        with pytest.raises(RuntimeError, match="producer is closed"):
            await producer.submit(video(), key="two")
        assert [o.key async for o in batch] == ["one"]
        with pytest.raises(RuntimeError, match="loop has ended"):
            await batch.submit(video(), key="late")
        with pytest.raises(RuntimeError, match="loop has ended"):
            batch.producer()
    with pytest.raises(RuntimeError, match="was left"):
        await batch.submit(video(), key="after")


async def test_users_own_error_comes_out_as_itself() -> None:
    """An error raised by the caller's code inside the batch block is not wrapped in a group."""

    async def fail_while_reading(kling: ka.Client) -> None:
        async with kling.batch(max_pending=PENDING) as batch:
            await batch.submit(video(), key="k")
            async for _ in batch:
                raise KeyError("mine")

    async with client() as (kling, _):
        with pytest.raises(KeyError, match="mine"):
            await fail_while_reading(kling)


async def test_users_own_group_is_left_as_it_is() -> None:
    """An ExceptionGroup from the caller's own task group comes out as that same group."""

    async def fail_in_my_group(kling: ka.Client) -> None:
        async with kling.batch() as batch, asyncio.TaskGroup() as tg:
            tg.create_task(produce(batch.producer(), "p", 1))
            raise ValueError("in my task group")

    async with client() as (kling, _):
        with pytest.raises(ExceptionGroup) as caught:
            await fail_in_my_group(kling)
    assert [type(e) for e in caught.value.exceptions] == [ValueError]


async def test_a_single_engine_error_comes_out_unwrapped() -> None:
    """A failure in the batch's own tasks (here the finisher's set-up) comes out as itself."""

    async def broken_prepare(control: BatchControl, stack: contextlib.AsyncExitStack) -> None:
        control.start_soon(explode)

    async def explode() -> None:
        raise OSError("disk on fire")

    async with client() as (kling, _):
        batch = kling.batch()
        batch._control.configure(prepare=broken_prepare)
        with pytest.raises(OSError, match="disk on fire"):
            async with batch:
                await anyio.sleep(1)


async def test_readme_producer_form_with_a_journal(tmp_path: pathlib.Path) -> None:
    """The README form (journal, asyncio.TaskGroup, one producer handle) reads every job."""

    def read_my_jobs() -> list[tuple[str, ka.Request]]:
        return [(key, video()) for key in keys("r")]

    async def produce(producer: ka.BatchProducer) -> None:
        async with producer:
            for key, request in read_my_jobs():
                await producer.submit(request, key=key)

    statuses: dict[str, ka.Status] = {}
    async with (
        client() as (kling, _),
        kling.batch(journal=tmp_path / "run.sqlite", max_pending=PENDING) as batch,
        asyncio.TaskGroup() as tg,
    ):
        tg.create_task(produce(batch.producer()))
        async for outcome in batch:
            statuses[outcome.key] = outcome.status
    assert statuses == dict.fromkeys(keys("r"), ka.Status.SUCCEEDED)


async def test_several_engine_errors_come_out_as_one_flat_group() -> None:
    """Two failures in the batch's own tasks: one ExceptionGroup holding both, no nesting."""

    async def two_failures(control: BatchControl, stack: contextlib.AsyncExitStack) -> None:
        control.start_soon(explode, OSError("one"))
        control.start_soon(explode, KeyError("two"))

    async def explode(exc: Exception) -> None:
        raise exc

    async def run(kling: ka.Client) -> None:
        batch = kling.batch()
        batch._control.configure(prepare=two_failures)
        async with batch:
            await anyio.sleep(1)

    async with client() as (kling, _):
        with pytest.raises(ExceptionGroup) as caught:
            await run(kling)
    assert sorted(type(e).__name__ for e in caught.value.exceptions) == ["KeyError", "OSError"]


async def test_nested_groups_around_one_error_collapse_to_it() -> None:
    """A lone error wrapped in nested groups by the batch's tasks comes out as itself."""

    async def nested(control: BatchControl, stack: contextlib.AsyncExitStack) -> None:
        control.start_soon(inner_group)

    async def inner_group() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(explode)

    async def explode() -> None:
        raise OSError("deep")

    async def run(kling: ka.Client) -> None:
        batch = kling.batch()
        batch._control.configure(prepare=nested)
        async with batch:
            await anyio.sleep(1)

    async with client() as (kling, _):
        with pytest.raises(OSError, match="deep"):
            await run(kling)


async def test_a_dropped_open_producer_does_not_hang_the_loop() -> None:
    """A feed() coroutine that is never run closes its handle when dropped: the loop ends."""
    async with client() as (kling, _), kling.batch(max_pending=PENDING) as batch:
        await batch.submit(video(), key="only")
        never_run = batch.feed([("lost", video())])
        never_run.close()
        del never_run
        gc.collect()
        assert [o.key async for o in batch] == ["only"]
