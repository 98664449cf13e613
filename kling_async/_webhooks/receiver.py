"""Status-change callbacks: an ``aiohttp.web`` receiver that turns deliveries into hints.

Kling and CometAPI POST the task object to a job callback_url on every status
change. A delivery is only ever a *hint*: the receiver hands ``(task_id, status)`` to the
subscriber on_hint callback (the client passes ``Engine.hint``, which makes the task
due for a query now when the delivery claims it ended); nothing in a payload is trusted,
and polling stays on as a slow safety net.

What reaches ``on_hint`` is bounded and cheap, whatever arrives on the socket::

    POST <path>/<token>
      token not subscribed ......... 404  (429 once the strangers' bucket is empty)
      the token's bucket empty ..... 429  (no other work done)
      Content-Length too big ....... 413
      body past the cap ............ 413
      signature bad (secret set) ... 401
      not JSON / not a task ........ 400
      same delivery seen ........... 200  counted as a duplicate, no hint
      status older than one seen ... 200  counted as stale, no hint
      otherwise .................... 200  on_hint(task_id, status)

Every answer is counted in :meth:`WebhookReceiver.statistics`; nothing a sender does
raises into the caller batch.

The token is checked before any rate limit, and each subscribed token has a bucket of its
own (``max_rate`` per ``rate_period``); unknown tokens share one more. So a flood of
guessed tokens, or of forged bodies to another batch's token, cannot use up the
deliveries of a genuine one.
"""

import asyncio
import collections
import hashlib
import ipaddress
import json
import logging
import secrets
import time
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, Self

import aiohttp
import anyio
import attrs
from aiohttp import web
from aiolimiter import AsyncLimiter

from .._api.wire import parse_task
from .._core import lifetime
from .._core.errors import MalformedResponse
from .._core.models import TaskStatus
from .._core.redact import scrub_credentials
from .config import WebhookConfig, clean_path
from .signing import RejectReason, WebhookVerificationError, WebhookVerifier

__all__ = ["HintCallback", "WebhookReceiver", "WebhookStatistics", "WebhookSubscription", "logger"]


logger = logging.getLogger("kling_async.webhook")
_TOKEN_BYTES: Final = 24
# Bounded memories per subscription: past them the oldest entries go, and a late
# duplicate costs one extra idempotent refresh, nothing worse.
_SEEN_DELIVERIES: Final = 8192
_SEEN_TASKS: Final = 32768


HintCallback = Callable[[str, TaskStatus | None], object]
"""``on_hint(task_id, status)``: must not block; ``status`` is ``None`` when unreadable."""

# Spellings seen in the native task object, the wrapped CometAPI shape and Kling's
# Standard Webhooks body; anything else is still a hint, with an unknown status.
_STATUS_WORDS: Final[Mapping[str, TaskStatus]] = types.MappingProxyType(
    {
        "submitted": TaskStatus.SUBMITTED,
        "queued": TaskStatus.SUBMITTED,
        "not_start": TaskStatus.SUBMITTED,
        "processing": TaskStatus.PROCESSING,
        "in_progress": TaskStatus.PROCESSING,
        "succeed": TaskStatus.SUCCEEDED,
        "succeeded": TaskStatus.SUCCEEDED,
        "success": TaskStatus.SUCCEEDED,
        "failed": TaskStatus.FAILED,
        "failure": TaskStatus.FAILED,
    }
)
_RANK: Final[Mapping[TaskStatus, int]] = types.MappingProxyType(
    {
        TaskStatus.SUBMITTED: 0,
        TaskStatus.PROCESSING: 1,
        TaskStatus.SUCCEEDED: 2,
        TaskStatus.FAILED: 2,
    }
)


@attrs.frozen
class WebhookStatistics:
    """Counters of one receiver since it was made.

    ``received == accepted + duplicates + stale + sum(rejected.values())`` always holds.

    Attributes:
        received: POSTs that reached the handler.
        accepted: deliveries turned into a hint.
        duplicates: valid deliveries already seen (same ``webhook-id``, same body, or a
            status already hinted for the task).
        stale: valid deliveries older than a status already hinted (out of order).
        rejected: refused deliveries by reason.
        hint_errors: ``on_hint`` callbacks that raised (logged, then ignored).
        subscriptions: tokens currently registered.
    """

    received: int
    accepted: int
    duplicates: int
    stale: int
    rejected: Mapping[RejectReason, int]
    hint_errors: int
    subscriptions: int

    @property
    def rejected_total(self) -> int:
        """All refused deliveries."""
        return sum(self.rejected.values())


