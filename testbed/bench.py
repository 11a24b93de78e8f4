"""Benchmarks of the whole system: figures measured side by side in one run.

Latencies are reported as ratios to the raw 4 KiB Unix-socket round trip
measured in the same run (``tools/rawrtt.c``); slowdowns as ratios to a
single-node run. Targets are checked here and reported, never asserted in tests.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from testbed import cache
from testbed.cluster import Artifacts, Cluster
from testbed.config import ClusterSpec
from testbed.errors import BuildError, ConfigError, TestbedError
from testbed.hkdelta import delta
from testbed.progress import Progress
from testbed.record import RunRecord, dimensions

REPO_ROOT = Path(__file__).resolve().parent.parent
RAWRTT_SRC = REPO_ROOT / "tools" / "rawrtt.c"

BOOT_TARGET_4_NODES = 3.0  # 4-node boot <= 3x the 1-node boot
STATE_TARGET_BYTES = 6400  # what a published system moves per vCPU
MIGRATE_TARGET_RATIO = 3.0  # migration p50 <= 3x the raw round trip


def rawrtt_binary() -> Path:
    src = RAWRTT_SRC.read_bytes()

    def recipe(out: Path) -> dict[str, object]:
        r = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out / "rawrtt"),
                            str(RAWRTT_SRC)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BuildError(f"cannot build tools/rawrtt.c: {r.stderr.strip()}",
                             "install build-essential (make setup)")
        return {}

    art = cache.build("rawrtt", cache.hash_inputs([("src", src)]), recipe)
    return art.path / "rawrtt"


def raw_rtt_us(samples: int = 2000) -> dict[str, float]:
    """The floor: 4 KiB request/response between two processes over a Unix socket."""
    out = subprocess.run([str(rawrtt_binary()), str(samples)], capture_output=True, text=True,
                         check=True, timeout=120)
    data: dict[str, float] = json.loads(out.stdout)
    return data


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def bench_boot(arts: Artifacts, run_dir: Path, node_counts: list[int], vcpus: int, mem_mib: int,
               repeat: int, progress: Progress) -> tuple[dict[str, Any], list[RunRecord]]:
    """Boot-to-shell for each node count, interleaved (1,2,4,1,2,4,...) against drift.

    Ratios are to the 1-node boot, so ``node_counts`` must start with 1. Returns
    the summary and one record per node count (ok=False for a count whose boot
    failed; its error and log tails are in the record).
    """
    if not node_counts or node_counts[0] != 1 or sorted(set(node_counts)) != node_counts:
        raise ConfigError(f"node counts {node_counts} must be ascending, without repeats, "
                          "starting at 1", "ratios are taken against the 1-node boot")
    if repeat < 1:
        raise ConfigError(f"repeat {repeat} is out of range", "use 1 or more")
    samples: dict[int, list[float]] = {n: [] for n in node_counts}
    errors: dict[int, str] = {}
    failures: dict[int, str] = {}
    stats: dict[int, dict[str, Any]] = {}
    hottest: dict[int, Any] = {}
    pages_moved: dict[int, int] = {}
    for r in range(repeat):
        for n in node_counts:
            if n in errors:
                continue
            spec = ClusterSpec(nodes=n, vcpus=vcpus, mem_mib=mem_mib,
                               boot_timeout=max(120.0, 100.0 * n))
            progress.step("bench", f"boot {r + 1}/{repeat}: {n} node(s), {vcpus} vCPU(s)")
            cluster = Cluster(spec, arts, run_dir / f"boot-n{n}-r{r}")
            try:
                with cluster:
                    secs = cluster.boot()
                    samples[n].append(secs)
                    if spec.uses_hyperkernel and r == 0:
                        stats[n] = delta([], cluster.node_stats())
                        hottest[n] = stats[n]["hottest_pages"][:5]
                        pages_moved[n] = int(stats[n]["totals"].get("pages_received", 0))
                    cluster.poweroff()
            except TestbedError as e:
                errors[n] = str(e)
                failures[n] = cluster.failure_report() if cluster.nodes else ""
                progress.step("bench", f"{n} node(s) failed: {e}")
    base = statistics.median(samples[1]) if samples[1] else float("nan")
    print(f"boot-to-shell, {vcpus} vCPUs, {mem_mib} MiB, median of {repeat}:")
    result: dict[str, Any] = {"bench": "boot", "vcpus": vcpus, "mem_mib": mem_mib,
                              "baseline_nodes": 1, "nodes": {}, "ok": not errors}
    records: list[RunRecord] = []
    for n in node_counts:
        spec = ClusterSpec(nodes=n, vcpus=vcpus, mem_mib=mem_mib)
        record = RunRecord(kind="bench", name="boot", ok=n not in errors and bool(samples[n]),
                           dimensions=dimensions(spec, arts, {"repeat": repeat}),
                           reason=errors.get(n), failure=failures.get(n, ""),
                           run_dir=str(run_dir))
        record.add("boot_seconds", *samples[n])
        if stats.get(n):
            record.add_hk_stats(stats[n])
        records.append(record)
        if samples[n]:
            med = statistics.median(samples[n])
            print(f"  {n} node(s): {med:6.2f} s  ({med / base:4.2f}x 1 node)"
                  f"  samples {[round(s, 2) for s in samples[n]]}")
            result["nodes"][str(n)] = {"median_s": med, "ratio": med / base, "samples": samples[n],
                                       "pages_received": pages_moved.get(n),
                                       "hottest_pages": hottest.get(n)}
            if n > 1:
                record.add("boot_ratio_vs_1_node", med / base, unit="x", direction="lower")
        else:
            print(f"  {n} node(s): FAILED: {errors.get(n)}")
            result["nodes"][str(n)] = {"error": errors.get(n)}
    four = result["nodes"].get("4", {})
    if "ratio" in four:
        ok = four["ratio"] <= BOOT_TARGET_4_NODES
        print(f"target: 4-node boot <= {BOOT_TARGET_4_NODES}x 1-node: {'PASS' if ok else 'MISS'}")
        result["target_4_nodes_le_3x"] = ok
    return result, records


def bench_migrate(arts: Artifacts, run_dir: Path, nodes: int, vcpus: int, mem_mib: int,
                  migrations: int, progress: Progress) -> tuple[dict[str, Any], list[RunRecord]]:
    """Migrate vCPUs round-robin between nodes while a self-checking workload runs."""
    if migrations < 1:
        raise ConfigError(f"migrations {migrations} is out of range", "use 1 or more")
    floor = raw_rtt_us()
    spec = ClusterSpec(nodes=nodes, vcpus=vcpus, mem_mib=mem_mib)
    latencies_us: list[float] = []
    wall_us: list[float] = []
    sizes: list[int] = []
    with Cluster(spec, arts, run_dir) as cluster:
        progress.step("bench", f"booting {nodes} nodes, {vcpus} vCPUs")
        cluster.boot()
        cluster.run(f"(/opt/workloads/bin/private threads={vcpus} passes=100000 timeout_s=600 "
                    "> /tmp/bg.out 2>&1 &)")
        before = cluster.node_stats()
        for i in range(migrations):
            cpu = i % vcpus
            target = (cluster.vcpu_location(cpu) + 1) % nodes
            t0 = time.monotonic()
            ev = cluster.migrate_vcpu(cpu, target)
            if ev["moved"]:  # not when it had gone there on its own meanwhile
                wall_us.append((time.monotonic() - t0) * 1e6)
                latencies_us.append(ev["latency-ns"] / 1000.0)
                sizes.append(ev["state-bytes"])
            progress.update("bench", f"migration {i + 1}/{migrations}")
        stats = delta(before, cluster.node_stats())
        record = RunRecord.for_cluster(cluster, "bench", "migrate", ok=True,
                                       params={"migrations": migrations})
    p50, p99 = _pct(latencies_us, 50), _pct(latencies_us, 99)
    ratio = p50 / floor["p50_us"]
    size = max(sizes) if sizes else 0
    print(f"raw 4 KiB unix-socket round trip: p50 {floor['p50_us']:.1f} us  p99 {floor['p99_us']:.1f} us")
    print(f"vCPU migration ({migrations}x, {nodes} nodes, workload running): "
          f"p50 {p50:.1f} us ({ratio:.2f}x raw)  p99 {p99:.1f} us ({p99 / floor['p50_us']:.2f}x raw)")
    print(f"  as seen by the harness (QMP command to event): p50 {_pct(wall_us, 50):.0f} us")
    print(f"vCPU state: {size} bytes (target <= {STATE_TARGET_BYTES})")
    print(f"targets: migration p50 <= {MIGRATE_TARGET_RATIO}x raw: "
          f"{'PASS' if ratio <= MIGRATE_TARGET_RATIO else 'MISS'}; state <= {STATE_TARGET_BYTES} B: "
          f"{'PASS' if size <= STATE_TARGET_BYTES else 'MISS'}")
    record.add("migration_latency_us", *latencies_us, unit="us", direction="lower")
    record.add("migration_p50_ratio_vs_raw_rtt", ratio, unit="x", direction="lower")
    record.add("harness_wall_us", *wall_us, unit="us", direction="lower")
    record.add("vcpu_state_bytes", *sizes, unit="B", direction="lower")
    record.add("raw_rtt_p50_us", floor["p50_us"], unit="us", direction="info")
    record.add_hk_stats(stats)
    result = {"bench": "migrate", "nodes": nodes, "vcpus": vcpus, "migrations": migrations,
              "raw_rtt_us": floor, "migration_us": {"p50": p50, "p99": p99, "p50_ratio": ratio},
              "harness_wall_us_p50": _pct(wall_us, 50), "state_bytes": size,
              "targets": {"migration_p50_le_3x": ratio <= MIGRATE_TARGET_RATIO,
                          "state_le_6400": size <= STATE_TARGET_BYTES},
              "totals": stats.get("totals", {}), "ok": True}
    return result, [record]
