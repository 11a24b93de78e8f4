"""A vCPU that spins in a PAUSE loop yields its host CPU while another vCPU of
its node runs (qemu-glue/hw/i386/hyperkernel/pause.c): two pingpong threads on
node 0's two vCPUs make it yield, and HK_PAUSE_YIELD=0 turns the yield off (the
spins are still counted). Counted by the glue (query-hyperkernel's pause-spins
and pause-yields); no timing."""

from __future__ import annotations

import os

import pytest
from conftest import ClusterFactory

from testbed import affinity
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
    monkeypatch.delenv("HK_EVENT_SCHED", raising=False)  # the harness's choice
    spins, yields, switches = _pingpong_on_node_0(cluster_factory, rounds=2000)
    # every hand-off makes one thread wait for the other, which shares its node
    assert spins > 0 and yields > 0, (spins, yields)
    # Node 0's CPUs are its own (one host CPU per node), so its event thread
    # runs HK_EVENT_SCHED=auto: SCHED_FIFO from the first spin (the boot has
    # spun already: a switch counted since the node started will do).
    if len(affinity.host_cpus()) >= SPEC["nodes"]:
        assert switches > 0


def test_nodes_that_share_a_cpu_keep_their_event_threads_real_time(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HK_EVENT_SCHED", raising=False)
    cluster = cluster_factory(nodes=len(affinity.host_cpus()) + 1, vcpus=2, mem_mib=512,
                              boot_timeout=400)
    cluster.boot()
    stats = [node.qmp.command("query-hyperkernel")["stats"] for node in cluster.nodes]
    assert [s["counters"]["event_rt_switches"] for s in stats] == [0] * len(stats)
    events = [s["sched"]["event_thread"]["tid"] for s in stats]
    assert [os.sched_getscheduler(t) for t in events] == [os.SCHED_FIFO] * len(events)
    assert sum(s["glue"]["pause-spins"] for s in stats) > 0  # the boot spun; nothing switched


def test_pause_yield_0_never_yields(cluster_factory: ClusterFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HK_PAUSE_YIELD", "0")  # the nodes inherit the harness's environment
    # without the yield each hand-off waits for a host time slice: keep it short
    spins, yields, _ = _pingpong_on_node_0(cluster_factory, rounds=100)
    # the spins are still seen (they switch the event thread's class under
    # HK_EVENT_SCHED=auto), but nothing yields
    assert spins > 0 and yields == 0, (spins, yields)
