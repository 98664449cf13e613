"""Frozen configuration of the simulator: durations, limits, faults, callbacks, accounts."""

import enum
import math
import random
from collections.abc import Iterable, Mapping

import attrs

__all__ = [
    "DEFAULT_API_KEY",
    "AccountState",
    "CallbackConfig",
    "Fault",
    "FaultKind",
    "Fixed",
    "LogNormal",
    "RateLimit",
    "RateLimitStyle",
    "RunTime",
    "SimulatorConfig",
    "Uniform",
]

DEFAULT_API_KEY = "sk-simulator"
"""The key a default simulator accepts; it is a local fake, not a secret."""


@attrs.frozen(kw_only=True)
class Fixed:
    """Every task runs exactly ``seconds`` simulated seconds."""

    seconds: float = attrs.field(validator=attrs.validators.ge(0.0))

    def sample(self, rng: random.Random) -> float:
        """Return the run time of one task."""
        return self.seconds


@attrs.frozen(kw_only=True)
class Uniform:
    """Run times drawn uniformly from ``[low, high]`` simulated seconds."""

    low: float = attrs.field(validator=attrs.validators.ge(0.0))
    high: float = attrs.field()

    @high.validator
    def _check_high(self, _: "attrs.Attribute[float]", value: float) -> None:
        if value < self.low:
            raise ValueError("Uniform: high must be >= low")

    def sample(self, rng: random.Random) -> float:
        """Return the run time of one task."""
        return rng.uniform(self.low, self.high)


@attrs.frozen(kw_only=True)
class LogNormal:
    """Run times with the given ``median`` and log-space ``sigma``, capped at ``cap`` seconds."""

    median: float = attrs.field(validator=attrs.validators.gt(0.0))
    sigma: float = attrs.field(default=0.3, validator=attrs.validators.ge(0.0))
    cap: float = attrs.field(default=math.inf, validator=attrs.validators.gt(0.0))

    def sample(self, rng: random.Random) -> float:
        """Return the run time of one task."""
        return min(self.cap, rng.lognormvariate(math.log(self.median), self.sigma))


RunTime = Fixed | Uniform | LogNormal
"""How long a simulated task runs: a fixed time or a distribution (seconds)."""


class AccountState(enum.Enum):
    """The state of the simulated account; anything but ACTIVE refuses creates with 429."""

    ACTIVE = 0
    ACCOUNT_ERROR = 1100
    ARREARS = 1101
    PACK_EXHAUSTED = 1102


class RateLimitStyle(enum.Enum):
    """How a rate-limited request is answered."""

    KLING = "kling"  # 429 with business code 1302
    COMETAPI = "cometapi"  # 429 with CometAPI's {"error": {...}} envelope


@attrs.frozen(kw_only=True)
class RateLimit:
    """A token bucket per API key over API requests (creates, queries and lists).

    Args:
        rate: tokens added per second (real seconds, plus any manual ``advance``).
        burst: bucket size.
        style: the answer when the bucket is empty.
        retry_after: send a ``Retry-After`` header (whole seconds until the next token).
        creates_only: count only creates.
    """

    rate: float = attrs.field(validator=attrs.validators.gt(0.0))
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    style: RateLimitStyle = RateLimitStyle.KLING
    retry_after: bool = True
    creates_only: bool = False


class FaultKind(enum.Enum):
    """An injected fault; see each member for what the client sees."""

    SERVER_ERROR = "server_error"  # 500/503/504 with code 5000/5001/5002, before processing
    GATEWAY = "gateway"  # 502/504/524 with no business code, before processing
    HTML = "html"  # 200 text/html page instead of JSON, before processing
    RESET_BEFORE = "reset_before"  # connection reset, request not processed
    RESET_AFTER = "reset_after"  # request processed (a create made its task), then reset
    SLOW = "slow"  # processed, then the answer waits ``delay`` real seconds
    MALFORMED_JSON = "malformed_json"  # processed, then a 200 body that is not JSON
    TRUNCATED = "truncated"  # processed, then the body stops short of its Content-Length
    RATE_LIMITED = "rate_limited"  # a 429/1302 burst answer, before processing
    REDIRECT = "redirect"  # 302 to a login page, before processing
    INVALID_REQUEST = (
        "invalid_request"  # CometAPI 500 with error.code invalid_request (not retryable)
    )
    RESTART = "restart"  # processed, then every response in flight is dropped (reset)


ENDPOINT_ACTIONS = frozenset({"create", "query", "list"})


