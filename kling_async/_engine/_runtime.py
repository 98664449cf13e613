"""Learned run-time distributions: a small log-bucketed quantile sketch per kind of task.

Hand-written rather than taken from a library (DDSketch, t-digest): the scheduler needs
three things those do not give together -- exponential forgetting (the server's speed
drifts), kernel smoothing while samples are few (three finished tasks must already give
a usable spread), and a plain JSON form the journal can keep. The sketch is a map from
log-spaced bucket (relative width ``GAMMA - 1``, 4%) to decayed weight, never more than
``MAX_BUCKETS`` buckets (the lowest ones merge, as in DDSketch), so its size is bounded
whatever the number of samples.
"""

import bisect
import collections
import itertools
import json
import math
from collections.abc import Mapping

from .._core.models import Kind, Request

__all__ = ["RuntimeModel", "RuntimeSketch", "runtime_key"]

GAMMA = 1.04
_LOG_GAMMA = math.log(GAMMA)
MAX_BUCKETS = 256
DECAY = 0.995  # weight kept by older samples at each new one (half-life ~140 samples)
_BANDWIDTH = 0.3  # relative kernel half-width for the first sample, shrinking as 1/sqrt(n)
_MIN_BANDWIDTH = 0.03
_DENSITY_STEP = 0.04  # log-time step of look_density's integral
_MAX_KEYS = 64  # distinct (kind, model, mode, duration, n) sketches kept
_FORMAT = 1


def runtime_key(request: Request) -> str:
    """Return the key of what changes a request's run time: kind, model, mode, duration, n."""
    parts = [request.kind.value, str(getattr(request, "model_name", ""))]
    for name in ("mode", "duration"):
        value = getattr(request, name, None)
        parts.append(str(getattr(value, "value", value)) if value is not None else "")
    parts.append(str(getattr(request, "n", 1)))
    return "|".join(parts)


