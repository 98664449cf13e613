"""Requests per second the simulator sustains: creates and queries from concurrent clients.

The default runs the server in a child process (``python -m kling_async.simulator``) so
the load generator does not share its event loop; ``--in-process`` runs both in one loop.
Tasks last 60 simulated seconds at ``--time-scale`` 0.001, so creates keep finding free
slots while thousands of tasks pile up in the table. Run:
``python -m benchmarks.simulator --seconds 5 --concurrency 64``.
"""

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from PIL import Image

from kling_async.simulator import DEFAULT_API_KEY, Fixed, Simulator, SimulatorConfig

from ._common import sim_stats

VIDEO = "/kling/v1/videos/multi-image2video"


def _picture() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), "teal").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def _load(
    base_url: str, seconds: float, concurrency: int, creates_per_query: float
) -> Counter[str]:
    body = json.dumps(
        {"image_list": [{"image": _picture()}, {"image": "https://example.invalid/b.png"}]}
    ).encode()
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}", "Content-Type": "application/json"}
    counts: Counter[str] = Counter()
    task_ids: list[str] = []
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as session:

        async def worker(number: int) -> None:
            sent = 0
            while time.monotonic() < stop:
                sent += 1
                if not task_ids or (sent * creates_per_query) % 1 < creates_per_query:
                    async with session.post(VIDEO, data=body) as response:
                        answer = await response.json()
                        counts[f"create {response.status}"] += 1
                        if response.status == 200:
                            task_ids.append(answer["data"]["task_id"])
                else:
                    task_id = task_ids[(number * 7919 + sent) % len(task_ids)]
                    async with session.get(f"{VIDEO}/{task_id}") as response:
                        await response.read()
                        counts[f"query {response.status}"] += 1

        await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return counts


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _config(time_scale: float) -> SimulatorConfig:
    return SimulatorConfig(
        durations={"video": Fixed(seconds=60)}, time_scale=time_scale, video_slots=None, seed=1
    )


async def _run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    server_cpu: float | None = None
    if args.in_process:
        async with Simulator(_config(args.time_scale)) as sim:
            counts = await _load(sim.url, args.seconds, args.concurrency, args.create_share)
            tasks = sim.statistics().tasks_created
    else:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kling_async.simulator",
            "--port",
            "0",
            "--time-scale",
            str(args.time_scale),
            "--fixed-durations",
            "--video-slots",
            "1000000",
            "--seed",
            "1",
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = (await process.stdout.readline()).decode()
        url = line.rsplit(" ", 1)[1].strip()
        try:
            started = time.monotonic()
            cpu_before = _cpu_seconds(process.pid)
            counts = await _load(url, args.seconds, args.concurrency, args.create_share)
            cpu_after = _cpu_seconds(process.pid)
            if cpu_before is not None and cpu_after is not None:
                server_cpu = cpu_after - cpu_before
            tasks = (await sim_stats(url))["tasks_created"]
        finally:
            process.terminate()
            await process.wait()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    where = (
        "in-process (one loop for server and load)"
        if args.in_process
        else "server in its own process"
    )
    print(f"simulator benchmark, {where}, {args.concurrency} concurrent clients")
    print(f"  {total} requests in {elapsed:.1f} s = {total / elapsed:,.0f} requests/s sustained")
    print(f"  answers: {dict(sorted(counts.items()))}; tasks in the table: {tasks}")
    if server_cpu:
        print(
            f"  server CPU: {server_cpu:.2f} s = {server_cpu / elapsed:.0%} of one core;"
            f" {total / server_cpu:,.0f} requests per server CPU-second"
        )


def main() -> None:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--time-scale", type=float, default=0.001)
    parser.add_argument(
        "--create-share", type=float, default=0.25, help="share of requests that create"
    )
    parser.add_argument("--in-process", action="store_true")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
