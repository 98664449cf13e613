"""The simulated CometAPI/Kling server: routes, auth, limits, faults, result files."""

import asyncio
import base64
import binascii
import collections
import functools
import hashlib
import hmac
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Self

import anyio.to_thread
import attrs
from aiohttp import web

from ._callbacks import CallbackDispatcher
from ._clock import SimClock
from ._config import AccountState, Fault, FaultKind, RateLimitStyle, SimulatorConfig
from ._stats import RESET, Counters, SimulatorStatistics
from ._tasks import SUBMITTED, SimTask, TaskStore, render_task, wrap_task
from ._validation import CreateSpec, RequestRejected, validate_image_create, validate_video_create

__all__ = ["ROUTES", "Simulator"]

ROUTES: tuple[tuple[str, str, str], ...] = (
    ("/kling/v1/videos/multi-image2video", "video", "cometapi"),
    ("/kling/v1/images/generations", "image", "cometapi"),
    ("/v1/videos/multi-image2video", "video", "kling"),
    ("/v1/images/multi-image2image", "image", "kling"),
)
"""(path, kind, surface) of every API route: create (POST), list (GET) and query (GET path/{id})."""

_ACCOUNT_MESSAGES = {
    AccountState.ACCOUNT_ERROR: "Account exception",
    AccountState.ARREARS: "Account has arrears, please recharge",
    AccountState.PACK_EXHAUSTED: "The resource pack has been used up or has expired",
}
_SERVER_ERRORS = (
    (500, 5000, "Server internal error"),
    (503, 5001, "Server temporarily unavailable"),
    (504, 5002, "Server internal timeout"),
)
_GATEWAY_BODIES = {
    502: (
        "text/html",
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
        "</center><hr><center>nginx</center></body></html>",
    ),
    504: (
        "text/html",
        "<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 Gateway "
        "Time-out</h1></center><hr><center>nginx</center></body></html>",
    ),
    524: ("text/plain", "error code: 524"),
}
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>CometAPI</title></head><body><h1>Welcome</h1></body></html>"
)
_FILE_CACHE_SIZE = 256
_PARSE_IN_THREAD_BYTES = 256 * 1024
_MAX_BODY = 64 * 1024 * 1024

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (kind, aspect ratio, image index or 0, video duration or "", digest of the inputs): what a
# result file is made from
_FileKey = tuple[str, str, int, str, bytes]
_CONTENT_TYPES = {"video": "video/mp4", "image": "image/png"}


class _Answer(Exception):  # noqa: N818 - control flow carrying a finished response
    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__()
        self.response = response


def _parse_create(kind: str, raw: bytes, surface: str) -> CreateSpec:
    try:
        body = json.loads(raw)
    except ValueError:
        raise RequestRejected(400, 1201, "request body is not valid JSON") from None
    if kind == "video":
        return validate_video_create(body, surface)
    return validate_image_create(body, surface)


class _Dropped(web.Response):
    """Stands for an answer never sent: the connection was aborted (counted as status 0)."""


@attrs.define
class _Forced:
    fault: Fault
    remaining: int


@attrs.define
class _Bucket:
    tokens: float
    stamp: float


