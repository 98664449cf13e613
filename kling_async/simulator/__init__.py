"""A local CometAPI/Kling server for tests, benchmarks and demos.

``async with Simulator(SimulatorConfig(time_scale=0.001)) as sim:`` serves the four
endpoints of the API (CometAPI and Kling paths) on 127.0.0.1 at ``sim.url`` for the key
``sim.api_key``. Stand-alone: ``python -m kling_async.simulator --port 8765``.
"""

from ._callbacks import sign_webhook as sign_webhook
from ._config import DEFAULT_API_KEY as DEFAULT_API_KEY
from ._config import AccountState as AccountState
from ._config import CallbackConfig as CallbackConfig
from ._config import Duration as Duration
from ._config import Fault as Fault
from ._config import FaultKind as FaultKind
from ._config import Fixed as Fixed
from ._config import LogNormal as LogNormal
from ._config import RateLimit as RateLimit
from ._config import RateLimitStyle as RateLimitStyle
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
    "Duration",
    "Fault",
    "FaultKind",
    "Fixed",
    "LogNormal",
    "RateLimit",
    "RateLimitStyle",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStatistics",
    "Uniform",
    "main",
    "serve",
    "sign_webhook",
]
