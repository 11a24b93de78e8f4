"""Evacuation under load, on 4 nodes (nightly: a 4-node boot and a minute of
workloads): sqlite and lmat run in loops, each run verifying its own
results, plus the clock workload; node 2's health fails, it evacuates and
exits 0, and every run still verifies."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import ClusterFactory

from testbed import workloads
from testbed.workloads import ParamValue, parse_result

pytestmark = [pytest.mark.boot, pytest.mark.nightly, pytest.mark.usefixtures("needs_hyperkernel")]

SPEC: dict[str, Any] = {"nodes": 4, "vcpus": 4, "mem_mib": 1024, "boot_timeout": 900}
LOOPS: dict[str, tuple[int, dict[str, ParamValue]]] = {
    # name: (runs, parameters); vCPU 2 runs on node 2, the leaver
    "sqlite": (12, {"cpus": "2", "rows": 2000, "lookups": 1000, "updates": 500}),
    "lmat": (4, {"cpus": "2,3", "readers": 2, "duration_ms": 6000, "table_mb": 16,
                 "write_pct": 5}),
    "clock": (1, {"cpus": "1", "duration_ms": 40000}),
}


def test_a_node_evacuates_under_load_and_every_workload_still_verifies(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(**SPEC)
    cluster.boot()
    assert cluster.vcpu_homes() == [0, 1, 2, 3]
    for name, (runs, params) in LOOPS.items():
        cmd = workloads.guest_command(name, workloads.validate_params(name, params, 4), 4)
        cluster.run(f"(for i in $(seq {runs}); do {cmd}; done > /tmp/{name}.out 2>&1; "
                    f"echo LOOP-DONE >> /tmp/{name}.out) &")
    time.sleep(8)
    held = cluster.node_stats()[2]["stats"]["resident_pages"]
    ev = cluster.inject_health(2, corrected_errors=5000, evacuation_timeout=600)
    assert ev is not None, "node 2 did not evacuate past its threshold"
    assert ev.pages_left == 0 and ev.vcpus == 1, ev
    assert cluster.nodes[2].returncode() == 0
    after = [s["stats"] for s in cluster.node_stats()]
    taken = {s["node"]: s["evacuation"]["pages_taken"] for s in after}
    adopted = {s["node"]: s["evacuation"]["homes_moved"] for s in after}
    print(f"node 2 held {held} pages; {ev.as_dict()}; taken {taken}; entries {adopted}")
    assert sum(adopted.values()) == ev.homes_moved
    assert 0 < sum(taken.values()) <= ev.pages_pushed
    for name, (runs, _) in LOOPS.items():
        cluster.run(f"while ! grep -q LOOP-DONE /tmp/{name}.out; do sleep 1; done", timeout=900)
        out = cluster.run(f"cat /tmp/{name}.out").output
        lines = [ln for ln in out.splitlines() if ln.startswith(f"workload={name} ")]
        assert len(lines) == runs, out[-2000:]
        for line in lines:
            r = parse_result(line, name)
            assert r.ok, line
    assert cluster.run("nproc").output.strip() == "4"
    cluster.poweroff()
