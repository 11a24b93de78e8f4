"""Benchmarks of the whole system: figures measured side by side in one run.

Latencies are reported as ratios to the raw 4 KiB Unix-socket round trip
measured in the same run (``tools/rawrtt.c``); slowdowns as ratios to a
single-node run. Targets are checked here and reported, never asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from testbed.cluster import Artifacts, Cluster
from testbed.config import ClusterSpec
from testbed.errors import ConfigError, TestbedError
from testbed.floors import floor_cpus, raw_rtt_us, raw_stream
from testbed.hkdelta import delta
from testbed.progress import Progress
from testbed.record import RunRecord, dimensions
from testbed.symbolize import name_hottest
from testbed.workloads import WorkloadError, validate_params

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOT_TARGET_4_NODES = 3.0  # 4-node boot <= 3x the 1-node boot
STATE_TARGET_BYTES = 6400  # what a published system moves per vCPU
MIGRATE_TARGET_RATIO = 3.0  # migration p50 <= 3x the raw round trip


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def bench_boot(arts: Artifacts, run_dir: Path, node_counts: list[int], vcpus: int, mem_mib: int,
               repeat: int, progress: Progress, cpu_affinity: str = "node", append: str = ""
               ) -> tuple[dict[str, Any], list[RunRecord]]:
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
            spec = ClusterSpec(nodes=n, vcpus=vcpus, mem_mib=mem_mib, cpu_affinity=cpu_affinity,
                               boot_timeout=max(120.0, 100.0 * n), append=append)
            progress.step("bench", f"boot {r + 1}/{repeat}: {n} node(s), {vcpus} vCPU(s)")
            cluster = Cluster(spec, arts, run_dir / f"boot-n{n}-r{r}")
            try:
                with cluster:
                    secs = cluster.boot()
                    samples[n].append(secs)
                    if spec.uses_hyperkernel and r == 0:
                        stats[n] = delta([], cluster.node_stats())
                        hottest[n] = stats[n]["hottest_pages"][:5]
                        # which kernel object each one is, while this guest runs
                        name_hottest(cluster, hottest[n])
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
        spec = ClusterSpec(nodes=n, vcpus=vcpus, mem_mib=mem_mib, cpu_affinity=cpu_affinity,
                           append=append)
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
            for page in hottest.get(n) or []:
                lines = ",".join(f"+{x:#x}" for x in page.get("lines", []))
                print(f"      hot page {page['gpa']}: {page['stalls']} stalls: "
                      + (page.get("kernel") or (f"lines {lines}" if lines else "")))
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
                  migrations: int, progress: Progress, cpu_affinity: str = "node"
                  ) -> tuple[dict[str, Any], list[RunRecord]]:
    """Migrate vCPUs round-robin between nodes while a self-checking workload runs."""
    if migrations < 1:
        raise ConfigError(f"migrations {migrations} is out of range", "use 1 or more")
    floor = raw_rtt_us(cpus=floor_cpus(nodes, cpu_affinity))
    spec = ClusterSpec(nodes=nodes, vcpus=vcpus, mem_mib=mem_mib, cpu_affinity=cpu_affinity)
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


# bench stall: what a stall costs as the guest sees it (issue 12).
HANDOFF_TARGET_RATIO = 4.0  # pingpong hand-off, one way, p50 <= 4x the raw round trip
GUEST_READ_TARGET_RATIO = 3.0  # first read of a page the other node owns, p50 <= 3x raw
STREAMING_TARGET_MB_S = 400.0  # reading a region the other node owns, MiB/s
STALL_MIN_SAMPLES = 100  # fewer and a p99 is not a percentile of anything
STALL_MAX_SAMPLES = 1_000_000  # pingpong keeps 100k round-trip samples; hours on 2 nodes anyway
STALL_WORKLOAD_TIMEOUT_S = 900
# 2 vCPUs on 2 nodes; the writer/ping thread on vCPU 0 (node 0), the reader/pong on vCPU 1.
STALL_NODES = 2
STALL_CPUS = "0,1"
STALL_PLACEMENT = [0, 1]


def stall_params(rounds: int, pages: int, stream_mb: int, mem_mib: int) -> dict[str, int]:
    """The bench's sizes, checked before anything builds or boots (ConfigError if bad)."""
    for flag, value in (("--rounds", rounds), ("--pages", pages)):
        if value < STALL_MIN_SAMPLES:
            raise ConfigError(f"{flag} {value} is too few samples for a p99",
                              f"use {STALL_MIN_SAMPLES} to {STALL_MAX_SAMPLES}")
        if value > STALL_MAX_SAMPLES:
            raise ConfigError(f"{flag} {value} is out of range",
                              f"use {STALL_MIN_SAMPLES} to {STALL_MAX_SAMPLES}")
    if stream_mb < 1:
        raise ConfigError(f"--stream-mb {stream_mb} is out of range", "use 1 or more (MiB)")
    working_mib = pages * 4096 / 2**20 + stream_mb
    if working_mib > mem_mib / 2:
        raise ConfigError(f"--pages {pages} and --stream-mb {stream_mb} need {working_mib:.0f} MiB, "
                          f"more than half of the guest's {mem_mib} MiB (the guest needs the rest)",
                          "lower them or raise --mem")
    try:  # the workloads' own ranges, should they ever be narrower
        validate_params("pingpong", {"rounds": rounds})
        validate_params("firstread", {"pages": pages, "stream_mb": stream_mb})
    except WorkloadError as e:
        raise ConfigError(str(e), "see testbed workload list") from None
    return {"rounds": rounds, "pages": pages, "stream_mb": stream_mb}


