"""Running the simulator as a process: ``serve`` and the command line ``main``."""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable

from ._config import (
    DEFAULT_API_KEY,
    AccountState,
    CallbackConfig,
    Fault,
    FaultKind,
    Fixed,
    LogNormal,
    RateLimit,
    RateLimitStyle,
    SimulatorConfig,
)
from ._server import Simulator

__all__ = ["build_parser", "config_from_args", "main", "serve"]


async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    started: Callable[[Simulator], None] | None = None,
) -> None:
    """Serve until cancelled.

    Args:
        config: the simulator's configuration (defaults when None).
        host: the address to bind (keep loopback unless you mean otherwise).
        port: the port; 0 picks a free one.
        started: called with the running simulator once it listens (to print its URL).
    """
    async with Simulator(config, host=host, port=port) as sim:
        if started is not None:
            started(sim)
        await asyncio.Event().wait()


def _fault(text: str) -> Fault:
    name, _, rate = text.partition("=")
    try:
        kind = FaultKind(name.strip().lower())
        return Fault(kind=kind, rate=float(rate) if rate else 1.0)
    except ValueError as exc:
        kinds = ", ".join(kind.value for kind in FaultKind)
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KIND[=RATE], KIND one of {kinds}"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kling-async simulate`` / ``python -m kling_async.simulator``."""
    parser = argparse.ArgumentParser(
        prog="kling-async simulate",
        description="Run a local CometAPI/Kling simulator (127.0.0.1 by default).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port (0 picks a free one; default 8765)"
    )
    parser.add_argument(
        "--api-key", action="append", dest="api_keys", help="accepted key (repeatable)"
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="real seconds per simulated second"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed every random choice")
    parser.add_argument(
        "--video-seconds", type=float, default=60.0, help="median video run time (sim s)"
    )
    parser.add_argument(
        "--image-seconds", type=float, default=15.0, help="median image run time (sim s)"
    )
    parser.add_argument(
        "--fixed-durations", action="store_true", help="no spread around the medians"
    )
    parser.add_argument(
        "--failure-rate", type=float, default=0.0, help="share of tasks ending failed"
    )
    parser.add_argument("--video-slots", type=int, default=5, help="account video concurrency")
    parser.add_argument("--image-slots", type=int, default=9, help="account image concurrency")
    parser.add_argument("--rate", type=float, default=None, help="requests/s per key before 429")
    parser.add_argument("--burst", type=int, default=10, help="rate-limit bucket size")
    parser.add_argument(
        "--cometapi-429", action="store_true", help="rate-limit with the CometAPI envelope"
    )
    parser.add_argument(
        "--fault", action="append", type=_fault, default=[], help="KIND[=RATE] (repeatable)"
    )
    parser.add_argument("--url-ttl", type=float, default=3600.0, help="result URL lifetime (sim s)")
    parser.add_argument("--callback-secret", default=None, help="whsec_... to sign callbacks")
    parser.add_argument(
        "--account-state", choices=[state.name.lower() for state in AccountState], default="active"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The ``SimulatorConfig`` the parsed command line describes."""

    def duration(median: float) -> Fixed | LogNormal:
        return (
            Fixed(seconds=median) if args.fixed_durations else LogNormal(median=median, sigma=0.25)
        )

    rate_limit = None
    if args.rate is not None:
        style = RateLimitStyle.COMETAPI if args.cometapi_429 else RateLimitStyle.KLING
        rate_limit = RateLimit(rate=args.rate, burst=args.burst, style=style)
    return SimulatorConfig(
        api_keys=tuple(args.api_keys or (DEFAULT_API_KEY,)),
        durations={"video": duration(args.video_seconds), "image": duration(args.image_seconds)},
        time_scale=args.time_scale,
        seed=args.seed,
        failure_rate=args.failure_rate,
        video_slots=args.video_slots,
        image_slots=args.image_slots,
        rate_limit=rate_limit,
        faults=tuple(args.fault),
        url_ttl=args.url_ttl,
        callbacks=CallbackConfig(secret=args.callback_secret),
        account_state=AccountState[args.account_state.upper()],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until interrupted; returns the exit status.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))

    def started(sim: Simulator) -> None:
        print(f"kling_async simulator listening on {sim.url}", flush=True)
        print(f"  base URL: {sim.url}   API key: {sim.api_key}", flush=True)
        print("  statistics: GET /_sim/statistics   stop: Ctrl-C", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.host, args.port, started=started))
    print("simulator stopped", file=sys.stderr)
    return 0
