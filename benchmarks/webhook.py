"""Webhooks on versus off, same run: ``python -m benchmarks.webhook [--jobs N] [--scale S]``.

Both clients run the same workload against a fresh simulator with the same seed (same
run times, same failures), each in a child process so its work (rendering results,
posting callbacks) does not load the client's event loop; time is scaled, and so are
the clients' poll policies. The webhook client serves a receiver on 127.0.0.1 and sends
its URL with each create; the simulator POSTs every status change to it (signed, some
duplicated and reordered).

Columns:
  req/job   API requests the simulator answered (creates + queries + lists) per job
  query/job queries (and list pages) per job
  detect    median delay from a task's completion to the client knowing, as a share of
            its run time (p90 in brackets)
  hooks     deliveries accepted / duplicates / stale / rejected
"""

import argparse
import asyncio
import statistics

import attrs

from kling_async._core.config import Limits, PollPolicy
from kling_async._engine import Outcome
from kling_async.simulator import LogNormal, SimulatorConfig

from ._common import CALLBACKS, WEBHOOK, TimedClient, sim_stats, simulator, workload


@attrs.define
class Row:
    """One line of the table."""

    mode: str
    jobs: int = 0
    requests: int = 0
    queries: int = 0
    detect: list[float] = attrs.Factory(list)
    hooks: str = "-"


async def measure(mode: str, jobs: int, scale: float, slots: int | None) -> Row:
    """One client over every job on a fresh simulator."""
    config = SimulatorConfig(
        time_scale=scale,
        durations={
            "video": LogNormal(median=60, sigma=0.25),
            "image": LogNormal(median=15, sigma=0.25),
        },
        video_slots=slots,
        image_slots=slots,
        failure_rate=0.05,
        start_time=0.0,
        callbacks=CALLBACKS,
        seed=1,
    )
    webhook = WEBHOOK if mode == "webhooks on" else None
    row = Row(mode, jobs=jobs)
    outcomes: list[Outcome] = []
    with simulator(config, uvloop=False) as (url, key):
        client = TimedClient(
            api_key=key,
            base_url=url,
            limits=Limits(
                requests_per_second=None,
                max_queries=32,
                video_slots=slots or jobs,
                image_slots=slots or jobs,
                max_video_slots=slots or jobs,
                max_image_slots=slots or jobs,
            ),
            poll=PollPolicy(expected_video=60, expected_image=15).scaled(scale),
            server_time_scale=scale,
            webhook=webhook,
        )
        client.created = []
        async with client, client.batch(batch_id=mode.replace(" ", "-")) as batch:
            await batch.feed(workload(jobs))
            outcomes = [o async for o in batch]
            if client.webhook is not None:
                h = client.webhook.statistics()
                row.hooks = f"{h.accepted}/{h.duplicates}/{h.stale}/{h.rejected_total}"
        stats = await sim_stats(url)
    for name, count in stats["requests"].items():
        endpoint = name.split()[0]
        if endpoint.endswith((".create", ".query", ".list")):
            row.requests += count
            if not endpoint.endswith(".create"):
                row.queries += count
    # Place server times on the client's wall clock: the earliest create answer bounds it.
    origin = min(wall - created / 1000 * scale for wall, created in client.created)
    for outcome in outcomes:
        task = outcome.task
        if task is None or task.created_at is None or task.updated_at is None:
            continue
        run = (task.updated_at - task.created_at) / 1000 * scale
        ended = origin + task.updated_at / 1000 * scale
        if run > 0:
            row.detect.append(max(0.0, outcome.finished_at - ended) / run)
    return row


def _print(rows: list[Row]) -> None:
    print(f"{'mode':<13} {'jobs':>5} {'req/job':>8} {'query/job':>9} {'detect':>16}  hooks")
    for r in rows:
        detect = "-"
        if r.detect:
            p90 = statistics.quantiles(r.detect, n=10)[-1] if len(r.detect) > 1 else r.detect[0]
            detect = f"{statistics.median(r.detect):.1%} ({p90:.0%})"
        print(
            f"{r.mode:<13} {r.jobs:>5} {r.requests / r.jobs:>8.2f} {r.queries / r.jobs:>9.2f}"
            f" {detect:>16}  {r.hooks}"
        )


async def main(jobs: int, scale: float, slots: int | None) -> None:
    """Measure both modes in one run and print the table."""
    rows = [await measure(mode, jobs, scale, slots) for mode in ("webhooks off", "webhooks on")]
    _print(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--slots", type=int, default=20, help="account slots per kind (0: none)")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.scale, args.slots or None))
