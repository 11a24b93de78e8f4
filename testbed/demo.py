"""The main job (``make demo``): boot the guest, show what it is, run
self-checking workloads in it, and print what they report."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.cluster import Artifacts, Cluster
from testbed.config import ClusterSpec
from testbed.errors import GuestError
from testbed.progress import Progress
from testbed.workloads import ParamValue

# Small, self-checking runs: a control workload and a database.
DEMO_WORKLOADS: list[tuple[str, dict[str, ParamValue]]] = [
    ("private", {}),
    ("sqlite", {}),
]


def run_demo(spec: ClusterSpec, artifacts: Artifacts, run_dir: Path, progress: Progress) -> int:
    out = sys.stdout
    failures = 0
    with Cluster(spec, artifacts, run_dir) as cluster:
        progress.step("demo", f"booting {spec.nodes} node(s) with {spec.vcpus} vCPU(s), "
                      f"{spec.mem_mib} MiB; logs in {run_dir}")
        try:
            secs = cluster.boot()
            print(f"boot-to-shell: {secs:.2f} s", file=out)
            for label, cmd in (("kernel (uname -r)", "uname -r"), ("vCPUs (nproc)", "nproc"),
                               ("memory (free -m)", "free -m | sed -n 2p")):
                r = cluster.run(cmd)
                print(f"{label}: {r.output.strip()}", file=out)
            for name, params in DEMO_WORKLOADS:
                progress.step("demo", f"running workload {name}")
                rec = cluster.run_workload(name, params)
                failures += 0 if rec.ok else 1
                print(f"{name}: {'ok' if rec.ok else 'FAILED'}  {rec.raw}", file=out)
            cluster.poweroff()
        except GuestError:
            print(cluster.failure_report(), file=sys.stderr)
            raise
    print(f"artifacts: {artifacts.hashes()}", file=out)
    print("demo: " + ("all checks passed" if failures == 0 else f"{failures} check(s) FAILED"),
          file=out)
    return 0 if failures == 0 else 1