def _settle(cluster: Cluster, want: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until the vCPUs run where ``want`` says (a vCPU visits node 0 for I/O);
    returns where they were last seen, which the result reports either way."""
    deadline = time.monotonic() + timeout
    while (where := cluster.vcpu_locations()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return where


def _figure(record: RunRecord, name: str) -> float | None:
    """A workload's figure, or None if it printed none (it crashed or timed out)."""
    m = record.metrics.get(name)
    return m.value if m is not None and m.samples else None


def _us(ns: float | None, scale: float = 1.0) -> float | None:
    return None if ns is None else ns * scale / 1000.0


def _ratio(value: float | None, floor: float) -> float | None:
    return None if value is None or not floor > 0 else value / floor


def _fmt(value: float | None, unit: str = "us") -> str:
    return "n/a" if value is None else f"{value:.1f} {unit}"


def _target(name: str, value: float | None, limit: float, higher: bool) -> bool | None:
    if value is None:
        print(f"  {name} {'>=' if higher else '<='} {limit:g}: not measured")
        return None
    ok = value >= limit if higher else value <= limit
    print(f"  {name} {'>=' if higher else '<='} {limit:g}: {'PASS' if ok else 'MISS'} ({value:.2f})")
    return ok


def bench_stall(arts: Artifacts, run_dir: Path, policy: str, mem_mib: int, rounds: int,
                pages: int, stream_mb: int, progress: Progress, cpu_affinity: str = "node"
                ) -> tuple[dict[str, Any], list[RunRecord]]:
    """Stall costs inside the guest on 2 nodes, against the raw round trip of the same run,
    and its streaming read against the raw stream measured right after it.

    One boot of 2 nodes with 2 vCPUs, one per node: ``pingpong`` hands a word between
    threads pinned to vCPU 0 and vCPU 1; ``firstread`` writes pages and a region on
    vCPU 0 and reads them for the first time on vCPU 1. Returns the summary and the
    bench's record, followed by the records of the two workload runs.
    """
    params = stall_params(rounds, pages, stream_mb, mem_mib)
    spec = ClusterSpec(nodes=STALL_NODES, vcpus=STALL_NODES, mem_mib=mem_mib,
                       cpu_affinity=cpu_affinity,
                       policy=policy).validate()
    progress.step("bench", "raw 4 KiB socket round trip")
    floor = raw_rtt_us(cpus=floor_cpus(STALL_NODES, cpu_affinity))
    with Cluster(spec, arts, run_dir) as cluster:
        progress.step("bench", f"booting {STALL_NODES} nodes, {STALL_NODES} vCPUs, policy {policy}")
        cluster.boot()
        placement: dict[str, list[int]] = {}
        before = cluster.node_stats()
        placement["pingpong"] = _settle(cluster, STALL_PLACEMENT)
        progress.step("bench", f"pingpong, {rounds} round trips, vCPUs on nodes {placement['pingpong']}")
        pp = cluster.run_workload("pingpong", {"rounds": rounds, "cpus": STALL_CPUS,
                                               "timeout_s": STALL_WORKLOAD_TIMEOUT_S},
                                  guest_timeout=STALL_WORKLOAD_TIMEOUT_S + 60)
        placement["firstread"] = _settle(cluster, STALL_PLACEMENT)
        progress.step("bench", f"firstread, {pages} pages and {stream_mb} MiB, "
                      f"vCPUs on nodes {placement['firstread']}")
        fr = cluster.run_workload("firstread", {"pages": pages, "stream_mb": stream_mb,
                                                "cpus": STALL_CPUS,
                                                "timeout_s": STALL_WORKLOAD_TIMEOUT_S},
                                  guest_timeout=STALL_WORKLOAD_TIMEOUT_S + 60)
        stats = delta(before, cluster.node_stats())
        # The stream's floor, measured now: the host's free memory is in the
        # state the reading node left it in, and what a fresh page costs
        # depends on that (tools/rawstream.c).
        progress.step("bench", f"raw stream of {stream_mb} MiB into fresh memory")
        stream_floor = raw_stream(stream_mb, cpus=floor_cpus(STALL_NODES, cpu_affinity))
        reasons = [f"{r.name}: {r.reason}" for r in (pp, fr) if not r.ok]
        record = RunRecord.for_cluster(cluster, "bench", "stall", ok=not reasons, params=params,
                                       reason="; ".join(reasons) or None,
                                       output="\n".join((pp.raw, fr.raw)))
        cluster.poweroff()

    raw_p50 = floor["p50_us"]
    # pingpong times round trips; one way is half of one (two hand-offs per round trip).
    handoff = {"p50": _us(_figure(pp, "rtt_ns_p50"), 0.5), "p99": _us(_figure(pp, "rtt_ns_p99"), 0.5)}
    handoff["p50_ratio"] = _ratio(handoff["p50"], raw_p50)
    read = {"p50": _us(_figure(fr, "first_read_ns_p50")), "p99": _us(_figure(fr, "first_read_ns_p99"))}
    read["p50_ratio"] = _ratio(read["p50"], raw_p50)
    reread_p50 = _us(_figure(fr, "reread_ns_p50"))
    streaming = _figure(fr, "stream_mb_per_s")
    lib_read = fr.hk_stats.get("read_stall", {}) if fr.hk_stats else {}

    w = 44
    print(f"stall costs in the guest: {STALL_NODES} nodes, vCPU 0 on node 0 and vCPU 1 on node 1 "
          f"(seen on nodes {placement['firstread']}), policy {policy}, {mem_mib} MiB; "
          f"pingpong {rounds} round trips, firstread {pages} pages and {stream_mb} MiB")
    print(f"  {'measure':<{w}} {'p50':>12} {'p99':>12} {'p50/raw':>8}")
    where = f"CPUs {floor['cpus'][0]} and {floor['cpus'][1]}" if floor.get("cpus", [-1])[0] >= 0 else "host"
    print(f"  {f'raw 4 KiB socket round trip ({where})':<{w}} {_fmt(raw_p50):>12} "
          f"{_fmt(floor['p99_us']):>12} {'1.00x':>8}")
    for label, fig in (("hand-off, one way (half a round trip)", handoff),
                       ("first read of a page the other node owns", read)):
        ratio = "n/a" if fig["p50_ratio"] is None else f"{fig['p50_ratio']:.2f}x"
        print(f"  {label:<{w}} {_fmt(fig['p50']):>12} {_fmt(fig['p99']):>12} {ratio:>8}")
    print(f"  {'  timing floor (re-read, page already here)':<{w}} {_fmt(reread_p50):>12}")
    if lib_read.get("count"):
        print(f"  {'  library read stalls during firstread':<{w}} "
              f"{_fmt(lib_read['p50_ns'] / 1000):>12} {_fmt(lib_read['p99_ns'] / 1000):>12}"
              f"   ({lib_read['count']} stalls, both nodes, log2 bins)")
    stream_ratio = None if streaming is None else streaming / stream_floor["mb_s"]
    print(f"  streaming read of {stream_mb} MiB the other node wrote: {_fmt(streaming, 'MiB/s')}"
          + ("" if stream_ratio is None else f", {stream_ratio:.2f}x the raw stream"))
    print(f"  raw stream of {stream_mb} MiB ({where}), after it: {stream_floor['mb_s']:.0f} MiB/s "
          f"into fresh memory ({stream_floor['install_us_per_page']:.2f} us a page to install), "
          f"{stream_floor['socket_mb_s']:.0f} MiB/s through the socket alone "
          f"(the fastest of {len(stream_floor['passes_mb_s'])} passes: "
          f"{', '.join(f'{x:.0f}' for x in stream_floor['passes_mb_s'])} MiB/s)")
    totals = stats.get("totals", {})
    if totals:
        print(f"  hyperkernel, both workloads: {totals.get('pages_received', 0)} pages received, "
              f"{totals.get('read_stalls', 0)} read / {totals.get('write_stalls', 0)} write stalls, "
              f"{totals.get('invalidations_sent', 0)} invalidations, "
              f"{totals.get('vcpu_blobs_sent', 0)} vCPU moves")
    for r in (pp, fr):
        print(f"  {r.name}: {'verified' if r.ok else 'FAILED: ' + str(r.reason)}")
    breakdown = {r.name: stall_breakdown(r.hk_stats) for r in (pp, fr)}
    for name, rows in breakdown.items():
        print_breakdown(name, rows)
    print("targets (issue 12; reported, not enforced):")
    targets = {
        "handoff_p50_ratio_le_4": _target("handoff_us.p50_ratio", handoff["p50_ratio"],
                                          HANDOFF_TARGET_RATIO, higher=False),
        "guest_read_p50_ratio_le_3": _target("guest_read_us.p50_ratio", read["p50_ratio"],
                                             GUEST_READ_TARGET_RATIO, higher=False),
        "streaming_ge_400_mb_s": _target("streaming_mb_s", streaming, STREAMING_TARGET_MB_S,
                                         higher=True),
    }

    for name, value, unit, direction in (
            ("handoff_p50_us", handoff["p50"], "us", "lower"),
            ("handoff_p99_us", handoff["p99"], "us", "lower"),
            ("handoff_p50_ratio_vs_raw_rtt", handoff["p50_ratio"], "x", "lower"),
            ("guest_read_p50_us", read["p50"], "us", "lower"),
            ("guest_read_p99_us", read["p99"], "us", "lower"),
            ("guest_read_p50_ratio_vs_raw_rtt", read["p50_ratio"], "x", "lower"),
            ("reread_p50_us", reread_p50, "us", "info"),
            ("streaming_mb_per_s", streaming, "MB/s", "higher"),
            ("streaming_ratio_vs_raw_stream", stream_ratio, "x", "higher"),
            ("raw_stream_mb_per_s", stream_floor["mb_s"], "MB/s", "info"),
            ("raw_stream_install_us_per_page", stream_floor["install_us_per_page"], "us", "info"),
            ("raw_rtt_p50_us", raw_p50, "us", "info"),
            ("raw_rtt_p99_us", floor["p99_us"], "us", "info")):
        if value is not None:
            record.add(name, value, unit=unit, direction=direction)
    record.add_hk_stats(stats)
    result = {"bench": "stall", "nodes": STALL_NODES, "vcpus": STALL_NODES, "policy": policy,
              "mem_mib": mem_mib, **params, "vcpu_nodes": placement,
              "handoff_us": handoff, "handoff_is": "half the pingpong round trip",
              "guest_read_us": read, "reread_us": {"p50": reread_p50},
              "streaming_mb_s": streaming, "streaming_ratio_vs_raw_stream": stream_ratio,
              "raw_stream": stream_floor, "raw_rtt_us": {"p50": raw_p50, "cpus": floor.get("cpus")},
              "targets": targets, "totals": totals, "stages": breakdown, "ok": record.ok}
    return result, [record, pp, fr]


# The library's stall stages in the order a transaction runs through them (see
# enum hk_stage in hyperkernel/src/hk.h), and the scheduler's share.
STAGE_ORDER = ("request_wait", "home_queue", "invalidate", "give", "remote", "install",
               "handover", "tb_hold")


def stall_breakdown(hk: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per stage of the run's stalls, summed over nodes: count, p50/p99 and mean (µs), and
    total time (ms); ``sched:<role>`` rows hold the kernel's run delay (time runnable but
    waiting for a CPU) of the event threads and of the vCPU threads."""
    rows: dict[str, dict[str, float]] = {}
    for stage in STAGE_ORDER:
        h = hk.get("stages", {}).get(stage)
        if h and h.get("count"):
            rows[stage] = {"count": h["count"], "p50_us": h["p50_ns"] / 1000,
                           "p99_us": h["p99_ns"] / 1000, "mean_us": h["mean_ns"] / 1000,
                           "total_ms": h["mean_ns"] * h["count"] / 1e6}
    for role, fields in hk.get("sched", {}).items():
        rows[f"sched:{role}"] = {"run_ms": fields.get("run_ns", 0) / 1e6,
                                 "run_delay_ms": fields.get("run_delay_ns", 0) / 1e6}
    return rows


def print_breakdown(name: str, rows: dict[str, dict[str, float]]) -> None:
    if not rows:
        return
    print(f"  where {name}'s stall time went (log2 bins: p50/p99 are bucket upper bounds):")
    print(f"    {'stage':<16} {'count':>8} {'p50':>10} {'p99':>10} {'mean':>10} {'total':>10}")
    for stage, r in rows.items():
        if stage.startswith("sched:"):
            print(f"    {stage:<16} on CPU {r['run_ms']:9.1f} ms, waiting for a CPU "
                  f"{r['run_delay_ms']:9.1f} ms")
        else:
            print(f"    {stage:<16} {int(r['count']):>8} {_fmt(r['p50_us']):>10} "
                  f"{_fmt(r['p99_us']):>10} {_fmt(r['mean_us']):>10} {r['total_ms']:8.1f}ms")
