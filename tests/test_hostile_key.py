"""Issue 12, "the key in files people share": a gateway that echoes the key everywhere.

Each hostile case (see ``tests/_hostile_gateway.py``) is run through the library (one call,
then a whole job) and through the CLI at ``-vv``; a canary then scans every artifact for
the key: exceptions (str, repr, attributes, traceback, chained causes), log records,
stdout, stderr, ``results.jsonl``, the journal and its WAL (raw bytes), ``status``.
"""

import asyncio
import base64
import logging
import os
import pathlib
import shutil
import signal
import sys
import traceback
import urllib.parse
from collections.abc import Iterator

import pytest

import kling_async as ka
from tests._hostile_gateway import CASES, SLOW_CASE, HostileGateway
from tests.conftest import API_ENV

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"
KEY = "sk-hostile-0123456789abcdef"
ACCESS_KEY = "ak-hostile-access-4242"
SECRET_KEY = "sk-hostile-secret-8080-0123456789abcdef"  # 32+ bytes: PyJWT warns below
SCALE = 0.002
ENV_NAMES = API_ENV


# --- the canary ------------------------------------------------------------------------


def _forms(secret: str) -> list[str]:
    return [secret.lower(), urllib.parse.quote(secret, safe="").lower()]


SECRETS = (KEY, ACCESS_KEY, SECRET_KEY)
FORBIDDEN = [form for secret in SECRETS for form in _forms(secret)]


def assert_clean(text: str, where: str) -> None:
    """The canary: no secret (any case, raw or percent-encoded) and no JWT in ``text``."""
    lowered = text.lower()
    for form in FORBIDDEN:
        assert form not in lowered, f"a secret leaked into {where}: {text[:2000]!r}"
    assert "eyj" not in lowered, f"a JWT leaked into {where}: {text[:2000]!r}"


def assert_clean_bytes(data: bytes, where: str) -> None:
    """The canary on raw bytes (journal pages, WAL frames): also the Base64 of the key."""
    lowered = data.lower()
    for secret in SECRETS:
        for form in (*_forms(secret), base64.b64encode(secret.encode()).decode().lower()):
            assert form.encode() not in lowered, f"a secret leaked into {where}"
    assert b"eyj" not in lowered, f"a JWT leaked into {where}"


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr, traceback and attribute reprs of ``exc`` and every exception it links to."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield "".join(traceback.format_exception(current))
        for value in vars(current).values():
            yield repr(value)
            if isinstance(value, BaseException):
                stack.append(value)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(link for link in (current.__cause__, current.__context__) if link)


def assert_exception_clean(exc: BaseException) -> None:
    """The canary over an exception and its chain."""
    for text in exception_texts(exc):
        assert_clean(text, f"exception {type(exc).__name__}")


def assert_records_clean(records: list[logging.LogRecord]) -> None:
    """The canary over log records: message, extra fields, formatted exc_info."""
    formatter = logging.Formatter()
    for record in records:
        assert_clean(record.getMessage(), f"log record {record.name}")
        assert_clean(repr(vars(record)), f"log record fields {record.name}")
        if record.exc_info:
            assert_clean(formatter.formatException(record.exc_info), "logged traceback")


def assert_tree_clean(folder: pathlib.Path) -> None:
    """The canary over every file under ``folder`` (journal, WAL, results), raw bytes."""
    for path in folder.rglob("*"):
        if path.is_file():
            assert_clean_bytes(path.read_bytes(), str(path.relative_to(folder)))


# --- the library ------------------------------------------------------------------------


def _request() -> ka.MultiImageToVideo:
    return ka.MultiImageToVideo(
        images=[ka.Image.from_path(IMAGES / "beach.png"), ka.Image.from_path(IMAGES / "cat.jpg")],
        prompt="a walk",
    )


