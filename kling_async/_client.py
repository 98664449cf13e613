"""The Client: one HTTP call per method, typed results or typed errors."""

import collections
import enum
import functools
import json
import logging
import os
import time
from typing import Any, Final, Self

import anyio.to_thread
import attrs

from ._api.images import _OFFLOAD_BYTES, check_request
from ._api.profiles import CometAPI, Kling, Profile
from ._api.transport import AiohttpTransport, HttpRequest, Transport, decode_response, logger
from ._api.wire import parse_task, parse_task_list, request_to_wire
from ._core import lifetime
from ._core.clock import Clock
from ._core.config import (
    DEFAULT_BACKOFF,
    DEFAULT_LIMITS,
    DEFAULT_POLL,
    DEFAULT_TIMEOUTS,
    Backoff,
    Limits,
    PollPolicy,
    Timeouts,
)
from ._core.errors import AuthenticationError, KlingError, TransportError
from ._core.models import (
    ImageOrigin,
    Kind,
    MultiImageToImage,
    MultiImageToVideo,
    Request,
    Task,
)
from ._core.redact import Redactor, remember_secrets
from ._durable import journaled as _journaled
from ._durable.downloads import DownloadLimits
from ._durable.postgres_slots import PostgresSlots, shared_slots
from ._engine import Batch, BatchStore, Engine, EngineStatistics
from ._webhooks.config import WebhookConfig
from ._webhooks.receiver import WebhookReceiver, WebhookSubscription

__all__ = ["Client", "Tasks"]

