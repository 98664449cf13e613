"""Standard Webhooks verification: secrets, signed content, timestamps, refusal reasons."""

import base64
import binascii
import enum
import hashlib
import hmac
import time
import types
from collections.abc import Callable, Mapping
from typing import Final

from .._core.errors import KlingError

__all__ = ["DEFAULT_TOLERANCE", "RejectReason", "WebhookVerificationError", "WebhookVerifier"]


DEFAULT_TOLERANCE: Final = 300.0
"""Seconds a ``webhook-timestamp`` may lie in the past or the future (Standard Webhooks)."""
_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 -- a format marker, not a secret
_SIGNATURE_VERSION: Final = "v1"
_MAX_TIMESTAMP_DIGITS: Final = 12


class RejectReason(enum.Enum):
    """Why a delivery was refused; the keys of :attr:`WebhookStatistics.rejected`."""

    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNKNOWN_TOKEN = "unknown_token"  # noqa: S105 -- a reason name, not a secret
    MISSING_HEADERS = "missing_headers"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"

    @property
    def http_status(self) -> int:
        """The HTTP status the receiver answers for this reason."""
        return _HTTP_STATUS[self]


_HTTP_STATUS: Final[Mapping[RejectReason, int]] = types.MappingProxyType(
    {
        RejectReason.RATE_LIMITED: 429,
        RejectReason.TOO_LARGE: 413,
        RejectReason.UNKNOWN_TOKEN: 404,
        RejectReason.MISSING_HEADERS: 401,
        RejectReason.BAD_TIMESTAMP: 401,
        RejectReason.BAD_SIGNATURE: 401,
        RejectReason.MALFORMED: 400,
    }
)


class WebhookVerificationError(KlingError, ValueError):
    """A delivery failed Standard Webhooks verification (HTTP status 401 when served).

    Attributes:
        reason: ``MISSING_HEADERS``, ``BAD_TIMESTAMP`` or ``BAD_SIGNATURE``.
    """

    def __init__(self, message: str, reason: RejectReason) -> None:
        super().__init__(message, http_status=reason.http_status)
        self.reason = reason


def decode_secret(secret: str | bytes) -> bytes:
    """The HMAC key: ``bytes`` as given, a ``str`` as (optionally ``whsec_``-prefixed) base64."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.removeprefix(_SECRET_PREFIX)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            # The message must not echo the secret.
            raise ValueError("webhook secret: not base64 after the whsec_ prefix") from exc
    if not key:
        raise ValueError("webhook secret: empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup on any mapping (aiohttp's is already insensitive)."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


class WebhookVerifier:
    """Standard Webhooks (``v1``, HMAC-SHA256) signer and verifier.

    The scheme is a single HMAC-SHA256 over ``"{id}.{timestamp}.{body}"``; the stdlib's
    ``hmac``, ``hashlib`` and ``base64`` implement it in a few lines with a constant-time
    compare, so no ``standardwebhooks``/``svix`` dependency (and its transitive pins) is
    worth taking on for it.

    Args:
        secret: ``"whsec_<base64>"`` (or the bare base64) as Kling shows it, or the raw
            key as ``bytes``.
        tolerance: seconds a timestamp may lie before or after ``now()``.
        now: wall clock in Unix seconds; injected by tests.

    Raises:
        ValueError: the secret is empty or not base64 (the message never shows it).
    """

    __slots__ = ("_key", "_now", "tolerance")

    def __init__(
        self,
        secret: str | bytes,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        now: Callable[[], float] = time.time,
    ) -> None:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self._key = decode_secret(secret)
        self._now = now
        self.tolerance = tolerance

    def __repr__(self) -> str:
        return f"WebhookVerifier(secret=<hidden>, tolerance={self.tolerance!r})"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value (``"v1,<base64>"``) for one delivery."""
        mac = hmac.new(self._key, _signed_content(msg_id, timestamp, body), hashlib.sha256)
        return f"{_SIGNATURE_VERSION},{base64.b64encode(mac.digest()).decode('ascii')}"

    def headers(self, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The three Standard Webhooks headers for a delivery (timestamp defaults to now)."""
        ts = int(self._now()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": self.sign(msg_id, ts, body),
        }

    def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Check a delivery's headers against its raw body; return its ``webhook-id``.

        Any one of the space-separated ``v1,<base64>`` signatures matching is enough (the
        sender may list several during a key rotation); other versions are ignored.

        Raises:
            WebhookVerificationError: headers missing, timestamp unreadable or outside
                the tolerance, or no signature matches.
        """
        msg_id = _header(headers, "webhook-id")
        raw_ts = _header(headers, "webhook-timestamp")
        raw_sigs = _header(headers, "webhook-signature")
        if not msg_id or not raw_ts or not raw_sigs:
            raise WebhookVerificationError(
                "missing webhook-id, webhook-timestamp or webhook-signature",
                RejectReason.MISSING_HEADERS,
            )
        if not (raw_ts.isascii() and raw_ts.isdigit() and len(raw_ts) <= _MAX_TIMESTAMP_DIGITS):
            raise WebhookVerificationError(
                "webhook-timestamp is not Unix seconds", RejectReason.BAD_TIMESTAMP
            )
        timestamp = int(raw_ts)
        if abs(self._now() - timestamp) > self.tolerance:
            raise WebhookVerificationError(
                "webhook-timestamp outside the tolerance", RejectReason.BAD_TIMESTAMP
            )
        expected = self.sign(msg_id, timestamp, body).encode("ascii")
        matched = False
        for candidate in raw_sigs.split():
            if not candidate.startswith(_SIGNATURE_VERSION + ","):
                continue
            # Keep comparing after a match: the work done must not depend on which one matched.
            matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
        if not matched:
            raise WebhookVerificationError(
                "no webhook-signature matches", RejectReason.BAD_SIGNATURE
            )
        return msg_id


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body