def _client(gateway: HostileGateway, profile: str) -> ka.Client:
    chosen = (
        ka.Kling(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        if profile == "kling-jwt"
        else ka.CometAPI(KEY)
    )
    return ka.Client(
        profile=chosen,
        base_url=gateway.url,
        poll=ka.PollPolicy().scaled(SCALE),
        backoff=ka.Backoff().scaled(SCALE),
    )


async def _one_call(client: ka.Client, case: str) -> ka.Task | ka.KlingError:
    try:
        task = await client.tasks.create(_request())
        if case in ("request_id", "failed_message", "result_url", "file_loop", "task_id"):
            task = await client.tasks.get(task.task_id, kind=ka.Kind.VIDEO)
    except ka.KlingError as exc:
        return exc
    return task


EXPECTED = {
    "error_message": ka.BadRequest,
    "escaped_message": ka.BadRequest,
    "request_id": ka.Task,
    "redirect": ka.MalformedResponse,
    "failed_message": ka.Task,
    "result_url": ka.Task,
    "file_loop": ka.Task,
    "task_id": ka.NotFound,
    "drop": ka.ConnectionLost,
    "html": ka.ServerError,
}


@pytest.mark.parametrize("profile", ["cometapi", "kling-jwt"])
@pytest.mark.parametrize("case", CASES)
async def test_library_never_shows_the_key(
    case: str, profile: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One call and one whole job per hostile case: typed outcome, the key nowhere."""
    caplog.set_level(logging.DEBUG, logger="kling_async")
    async with HostileGateway(case) as gateway, _client(gateway, profile) as client:
        outcome = await _one_call(client, case)
        try:
            job: ka.Task | ka.KlingError = await client.generate(_request(), deadline=5)
        except ka.KlingError as exc:
            job = exc
    assert gateway.last_authorization.startswith("Bearer ")
    assert isinstance(outcome, EXPECTED[case])
    for result in (outcome, job):
        if isinstance(result, BaseException):
            assert_exception_clean(result)
        else:
            assert_clean(repr(result), "parsed task")
    assert_records_clean(caplog.records)


async def test_echoed_key_is_masked_in_place() -> None:
    """The key's place stays readable: 'Bearer ***' in messages, request ids and tasks."""
    async with HostileGateway("error_message") as gateway, _client(gateway, "cometapi") as c:
        error = await _one_call(c, "error_message")
    assert isinstance(error, ka.BadRequest)
    assert error.message.startswith("invalid header Authorization: Bearer ***")
    assert error.request_id == "Bearer ***"
    async with HostileGateway("failed_message") as gateway, _client(gateway, "cometapi") as c:
        task = await _one_call(c, "failed_message")
    assert isinstance(task, ka.Task)
    assert task.status is ka.Status.FAILED
    assert task.status_message == "refused for Bearer ***"


async def test_result_urls_are_masked() -> None:
    """A result URL holding the key (path or query, raw or encoded) comes back masked."""
    async with HostileGateway("result_url") as gateway, _client(gateway, "cometapi") as c:
        task = await _one_call(c, "result_url")
    assert isinstance(task, ka.Task)
    assert [video.url for video in task.videos] == [
        f"{gateway.url}/files/***.mp4",
        f"{gateway.url}/files/v.mp4?auth=Bearer%20***",
    ]
    assert [image.url for image in task.images] == [f"{gateway.url}/files/i.png?key=***"]


async def test_redirect_is_refused_and_masked() -> None:
    """A 307 on an API call is not followed: MalformedResponse naming the masked target."""
    async with HostileGateway("redirect") as gateway, _client(gateway, "cometapi") as c:
        error = await _one_call(c, "redirect")
        calls = gateway.calls
    assert isinstance(error, ka.MalformedResponse)
    assert error.http_status == 307
    assert "auth=Bearer%20***&raw=***" in error.message
    assert calls == 1


async def test_wrapped_network_error_drops_the_request() -> None:
    """A cut connection: ConnectionLost with no cause, no context, no request record."""
    async with HostileGateway("drop") as gateway, _client(gateway, "cometapi") as c:
        error = await _one_call(c, "drop")
    assert isinstance(error, ka.ConnectionLost)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert not any(hasattr(link, "request_info") for link in (error, error.__cause__))


async def test_kling_jwt_is_masked() -> None:
    """The Kling profile's signed JWT echoed back is masked like a key."""
    async with HostileGateway("error_message") as gateway, _client(gateway, "kling-jwt") as c:
        error = await _one_call(c, "error_message")
        echoed = gateway.last_authorization
    assert echoed.startswith("Bearer eyJ")
    assert isinstance(error, ka.BadRequest)
    assert error.request_id == "Bearer ***"
    assert echoed.partition(" ")[2] not in str(error)


# --- the CLI ----------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ENV_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "120"
    env.update(extra)
    return env


async def _cli(*args: str, cwd: pathlib.Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kling_async._cli.app",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


JOBS = (
    '{"key": "walk", "kind": "video", "images": ["images/beach.png", "images/cat.jpg"]}\n'
    '{"key": "portrait", "kind": "image", "images": ["images/robot.jpg", "images/cat.jpg"]}\n'
)


@pytest.mark.parametrize("case", CASES)
async def test_cli_canary(case: str, tmp_path: pathlib.Path) -> None:
    """CLI run at -vv, then status, per hostile case: no traceback, the key in no artifact."""
    shutil.copytree(IMAGES, tmp_path / "images")
    (tmp_path / "jobs.jsonl").write_text(JOBS, encoding="utf-8")
    env = _env(COMETAPI_KEY=KEY)
    async with HostileGateway(case) as gateway:
        code, out, err = await _cli(
            *("run", "jobs.jsonl", "--out", "out", "--base-url", gateway.url),
            *("--time-scale", str(SCALE), "--deadline", "20", "-vv"),
            cwd=tmp_path,
            env=env,
        )
        assert gateway.calls > 0
    assert code in (0, 1, 2, 3), out + err
    assert "Traceback" not in err, err
    assert " kling_async" in err  # -vv did log the library's decisions
    assert_clean(out, "stdout of run")
    assert_clean(err, "stderr of run")
    journal = tmp_path / "out" / "journal.sqlite"
    assert journal.exists()
    assert (tmp_path / "out" / "results.jsonl").exists()
    for flag in ((), ("--json",)):
        status_code, status_out, status_err = await _cli(
            "status", str(journal), *flag, cwd=tmp_path, env=env
        )
        assert status_code == 0, status_out + status_err
        assert_clean(status_out + status_err, "status output")
    assert_tree_clean(tmp_path / "out")


async def test_cli_canary_killed_mid_run_journal_and_wal(tmp_path: pathlib.Path) -> None:
    """kill -9 mid-run (tasks running, key echoed in every answer): journal and WAL clean."""
    shutil.copytree(IMAGES, tmp_path / "images")
    (tmp_path / "jobs.jsonl").write_text(JOBS, encoding="utf-8")
    env = _env(COMETAPI_KEY=KEY)
    async with HostileGateway(SLOW_CASE) as gateway:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "kling_async._cli.app", "run", "jobs.jsonl"),
            *("--out", "out", "--base-url", gateway.url, "--time-scale", str(SCALE), "-vv"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            for _ in range(400):  # at most 20 s: both created and polled a few times
                if gateway.calls >= 8:
                    break
                await asyncio.sleep(0.05)
            assert gateway.calls >= 8
        finally:
            process.send_signal(signal.SIGKILL)
            _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == -signal.SIGKILL
    assert_clean(err.decode(), "stderr before the kill")
    wal = tmp_path / "out" / "journal.sqlite-wal"
    assert wal.exists()
    assert wal.stat().st_size > 0
    assert_tree_clean(tmp_path / "out")
    code, out, status_err = await _cli(
        "status", "out/journal.sqlite", "--json", cwd=tmp_path, env=env
    )
    assert code == 0, out + status_err
    assert_clean(out + status_err, "status after a kill")
