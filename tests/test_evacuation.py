"""A node whose health fails is evacuated while the guest runs: its vCPUs,
pages and directory move to the others, it exits 0, and the guest's data and
programs are unharmed. Bad requests are refused and leave the guest running.

(The simulation checks the protocol underneath on every seed that evacuates,
and fails against a leaver that skips the freeze: hyperkernel/tests/sim.)
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import ClusterFactory

from testbed import evacuation, workloads
from testbed.errors import ConfigError
from testbed.qmp import QmpError
from testbed.workloads import ParamValue, parse_result

SPEC: dict[str, Any] = {"nodes": 3, "vcpus": 3, "mem_mib": 512, "boot_timeout": 400}
# A rewriter on vCPU 2 (node 2) that runs through the evacuation and checks
# every value it reads.
LMAT: dict[str, ParamValue] = {"cpus": "2", "duration_ms": 15000, "table_mb": 16, "write_pct": 5}


@pytest.mark.boot
@pytest.mark.usefixtures("needs_hyperkernel")
def test_a_node_past_its_health_threshold_evacuates_and_the_guest_runs_on(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(**SPEC)
    cluster.boot()
    assert cluster.vcpu_homes() == [0, 1, 2]
    # Data written on node 2, and a workload that runs there throughout.
    cluster.run("taskset -c 2 sh -c 'dd if=/dev/urandom of=/tmp/x bs=1M count=48 "
                "2>/dev/null; md5sum /tmp/x > /tmp/x.md5'", timeout=300)
    sql = cluster.run_workload("sqlite", cpus="2", rows=1000, lookups=500, updates=200)
    assert sql.ok, sql.reason
    values = workloads.validate_params("lmat", LMAT, SPEC["vcpus"])
    cluster.run(f"({workloads.guest_command('lmat', values, SPEC['vcpus'])} > /tmp/lmat.out "
                "2>&1 &)")
    time.sleep(2)
    held = cluster.node_stats()[2]["stats"]["resident_pages"]
    assert held > 10000, f"node 2 holds only {held} pages: nothing to evacuate"

    # Requests that must be refused, the guest unaffected.
    with pytest.raises(QmpError, match="node 0 owns the devices"):
        cluster.nodes[0].qmp.command("hyperkernel-evacuate")
    with pytest.raises(QmpError, match="out of range"):
        cluster.nodes[2].qmp.command("hyperkernel-inject-health", temperature=500)
    with pytest.raises(QmpError, match="negative"):
        cluster.nodes[2].qmp.command("hyperkernel-inject-health", **{"corrected-errors": -1})
    assert cluster.nodes[2].alive()
    # Below the threshold (HK_HEALTH_MAX_CE, 100): the score drops, nothing moves.
    assert cluster.inject_health(2, corrected_errors=50, evacuation_timeout=None) is None
    time.sleep(1)
    health = cluster.node_stats()[2]["stats"]["health"]
    assert health["corrected_errors"] >= 50 and health["score"] <= 50, health
    assert cluster.node_stats()[0]["stats"]["health"]["peer_scores"][2] <= 50
    assert cluster.nodes[2].alive()

    ev = cluster.inject_health(2, corrected_errors=1000)
    assert ev is not None, "node 2 did not start evacuating past its threshold"
    assert "1000 corrected memory errors" in ev.reason
    assert ev.vcpus == 1 and ev.pages_left == 0, ev
    assert ev.pages_pushed > 0 and ev.homes_moved > 0, ev
    assert [p for p, _ in ev.phases][-1] == "done" and "pages" in [p for p, _ in ev.phases]
    assert cluster.nodes[2].returncode() == 0
    assert [n.index for n in cluster.live_nodes] == [0, 1]

    # The survivors say where node 2's pages and directory went.
    after = [s["stats"] for s in cluster.node_stats()]
    for s in after:
        assert s["evacuation"]["node"] == 2 and s["evacuation"]["phase"] == "done", s
        assert s["gone_nodes"] == 1 << 2
    taken = [s["evacuation"]["pages_taken"] for s in after]
    adopted = [s["evacuation"]["homes_moved"] for s in after]
    assert 0 < sum(taken) <= ev.pages_pushed, (taken, ev)
    assert sum(adopted) == ev.homes_moved and all(adopted), (adopted, ev)

    # The guest runs on, with every byte and every vCPU.
    where = cluster.vcpu_locations()
    assert where[2] in (0, 1), where
    assert cluster.run("md5sum -c /tmp/x.md5").output.strip() == "/tmp/x: OK"
    assert cluster.run("nproc").output.strip() == "3"
    cluster.run("while ! grep -q workload=lmat /tmp/lmat.out; do sleep 1; done", timeout=120)
    lmat = parse_result(cluster.run("cat /tmp/lmat.out").output, "lmat")
    assert lmat.ok, lmat
    sql = cluster.run_workload("sqlite", cpus="2", rows=1000, lookups=500, updates=200)
    assert sql.ok, sql.reason
    # No vCPU goes to a node that left.
    with pytest.raises(ConfigError, match="node 2 does not run"):
        cluster.migrate_vcpu(1, 2)
    with pytest.raises(QmpError, match="is evacuating or has left"):
        cluster.nodes[1].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 1, "node": 2})
    cluster.poweroff()
    assert all(n.returncode() == 0 for n in cluster.nodes)


def test_health_values_are_checked_before_they_are_sent() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        evacuation.health_args(None, 250, None)
    with pytest.raises(ConfigError, match="negative"):
        evacuation.health_args(-3, None, None)
    with pytest.raises(ConfigError, match="nothing to inject"):
        evacuation.health_args(None, None, None)
    assert evacuation.health_args(5, 70, 0) == {"corrected-errors": 5, "link-errors": 0,
                                                "temperature": 70}


def test_the_leavers_last_line_is_read_back() -> None:
    log = ("[hk node 2] warning: evacuating\n"
           "qemu-system-x86_64: hyperkernel node 2: evacuated (health: 9 C (limit 5 C)): "
           '{"node": 2, "vcpus": 1, "pages_pushed": 7, "copies_dropped": 1, "zero_pages": 0, '
           '"homes_moved": 3, "bytes": 28672, "pages_left": 0, "seconds": 0.5}\n')
    got = evacuation.parse_done_line(log)
    assert got is not None
    reason, fig = got
    assert reason == "health: 9 C (limit 5 C)" and fig["pages_pushed"] == 7
    assert evacuation.parse_done_line("[hk node 2] warning: evacuating\n") is None


def test_up_commands_refuse_bad_input_without_touching_the_cluster() -> None:
    from testbed import up_commands

    class NoCluster:  # any use of the cluster would fail the test
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"cluster.{name} used for bad input")

    c: Any = NoCluster()
    assert up_commands.run(c, "   ") == ""
    assert "evacuate K" in up_commands.run(c, "help")
    for line, words in (("evacuate", "takes one node"), ("evacuate two", "not a whole number"),
                        ("health 2 volts=3", "unknown health value"), ("health", "takes a node"),
                        ("vcpus", "takes a count"), ("launch 3", "unknown command"),
                        ("add 3", "takes nothing"), ("migrate 2", "takes a vCPU and a node"),
                        ("migrate two 3", "not a whole number")):
        with pytest.raises(ConfigError, match=words):
            up_commands.run(c, line)
        assert up_commands.run_safely(c, line).startswith("refused: ")
