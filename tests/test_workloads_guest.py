"""Every workload in the real guest: ok=1 as is, ok=0 with its injected fault."""

from __future__ import annotations

import pytest
from test_workload_binaries import QUICK

from testbed.cluster import Cluster
from testbed.errors import ConfigError
from testbed.workloads import WORKLOADS, ParamValue, WorkloadError

pytestmark = pytest.mark.boot

CLUSTER_SPEC = {"vcpus": 2, "mem_mib": 768}
# Under TCG the guest is 10-50x slower than the host; keep runs short, and
# bound each by the workload's own watchdog so a stuck run reports ok=0.
GUEST: dict[str, dict[str, ParamValue]] = {
    name: {**params, "timeout_s": 120} for name, params in QUICK.items()
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_verifies_its_result_in_the_guest(module_cluster: Cluster, name: str) -> None:
    record = module_cluster.run_workload(name, GUEST[name], guest_timeout=300)
    assert record.ok, record.raw
    assert record.params["inject"] == 0
    assert set(record.artifacts) == {"qemu", "kernel", "initramfs"}
    assert record.cluster["vcpus"] == 2


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_injected_fault_is_caught_in_the_guest(module_cluster: Cluster, name: str) -> None:
    record = module_cluster.run_workload(name, {**GUEST[name], "inject": 1},
                                         guest_timeout=300)
    assert not record.ok, f"inject=1 went unnoticed: {record.raw}"
    assert record.params["inject"] == 1


def test_threads_pinned_to_each_vcpu(module_cluster: Cluster) -> None:
    record = module_cluster.run_workload("private", {**GUEST["private"], "cpus": "0,1"})
    assert record.ok and record.params["cpus"] == "0,1"


def test_bad_workload_input_is_refused_before_running(module_cluster: Cluster) -> None:
    with pytest.raises(WorkloadError, match="valid workloads"):
        module_cluster.run_workload("nonexistent")
    with pytest.raises(WorkloadError, match="valid parameters"):
        module_cluster.run_workload("lmat", bogus=1)
    with pytest.raises(WorkloadError):
        module_cluster.run_workload("private", cpus="0,7")  # the guest has 2 vCPUs
    assert issubclass(WorkloadError, ValueError) and not issubclass(WorkloadError, ConfigError)
