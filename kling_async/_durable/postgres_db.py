"""PostgreSQL plumbing shared by the job store and the slot coordinator: URL, pool, schema.

The driver is psycopg 3 (``psycopg`` + ``psycopg_pool``): native asyncio, libpq's own
URL and ``PG*`` environment handling (Unix sockets, SSL, passfiles), a maintained pool,
and inline type hints that keep ``mypy --strict`` honest. It is an optional extra
(``pip install 'kling-async[postgres]'``), imported only when a ``postgresql://`` URL is
given.
"""

import os
import socket
import urllib.parse
import uuid
from typing import Any

import attrs

from .records import JournalError

__all__ = [
    "SCHEMA_VERSION",
    "UrlSettings",
    "describe_url",
    "is_postgres_url",
    "new_holder",
    "open_pool",
    "process_holder",
    "split_url",
]

SCHEMA_VERSION = 1
# One advisory lock id (any constant): schema creation is serialised across processes.
_SCHEMA_LOCK = 0x6B6C696E67
_SCHEMES = ("postgresql://", "postgres://")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kling_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kling_holders (
    holder TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS kling_batches (
    batch_id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    options JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS kling_jobs (
    batch_id TEXT NOT NULL REFERENCES kling_batches (batch_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    record JSONB NOT NULL,
    state TEXT NOT NULL,
    external_id TEXT,
    task_id TEXT,
    attempts INTEGER NOT NULL,
    result JSONB,
    error JSONB,
    files JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    submitted_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    seq BIGSERIAL,
    owner TEXT,
    PRIMARY KEY (batch_id, key)
);
CREATE INDEX IF NOT EXISTS kling_jobs_claim ON kling_jobs (batch_id, state, seq);
CREATE INDEX IF NOT EXISTS kling_jobs_owner ON kling_jobs (owner);
CREATE TABLE IF NOT EXISTS kling_slot_limits (
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    limit_value DOUBLE PRECISION NOT NULL,
    maximum INTEGER NOT NULL,
    slow_start BOOLEAN NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (account, kind)
);
CREATE TABLE IF NOT EXISTS kling_slot_leases (
    id BIGSERIAL PRIMARY KEY,
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    holder TEXT NOT NULL,
    slots INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kling_slot_leases_kind ON kling_slot_leases (account, kind);
CREATE INDEX IF NOT EXISTS kling_slot_leases_holder ON kling_slot_leases (holder);
"""


def is_postgres_url(value: object) -> bool:
    """True when ``value`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(value, str) and value.startswith(_SCHEMES)


def describe_url(url: str) -> str:
    """Name the server of ``url`` for messages: host, port and database, never a password."""
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 -- optional extra

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # a URL libpq cannot parse: say so without echoing it
        return "postgresql://<unparsable URL>"
    host = str(parts.get("host") or "localhost")
    port = parts.get("port")
    dbname = parts.get("dbname") or parts.get("user") or ""
    return f"postgresql://{host}{f':{port}' if port else ''}/{dbname}"


def new_holder() -> str:
    """A fresh lease holder id: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_PROCESS_HOLDER: dict[int, str] = {}


def process_holder() -> str:
    """This process's lease holder id: its journals and its slot leases live and die together."""
    pid = os.getpid()
    if pid not in _PROCESS_HOLDER:
        _PROCESS_HOLDER[pid] = new_holder()
    return _PROCESS_HOLDER[pid]


async def open_pool(url: str, *, max_size: int = 4, connect_timeout: float = 10.0) -> Any:
    """Open a psycopg pool on ``url`` and make sure the schema is there, at this version.

    Returns:
        An open ``psycopg_pool.AsyncConnectionPool`` (typed ``Any``: the driver is optional).

    Raises:
        JournalError: the server cannot be reached, or holds another schema version.
    """
    try:
        from psycopg_pool import AsyncConnectionPool, PoolTimeout  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover -- the extra is installed in tests
        raise JournalError(
            "a postgresql:// journal needs the driver: pip install 'kling-async[postgres]'"
        ) from exc
    where = describe_url(url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=min(5.0, connect_timeout),
        reconnect_timeout=connect_timeout,
        check=AsyncConnectionPool.check_connection,
        name="kling-async",
    )
    try:
        await pool.open(wait=True, timeout=connect_timeout)
    except PoolTimeout as exc:
        await pool.close()
        raise JournalError(
            f"cannot reach PostgreSQL at {where} within {connect_timeout:g} s "
            "(is the server running, and the URL right?)"
        ) from exc
    try:
        await _ensure_schema(pool, where)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _ensure_schema(pool: Any, where: str) -> None:
    import psycopg  # noqa: PLC0415 -- optional extra

    try:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            found = await conn.execute("SELECT to_regclass('kling_meta') IS NOT NULL")
            exists = (await found.fetchone())[0]
            if exists:
                cursor = await conn.execute("SELECT schema_version FROM kling_meta WHERE id = 1")
                row = await cursor.fetchone()
                if row is not None and row[0] != SCHEMA_VERSION:
                    raise JournalError(
                        f"the database at {where} holds kling-async schema {row[0]}; "
                        f"this version uses schema {SCHEMA_VERSION}"
                    )
                if row is not None:
                    return
            await conn.execute(_SCHEMA)
            await conn.execute(
                "INSERT INTO kling_meta (id, schema_version) VALUES (1, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (SCHEMA_VERSION,),
            )
    except psycopg.Error as exc:
        raise JournalError(f"PostgreSQL at {where}: {exc}") from exc


@attrs.frozen
class UrlSettings:
    """kling-async's own settings carried in a ``postgresql://`` URL's query string.

    ``?kling_lease=SECONDS`` (default 15): how long a claim or a slot lives without a
    heartbeat. ``?kling_prefetch=N``: jobs a worker holds at once (default: twice its
    slot limits). They are removed before the URL is handed to libpq.
    """

    lease: float = 15.0
    prefetch: int | None = None


def split_url(url: str) -> tuple[str, UrlSettings]:
    """Return ``url`` without kling-async's own query parameters, and those settings.

    Raises:
        ValueError: a setting is not a positive number.
    """
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name.startswith("kling_")}
    rest = [(name, value) for name, value in query if not name.startswith("kling_")]
    unknown = set(ours) - {"kling_lease", "kling_prefetch"}
    if unknown:
        raise ValueError(f"unknown setting(s) in the journal URL: {', '.join(sorted(unknown))}")
    try:
        lease = float(ours.get("kling_lease", "15"))
        prefetch = int(ours["kling_prefetch"]) if "kling_prefetch" in ours else None
    except ValueError as exc:
        raise ValueError(f"bad kling_ setting in the journal URL: {exc}") from None
    if not lease > 0 or (prefetch is not None and prefetch < 1):
        raise ValueError("kling_lease must be > 0 and kling_prefetch >= 1")
    clean = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(rest)))
    return clean, UrlSettings(lease=lease, prefetch=prefetch)