class Simulator:
    """A local CometAPI/Kling server on 127.0.0.1, for tests, benchmarks and demos.

    Use as ``async with Simulator(SimulatorConfig(...)) as sim:`` and point a client at
    ``sim.url`` with ``sim.api_key``. Every behaviour is configured in ``SimulatorConfig``;
    tests can also force faults with ``inject`` and move a manual clock with ``advance``.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimulatorConfig()
        self._host = host
        self._port = port
        self._url: str | None = None
        seed = self.config.seed
        self._task_rng = random.Random(seed)
        self._fault_rng = random.Random(None if seed is None else seed + 1)
        self._callback_rng = random.Random(None if seed is None else seed + 2)
        self._file_key = (
            random.Random(seed).randbytes(16) if seed is not None else random.randbytes(16)
        )
        self._clock = SimClock(
            time_scale=self.config.time_scale,
            manual=self.config.manual_clock,
            start_time=self.config.start_time,
        )
        self._counters = Counters()
        # Task ids ignore the seed: a second simulator (a resumed demo) must not reuse them.
        self._store = TaskStore(
            random.Random(), {"video": self.config.video_slots, "image": self.config.image_slots}
        )
        self._callbacks = CallbackDispatcher(
            self.config.callbacks, self._clock, self._render, self._counters, self._callback_rng
        )
        self._account_state = self.config.account_state
        self._buckets: dict[str, _Bucket] = {}
        self._forced: list[_Forced] = []
        self._generation = 0
        self._request_seq = 0
        self._files: collections.OrderedDict[_FileKey, bytes] = collections.OrderedDict()
        self._making: dict[_FileKey, asyncio.Future[bytes]] = {}
        self._input_digests: dict[str, bytes] = {}
        self._kept_input_bytes = 0
        self._runner: web.AppRunner | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    # -- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Bind the server and start the callback scheduler."""
        app = web.Application(client_max_size=_MAX_BODY)
        for path, kind, surface in ROUTES:
            app.router.add_post(path, self._route(kind, "create", surface))
            app.router.add_get(path, self._route(kind, "list", surface))
            app.router.add_get(path + "/{task_id}", self._route(kind, "query", surface))
        app.router.add_get("/_sim/statistics", self._admin_statistics)
        app.router.add_post("/_sim/advance", self._admin_advance)
        app.router.add_post("/_sim/account", self._admin_account)
        app.router.add_get("/_sim/files/{kind}/{task_id}/{name}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = "127.0.0.1" if self._host in ("0.0.0.0", "", "::") else self._host  # noqa: S104 - a display name
        self._url = f"http://{host}:{port}"
        self._dispatcher = asyncio.create_task(
            self._callbacks.run(), name="kling-simulator-callbacks"
        )

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving; pending callbacks are dropped."""
        if self._dispatcher is not None:
            dispatcher, self._dispatcher = self._dispatcher, None
            dispatcher.cancel()
            # wait() does not raise: a cancellation of aclose itself still propagates.
            await asyncio.wait([dispatcher])
            if not dispatcher.cancelled() and dispatcher.exception() is not None:
                raise RuntimeError("the callback scheduler failed") from dispatcher.exception()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- public knobs -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``.

        Raises:
            RuntimeError: the simulator is not started.
        """
        if self._url is None:
            raise RuntimeError("the simulator is not started; use `async with Simulator(...)`")
        return self._url

    @property
    def api_key(self) -> str:
        """A key the simulator accepts (the first configured one)."""
        if not self.config.api_keys:
            raise RuntimeError("this simulator accepts JWTs only (no api_keys configured)")
        return self.config.api_keys[0]

    def statistics(self) -> SimulatorStatistics:
        """A frozen snapshot of every counter."""
        now = self._clock.now()
        running = {kind: self._store.in_use(kind, now) for kind in ("video", "image")}
        return self._counters.snapshot(running)

    def now(self) -> float:
        """Simulated seconds since the simulator was made."""
        return self._clock.now()

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward (tasks progress, callbacks fall due, URLs expire)."""
        self._clock.advance(seconds)

    def set_account_state(self, state: AccountState) -> None:
        """Change the account state; anything but ACTIVE refuses creates (429/1100-1102)."""
        self._account_state = state

    def inject(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        on: Iterable[str] = ("create", "query", "list"),
        delay: float = 5.0,
        style: RateLimitStyle = RateLimitStyle.KLING,
        retry_after: float | None = 1.0,
    ) -> None:
        """Force ``kind`` onto the next ``times`` API requests whose action is in ``on``.

        ``delay`` is for SLOW; ``style`` and ``retry_after`` for RATE_LIMITED (see ``Fault``).
        """
        fault = Fault(kind=kind, on=on, delay=delay, style=style, retry_after=retry_after)
        self._forced.append(_Forced(fault, times))

    # -- rendering ------------------------------------------------------------------------------

    def _render(self, task: SimTask, status: str) -> dict[str, Any]:
        return render_task(task, status, self._clock.epoch_ms, self._result_url)

    def _signature(self, kind: str, task_id: str, name: str, expires: int) -> str:
        message = f"{kind}/{task_id}/{name}/{expires}".encode()
        return hmac.new(self._file_key, message, hashlib.sha256).hexdigest()[:32]

    def _result_url(self, task: SimTask, index: int) -> str:
        name = f"{index}.mp4" if task.kind == "video" else f"{index}.png"
        expires = self._clock.epoch_ms(task.ended + self.config.url_ttl)
        sig = self._signature(task.kind, task.task_id, name, expires)
        return (
            f"{self.url}/_sim/files/{task.kind}/{task.task_id}/{name}?expires={expires}&sig={sig}"
        )

    def _request_id(self) -> str:
        self._request_seq += 1
        return f"sim-{self._request_seq:012d}"

    def _error(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"code": code, "message": message, "request_id": self._request_id()}
        return web.json_response(body, status=status, headers=headers)

    def _ok(self, data: Any) -> web.Response:
        return web.json_response(
            {"code": 0, "message": "SUCCEED", "request_id": self._request_id(), "data": data}
        )

    # -- API requests ------------------------------------------------------------------------------

    def _route(self, kind: str, action: str, surface: str) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._api(request, kind, action, surface)

        return handle

    def _pick_fault(self, action: str) -> Fault | None:
        for forced in self._forced:
            if action in forced.fault.on:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    self._forced.remove(forced)
                return forced.fault
        for fault in self.config.faults:
            if action in fault.on and self._fault_rng.random() < fault.rate:
                return fault
        return None

    async def _api(
        self, request: web.Request, kind: str, action: str, surface: str
    ) -> web.StreamResponse:
        endpoint = f"{kind}.{action}"
        generation = self._generation
        fault = self._pick_fault(action)
        if fault is not None:
            self._counters.faults_injected[fault.kind.value] += 1
            early = self._early_fault(request, fault)
            if early is not None:
                return self._count(endpoint, early)
        response: web.StreamResponse
        try:
            owner = self._authenticate(request)
            self._check_rate(owner, action)
            if action == "create":
                response = await self._create(request, kind, owner, surface)
            elif action == "query":
                response = self._query(request, kind, owner, surface)
            else:
                response = self._list(request, kind, owner)
        except _Answer as answer:
            response = answer.response
        if fault is not None:
            response = await self._late_fault(request, fault, response)
        if self._generation != generation:
            response = self._reset(request)
        return self._count(endpoint, response)

    def _count(self, endpoint: str, response: web.StreamResponse) -> web.StreamResponse:
        status = RESET if isinstance(response, _Dropped) else response.status
        self._counters.requests[(endpoint, status)] += 1
        return response

    def _reset(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return _Dropped()

    def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        kind = fault.kind
        if kind is FaultKind.RESET_BEFORE:
            return self._reset(request)
        if kind is FaultKind.SERVER_ERROR:
            status, code, message = self._fault_rng.choice(_SERVER_ERRORS)
            return self._error(status, code, message)
        if kind is FaultKind.GATEWAY:
            status = self._fault_rng.choice(sorted(_GATEWAY_BODIES))
            content_type, text = _GATEWAY_BODIES[status]
            return web.Response(status=status, text=text, content_type=content_type)
        if kind is FaultKind.HTML:
            return web.Response(status=200, text=_HTML_PAGE, content_type="text/html")
        if kind is FaultKind.RATE_LIMITED:
            self._counters.rejected_rate += 1
            return self._rate_limited(fault.style, fault.retry_after)
        if kind is FaultKind.REDIRECT:
            return web.Response(status=302, headers={"Location": "/login"})
        if kind is FaultKind.INVALID_REQUEST:
            return self._cometapi_error(500, "invalid request", "invalid_request")
        return None

    async def _late_fault(
        self, request: web.Request, fault: Fault, response: web.StreamResponse
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind is FaultKind.RESET_AFTER:
            return self._reset(request)
        if kind is FaultKind.RESTART:
            self._generation += 1
            return self._reset(request)
        if kind is FaultKind.SLOW:
            await asyncio.sleep(fault.delay)
            return response
        if kind is FaultKind.MALFORMED_JSON:
            return web.Response(
                status=200,
                text='{"code": 0, "message": "SUCCEED", "data": {"task_id": ',
                content_type="application/json",
            )
        assert kind is FaultKind.TRUNCATED  # every other kind answered in _early_fault
        assert isinstance(response, web.Response)
        body = response.body
        assert isinstance(body, bytes)
        stream = web.StreamResponse(
            status=response.status, headers={"Content-Type": "application/json"}
        )
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.abort()
        return stream

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "").strip()
        if not header:
            raise _Answer(self._error(401, 1001, "Authorization is empty"))
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Answer(self._error(401, 1002, "Authorization is invalid"))
        if token in self.config.api_keys:
            return token
        if token.count(".") == 2 and self.config.jwt_keys:
            return self._check_jwt(token)
        raise _Answer(self._error(401, 1000, "Authentication failed"))

    def _check_jwt(self, token: str) -> str:
        head, payload, signature = token.split(".")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        except (ValueError, binascii.Error):
            raise _Answer(self._error(401, 1002, "Authorization is invalid")) from None
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        secret = self.config.jwt_keys.get(issuer) if isinstance(issuer, str) else None
        if secret is None:
            raise _Answer(self._error(401, 1000, "Authentication failed"))
        expected = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, given):
            raise _Answer(self._error(401, 1000, "Authentication failed"))
        now = time.time()
        if isinstance(claims.get("nbf"), int | float) and claims["nbf"] > now:
            raise _Answer(self._error(401, 1003, "Authorization is not yet valid"))
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now:
            raise _Answer(self._error(401, 1004, "Authorization has expired"))
        return f"jwt:{issuer}"

    def _check_rate(self, owner: str, action: str) -> None:
        limit = self.config.rate_limit
        if limit is None or (limit.creates_only and action != "create"):
            return
        now = self._clock.rate_now()
        bucket = self._buckets.get(owner)
        if bucket is None:
            bucket = self._buckets[owner] = _Bucket(float(limit.burst), now)
        bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.stamp) * limit.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        self._counters.rejected_rate += 1
        wait = (1.0 - bucket.tokens) / limit.rate if limit.retry_after else None
        raise _Answer(self._rate_limited(limit.style, wait))

    def _rate_limited(self, style: RateLimitStyle, retry_after: float | None) -> web.Response:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        if style is RateLimitStyle.KLING:
            return self._error(429, 1302, "The API request rate exceeded the limit", headers)
        return self._cometapi_error(429, "rate limit exceeded", "rate_limit_exceeded", headers)

    def _cometapi_error(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {
            "error": {
                "message": f"{message} (request id: {self._request_id()})",
                "type": "comet_api_error",
                "param": "",
                "code": code,
            }
        }
        return web.json_response(body, status=status, headers=headers)

    async def _create(
        self, request: web.Request, kind: str, owner: str, surface: str
    ) -> web.Response:
        if self._account_state is not AccountState.ACTIVE:
            state = self._account_state
            return self._error(429, state.value, _ACCOUNT_MESSAGES[state])
        raw = await request.read()
        try:
            if len(raw) > _PARSE_IN_THREAD_BYTES:
                spec = await anyio.to_thread.run_sync(_parse_create, kind, raw, surface)
            else:
                spec = _parse_create(kind, raw, surface)
        except RequestRejected as rejected:
            return self._error(rejected.status, rejected.code, rejected.message)
        return self._admit(self._keep_inputs(spec), owner)

    def _keep_inputs(self, spec: CreateSpec) -> CreateSpec:
        size = sum(len(data) for data in (*spec.inputs, spec.background) if data is not None)
        if self._kept_input_bytes + size > self.config.max_input_bytes:
            # Past the budget the results are composed from placeholders: memory stays bounded.
            return attrs.evolve(spec, inputs=(None,) * len(spec.inputs), background=None)
        self._kept_input_bytes += size
        return spec

    def _admit(self, spec: CreateSpec, owner: str) -> web.Response:
        kind = spec.kind
        if spec.external_task_id is not None and self._store.external_exists(
            kind, spec.external_task_id
        ):
            self._counters.duplicates_rejected += 1
            return self._error(
                400, 1201, f"external_task_id already exists: {spec.external_task_id}"
            )
        now = self._clock.now()
        if not self._store.fits(kind, spec.slots, now):
            self._counters.rejected_concurrency += 1
            return self._error(429, 1303, "parallel task over resource pack limit")
        rng = self._task_rng
        run = self.config.durations[kind].sample(rng)
        failed = rng.random() < self.config.failure_rate
        task = SimTask(
            task_id=self._store.new_task_id(),
            owner=owner,
            spec=spec,
            created=now,
            started=now + run * self.config.queue_share,
            ended=now + run,
            failure_message=self.config.failure_message if failed else None,
            reorder_callbacks=spec.callback_url is not None
            and rng.random() < self.config.callbacks.reorder_rate,
        )
        held = self._store.add(task)
        counters = self._counters
        counters.tasks_created += 1
        counters.peak_concurrency[kind] = max(counters.peak_concurrency[kind], held)
        if spec.external_task_id is not None:
            counters.per_external_id[spec.external_task_id] += 1
        if spec.callback_url is not None:
            self._callbacks.schedule(task)
        return self._ok(self._render(task, SUBMITTED))

    def _query(self, request: web.Request, kind: str, owner: str, surface: str) -> web.Response:
        key = request.match_info["task_id"]
        task = self._store.find(kind, owner, key)
        if task is None:
            return self._error(404, 1203, f"task not found: {key}")
        data = self._render(task, task.status_at(self._clock.now()))
        if (
            surface == "cometapi"
            and self.config.wrapped_rate
            and self._fault_rng.random() < self.config.wrapped_rate
        ):
            data = wrap_task(data)
        return self._ok(data)

    def _list(self, request: web.Request, kind: str, owner: str) -> web.Response:
        if not self.config.serve_list:
            return web.Response(status=404, text="404: Not Found")
        try:
            page = int(request.query.get("pageNum", "1"))
            size = int(request.query.get("pageSize", "30"))
        except ValueError:
            return self._error(400, 1201, "pageNum and pageSize must be integers")
        if not 1 <= page <= 1000 or not 1 <= size <= 500:
            return self._error(400, 1201, "pageNum must be 1..1000 and pageSize 1..500")
        now = self._clock.now()
        return self._ok(
            [
                self._render(task, task.status_at(now))
                for task in self._store.page(kind, owner, page, size)
            ]
        )

    # -- files, admin, the rest -------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.StreamResponse:
        response = await self._serve_file(request)
        if response.status in (200, 206):
            self._counters.files_served += 1
        return self._count("file", response)

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        kind, task_id, name = (request.match_info[part] for part in ("kind", "task_id", "name"))
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            return web.Response(status=403, text="AccessDenied: missing or bad expires")
        if not hmac.compare_digest(
            self._signature(kind, task_id, name, expires), request.query.get("sig", "")
        ):
            return web.Response(status=403, text="AccessDenied: signature does not match")
        if self._clock.epoch_ms(self._clock.now()) > expires:
            return web.Response(status=403, text="AccessDenied: Request has expired")
        task = self._store.get(kind, task_id)
        assert task is not None  # a signed URL names a stored task, and tasks are never dropped
        try:
            data = await self._result_file(task, int(name.split(".")[0]))
        except Exception:  # a broken result is a 500 for this download only
            return web.Response(status=500, text="InternalError: could not make the result file")
        etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        return _ranged(request, data, _CONTENT_TYPES[kind], etag)

    async def _result_file(self, task: SimTask, index: int) -> bytes:
        from ._media import compose_image, compose_video  # noqa: PLC0415 - Pillow/PyAV: optional

        key = self._content_key(task, index)
        cached = self._files.get(key)
        if cached is not None:
            self._files.move_to_end(key)
            return cached
        making = self._making.get(key)
        if making is None:
            # An executor future, not a task: it finishes (and fills the cache) even when
            # every download waiting for it is cancelled.
            spec = task.spec
            loop = asyncio.get_running_loop()
            if task.kind == "video":
                making = loop.run_in_executor(
                    None, compose_video, spec.inputs, spec.aspect_ratio, spec.duration
                )
            else:
                making = loop.run_in_executor(
                    None, compose_image, spec.inputs, spec.background, spec.aspect_ratio, index
                )
            self._making[key] = making
            making.add_done_callback(functools.partial(self._made, key))
        return await asyncio.shield(making)

    def _content_key(self, task: SimTask, index: int) -> _FileKey:
        """What a result file is made from: tasks with the same inputs share one file.

        Composing is pure but not free (an MP4 takes 20-60 ms): thousands of tasks made from URL
        inputs (placeholders) would otherwise compose the same picture thousands of times.
        """
        spec = task.spec
        digest = self._input_digests.get(task.task_id)
        if digest is None:
            hasher = hashlib.sha256()
            for data in (*spec.inputs, spec.background):
                hasher.update(b"-" if data is None else b"+" + hashlib.sha256(data).digest())
            digest = self._input_digests[task.task_id] = hasher.digest()
        if task.kind == "image":
            return (task.kind, spec.aspect_ratio, index, "", digest)
        return (task.kind, spec.aspect_ratio, 0, spec.duration, digest)

    def _made(self, key: _FileKey, future: "asyncio.Future[bytes]") -> None:
        del self._making[key]
        if future.cancelled() or future.exception() is not None:
            return  # the waiters got the error; the next download tries again
        self._files[key] = future.result()
        if len(self._files) > _FILE_CACHE_SIZE:
            self._files.popitem(last=False)

    async def _admin_statistics(self, request: web.Request) -> web.StreamResponse:
        self._counters.requests[("admin", 200)] += 1
        return web.json_response(self.statistics().to_json())

    async def _admin_advance(self, request: web.Request) -> web.StreamResponse:
        try:
            seconds = float(request.query["seconds"])
            self.advance(seconds)
        except (KeyError, ValueError):
            return self._count(
                "admin", web.Response(status=400, text="POST /_sim/advance?seconds=S (S >= 0)")
            )
        return self._count("admin", web.json_response({"now": self.now()}))

    async def _admin_account(self, request: web.Request) -> web.StreamResponse:
        try:
            state = AccountState[request.query["state"].upper()]
        except KeyError:
            names = ", ".join(state.name for state in AccountState)
            return self._count(
                "admin", web.Response(status=400, text=f"POST /_sim/account?state=({names})")
            )
        self.set_account_state(state)
        return self._count("admin", web.json_response({"state": state.name}))

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        return self._count(
            "unknown", self._error(404, 1202, f"no such method: {request.method} {request.path}")
        )


def _ranged(request: web.Request, data: bytes, content_type: str, etag: str) -> web.Response:
    """Serve ``data`` as a file host does: ``Accept-Ranges``, a single byte range as 206.

    aiohttp parses the ``Range`` header (``request.http_range``). As RFC 9110 allows, a
    malformed or multi-range header, or an ``If-Range`` that does not match the ETag,
    gets the whole file; a range starting past the end gets 416.
    """
    headers = {"Accept-Ranges": "bytes", "ETag": etag}
    size = len(data)
    whole = web.Response(body=data, content_type=content_type, headers=headers)
    if_range = request.headers.get("If-Range")
    if "Range" not in request.headers or (if_range is not None and if_range != etag):
        return whole
    try:
        wanted = request.http_range
    except ValueError:
        return whole
    assert wanted.start is not None  # http_range gives a start whenever Range parses
    start = max(0, size + wanted.start) if wanted.start < 0 else wanted.start  # "-N": last N
    if start >= size:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    stop = size if wanted.stop is None else min(wanted.stop, size)
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return web.Response(
        status=206, body=data[start:stop], content_type=content_type, headers=headers
    )