MAX_PAGE: Final = 1000
MAX_PAGE_SIZE: Final = 500
MAX_REMEMBERED: Final = 100_000
"""Task ids whose kind a client remembers (oldest forgotten first)."""
_REMINT_CODES: Final = frozenset({1003, 1004})


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """An async client of Kling multi-image generation (CometAPI by default).

    Use it as ``async with Client() as kling:``. ``generate`` runs one job to its end,
    ``batch`` many; ``tasks`` holds the raw calls (one HTTP call each, a typed result or a
    :class:`~kling_async.KlingError`).

    Args:
        api_key: The key; by default the profile reads it from the environment
            (``COMETAPI_KEY`` for CometAPI).
        profile: Routes and auth (:class:`~kling_async.CometAPI` by default, or
            :class:`~kling_async.Kling`).
        base_url: Overrides the profile's base URL (``http://`` only for loopback).
        timeouts: Timeouts of each HTTP call.
        transport: A custom transport (tests, proxies); the client does not close it.
        limits: Engine concurrency, request rate and adaptive account slots.
        backoff: Engine retry policy.
        poll: Engine poll policy.
        clock: Where the engine reads time and sleeps (a ``VirtualClock`` in tests).
        webhook: Status-change callbacks as hints: a :class:`WebhookConfig` (the client
            serves a receiver for its lifetime) or a :class:`WebhookReceiver` the caller
            mounted in an app of their own (the client subscribes but does not close it).
            Each create then carries a ``callback_url``; a task is polled slowly until a
            delivery says it ended (then it is re-queried at once) or until it runs past
            its expected time (then it is polled normally). None: polling only.
        strict_rules: Check each request against the profile's documented rules
            (``profile.rules``) before sending. False sends a request past a rule the
            server may have relaxed, logging a warning for each rule it breaks; the
            bounds every profile shares and the image rules are still checked.
        server_time_scale: Client seconds per server second, for run times read from the
            server's timestamps (1 except against a time-scaled simulator).
        coordination: A ``postgresql://`` URL shared by every process of this account
            (workers, web servers): their running tasks stay under one account limit
            together, with one adaptive limit (``limits`` sets its start and cap).

    Raises:
        ValueError: No key found, or a bad ``base_url``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        profile: Profile | None = None,
        base_url: str | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        transport: Transport | None = None,
        limits: Limits = DEFAULT_LIMITS,
        backoff: Backoff = DEFAULT_BACKOFF,
        poll: PollPolicy = DEFAULT_POLL,
        clock: Clock | None = None,
        webhook: WebhookConfig | WebhookReceiver | None = None,
        strict_rules: bool = True,
        server_time_scale: float = 1.0,
        coordination: str | None = None,
    ) -> None:
        if profile is None:
            profile = CometAPI(api_key)
        elif api_key is not None:
            key: dict[str, Any] = {"api_key": api_key}
            profile = attrs.evolve(profile, **key)
        if base_url is not None:
            profile = attrs.evolve(profile, base_url=base_url)
        if not profile.has_credentials():
            env = "KLING_API_KEY" if isinstance(profile, Kling) else "COMETAPI_KEY"
            raise ValueError(f"no API key: pass api_key=... or set {env}")
        self._profile = profile
        self._strict_rules = strict_rules
        # Masked in every string of every answer; the token of each call is added to these.
        secrets = [getattr(profile, name, None) for name in ("api_key", "access_key", "secret_key")]
        self._redactor = Redactor(secrets)
        remember_secrets(*secrets)  # any KlingError, wherever built, masks them too
        self._timeouts = timeouts
        self._owns_transport = transport is None
        self._transport: Transport | None = transport
        self._aiohttp: AiohttpTransport | None = None
        self._state = _State.UNOPENED
        self._slots: PostgresSlots | None = None
        if coordination is not None:
            self._slots = shared_slots(
                coordination,
                base_url=profile.base_url,
                secrets=[secret for secret in secrets if secret],
                limits=limits,
            )
        self._tasks = Tasks(self)
        self._engine = Engine(
            _EngineCalls(self),
            limits=limits,
            backoff=backoff,
            poll=poll,
            clock=clock,
            server_time_scale=server_time_scale,
            slot_gate=self._slots,
        )
        self._webhook: WebhookReceiver | None
        if isinstance(webhook, WebhookConfig):
            self._webhook = WebhookReceiver(webhook, now=self._engine.clock.wall)
            self._owns_webhook = True
        else:
            self._webhook = webhook
            self._owns_webhook = False
        self._subscription: WebhookSubscription | None = None

    __aexit__ = lifetime.__aexit__

    def __repr__(self) -> str:
        return f"Client(profile={self._profile!r}, state={self._state.value})"

    @property
    def profile(self) -> Profile:
        """The routes and auth in use."""
        return self._profile

    @property
    def tasks(self) -> "Tasks":
        """The raw task calls: ``create``, ``get`` (by id) and ``list``, one HTTP call each."""
        return self._tasks

    @property
    def timeouts(self) -> Timeouts:
        """The timeouts of each HTTP call."""
        return self._timeouts

    @property
    def webhook(self) -> WebhookReceiver | None:
        """The webhook receiver feeding the scheduler (read its ``statistics()``), if any."""
        return self._webhook

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError(f"a Client can be opened once (it is {self._state.value})")
        if self._owns_transport:
            self._aiohttp = AiohttpTransport(timeouts=self._timeouts)
            await self._aiohttp.__aenter__()
            self._transport = self._aiohttp
        self._state = _State.OPEN
        try:
            if self._slots is not None:
                await self._slots.start()
            await self._engine.start()
            if self._webhook is not None:
                if self._owns_webhook:
                    await self._webhook.__aenter__()
                self._subscription = self._webhook.subscribe(self._engine.hint)
                config = self._webhook.config
                self._engine.use_webhooks(
                    self._subscription.callback_url,
                    poll_interval=config.poll_interval,
                    poll_grace=config.poll_grace,
                )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close the HTTP session and webhook receiver (if the client made them). Idempotent."""
        self._state = _State.CLOSED
        await self._engine.aclose()  # first: nothing of the engine runs after this
        if self._slots is not None:
            await self._slots.aclose()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()
        if self._webhook is not None and self._owns_webhook:
            await self._webhook.aclose()
        transport, self._aiohttp = self._aiohttp, None
        if transport is not None:
            await transport.aclose()

    def _require_transport(self) -> Transport:
        if self._state is _State.CLOSED:
            raise RuntimeError("the Client is closed")
        if self._transport is None:
            raise RuntimeError("the Client is not open: use `async with Client(...) as kling:`")
        return self._transport

    async def _call(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        kind: Kind,
        body: bytes | None = None,
        task_id: str | None = None,
    ) -> Any:
        """Send one request and return the envelope's ``data`` (the seam for the engine)."""
        transport = self._require_transport()
        authorization = self._profile.authorization()
        headers = {"Authorization": authorization, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = HttpRequest(method, url, headers, body)
        started = time.monotonic()
        try:
            response = await transport.send(request)
            redactor = self._redactor.including(authorization.removeprefix("Bearer "))
            data = decode_response(response, secrets=redactor)
        except KlingError as exc:
            if exc.task_id is None:
                exc.task_id = task_id
            if isinstance(exc, AuthenticationError) and exc.code in _REMINT_CODES:
                # JWT expired or not yet valid: the next call mints a fresh one.
                self._profile.invalidate_token()
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s %s failed: %s",
                    method,
                    endpoint,
                    type(exc).__name__,
                    extra={
                        "endpoint": endpoint,
                        "kind": kind.value,
                        "task_id": task_id,
                        "error": type(exc).__name__,
                        "scope": exc.scope.value,
                        "http_status": exc.http_status,
                        "code": exc.code,
                        "request_id": exc.request_id,
                        "elapsed": time.monotonic() - started,
                    },
                )
            raise
        # Checked first: building the record's fields costs more than the call's own work.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %s",
                method,
                endpoint,
                response.status,
                extra={
                    "endpoint": endpoint,
                    "kind": kind.value,
                    "task_id": task_id,
                    "http_status": response.status,
                    "request_id": redactor.optional(response.header("x-request-id")),
                    "elapsed": time.monotonic() - started,
                },
            )
        return data

    # --- engine: generate(), batch() and friends (owned by the engine; see _engine/) ---------

    async def generate(
        self, request: Request, *, key: str | None = None, deadline: float | None = None
    ) -> Task:
        """Run one job to its end and return the finished task (videos or images).

        Concurrent calls share one submission lane, one poll scheduler and one set of
        limits with each other and with this client's batches.

        Args:
            request: What to generate.
            key: A stable job key; the external task id derives from it, so calling again
                with the same key adopts the task made the first time instead of paying
                twice. None: a fresh random id.
            deadline: Seconds after which the job ends with ``JobTimedOut`` (its task keeps
                running on the server and keeps its slot until it ends).

        Raises:
            KlingError: The job's error: ``TaskFailed``, ``JobTimedOut``, a job- or
                batch-scoped API error, or the last transient error once retries ran out.
        """
        self._require_transport()
        return await self._engine.generate(request, key=key, deadline=deadline)

    def batch(
        self,
        *,
        journal: "str | os.PathLike[str] | None" = None,
        out_dir: "str | os.PathLike[str] | None" = None,
        batch_id: str | None = None,
        max_pending: int = 1000,
        deadline: float | None = None,
        store: BatchStore | None = None,
        downloads: DownloadLimits | None = None,
    ) -> Batch:
        """Return a batch of jobs on this client (use ``async with client.batch() as batch``).

        Args:
            journal: SQLite journal file that makes the batch resumable, or a
                ``postgresql://`` URL: the batch is kept there and any number of processes
                passing the same URL and ``batch_id`` share its jobs (workers).
            out_dir: Folder where result files are downloaded as jobs succeed.
            batch_id: Part of every external task id (default: random, or the journal's).
            max_pending: Jobs accepted but not yet sent before ``submit`` waits.
            deadline: Seconds per job, from its submission, before it ends TIMED_OUT.
            store: Where job states are written (the journal's seam; default: nowhere).
            downloads: Bounds on each result file downloaded into ``out_dir`` (byte caps,
                minimum speed, time budget, concurrency); default ``DownloadLimits()``.

        Raises:
            ValueError: ``store`` with ``journal``/``out_dir``, or ``downloads`` without
                ``out_dir``.
        """
        if downloads is not None and out_dir is None:
            raise ValueError("downloads= bounds the files saved in out_dir=: pass out_dir too")
        prepare = None
        if journal is not None or out_dir is not None:
            if store is not None:
                raise ValueError("pass either journal=/out_dir= or store=, not both")
            prepare = functools.partial(
                _journaled.prepare,
                journal=journal,
                out_dir=out_dir,
                batch_id=batch_id,
                downloads=downloads,
            )
        return self._engine.batch(
            batch_id=batch_id,
            max_pending=max_pending,
            deadline=deadline,
            store=store,
            prepare=prepare,
        )

    def refresh(self, task_id: str) -> bool:
        """Make a running task due for a poll now (a webhook hint); False if unknown."""
        return self._engine.refresh(task_id)

    def engine_statistics(self) -> EngineStatistics:
        """Return the engine's counters (requests, limits, lane, scheduler)."""
        return self._engine.statistics()

    # --- end of the engine's part -------------------------------------------------------------


