"""The account's slots shared in PostgreSQL: every process of one account under one limit.

A ``SlotGate`` for the engine. Each slot a process takes is a row of
``kling_slot_leases`` owned by its lease holder; a holder's heartbeat keeps its rows
alive, and a holder that stops (SIGKILL, lost network) stops counting once its lease
ran out, except while it still owns jobs whose tasks may run (SUBMITTING, SUBMITTED):
those keep their slots until another worker adopts them, so a dead worker's running
tasks are never handed to new creates that the server would answer with 1303.

The limit and its adaptive state (AIMD) live in ``kling_slot_limits``, one row per
account and kind; an acquire locks that row, counts the live leases and inserts its
own when the sum fits. Releases ``NOTIFY`` the waiters of every process at once.
"""

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import anyio

from .._core.clock import Clock
from .._core.models import Kind
from .postgres_db import describe_url, is_postgres_url, open_pool, process_holder, split_url
from .records import JournalError

__all__ = ["PostgresSlots", "account_id", "shared_slots"]

logger = logging.getLogger("kling_async")

_CHANNEL = "kling_slots"
# A dead holder's slots stay counted while it owns jobs that may run, at most this many leases.
_GRACE_LEASES = 20


def account_id(base_url: str, secrets: Iterable[str]) -> str:
    """Name an account without storing its key: a hash of the API base URL and the key."""
    digest = hashlib.sha256("\0".join((base_url, *secrets)).encode()).hexdigest()
    return digest[:24]


