"""The receiver fed by the simulator's real callbacks: signed, unsigned, duplicated, reordered."""

import time
from collections import Counter

import aiohttp
import anyio
import pytest

from kling_async import RejectReason, WebhookConfig, WebhookReceiver
from kling_async._core.models import TaskStatus
from kling_async.simulator import CallbackConfig, Fixed, Simulator, SimulatorConfig
from tests._simulator_helpers import VIDEO, Api, video_body
from tests._webhook_helpers import VECTOR_SECRET, Hints, wait_until

TASKS = 12


def sim_config(callbacks: CallbackConfig) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=0.001,
        durations={"video": Fixed(seconds=20.0)},
        failure_rate=0.25,
        video_slots=None,
        callbacks=callbacks,
        seed=7,
    )


async def create_tasks(api: Api, callback_url: str) -> list[str]:
    ids = []
    for i in range(TASKS):
        status, answer = await api.call(
            "POST", VIDEO, video_body(callback_url=callback_url, external_task_id=f"wh-{i}")
        )
        assert status == 200, answer
        ids.append(answer["data"]["task_id"])
    return ids


def terminal_hints(hints: Hints) -> Counter[str]:
    return Counter(t for t, s in hints.calls if s is not None and s.is_terminal)


@pytest.mark.parametrize("signed", [True, False])
async def test_simulator_callbacks_hint_each_task_end_once(
    session: aiohttp.ClientSession, signed: bool
) -> None:
    """Duplicated and reordered simulator callbacks give each task exactly one end hint."""
    secret = VECTOR_SECRET if signed else None
    callbacks = CallbackConfig(duplicate_rate=1.0, reorder_rate=0.5, secret=secret)
    hints = Hints()
    forged = 0
    async with (
        Simulator(sim_config(callbacks)) as sim,
        WebhookReceiver(WebhookConfig(secret=secret)) as receiver,
    ):
        sub = receiver.subscribe(hints)
        ids = await create_tasks(Api(sim, session), sub.callback_url)

        async def forge() -> None:
            nonlocal forged
            # Forged ends for real task ids: rejected when signed, harmless hints otherwise.
            for task_id in ids[:4]:
                body = f'{{"task_id":"{task_id}","task_status":"failed"}}'.encode()
                headers = {
                    "webhook-id": f"forged-{task_id}",
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZQ==",
                }
                async with session.post(sub.callback_url, data=body, headers=headers) as resp:
                    assert resp.status == (401 if signed else 200)
                forged += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(forge)
        # Every event went out twice; wait for all of them to be answered.
        await wait_until(lambda: sim.statistics().callbacks_delivered == TASKS * 3 * 2, 10.0)
        stats = receiver.statistics()

    ends = terminal_hints(hints)
    assert set(ends) == set(ids)
    if signed:
        assert all(n == 1 for n in ends.values())
        assert stats.rejected == {RejectReason.BAD_SIGNATURE: forged}
        assert stats.accepted + stats.duplicates + stats.stale == TASKS * 3 * 2
    else:
        # A forged "failed" may precede the real end; the scheduler re-queries either way.
        assert all(n <= 2 for n in ends.values())
        assert stats.rejected_total == 0
    assert stats.duplicates >= TASKS * 3
    assert stats.received == stats.accepted + stats.duplicates + stats.stale + stats.rejected_total
    # Nothing ever hinted a status older than one already hinted for the same task.
    rank = {TaskStatus.SUBMITTED: 0, TaskStatus.PROCESSING: 1}
    for task_id in ids:
        seen = [s for t, s in hints.calls if t == task_id]
        ranks = [rank.get(s, 2) for s in seen if s is not None]
        assert ranks == sorted(ranks)


async def test_rate_bound_turns_into_simulator_retries(session: aiohttp.ClientSession) -> None:
    """When the bucket is empty the simulator gets 429, retries, and gives up: drops, no errors."""
    callbacks = CallbackConfig(max_attempts=2, retry_delay=0.001)
    hints = Hints()
    config = WebhookConfig(max_rate=5, rate_period=60)
    async with Simulator(sim_config(callbacks)) as sim, WebhookReceiver(config) as receiver:
        sub = receiver.subscribe(hints)
        await create_tasks(Api(sim, session), sub.callback_url)
        await wait_until(
            lambda: (
                sim.statistics().callbacks_delivered + sim.statistics().callbacks_failed
                == TASKS * 3
            ),
            10.0,
        )
        stats = receiver.statistics()
        sim_stats = sim.statistics()
    assert len(hints.calls) == 5
    assert sim_stats.callbacks_delivered == 5
    assert sim_stats.callbacks_failed == TASKS * 3 - 5
    assert stats.rejected == {RejectReason.RATE_LIMITED: sim_stats.callback_attempts - 5}
