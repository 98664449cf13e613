"""A local CometAPI/Kling server for tests, benchmarks and demos.

``async with Simulator(SimulatorConfig(time_scale=0.001)) as sim:`` serves the API
(create, query by task id or external id, list; CometAPI and Kling paths) on 127.0.0.1
at ``sim.url`` for the key ``sim.api_key``::

    config = SimulatorConfig(
        manual_clock=True,                       # time moves only by sim.advance()
        durations={"video": Fixed(seconds=60)},  # or Uniform / LogNormal, seeded
        video_slots=2,                           # the third running video answers 1303
        faults=[Fault(kind=FaultKind.RESET_AFTER, rate=0.1, on={"create"})],
    )
    async with Simulator(config) as sim:
        ...                                      # point a client at sim.url
        sim.inject(FaultKind.GATEWAY, times=2)   # force the next two answers
        sim.advance(60)                          # tasks end, callbacks fire
        assert sim.statistics().max_creates_per_external_id <= 1

Results are real files (PNG images by Pillow, H.264 MP4 videos by PyAV, made from the
inputs) at signed URLs that expire ``url_ttl`` simulated seconds after the task ended,
served with byte ranges (206 Partial Content) as a file host serves them.
Admin endpoints: ``GET /_sim/statistics``, ``POST /_sim/advance?seconds=S``,
``POST /_sim/account?state=ARREARS``.

Stand-alone: ``kling-async simulate --port 8765`` or ``python -m kling_async.simulator``.
"""

import types as _types

from ._callbacks import sign_webhook as sign_webhook
from ._config import DEFAULT_API_KEY as DEFAULT_API_KEY
from ._config import AccountState as AccountState
from ._config import CallbackConfig as CallbackConfig
from ._config import Fault as Fault
from ._config import FaultKind as FaultKind
from ._config import Fixed as Fixed
from ._config import LogNormal as LogNormal
from ._config import RateLimit as RateLimit
from ._config import RateLimitStyle as RateLimitStyle
from ._config import RunTime as RunTime
from ._config import SimulatorConfig as SimulatorConfig
from ._config import Uniform as Uniform
from ._serve import main as main
from ._serve import serve as serve
from ._server import Simulator as Simulator
from ._stats import SimulatorStatistics as SimulatorStatistics

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
    "Simulator",
    "SimulatorConfig",
    "SimulatorStatistics",
    "Uniform",
    "main",
    "serve",
    "sign_webhook",
]


def _present_as_public() -> None:
    """Show public names as ``kling_async.simulator.X`` in help() and tracebacks.

    The same rule as the package root's (the simulator imports nothing of the client, so
    it has its own four lines); each name stays importable from here, so pickling works.
    """
    namespace = globals()
    for name in __all__:
        value = namespace[name]
        if isinstance(value, type | _types.FunctionType):
            value.__module__ = __name__


_present_as_public()
