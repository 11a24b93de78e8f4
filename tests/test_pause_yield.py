"""A vCPU that spins in a PAUSE loop yields its host CPU while another vCPU of
its node runs (qemu-glue/hw/i386/hyperkernel/pause.c): two pingpong threads on
node 0's two vCPUs make it yield, and HK_PAUSE_YIELD=0 turns the yield off (the
spins are still counted). Counted by the glue (query-hyperkernel's pause-spins
and pause-yields); no timing."""

from __future__ import annotations

import pytest
from conftest import ClusterFactory

from testbed.cluster import Cluster

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]

# Default placement on 2 nodes with 4 vCPUs: vCPUs 0 and 1 on node 0.
SPEC = {"nodes": 2, "vcpus": 4, "mem_mib": 768, "boot_timeout": 400}


def _pause_counters(cluster: Cluster) -> tuple[int, int, int]:
    stats = cluster.nodes[0].qmp.command("query-hyperkernel")["stats"]
    glue = stats["glue"]
    return (int(glue["pause-spins"]), int(glue["pause-yields"]),
            int(stats["counters"]["event_rt_switches"]))


def _pingpong_on_node_0(cluster_factory: ClusterFactory,
                        rounds: int) -> tuple[int, int, int]:
    cluster = cluster_factory(**SPEC)
    cluster.boot()
    assert [int(c) for c in cluster.nodes[0].qmp.command("query-hyperkernel")
            ["local-vcpus"]][:2] == [0, 1]
    before = _pause_counters(cluster)
    record = cluster.run_workload("pingpong", rounds=rounds, cpus="0,1", guest_timeout=300)
    assert record.ok, record.raw
    after = _pause_counters(cluster)
    return after[0] - before[0], after[1] - before[1], after[2]


def test_two_spinning_vcpus_of_a_node_yield_to_each_other(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HK_EVENT_SCHED", raising=False)
    spins, yields, switches = _pingpong_on_node_0(cluster_factory, rounds=2000)
    # every hand-off makes one thread wait for the other, which shares its node
    assert spins > 0 and yields > 0, (spins, yields)
    assert switches == 0  # SCHED_FIFO throughout, the glue's default


def test_under_the_auto_class_a_spin_makes_the_event_thread_real_time(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HK_EVENT_SCHED", "auto")
    spins, _, switches = _pingpong_on_node_0(cluster_factory, rounds=500)
    assert spins > 0 and switches > 0, (spins, switches)


def test_pause_yield_0_never_yields(cluster_factory: ClusterFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HK_PAUSE_YIELD", "0")  # the nodes inherit the harness's environment
    # without the yield each hand-off waits for a host time slice: keep it short
    spins, yields, _ = _pingpong_on_node_0(cluster_factory, rounds=100)
    # the spins are still seen (they switch the event thread's class under
    # HK_EVENT_SCHED=auto), but nothing yields
    assert spins > 0 and yields == 0, (spins, yields)
