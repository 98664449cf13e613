"""The simulator's clock: scaled real time plus manual advances."""

import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds since start: ``real elapsed / time_scale + advanced``.

    With ``manual`` the real part is frozen at zero and only ``advance`` moves time,
    so tests step through a task's life without sleeping.
    """

    def __init__(self, *, time_scale: float, manual: bool, start_time: float | None) -> None:
        self.time_scale = time_scale
        self.manual = manual
        self.epoch = time.time() if start_time is None else start_time
        self._origin = time.monotonic()
        self._advanced = 0.0
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Simulated seconds since the start."""
        if self.manual:
            return self._advanced
        return (time.monotonic() - self._origin) / self.time_scale + self._advanced

    def rate_now(self) -> float:
        """Seconds for rate limits: unscaled real time plus manual advances."""
        if self.manual:
            return self._advanced
        return time.monotonic() - self._origin + self._advanced

    def epoch_ms(self, sim_seconds: float) -> int:
        """The Unix time in ms of a simulated instant (what task bodies carry)."""
        return int((self.epoch + sim_seconds) * 1000)

    def real_delay(self, sim_seconds: float) -> float | None:
        """Real seconds until ``sim_seconds`` pass; None when only ``advance`` moves time."""
        if self.manual:
            return None
        return max(0.0, sim_seconds) * self.time_scale

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds``.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("cannot advance the clock backwards")
        self._advanced += seconds
        for listener in self._listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each ``advance``."""
        self._listeners.append(listener)
