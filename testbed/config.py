"""Cluster configuration and its validation, done before anything starts."""

from __future__ import annotations

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


@dataclass(frozen=True)
class ClusterSpec:
    """One guest spanning ``nodes`` QEMU processes."""

    nodes: int = 1
    vcpus: int = 1
    mem_mib: int = 512
    append: str = ""  # extra kernel command line
    boot_timeout: float = 120.0
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> ClusterSpec:
        if not 1 <= self.nodes <= MAX_NODES:
            raise ConfigError(f"--nodes {self.nodes} is out of range",
                              f"use 1 to {MAX_NODES}")
        if self.nodes > 1:
            raise ConfigError(f"--nodes {self.nodes}: only one node is supported until the "
                              "hyperkernel is embedded in QEMU", "use --nodes 1")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ConfigError(f"--vcpus {self.vcpus} is out of range", f"use 1 to {MAX_VCPUS}")
        if self.vcpus < self.nodes:
            raise ConfigError(f"--vcpus {self.vcpus} is fewer than --nodes {self.nodes}",
                              "every node needs at least one vCPU")
        if not MIN_MEM_MIB <= self.mem_mib <= MAX_MEM_MIB:
            raise ConfigError(f"--mem {self.mem_mib}M is out of range",
                              f"use {MIN_MEM_MIB}M to {MAX_MEM_MIB // 1024}G")
        if self.boot_timeout <= 0:
            raise ConfigError("boot timeout must be positive")
        return self
