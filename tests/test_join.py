"""A node joins a running guest, runs one of its vCPUs, and leaves by plan.

The cluster starts with 3 nodes and 7 slots. Node 3 joins while the guest
runs: every node then counts it in and hands it a quarter of its homes (all
four agree on the new map), it starts running nothing, vCPU 2 moves
to it and a workload pinned to vCPU 2 verifies there, reading data written
before the join. Then node 3 is removed by plan (an evacuation): it exits 0,
the guest runs on with its 3 vCPUs and every byte. Node 2 leaves too, and
node 4 joins a cluster whose homes are no longer the starting ones, and runs
vCPU 1. Nodes with
the wrong secret (slot 5) or another machine (slot 6) are refused, and the
guest does not notice. The join and the
move go through `testbed up`'s commands, which call the Cluster API.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ClusterFactory

from testbed import up_commands
from testbed.config import NodeOverride
from testbed.errors import ConfigError, GuestError

SPEC: dict[str, Any] = {"nodes": 3, "vcpus": 3, "mem_mib": 512, "boot_timeout": 400,
                        "max_nodes": 7, "overrides": {5: NodeOverride(secret="0" * 64),
                                                      6: NodeOverride(mem_mib=256)}}
SQLITE: dict[str, Any] = {"cpus": "2", "rows": 1000, "lookups": 500, "updates": 200}


def _md5_ok(cluster: Any, cpu: int) -> bool:
    out = cluster.run(f"taskset -c {cpu} md5sum -c /tmp/x.md5").output.strip()
    return bool(out == "/tmp/x: OK")


@pytest.mark.boot
@pytest.mark.usefixtures("needs_hyperkernel")
def test_a_node_joins_runs_a_vcpu_and_is_removed_by_plan(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(**SPEC)
    cluster.boot()
    cluster.run("taskset -c 2 sh -c 'dd if=/dev/urandom of=/tmp/x bs=1M count=16 2>/dev/null; "
                "md5sum /tmp/x > /tmp/x.md5'", timeout=300)

    before = cluster.node_stats()[0]["stats"]["home_chunks"]
    assert before[3] == 0 and all(before[:3]), before
    # as `testbed up` does it (Ctrl-] then "add"), which calls Cluster.add_node
    said = up_commands.run(cluster, "add")
    assert said.startswith("node 3 joined; it is home for "), said
    stats = [s["stats"] for s in cluster.node_stats()]
    assert [s["present_nodes"] for s in stats] == [0b1111] * 4, stats
    # Every node gave it a share of its homes (a quarter), and all agree.
    homes = [s["home_chunks"] for s in stats]
    assert all(h == homes[0] for h in homes), homes
    assert homes[0][3] >= sum(before) // 4 - 3 and sum(homes[0]) == sum(before), (before, homes)
    assert stats[3]["homes_given"] == 0b0111, stats[3]
    # It runs nothing yet (a vCPU may be on node 0 for I/O at any moment, so
    # where each one is "at home" is what counts).
    assert [cluster.vcpu_home(c) for c in range(3)] == [0, 1, 2]
    info = cluster.nodes[3].qmp.command("query-hyperkernel")
    assert not [v for v in info.get("vcpu-states", [])], info

    said = up_commands.run(cluster, "migrate 2 3")
    assert said.startswith("vCPU 2 moved from node 2 to node 3"), said
    assert [cluster.vcpu_home(c) for c in range(3)] == [0, 1, 3]
    sql = cluster.run_workload("sqlite", **SQLITE)
    assert sql.ok, sql.reason
    assert _md5_ok(cluster, 2)
    assert cluster.vcpu_home(2) == 3
    joined = cluster.node_stats()[3]["stats"]
    assert joined["resident_pages"] > 0, joined  # the workload's pages came to it

    ev = cluster.remove_node(3)
    assert ev.vcpus == 1 and ev.pages_left == 0 and ev.homes_moved > 0, ev
    assert cluster.nodes[3].returncode() == 0
    assert [n.index for n in cluster.live_nodes] == [0, 1, 2]
    homes = [s["stats"]["home_chunks"] for s in cluster.node_stats()]
    assert homes[0][3] == 0 and all(h == homes[0] for h in homes), homes
    assert cluster.run("nproc").output.strip() == "3"
    assert _md5_ok(cluster, 2)
    sql = cluster.run_workload("sqlite", **SQLITE)
    assert sql.ok, sql.reason

    # Node 2, which started the cluster, leaves too: its homes go to nodes 0
    # and 1, so the map is not the one the cluster started with. Node 4 joins
    # then: it must take the map as it is now (and where vCPU 2 went).
    cluster.remove_node(2)
    assert cluster.add_node() == 4
    homes = [s["stats"]["home_chunks"] for s in cluster.node_stats()]
    assert all(h == homes[0] for h in homes) and homes[0][4] > 0, homes
    assert cluster.migrate_vcpu(1, 4)["moved"]
    sql = cluster.run_workload("sqlite", **{**SQLITE, "cpus": "1"})
    assert sql.ok, sql.reason
    assert _md5_ok(cluster, 1)

    # Slot 5's node has the wrong secret, slot 6's another machine (RAM):
    # refused, and the guest runs on.
    with pytest.raises(GuestError, match="wrong cluster secret"):
        cluster.add_node()
    with pytest.raises(GuestError, match="has 512 MiB of guest RAM, node 6 has 256 MiB"):
        cluster.add_node()
    with pytest.raises(ConfigError, match="no free node slot"):
        cluster.add_node()
    assert cluster.run("nproc").output.strip() == "3"
    assert [n.index for n in cluster.live_nodes] == [0, 1, 4]
