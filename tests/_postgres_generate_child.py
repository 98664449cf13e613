"""A process calling ``generate()`` in a loop through a shared account limit.

``python -m tests._postgres_generate_child SIM_URL API_KEY PG_URL N PARALLEL SCALE [shared]``:
N calls, PARALLEL at a time, each allowed the whole account limit; with ``shared`` the
client coordinates its slots with every other process through PG_URL. Prints ``done``.
"""

import asyncio
import sys

import kling_async as ka

URLS = (
    ka.Image.from_url("https://example.com/a.png"),
    ka.Image.from_url("https://example.com/b.png"),
)
LIMIT = 4


def request_for(i: int) -> ka.Request:
    """Videos and one-image jobs alternate."""
    if i % 2:
        return ka.MultiImageToVideo(images=URLS, prompt=f"job {i}")
    return ka.MultiImageToImage(images=URLS, n=1)


async def main(
    url: str, key: str, pg: str, n: int, parallel: int, scale: float, shared: bool
) -> None:
    """Run the calls and report."""
    limits = ka.Limits(
        requests_per_second=None,
        video_slots=LIMIT,
        image_slots=LIMIT,
        max_video_slots=LIMIT,
        max_image_slots=LIMIT,
    )
    client = ka.Client(
        api_key=key,
        base_url=url,
        limits=limits,
        timeouts=ka.Timeouts(connect=2.0, read=2.0, total=5.0),
        backoff=ka.Backoff(max_elapsed=3600).scaled(scale * 20),
        poll=ka.PollPolicy(expected_video=60, expected_image=15).scaled(scale),
        server_time_scale=scale,
        coordination=pg if shared else None,
    )
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            await client.generate(request_for(i))

    async with client:
        await asyncio.gather(*(one(i) for i in range(n)))
    sys.stdout.write("done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), int(a[4]), float(a[5]), a[6:7] == ["shared"]))
