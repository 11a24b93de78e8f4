"""Every workload in the real guest: ok=1 as is, ok=0 with its injected fault."""

from __future__ import annotations

import re

import pytest
from test_workload_binaries import (
    CLEAN_FIGURES,
    INJECTED_REASON,
    QUICK,
    caught_by_its_check,
    check_figures,
)

from testbed.cluster import Cluster
from testbed.errors import ConfigError
from testbed.workloads import WORKLOADS, ParamValue, WorkloadError, parse_result

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
    # What the program in the guest parsed and computed, from its own line.
    result = parse_result(record.raw, name)
    assert {k: result.fields[k] for k in GUEST[name]} == GUEST[name]
    assert result.fields["inject"] == 0
    assert check_figures(result) == CLEAN_FIGURES[name], record.raw
    assert isinstance(result.fields["ops"], int) and result.fields["ops"] > 0


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_injected_fault_is_caught_in_the_guest(module_cluster: Cluster, name: str) -> None:
    record = module_cluster.run_workload(name, {**GUEST[name], "inject": 1},
                                         guest_timeout=300)
    assert not record.ok, f"inject=1 went unnoticed: {record.raw}"
    result = parse_result(record.raw, name)
    assert result.fields["inject"] == 1
    assert caught_by_its_check(result), f"expected reason={INJECTED_REASON[name]}: {record.raw}"
    assert check_figures(result) != CLEAN_FIGURES[name], record.raw


# Starts the workload, then lists the CPUs each of its threads may run on
# until two threads are pinned to one vCPU each (or the run ends), then waits.
_PINNED_THREADS = r"""
/opt/workloads/bin/private threads=2 size_kb=4096 passes=256 cpus=0,1 timeout_s=120 > /tmp/pin.out &
pid=$!
while kill -0 $pid 2>/dev/null; do
  cpus=$(for t in /proc/$pid/task/*; do
           [ "${t##*/}" != "$pid" ] && awk '/^Cpus_allowed_list/ {print $2}' $t/status
         done 2>/dev/null | sort | tr '\n' ' ')
  echo "threads may run on: $cpus"
  case " $cpus" in *" 0 "*" 1 "*) break ;; esac
  usleep 20000
done
wait $pid
cat /tmp/pin.out
"""


def test_threads_pinned_to_each_vcpu(module_cluster: Cluster) -> None:
    # The workload's main thread and watchdog may run anywhere; its two
    # workers must each be held to one vCPU, as the guest kernel sees it.
    out = module_cluster.run(_PINNED_THREADS, timeout=300).output
    seen = [line.split(":", 1)[1].split() for line in out.splitlines()
            if line.startswith("threads may run on:")]
    assert seen and sorted(c for c in seen[-1] if c in ("0", "1")) == ["0", "1"], out
    assert parse_result(out, "private").ok, out


def test_bad_workload_input_is_refused_before_running(module_cluster: Cluster) -> None:
    control = module_cluster.nodes[0].control
    before = control.size()
    with pytest.raises(WorkloadError, match="valid workloads"):
        module_cluster.run_workload("nonexistent")
    with pytest.raises(WorkloadError, match="valid parameters"):
        module_cluster.run_workload("lmat", bogus=1)
    with pytest.raises(WorkloadError, match=r"names a cpu beyond the guest's 2 vCPUs"):
        module_cluster.run_workload("private", cpus="0,7")
    # The guest shell marks the start of every command it runs: only this one.
    module_cluster.run("true")
    started = re.findall(rb"__SDS_B_\d+__", control.text(before))
    assert len(started) == 1, f"a refused run reached the guest: {started}"
    assert issubclass(WorkloadError, ValueError) and not issubclass(WorkloadError, ConfigError)
