"""The run's timeline: account slots in use, submissions, 1303 answers and retries over time.

While a batch runs, :func:`record_timeline` samples the client's ``engine_statistics()``
and appends a line to ``timeline.jsonl`` in the output folder whenever something moved.
The sampling interval grows with the run (``elapsed / SAMPLES_PER_SPAN``, at least
``MIN_INTERVAL``), so the file stays small however long the run: a few thousand lines
per order of magnitude of run time. Each run (``run``, then every ``resume``) starts with
a ``start`` line; the report draws its chart from these lines.

Lines::

    {"event": "start", "t": 1700000000.0, "time_scale": 0.02}
    {"t": 1700000000.5, "slots": {"video": [3, 5, 2]}, "creates": 4, "retries": 1,
     "busy": 1, "requests": {"create": 4, "query": 9}}

``slots`` holds ``[in use, limit, waiting]`` per kind; ``creates``, ``retries``, ``busy``
(1303 answers) and ``requests`` count from the start of the run.
"""

import contextlib
import json
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Final

import anyio
import attrs

__all__ = [
    "MIN_INTERVAL",
    "SAMPLES_PER_SPAN",
    "TIMELINE_FILE",
    "RunTimeline",
    "Sample",
    "TimelineWriter",
    "read_timeline",
    "record_timeline",
]

TIMELINE_FILE: Final = "timeline.jsonl"
MIN_INTERVAL: Final = 0.02
"""Seconds between samples at the start of a run."""
SAMPLES_PER_SPAN: Final = 2000
"""The interval is ``elapsed / SAMPLES_PER_SPAN``: about this many samples per doubling."""


@attrs.frozen
class Sample:
    """The engine's counters at one instant (``t`` in Unix seconds)."""

    t: float
    slots: Mapping[str, tuple[int, int, int]] = attrs.field(factory=dict)
    creates: int = 0
    retries: int = 0
    busy: int = 0
    requests: Mapping[str, int] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, object]:
        """The sample as one line of the timeline file."""
        return {
            "t": round(self.t, 3),
            "slots": {kind: list(value) for kind, value in self.slots.items()},
            "creates": self.creates,
            "retries": self.retries,
            "busy": self.busy,
            "requests": dict(self.requests),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Sample":
        """Read a line written by :meth:`to_json`."""
        slots = {
            str(kind): (int(value[0]), int(value[1]), int(value[2]))
            for kind, value in dict(data.get("slots") or {}).items()
        }
        return cls(
            t=float(data["t"]),
            slots=slots,
            creates=int(data.get("creates", 0)),
            retries=int(data.get("retries", 0)),
            busy=int(data.get("busy", 0)),
            requests={str(k): int(v) for k, v in dict(data.get("requests") or {}).items()},
        )

    def same_as(self, other: "Sample") -> bool:
        """True when nothing but the time differs."""
        return attrs.evolve(self, t=other.t) == other


def sample_of(engine: Any) -> Sample:
    """A sample of the client's ``engine_statistics()``."""
    slots = {
        getattr(kind, "value", str(kind)): (stats.in_use, stats.limit, stats.waiting)
        for kind, stats in engine.slots.items()
    }
    busy = sum(getattr(stats, "congestions", 0) for stats in engine.slots.values())
    return Sample(
        t=time.time(),
        slots=slots,
        creates=engine.lane.creates,
        retries=engine.lane.retries,
        busy=busy,
        requests=dict(engine.requests),
    )


class TimelineWriter:
    """Appends the samples of one run to ``timeline.jsonl`` (changes only)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._stream: IO[str] | None = None
        self._last: Sample | None = None
        self.lines = 0

    def open(self, *, time_scale: float) -> None:
        """Open the file for appending and write the ``start`` line of this run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = self.path.open("a", encoding="utf-8")
        start = {"event": "start", "t": round(time.time(), 3), "time_scale": time_scale}
        self._write(start)

    def _write(self, data: Mapping[str, object]) -> None:
        if self._stream is not None:
            self._stream.write(json.dumps(data, separators=(",", ":")) + "\n")
            self.lines += 1

    def add(self, sample: Sample) -> None:
        """Write ``sample`` unless nothing changed since the last one."""
        if self._last is not None and sample.same_as(self._last):
            return
        self._last = sample
        self._write(sample.to_json())

    def flush(self) -> None:
        """Push what was written to the file."""
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        """Flush and close the file."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


async def record_timeline(
    out_dir: pathlib.Path,
    time_scale: float,
    client: Any,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sample ``client.engine_statistics()`` into ``out_dir/timeline.jsonl`` until cancelled.

    A folder that cannot be written leaves the run without a timeline (the report says
    so); the last sample is taken on cancellation, so the end of the run is in the file.
    """
    writer = TimelineWriter(out_dir / TIMELINE_FILE)
    try:
        writer.open(time_scale=time_scale)
    except OSError:
        return
    started = clock()
    try:
        while True:
            writer.add(sample_of(client.engine_statistics()))
            await anyio.sleep(max(MIN_INTERVAL, (clock() - started) / SAMPLES_PER_SPAN))
    finally:
        writer.add(sample_of(client.engine_statistics()))
        writer.close()


@attrs.frozen
class RunTimeline:
    """The samples of one run (one ``start`` line and what follows it)."""

    start: float
    time_scale: float = 1.0
    samples: tuple[Sample, ...] = ()

    @property
    def end(self) -> float:
        """The time of the last sample (the start when there is none)."""
        return self.samples[-1].t if self.samples else self.start

    @property
    def last(self) -> Sample:
        """The final counters of the run."""
        return self.samples[-1] if self.samples else Sample(t=self.start)


def _lines(path: pathlib.Path) -> Iterator[Mapping[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    yield data


def read_timeline(path: pathlib.Path) -> list[RunTimeline]:
    """The runs recorded in a timeline file, oldest first (a torn last line is ignored)."""
    runs: list[RunTimeline] = []
    if not path.is_file():
        return runs
    start: Mapping[str, Any] | None = None
    samples: list[Sample] = []

    def close() -> None:
        if start is not None:
            scale = start.get("time_scale")
            runs.append(
                RunTimeline(
                    start=float(start["t"]),
                    time_scale=float(scale) if isinstance(scale, int | float) else 1.0,
                    samples=tuple(samples),
                )
            )

    for data in _lines(path):
        if data.get("event") == "start" and isinstance(data.get("t"), int | float):
            close()
            start, samples = data, []
        elif start is not None:
            with contextlib.suppress(KeyError, ValueError, TypeError, IndexError):
                samples.append(Sample.from_json(data))
    close()
    return runs
