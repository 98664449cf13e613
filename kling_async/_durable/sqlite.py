"""The embedded journal: a real SQLite file, WAL mode, one writer thread, group commit."""

import asyncio
import contextlib
import json
import os
import pathlib
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
import attrs

try:
    import fcntl
except ImportError:  # pragma: no cover -- Windows
    fcntl = None  # type: ignore[assignment]

from .anchor import BatchAnchor, anchor_path, new_anchor, read_anchor, write_anchor
from .records import (
    ErrorRecord,
    FileRecord,
    JobRecord,
    JobState,
    JournalConflict,
    JournalError,
    JournalLost,
    JournalStatistics,
    ResumePlan,
    new_batch_id,
)
from .store import RowRules

__all__ = [
    "SqliteJournal",
]


_T = TypeVar("_T")
_SCHEMA_VERSION = 1
# Most state changes that arrive while one commit is on disk go into the next one; the
# cap keeps a single transaction (and the latency of the first caller in it) bounded.
_MAX_GROUP = 2048
# A transaction holding only lazy writes (``add(..., durable=False)``: nobody waits for
# their commit) stays open this long for more of them, unless a durable write, a flush or
# the close commits it sooner: feeding 2,000 jobs one by one costs a few commits, not 2,000.
_LAZY_COMMIT_DELAY = 0.05


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    batch_id TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    external_id TEXT,
    task_id TEXT,
    attempts INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    files TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submitted_at REAL,
    finished_at REAL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS runtime_model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    model TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
