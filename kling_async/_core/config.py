"""Frozen configuration objects with DEFAULT_ constants."""

import math
import random
from collections.abc import Callable
from typing import Any

import attrs

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_LIMITS",
    "DEFAULT_POLL",
    "DEFAULT_TIMEOUTS",
    "WEBHOOK_POLL_GRACE",
    "WEBHOOK_POLL_INTERVAL",
    "Backoff",
    "Limits",
    "PollPolicy",
    "Timeouts",
]


def _positive_or_none(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Timeouts of one HTTP call, in seconds (``None`` disables one).

    Attributes:
        connect: Establishing the connection (including waiting for a pooled one).
        read: Between two reads of the response.
        total: The whole call, sending the body included.
    """

    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    read: float | None = attrs.field(default=60.0, validator=_positive_or_none)
    total: float | None = attrs.field(default=120.0, validator=_positive_or_none)


DEFAULT_TIMEOUTS = Timeouts()


# --- engine policies (owned by the engine) ------------------------------------------------


def _positive(instance: object, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not value > 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value!r}")


def _at_least_one(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if value < 1:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be >= 1, got {value!r}")


def _share(instance: object, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be within 0..1, got {value!r}"
        )


def _optional_positive(instance: object, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


@attrs.frozen(kw_only=True)
class Limits:
    """Flow-control knobs of the engine: concurrency, request rate and account slots.

    Account slots are adaptive (AIMD): each kind starts at ``video_slots`` /
    ``image_slots`` tasks running at once (an image task holds ``n`` slots), doubles per
    round of successes until the first 1303, then grows by one slot per round, and is
    multiplied by ``slot_decrease`` on each 1303 (once per round); never above the
    ``max_*_slots`` cap nor below one.

    Args:
        max_creates: Create calls in flight at once (images are encoded only inside one).
        max_queries: Poll queries in flight at once.
        requests_per_second: Shared rate of every engine request; None for no limit.
        burst: Requests that may go at once after a quiet spell.
        video_slots: Starting limit of video tasks running at once.
        image_slots: Starting limit of image slots in use at once.
        max_video_slots: Cap of the video limit (your account's limit, when known).
        max_image_slots: Cap of the image limit.
        slot_decrease: Factor applied to a limit on 1303 (0 < f < 1).
    """

    max_creates: int = attrs.field(default=8, validator=_at_least_one)
    max_queries: int = attrs.field(default=16, validator=_at_least_one)
    requests_per_second: float | None = attrs.field(default=20.0, validator=_optional_positive)
    burst: int = attrs.field(default=10, validator=_at_least_one)
    video_slots: int = attrs.field(default=5, validator=_at_least_one)
    image_slots: int = attrs.field(default=9, validator=_at_least_one)
    max_video_slots: int = attrs.field(default=100, validator=_at_least_one)
    max_image_slots: int = attrs.field(default=100, validator=_at_least_one)
    slot_decrease: float = attrs.field(default=0.7, validator=_share)

    def __attrs_post_init__(self) -> None:
        if self.video_slots > self.max_video_slots:
            raise ValueError("Limits.video_slots must be <= max_video_slots")
        if self.image_slots > self.max_image_slots:
            raise ValueError("Limits.image_slots must be <= max_image_slots")
        if not 0.0 < self.slot_decrease < 1.0:
            raise ValueError("Limits.slot_decrease must be within 0 < f < 1")


@attrs.frozen(kw_only=True)
class Backoff:
    """How a retried request waits: exponential with full jitter, bounded twice.

    The n-th retry waits a uniform random time in ``[0, min(maximum, initial *
    multiplier ** (n - 1))]``; a 1303 (account concurrency) waits at least
    ``concurrency_floor``; a server ``Retry-After`` is honoured up to ``retry_after_cap``.
    A job gives up after ``max_attempts`` sends of one request or ``max_elapsed``
    seconds of retrying, whichever comes first. 1303 answers do not use up attempts
    (they say the account is busy, not that the request is wrong) but count in time.

    Args:
        initial: Upper bound of the first retry's wait, seconds.
        maximum: Cap of any single wait, seconds.
        multiplier: Growth of the bound per retry.
        max_attempts: Sends of one request, the first included.
        max_elapsed: Seconds of retrying after which a job gives up.
        retry_after_cap: Longest ``Retry-After`` honoured, seconds.
        concurrency_floor: Shortest wait after a 1303, seconds.
    """

    initial: float = attrs.field(default=0.5, validator=_positive)
    maximum: float = attrs.field(default=30.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_attempts: int = attrs.field(default=10, validator=_at_least_one)
    max_elapsed: float = attrs.field(default=900.0, validator=_positive)
    retry_after_cap: float = attrs.field(default=60.0, validator=_positive)
    concurrency_floor: float = attrs.field(default=1.0, validator=_positive)

    def delay(
        self,
        retry: int,
        *,
        retry_after: float | None = None,
        concurrency: bool = False,
        rng: Callable[[], float] = random.random,
    ) -> float:
        """Return the wait before retry number ``retry`` (1 for the first retry).

        Args:
            retry: Which retry this is, from 1.
            retry_after: The server's ``Retry-After`` in seconds, when given.
            concurrency: Whether the failure was a 1303 (waits at least ``concurrency_floor``).
            rng: Source of uniform numbers in ``[0, 1)``.
        """
        bound = min(self.maximum, self.initial * self.multiplier ** max(0, retry - 1))
        if concurrency:
            floor = self.concurrency_floor
            wait = floor + rng() * max(0.0, max(bound, floor * 2) - floor)
        else:
            wait = rng() * bound
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, self.retry_after_cap))
        return wait

    def scaled(self, factor: float) -> "Backoff":
        """Return this policy with every duration multiplied by ``factor`` (time-scaled runs)."""
        return attrs.evolve(
            self,
            initial=self.initial * factor,
            maximum=self.maximum * factor,
            max_elapsed=self.max_elapsed * factor,
            retry_after_cap=self.retry_after_cap * factor,
            concurrency_floor=self.concurrency_floor * factor,
        )


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When the scheduler asks about a running task.

    Polls follow the learned run-time distribution of tasks like it (per kind, model,
    mode, duration and ``n``; fed by the server's own timestamps, kept with the journal).
    Until ``min_samples`` run times of a kind are known (cold start), the first poll comes
    at ``cold_first`` times the prior (``expected_video`` / ``expected_image``) and each
    next one when the task's age has grown by ``cold_growth``. Once learned, the first
    poll comes at the ``first_quantile`` of the distribution and the next ones are spaced
    by ``spacing`` (dense where tasks usually end, sparse in the tail); past the learned
    tail the age grows by ``growth`` per poll. Every interval stays within
    ``min_interval``..``max_interval`` and gets +/- ``jitter``. A server ``Retry-After``
    or ``progress`` moves the next poll. A task past its job's deadline is polled every
    ``overdue_interval`` until it ends (it still holds its account slot).

    With webhooks on, a task is polled more slowly at first: see
    :class:`~kling_async.WebhookConfig` (``poll_interval``, ``poll_grace``).

    Args:
        expected_video: Prior expected run time of a video task, seconds.
        expected_image: Prior expected run time of an image task, seconds.
        growth: Factor between successive poll intervals.
        min_interval: Shortest interval between two polls of one task, seconds.
        max_interval: Longest interval between two polls of one task, seconds.
        jitter: Relative random spread of each interval (0..1).
        overdue_interval: Interval for tasks whose job timed out, seconds.
        use_list: Poll through the list endpoint (one page answers many tasks); falls back
            to per-task queries when the server answers 404/405.
        list_interval: Shortest time between two list calls of one kind, seconds.
        list_page_size: Largest list page read (1..500); pages are sized to about twice
            the tasks running, since the server lists newest first. Parsing a page runs on
            the event loop, so large pages lengthen loop stalls (about 0.1 ms per task).
        list_max_pages: Pages read per list poll before missing tasks are queried one by one.
        first_quantile: Once run times are learned (``min_samples`` of a kind), the first
            poll comes when this share of such tasks has ended.
        spacing: Once learned, the gap between polls of a task, in log time, is
            ``spacing / sqrt(hazard)`` (dense where tasks usually end, sparse in the
            tail); smaller means more polls and quicker detection.
        cold_first: While too few run times are learned, share of the prior expected run
            time before the first poll.
        cold_growth: While too few run times are learned, factor between a task's age at
            one poll and at the next.
        min_samples: Run times of a kind learned before polls follow the learned
            distribution instead of the cold-start probe.
        idle_spacing: Factor on ``spacing`` for tasks nobody waits for (no queued job
            needs their slot, no caller awaits them in ``generate()``).
        max_looks: Polls per task the learned spacing is widened to stay within, about
            (a wide run-time spread would otherwise take many more).
    """

    expected_video: float = attrs.field(default=120.0, validator=_positive)
    expected_image: float = attrs.field(default=30.0, validator=_positive)
    growth: float = attrs.field(default=1.25, validator=_positive)
    min_interval: float = attrs.field(default=1.0, validator=_positive)
    max_interval: float = attrs.field(default=30.0, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_share)
    overdue_interval: float = attrs.field(default=60.0, validator=_positive)
    use_list: bool = False
    list_interval: float = attrs.field(default=2.0, validator=_positive)
    list_page_size: int = attrs.field(default=100, validator=_at_least_one)
    list_max_pages: int = attrs.field(default=20, validator=_at_least_one)
    first_quantile: float = attrs.field(default=0.08, validator=_share)
    spacing: float = attrs.field(default=0.14, validator=_positive)
    cold_first: float = attrs.field(default=0.2, validator=_positive)
    cold_growth: float = attrs.field(default=1.15, validator=_positive)
    min_samples: int = attrs.field(default=3, validator=_at_least_one)
    idle_spacing: float = attrs.field(default=1.5, validator=_positive)
    max_looks: float = attrs.field(default=5.5, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError("PollPolicy.min_interval must be <= max_interval")
        if self.list_page_size > 500:
            raise ValueError("PollPolicy.list_page_size must be <= 500")
        if self.cold_growth <= 1.0:
            raise ValueError("PollPolicy.cold_growth must be > 1")

    def scaled(self, factor: float) -> "PollPolicy":
        """Return this policy with every duration multiplied by ``factor`` (time-scaled runs)."""
        return attrs.evolve(
            self,
            expected_video=self.expected_video * factor,
            expected_image=self.expected_image * factor,
            min_interval=self.min_interval * factor,
            max_interval=self.max_interval * factor,
            overdue_interval=self.overdue_interval * factor,
            list_interval=self.list_interval * factor,
        )


WEBHOOK_POLL_INTERVAL = 300.0
"""With webhooks on, the default safety interval between polls of a covered task, seconds."""
WEBHOOK_POLL_GRACE = 1.5
"""With webhooks on, the default share of the expected run time a task is covered for."""

DEFAULT_LIMITS = Limits()
DEFAULT_BACKOFF = Backoff()
DEFAULT_POLL = PollPolicy()
