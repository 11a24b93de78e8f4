"""Each node's threads run on host CPUs of its own, as separate machines would."""

from __future__ import annotations

import os

import pytest
from conftest import ClusterFactory

from testbed.affinity import host_cpus, node_cpus
from testbed.config import ClusterSpec
from testbed.errors import ConfigError


@pytest.mark.parametrize(("nodes", "cpus", "want"), [
    (2, [0, 1], [[0], [1]]),
    (2, [0, 1, 2, 3], [[0, 1], [2, 3]]),
    (3, [0, 1, 2, 3], [[0], [1], [2, 3]]),
    (4, [0, 1], [[0], [1], [0], [1]]),  # more nodes than CPUs: shared round-robin
    (1, [4, 6], [[4, 6]]),
])
def test_nodes_get_disjoint_shares_while_there_are_enough_cpus(nodes: int, cpus: list[int],
                                                                want: list[list[int]]) -> None:
    assert [node_cpus(k, nodes, cpus) for k in range(nodes)] == want


def test_an_unknown_affinity_is_refused() -> None:
    with pytest.raises(ConfigError, match="not known"):
        ClusterSpec(nodes=2, vcpus=2, cpu_affinity="socket").validate()


@pytest.mark.boot
@pytest.mark.usefixtures("needs_hyperkernel")
def test_each_node_runs_on_its_own_cpus_with_a_realtime_event_thread(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    host = host_cpus()
    for node in cluster.nodes:
        assert sorted(os.sched_getaffinity(node.pid)) == node_cpus(node.index, 2, host)
        fifo = [int(t) for t in os.listdir(f"/proc/{node.pid}/task")
                if os.sched_getscheduler(int(t)) == os.SCHED_FIFO]
        # the event thread alone: vCPU threads and QEMU's own stay in the normal class
        assert len(fifo) == 1, f"node {node.index}: SCHED_FIFO threads {fifo}"
