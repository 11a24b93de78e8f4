"""How busy the host was around a benchmark, for its record.

The testbed's machines are shared: another tenant's load slows every node,
and a figure measured under it is not comparable with one measured without.
The kernel's pressure stall information (``/proc/pressure/cpu``, PSI) says
what share of the time some runnable task waited for a CPU. A benchmark
samples it for a second before it starts (the load that was not ours) and
over its whole run (ours included), and records both with the load average
and the CPU count, so that two runs' figures can be read side by side.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PSI_CPU = Path("/proc/pressure/cpu")


@dataclass(frozen=True)
class Pressure:
    """The kernel's cumulative "some" CPU stall time, and when it was read."""

    some_us: int
    at: float  # time.monotonic()


def read_pressure(path: Path = PSI_CPU) -> Pressure | None:
    """The "some" line's total, or None where the kernel has no PSI."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind != "some":
            continue
        fields = dict(f.split("=", 1) for f in rest.split() if "=" in f)
        try:
            return Pressure(int(fields["total"]), time.monotonic())
        except (KeyError, ValueError):
            return None
    return None


def pressure_pct(start: Pressure | None, end: Pressure | None) -> float | None:
    """Percent of the wall time between two readings that some task waited."""
    if start is None or end is None or end.at <= start.at:
        return None
    return round(100.0 * (end.some_us - start.some_us) / 1e6 / (end.at - start.at), 1)


class HostLoad:
    """Samples the host before a benchmark and over it: ``begin()``, then ``end()``."""

    def __init__(self, path: Path = PSI_CPU) -> None:
        self.path = path
        self.before_pct: float | None = None
        self.loadavg_before: float | None = None
        self._start: Pressure | None = None

    def begin(self, idle_s: float = 1.0) -> None:
        self.loadavg_before = round(os.getloadavg()[0], 2)
        first = read_pressure(self.path)
        time.sleep(idle_s)
        self._start = read_pressure(self.path)
        self.before_pct = pressure_pct(first, self._start)

    def end(self) -> dict[str, Any]:
        return {"cpus": os.cpu_count(), "loadavg_before": self.loadavg_before,
                "cpu_pressure_before_pct": self.before_pct,
                "cpu_pressure_during_pct": pressure_pct(self._start, read_pressure(self.path))}


def describe(host: dict[str, Any]) -> str:
    """One line for the benchmark's output."""
    def pct(v: Any) -> str:
        return "n/a (no /proc/pressure/cpu)" if v is None else f"{v}%"
    return (f"host: {host.get('cpus')} CPUs, load average {host.get('loadavg_before')} before; "
            f"CPU pressure (some task waiting) {pct(host.get('cpu_pressure_before_pct'))} in the "
            f"second before, {pct(host.get('cpu_pressure_during_pct'))} during the run")