_COLUMNS = (
    "key, kind, fingerprint, record, state, external_id, task_id, attempts, result, error,"
    " files, created_at, updated_at, submitted_at, finished_at"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _row_values(row: JobRecord) -> tuple[Any, ...]:
    return (
        row.key,
        row.kind,
        row.fingerprint,
        _dumps(row.record),
        row.state.value,
        row.external_id,
        row.task_id,
        row.attempts,
        None if row.result is None else _dumps(row.result),
        None if row.error is None else _dumps(row.error.to_json()),
        _dumps([f.to_json() for f in row.files]),
        row.created_at,
        row.updated_at,
        row.submitted_at,
        row.finished_at,
    )


def _from_db(values: tuple[Any, ...]) -> JobRecord:
    (key, kind, print_, record, state, external_id, task_id, attempts, result, error, files) = (
        values[:11]
    )
    return JobRecord(
        key=key,
        kind=kind,
        fingerprint=print_,
        record=json.loads(record),
        state=JobState(state),
        external_id=external_id,
        task_id=task_id,
        attempts=attempts,
        result=None if result is None else json.loads(result),
        error=None if error is None else ErrorRecord.from_json(json.loads(error)),
        files=tuple(FileRecord.from_json(f) for f in json.loads(files)),
        created_at=values[11],
        updated_at=values[12],
        submitted_at=values[13],
        finished_at=values[14],
    )


@attrs.frozen
class _Op:
    """One operation for the writer thread, and the future its caller awaits."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    durable: bool = True
    """Answer after the commit holding it (else as soon as it ran, the commit comes later)."""


class SqliteJournal:
    """A ``JobStore`` in a SQLite file: the embedded default journal of a batch.

    One writer thread owns the only connection. Every operation is queued to it; the
    thread takes all queued operations, runs them in one transaction and commits once,
    then wakes their callers: under load, thousands of state changes share one fsync,
    and no caller proceeds before its change is on disk. A lazy ``add(...,
    durable=False)`` is answered as soon as it ran; its transaction stays open for more
    (at most ``_LAZY_COMMIT_DELAY`` seconds) and is committed by the next durable write,
    so a feed adding jobs one by one shares a few commits. The event loop never touches
    the file.

    Open it with ``async with SqliteJournal.open(path) as journal:``.
    """

    def __init__(
        self,
        path: "str | os.PathLike[str]",
        *,
        synchronous: str = "FULL",
        readonly: bool = False,
    ) -> None:
        """Prefer ``SqliteJournal.open``; this only prepares, nothing is opened yet."""
        if synchronous not in {"NORMAL", "FULL"}:
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self._path = os.fspath(path)
        self._synchronous = synchronous
        self._readonly = readonly
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch_id = ""
        self._options: Mapping[str, Any] = {}
        self._created = False
        self._recovering = False
        self._anchor: BatchAnchor | None = None
        self._anchor_written = False  # this session marked the anchor live
        self._closed = False
        self._seq = 0
        self._stats_lock = threading.Lock()
        self._states: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self._writes = 0
        self._commits = 0
        self._largest_group = 0
        self._pending_ops = 0
        self._broken: JournalError | None = None
        # writer thread only: the open transaction and the durable ops awaiting its commit
        self._in_txn = False
        self._txn_started = 0.0
        self._txn_ops = 0
        self._txn_lazy = 0
        self._stopping = False
        self._waiting: list[tuple[asyncio.Future[Any], tuple[bool, Any]]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: "str | os.PathLike[str]",
        *,
        batch_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        synchronous: str = "FULL",
        readonly: bool = False,
        recover: bool = False,
    ) -> AsyncIterator["SqliteJournal"]:
        """Open (or create) the journal at ``path`` for the life of the block.

        Args:
            path: the SQLite file; created with its batch meta row if missing.
            batch_id: the batch id for a new journal (a fresh one if None); for an existing
                journal it must be None or equal to the stored one.
            options: JSON object saved with a new journal (read back as ``options``).
            synchronous: ``"FULL"`` (default) fsyncs the WAL at every commit, so a commit
                survives power loss, not only a crash of the process: a SUBMITTING row
                guards a billed create, and group commit shares each fsync among many
                changes, so durability costs little per job. ``"NORMAL"`` survives
                ``kill -9`` but a power loss may roll back the last commits.
            readonly: read an existing journal, even while a run writes it (``status``);
                no lock is taken and every write raises JournalError.
            recover: open a journal that lost rows it once held (see ``JournalLost``)
                with the batch id of its anchor, ``recovering`` set: the caller must
                look each job it does not hold as sent or ended up by external id
                before any create. A batch opens its journal so.

        The batch id is also kept beside the journal, in ``<path>.batch.json`` (see
        ``anchor``), written atomically and fsynced before ``open`` returns, so it is
        durable before the first create and survives the loss of the journal.

        Raises:
            JournalConflict: the journal belongs to another batch id, or to another
                batch than its anchor (a foreign journal).
            JournalLost: the journal is empty, missing or lost its last commits while
                its anchor says a run wrote it (and ``recover`` is False).
            JournalError: the file is not a journal of this version or cannot be opened.
        """
        journal = cls(path, synchronous=synchronous, readonly=readonly)
        await journal._start(batch_id, options, recover=recover)
        try:
            yield journal
        finally:
            await journal.aclose()

    @property
    def path(self) -> str:
        """The journal file."""
        return self._path

    @property
    def batch_id(self) -> str:
        """The batch this journal belongs to."""
        return self._batch_id

    @property
    def options(self) -> Mapping[str, Any]:
        """Options saved when the journal was created."""
        return self._options

    @property
    def created(self) -> bool:
        """True when this open created the journal (nothing to resume)."""
        return self._created

    @property
    def recovering(self) -> bool:
        """True when the journal lost rows (opened with ``recover``): jobs it does not hold
        as sent or ended may have been created already, look them up before creating."""
        return self._recovering

    async def _start(
        self, batch_id: str | None, options: Mapping[str, Any] | None, *, recover: bool
    ) -> None:
        self._loop = asyncio.get_running_loop()
        anchored = self._path != ":memory:"
        if anchored:
            self._anchor = await anyio.to_thread.run_sync(read_anchor, self._path)
            self._check_anchor(batch_id)
            lost = await anyio.to_thread.run_sync(self._lost_reason)
            if lost is not None:
                self._lose(lost, recover=recover)
            if self._anchor is not None and batch_id is None:
                batch_id = self._anchor.batch_id
        self._thread = threading.Thread(
            target=self._run, name=f"kling-journal:{os.path.basename(self._path)}", daemon=True
        )
        ready: asyncio.Future[None] = self._loop.create_future()
        self._pending_ops += 1
        self._queue.put(_Op(lambda conn: None, ready))
        self._thread.start()
        try:
            await ready
            await self._call(lambda conn: self._load_meta(conn, batch_id, options, recover))
            if anchored and not self._readonly:
                # durable before open() returns, so before the first create is sent
                anchor = new_anchor(self._batch_id)
                if self._anchor is not None:
                    anchor = attrs.evolve(anchor, created_at=self._anchor.created_at)
                await anyio.to_thread.run_sync(write_anchor, self._path, anchor)
                self._anchor, self._anchor_written = anchor, True
        except BaseException:
            await self.aclose()
            raise

    def _check_anchor(self, batch_id: str | None) -> None:
        anchor = self._anchor
        if anchor is not None and batch_id is not None and batch_id != anchor.batch_id:
            raise JournalConflict(
                f"journal {self._path!r} is anchored to batch {anchor.batch_id!r}"
                f" ({anchor_path(self._path).name}), not {batch_id!r}"
            )

    def _lost_reason(self) -> str | None:
        """Why the journal no longer holds what its anchor says was written (blocking)."""
        if self._anchor is None:
            return None
        try:
            size = os.stat(self._path).st_size
        except FileNotFoundError:
            return "is missing"
        if size == 0:
            return "is empty"
        if self._anchor.live and not self._readonly and not os.path.exists(f"{self._path}-wal"):
            # a session that dies leaves its -wal file: without it, its last commits are gone
            return "lost its write-ahead log (-wal) after a crash, and with it the last changes"
        return None

    def _lose(self, reason: str, *, recover: bool) -> None:
        """Refuse a journal that lost rows, or (``recover``) go on, every job to look up."""
        assert self._anchor is not None
        if recover and not self._readonly:
            self._recovering = True
            return
        raise JournalLost(
            f"journal {self._path!r} {reason}, but {anchor_path(self._path).name} beside it"
            f" says batch {self._anchor.batch_id!r} ran there: its jobs may already be paid"
            " for. Resuming the run looks every job up on the server by its external id"
            " before sending anything, so none is created twice."
        )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and committed by the writer loop only.
        if self._readonly:
            return self._connect_readonly()
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        if str(mode).lower() != "wal":
            conn.close()
            raise JournalError(f"journal {self._path!r}: WAL mode unavailable ({mode})")
        return conn

    def _connect_readonly(self) -> sqlite3.Connection:
        uri = pathlib.Path(self._path).absolute().as_uri()
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            if conn is not None:
                conn.close()
            # Read-only media: a WAL reader cannot create the -shm file there. Nothing can
            # write the journal on such media, so it is read as an immutable file.
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
        return conn

    def _load_meta(
        self,
        conn: sqlite3.Connection,
        batch_id: str | None,
        options: Mapping[str, Any] | None,
        recover: bool,
    ) -> None:
        meta = conn.execute(
            "SELECT batch_id, schema_version, options FROM batch WHERE id = 1"
        ).fetchone()
        if meta is None and self._anchor is not None and not self._recovering:
            self._lose("holds no batch", recover=recover)
        if meta is None and self._readonly:
            raise JournalError(f"{self._path!r} is not a journal (no batch row)")
        if meta is None:
            self._batch_id = batch_id or new_batch_id()
            self._options = dict(options or {})
            conn.execute(
                "INSERT INTO batch (id, batch_id, schema_version, created_at, options)"
                " VALUES (1, ?, ?, ?, ?)",
                (self._batch_id, _SCHEMA_VERSION, time.time(), _dumps(self._options)),
            )
            self._created = True
            return
        stored_id, version, stored_options = meta
        if version != _SCHEMA_VERSION:
            raise JournalError(
                f"journal {self._path!r} has schema {version}, not {_SCHEMA_VERSION}"
            )
        if self._anchor is not None and stored_id != self._anchor.batch_id:
            raise JournalConflict(
                f"journal {self._path!r} belongs to batch {stored_id!r}, but"
                f" {anchor_path(self._path).name} beside it says this run is batch"
                f" {self._anchor.batch_id!r}: it is another run's journal. Put this run's"
                " journal back, or start the other run in its own folder."
            )
        if batch_id is not None and batch_id != stored_id:
            raise JournalConflict(
                f"journal {self._path!r} belongs to batch {stored_id!r}, not {batch_id!r}"
            )
        self._batch_id = stored_id
        self._options = json.loads(stored_options)
        for state, count in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            self._states[JobState(state)] = count
        self._seq = conn.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchone()[0]

    def _run(self) -> None:
        """The writer thread: run the queued operations in transactions, commit in groups."""
        lock: int | None = None
        try:
            lock = None if self._readonly else _lock(self._path)
            conn = self._connect()
        except (sqlite3.Error, OSError, JournalError) as exc:
            if lock is not None:
                os.close(lock)
            error = exc if isinstance(exc, JournalError) else _journal_error(self._path, exc)
            self._fail_all(error)
            return
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self._commit_wait())
                except queue.Empty:  # lazy writes waited long enough for company
                    self._run_group(conn, [])
                    continue
                group: list[_Op] = []
                stop = first is None
                if first is not None:
                    group.append(first)
                while not stop and self._txn_ops + len(group) < _MAX_GROUP:
                    try:
                        op = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if op is None:
                        stop = True
                        break
                    group.append(op)
                self._stopping = stop
                self._run_group(conn, group)
                if stop or self._broken is not None:
                    return
        finally:
            conn.close()  # rolls back a transaction left open by a failure
            if lock is not None:
                os.close(lock)  # releases the lock
            error = self._broken or JournalError(f"journal {self._path!r} is closed")
            self._fail_waiting(error)
            self._fail_all(error)

    def _commit_wait(self) -> float | None:
        """How long the writer may wait for more work before it must commit (None: forever)."""
        if not self._in_txn:
            return None
        return max(0.0, self._txn_started + _LAZY_COMMIT_DELAY - time.monotonic())

    def _run_group(self, conn: sqlite3.Connection, group: list[_Op]) -> None:
        try:
            self._commit_group(conn, group)
        except Exception as exc:  # a bug here must not leave callers waiting forever
            error = JournalError(f"journal {self._path!r}: the writer thread failed: {exc!r}")
            error.__cause__ = exc
            self._broken = error
            # every caller not yet answered gets the error (one already answered is skipped)
            self._fail_waiting(error)
            self._settle([op.future for op in group], [(False, error)] * len(group))

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Op]) -> None:
        """Run ``group`` in the open transaction (begun if none) and commit when it must.

        A lazy op (``durable=False``) is answered as soon as it ran; a durable one once the
        transaction holding it is committed. The transaction is committed at once when it
        holds a durable op (which also makes every lazy op before it durable: one
        connection, ops in queue order), and otherwise left open for more lazy ops, at
        most ``_LAZY_COMMIT_DELAY`` seconds or ``_MAX_GROUP`` ops; it is always committed
        when the journal closes (``_stopping``).
        """
        answered: list[tuple[asyncio.Future[Any], tuple[bool, Any]]] = []
        try:
            if group and not self._in_txn:
                conn.execute("BEGIN" if self._readonly else "BEGIN IMMEDIATE")
                self._in_txn = True
                self._txn_started = time.monotonic()
            for op in group:
                try:
                    outcome: tuple[bool, Any] = (True, op.fn(conn))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # handed to its caller: ops raise before writing
                    outcome = (False, exc)
                self._txn_ops += 1
                if op.durable:
                    self._waiting.append((op.future, outcome))
                else:
                    answered.append((op.future, outcome))
            if self._in_txn and (
                self._stopping
                or self._waiting
                or self._txn_ops >= _MAX_GROUP
                or time.monotonic() - self._txn_started >= _LAZY_COMMIT_DELAY
            ):
                conn.execute("COMMIT")
                self._end_txn(ok=True)
            else:
                self._txn_lazy += len(answered)  # answered below, committed later
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = _journal_error(self._path, exc)
            if self._txn_lazy:
                # lazy writes answered earlier were rolled back with it: what the callers
                # were told is no longer in the file, so the journal refuses all further work
                self._broken = error
            self._waiting = []  # only this group's ops: each durable op ends its transaction
            answered = [(op.future, (False, error)) for op in group]
            self._end_txn(ok=False)
        if answered:
            with self._stats_lock:
                self._pending_ops -= len(answered)
            self._settle([f for f, _ in answered], [o for _, o in answered])

    def _end_txn(self, *, ok: bool) -> None:
        """Count the transaction that just ended and answer the durable ops it held."""
        waiting, self._waiting = self._waiting, []
        with self._stats_lock:
            if ok:
                self._commits += 1
                self._largest_group = max(self._largest_group, self._txn_ops)
            self._pending_ops -= len(waiting)
        self._in_txn = False
        self._txn_ops = 0
        self._txn_lazy = 0
        if waiting:
            self._settle([f for f, _ in waiting], [o for _, o in waiting])

    def _fail_waiting(self, error: JournalError) -> None:
        """Answer the durable ops of the open transaction with ``error`` (it is not committed)."""
        waiting, self._waiting = self._waiting, []
        if waiting:
            with self._stats_lock:
                self._pending_ops -= len(waiting)
            self._settle([f for f, _ in waiting], [(False, error)] * len(waiting))

    def _settle(self, futures: list[asyncio.Future[Any]], outcomes: list[tuple[bool, Any]]) -> None:
        """Wake the callers of a group with one hop to the loop (one self-pipe write)."""

        def settle() -> None:
            for future, (ok, value) in zip(futures, outcomes, strict=True):
                if future.done():  # cancelled, or already answered before a failure
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    def _fail_all(self, error: JournalError) -> None:
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return
            if op is not None:
                self._settle([op.future], [(False, error)])

    async def _call(self, fn: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        """Run ``fn`` in the writer thread; return once committed (or, lazy, once run)."""
        if self._broken is not None:
            raise self._broken
        if self._closed or self._loop is None:
            raise JournalError(f"journal {self._path!r} is closed")
        future: asyncio.Future[_T] = self._loop.create_future()
        with self._stats_lock:
            self._pending_ops += 1
        self._queue.put(_Op(fn, future, durable))
        return await future

    # -- operations (run in the writer thread, inside a transaction) --

    def _select(self, conn: sqlite3.Connection, key: str) -> JobRecord | None:
        found = conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE key = ?",  # noqa: S608 -- constant columns
            (key,),
        ).fetchone()
        return None if found is None else _from_db(found)

    def _insert(self, conn: sqlite3.Connection, row: JobRecord) -> None:
        self._seq += 1
        conn.execute(
            f"INSERT INTO jobs ({_COLUMNS}, seq) VALUES ({', '.join('?' * 16)})",  # noqa: S608
            (*_row_values(row), self._seq),
        )
        self._count(None, row)

    def _update(self, conn: sqlite3.Connection, old: JobRecord, row: JobRecord) -> JobRecord:
        # JSON columns are re-encoded only when they changed: encoding is most of the cost
        sets = [
            ("state", row.state.value),
            ("external_id", row.external_id),
            ("task_id", row.task_id),
            ("attempts", row.attempts),
            ("updated_at", row.updated_at),
            ("submitted_at", row.submitted_at),
            ("finished_at", row.finished_at),
        ]
        if row.result is not old.result:
            sets.append(("result", None if row.result is None else _dumps(row.result)))
        if row.error is not old.error:
            sets.append(("error", None if row.error is None else _dumps(row.error.to_json())))
        if row.files is not old.files:
            sets.append(("files", _dumps([f.to_json() for f in row.files])))
        conn.execute(
            f"UPDATE jobs SET {', '.join(f'{name} = ?' for name, _ in sets)}"  # noqa: S608
            " WHERE key = ?",
            (*(value for _, value in sets), row.key),
        )
        self._count(old, row)
        return row

    def _count(self, old: JobRecord | None, new: JobRecord) -> None:
        with self._stats_lock:
            if old is not None:
                self._states[old.state] -= 1
            self._states[new.state] += 1
            self._writes += 1

    def _change(
        self, key: str, move: Callable[[JobRecord], JobRecord]
    ) -> Callable[[sqlite3.Connection], JobRecord]:
        def op(conn: sqlite3.Connection) -> JobRecord:
            old = RowRules.require(self._select(conn, key), key)
            return self._update(conn, old, move(old))

        return op

    async def add(
        self,
        key: str,
        kind: str,
        fingerprint: str,
        record: Mapping[str, Any],
        *,
        durable: bool = True,
    ) -> JobRecord | None:
        """Add a PENDING job; see ``JobStore.add``.

        With ``durable=False`` it returns as soon as the writer thread has run it (same-key
        check answered, row inserted) and the commit comes with a later group: a sequential
        feed does not pay one fsync per job. The row is on disk before any later durable
        write returns (``mark_submitting`` of this job included).
        """
        record = dict(record)

        def op(conn: sqlite3.Connection) -> JobRecord | None:
            new, existing = RowRules.add(self._select(conn, key), key, kind, fingerprint, record)
            if new is not None:
                self._insert(conn, new)
            return existing

        return await self._call(op, durable=durable)

    async def mark_submitting(self, key: str, external_id: str) -> JobRecord:
        """See ``JobStore.mark_submitting``; durable when it returns."""
        return await self._call(
            self._change(key, lambda row: RowRules.submitting(row, external_id))
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
        """Return the row of ``key``, or None."""
        return await self._call(lambda conn: self._select(conn, key))

    async def resume(self) -> ResumePlan:
        """Return every row in insertion order, grouped by what a resume does with it."""

        def op(conn: sqlite3.Connection) -> ResumePlan:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq")  # noqa: S608
            return ResumePlan.from_rows(_from_db(values) for values in rows)

        return await self._call(op)

    async def flush(self) -> None:
        """Return when every change queued before this call is committed."""
        await self._call(lambda conn: None)

    async def load_runtime_model(self) -> str | None:
        """Return the run-time model the engine saved here (JSON text), or None."""

        def op(conn: sqlite3.Connection) -> str | None:
            try:
                found = conn.execute("SELECT model FROM runtime_model WHERE id = 1").fetchone()
            except sqlite3.OperationalError:  # a read-only journal older than the table
                return None
            return None if found is None else str(found[0])

        return await self._call(op)

    async def save_runtime_model(self, model: str) -> None:
        """Keep the engine's run-time model (JSON text); committed with the next write."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO runtime_model (id, model, updated_at) VALUES (1, ?, ?)",
                (model, time.time()),
            )

        await self._call(op, durable=False)

    def statistics(self) -> JournalStatistics:
        """Return the journal's counters (state counts include uncommitted changes)."""
        with self._stats_lock:
            return JournalStatistics(
                jobs=sum(self._states.values()),
                states=dict(self._states),
                writes=self._writes,
                commits=self._commits,
                largest_group=self._largest_group,
                queued=self._pending_ops,
            )

    async def aclose(self) -> None:
        """Commit what is queued, stop the writer thread and close the file.

        Safe to call twice; shielded from cancellation so the file is always closed.
        """
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:  # never opened
            return
        self._queue.put(None)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)
            anchor = self._anchor
            if anchor is not None and self._anchor_written and self._broken is None:
                # closed cleanly: a -wal file missing next time is no sign of loss
                with contextlib.suppress(JournalError):
                    await anyio.to_thread.run_sync(
                        write_anchor, self._path, attrs.evolve(anchor, live=False)
                    )


def _lock(path: str) -> int | None:
    """Take ``<path>.lock`` for this process, so two runs never drive one journal.

    An advisory ``flock``: the kernel drops it when the process dies, even by SIGKILL,
    so a resume after a crash is never refused. None where flock does not exist.

    Raises:
        JournalError: another process (or another open journal here) holds it.
    """
    if path == ":memory:" or fcntl is None:  # pragma: no cover -- Windows has no flock
        return None
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise JournalError(f"journal {path!r} is in use by another run ({exc.strerror})") from exc
    return fd


def _journal_error(path: str, exc: sqlite3.Error | OSError) -> JournalError:
    error = JournalError(f"journal {path!r}: {exc}")
    error.__cause__ = exc
    return error