class Tasks:
    """The raw task calls of a :class:`Client` (``client.tasks``): each one HTTP call.

    ``create`` validates and creates a task, ``get`` queries one by its id (the kind is
    remembered for tasks this client created), ``list`` reads one page of the account's
    tasks. For whole jobs (retries, polling, limits) use ``client.generate`` and
    ``client.batch``.
    """

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._kinds: collections.OrderedDict[str, Kind] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"<Tasks of {self._client!r}>"

    def _remember(self, task_id: str, kind: Kind) -> None:
        self._kinds[task_id] = kind
        if len(self._kinds) > MAX_REMEMBERED:
            self._kinds.popitem(last=False)

    async def create(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Validate ``request`` locally, then create its task (one POST).

        The client remembers the task's kind (by task id and external task id), so
        :meth:`get` needs no ``kind`` for it.

        Args:
            request: A :class:`MultiImageToVideo` or :class:`MultiImageToImage`.
            external_task_id: Overrides the request's ``external_task_id``.
            callback_url: Overrides the request's ``callback_url``.

        Raises:
            InvalidRequest: A rule is broken (no request was sent).
            KlingError: The typed error of the answer or of the connection.
        """
        if not isinstance(request, MultiImageToVideo | MultiImageToImage):
            raise TypeError(f"expected a request model, got {type(request).__name__}")
        changes: dict[str, Any] = {}
        if external_task_id is not None:
            changes["external_task_id"] = external_task_id
        if callback_url is not None:
            changes["callback_url"] = callback_url
        if changes:
            request = attrs.evolve(request, **changes)
        await check_request(request, self._client.profile.rules, strict=self._client._strict_rules)
        wire = await request_to_wire(
            request, scene_image_field=self._client.profile.scene_image_field
        )
        if _is_large(request):
            body = await anyio.to_thread.run_sync(_dump, wire)
        else:
            body = _dump(wire)
        data = await self._client._call(
            "POST",
            self._client.profile.create_url(request.kind),
            endpoint="create",
            kind=request.kind,
            body=body,
        )
        task = parse_task(data)
        self._remember(task.task_id, request.kind)
        if request.external_task_id is not None:
            self._remember(request.external_task_id, request.kind)
        return task

    async def get(self, task_id: str, *, kind: Kind | None = None) -> Task:
        """Query one task by its task id or its external task id (one GET).

        Args:
            task_id: The task id, or the external task id it was created with.
            kind: The task's kind; not needed for a task this client created.

        Raises:
            ValueError: An empty id, or ``kind`` not given for a task this client did
                not create.
            NotFound: No such task (a definite answer: it does not exist).
            KlingError: Any other typed error.
        """
        if not task_id:
            raise ValueError("task_id must not be empty")
        if kind is None:
            kind = self._kinds.get(task_id)
            if kind is None:
                raise ValueError(
                    f"this client did not create task {task_id!r}: "
                    "pass kind=ka.Kind.VIDEO or kind=ka.Kind.IMAGE"
                )
        return await self._get(Kind(kind), task_id)

    async def _get(self, kind: Kind, task_id: str) -> Task:
        if not task_id:
            raise ValueError("task_id must not be empty")
        data = await self._client._call(
            "GET",
            self._client.profile.task_url(kind, task_id),
            endpoint="query",
            kind=kind,
            task_id=task_id,
        )
        try:
            return parse_task(data)
        except TransportError as exc:
            exc.task_id = task_id
            raise

    async def list(self, kind: Kind, page: int = 1, page_size: int = 30) -> "list[Task]":
        """One page of the account's tasks of ``kind`` (one GET; a short page is the last).

        Raises:
            ValueError: ``page`` outside 1..1000 or ``page_size`` outside 1..500.
            KlingError: The typed error of the answer (404/405: no list endpoint).
        """
        kind = Kind(kind)
        if not 1 <= page <= MAX_PAGE:
            raise ValueError(f"page must be 1..{MAX_PAGE}, got {page}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        data = await self._client._call(
            "GET", self._client.profile.list_url(kind, page, page_size), endpoint="list", kind=kind
        )
        return parse_task_list(data)


class _EngineCalls:
    """The engine's three calls (its ``TaskApi``), through the client's :class:`Tasks`."""

    def __init__(self, client: "Client") -> None:
        self._client = client

    async def create_task(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        return await self._client.tasks.create(
            request, external_task_id=external_task_id, callback_url=callback_url
        )

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        return await self._client.tasks._get(kind, task_id)

    async def list_tasks(self, kind: Kind, page: int = 1, page_size: int = 30) -> "list[Task]":
        return await self._client.tasks.list(kind, page, page_size)


def _dump(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _is_large(request: Request) -> bool:
    """True when the JSON body is worth dumping off the event loop (big inline images)."""
    images = list(request.images)
    if isinstance(request, MultiImageToVideo):
        images.extend(mask.mask for mask in request.dynamic_masks)
        if request.static_mask is not None:
            images.append(request.static_mask)
    else:
        images.extend(image for image in (request.scene_image, request.style_image) if image)
    inline = 0
    for image in images:
        if image.origin is ImageOrigin.PATH:
            return True  # a file of any size: its Base64 text is in the body now
        if image.origin is not ImageOrigin.URL:
            assert isinstance(image.source, bytes | str)
            inline += len(image.source)
    # A worker thread costs more than dumping a few small inline images on the loop.
    return inline > _OFFLOAD_BYTES
