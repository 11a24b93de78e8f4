"""One guest across several QEMU nodes: boot, live vCPU migration, memory
beyond one node, shutdown, failures and bad input."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import ClusterFactory

from testbed import procs
from testbed.cluster import Artifacts, Cluster, VcpuMigration
from testbed.config import NodeOverride
from testbed.errors import GuestError, NodeDied
from testbed.qmp import QmpError

pytestmark = pytest.mark.boot


@pytest.fixture(autouse=True)
def needs_hyperkernel(artifacts: Artifacts) -> None:
    if not artifacts.supports_hyperkernel():
        pytest.skip("this QEMU build lacks the hyperkernel patches (-object hyperkernel)")


def _meminfo_kib(cluster: Cluster) -> int:
    return int(cluster.run("awk '/MemTotal/ {print $2}' /proc/meminfo").output)


@pytest.mark.parametrize("nodes", [2, 4])
def test_stock_kernel_boots_across_nodes(cluster_factory: ClusterFactory, nodes: int) -> None:
    # A 4-node boot takes about a minute on 2 cores; leave room for a slower CI machine.
    cluster = cluster_factory(nodes=nodes, vcpus=nodes, mem_mib=512, boot_timeout=400)
    cluster.boot()
    assert cluster.run("nproc").output == f"{nodes}\n"
    assert 400 * 1024 < _meminfo_kib(cluster) <= 512 * 1024
    # One vCPU per node, as placed. A vCPU visits node 0 for a moment when it
    # touches a device, so look a few times.
    deadline = time.monotonic() + 10
    while (located := cluster.vcpu_locations()) != list(range(nodes)):
        assert time.monotonic() < deadline, f"vCPUs run on nodes {located}"
        time.sleep(0.2)
    stats = cluster.stats()
    assert len(stats["nodes"]) == nodes
    assert stats["totals"]["pages_received"] > 0  # the boot really shared memory


def test_single_node_runs_through_the_hyperkernel(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=1, vcpus=2, hyperkernel=True)
    cluster.boot()
    assert cluster.run("nproc").output == "2\n"
    assert cluster.stats()["nodes"][0]["node"] == 0


def test_pinned_threads_on_different_nodes_compute_the_right_answer(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    for name, params in (("lock", {"threads": 2, "iters": 2000, "cpus": "0,1"}),
                         ("pingpong", {"rounds": 200, "cpus": "0,1"}),
                         ("falseshare", {"threads": 2, "iters": 20000, "cpus": "0,1"})):
        record = cluster.run_workload(name, params, guest_timeout=300)  # type: ignore[arg-type]
        assert record.ok, record.raw


def test_vcpus_migrate_live_under_a_self_checking_workload(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    cluster.run("(/opt/workloads/bin/lock threads=2 iters=200000 cpus=0,1 timeout_s=600 "
                "> /tmp/lock.out 2>&1; echo done >> /tmp/lock.out) &")
    events: list[VcpuMigration] = []
    for i in range(100):
        cpu = i % 2
        target = (cluster.vcpu_location(cpu) + 1) % 2
        events.append(cluster.migrate_vcpu(cpu, target))
    assert len(events) == 100
    # A vCPU that went back to the target on its own (after an I/O visit) stays there.
    assert all(e["state-bytes"] > 0 and e["latency-ns"] > 0 for e in events if e["moved"])
    deadline = time.monotonic() + 600
    while "done" not in cluster.run("cat /tmp/lock.out").output:
        assert time.monotonic() < deadline, "workload did not finish"
        time.sleep(2)
    out = cluster.run("cat /tmp/lock.out").output
    assert "ok=1" in out, out


def test_guest_time_never_goes_backwards_across_migrations(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    cluster.run("(/opt/workloads/bin/clock duration_ms=20000 cpus=0,1 > /tmp/clock.out 2>&1;"
                " echo done >> /tmp/clock.out) &")
    for i in range(20):
        cluster.migrate_vcpu(i % 2, (cluster.vcpu_location(i % 2) + 1) % 2)
    deadline = time.monotonic() + 300
    while "done" not in cluster.run("cat /tmp/clock.out").output:
        assert time.monotonic() < deadline
        time.sleep(2)
    out = cluster.run("cat /tmp/clock.out").output
    assert "ok=1" in out and "cross_vcpu_backwards=0" in out, out


def test_guest_memory_beyond_one_node(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=3, vcpus=3, mem_mib=512, budget_mib=(256,), boot_timeout=400)
    cluster.boot()
    record = cluster.run_workload("sweep", {"size_mb": 400, "passes": 1, "threads": 1},
                                  guest_timeout=900)
    assert record.ok, record.raw
    # More guest memory was touched than one node may hold, so pages had to move
    # away from the nodes that filled up.
    assert cluster.stats()["totals"]["evictions"] > 0


def test_guest_poweroff_ends_every_node(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    cluster.poweroff(timeout=60)
    assert not any(n.alive() for n in cluster.nodes)


def test_a_killed_node_stops_the_cluster_and_is_named(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=3, vcpus=3, boot_timeout=400)
    cluster.boot()
    os.kill(cluster.nodes[2].pid, signal.SIGKILL)
    with pytest.raises(NodeDied, match="node2") as err:
        cluster.run("sleep 60", timeout=120)
    assert err.value.node == 2
    deadline = time.monotonic() + 30
    while any(n.alive() for n in cluster.nodes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(n.alive() for n in cluster.nodes), "survivors kept running"
    survivor_log = cluster.nodes[0].files.log("qemu.log").read_text()
    assert "2" in survivor_log  # the survivors name the node that died
    cluster.shutdown()
    assert not procs.our_nodes()


def test_bad_migration_requests_are_refused(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    with pytest.raises(QmpError):
        cluster.nodes[0].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 7, "node": 1})
    with pytest.raises(QmpError):
        cluster.nodes[0].qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": 0, "node": 9})
    assert cluster.run("nproc").output == "2\n"  # the guest is unaffected


@pytest.mark.parametrize("override,words", [
    ({1: NodeOverride(secret="not-the-cluster-secret")}, "secret"),
    ({1: NodeOverride(mem_mib=768)}, "machine|mismatch|RAM|memory"),
    ({1: NodeOverride(start=False)}, "unreachable|connect|peer 1|node 1"),
])
def test_a_misconfigured_cluster_is_refused_before_the_guest_starts(
        cluster_factory: ClusterFactory, override: dict[int, NodeOverride], words: str) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2, overrides=override, boot_timeout=120)
    with pytest.raises(GuestError, match=words):
        cluster.boot()
    assert cluster.nodes[0].control.size() == 0  # the guest never ran
