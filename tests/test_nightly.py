"""The nightly tier (make nightly): full-size runs that are too long for CI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from testbed.cluster import Cluster
from testbed.workloads import WORKLOADS

pytestmark = [pytest.mark.nightly, pytest.mark.boot]
CLUSTER_SPEC = {"vcpus": 2, "mem_mib": 1024}
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_workload_at_default_size(module_cluster: Cluster, name: str) -> None:
    record = module_cluster.run_workload(name, guest_timeout=900)
    assert record.ok, record.raw


def test_hyperkernel_torture_long() -> None:
    r = subprocess.run(["make", "-s", "-C", str(REPO / "hyperkernel"), "torture-long"],
                       capture_output=True, text=True, timeout=3600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # The summary line: work was done, and the checks found nothing.
    summary = re.search(r"^hk-torture: .*\bops=(\d+) .*\bviolations=(\d+) ", r.stdout, re.M)
    assert summary, r.stdout[-3000:]
    assert int(summary[1]) > 0 and int(summary[2]) == 0, summary[0]