class RuntimeSketch:
    """A bounded, decaying, smoothed histogram of run times in log-spaced buckets."""

    def __init__(self) -> None:
        self._weights: dict[int, float] = {}
        self._unit = 1.0  # weight of the next sample (grows instead of decaying the rest)
        self.count = 0  # samples seen (not decayed)
        # The sorted buckets and their running sums, rebuilt once ~3% more samples came:
        # quantiles answer from this snapshot, so a burst of ends does not re-sort per end.
        self._keys: list[int] | None = None
        self._cumulative: list[float] = []
        self._snapshot: list[float] = []
        self._indexed = 0
        self._density: tuple[float, float] | None = None  # (start, look_density), cached

    def __len__(self) -> int:
        return self.count

    def add(self, seconds: float) -> None:
        """Add one run time (non-positive or non-finite values are ignored)."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        self.count += 1
        self._unit /= DECAY
        if self._unit > 1e12:  # renormalise before floats lose precision
            self._weights = {k: w / self._unit for k, w in self._weights.items()}
            self._unit = 1.0
        width = max(_MIN_BANDWIDTH, _BANDWIDTH / math.sqrt(self.count))
        center = math.log(seconds) / _LOG_GAMMA
        span = width / _LOG_GAMMA
        low, high = math.floor(center - span), math.ceil(center + span)
        # A triangular kernel over the buckets within +/- width (relative) of the sample.
        shares = {b: max(0.0, 1.0 - abs(b + 0.5 - center) / (span + 0.5)) for b in range(low, high)}
        total = sum(shares.values()) or 1.0
        for bucket, share in shares.items():
            if share > 0:
                self._weights[bucket] = self._weights.get(bucket, 0.0) + self._unit * share / total
        self._collapse()
        if self.count - self._indexed >= max(1, self.count // 32):
            self._keys = None

    def _collapse(self) -> None:
        while len(self._weights) > MAX_BUCKETS:
            first, second = sorted(self._weights)[:2]
            self._weights[second] += self._weights.pop(first)

    def _index(self) -> tuple[list[int], list[float]]:
        if self._keys is None:
            self._keys = sorted(self._weights)
            self._snapshot = [self._weights[key] for key in self._keys]
            self._cumulative = list(itertools.accumulate(self._snapshot))
            self._indexed = self.count
            self._density = None
        return self._keys, self._cumulative

    def quantile(self, q: float) -> float | None:
        """Return the run time below which a share ``q`` of tasks end (None when empty)."""
        keys, cumulative = self._index()
        if not keys:
            return None
        total = cumulative[-1]
        target = min(max(q, 0.0), 1.0) * total
        i = min(bisect.bisect_left(cumulative, target), len(keys) - 1)
        before = cumulative[i - 1] if i else 0.0
        inside = (target - before) / max(cumulative[i] - before, 1e-300)
        return float(GAMMA ** (keys[i] + min(max(inside, 0.0), 1.0)))

    def cdf(self, seconds: float) -> float:
        """Return the share of tasks ended by ``seconds`` (0 when empty)."""
        keys, cumulative = self._index()
        if not keys or seconds <= 0:
            return 0.0
        position = math.log(seconds) / _LOG_GAMMA
        bucket = math.floor(position)
        i = bisect.bisect_left(keys, bucket)
        below = cumulative[i - 1] if i else 0.0
        if i < len(keys) and keys[i] == bucket:
            below += self._snapshot[i] * (position - bucket)
        return below / cumulative[-1]

    def look_density(self, start: float) -> float:
        """Return the integral of ``sqrt(hazard) * survival`` over log time from ``start``.

        Polls spaced ``c / sqrt(hazard)`` in log time make about ``1 + look_density / c``
        looks per task; the scheduler widens ``c`` with it to keep within a look budget.
        Cached until the next sample.
        """
        keys, _ = self._index()
        if self._density is not None and self._density[0] == start:
            return self._density[1]
        total = 0.0
        if keys:
            u = math.log(start) if start > 0 else keys[0] * _LOG_GAMMA
            end = (keys[-1] + 1) * _LOG_GAMMA
            done = self.cdf(math.exp(u))
            while u < end:
                after = self.cdf(math.exp(u + _DENSITY_STEP))
                survival = 1.0 - done
                if survival <= 0:
                    break
                hazard = (after - done) / (_DENSITY_STEP * survival)
                total += math.sqrt(max(hazard, 0.0)) * survival * _DENSITY_STEP
                u, done = u + _DENSITY_STEP, after
        self._density = (start, total)
        return total

    def to_dict(self) -> dict[str, object]:
        """Return the sketch as JSON-able data (weights normalised)."""
        unit = self._unit
        return {
            "count": self.count,
            "buckets": {str(k): w / unit for k, w in self._weights.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "RuntimeSketch":
        """Rebuild a sketch saved by :meth:`to_dict` (raises ValueError/TypeError when bad)."""
        sketch = cls()
        count = data.get("count", 0)
        buckets = data.get("buckets", {})
        if not isinstance(count, int) or not isinstance(buckets, dict):
            raise TypeError("not a run-time sketch")
        sketch.count = max(0, count)
        for key, weight in buckets.items():
            value = float(weight)
            if value > 0 and math.isfinite(value):
                sketch._weights[int(key)] = value
        sketch._collapse()
        return sketch


class RuntimeModel:
    """Run-time sketches per kind and per request key, bounded in number.

    ``distribution(kind, key)`` answers the key's own sketch once it holds
    ``min_samples``, else the kind's (every key of the kind together) when that does,
    else None (cold: the caller falls back on its prior).
    """

    def __init__(self, *, min_samples: int = 3) -> None:
        self.min_samples = min_samples
        self._kinds = {kind: RuntimeSketch() for kind in Kind}
        self._keys: collections.OrderedDict[str, RuntimeSketch] = collections.OrderedDict()
        self.added = 0  # samples added since the model was created or loaded

    def observe(self, kind: Kind, key: str | None, seconds: float) -> None:
        """Learn one finished task's run time."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        self.added += 1
        self._kinds[kind].add(seconds)
        if key is None:
            return
        sketch = self._keys.get(key)
        if sketch is None:
            sketch = self._keys[key] = RuntimeSketch()
            while len(self._keys) > _MAX_KEYS:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        sketch.add(seconds)

    def distribution(self, kind: Kind, key: str | None = None) -> RuntimeSketch | None:
        """Return the sketch to plan with, or None while too few tasks have ended."""
        if key is not None:
            sketch = self._keys.get(key)
            if sketch is not None and sketch.count >= self.min_samples:
                return sketch
        sketch = self._kinds[kind]
        return sketch if sketch.count >= self.min_samples else None

    def samples(self, kind: Kind) -> int:
        """Return how many run times of ``kind`` were learned."""
        return self._kinds[kind].count

    def dumps(self) -> str:
        """Return the model as JSON text (what the journal keeps)."""
        return json.dumps(
            {
                "format": _FORMAT,
                "kinds": {kind.value: sketch.to_dict() for kind, sketch in self._kinds.items()},
                "keys": {key: sketch.to_dict() for key, sketch in self._keys.items()},
            },
            separators=(",", ":"),
        )

    def loads(self, text: str) -> bool:
        """Replace the model by one saved with :meth:`dumps`; False (model kept) when unreadable."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != _FORMAT:
                return False
            kinds = {Kind(name): RuntimeSketch.from_dict(s) for name, s in data["kinds"].items()}
            keys = collections.OrderedDict(
                (str(key), RuntimeSketch.from_dict(s)) for key, s in data["keys"].items()
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return False
        self._kinds.update(kinds)
        self._keys = keys
        while len(self._keys) > _MAX_KEYS:
            self._keys.popitem(last=False)
        return True
