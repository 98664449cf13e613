"""A journaled, downloading batch without a fixed batch id, in a process the test kills.

``python -m tests._hostile_journal_child SIM_URL API_KEY JOURNAL OUT_DIR N``: runs (or
resumes) the batch on JOURNAL with jobs ``k0`` .. ``k{N-1}`` (videos), prints
``started`` once the batch is open, ``outcome KEY STATUS`` per job and ``done``.
"""

import asyncio
import sys

import kling_async as ka

SCALE = 0.002
URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)


def jobs(n: int) -> list[tuple[str, ka.Request]]:
    """The jobs of the run: ``n`` videos."""
    return [(f"k{i}", ka.MultiImageToVideo(images=URLS, prompt=f"job {i}")) for i in range(n)]


def client_for(url: str, api_key: str) -> ka.Client:
    """A client scaled like the simulator's clock."""
    return ka.Client(
        api_key=api_key,
        base_url=url,
        limits=ka.Limits(requests_per_second=None, video_slots=8, max_video_slots=8),
        backoff=ka.Backoff(max_elapsed=3600).scaled(SCALE * 20),
        poll=ka.PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
        server_time_scale=SCALE,
    )


async def main(url: str, api_key: str, journal: str, out_dir: str, n: int) -> None:
    """Run (or resume) the batch to its end, printing each outcome."""
    out = sys.stdout
    async with (
        client_for(url, api_key) as kling,
        kling.batch(journal=journal, out_dir=out_dir) as batch,
        asyncio.TaskGroup() as tg,
    ):
        out.write("started\n")
        out.flush()
        tg.create_task(batch.feed(jobs(n)))
        async for outcome in batch:
            out.write(f"outcome {outcome.key} {outcome.status.value}\n")
            out.flush()
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
