"""Where a recorded guest's stall time went: a summary of a run's fault trace.

A run with ``--fault-trace`` leaves ``faults.nodeN`` (one line per stall, written
by the hyperkernel, hyperkernel/src/trace.c) and ``faults.windows`` (each
workload's start and end on the same clock, testbed/cluster.py) in its run
directory.  ``testbed trace RUN_DIR`` reads them and says, for each workload's
window:

- how long each vCPU was stalled, against the window's span;
- the stalls by kind (read or write, guest user or kernel code);
- the stall time by wait: a wait far beyond a fetch (256 us and more) is a
  request that queued, at the home behind a page's hold-down or at a busy owner;
- reads followed by a write of the same page on the same node, with no other
  node's stall between (an upgrade: two stalls where one would do);
- the pages that cost the most stall time, with each node's stalls on them.

``--page OFFSET`` prints one page's stalls in order instead: who stalled, how
long after the previous stall, and how long it waited.

Pages are region offsets, as in ``query-hyperkernel``'s hottest pages: the
guest-physical address for RAM below the PCI hole.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError

PAGE_SIZE = 4096
# the run directory's files: PREFIX.nodeN from each node (the library adds
# ".nodeN"), and each workload's window from the harness (testbed/cluster.py)
TRACE_PREFIX = "faults"
WINDOWS_FILE = "faults.windows"
# A wait beyond this is no longer a fetch: the request queued (a hold-down, a
# busy owner).  A remote fetch takes 20-70 us here; this is about 4 raw round
# trips (57-71 us on the machine that measured it).
LONG_WAIT_NS = 256_000
WAIT_BUCKETS_US = (64, 256, 1024, 4096)

_HEADER = re.compile(r"^# hk fault trace 1 node=(\d+) nodes=(\d+)$")


@dataclass(frozen=True)
class Stall:
    t0_ns: int
    wait_ns: int
    node: int
    vcpu: int
    page: int  # page number in the region space
    write: bool
    user: bool
    home: int


@dataclass(frozen=True)
class Window:
    name: str
    start_ns: int
    end_ns: int


@dataclass
class PageCost:
    page: int
    stalls: int = 0
    wait_ns: int = 0
    long_waits: int = 0
    by_node: Counter[str] = field(default_factory=Counter)  # "n0 w" -> stalls


@dataclass
class Summary:
    window: Window
    stalls: int
    span_ns: int
    wait_ns: int
    vcpus: dict[int, tuple[int, int]]  # vCPU -> (stalls, wait ns)
    kinds: dict[str, tuple[int, int]]  # "w k" -> (stalls, wait ns)
    buckets: list[tuple[str, int, int]]  # label, stalls, wait ns
    upgrades: int
    upgrade_wait_ns: int
    pages: list[PageCost]


def read_trace(run_dir: Path) -> list[Stall]:
    """Every stall of every node's trace in ``run_dir``, in time order."""
    files = sorted(run_dir.glob(f"{TRACE_PREFIX}.node*"), key=lambda p: p.name)
    if not files:
        raise ConfigError(f"no fault trace in {run_dir} (faults.node*)",
                          "record one: testbed run|workload ... --fault-trace")
    stalls: list[Stall] = []
    for path in files:
        stalls.extend(_read_node(path))
    stalls.sort(key=lambda s: s.t0_ns)
    return stalls


def _read_node(path: Path) -> Iterable[Stall]:
    node = -1
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#"):
            m = _HEADER.match(line)
            if m:
                node = int(m.group(1))
            continue
        if not line.strip():
            continue
        f = line.split()
        try:
            if node < 0:
                raise ValueError("no '# hk fault trace 1 node=N nodes=M' header before it")
            if len(f) < 8 or f[4] not in ("r", "w") or f[5] not in ("u", "k"):
                raise ValueError("expected: t0_ns wait_ns vcpu page_hex r|w u|k thread_hex home")
            yield Stall(int(f[0]), int(f[1]), node, int(f[2]), int(f[3], 16), f[4] == "w",
                        f[5] == "u", int(f[7]))
        except ValueError as e:
            raise ConfigError(f"{path}:{lineno}: not a fault trace line ({e}): {line[:80]!r}",
                              "is this a trace the hyperkernel wrote (HK_FAULT_TRACE)?") from None


