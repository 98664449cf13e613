"""A batch that writes a journal through ``JournalBatchStore``, run in a subprocess to be killed.

``python -m tests._journal_batch_child SIM_URL API_KEY JOURNAL N``: runs N jobs against the
simulator at SIM_URL; prints ``outcome KEY STATUS`` as each job ends.
"""

import asyncio
import sys

from kling_async import (
    Backoff,
    Client,
    Image,
    Limits,
    MultiImageToImage,
    MultiImageToVideo,
    PollPolicy,
    Request,
    SqliteJournal,
    Timeouts,
)
from kling_async._durable.bridge import JournalBatchStore

SCALE = 0.002
URLS = (Image.from_url("https://example.com/a.png"), Image.from_url("https://example.com/b.png"))


def request_for(i: int) -> Request:
    """Job ``i``: videos and images alternate."""
    if i % 2:
        return MultiImageToVideo(images=URLS, prompt=f"job {i}")
    return MultiImageToImage(images=URLS, n=1 + i % 3)


def client_for(url: str, api_key: str) -> Client:
    """A client scaled like the simulator's time."""
    return Client(
        api_key=api_key,
        base_url=url,
        timeouts=Timeouts(connect=1.0, read=0.5, total=2.0),
        limits=Limits(requests_per_second=None, max_creates=8, video_slots=20, image_slots=20),
        backoff=Backoff(max_elapsed=3600).scaled(SCALE * 20),
        poll=PollPolicy(expected_video=60, expected_image=15).scaled(SCALE),
        server_time_scale=SCALE,
    )


async def main(url: str, api_key: str, journal_path: str, n: int) -> None:
    """Run the batch, printing each outcome."""
    async with (
        client_for(url, api_key) as client,
        SqliteJournal.open(journal_path, batch_id="kill") as journal,
        client.batch(store=JournalBatchStore(journal), batch_id=journal.batch_id) as batch,
    ):
        await batch.feed((f"job-{i}", request_for(i)) for i in range(n))
        async for outcome in batch:
            sys.stdout.write(f"outcome {outcome.key} {outcome.status.value}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
