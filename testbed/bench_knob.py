"""``testbed bench knob``: a hyperkernel knob's settings compared within one boot.

Across boots, this machine's noise is larger than most changes worth
measuring: two boots of the same build differ by 20-30% on a 1-node
baseline. So one N-node guest runs every chosen workload with each value
of the knob in turn (set on every node while the guest runs, through
``hyperkernel-set-knob``), and again, ``--repeat`` times, the order of the
values rotating each round so that neither always runs first. Per workload
and value: the median throughput, its ratio to the first value's (higher
is better), the median stalls and bytes moved. It ends with one JSON line:
``{"knob", "values", "workloads": {NAME: {VALUE: {"throughput", "ratio_vs_first",
"stalls", "bytes_moved", "runs", "ok"}}}, "geomean_vs_first": {VALUE: ...}}``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from testbed.bench_policies import choose, throughput
from testbed.cluster import Artifacts, Cluster
from testbed.config import POLICIES, ClusterSpec
from testbed.errors import ConfigError, TestbedError
from testbed.progress import Progress
from testbed.record import RunRecord

RUNTIME_KNOBS = {"HK_PAGE_HOLD_US": (0, 100000), "HK_READ_HOLD_US": (0, 100000),
                 "HK_MIGRATORY_HOLD_US": (0, 100000)}  # what hk_set_knob takes


def check_args(knob: str, values: str, nodes: int, policy: str, workloads: str | None,
               vcpus: int) -> tuple[list[int], dict[str, dict[str, Any]]]:
    """Every argument checked before a run directory, a build or a boot."""
    if knob not in RUNTIME_KNOBS:
        raise ConfigError(f"{knob} cannot be changed while the guest runs",
                          "knobs that can: " + ", ".join(RUNTIME_KNOBS))
    lo, hi = RUNTIME_KNOBS[knob]
    try:
        vals = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--values {values!r} is not a list of integers",
                          "e.g. --values 0,1000") from None
    if len(vals) < 2 or len(set(vals)) != len(vals):
        raise ConfigError(f"--values {values!r} compares nothing",
                          "give two or more different values, the first the baseline")
    bad = [v for v in vals if not lo <= v <= hi]
    if bad:
        raise ConfigError(f"{knob}={bad[0]} is out of range", f"use {lo}..{hi}")
    if nodes < 2:
        raise ConfigError(f"--nodes {nodes}: a knob of the protocol needs several nodes",
                          "use 2 or more")
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}", "valid policies: " + ", ".join(POLICIES))
    return vals, choose(workloads, vcpus)


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def bench_knob(arts: Artifacts, run_dir: Path, knob: str, values: str, nodes: int, vcpus: int,
               mem_mib: int, policy: str, workloads: str | None, repeat: int, progress: Progress,
               cpu_affinity: str = "node") -> tuple[dict[str, Any], list[RunRecord]]:
    vals, chosen = check_args(knob, values, nodes, policy, workloads, vcpus)
    spec = ClusterSpec(nodes=nodes, vcpus=vcpus, mem_mib=mem_mib, policy=policy,
                       cpu_affinity=cpu_affinity, boot_timeout=max(300.0, 100.0 * nodes)).validate()
    runs: dict[str, dict[int, list[RunRecord]]] = {n: {v: [] for v in vals} for n in chosen}
    errors: dict[str, dict[int, str]] = {n: {} for n in chosen}
    records: list[RunRecord] = []
    with Cluster(spec, arts, run_dir / f"n{nodes}-{policy}") as cluster:
        progress.step("bench", f"booting {nodes} nodes, {vcpus} vCPUs, policy {policy}")
        cluster.boot()
        for rnd in range(repeat):
            order = vals[rnd % len(vals):] + vals[:rnd % len(vals)]
            for name, params in chosen.items():
                for v in order:
                    progress.step("bench", f"round {rnd + 1}/{repeat}: {name}, {knob}={v}")
                    cluster.set_knob(knob, v)
                    try:
                        record = cluster.run_workload(name, params, guest_timeout=600)
                    except TestbedError as e:  # this cell failed; the others go on
                        errors[name][v] = str(e)
                        progress.step("bench", f"{name}, {knob}={v} failed: {e}")
                        continue
                    record.labels.update({"bench": "knob", "round": rnd})
                    records.append(record)
                    runs[name][v].append(record)
        cluster.poweroff()
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_value in runs.items():
        row: dict[str, dict[str, Any]] = {}
        for v, recs in by_value.items():
            tput = [t for t in (throughput(r) for r in recs if r.ok) if t is not None]
            row[str(v)] = {
                "ok": all(r.ok for r in recs) and v not in errors[name],
                **({"error": errors[name][v]} if v in errors[name] else {}),
                "runs": len(recs), "throughput": _median(tput),
                "stalls": _median([float(r.hk_stats.get("totals", {}).get("read_stalls", 0)
                                         + r.hk_stats.get("totals", {}).get("write_stalls", 0))
                                   for r in recs]),
                "bytes_moved": _median([float(r.metrics["hk_bytes_sent"].samples[0])
                                        for r in recs if "hk_bytes_sent" in r.metrics])}
        first = row[str(vals[0])]["throughput"]
        for cell in row.values():
            cell["ratio_vs_first"] = (cell["throughput"] / first
                                      if cell["throughput"] and first else None)
        table[name] = row
    geomean: dict[str, float | None] = {}
    for v in vals:
        ratios = [table[n][str(v)]["ratio_vs_first"] for n in table]
        good = [r for r in ratios if r]
        geomean[str(v)] = (math.exp(sum(map(math.log, good)) / len(good))
                           if good and len(good) == len(ratios) else None)
    _print(knob, vals, nodes, policy, repeat, table, geomean)
    result = {"bench": "knob", "knob": knob, "values": vals, "nodes": nodes, "vcpus": vcpus,
              "mem_mib": mem_mib, "policy": policy, "repeat": repeat, "workloads": table,
              "geomean_vs_first": geomean,
              "ok": all(c["ok"] for row in table.values() for c in row.values())}
    return result, records


def _print(knob: str, vals: list[int], nodes: int, policy: str, repeat: int,
           table: dict[str, dict[str, dict[str, Any]]], geomean: dict[str, float | None]) -> None:
    print(f"{knob} within one boot ({nodes} nodes, policy {policy}, median of {repeat}): "
          f"throughput as a ratio to {knob}={vals[0]} (higher is better), stalls, MB moved")
    print(f"  {'workload':<12}" + "".join(f"{f'={v}':>30}" for v in vals))
    for name, row in table.items():
        cells = []
        for v in vals:
            c = row[str(v)]
            ratio = f"{c['ratio_vs_first']:.2f}x" if c["ratio_vs_first"] else "n/a"
            stalls = f"{c['stalls']:.0f}" if c["stalls"] is not None else "-"
            mb = f"{c['bytes_moved'] / 1e6:.1f}MB" if c["bytes_moved"] is not None else "-"
            cells.append(f"{ratio + ('' if c['ok'] else ' FAIL')} {stalls:>7} {mb:>8}")
        print(f"  {name:<12}" + "".join(f"{x:>30}" for x in cells))
    print("  geomean     " + "".join(f"{(f'{g:.2f}x' if g else 'n/a'):>30}"
                                     for g in geomean.values()))
