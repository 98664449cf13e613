"""External task ids: stable, safe and bounded, derived from a batch id and a job key."""

import hashlib
import re

__all__ = ["MAX_EXTERNAL_ID", "external_id_for"]

MAX_EXTERNAL_ID = 64
"""Longest external id the engine sends."""

_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def external_id_for(batch_id: str, key: str) -> str:
    """Return the ``external_task_id`` of job ``key`` in batch ``batch_id``.

    ``f"{batch_id}-{key}"`` when that is made of ``[A-Za-z0-9._-]`` and at most
    :data:`MAX_EXTERNAL_ID` characters; otherwise a readable sanitized prefix followed by
    a SHA-256 digest of the exact pair, so two different pairs never share an id.
    """
    plain = f"{batch_id}-{key}"
    if len(plain) <= MAX_EXTERNAL_ID and _SAFE.fullmatch(plain):
        return plain
    digest = hashlib.sha256(f"{batch_id}\x00{key}".encode()).hexdigest()[:24]
    prefix = _UNSAFE.sub("_", plain)[: MAX_EXTERNAL_ID - len(digest) - 2]
    return f"{prefix}-h{digest}"