def read_windows(run_dir: Path) -> list[Window]:
    """The workloads' windows the harness recorded, in order; empty if none."""
    path = run_dir / WINDOWS_FILE
    if not path.exists():
        return []
    windows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if not f:
            continue
        try:
            windows.append(Window(f[0], int(f[1]), int(f[2])))
        except (IndexError, ValueError):
            raise ConfigError(f"{path}:{lineno}: expected 'name start_ns end_ns', got {line!r}",
                              "the harness writes this file; was it edited?") from None
    return windows


def summarise(stalls: Sequence[Stall], window: Window, top: int = 10) -> Summary:
    """What the stalls inside ``window`` cost, by vCPU, kind, wait and page."""
    inside = [s for s in stalls if window.start_ns <= s.t0_ns <= window.end_ns]
    vcpus: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    buckets = [[0, 0] for _ in range(len(WAIT_BUCKETS_US) + 1)]
    pages: dict[int, PageCost] = {}
    last: dict[int, Stall] = {}
    upgrades = upgrade_wait = 0
    for s in inside:
        kind = ("w" if s.write else "r") + (" u" if s.user else " k")
        for acc in (vcpus[s.vcpu], kinds[kind]):
            acc[0] += 1
            acc[1] += s.wait_ns
        b = next((i for i, us in enumerate(WAIT_BUCKETS_US) if s.wait_ns < us * 1000),
                 len(WAIT_BUCKETS_US))
        buckets[b][0] += 1
        buckets[b][1] += s.wait_ns
        p = pages.setdefault(s.page, PageCost(s.page))
        p.stalls += 1
        p.wait_ns += s.wait_ns
        p.long_waits += s.wait_ns >= LONG_WAIT_NS
        p.by_node[f"n{s.node} {'w' if s.write else 'r'}"] += 1
        prev = last.get(s.page)
        if s.write and prev is not None and prev.node == s.node and not prev.write:
            upgrades += 1
            upgrade_wait += s.wait_ns
        last[s.page] = s
    labels = [f"< {WAIT_BUCKETS_US[0]} us"]
    labels += [f"{a}-{b} us" for a, b in itertools.pairwise(WAIT_BUCKETS_US)]
    labels.append(f">= {WAIT_BUCKETS_US[-1]} us")
    span = window.end_ns - window.start_ns
    return Summary(window=window, stalls=len(inside), span_ns=span,
                   wait_ns=sum(s.wait_ns for s in inside),
                   vcpus={v: (a[0], a[1]) for v, a in sorted(vcpus.items())},
                   kinds={k: (a[0], a[1]) for k, a in sorted(kinds.items())},
                   buckets=[(lab, c, w) for lab, (c, w) in zip(labels, buckets, strict=True)],
                   upgrades=upgrades, upgrade_wait_ns=upgrade_wait,
                   pages=sorted(pages.values(), key=lambda p: (-p.wait_ns, p.page))[:top])


def whole_trace(stalls: Sequence[Stall]) -> Window:
    if not stalls:
        return Window("trace", 0, 0)
    return Window("trace", stalls[0].t0_ns, stalls[-1].t0_ns)


