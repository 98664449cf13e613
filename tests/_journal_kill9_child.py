"""A journaled, downloading batch run through the public API, in a process the test kills.

``python -m tests._journal_kill9_child SIM_URL API_KEY JOURNAL OUT_DIR N SCALE``: opens
(or resumes) the batch on JOURNAL, feeds jobs ``job-0`` .. ``job-{N-1}`` (videos and
images alternate) and downloads every result into OUT_DIR. It prints ``started`` once the
batch is open, ``outcome KEY STATUS FILES`` per job as it is yielded and ``done`` at the
end; SCALE is the simulator's time scale (real seconds per simulated second).
"""

import asyncio
import sys

import kling_async as ka

BATCH_ID = "kill9"
URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)


def request_for(i: int) -> ka.Request:
    """Job ``i``: videos and images (1 to 3 of them) alternate."""
    if i % 2:
        return ka.MultiImageToVideo(images=URLS, prompt=f"job {i}")
    return ka.MultiImageToImage(images=URLS, prompt=f"job {i}", n=1 + i // 2 % 3)


def client_for(url: str, api_key: str, scale: float) -> ka.Client:
    """A client scaled like the simulator's clock; its read timeout is shorter than SLOW."""
    return ka.Client(
        api_key=api_key,
        base_url=url,
        timeouts=ka.Timeouts(connect=2.0, read=0.75, total=1.5),
        limits=ka.Limits(
            requests_per_second=None,
            max_creates=32,
            max_queries=64,
            video_slots=100,
            image_slots=100,
            max_video_slots=100,
            max_image_slots=100,
        ),
        backoff=ka.Backoff(max_attempts=30, max_elapsed=3600).scaled(scale * 20),
        poll=ka.PollPolicy(expected_video=60, expected_image=15).scaled(scale),
        server_time_scale=scale,
    )


async def main(url: str, api_key: str, journal: str, out_dir: str, n: int, scale: float) -> None:
    """Run (or resume) the batch to its end, printing each outcome."""
    out = sys.stdout
    async with (
        client_for(url, api_key, scale) as kling,
        kling.batch(journal=journal, out_dir=out_dir, batch_id=BATCH_ID) as batch,
        asyncio.TaskGroup() as tg,
    ):
        out.write("started\n")
        out.flush()
        tg.create_task(batch.feed((f"job-{i}", request_for(i)) for i in range(n)))
        async for outcome in batch:
            out.write(f"outcome {outcome.key} {outcome.status.value} {len(outcome.files)}\n")
            out.flush()
    out.write("done\n")
    out.flush()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            sys.argv[3],
            sys.argv[4],
            int(sys.argv[5]),
            float(sys.argv[6]),
        )
    )
