"""The Client: one HTTP call per method, typed results or typed errors."""

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
from ._core.lifetime import AsyncClosing
from ._core.models import (
    ImageOrigin,
    Kind,
    MultiImageToImage,
    MultiImageToVideo,
    Request,
    Task,
)
from ._durable import journaled as _journaled
from ._durable.postgres_slots import PostgresSlots, shared_slots
from ._engine import Batch, BatchStore, Engine, EngineStatistics
from ._webhooks.config import WebhookConfig
from ._webhooks.receiver import WebhookReceiver, WebhookSubscription

__all__ = ["Client"]

MAX_PAGE: Final = 1000
MAX_PAGE_SIZE: Final = 500
_REMINT_CODES: Final = frozenset({1003, 1004})


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Client(AsyncClosing):
    """An async client of Kling multi-image generation (CometAPI by default).

    Use it as ``async with Client() as kling:``. Each method below is exactly one HTTP
    call and returns a typed result or raises a :class:`~kling_async.KlingError`.

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
        # Blanked out of server messages; the token of each call is added to these.
        self._secrets = tuple(
            secret
            for secret in (getattr(profile, "api_key", None), getattr(profile, "secret_key", None))
            if secret
        )
        self._timeouts = timeouts
        self._owns_transport = transport is None
        self._transport: Transport | None = transport
        self._aiohttp: AiohttpTransport | None = None
        self._state = _State.UNOPENED
        self._slots: PostgresSlots | None = None
        if coordination is not None:
            self._slots = shared_slots(
                coordination, base_url=profile.base_url, secrets=self._secrets, limits=limits
            )
        self._engine = Engine(
            self, limits=limits, backoff=backoff, poll=poll, clock=clock, slot_gate=self._slots
        )
        self._webhook: WebhookReceiver | None
        if isinstance(webhook, WebhookConfig):
            self._webhook = WebhookReceiver(webhook, now=self._engine.clock.wall)
            self._owns_webhook = True
        else:
            self._webhook = webhook
            self._owns_webhook = False
        self._subscription: WebhookSubscription | None = None

    def __repr__(self) -> str:
        return f"Client(profile={self._profile!r}, state={self._state.value})"

    @property
    def profile(self) -> Profile:
        """The routes and auth in use."""
        return self._profile

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
                self._engine.use_webhooks(self._subscription.callback_url)
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
            secrets = (*self._secrets, authorization.removeprefix("Bearer "))
            data = decode_response(response, secrets=secrets)
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
                    "request_id": response.header("x-request-id"),
                    "elapsed": time.monotonic() - started,
                },
            )
        return data

    async def create_task(
        self,
        request: Request,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Validate ``request`` locally, then create its task (one POST).

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
        await check_request(request)
        wire = await request_to_wire(request, scene_image_field=self._profile.scene_image_field)
        if _is_large(request):
            body = await anyio.to_thread.run_sync(_dump, wire)
        else:
            body = _dump(wire)
        data = await self._call(
            "POST",
            self._profile.create_url(request.kind),
            endpoint="create",
            kind=request.kind,
            body=body,
        )
        return parse_task(data)

    async def create_video_task(
        self,
        request: MultiImageToVideo,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Create a multi-image-to-video task; see :meth:`create_task`."""
        if not isinstance(request, MultiImageToVideo):
            raise TypeError(f"expected MultiImageToVideo, got {type(request).__name__}")
        return await self.create_task(
            request, external_task_id=external_task_id, callback_url=callback_url
        )

    async def create_image_task(
        self,
        request: MultiImageToImage,
        *,
        external_task_id: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Create a multi-image-to-image task; see :meth:`create_task`."""
        if not isinstance(request, MultiImageToImage):
            raise TypeError(f"expected MultiImageToImage, got {type(request).__name__}")
        return await self.create_task(
            request, external_task_id=external_task_id, callback_url=callback_url
        )

    async def get_task(self, kind: Kind, task_id: str) -> Task:
        """Query one task by its task id or its external task id (one GET).

        Raises:
            NotFound: No such task (a definite answer: it does not exist).
            KlingError: Any other typed error.
        """
        kind = Kind(kind)
        if not task_id:
            raise ValueError("task_id must not be empty")
        data = await self._call(
            "GET",
            self._profile.task_url(kind, task_id),
            endpoint="query",
            kind=kind,
            task_id=task_id,
        )
        try:
            return parse_task(data)
        except TransportError as exc:
            exc.task_id = task_id
            raise

    async def list_tasks(self, kind: Kind, page: int = 1, page_size: int = 30) -> list[Task]:
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
        data = await self._call(
            "GET", self._profile.list_url(kind, page, page_size), endpoint="list", kind=kind
        )
        return parse_task_list(data)

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
        """
        batch = self._engine.batch(
            batch_id=batch_id, max_pending=max_pending, deadline=deadline, store=store
        )
        if journal is not None or out_dir is not None:
            if store is not None:
                raise ValueError("pass either journal=/out_dir= or store=, not both")
            batch.configure(
                prepare=functools.partial(
                    _journaled.prepare, journal=journal, out_dir=out_dir, batch_id=batch_id
                )
            )
        return batch

    def refresh(self, task_id: str) -> bool:
        """Make a running task due for a poll now (a webhook hint); False if unknown."""
        return self._engine.refresh(task_id)

    def engine_statistics(self) -> EngineStatistics:
        """Return the engine's counters (requests, limits, lane, scheduler)."""
        return self._engine.statistics()

    # --- end of the engine's part -------------------------------------------------------------


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