@attrs.frozen
class _Delivery:
    task_id: str
    status: TaskStatus | None


def _loose_task(obj: Any, depth: int = 0) -> _Delivery | None:
    """Task id and status from a body the core parser refused (it is only a hint)."""
    if not isinstance(obj, dict) or depth > 2:
        return None
    for id_key, status_key in (("task_id", "task_status"), ("id", "status")):
        task_id, raw = obj.get(id_key), obj.get(status_key)
        # Kling's Standard Webhooks body is {"id": ..., "status": "succeeded", ...}.
        if isinstance(task_id, str) and task_id and (id_key == "task_id" or isinstance(raw, str)):
            status = _STATUS_WORDS.get(raw.strip().lower()) if isinstance(raw, str) else None
            return _Delivery(task_id=task_id, status=status)
    return _loose_task(obj.get("data"), depth + 1)


def _parse_delivery(body: bytes) -> _Delivery:
    """Task id and claimed status of a delivery body.

    The core parser reads the documented shapes; anything else that still names a task
    (an envelope, an unknown status spelling, Kling's Standard Webhooks body) is read
    loosely: the payload is only a hint, the scheduler re-queries the task.

    Raises:
        ValueError: not JSON, or no task id in it.
    """
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError("delivery body is not JSON") from exc
    try:
        task = parse_task(obj, path="$")
    except MalformedResponse:
        delivery = _loose_task(obj)
    else:
        delivery = _Delivery(task_id=task.task_id, status=task.status) if task.task_id else None
    if delivery is None:
        raise ValueError("delivery body holds no task_id")
    return delivery


class _LRUSet:
    """A bounded set that forgets its oldest members."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int) -> None:
        self._items: collections.OrderedDict[object, None] = collections.OrderedDict()
        self._limit = limit

    def add(self, item: object) -> bool:
        """Add ``item``; ``False`` when it was already there."""
        if item in self._items:
            self._items.move_to_end(item)
            return False
        self._items[item] = None
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True


class WebhookSubscription:
    """One registered token: its callback URL and the hint callback behind it.

    Close it (or leave its ``with`` block) when the batch ends; later deliveries to its
    token answer 404.
    """

    __slots__ = ("_deliveries", "_limiter", "_on_hint", "_receiver", "_tasks", "token")

    def __init__(self, receiver: "WebhookReceiver", token: str, on_hint: HintCallback) -> None:
        self._receiver = receiver
        self._on_hint = on_hint
        self.token = token
        self._deliveries = _LRUSet(_SEEN_DELIVERIES)
        # This token's own bucket, made on first use (aiolimiter binds to the running loop).
        self._limiter: AsyncLimiter | None = None
        # task id -> statuses already hinted for it
        self._tasks: collections.OrderedDict[str, set[TaskStatus]] = collections.OrderedDict()

    def __repr__(self) -> str:
        # The token is a capability: whoever knows it can post hints; keep it out of logs.
        try:
            base = self._receiver.public_url
        except RuntimeError:
            base = "unbound"
        return f"WebhookSubscription(base={base!r}, token=<hidden>)"

    @property
    def callback_url(self) -> str:
        """The URL to send as a job's ``callback_url``."""
        return f"{self._receiver.public_url}/{self.token}"

    @property
    def closed(self) -> bool:
        """Whether the token no longer receives deliveries."""
        return self._receiver._subscriptions.get(self.token) is not self

    def close(self) -> None:
        """Unregister the token (idempotent)."""
        if not self.closed:
            del self._receiver._subscriptions[self.token]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _classify(self, key: object, delivery: _Delivery) -> str:
        """``"new"``, ``"duplicate"`` or ``"stale"``; records a new one."""
        if not self._deliveries.add(key):
            return "duplicate"
        seen = self._tasks.get(delivery.task_id)
        if seen is None:
            seen = self._tasks[delivery.task_id] = set()
            if len(self._tasks) > _SEEN_TASKS:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(delivery.task_id)
        status = delivery.status
        if status is None:
            # An unknown spelling: every new delivery of it is worth one refresh.
            return "new"
        if status in seen:
            return "duplicate"
        if any(_RANK[s] > _RANK[status] for s in seen):
            return "stale"
        seen.add(status)
        return "new"


