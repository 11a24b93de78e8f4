"""What a figure means: its unit and which way is better.

Workloads print bare ``key=value`` figures (workloads/src/common.h). A run
record stores each as a metric with a unit, its samples and a direction:
``higher`` or ``lower`` is better, or ``info`` for figures that are not a
performance measure (a correctness counter, the size of the work done). Only
``higher`` and ``lower`` metrics are compared between versions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["higher", "lower", "info"]
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower", "info")

# Every workload reports its throughput as ops_per_s (wl_put_rate): the headline
# figure of a workload cell, the one the report's summary is made of.
PRIMARY_METRIC = "ops_per_s"

# Figures whose names the suffix rules below would misread, and the sizes and
# correctness counters the workloads echo.
_KNOWN: dict[str, tuple[str, Direction]] = {
    "ops_per_s": ("ops/s", "higher"),
    "bytes_per_s": ("B/s", "higher"),
    "mb_per_s": ("MB/s", "higher"),
    "stream_mb_per_s": ("MB/s", "higher"),
    "set_rps": ("req/s", "higher"),
    "get_rps": ("req/s", "higher"),
    "ns_per_op": ("ns", "lower"),
    "ns_per_hop": ("ns", "lower"),
    "handoff_ns": ("ns", "lower"),
    "elapsed_s": ("s", "lower"),
    "guest_seconds": ("s", "lower"),
    "boot_seconds": ("s", "lower"),
    "worst_step_back_ns": ("ns", "info"),  # a correctness check: any value > 0 fails the run
    "bytes": ("B", "info"),
    "bytes_moved": ("B", "info"),
    "rewritten_bytes": ("B", "info"),
}

_SUFFIX_RULES: tuple[tuple[re.Pattern[str], str, Direction], ...] = (
    (re.compile(r"_(per_s|rps)$"), "1/s", "higher"),
    (re.compile(r"_ns(_p50|_p99|_max|_avg)?$"), "ns", "lower"),
    (re.compile(r"_us(_p50|_p99|_max|_avg)?$"), "us", "lower"),
    (re.compile(r"_ms(_p50|_p99|_max|_avg)?$"), "ms", "lower"),
    (re.compile(r"_p(50|99)_ms$"), "ms", "lower"),
    (re.compile(r"_s$"), "s", "lower"),
)


def classify(name: str) -> tuple[str, Direction]:
    """(unit, direction) of a figure by its name; unknown figures are ``info``."""
    if name in _KNOWN:
        return _KNOWN[name]
    for pattern, unit, direction in _SUFFIX_RULES:
        if pattern.search(name):
            return unit, direction
    return "", "info"


@dataclass
class Metric:
    """One measured quantity: its unit, every sample, and which way is better."""

    unit: str
    direction: Direction
    samples: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "direction": self.direction, "samples": list(self.samples)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Metric:
        from testbed.errors import RecordError

        unit, direction, samples = data.get("unit"), data.get("direction"), data.get("samples")
        if not isinstance(unit, str) or direction not in DIRECTIONS or not isinstance(samples, list):
            raise RecordError(f"{where}: a metric needs unit (text), direction "
                              f"({'|'.join(DIRECTIONS)}) and samples (a list)",
                              "the record is damaged or was not written by the testbed")
        if not all(isinstance(s, int | float) and not isinstance(s, bool) for s in samples):
            raise RecordError(f"{where}: samples must be numbers", "the record is damaged")
        return cls(unit, direction, [float(s) for s in samples])

    @property
    def value(self) -> float:
        """The median sample (NaN without samples): the one number a table shows."""
        finite = sorted(s for s in self.samples if not math.isnan(s))
        if not finite:
            return math.nan
        mid = len(finite) // 2
        return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def metric(name: str, *samples: float, unit: str | None = None,
           direction: Direction | None = None) -> Metric:
    """A metric named like a workload figure, its unit and direction looked up."""
    known_unit, known_direction = classify(name)
    return Metric(known_unit if unit is None else unit,
                  known_direction if direction is None else direction,
                  [float(s) for s in samples])


def from_figures(figures: dict[str, Any]) -> dict[str, Metric]:
    """Every numeric figure of a workload's result line as a one-sample metric."""
    out: dict[str, Metric] = {}
    for key, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # text figures (sqlite_version, reason) are not measurements
        out[key] = metric(key, value)
    return out