class PostgresSlots:
    """Account slots leased in PostgreSQL, shared by every process that uses the same URL.

    Args:
        url: ``postgresql://...`` (``?kling_lease=S`` sets the lease, default 15 s).
        account: The account these slots belong to (see :func:`account_id`).
        initial: Starting limit per kind (used when the account has no row yet).
        maximum: Cap per kind (the account's limit when known).
        decrease: Multiplicative decrease on 1303.
        poll: Seconds between tries of a waiting acquire when no release is heard.
        holder: The lease holder id (share it with a journal of the same process).
    """

    def __init__(
        self,
        url: str,
        *,
        account: str,
        initial: Mapping[Kind, int],
        maximum: Mapping[Kind, int],
        decrease: float = 0.5,
        poll: float = 0.5,
        holder: str,
    ) -> None:
        self._url, settings = split_url(url)
        self._where = describe_url(self._url)
        self._lease = settings.lease
        self._account = account
        self._initial = dict(initial)
        self._maximum = dict(maximum)
        self._decrease = decrease
        self._poll = poll
        self.holder = holder
        self._pool: Any = None
        self._locks = {kind: asyncio.Lock() for kind in Kind}
        self._wake = {kind: asyncio.Event() for kind in Kind}
        self._held: dict[Kind, list[tuple[int, int]]] = {kind: [] for kind in Kind}
        self._limits: dict[Kind, int | None] = dict.fromkeys(Kind)
        self._blocked: dict[Kind, float] = dict.fromkeys(Kind, 0.0)
        self._ops: asyncio.Queue[tuple[str, Kind, int] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._broken: JournalError | None = None
        self.granted = 0
        self.refused = 0

    async def start(self) -> None:
        """Open the pool, register the holder and start the heartbeat and the listener.

        Raises:
            JournalError: the server cannot be reached or holds another schema.
        """
        import psycopg  # noqa: PLC0415 -- optional extra

        self._pool = await open_pool(self._url, max_size=4)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._beat(conn)
                for kind in Kind:
                    await conn.execute(
                        "INSERT INTO kling_slot_limits"
                        " (account, kind, limit_value, maximum, slow_start, epoch)"
                        " VALUES (%s, %s, %s, %s, true, 0) ON CONFLICT (account, kind) DO UPDATE"
                        " SET maximum = EXCLUDED.maximum,"
                        " limit_value = LEAST(kling_slot_limits.limit_value, EXCLUDED.maximum)",
                        (
                            self._account,
                            kind.value,
                            float(self._initial[kind]),
                            self._maximum[kind],
                        ),
                    )
        except psycopg.Error as exc:
            await self._pool.close()
            raise JournalError(f"slot coordination at {self._where}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat(), name="kling-slots-heartbeat"),
            loop.create_task(self._listen(), name="kling-slots-listen"),
            loop.create_task(self._apply(), name="kling-slots-apply"),
        ]

    async def aclose(self) -> None:
        """Give every slot back and stop. Idempotent; shielded from cancellation."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        with anyio.CancelScope(shield=True):
            self._ops.put_nowait(None)
            apply = self._tasks[2] if len(self._tasks) == 3 else None
            if apply is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(apply), 1)
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            try:
                async with pool.connection(timeout=2.0) as conn, conn.transaction():
                    await conn.execute(
                        "DELETE FROM kling_slot_leases WHERE holder = %s", (self.holder,)
                    )
                    await conn.execute("SELECT pg_notify(%s, '')", (_CHANNEL,))
            except Exception as exc:  # the leases expire anyway
                logger.warning("could not give the account slots back (they expire): %s", exc)
            await pool.close()

    # -- the SlotGate protocol -----------------------------------------------------------------

    async def acquire(self, kind: Kind, slots: int, clock: Clock, deadline: float | None) -> bool:
        """Wait until ``slots`` of ``kind`` fit under the account's shared limit."""
        async with self._locks[kind]:
            while True:
                if self._broken is not None:
                    raise self._broken
                with anyio.CancelScope(shield=True):
                    lease = await self._try(kind, slots)
                if lease is not None:
                    self._held[kind].append((lease, slots))
                    self.granted += 1
                    return True
                self.refused += 1
                self._blocked[kind] = time.monotonic()
                wait = self._poll
                if deadline is not None:
                    left = deadline - clock.now()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                event = self._wake[kind] = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)

    def release(self, kind: Kind, slots: int) -> None:
        """Give back ``slots`` (applied in order by the background task)."""
        self._ops.put_nowait(("release", kind, slots))

    def force(self, kind: Kind, slots: int) -> None:
        """Hold ``slots`` over the limit (an adopted task that runs already)."""
        self._ops.put_nowait(("force", kind, slots))

    def succeeded(self, kind: Kind) -> None:
        """A create of ``kind`` made a task: grow the limit if it held someone back lately."""
        if time.monotonic() - self._blocked[kind] < 5.0:
            self._ops.put_nowait(("up", kind, 0))

    def congested(self, kind: Kind) -> None:
        """The server said 1303: lower the shared limit for every process."""
        self._ops.put_nowait(("down", kind, 0))

    def limit(self, kind: Kind) -> int | None:
        """The shared limit of ``kind`` last read."""
        return self._limits[kind]

    # -- the database --------------------------------------------------------------------------

    async def _try(self, kind: Kind, slots: int) -> int | None:
        import psycopg  # noqa: PLC0415

        try:
            async with (
                self._pool.connection(timeout=self._lease) as conn,
                conn.transaction(),
            ):
                cursor = await conn.execute(
                    "SELECT limit_value FROM kling_slot_limits"
                    " WHERE account = %s AND kind = %s FOR UPDATE",
                    (self._account, kind.value),
                )
                limit = max(1, int((await cursor.fetchone())[0]))
                self._limits[kind] = limit
                cursor = await conn.execute(
                    "SELECT coalesce(sum(l.slots), 0) FROM kling_slot_leases l"
                    " JOIN kling_holders h ON h.holder = l.holder"
                    " WHERE l.account = %s AND l.kind = %s AND (h.expires_at > now()"
                    " OR (h.expires_at > now() - make_interval(secs => %s) AND EXISTS ("
                    "SELECT 1 FROM kling_jobs j WHERE j.owner = l.holder"
                    " AND j.state IN ('SUBMITTING', 'SUBMITTED'))))",
                    (self._account, kind.value, self._lease * _GRACE_LEASES),
                )
                used = int((await cursor.fetchone())[0])
                if used + slots > limit and used > 0:
                    return None
                cursor = await conn.execute(
                    "INSERT INTO kling_slot_leases (account, kind, holder, slots)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (self._account, kind.value, self.holder, slots),
                )
                return int((await cursor.fetchone())[0])
        except psycopg.Error as exc:
            raise JournalError(f"slot coordination at {self._where}: {exc}") from exc

    async def _apply(self) -> None:
        """Apply releases, forced slots and limit changes in order, a group per commit."""
        import psycopg  # noqa: PLC0415

        stop = False
        while not stop:
            first = await self._ops.get()
            group: list[tuple[str, Kind, int]] = []
            if first is None:
                stop = True
            else:
                group.append(first)
            while True:
                try:
                    op = self._ops.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if op is None:
                    stop = True
                else:
                    group.append(op)
            if not group:
                continue
            # Retried while the lease lives; past it the slots expire anyway.
            given_up = time.monotonic() + self._lease
            attempt = 0
            while self._broken is None:
                try:
                    await self._apply_group(group)
                    break
                except (psycopg.Error, OSError) as exc:
                    attempt += 1
                    logger.warning("slot coordination write failed (try %d): %s", attempt, exc)
                    if time.monotonic() >= given_up:
                        break
                    await asyncio.sleep(min(1.0, 0.05 * 2**attempt))

    async def _apply_group(self, group: list[tuple[str, Kind, int]]) -> None:
        notify: set[Kind] = set()
        popped: list[tuple[Kind, tuple[int, int]]] = []
        forced: list[tuple[Kind, tuple[int, int]]] = []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                for what, kind, slots in group:
                    if what == "release":
                        item = _pop(self._held[kind], slots)
                        if item is not None:
                            popped.append((kind, item))
                            await conn.execute(
                                "DELETE FROM kling_slot_leases WHERE id = %s", (item[0],)
                            )
                            notify.add(kind)
                    elif what == "force":
                        cursor = await conn.execute(
                            "INSERT INTO kling_slot_leases (account, kind, holder, slots)"
                            " VALUES (%s, %s, %s, %s) RETURNING id",
                            (self._account, kind.value, self.holder, slots),
                        )
                        forced.append((kind, (int((await cursor.fetchone())[0]), slots)))
                    elif what == "up":
                        await conn.execute(
                            "UPDATE kling_slot_limits SET limit_value = LEAST(maximum,"
                            " limit_value + CASE WHEN slow_start THEN 1 ELSE 1 / limit_value END)"
                            " WHERE account = %s AND kind = %s AND limit_value < maximum",
                            (self._account, kind.value),
                        )
                        notify.add(kind)
                    else:
                        await conn.execute(
                            "UPDATE kling_slot_limits SET slow_start = false, epoch = epoch + 1,"
                            " limit_value = GREATEST(1, limit_value * %s)"
                            " WHERE account = %s AND kind = %s",
                            (self._decrease, self._account, kind.value),
                        )
                for kind in notify:
                    await conn.execute(
                        "SELECT pg_notify(%s, %s)", (_CHANNEL, self._account + kind.value)
                    )
        except BaseException:
            for kind, item in popped:  # not committed: they are still held
                self._held[kind].append(item)
            raise
        for kind, item in forced:
            self._held[kind].append(item)

    async def _beat(self, conn: Any) -> None:
        await conn.execute(
            "INSERT INTO kling_holders (holder, expires_at)"
            " VALUES (%s, now() + make_interval(secs => %s)) ON CONFLICT (holder) DO UPDATE"
            " SET expires_at = GREATEST(kling_holders.expires_at, EXCLUDED.expires_at)",
            (self.holder, self._lease),
        )

    async def _heartbeat(self) -> None:
        """Keep the leases alive; clear out holders long dead."""
        import psycopg  # noqa: PLC0415

        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self._lease / 4)
            try:
                async with self._pool.connection(timeout=self._lease / 4) as conn:
                    async with conn.transaction():
                        await self._beat(conn)
                    async with conn.transaction():
                        await conn.execute(
                            "DELETE FROM kling_slot_leases l USING kling_holders h"
                            " WHERE l.holder = h.holder"
                            " AND h.expires_at < now() - make_interval(secs => %s)",
                            (self._lease * _GRACE_LEASES,),
                        )
                last_ok = time.monotonic()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                silent = time.monotonic() - last_ok
                logger.warning("slot heartbeat failed (%.1f s without one): %s", silent, exc)
                if silent >= self._lease:
                    self._broken = JournalError(
                        f"lost the connection to PostgreSQL at {self._where} for {silent:.0f} s;"
                        " this process's account slots expire"
                    )

    async def _listen(self) -> None:
        """Wake this process's waiters when any process gives slots back."""
        import psycopg  # noqa: PLC0415

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {_CHANNEL}")
                    async for note in conn.notifies():
                        for kind in Kind:
                            if note.payload in {"", self._account + kind.value}:
                                self._wake[kind].set()
            except (psycopg.Error, OSError) as exc:
                logger.debug("slot listener reconnects: %s", exc)
                await asyncio.sleep(self._poll)


def _pop(held: list[tuple[int, int]], slots: int) -> tuple[int, int] | None:
    """Take a lease of ``slots`` out of ``held`` (any lease if none has that size)."""
    for i, (lease, size) in enumerate(held):
        if size == slots:
            del held[i]
            return lease, size
    return held.pop(0) if held else None


def shared_slots(url: str, *, base_url: str, secrets: Iterable[str], limits: Any) -> PostgresSlots:
    """The ``SlotGate`` of ``Client(coordination=url)``: this account's slots in ``url``.

    Raises:
        ValueError: ``url`` is not a ``postgresql://`` URL.
    """
    if not is_postgres_url(url):
        raise ValueError("coordination must be a postgresql:// URL")
    return PostgresSlots(
        url,
        account=account_id(base_url, secrets),
        initial={Kind.VIDEO: limits.video_slots, Kind.IMAGE: limits.image_slots},
        maximum={Kind.VIDEO: limits.max_video_slots, Kind.IMAGE: limits.max_image_slots},
        decrease=limits.slot_decrease,
        holder=process_holder(),
    )
