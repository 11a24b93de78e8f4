"""The number of vCPUs the guest runs changes while it runs (CPU hotplug's
online/offline in the stock kernel), within a licensed count that the
hyperkernel enforces: a vCPU beyond the licence never starts, whatever the
guest asks.

Why online/offline and not ACPI hot-add: every node is a QEMU process with
the same -smp, and a vCPU must exist in each of them to move between nodes;
hot-adding would mean creating a CPU object in every process at once and
keeping ACPI state, which lives on node 0, in step. Online/offline needs
nothing from the nodes but the interrupts they already forward (the INIT and
SIPI that start a CPU, the IPIs of stop_machine).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import ClusterFactory

from testbed import workloads
from testbed.config import ClusterSpec
from testbed.errors import ConfigError
from testbed.workloads import ParamValue, parse_result

# 5 vCPUs exist (-smp 5), 4 are licensed, 2 come up at boot.
SPEC: dict[str, Any] = {"nodes": 2, "vcpus": 5, "max_vcpus": 4, "online_vcpus": 2,
                        "mem_mib": 512, "boot_timeout": 400}
LOCK: dict[str, ParamValue] = {"threads": 2, "iters": 400000}


@pytest.mark.boot
@pytest.mark.usefixtures("needs_hyperkernel")
def test_the_online_vcpu_count_follows_requests_within_the_licence(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(**SPEC)
    cluster.boot()
    assert cluster.guest_nproc == 2
    counts = cluster.vcpu_counts()
    assert counts["licensed"] == 4 and counts["present"] == 5, counts
    assert counts["online"] == 2, counts
    # A workload runs through every change (its threads float over the CPUs).
    values = workloads.validate_params("lock", LOCK, SPEC["vcpus"])
    cluster.run(f"({workloads.guest_command('lock', values, SPEC['vcpus'])} > /tmp/lock.out "
                "2>&1 &)")
    for want in (4, 3, 2):
        counts = cluster.set_online_vcpus(want)
        assert counts["online"] == want, (want, counts)
        assert cluster.run("nproc").output.strip() == str(want)
    # Above the licence: refused before the guest is touched.
    with pytest.raises(ConfigError, match="above the licensed 4"):
        cluster.set_online_vcpus(5)
    with pytest.raises(ConfigError, match="out of range"):
        cluster.set_online_vcpus(0)
    # And if the guest asks itself, the hyperkernel does not start the vCPU:
    # the guest sees a CPU that fails to come up, and runs on.
    before = cluster.nodes[0].qmp.command("query-hyperkernel")["stats"]["glue"]
    r = cluster.run("echo 1 > /sys/devices/system/cpu/cpu4/online; echo status=$?; nproc",
                    timeout=120)
    assert "status=0" not in r.output, r.output
    assert r.output.strip().endswith("2"), r.output
    unlicensed = sum(n.qmp.command("query-hyperkernel")["stats"]["glue"]["interrupts-unlicensed"]
                     for n in cluster.live_nodes)
    assert unlicensed > before["interrupts-unlicensed"], "no start-up IPI was held back"
    assert cluster.vcpu_counts()["online"] == 2
    cluster.run("while ! grep -q workload=lock /tmp/lock.out; do sleep 1; done", timeout=300)
    lock = parse_result(cluster.run("cat /tmp/lock.out").output, "lock")
    assert lock.ok, lock
    time.sleep(0.1)
    cluster.poweroff()


def test_licence_and_online_counts_are_checked_when_the_cluster_is_defined() -> None:
    with pytest.raises(ConfigError, match="--max-vcpus 5 is out of range"):
        ClusterSpec(nodes=2, vcpus=4, max_vcpus=5).validate()
    with pytest.raises(ConfigError, match="--max-vcpus 0 is out of range"):
        ClusterSpec(nodes=2, vcpus=4, max_vcpus=0).validate()
    with pytest.raises(ConfigError, match="--online-vcpus 4 is out of range"):
        ClusterSpec(nodes=2, vcpus=4, max_vcpus=3, online_vcpus=4).validate()
    with pytest.raises(ConfigError, match="needs the hyperkernel"):
        ClusterSpec(nodes=1, vcpus=4, max_vcpus=2).validate()
    assert ClusterSpec(nodes=2, vcpus=4, max_vcpus=3).validate().licensed_vcpus == 3
