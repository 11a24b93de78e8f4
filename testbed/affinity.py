"""Host CPUs for each node, the way separate machines would have their own.

Every node of the testbed shares one host. Left to the scheduler, a node's
threads run on any host CPU, so gathering vCPUs on one node looks free and a
node's event thread competes with every vCPU thread on the host. Pinning
each node to a share of the host's CPUs (``taskset``) makes a node's CPUs its
own: its vCPUs and its event thread compete only with each other, as on a
real machine.
"""

from __future__ import annotations

import os
import shutil

from testbed.errors import ConfigError

AFFINITIES = ("node", "none")


def host_cpus() -> list[int]:
    """The CPUs this process may run on (a container or cgroup may allow fewer)."""
    return sorted(os.sched_getaffinity(0))


def node_cpus(node: int, nodes: int, cpus: list[int]) -> list[int]:
    """Node ``node``'s share: a contiguous slice when there are enough CPUs,
    else CPUs shared round-robin (nodes k and k + len(cpus) share one)."""
    if not cpus:
        raise ConfigError("no host CPU is available to this process", "check its cgroup")
    if nodes <= len(cpus):
        lo, hi = node * len(cpus) // nodes, (node + 1) * len(cpus) // nodes
        return cpus[lo:hi]
    return [cpus[node % len(cpus)]]


def pinned_argv(argv: list[str], cpus: list[int]) -> list[str]:
    taskset = shutil.which("taskset")
    if taskset is None:
        raise ConfigError("taskset is missing, so nodes cannot have CPUs of their own",
                          "install util-linux (make setup), or use --cpu-affinity none")
    return [taskset, "--cpu-list", ",".join(map(str, cpus)), *argv]
