"""Redaction: the API key and bearer tokens out of every string that came from outside.

A gateway may echo the ``Authorization`` header anywhere: a request id, a redirect
``Location``, a failed task's message, a result URL. Every string read from an answer
passes through one :class:`Redactor` before it reaches an exception, a log record, a
parsed task, the journal or a results file. Two passes, in this order:

1. the literal secrets (the key, the Kling access and secret keys, the token of the
   call), compared without case, also in their percent-encoded spellings;
2. anything shaped like a credential whoever it belongs to: ``Bearer <token>`` (a token
   of 8 characters or more, also URL-encoded as ``Bearer%20...`` or ``Bearer+...``) and
   JSON Web Tokens (``eyJ...``, three Base64url segments: the Kling profile signs one).

Hand-written: it is two regular expressions and a loop; no library covers "a value the
caller names, plus bearer-token shapes" without pulling a logging framework in.
"""

import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["MASK", "Redactor", "remember_secrets", "scrub_credentials", "scrub_known"]

MASK: Final = "***"

# RFC 6750 b64token characters, "%" too for a token that was percent-encoded; at least 8
# of them, so that words ("bearer token invalid") stay readable.
_SHAPES: Final = re.compile(
    r"(?P<scheme>\bBearer)(?P<gap>\s+|%20|\+)[A-Za-z0-9._~+/=%-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    re.IGNORECASE,
)
# Shorter secrets are not looked for: masking every "a" of a text hides nothing.
_MIN_SECRET: Final = 4


def _mask_shape(found: re.Match[str]) -> str:
    scheme = found.group("scheme")
    return MASK if scheme is None else f"{scheme}{found.group('gap')}{MASK}"


def scrub_credentials(text: str) -> str:
    """Mask bearer tokens and JWTs in ``text`` (no literal secrets: see :class:`Redactor`)."""
    lowered = text.lower()
    if "eyj" not in lowered and "bearer" not in lowered:
        return text  # the common case: no regular expression run at all
    return _SHAPES.sub(_mask_shape, text)


def _spellings(secret: str) -> set[str]:
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret, safe="/"),
        urllib.parse.quote_plus(secret),
    }


class Redactor:
    """Masks the given secrets and any credential-shaped text in strings and JSON trees.

    Args:
        secrets: Values never to show (empty and very short ones are ignored).
    """

    __slots__ = ("_literals", "_needles", "_secrets")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: frozenset[str] = frozenset(
            secret for secret in secrets if secret and len(secret) >= _MIN_SECRET
        )
        spellings = {spelling for secret in self._secrets for spelling in _spellings(secret)}
        # Longest first: a secret that contains another is masked whole.
        ordered = sorted(spellings, key=len, reverse=True)
        self._literals = (
            re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
        )
        # What a raw UTF-8 body (lower-cased) must contain for anything in it to be masked.
        self._needles = (
            b"bearer",
            b"eyj",
            *(spelling.encode("utf-8", "surrogatepass").lower() for spelling in ordered),
        )

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"

    def including(self, *secrets: str | None) -> "Redactor":
        """This redactor plus ``secrets`` (itself when they add nothing it does not mask)."""
        extra = {
            secret
            for secret in secrets
            if secret
            and len(secret) >= _MIN_SECRET
            and secret not in self._secrets
            and _SHAPES.fullmatch(secret) is None
        }
        return self if not extra else Redactor((*self._secrets, *extra))

    def text(self, value: str) -> str:
        """``value`` with every secret and credential-shaped token masked."""
        if self._literals is not None:
            value = self._literals.sub(MASK, value)
        return scrub_credentials(value)

    def may_touch(self, raw: bytes) -> bool:
        """False when :meth:`tree` of the JSON in ``raw`` is certain to change nothing.

        A quick scan of the bytes (no secret, no credential shape, no escape), so that the
        common answer skips the walk over its decoded strings.
        """
        if b"\\" in raw:
            return True  # a JSON escape could spell any of them
        lowered = raw.lower()
        return any(needle in lowered for needle in self._needles)

    def optional(self, value: str | None) -> str | None:
        """:meth:`text` of ``value``; None stays None."""
        return None if value is None else self.text(value)

    def tree(self, value: Any) -> Any:
        """A copy of a decoded JSON value with every string (keys too) masked.

        Iterative, so a deeply nested body cannot exhaust the stack.
        """
        if isinstance(value, str):
            return self.text(value)
        if not isinstance(value, dict | list):
            return value
        root: list[Any] = [None]
        # (source container, the container its copy goes into, the copy's slot there)
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while stack:
            source, parent, slot = stack.pop()
            if isinstance(source, dict):
                mapping: dict[Any, Any] = {}
                parent[slot] = mapping
                for key, item in source.items():
                    clean_key = self.text(key) if isinstance(key, str) else key
                    mapping[clean_key] = self._leaf(item, stack, mapping, clean_key)
            else:
                items: list[Any] = [None] * len(source)
                parent[slot] = items
                for index, item in enumerate(source):
                    items[index] = self._leaf(item, stack, items, index)
        return root[0]

    def _leaf(self, item: Any, stack: list[tuple[Any, Any, Any]], parent: Any, slot: Any) -> Any:
        if isinstance(item, str):
            return self.text(item)
        if isinstance(item, dict | list):
            stack.append((item, parent, slot))
            return None  # filled in when the container is popped
        return item


# Every secret a Client of this process was given: errors mask them whoever builds the
# error (a downloader quoting a file host, a subclass in user code), as a last line behind
# the API seam. Only grows: a key once used is never shown, even after its client closed.
_known: Redactor = Redactor()
# Real keys are 32 characters and more; a short test key ("k", "explicit") is not worth
# masking in every error of the process.
_MIN_KNOWN: Final = 12


def remember_secrets(*secrets: str | None) -> None:
    """Add ``secrets`` to the ones every :class:`~kling_async.KlingError` masks."""
    global _known  # noqa: PLW0603 -- one process-wide set, swapped whole (no lock needed)
    wider = _known.including(*(s for s in secrets if s and len(s) >= _MIN_KNOWN))
    if wider is not _known:
        _known = wider


def scrub_known(text: str) -> str:
    """``text`` with every remembered secret and credential-shaped token masked."""
    return _known.text(text)
