"""Cluster configuration and its validation, done before anything starts."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from testbed.errors import ConfigError

MIN_MEM_MIB = 128  # the cloud kernel plus our initramfs need about this much
MAX_MEM_MIB = 16 * 1024
MAX_VCPUS = 64
MAX_NODES = 16

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNIT = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size_mib(text: str) -> int:
    """``512M``, ``1G``, ``1.5G``, ``512`` (MiB) -> MiB; raises ConfigError."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"cannot read size {text!r}", "write it like 512M or 2G")
    value = float(m.group(1)) * _UNIT[m.group(2).upper()]
    mib = int(value) >> 20
    if value % (1 << 20):
        raise ConfigError(f"size {text!r} is not a whole number of MiB", "use e.g. 512M or 1G")
    return mib


POLICIES = ("page", "vcpu", "cost", "learned")


def parse_cpu_set(text: str) -> list[int]:
    """``0-2,5`` -> [0, 1, 2, 5]; empty text is the empty set."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"cannot read vCPU list {text!r}", "write it like 0-1,3") from None
        if a > b or a < 0:
            raise ConfigError(f"bad vCPU range {part!r}", "write ranges low-high")
        cpus.extend(range(a, b + 1))
    return cpus


def format_cpu_set(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def parse_placement(text: str) -> tuple[tuple[int, ...], ...]:
    """``0-1:2:3`` -> vCPUs per node: node 0 runs 0 and 1, node 1 runs 2, node 2 runs 3."""
    return tuple(tuple(parse_cpu_set(part)) for part in text.split(":"))


def default_placement(nodes: int, vcpus: int) -> tuple[tuple[int, ...], ...]:
    """vCPUs in contiguous blocks, as evenly as possible, vCPU 0 on node 0."""
    return tuple(tuple(c for c in range(vcpus) if c * nodes // vcpus == n) for n in range(nodes))


@dataclass(frozen=True)
class NodeOverride:
    """Deliberate per-node deviations, for tests of what the cluster refuses."""

    mem_mib: int | None = None
    secret: str | None = None
    peer_addresses: tuple[str, ...] | None = None
    start: bool = True  # False: leave this node out (an unreachable peer)


@dataclass(frozen=True)
class ClusterSpec:
    """One guest spanning ``nodes`` QEMU processes."""

    nodes: int = 1
    vcpus: int = 1
    mem_mib: int = 512
    append: str = ""  # extra kernel command line
    boot_timeout: float = 120.0
    placement: tuple[tuple[int, ...], ...] | None = None  # vCPUs of each node
    budget_mib: tuple[int, ...] | None = None  # per node; default: all of guest RAM
    policy: str = "page"
    # "node": each node's threads on host CPUs of its own (testbed/affinity.py); "none": anywhere
    cpu_affinity: str = "node"
    # Run a single node through the hyperkernel too (multi-node always does).
    hyperkernel: bool | None = None
    overrides: dict[int, NodeOverride] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # Per-core licensing: vCPUs from this index on never run (the hyperkernel
    # refuses to start them); None: all of them.
    max_vcpus: int | None = None
    # vCPUs the guest brings up at boot (kernel maxcpus=); the others can be
    # brought online later (Cluster.set_online_vcpus). None: every licensed one.
    online_vcpus: int | None = None
    # Node slots: nodes `nodes`..max_nodes-1 may join while the guest runs
    # (Cluster.add_node). None: no slot beyond the starting nodes.
    max_nodes: int | None = None
    # Tell the guest its topology (ACPI SRAT): NUMA node k is node k's vCPUs
    # and an equal share of RAM whose pages are homed on node k, so the
    # guest's own allocator puts a thread's fresh pages where it runs.
    guest_numa: bool = True
    # Each node writes every stall to <run dir>/faults.nodeN (HK_FAULT_TRACE),
    # for the simulation to replay under any policy (hk-sim --trace).
    fault_trace: bool = False

    @property
    def numa_layout(self) -> tuple[tuple[int, ...], ...] | None:
        """The vCPUs of each guest NUMA node (one per node), or None for a flat guest."""
        if not (self.guest_numa and self.uses_hyperkernel and self.nodes > 1):
            return None
        return self.vcpu_placement

    @property
    def node_slots(self) -> int:
        return self.max_nodes if self.max_nodes is not None else self.nodes

    @property
    def licensed_vcpus(self) -> int:
        return self.max_vcpus if self.max_vcpus is not None else self.vcpus

    @property
    def uses_hyperkernel(self) -> bool:
        return self.nodes > 1 if self.hyperkernel is None else self.hyperkernel

    @property
    def vcpu_placement(self) -> tuple[tuple[int, ...], ...]:
        return self.placement or default_placement(self.nodes, self.vcpus)

    @property
    def budgets_mib(self) -> tuple[int, ...]:
        if self.budget_mib is None:
            return (self.mem_mib,) * self.nodes
        if len(self.budget_mib) == 1:
            return self.budget_mib * self.nodes
        return self.budget_mib

    def node_of_vcpu(self, cpu: int) -> int:
        for node, cpus in enumerate(self.vcpu_placement):
            if cpu in cpus:
                return node
        raise ConfigError(f"vCPU {cpu} is on no node")

    def validate(self) -> ClusterSpec:
        if not 1 <= self.nodes <= MAX_NODES:
            raise ConfigError(f"--nodes {self.nodes} is out of range",
                              f"use 1 to {MAX_NODES}")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError(f"--vcpus {self.vcpus} is out of range", f"use 1 to {MAX_VCPUS}")
        if not MIN_MEM_MIB <= self.mem_mib <= MAX_MEM_MIB:
            raise ConfigError(f"--mem {self.mem_mib}M is out of range",
                              f"use {MIN_MEM_MIB}M to {MAX_MEM_MIB // 1024}G")
        if not (math.isfinite(self.boot_timeout) and self.boot_timeout > 0):
            raise ConfigError(f"boot timeout {self.boot_timeout} is not a positive number of "
                              "seconds", "e.g. --boot-timeout 300")
        if self.cpu_affinity not in ("node", "none"):
            raise ConfigError(f"CPU affinity {self.cpu_affinity!r} is not known",
                              "use 'node' (each node on host CPUs of its own) or 'none'")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}",
                              "valid policies: " + ", ".join(POLICIES))
        if self.fault_trace and not self.uses_hyperkernel:
            raise ConfigError("--fault-trace records the hyperkernel's stalls, and a single node "
                              "runs without it", "use --nodes 2 or more, or add --hyperkernel")
        self._validate_placement()
        self._validate_budget()
        self._validate_vcpu_counts()
        self._validate_slots()
        return self

    def _validate_slots(self) -> None:
        if self.max_nodes is None:
            return
        if not self.nodes <= self.max_nodes <= MAX_NODES:
            raise ConfigError(f"--max-nodes {self.max_nodes} is out of range",
                              f"use {self.nodes} (--nodes) to {MAX_NODES}")
        if self.max_nodes > self.nodes and not self.uses_hyperkernel:
            raise ConfigError("nodes can join only a cluster run by the hyperkernel",
                              "start with --nodes 2 or more")

    def _validate_vcpu_counts(self) -> None:
        if self.max_vcpus is not None:
            if not self.uses_hyperkernel:
                raise ConfigError("a licensed vCPU count needs the hyperkernel, which enforces it",
                                  "run on 2 nodes or more")
            if not 1 <= self.max_vcpus <= self.vcpus:
                raise ConfigError(f"--max-vcpus {self.max_vcpus} is out of range",
                                  f"license 1 to {self.vcpus} of the guest's {self.vcpus} vCPUs")
        if self.online_vcpus is not None and not 1 <= self.online_vcpus <= self.licensed_vcpus:
            raise ConfigError(f"--online-vcpus {self.online_vcpus} is out of range",
                              f"use 1 to {self.licensed_vcpus} (the licensed vCPUs)")

    def _validate_placement(self) -> None:
        placement = self.vcpu_placement
        if len(placement) != self.nodes:
            raise ConfigError(f"--placement names {len(placement)} node(s) but --nodes is "
                              f"{self.nodes}", "give one vCPU list per node, separated by ':'")
        seen: dict[int, int] = {}
        for node, cpus in enumerate(placement):
            for cpu in cpus:
                if cpu >= self.vcpus:
                    raise ConfigError(f"--placement puts vCPU {cpu} on node {node}, but the "
                                      f"guest has only {self.vcpus} vCPU(s)",
                                      f"use vCPUs 0-{self.vcpus - 1}")
                if cpu in seen:
                    raise ConfigError(f"--placement puts vCPU {cpu} on two nodes "
                                      f"({seen[cpu]} and {node})",
                                      "every vCPU starts on exactly one node")
                seen[cpu] = node
        missing = [c for c in range(self.vcpus) if c not in seen]
        if missing:
            raise ConfigError(f"--placement puts vCPU(s) {format_cpu_set(missing)} on no node",
                              "every vCPU starts on exactly one node")
        if seen.get(0) != 0:
            raise ConfigError("vCPU 0 must start on node 0",
                              "the boot processor starts where the devices are")

    def _validate_budget(self) -> None:
        budgets = self.budgets_mib
        if len(budgets) != self.nodes:
            raise ConfigError(f"--budget gives {len(budgets)} value(s) for {self.nodes} node(s)",
                              "give one budget for all nodes, or one per node")
        if any(b < 16 for b in budgets):
            raise ConfigError("a node budget below 16M is too small to run anything",
                              "raise --budget")
        if self.nodes > 1 and sum(budgets) < self.mem_mib:
            raise ConfigError(f"the node budgets sum to {sum(budgets)}M, less than the "
                              f"{self.mem_mib}M of guest RAM",
                              "raise --budget or lower --mem: all nodes together must hold "
                              "every page")
