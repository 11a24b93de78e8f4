"""The main job (``make demo``): one guest across several nodes, a database
and a pathological workload running while vCPUs migrate live, and the merged
statistics of the run. Without a hyperkernel-enabled QEMU it runs on one node
and says so."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.cluster import Artifacts, Cluster, VcpuMigration
from testbed.config import ClusterSpec, default_placement
from testbed.errors import GuestError, TestbedError
from testbed.progress import Progress
from testbed.record import demo_record
from testbed.workloads import ParamValue

# A database and a pathological pattern, both self-checking.
DEMO_WORKLOADS: list[tuple[str, dict[str, ParamValue]]] = [
    ("sqlite", {}),
    ("falseshare", {"iters": 200000}),
]
MIGRATIONS_PER_WORKLOAD = 20


def _migrate_while(cluster: Cluster, stop: threading.Event, log: list[VcpuMigration],
                   errors: list[str]) -> None:
    """Move vCPUs round-robin to the next node until told to stop.

    The target is the node after the vCPU's home, not after where it runs
    now: a vCPU visiting node 0 for I/O still moves on. migrate_vcpu follows
    a vCPU that moves by itself meanwhile, so the demo never races it.
    """
    i = 0
    try:
        while not stop.is_set() and len(log) < 10 * MIGRATIONS_PER_WORKLOAD:
            cpu = i % cluster.spec.vcpus
            target = (cluster.vcpu_home(cpu) + 1) % cluster.spec.nodes
            log.append(cluster.migrate_vcpu(cpu, target))
            i += 1
    except TestbedError as e:
        errors.append(str(e))


def _print_stats(stats: dict[str, Any], migrations: list[VcpuMigration]) -> None:
    out = sys.stdout
    totals = stats.get("totals", {})
    print("merged statistics:", file=out)
    for key in ("pages_received", "pages_sent", "read_stalls", "write_stalls",
                "invalidations_sent", "zero_fills", "evictions"):
        print(f"  {key:22} {totals.get(key, 0)}", file=out)
    moves = [m for m in migrations if m["moved"]]
    if moves:
        sizes = [m["state-bytes"] for m in moves]
        lat = sorted(m["latency-ns"] / 1000 for m in moves)
        print(f"  {'vcpu_migrations':22} {len(moves)} (state {max(sizes)} bytes, "
              f"p50 {lat[len(lat) // 2]:.0f} us)", file=out)
    if len(moves) < len(migrations):
        print(f"  {'vcpu_already_there':22} {len(migrations) - len(moves)} (had moved there "
              "on their own; they stay)", file=out)
    print("  hottest pages (guest physical address: stalls):", file=out)
    for page in stats.get("hottest_pages", [])[:8]:
        print(f"    {page['gpa']:>12}: {page['stalls']}", file=out)


def run_demo(spec: ClusterSpec, artifacts: Artifacts, run_dir: Path, progress: Progress,
             nodes_given: bool = False) -> int:
    out = sys.stdout
    multi = artifacts.supports_hyperkernel()
    if not nodes_given:
        nodes = 4 if multi else 1
        vcpus = max(spec.vcpus, nodes)
        spec = replace(spec, nodes=nodes, vcpus=vcpus,
                       placement=default_placement(nodes, vcpus)).validate()
    if not multi:
        print("note: this QEMU build lacks the hyperkernel patches; running on one node",
              file=out)
    failures = 0
    migrations: list[VcpuMigration] = []
    with Cluster(spec, artifacts, run_dir) as cluster:
        progress.step("demo", f"booting {spec.nodes} node(s) with {spec.vcpus} vCPU(s), "
                      f"{spec.mem_mib} MiB; logs in {run_dir}")
        try:
            secs = cluster.boot()
            print(f"boot-to-shell: {secs:.2f} s on {spec.nodes} node(s)", file=out)
            for label, cmd in (("kernel (uname -r)", "uname -r"), ("vCPUs (nproc)", "nproc"),
                               ("memory (free -m)", "free -m | sed -n 2p")):
                print(f"{label}: {cluster.run(cmd).output.strip()}", file=out)
            for name, params in DEMO_WORKLOADS:
                progress.step("demo", f"running {name}" +
                              (" while vCPUs migrate" if spec.nodes > 1 else ""))
                stop = threading.Event()
                errors: list[str] = []
                mover = None
                if spec.nodes > 1 and spec.uses_hyperkernel:
                    mover = threading.Thread(target=_migrate_while,
                                             args=(cluster, stop, migrations, errors))
                    mover.start()
                try:
                    rec = cluster.run_workload(name, params)
                finally:
                    stop.set()
                    if mover is not None:
                        mover.join()
                if errors:
                    raise GuestError(f"live migration failed: {errors[0]}")
                failures += 0 if rec.ok else 1
                print(f"{name}: {'ok' if rec.ok else 'FAILED'}  {rec.raw}", file=out)
            stats = cluster.stats() if spec.uses_hyperkernel else {}
            if stats:
                _print_stats(stats, migrations)
            demo_record(cluster, failures == 0, migrations).write(run_dir / "record-demo.json")
            cluster.poweroff()
        except GuestError:
            print(cluster.failure_report(), file=sys.stderr)
            raise
    print(f"artifacts: {json.dumps(artifacts.hashes())}", file=out)
    print(f"run record: {run_dir / 'record-demo.json'}", file=out)
    print("demo: " + ("all checks passed" if failures == 0 else f"{failures} check(s) FAILED"),
          file=out)
    return 0 if failures == 0 else 1
