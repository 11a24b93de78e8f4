"""A node joins the running guest.

The cluster starts with ``ClusterSpec.nodes`` nodes and ``max_nodes`` slots
(``-object hyperkernel,nodes=N,max-nodes=M``), as ``-smp N,maxcpus=M``
reserves CPUs. ``add_node`` starts QEMU for the next free slot with
``join=on``: its hyperkernel dials every node with the cluster's secret,
compares the machine definition and learns where vCPUs run and who is home
for each page; QMP answers once it is in. Then each node in turn hands it a
share of the directory (about 1/members of the pages get it as their home);
``add_node`` returns when they all have. A join the cluster refuses (a
different machine, a wrong secret, a busy cluster) ends that process alone:
the guest runs on. The nodes keep that slot free, but the harness gives the
next attempt the next slot (the refused process's logs stay under its index).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from testbed.errors import ConfigError, GuestError, GuestTimeout, NodeDied

if TYPE_CHECKING:
    from testbed.cluster import Cluster

# The lines a refused joiner writes before it exits: the library's reason,
# then the glue's.
_WHY_RE = re.compile(r"^.*(?:\[hk node \d+\] \w+: join:|hyperkernel node \d+:|"
                     r"hyperkernel:).*$", re.MULTILINE)


def check_joinable(cluster: Cluster) -> int:
    """The slot a new node would take, or a ConfigError saying why none."""
    spec = cluster.spec
    if not spec.uses_hyperkernel:
        raise ConfigError("nodes can join only a cluster run by the hyperkernel",
                          "start with --nodes 2 or more")
    slot = len(cluster.nodes)
    if slot >= spec.node_slots:
        raise ConfigError(f"no free node slot: the cluster has {spec.node_slots} slot(s) and "
                          f"{slot} were used",
                          "start it with --max-nodes N (more than --nodes) to keep slots for "
                          "nodes that join")
    if cluster.leaving:
        raise ConfigError(f"node(s) {sorted(cluster.leaving)} are leaving",
                          "add a node once the evacuation has finished")
    return slot


def default_budget_mib(cluster: Cluster) -> int:
    budgets = cluster.spec.budget_mib
    return cluster.spec.mem_mib if budgets is None else max(budgets)


def _refusal(text: str) -> str:
    lines = [m.group(0).strip() for m in _WHY_RE.finditer(text)]
    return " | ".join(lines[-3:]) if lines else "no reason in its log"


def add_node(cluster: Cluster, budget_mib: int | None, timeout: float) -> int:
    slot = check_joinable(cluster)
    budget = budget_mib if budget_mib is not None else default_budget_mib(cluster)
    if budget < 16:
        raise ConfigError(f"a budget of {budget}M is too small to run anything",
                          "give the new node 16M or more")
    node = cluster.new_node(slot, join=True, budget_mib=budget)
    cluster.nodes.append(node)
    node.start(cluster.pgid)
    try:
        node.connect(timeout=timeout, health_check=node.check_alive)
    except (GuestError, NodeDied) as e:
        # The slot's process is gone or hopeless; the others never took it in.
        node.departed = True
        node.kill()
        raise GuestError(f"node {slot} could not join: {_refusal(node.qemu_log_text())}",
                         f"see {node.files.log('qemu.log')}") from e
    node.resume()
    _wait_for_homes(cluster, slot, timeout)
    return slot


def _wait_for_homes(cluster: Cluster, slot: int, timeout: float) -> None:
    """Until every node has handed the new node its share of homes."""
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_health()
        stats = [s["stats"] for s in cluster.node_stats()]
        mine = stats[[n.index for n in cluster.live_nodes].index(slot)]
        others = mine["present_nodes"] & ~(1 << slot)
        if (mine["homes_given"] & others) == others and not any(s["rehoming"] for s in stats):
            return
        if time.monotonic() > deadline:
            raise GuestTimeout(f"node {slot} joined, but was not given its homes in "
                               f"{timeout:.0f}s (it has them from nodes "
                               f"{mine['homes_given']:#x} of {others:#x})",
                               f"see the QEMU logs in {cluster.run_dir}")
        time.sleep(0.1)
