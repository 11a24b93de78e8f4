"""A guest's faults recorded on real nodes (``--fault-trace``) and replayed by
the simulation under every policy (``make -C hyperkernel replay``, hk-sim
--trace). The checked-in trace's own checks are in the library's tests
(hyperkernel/tests/sim/replay_test.sh); this is the same path from a guest."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ClusterFactory

from testbed import trace_summary

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]

REPO = Path(__file__).resolve().parent.parent


def _replay(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def test_a_guests_recorded_faults_replay_under_every_policy(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=4, mem_mib=512, boot_timeout=400, fault_trace=True)
    cluster.boot()
    # vCPU 0 on node 0 and vCPU 2 on node 1 hand a word back and forth
    record = cluster.run_workload("pingpong", {"rounds": 300, "cpus": "0,2", "timeout_s": 120},
                                  guest_timeout=300)
    assert record.ok, record.raw
    totals = record.hk_stats["totals"]
    stalls = totals["read_stalls"] + totals["write_stalls"]
    cluster.shutdown()  # a node flushes its trace when it exits
    name, after, before = cluster.fault_trace_windows.read_text().split()
    assert name == "pingpong"
    files = [f"{cluster.fault_trace_prefix}.node{k}" for k in range(2)]
    r = subprocess.run(["make", "-s", "-C", str(REPO / "hyperkernel"), "replay",
                        f"TRACE={' '.join(files)}", f"AFTER={after}", f"BEFORE={before}"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = {m["policy"]: m for m in map(_replay, re.findall(r"^trace .*$", r.stdout, re.M))}
    assert sorted(runs) == ["cost", "learned", "page", "vcpu"], r.stdout
    page = runs["page"]
    # the trace holds the workload's stalls (less those of threads that run
    # no vCPU), and under the policy it was recorded with, most stall again
    assert int(page["accesses"]) >= max(600, stalls // 2), (stalls, page)
    assert int(page["stalls"]) >= int(page["accesses"]) // 2, page
    assert page["vcpu_moves"] == "0" and page["placement"] == "0,0,1,1", page
    # learned brings vCPU 2 to vCPU 0 (which never moves), as it does on the
    # nodes (test_policies); "vcpu" chases every stall, so where it ends varies
    placement = runs["learned"]["placement"].split(",")
    assert placement[0] == placement[2] == "0", r.stdout
    assert all(m["violations"] == "0" for m in runs.values()), r.stdout

    # testbed trace reads the same run: the workload's window, its stalls at
    # least those replayed, and the word the two hand over, written from both
    # nodes, among the pages that cost most
    (window,) = trace_summary.read_windows(cluster.run_dir)
    summary = trace_summary.summarise(trace_summary.read_trace(cluster.run_dir), window)
    assert summary.window.name == "pingpong" and summary.stalls >= int(page["accesses"]), summary
    assert {0, 2} <= set(summary.vcpus), summary.vcpus
    assert any({"n0 w", "n1 w"} <= set(p.by_node) or {"n0 w", "n1 r"} <= set(p.by_node)
               for p in summary.pages), summary.pages
