"""The server journal: a ``JobStore`` in PostgreSQL, shared by workers on many machines.

Same rules as the SQLite journal (``RowRules``), same write-before-act invariant (every
``mark_*`` returns after its commit), same group commit (one writer task runs every
queued change in one transaction). On top: each row has an ``owner`` (a lease holder);
a holder keeps its leases alive with a heartbeat on ``kling_holders``, and rows whose
owner's lease ran out are claimed by another worker (``FOR UPDATE SKIP LOCKED``). A
change to a row owned by someone else, or a ``mark_submitting`` after this holder's
lease ran out, is refused: the create it guards is never sent by two processes.
Time for leases is the database server's ``now()``, so machines' clocks need not agree.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from .._api.wire import request_to_record
from .._core.models import Request
from .postgres_db import describe_url, open_pool, process_holder, split_url
from .records import (
    FINAL_STATES,
    ErrorRecord,
    FileRecord,
    JobRecord,
    JobState,
    JournalConflict,
    JournalError,
    JournalStatistics,
    ResumePlan,
    fingerprint,
    new_batch_id,
)
from .store import RowRules

__all__ = ["PostgresJournal"]

logger = logging.getLogger("kling_async")

_T = TypeVar("_T")
_MAX_GROUP = 1024
_LAZY_COMMIT_DELAY = 0.05
_COLUMNS = (
    "key, kind, fingerprint, record, state, external_id, task_id, attempts, result, error,"
    " files, created_at, updated_at, submitted_at, finished_at"
)
# A row in one of these states still needs work from some worker.
_OPEN_STATES = ("PENDING", "STOPPED", "SUBMITTING", "SUBMITTED")
# A download that failed for good waits for a resume with the user, not for another worker.
_NOT_FAILED_DOWNLOAD = "NOT (state = 'SUCCEEDED' AND error IS NOT NULL)"
_UPDATE = (
    "UPDATE kling_jobs SET state = %s, external_id = %s, task_id = %s,"
    " attempts = %s, result = %s, error = %s, files = %s, updated_at = %s,"
    " submitted_at = %s, finished_at = %s, owner = %s"
    " WHERE batch_id = %s AND key = %s"
)
_LEASE_ALIVE = (
    " AND EXISTS (SELECT 1 FROM kling_holders h WHERE h.holder = %s AND h.expires_at > now())"
)
_LIVE_OWNER = (
    "(owner IS NULL OR NOT EXISTS (SELECT 1 FROM kling_holders h"
    " WHERE h.holder = kling_jobs.owner AND h.expires_at > now()))"
)


def _from_db(values: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        key=values[0],
        kind=values[1],
        fingerprint=values[2],
        record=values[3],
        state=JobState(values[4]),
        external_id=values[5],
        task_id=values[6],
        attempts=values[7],
        result=values[8],
        error=None if values[9] is None else ErrorRecord.from_json(values[9]),
        files=tuple(FileRecord.from_json(f) for f in values[10]),
        created_at=values[11],
        updated_at=values[12],
        submitted_at=values[13],
        finished_at=values[14],
    )


@attrs.frozen
class _Op:
    fn: Callable[[Any], Awaitable[Any]]
    future: "asyncio.Future[Any]"
    durable: bool = True


class _Retry(Exception):  # noqa: N818 -- internal signal, not an error
    """The connection broke before the commit: run the group again on a fresh one."""


class PostgresJournal:
    """A ``JobStore`` for one batch in a PostgreSQL database (many batches per database).

    Open it with ``async with PostgresJournal.open(url, batch_id=...) as journal:``.
    Rows it adds are owned by it (leased to this process while its heartbeat runs);
    :meth:`claim` takes rows nobody alive owns; :meth:`enqueue` adds rows owned by no
    one, for workers to claim.
    """

    def __init__(
        self,
        url: str,
        *,
        lease: float = 15.0,
        readonly: bool = False,
        retry_for: float = 10.0,
        holder: str | None = None,
    ) -> None:
        """Prefer ``PostgresJournal.open``; this only prepares, nothing is opened yet."""
        if not lease > 0:
            raise ValueError("lease must be > 0 seconds")
        self._url = url
        self._where = describe_url(url)
        self._lease = lease
        self._retry_for = retry_for
        self._readonly = readonly
        self._holder = holder or process_holder()
        self._pool: Any = None
        self._batch_id = ""
        self._options: Mapping[str, Any] = {}
        self._created = False
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._closed = False
        self._broken: JournalError | None = None
        self._states: dict[JobState, int] = dict.fromkeys(JobState, 0)
        # rows this holder owns, as last written (without their request record)
        self._rows: dict[str, JobRecord] = {}
        self._writes = 0
        self._commits = 0
        self._largest_group = 0
        self._queued = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        batch_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        must_exist: bool = False,
        readonly: bool = False,
        lease: float | None = None,
        retry_for: float = 10.0,
        holder: str | None = None,
    ) -> AsyncIterator["PostgresJournal"]:
        """Open the batch ``batch_id`` in the database at ``url`` (created if new).

        Args:
            url: ``postgresql://user:password@host:port/dbname`` (any libpq URL).
            batch_id: The batch (a fresh one when None).
            options: JSON object saved with a new batch.
            must_exist: Refuse to create the batch (a worker or a resume joins one).
            readonly: Read only (``status``): no lease, no heartbeat, writes raise.
            lease: Seconds a claim lives without a heartbeat: a worker killed or cut off
                loses its jobs to another worker this long after its last heartbeat
                (default: the URL's ``?kling_lease=``, else 15).
            retry_for: Seconds a lost connection is retried before the journal gives up.
            holder: The lease holder id (default: this process's, shared with its slots).

        Raises:
            JournalError: the server cannot be reached, holds another schema version, or
                (``must_exist``/``readonly``) has no batch ``batch_id``.
        """
        url, settings = split_url(url)
        journal = cls(
            url,
            lease=settings.lease if lease is None else lease,
            readonly=readonly,
            retry_for=retry_for,
            holder=holder,
        )
        try:
            await journal._start(batch_id, options, must_exist=must_exist or readonly)
        except BaseException:
            await journal.aclose()
            raise
        try:
            yield journal
        finally:
            await journal.aclose()

    @property
    def batch_id(self) -> str:
        """The batch this journal belongs to."""
        return self._batch_id

    @property
    def options(self) -> Mapping[str, Any]:
        """Options saved when the batch was created."""
        return self._options

    @property
    def created(self) -> bool:
        """True when this open created the batch."""
        return self._created

    @property
    def holder(self) -> str:
        """This process's lease holder id (``host:pid:random``)."""
        return self._holder

    @property
    def broken(self) -> JournalError | None:
        """Why the journal gave up (lost connection, lost lease), or None."""
        return self._broken

    async def _start(
        self, batch_id: str | None, options: Mapping[str, Any] | None, *, must_exist: bool
    ) -> None:
        import psycopg  # noqa: PLC0415 -- optional extra
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        self._pool = await open_pool(self._url, connect_timeout=min(10.0, self._retry_for))
        try:
            async with self._pool.connection() as conn, conn.transaction():
                wanted = batch_id or new_batch_id()
                cursor = await conn.execute(
                    "SELECT options FROM kling_batches WHERE batch_id = %s", (wanted,)
                )
                found = await cursor.fetchone()
                if found is None and must_exist:
                    raise JournalConflict(f"no batch {wanted!r} in the journal at {self._where}")
                if found is None:
                    self._options = dict(options or {})
                    await conn.execute(
                        "INSERT INTO kling_batches (batch_id, created_at, options)"
                        " VALUES (%s, %s, %s) ON CONFLICT (batch_id) DO NOTHING",
                        (wanted, time.time(), Jsonb(self._options)),
                    )
                    self._created = True
                else:
                    self._options = found[0]
                self._batch_id = wanted
                cursor = await conn.execute(
                    "SELECT state, count(*) FROM kling_jobs WHERE batch_id = %s GROUP BY state",
                    (wanted,),
                )
                for state, count in await cursor.fetchall():
                    self._states[JobState(state)] = count
                if not self._readonly:
                    await self._beat(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        if not self._readonly:
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_loop(), name="kling-pg-journal")
            self._heart = loop.create_task(self._heartbeat(), name="kling-pg-heartbeat")

    def _error(self, exc: BaseException) -> JournalError:
        error = JournalError(f"journal at {self._where}: {exc}")
        error.__cause__ = exc
        return error

    # -- the heartbeat ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Keep this holder's leases alive; give up (and break) when the lease lapsed."""
        import psycopg  # noqa: PLC0415

        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self._lease / 4)
            try:
                async with self._pool.connection(timeout=self._lease / 4) as conn:
                    await self._beat(conn)
                    await conn.commit()
                last_ok = time.monotonic()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                silent = time.monotonic() - last_ok
                logger.warning("journal heartbeat failed (%.1f s without one): %s", silent, exc)
                if silent >= min(self._lease, self._retry_for):
                    self._break(
                        JournalError(
                            f"lost the connection to PostgreSQL at {self._where} for "
                            f"{silent:.0f} s; this process's leases expire and another "
                            "worker adopts its jobs (nothing is lost)"
                        )
                    )
                    return

    async def _beat(self, conn: Any) -> None:
        # shared with the process's slot leases: the later expiry wins
        await conn.execute(
            "INSERT INTO kling_holders (holder, expires_at)"
            " VALUES (%s, now() + make_interval(secs => %s)) ON CONFLICT (holder) DO UPDATE"
            " SET expires_at = GREATEST(kling_holders.expires_at, EXCLUDED.expires_at)",
            (self._holder, self._lease),
        )

    def _break(self, error: JournalError) -> None:
        if self._broken is None:
            self._broken = error
            logger.error("%s", error)
        self._queue.put_nowait(None)

    # -- the writer ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[[Any], Awaitable[_T]], *, durable: bool = True) -> _T:
        if self._broken is not None:
            raise self._broken
        if self._readonly:
            raise JournalError(f"journal at {self._where} is open read-only")
        if self._closed or self._writer is None or self._writer.done():
            raise JournalError(f"journal at {self._where} is closed")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._queued += 1
        self._queue.put_nowait(_Op(fn, future, durable))
        return await future

    async def _write_loop(self) -> None:  # noqa: PLR0915 -- one state machine, kept whole
        """Run queued ops in transactions; commit in groups (see the SQLite journal)."""
        import psycopg  # noqa: PLC0415

        conn: Any = None
        started = 0.0
        txn_ops = 0
        waiting: list[tuple[_Op, tuple[bool, Any]]] = []
        lazy: list[tuple[_Op, tuple[bool, Any]]] = []
        group: list[_Op] = []
        stop = False
        loop = asyncio.get_running_loop()
        try:
            while not stop:
                if conn is not None:
                    timeout = max(0.0, started + _LAZY_COMMIT_DELAY - loop.time())
                    try:
                        first = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        first = _IDLE
                else:
                    first = await self._queue.get()
                group = []
                if first is None:
                    stop = True
                elif first is not _IDLE:
                    group.append(first)
                while not stop and len(group) + txn_ops < _MAX_GROUP:
                    try:
                        op = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if op is None:
                        stop = True
                    else:
                        group.append(op)
                if self._broken is not None:
                    break
                fresh = conn is None
                deadline = loop.time() + self._retry_for
                while True:
                    try:
                        if conn is None:
                            left = max(0.1, deadline - loop.time())
                            conn = await self._pool.getconn(timeout=left)
                            started = loop.time()
                        outcomes = await self._run_group(conn, group)
                        break
                    except psycopg.OperationalError as exc:
                        await self._drop(conn)
                        conn = None
                        if not fresh or loop.time() >= deadline:
                            # answered lazy writes were in the lost transaction: give up
                            raise self._lost(exc) from exc
                        logger.warning("journal connection lost, retrying: %s", exc)
                        await asyncio.sleep(0.2)
                    except psycopg.Error as exc:
                        await self._rollback(conn)
                        conn = None
                        if txn_ops and lazy:
                            raise self._error(exc) from exc
                        self._answer([(op, (False, self._error(exc))) for op in group])
                        outcomes = []
                        group = []
                        break
                txn_ops += len(group)
                for op, outcome in zip(group, outcomes, strict=True):
                    (waiting if op.durable else lazy).append((op, outcome))
                self._answer([item for item in lazy if not item[0].future.done()])
                if conn is not None and (
                    stop
                    or waiting
                    or txn_ops >= _MAX_GROUP
                    or loop.time() - started >= _LAZY_COMMIT_DELAY
                ):
                    try:
                        await conn.commit()
                    except psycopg.Error as exc:
                        raise self._error(exc) from exc
                    await self._pool.putconn(conn)
                    conn = None
                    self._commits += 1
                    self._largest_group = max(self._largest_group, txn_ops)
                    txn_ops = 0
                    lazy = []
                    done, waiting = waiting, []
                    self._answer(done)
        except JournalError as exc:
            self._broken = self._broken or exc
        except Exception as exc:  # a bug or an unexpected driver error: refuse all work
            self._broken = self._broken or self._error(exc)
            raise
        finally:
            if conn is not None:
                await self._rollback(conn)
            error = self._broken or JournalError(f"journal at {self._where} is closed")
            self._answer([(op, (False, error)) for op, _ in waiting])
            # the group being run when the connection was lost for good
            self._answer([(op, (False, error)) for op in group if not op.future.done()])
            while not self._queue.empty():
                op = self._queue.get_nowait()
                if op is not None:
                    self._answer([(op, (False, error))])

    async def _run_group(self, conn: Any, group: list[_Op]) -> list[tuple[bool, Any]]:
        import psycopg  # noqa: PLC0415

        outcomes: list[tuple[bool, Any]] = []
        for op in group:
            try:
                outcomes.append((True, await op.fn(conn)))
            except psycopg.Error:
                raise
            except Exception as exc:  # handed to its caller: ops raise before writing
                outcomes.append((False, exc))
        return outcomes

    async def _drop(self, conn: Any) -> None:
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.close()
        with contextlib.suppress(Exception):
            await self._pool.putconn(conn)

    async def _rollback(self, conn: Any) -> None:
        import psycopg  # noqa: PLC0415

        try:
            await conn.rollback()
            await self._pool.putconn(conn)
        except (psycopg.Error, OSError):
            await self._drop(conn)

    def _answer(self, items: list[tuple[_Op, tuple[bool, Any]]]) -> None:
        for op, (ok, value) in items:
            self._queued -= 1
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    # -- operations (run by the writer, inside its transaction) --------------------------------

    async def _select(self, conn: Any, key: str, *, lock: bool = True) -> tuple[JobRecord, Any]:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS}, owner FROM kling_jobs"  # noqa: S608 -- constant columns
            f" WHERE batch_id = %s AND key = %s{' FOR UPDATE' if lock else ''}",
            (self._batch_id, key),
        )
        found = await cursor.fetchone()
        if found is None:
            raise KeyError(key)
        return _from_db(found), found[15]

    async def _insert(self, conn: Any, row: JobRecord, owner: str | None) -> None:
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        await conn.execute(
            f"INSERT INTO kling_jobs (batch_id, {_COLUMNS}, owner)"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                self._batch_id,
                row.key,
                row.kind,
                row.fingerprint,
                Jsonb(row.record),
                row.state.value,
                row.external_id,
                row.task_id,
                row.attempts,
                None if row.result is None else Jsonb(row.result),
                None if row.error is None else Jsonb(row.error.to_json()),
                Jsonb([f.to_json() for f in row.files]),
                row.created_at,
                row.updated_at,
                row.submitted_at,
                row.finished_at,
                owner,
            ),
        )
        self._count(None, row)

    def _count(self, old: JobRecord | None, new: JobRecord) -> None:
        if old is not None:
            self._states[old.state] -= 1
        self._states[new.state] += 1
        self._writes += 1

    def _change(
        self, key: str, move: Callable[[JobRecord], JobRecord], *, fenced: bool = False
    ) -> Callable[[Any], Awaitable[JobRecord]]:
        async def op(conn: Any) -> JobRecord:
            from psycopg.types.json import Jsonb  # noqa: PLC0415

            # A row this holder owns changes only through it: its last state is known here,
            # so the change is one UPDATE, fenced by the owner (and, for SUBMITTING, by a
            # live lease); zero rows updated means someone else took it.
            old = self._rows.get(key)
            mine = " AND owner = %s"
            if old is None:
                mine = " AND (owner IS NULL OR owner = %s)"  # locked by the SELECT
                old, owner = await self._select(conn, key)
                if owner is not None and owner != self._holder:
                    raise JournalError(
                        f"job {key!r} is owned by {owner} now (this process's lease ran out)"
                    )
            row = move(old)
            done = row.state in FINAL_STATES
            query = _UPDATE + mine + (_LEASE_ALIVE if fenced else "")
            cursor = await conn.execute(
                query,
                (
                    row.state.value,
                    row.external_id,
                    row.task_id,
                    row.attempts,
                    None if row.result is None else Jsonb(row.result),
                    None if row.error is None else Jsonb(row.error.to_json()),
                    Jsonb([f.to_json() for f in row.files]),
                    row.updated_at,
                    row.submitted_at,
                    row.finished_at,
                    None if done else self._holder,
                    self._batch_id,
                    key,
                    self._holder,
                    *((self._holder,) if fenced else ()),
                ),
            )
            if cursor.rowcount != 1:
                self._rows.pop(key, None)
                raise await self._refused(conn, key)
            if done:
                self._rows.pop(key, None)
            else:
                self._rows[key] = attrs.evolve(row, record={})
            self._count(old, row)
            return row

        return op

    async def _refused(self, conn: Any, key: str) -> Exception:
        """Say why a fenced change updated nothing."""
        try:
            _, owner = await self._select(conn, key, lock=False)
        except KeyError:
            return KeyError(key)
        if owner is not None and owner != self._holder:
            return JournalError(
                f"job {key!r} is owned by {owner} now (this process's lease ran out)"
            )
        return JournalError(f"job {key!r}: this process's lease ran out; the create is not sent")

    async def add(
        self,
        key: str,
        kind: str,
        fingerprint: str,
        record: Mapping[str, Any],
        *,
        durable: bool = True,
    ) -> JobRecord | None:
        """Add a PENDING job owned by this process; see ``JobStore.add``."""
        record = dict(record)

        async def op(conn: Any) -> JobRecord | None:
            try:
                existing, _ = await self._select(conn, key, lock=False)
            except KeyError:
                existing = None
            new, known = RowRules.add(existing, key, kind, fingerprint, record)
            if new is not None:
                await self._insert(conn, new, self._holder)
                self._rows[key] = attrs.evolve(new, record={})
            return known

        return await self._call(op, durable=durable)

    async def enqueue(self, jobs: Iterable[tuple[str, str, str, Mapping[str, Any]]]) -> int:
        """Add PENDING jobs owned by nobody, for workers to claim; one commit.

        Args:
            jobs: ``(key, kind, fingerprint, record)`` per job.

        Returns:
            How many were new (a known key with the same fingerprint is skipped).

        Raises:
            JournalConflict: a key is known with another request (nothing is added).
        """
        jobs = list(jobs)

        async def op(conn: Any) -> int:
            cursor = await conn.execute(
                "SELECT key, fingerprint FROM kling_jobs WHERE batch_id = %s AND key = ANY(%s)",
                (self._batch_id, [key for key, _, _, _ in jobs]),
            )
            known = dict(await cursor.fetchall())
            added = 0
            for key, kind, print_, record in jobs:
                if key in known:
                    if known[key] != print_:
                        raise JournalConflict(
                            f"job {key!r} is already in batch {self._batch_id!r} with a "
                            "different request",
                            key=key,
                        )
                    continue
                new, _ = RowRules.add(None, key, kind, print_, record)
                assert new is not None
                known[key] = print_
                await self._insert(conn, new, None)
                added += 1
            return added

        # A conflict must roll back the rows inserted before it: run in a savepoint.
        async def atomic(conn: Any) -> int:
            async with conn.transaction():
                return await op(conn)

        return await self._call(atomic)

    async def enqueue_requests(self, jobs: Iterable[tuple[str, Request]]) -> int:
        """Add ``(key, request)`` jobs for workers to claim (see :meth:`enqueue`).

        Raises:
            JournalConflict: a key is known with another request (nothing is added).
        """
        rows = []
        for key, request in jobs:
            record = request_to_record(request)
            rows.append((key, request.kind.value, fingerprint(record), record))
        return await self.enqueue(rows)

    async def mark_submitting(self, key: str, external_id: str) -> JobRecord:
        """See ``JobStore.mark_submitting``; refused once this process's lease ran out."""
        return await self._call(
            self._change(key, lambda row: RowRules.submitting(row, external_id), fenced=True)
        )

    async def mark_submitted(self, key: str, task_id: str) -> JobRecord:
        """See ``JobStore.mark_submitted``."""
        return await self._call(self._change(key, lambda row: RowRules.submitted(row, task_id)))

    async def mark_terminal(
        self,
        key: str,
        state: JobState,
        *,
        result: Mapping[str, Any] | None = None,
        error: ErrorRecord | None = None,
    ) -> JobRecord:
        """See ``JobStore.mark_terminal``."""
        return await self._call(
            self._change(key, lambda row: RowRules.terminal(row, state, result, error))
        )

    async def mark_downloaded(self, key: str, files: Iterable[FileRecord]) -> JobRecord:
        """See ``JobStore.mark_downloaded``."""
        files = tuple(files)
        return await self._call(self._change(key, lambda row: RowRules.downloaded(row, files)))

    async def mark_download_failed(self, key: str, error: ErrorRecord) -> JobRecord:
        """See ``JobStore.mark_download_failed``."""
        return await self._call(self._change(key, lambda row: RowRules.download_failed(row, error)))

    async def get(self, key: str) -> JobRecord | None:
        """Return the row of ``key``, or None (after every write queued before)."""

        async def op(conn: Any) -> JobRecord | None:
            try:
                return (await self._select(conn, key, lock=False))[0]
            except KeyError:
                return None

        if self._readonly:
            return await self._read(op)
        return await self._call(op)

    async def _read(self, fn: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run a read on a pooled connection; a lost connection is retried for ``retry_for``."""
        import psycopg  # noqa: PLC0415

        if self._broken is not None:
            raise self._broken
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                async with self._pool.connection(timeout=self._retry_for) as conn:
                    return await fn(conn)
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise self._lost(exc) from exc
                logger.warning("journal read failed, retrying: %s", exc)
                await asyncio.sleep(0.2)
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    def _lost(self, exc: BaseException) -> JournalError:
        error = JournalError(
            f"lost the connection to PostgreSQL at {self._where} ({exc}); this process's "
            "leases expire and another worker adopts its jobs (nothing is lost)"
        )
        error.__cause__ = exc
        return error

    async def resume(self) -> ResumePlan:
        """Return every row of the batch in insertion order (no claim is taken)."""

        async def op(conn: Any) -> ResumePlan:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM kling_jobs WHERE batch_id = %s ORDER BY seq",  # noqa: S608
                (self._batch_id,),
            )
            return ResumePlan.from_rows(_from_db(values) for values in await cursor.fetchall())

        if self._readonly:
            return await self._read(op)
        return await self._call(op)

    async def claim(self, limit: int, *, succeeded: bool = False) -> list[JobRecord]:
        """Take up to ``limit`` rows that need work and that no live holder owns.

        Running tasks (SUBMITTED) come first, then creates that may have been sent
        (SUBMITTING), then the rest in insertion order. ``succeeded``: also take
        SUCCEEDED rows not yet downloaded (a worker with an out_dir downloads them).
        """
        states = [*_OPEN_STATES, "SUCCEEDED"] if succeeded else list(_OPEN_STATES)

        async def op(conn: Any) -> list[JobRecord]:
            cursor = await conn.execute(
                f"WITH c AS (SELECT key FROM kling_jobs WHERE batch_id = %s"  # noqa: S608
                f" AND state = ANY(%s) AND {_LIVE_OWNER} AND {_NOT_FAILED_DOWNLOAD}"
                # never this holder's own rows: after a late heartbeat its lease may read
                # as lapsed, but those jobs are already in its batch
                " AND owner IS DISTINCT FROM %s"
                " ORDER BY CASE state WHEN 'SUBMITTED' THEN 0 WHEN 'SUBMITTING' THEN 1"
                " ELSE 2 END, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE kling_jobs j SET owner = %s FROM c"
                f" WHERE j.batch_id = %s AND j.key = c.key RETURNING {_prefixed('j.')}, j.seq",
                (self._batch_id, states, self._holder, limit, self._holder, self._batch_id),
            )
            found = await cursor.fetchall()
            found.sort(key=lambda values: values[-1])
            rows = [_from_db(values) for values in found]
            for row in rows:
                self._rows[row.key] = attrs.evolve(row, record={})
            return rows

        return await self._call(op)

    async def unclaimed(self, *, succeeded: bool = False) -> int:
        """Rows that need work and are not this holder's (others' or nobody's)."""
        states = [*_OPEN_STATES, "SUCCEEDED"] if succeeded else list(_OPEN_STATES)

        async def op(conn: Any) -> int:
            cursor = await conn.execute(
                "SELECT count(*) FROM kling_jobs WHERE batch_id = %s AND state = ANY(%s)"  # noqa: S608
                f" AND owner IS DISTINCT FROM %s AND {_NOT_FAILED_DOWNLOAD}",
                (self._batch_id, states, self._holder),
            )
            return int((await cursor.fetchone())[0])

        return await self._read(op)

    async def counts(self) -> dict[JobState, int]:
        """Count the batch's rows per state, as the database holds them now."""

        async def op(conn: Any) -> dict[JobState, int]:
            cursor = await conn.execute(
                "SELECT state, count(*) FROM kling_jobs WHERE batch_id = %s GROUP BY state",
                (self._batch_id,),
            )
            counts = dict.fromkeys(JobState, 0)
            for state, count in await cursor.fetchall():
                counts[JobState(state)] = int(count)
            return counts

        return await self._read(op)

    async def flush(self) -> None:
        """Return when every change queued before this call is committed."""

        async def op(conn: Any) -> None:
            del conn

        await self._call(op)

    def statistics(self) -> JournalStatistics:
        """Return the journal's counters (this process's view of the batch)."""
        return JournalStatistics(
            jobs=sum(self._states.values()),
            states=dict(self._states),
            writes=self._writes,
            commits=self._commits,
            largest_group=self._largest_group,
            queued=self._queued,
        )

    async def aclose(self) -> None:
        """Commit what is queued, hand back this holder's unfinished rows, close the pool.

        Safe to call twice; shielded from cancellation.
        """
        if self._closed:
            return
        self._closed = True
        await asyncio.shield(self._close())

    async def _close(self) -> None:
        import psycopg  # noqa: PLC0415

        if self._heart is not None:
            self._heart.cancel()
            with contextlib.suppress(BaseException):
                await self._heart
        if self._writer is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(BaseException):
                await self._writer
        if self._pool is None:
            return
        if not self._readonly and self._broken is None:
            try:
                async with self._pool.connection(timeout=2.0) as conn, conn.transaction():
                    # a clean exit hands its jobs over at once, not after the lease (the
                    # holder row stays: the process's slot leases may still use it). Only
                    # the rows this journal holds: the holder is the process's, and another
                    # batch of this process may be working on the same batch's other rows.
                    await conn.execute(
                        "UPDATE kling_jobs SET owner = NULL WHERE batch_id = %s AND owner = %s"
                        " AND key = ANY(%s)",
                        (self._batch_id, self._holder, list(self._rows)),
                    )
            except (psycopg.Error, OSError, TimeoutError) as exc:
                logger.warning("could not hand back the leases (they expire): %s", exc)
        await self._pool.close()


_IDLE: Any = object()


def _prefixed(prefix: str) -> str:
    return ", ".join(f"{prefix}{name.strip()}" for name in _COLUMNS.split(","))
