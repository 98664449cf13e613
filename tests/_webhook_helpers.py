"""Helpers shared by the webhook tests: hint recorders, bodies, a settable wall clock."""

import json
from collections.abc import Callable

import anyio
import attrs

from kling_async._core.models import TaskStatus

# The Standard Webhooks test vector of shared/fixtures/api-examples/README.md.
VECTOR_SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
VECTOR_ID = "9876543210"
VECTOR_TIMESTAMP = 1781080794
VECTOR_BODY = (
    b'{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
    b'"update_time":1781080794151}'
)
VECTOR_SIGNATURE = "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    """The vector's three Standard Webhooks headers."""
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def task_body(task_id: str, status: str, **extra: object) -> bytes:
    """A task object as the API POSTs it."""
    obj: dict[str, object] = {
        "task_id": task_id,
        "task_status": status,
        "task_status_msg": None,
        "task_info": {},
        "task_result": {},
        "created_at": 1722769557708,
        "updated_at": 1722769557708,
    }
    obj.update(extra)
    return json.dumps(obj).encode()


@attrs.define
class WallClock:
    """A settable Unix-seconds clock for timestamp checks."""

    t: float = float(VECTOR_TIMESTAMP)

    def __call__(self) -> float:
        return self.t


@attrs.define
class Hints:
    """Records on_hint calls."""

    calls: list[tuple[str, TaskStatus | None]] = attrs.Factory(list)

    def __call__(self, task_id: str, status: TaskStatus | None) -> None:
        self.calls.append((task_id, status))


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait, bounded, for a condition another task makes true."""
    with anyio.fail_after(limit):
        # The condition is a counter inside the receiver; there is no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)
