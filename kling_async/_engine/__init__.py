"""The engine: submission lane, poll scheduler, adaptive limits, ``Batch`` and ``Outcome``."""

from ._batch import Batch, BatchControl, BatchProducer
from ._ids import MAX_EXTERNAL_ID, external_id_for
from ._job import TaskApi
from ._lane import LaneStatistics
from ._limits import RateStatistics, SlotGate, SlotStatistics
from ._outcome import BatchStatistics, JobStatus, Outcome
from ._runner import Engine, EngineStatistics
from ._scheduler import SchedulerStatistics
from ._store import BatchStore, NullStore

__all__ = [
    "MAX_EXTERNAL_ID",
    "Batch",
    "BatchControl",
    "BatchProducer",
    "BatchStatistics",
    "BatchStore",
    "Engine",
    "EngineStatistics",
    "JobStatus",
    "LaneStatistics",
    "NullStore",
    "Outcome",
    "RateStatistics",
    "SchedulerStatistics",
    "SlotGate",
    "SlotStatistics",
    "TaskApi",
    "external_id_for",
]
