"""Evacuating a node while the guest runs, and its health telemetry.

A node evacuates when an operator asks (``hyperkernel-evacuate``) or when its
health passes a threshold (``hyperkernel-inject-health`` in the testbed). It
moves its vCPUs, pages and directory entries to the other nodes, reports each
step as a ``HYPERKERNEL_EVACUATION`` event, then exits with status 0 while the
guest runs on. Its last figures are one line of its QEMU log, read after it
exits (the process may be gone before its last event is read).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testbed.errors import ConfigError, GuestTimeout, NodeDied

if TYPE_CHECKING:
    from testbed.cluster import Cluster

_DONE_RE = re.compile(r'hyperkernel node \d+: evacuated \((?P<reason>.*?)\): (?P<json>\{"node".*\})')

# The range hyperkernel-inject-health accepts (the node checks it too).
TEMP_RANGE_C = (-60, 200)


@dataclass
class Evacuation:
    """What one evacuation moved and how long it took."""

    node: int
    reason: str
    seconds: float
    vcpus: int
    pages_pushed: int
    copies_dropped: int
    zero_pages: int
    homes_moved: int
    bytes: int
    pages_left: int
    phases: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds in)
    # the leaver's own clock: moving the vCPUs, the pages, then the directory
    vcpus_s: float = 0.0
    pages_s: float = 0.0
    directory_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "reason": self.reason, "seconds": self.seconds,
                "vcpus": self.vcpus, "pages_pushed": self.pages_pushed,
                "copies_dropped": self.copies_dropped, "zero_pages": self.zero_pages,
                "homes_moved": self.homes_moved, "bytes": self.bytes,
                "pages_left": self.pages_left, "phases": [list(p) for p in self.phases],
                "vcpus_s": self.vcpus_s, "pages_s": self.pages_s,
                "directory_s": self.directory_s}


def parse_done_line(log_text: str) -> tuple[str, dict[str, Any]] | None:
    """The leaver's last line: (reason, figures), or None if it never got there."""
    found = list(_DONE_RE.finditer(log_text))
    if not found:
        return None
    m = found[-1]
    return m.group("reason"), json.loads(m.group("json"))


def check_evacuable(cluster: Cluster, index: int) -> None:
    """Refuse what the harness can see is wrong before asking the node."""
    if not cluster.spec.uses_hyperkernel:
        raise ConfigError("evacuation needs the hyperkernel", "run with --nodes 2 or more")
    running = [n.index for n in cluster.live_nodes]
    if index not in running:
        raise ConfigError(f"node {index} does not run", f"the cluster runs nodes {running}")


def wait_evacuated(cluster: Cluster, index: int, timeout: float,
                   seen: list[str] | None = None) -> Evacuation:
    """Follow node ``index``'s evacuation until it exits; it must exit with status 0.

    ``seen``: phases whose events the caller already read.
    """
    node = cluster.nodes[index]
    t0 = time.monotonic()
    phases: list[tuple[str, float]] = [(p, 0.0) for p in seen or []]
    deadline = t0 + timeout
    while node.alive():
        cluster.check_health()  # the others must live through it
        if time.monotonic() > deadline:
            node.dump_hang()
            raise GuestTimeout(f"node {index} did not finish evacuating in {timeout:.0f}s",
                               f"phases so far: {phases}; see {cluster.run_dir}")
        try:
            ev = node.qmp.wait_event("HYPERKERNEL_EVACUATION", timeout=0.5)
        except GuestTimeout:
            continue
        except Exception:  # the connection closes as the node exits
            time.sleep(0.05)
            continue
        data = ev.get("data", {})
        phases.append((str(data.get("phase")), round(time.monotonic() - t0, 3)))
        if data.get("phase") == "refused":
            raise NodeDied(f"node {index} refused to evacuate: {data.get('reason')}",
                           f"see {cluster.run_dir}", node=index)
    rc = node.returncode()
    done = parse_done_line(node.qemu_log_text())
    if rc != 0 or done is None:
        raise NodeDied(f"node {index} ended its evacuation badly: {node.death_summary()}",
                       f"logs in {cluster.run_dir}", node=index)
    reason, fig = done
    return Evacuation(node=index, reason=reason, seconds=float(fig["seconds"]),
                      vcpus=int(fig["vcpus"]), pages_pushed=int(fig["pages_pushed"]),
                      copies_dropped=int(fig["copies_dropped"]),
                      zero_pages=int(fig["zero_pages"]), homes_moved=int(fig["homes_moved"]),
                      bytes=int(fig["bytes"]), pages_left=int(fig["pages_left"]), phases=phases,
                      vcpus_s=float(fig.get("vcpus_s", 0.0)), pages_s=float(fig.get("pages_s", 0.0)),
                      directory_s=float(fig.get("directory_s", 0.0)))


def health_args(corrected_errors: int | None, temperature: int | None,
                link_errors: int | None) -> dict[str, int]:
    """The QMP arguments of hyperkernel-inject-health, checked."""
    args: dict[str, int] = {}
    for name, value in (("corrected-errors", corrected_errors), ("link-errors", link_errors)):
        if value is not None:
            if value < 0:
                raise ConfigError(f"{name} {value} is negative", "error counts are >= 0")
            args[name] = value
    if temperature is not None:
        lo, hi = TEMP_RANGE_C
        if not lo <= temperature <= hi:
            raise ConfigError(f"temperature {temperature} C is out of range",
                              f"use {lo} to {hi}")
        args["temperature"] = temperature
    if not args:
        raise ConfigError("nothing to inject", "give corrected errors, a temperature or link errors")
    return args
