"""Live vCPU migration on request: sent to any node, it reaches the vCPU wherever it
runs, even while the vCPU moves on its own (I/O visits to node 0 and back), and the
vCPU then stays on the target. Bad requests are refused with a reason."""

from __future__ import annotations

import time
from typing import Any

import pytest

from testbed.cluster import Cluster
from testbed.errors import ConfigError
from testbed.qmp import QmpError

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]

CLUSTER_SPEC = {"nodes": 3, "vcpus": 3, "mem_mib": 512, "boot_timeout": 400}
MIGRATED, STAYS = "HYPERKERNEL_VCPU_MIGRATED", "HYPERKERNEL_VCPU_STAYS"


def _glue(cluster: Cluster, node: int) -> dict[str, int]:
    stats: dict[str, int] = cluster.nodes[node].qmp.command("query-hyperkernel")["stats"]["glue"]
    return stats


def _counters(cluster: Cluster, node: int) -> dict[str, int]:
    stats: dict[str, int] = (
        cluster.nodes[node].qmp.command("query-hyperkernel")["stats"]["counters"])
    return stats


def _settle(cluster: Cluster, cpu: int, node: int, seconds: float = 3.0) -> None:
    """The vCPU's home is ``node`` and it runs there (it may visit node 0 for I/O)."""
    deadline = time.monotonic() + seconds
    while (where := cluster.vcpu_location(cpu)) != node or cluster.vcpu_home(cpu) != node:
        assert time.monotonic() < deadline, (
            f"vCPU {cpu} runs on node {where}, home {cluster.vcpu_home(cpu)}; wanted {node}")
        time.sleep(0.1)


def test_a_request_sent_to_a_bystander_node_moves_the_vcpu(module_cluster: Cluster) -> None:
    cluster = module_cluster
    # vCPU 2 may be on an I/O visit to node 0 (it goes home 2 ms later) at the instant
    # the request arrives: then node 0 runs it, keeps it and says so (STAYS), which is
    # right but moves nothing. A few attempts make sure a forwarded request is seen
    # moving it at least once.
    stays = []
    for _ in range(5):
        cluster.migrate_vcpu(2, 2)
        _settle(cluster, 2, 2)
        forwarded = _counters(cluster, 1)["migrate_requests_forwarded"]
        target = cluster.nodes[0].qmp
        target.drain_events()
        # Node 1 neither runs vCPU 2 nor is its target: its hyperkernel forwards the request.
        cluster.nodes[1].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 2, "node": 0})
        ev = target.wait_event(
            (MIGRATED, STAYS), 30,
            match=lambda d: d["cpu-index"] == 2 and d.get("reason", "request") == "request")
        assert _counters(cluster, 1)["migrate_requests_forwarded"] > forwarded
        _settle(cluster, 2, 0)
        if ev["event"] == MIGRATED:
            assert ev["data"]["from"] == 2 and ev["data"]["to"] == 0, ev
            assert ev["data"]["state-bytes"] > 0 and ev["data"]["latency-ns"] > 0, ev
            return
        assert ev["data"]["node"] == 0, ev
        stays.append(ev)
    pytest.fail(f"every forwarded request found vCPU 2 already on node 0: {stays}")


def test_a_vcpu_already_on_the_target_stays_and_says_so(module_cluster: Cluster) -> None:
    cluster = module_cluster
    cluster.migrate_vcpu(1, 1)
    stayed = _glue(cluster, 1)["requests-stayed"]
    result = cluster.migrate_vcpu(1, 1)
    assert result == {"cpu-index": 1, "from": 1, "to": 1, "moved": False,
                      "state-bytes": 0, "latency-ns": 0}
    assert _glue(cluster, 1)["requests-stayed"] == stayed + 1
    _settle(cluster, 1, 1)


def test_migrations_never_race_the_vcpus_own_io_visits(module_cluster: Cluster) -> None:
    cluster = module_cluster
    cluster.migrate_vcpu(1, 1)
    # vCPU 1 writes to the serial port every few milliseconds: each write
    # moves it to node 0, which owns the devices, and it goes home 2 ms later.
    cluster.run("(taskset -c 1 sh -c 'while [ ! -e /tmp/quiet ]; do echo -n . > /dev/ttyS0;"
                " usleep 3000; done' &)")
    before = _glue(cluster, 0)
    try:
        results = []
        for i in range(30):
            target = (1, 2)[i % 2]
            results.append(cluster.migrate_vcpu(1, target))
            # It runs on its new home or visits node 0 from there: never elsewhere.
            assert cluster.vcpu_home(1) == target
            assert cluster.vcpu_location(1) in (0, target)
            time.sleep(0.15)  # a move takes milliseconds; leave the I/O loop time to run
    finally:
        cluster.run("touch /tmp/quiet")
    after = _glue(cluster, 0)
    # The race was there: vCPU 1 came to node 0 for I/O and went back many times.
    assert after["io-returns"] - before["io-returns"] >= 10, (before, after)
    assert [r["to"] for r in results] == [(1, 2)[i % 2] for i in range(30)]
    assert all(r["state-bytes"] > 0 for r in results if r["moved"])
    assert sum(r["moved"] for r in results) >= 25, results


def test_two_requests_for_one_vcpu_in_flight_are_both_answered(module_cluster: Cluster) -> None:
    cluster = module_cluster
    cluster.migrate_vcpu(1, 1)
    lost = sum(_counters(cluster, n)["migrate_requests_lost"] for n in range(3))
    for n in (0, 2):
        cluster.nodes[n].qmp.drain_events()
    # The second request reaches vCPU 1 while the first moves it (or before).
    cluster.nodes[0].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 1, "node": 0})
    cluster.nodes[2].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 1, "node": 2})

    def request_outcome(data: dict[str, Any]) -> bool:
        return data.get("cpu-index") == 1 and data.get("reason", "request") == "request"

    for n in (0, 2):
        ev = cluster.nodes[n].qmp.wait_event((MIGRATED, STAYS), 30, match=request_outcome)
        assert ev["data"].get("to", ev["data"].get("node")) == n, ev
    assert sum(_counters(cluster, n)["migrate_requests_lost"] for n in range(3)) == lost
    final = cluster.vcpu_location(1)
    assert final in (0, 2)
    _settle(cluster, 1, final)


@pytest.mark.parametrize("node", [0, 1, 2])
def test_bad_migration_requests_are_refused_on_any_node(module_cluster: Cluster,
                                                        node: int) -> None:
    qmp = module_cluster.nodes[node].qmp
    with pytest.raises(QmpError, match=r"failed: no vCPU 7$"):
        qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 7, "node": 1})
    with pytest.raises(QmpError, match=r"failed: no vCPU -1$"):
        qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": -1, "node": 1})
    with pytest.raises(QmpError, match=r"failed: no node 9 \(nodes: 0-2\)$"):
        qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 0, "node": 9})
    assert module_cluster.run("nproc").output == "3\n"  # the guest is unaffected


def test_the_harness_refuses_a_migration_it_cannot_ask_for(module_cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match="vCPU 7 does not exist"):
        module_cluster.migrate_vcpu(7, 1)
    with pytest.raises(ConfigError, match="node 9 does not run"):
        module_cluster.migrate_vcpu(0, 9)