def parse_offset(text: str) -> int:
    """A page's offset as ``query-hyperkernel`` prints it (0x1ea31000), or its page number."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"--page {text!r} is not a number",
                          "give the page's offset, e.g. 0x1ea31000") from None
    if value < 0:
        raise ConfigError(f"--page {text} is negative", "give the page's offset, e.g. 0x1ea31000")
    return value // PAGE_SIZE


def page_timeline(stalls: Sequence[Stall], page: int, window: Window) -> list[dict[str, Any]]:
    """One page's stalls inside ``window``, in order."""
    rows = []
    prev = None
    for s in stalls:
        if s.page != page or not window.start_ns <= s.t0_ns <= window.end_ns:
            continue
        rows.append({"t_us": (s.t0_ns - window.start_ns) / 1e3,
                     "gap_us": (s.t0_ns - prev) / 1e3 if prev is not None else None,
                     "node": s.node, "vcpu": s.vcpu, "kind": ("w" if s.write else "r")
                     + ("u" if s.user else "k"), "wait_us": s.wait_ns / 1e3, "home": s.home})
        prev = s.t0_ns
    return rows


def summary_json(s: Summary) -> dict[str, Any]:
    return {"window": s.window.name, "stalls": s.stalls, "span_s": s.span_ns / 1e9,
            "wait_s": s.wait_ns / 1e9,
            "vcpus": {str(v): {"stalls": c, "wait_s": w / 1e9} for v, (c, w) in s.vcpus.items()},
            "kinds": {k: {"stalls": c, "wait_s": w / 1e9} for k, (c, w) in s.kinds.items()},
            "waits": [{"bucket": lab, "stalls": c, "wait_s": w / 1e9} for lab, c, w in s.buckets],
            "upgrades": {"stalls": s.upgrades, "wait_s": s.upgrade_wait_ns / 1e9},
            "pages": [{"offset": hex(p.page * PAGE_SIZE), "stalls": p.stalls,
                       "wait_s": p.wait_ns / 1e9, "long_waits": p.long_waits,
                       "by_node": dict(sorted(p.by_node.items()))} for p in s.pages]}


def format_summary(s: Summary) -> str:
    span = s.span_ns / 1e9
    out = [f"{s.window.name}: {s.stalls:,} stalls in {span:.2f} s, "
           f"{s.wait_ns / 1e9:.2f} s stalled in all"]
    if not s.stalls:
        return out[0]
    out.append("  by vCPU:        " + "; ".join(
        f"v{v} {c:,} stalls {w / 1e9:.2f} s ({100 * w / s.span_ns:.0f}% of the span)"
        if s.span_ns else f"v{v} {c:,} stalls {w / 1e9:.2f} s" for v, (c, w) in s.vcpus.items()))
    out.append("  by kind:         " + "; ".join(
        f"{k} {c:,} (mean {w / c / 1e3:.0f} us)" for k, (c, w) in s.kinds.items()))
    out.append("  by wait:         " + "; ".join(
        f"{lab} {c:,} = {w / 1e9:.2f} s ({100 * w / s.wait_ns:.0f}%)"
        for lab, c, w in s.buckets if c) if s.wait_ns else "  by wait:         (none)")
    out.append(f"  upgrades:        {s.upgrades:,} writes right after a read of the same page "
               f"on the same node ({s.upgrade_wait_ns / 1e9:.2f} s)")
    out.append("  costliest pages (offset, stalls, stall time, waits >= "
               f"{LONG_WAIT_NS // 1000} us, each node's reads and writes):")
    for p in s.pages:
        nodes = ", ".join(f"{k} {v}" for k, v in sorted(p.by_node.items()))
        out.append(f"    {hex(p.page * PAGE_SIZE):>12} {p.stalls:7,} {p.wait_ns / 1e6:8.1f} ms "
                   f"{p.long_waits:6,}  {nodes}")
    return "\n".join(out)


def format_timeline(rows: Sequence[dict[str, Any]], limit: int) -> str:
    out = ["      t (us)    gap (us) node vcpu kind  wait (us) home"]
    for r in rows[:limit]:
        gap = f"{r['gap_us']:11.0f}" if r["gap_us"] is not None else " " * 11
        out.append(f"{r['t_us']:12.0f} {gap} {r['node']:4} {r['vcpu']:4} {r['kind']:>4} "
                   f"{r['wait_us']:10.0f} {r['home']:4}")
    if len(rows) > limit:
        out.append(f"... {len(rows) - limit} more (--limit)")
    return "\n".join(out)
