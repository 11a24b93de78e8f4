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

# A node whose host CPUs are its own (no other node runs there) lets its
# event thread stay in the normal class until one of its vCPUs spins in guest
# code (the library's HK_EVENT_SCHED=auto; SCHED_FIFO otherwise, the QEMU
# glue's default). On 2 nodes with 2 vCPUs, against SCHED_FIFO throughout, in
# one session: lmat 2-5x, lock 1.3x, redis 1.2x, pingpong unchanged. Where
# nodes share a CPU, a vCPU of one that spins would keep the other's event
# thread waiting for the scheduler: a 4-node boot on 2 host CPUs stalled for
# 20 s bringing up its last CPU.
OWN_CPUS_ENV = {"HK_EVENT_SCHED": "auto"}


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