class WebhookReceiver:
    """Receives status-change callbacks and turns them into hints for subscribers.

    Serve it on its own for the lifetime of a client::

        async with WebhookReceiver(WebhookConfig(public_url="https://me.example/kling")) as r:
            with r.subscribe(scheduler.refresh) as sub:
                ...  # send sub.callback_url with each job

    or mount it into an application you already run (no binding of its own)::

        receiver = WebhookReceiver(WebhookConfig(public_url="https://me.example/hooks"))
        receiver.add_routes(app, "/hooks")  # or: app.add_subapp("/hooks", receiver.make_app())

    Args:
        config: listening and acceptance settings.
        now: wall clock in Unix seconds for signature timestamps; injected by tests.
    """

    def __init__(
        self,
        config: WebhookConfig | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._config = config if config is not None else WebhookConfig()
        self._verifier = (
            WebhookVerifier(self._config.secret, tolerance=self._config.tolerance, now=now)
            if self._config.secret is not None
            else None
        )
        self._subscriptions: dict[str, WebhookSubscription] = {}
        # The bucket shared by unknown tokens; made on first use (aiolimiter binds to the
        # running loop). Subscribed tokens each have their own.
        self._strangers: AsyncLimiter | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closed = False
        self._received = 0
        self._accepted = 0
        self._duplicates = 0
        self._stale = 0
        self._hint_errors = 0
        self._rejected: collections.Counter[RejectReason] = collections.Counter()

    def __repr__(self) -> str:
        where = self._url or self._config.public_url or "unbound"
        return f"WebhookReceiver({where!r}, signed={self._verifier is not None})"

    @property
    def config(self) -> WebhookConfig:
        """The settings this receiver was made with."""
        return self._config

    @property
    def url(self) -> str:
        """The local base URL it serves on, e.g. ``http://127.0.0.1:54321/hooks``.

        Raises:
            RuntimeError: the receiver is not serving (mounted, or not entered yet).
        """
        if self._url is None:
            raise RuntimeError("webhook receiver is not serving; use 'async with' first")
        return self._url

    @property
    def public_url(self) -> str:
        """The base of callback URLs: ``config.public_url``, else :attr:`url`.

        Raises:
            RuntimeError: no ``public_url`` configured and not serving.
        """
        if self._config.public_url is not None:
            return self._config.public_url.rstrip("/")
        return self.url

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, on_hint: HintCallback) -> WebhookSubscription:
        """Register ``on_hint`` under a fresh unguessable token.

        Args:
            on_hint: called as ``on_hint(task_id, status)`` for each new valid delivery;
                must not block; an exception from it is logged and counted, not raised.

        Raises:
            RuntimeError: the receiver is closed.
        """
        if self._closed:
            raise RuntimeError("webhook receiver is closed")
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        subscription = WebhookSubscription(self, token, on_hint)
        self._subscriptions[token] = subscription
        return subscription

    # -- mounting and serving --------------------------------------------------------

    def add_routes(self, app: web.Application, path: str | None = None) -> None:
        """Mount the delivery route ``POST <path>/{token}`` into a user's application.

        Args:
            app: the application (before it starts).
            path: route prefix; defaults to :attr:`WebhookConfig.route_path`.
        """
        prefix = self._config.route_path if path is None else clean_path(path)
        app.router.add_post(prefix + "/{token}", self._handle)

    def make_app(self) -> web.Application:
        """A sub-application serving ``POST /{token}``, for ``app.add_subapp(prefix, ...)``."""
        app = web.Application()
        self.add_routes(app, "")
        return app

    async def __aenter__(self) -> Self:
        """Bind ``config.host:config.port`` and serve until :meth:`aclose`."""
        if self._runner is not None or self._closed:
            raise RuntimeError("webhook receiver can be entered once")
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self._config.host, self._config.port)
            await site.start()
        except BaseException:
            await self.aclose()
            raise
        host, port = runner.addresses[0][:2]
        self._url = f"http://{_url_host(host)}:{port}{self._config.route_path}"
        logger.info("webhook receiver listening on %s", self._url)
        return self

    __aexit__ = lifetime.__aexit__

    async def aclose(self) -> None:
        """Stop serving (when serving) and drop every subscription; idempotent."""
        self._closed = True
        self._subscriptions.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    # -- statistics ------------------------------------------------------------------

    def statistics(self) -> WebhookStatistics:
        """A frozen snapshot of the counters."""
        return WebhookStatistics(
            received=self._received,
            accepted=self._accepted,
            duplicates=self._duplicates,
            stale=self._stale,
            rejected=types.MappingProxyType(dict(self._rejected)),
            hint_errors=self._hint_errors,
            subscriptions=len(self._subscriptions),
        )

    # -- the handler -----------------------------------------------------------------

    def _reject(self, reason: RejectReason, detail: str = "") -> web.Response:
        self._rejected[reason] += 1
        logger.debug("webhook delivery rejected: %s %s", reason.value, detail)
        return web.Response(status=reason.http_status, text=reason.value)

    def _new_limiter(self) -> AsyncLimiter:
        return AsyncLimiter(self._config.max_rate, self._config.rate_period)

    async def _take_rate_token(self, subscription: WebhookSubscription | None) -> bool:
        """One unit of the token's bucket (of the strangers' one for an unknown token)."""
        if subscription is None:
            limiter = self._strangers = self._strangers or self._new_limiter()
        else:
            limiter = subscription._limiter = subscription._limiter or self._new_limiter()
        if not limiter.has_capacity():
            return False
        # Does not wait: has_capacity() just said there is room and nothing ran since.
        await limiter.acquire()
        return True

    async def _read_capped(self, request: web.Request) -> bytes | None:
        limit = self._config.max_body
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(self, request: web.Request) -> web.Response:
        self._received += 1
        # Token first, then its own bucket: strangers cannot spend a genuine token's rate.
        subscription = self._subscriptions.get(request.match_info.get("token", ""))
        if not await self._take_rate_token(subscription):
            return self._reject(RejectReason.RATE_LIMITED)
        if subscription is None:
            return self._reject(RejectReason.UNKNOWN_TOKEN)
        length = request.content_length
        if length is not None and length > self._config.max_body:
            return self._reject(RejectReason.TOO_LARGE, f"content-length {length}")
        try:
            body = await self._read_capped(request)
        except (aiohttp.ClientPayloadError, ConnectionError, asyncio.IncompleteReadError) as exc:
            return self._reject(RejectReason.MALFORMED, f"body unreadable: {exc!r}")
        if body is None:
            return self._reject(RejectReason.TOO_LARGE, "body past the cap")
        key: object
        if self._verifier is not None:
            try:
                key = ("id", self._verifier.verify(request.headers, body))
            except WebhookVerificationError as exc:
                return self._reject(exc.reason, exc.message)
        else:
            # Unsigned: a webhook-id header proves nothing, the body's digest does.
            key = ("sha256", hashlib.sha256(body).digest())
        try:
            delivery = _parse_delivery(body)
        except ValueError as exc:
            return self._reject(RejectReason.MALFORMED, str(exc))
        if subscription.closed:
            # Unsubscribed while the body was read.
            return self._reject(RejectReason.UNKNOWN_TOKEN)
        verdict = subscription._classify(key, delivery)
        if verdict == "duplicate":
            self._duplicates += 1
        elif verdict == "stale":
            self._stale += 1
        else:
            self._accepted += 1
            self._hint(subscription, delivery)
        return web.Response(status=200)

    def _hint(self, subscription: WebhookSubscription, delivery: _Delivery) -> None:
        status = delivery.status.value if delivery.status is not None else None
        # The task id is the sender's text: no credential-shaped part of it reaches a log.
        logger.debug(
            "webhook hint task_id=%s status=%s", scrub_credentials(delivery.task_id), status
        )
        try:
            subscription._on_hint(delivery.task_id, delivery.status)
        except Exception:
            # A subscriber bug must not turn into a 500 the sender retries forever;
            # polling still finds the task.
            self._hint_errors += 1
            logger.warning(
                "webhook on_hint failed for task_id=%s",
                scrub_credentials(delivery.task_id),
                exc_info=True,
            )


def _url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
