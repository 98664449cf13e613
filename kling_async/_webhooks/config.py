"""Webhook configuration: where deliveries arrive, the secret, and the receiver limits."""

import urllib.parse
from typing import Final

import attrs

from .._core.config import WEBHOOK_POLL_GRACE, WEBHOOK_POLL_INTERVAL
from .signing import DEFAULT_TOLERANCE, decode_secret

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_MAX_RATE", "DEFAULT_RATE_PERIOD", "WebhookConfig"]


DEFAULT_MAX_BODY: Final = 64 * 1024
"""Largest accepted delivery body in bytes; a task object is a few hundred bytes."""
DEFAULT_MAX_RATE: Final = 200.0
"""Deliveries per :data:`DEFAULT_RATE_PERIOD` the receiver accepts before answering 429."""
DEFAULT_RATE_PERIOD: Final = 1.0
"""Seconds over which :data:`DEFAULT_MAX_RATE` deliveries may arrive (also the burst size)."""


def clean_path(path: str) -> str:
    """A route prefix: ``""`` or ``"/a/b"`` (no trailing slash, no placeholders)."""
    path = path.rstrip("/")
    if path and not path.startswith("/"):
        raise ValueError(f"webhook path must start with '/', got {path!r}")
    if any(c in path for c in "{}?#"):
        raise ValueError(f"webhook path must be a plain path, got {path!r}")
    return path


def _check_public_url(_: object, __: object, value: str | None) -> None:
    if value is None:
        return
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"public_url must be an absolute http(s) URL, got {value!r}")
    if "?" in value or "#" in value:
        raise ValueError(f"public_url must have no query or fragment, got {value!r}")


def _check_secret(_: object, __: object, value: str | bytes | None) -> None:
    if value is not None:
        decode_secret(value)


def _check_positive(_: object, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class WebhookConfig:
    """How a :class:`WebhookReceiver` listens and what it accepts, and how a client polls with it.

    With webhooks on, a task created with the client's ``callback_url`` is polled only
    every ``poll_interval`` (a slow safety net: a delivery makes it due at once) until
    ``poll_grace`` times the expected run time has passed with the task still running;
    from then on it is polled at the normal pace (:class:`~kling_async.PollPolicy`).

    Args:
        public_url: the URL the API server can reach that leads to this receiver's
            ``path`` (a tunnel or reverse proxy); callback URLs are
            ``<public_url>/<token>``. ``None``: use the bound local URL (tests, simulator).
        host: interface to bind when the receiver serves on its own.
        port: port to bind; ``0`` picks a free one (read it from ``receiver.url``).
        path: route prefix; ``None`` takes the path of ``public_url`` (``""`` without one).
        secret: Standard Webhooks secret (``"whsec_..."`` or raw bytes); when set, every
            delivery must carry a valid signature. Never shown in a repr.
        tolerance: seconds of clock skew allowed on ``webhook-timestamp``, both ways.
        max_body: largest body accepted, in bytes.
        max_rate: deliveries accepted per ``rate_period`` and token (a token bucket each, also
            the burst; unknown tokens share one).
        rate_period: seconds of the rate window.
        poll_interval: safety interval between two polls of a task deliveries cover, seconds.
        poll_grace: share of the expected run time after which a task that has not ended
            is polled at the normal pace again.
    """

    public_url: str | None = attrs.field(default=None, validator=_check_public_url)
    host: str = "127.0.0.1"
    port: int = attrs.field(
        default=0,
        validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535)),
    )
    path: str | None = None
    secret: str | bytes | None = attrs.field(default=None, repr=False, validator=_check_secret)
    tolerance: float = attrs.field(default=DEFAULT_TOLERANCE, validator=attrs.validators.ge(0))
    max_body: int = attrs.field(default=DEFAULT_MAX_BODY, validator=attrs.validators.gt(0))
    max_rate: float = attrs.field(default=DEFAULT_MAX_RATE, validator=_check_positive)
    rate_period: float = attrs.field(default=DEFAULT_RATE_PERIOD, validator=_check_positive)
    poll_interval: float = attrs.field(default=WEBHOOK_POLL_INTERVAL, validator=_check_positive)
    poll_grace: float = attrs.field(default=WEBHOOK_POLL_GRACE, validator=_check_positive)

    def __attrs_post_init__(self) -> None:
        clean_path(self.route_path)

    @property
    def route_path(self) -> str:
        """The route prefix actually served (``path``, else ``public_url``'s path)."""
        if self.path is not None:
            return clean_path(self.path)
        if self.public_url is not None:
            return clean_path(urllib.parse.urlsplit(self.public_url).path)
        return ""