def _actions(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class Fault:
    """Inject ``kind`` into a share ``rate`` of the API requests whose action is in ``on``.

    Args:
        kind: the fault.
        rate: share of matching requests hit (drawn from the seeded fault RNG).
        on: actions hit: any of ``"create"``, ``"query"``, ``"list"``.
        delay: real seconds a SLOW answer waits.
        style: the envelope of a RATE_LIMITED answer (Kling 1302 or CometAPI 429).
        retry_after: the ``Retry-After`` seconds of a RATE_LIMITED answer; None sends none.
    """

    kind: FaultKind
    rate: float = attrs.field(
        default=1.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    on: frozenset[str] = attrs.field(default=ENDPOINT_ACTIONS, converter=_actions)
    delay: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.0))
    style: RateLimitStyle = RateLimitStyle.KLING
    retry_after: float | None = 1.0

    @on.validator
    def _check_on(self, _: "attrs.Attribute[frozenset[str]]", value: frozenset[str]) -> None:
        if not value <= ENDPOINT_ACTIONS:
            raise ValueError(f"Fault.on: unknown actions {sorted(value - ENDPOINT_ACTIONS)}")


@attrs.frozen(kw_only=True)
class CallbackConfig:
    """How status-change callbacks are delivered.

    Args:
        max_attempts: deliveries tried per event (non-2xx or connection errors retry).
        retry_delay: real seconds before the first retry; doubles each time.
        timeout: real seconds per delivery attempt.
        duplicate_rate: share of events delivered twice.
        reorder_rate: share of tasks whose ``processing`` event arrives after the final one.
        secret: a ``whsec_<base64>`` secret; when set, deliveries carry Standard Webhooks
            headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).
    """

    max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    retry_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0.0))
    timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0.0))
    duplicate_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    reorder_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    secret: str | None = attrs.field(default=None, repr=False)

    @secret.validator
    def _check_secret(self, _: "attrs.Attribute[str | None]", value: str | None) -> None:
        if value is not None and not value.startswith("whsec_"):
            raise ValueError("CallbackConfig.secret must look like whsec_<base64>")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _faults(value: Iterable[Fault]) -> tuple[Fault, ...]:
    return tuple(value)


def _default_durations() -> Mapping[str, RunTime]:
    return {
        "video": LogNormal(median=60.0, sigma=0.25),
        "image": LogNormal(median=15.0, sigma=0.25),
    }


def _freeze_mapping(value: Mapping[str, RunTime]) -> Mapping[str, RunTime]:
    merged = dict(_default_durations())
    merged.update(value)
    unknown = set(merged) - {"video", "image"}
    if unknown:
        raise ValueError(f"durations: unknown kinds {sorted(unknown)}")
    return merged


@attrs.frozen(kw_only=True)
class SimulatorConfig:
    """Everything that shapes the simulated server. All knobs are keyword-only.

    Args:
        api_keys: accepted bearer keys; all belong to one account (shared limits),
            each sees only its own tasks.
        jwt_keys: access key -> secret key pairs accepted as HS256 JWTs (Kling profile).
        durations: run time per kind ("video", "image") in simulated seconds.
        queue_share: share of a task's run time spent ``submitted`` before ``processing``.
        time_scale: real seconds per simulated second (0.001: a 60 s video takes 60 ms).
        manual_clock: the clock moves only through ``Simulator.advance`` (tests).
        failure_rate: share of tasks that end ``failed`` with ``failure_message``.
        video_slots / image_slots: account concurrency per resource type (None: unlimited).
        rate_limit: request-rate limit per key, or None.
        faults: injected faults, each with its own rate.
        account_state: ACTIVE, or a state that refuses creates (1100/1101/1102).
        url_ttl: simulated seconds a result URL stays valid after the task ended.
        callbacks: delivery knobs for ``callback_url``.
        wrapped_rate: share of CometAPI-path queries answered in the wrapped shape.
        serve_list: serve the list endpoint (False answers 404 as CometAPI may).
        max_input_bytes: decoded input images kept for composing results; tasks past
            this budget get results made from placeholders.
        seed: seeds every random choice (durations, failures, faults, callback order);
            task ids stay unique across simulators.
        start_time: Unix seconds of simulated time zero (default: the start's wall time).
    """

    api_keys: tuple[str, ...] = attrs.field(
        default=(DEFAULT_API_KEY,), converter=_strings, repr=False
    )
    jwt_keys: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    durations: Mapping[str, RunTime] = attrs.field(factory=dict, converter=_freeze_mapping)
    queue_share: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    time_scale: float = attrs.field(default=1.0, validator=attrs.validators.gt(0.0))
    manual_clock: bool = False
    failure_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    failure_message: str = "Failure to pass the risk control system"
    video_slots: int | None = 5
    image_slots: int | None = 9
    rate_limit: RateLimit | None = None
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_faults)
    account_state: AccountState = AccountState.ACTIVE
    url_ttl: float = attrs.field(default=3600.0, validator=attrs.validators.gt(0.0))
    callbacks: CallbackConfig = CallbackConfig()
    wrapped_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    serve_list: bool = True
    max_input_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=attrs.validators.ge(0))
    seed: int | None = 0
    start_time: float | None = None

    @api_keys.validator
    def _check_keys(self, _: "attrs.Attribute[tuple[str, ...]]", value: tuple[str, ...]) -> None:
        if not value and not self.jwt_keys:
            raise ValueError("SimulatorConfig needs at least one api key or jwt key")
