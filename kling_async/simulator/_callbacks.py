"""Status-change callbacks: one scheduler task with a heap of due events, bounded retries."""

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ._clock import SimClock
from ._config import CallbackConfig
from ._stats import Counters
from ._tasks import SimTask

__all__ = ["CallbackDispatcher", "sign_webhook"]

_MAX_DELIVERIES_IN_FLIGHT = 64


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``.

    Args:
        secret: ``whsec_<base64 key>``.
        message_id: the ``webhook-id`` header.
        timestamp: the ``webhook-timestamp`` header (Unix seconds).
        body: the exact request body.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class CallbackDispatcher:
    """Posts the task object to ``callback_url`` at each status change of a task."""

    def __init__(
        self,
        config: CallbackConfig,
        clock: SimClock,
        render: Callable[[SimTask, str], dict[str, Any]],
        counters: Counters,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._clock = clock
        self._render = render
        self._counters = counters
        self._rng = rng
        self._heap: list[tuple[float, int, SimTask, str]] = []
        self._seq = 0
        self._wake = asyncio.Event()
        clock.on_advance(self._wake.set)

    def schedule(self, task: SimTask) -> None:
        """Queue every status change of ``task`` for delivery at its simulated time."""
        for due, status in task.events():
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, task, status))
        self._wake.set()

    async def run(self) -> None:
        """Deliver due events until cancelled."""
        limit = asyncio.Semaphore(_MAX_DELIVERIES_IN_FLIGHT)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as group:
            while True:
                now = self._clock.now()
                while self._heap and self._heap[0][0] <= now:
                    _, _, task, status = heapq.heappop(self._heap)
                    copies = 2 if self._rng.random() < self._config.duplicate_rate else 1
                    for _ in range(copies):
                        await limit.acquire()
                        group.create_task(self._deliver(session, task, status, limit))
                self._wake.clear()
                delay = self._clock.real_delay(self._heap[0][0] - now) if self._heap else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def _deliver(
        self, session: aiohttp.ClientSession, task: SimTask, status: str, limit: asyncio.Semaphore
    ) -> None:
        try:
            url = task.spec.callback_url
            assert url is not None
            body = json.dumps(self._render(task, status), separators=(",", ":")).encode()
            message_id = f"msg_{task.task_id}_{status}"
            delay = self._config.retry_delay
            for attempt in range(self._config.max_attempts):
                headers = {"Content-Type": "application/json"}
                if self._config.secret is not None:
                    stamp = int(time.time())
                    headers["webhook-id"] = message_id
                    headers["webhook-timestamp"] = str(stamp)
                    headers["webhook-signature"] = sign_webhook(
                        self._config.secret, message_id, stamp, body
                    )
                self._counters.callback_attempts += 1
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            self._counters.callbacks_delivered += 1
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if attempt + 1 < self._config.max_attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
            self._counters.callbacks_failed += 1
        finally:
            limit.release()
