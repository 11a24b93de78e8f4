"""testbed bench stall (issue 12): its sizes are refused before anything boots, and
its firstread workload verifies on 2 nodes and catches an injected fault there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ClusterFactory

from testbed.cluster import Artifacts, Cluster
from testbed.workloads import ParamValue

TESTBED = [sys.executable, "-m", "testbed.cli"]


@pytest.mark.parametrize("args,words", [
    (["--rounds", "99"], "--rounds 99 is too few samples for a p99; use 100 to 1000000"),
    (["--pages", "0"], "--pages 0 is too few samples for a p99"),
    (["--pages", "2000000"], "--pages 2000000 is out of range; use 100 to 1000000"),
    (["--stream-mb", "0"], "--stream-mb 0 is out of range; use 1 or more"),
    (["--stream-mb", "300"], "need 304 MiB, more than half of the guest's 512 MiB"),
    (["--mem", "1G", "--stream-mb", "600"], "lower them or raise --mem"),
    (["--rounds", "many"], "argument --rounds: 'many' is not a whole number"),
    (["--policy", "home"], "argument --policy: invalid choice: 'home'"),
])
def test_bad_sizes_are_refused_before_anything_runs(tmp_path: Path, args: list[str],
                                                     words: str) -> None:
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    r = subprocess.run([*TESTBED, "bench", "stall", "--run-dir", str(run_dir), *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 125, r.stderr  # testbed.exitcodes.USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert r.stdout == ""
    assert not run_dir.exists()  # no run directory, so no build and no boot either
    assert time.monotonic() - t0 < 30


PAGES = 200


@pytest.mark.boot
def test_firstread_verifies_across_two_nodes_and_catches_a_fault(
        artifacts: Artifacts, cluster_factory: ClusterFactory) -> None:
    if not artifacts.supports_hyperkernel():
        pytest.skip("this QEMU build lacks the hyperkernel (-object hyperkernel)")
    cluster: Cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    params: dict[str, ParamValue] = {"pages": PAGES, "stream_mb": 4, "cpus": "0,1", "timeout_s": 300}

    clean = cluster.run_workload("firstread", params, guest_timeout=360)
    assert clean.ok, clean.raw
    f = clean.figures
    assert f["read_mismatches"] == 0 and f["stream_mismatches"] == 0, clean.raw
    assert (f["writer_cpu"], f["reader_cpu"]) == (0, 1), clean.raw  # pinned as asked
    assert f["ops"] == PAGES and f["first_read_ns_p50"] > 0, clean.raw
    # The reader's node (vCPU 1 starts on node 1) had to fetch what the writer wrote:
    # at least the timed pages and the region's 1024 pages.
    by_node = {n["node"]: n["counters"] for n in clean.hk_stats["nodes"]}
    assert by_node[1]["pages_received"] >= PAGES + 1024, by_node

    injected = cluster.run_workload("firstread", {**params, "inject": 1}, guest_timeout=360)
    assert not injected.ok, f"inject=1 went unnoticed: {injected.raw}"
    assert injected.reason == "stale_read", injected.raw
    # Both checks saw the corrupted value: the first reads and the streamed region.
    assert injected.figures["read_mismatches"] > 0, injected.raw
    assert injected.figures["stream_mismatches"] > 0, injected.raw


def test_the_floor_runs_on_the_cpus_of_node_0_and_node_1() -> None:
    """The raw round trip crosses CPUs as the nodes' messages do: unpinned, both
    ends may share one CPU and the floor drops tenfold (4 against 60 us here)."""
    from testbed.affinity import host_cpus, node_cpus
    from testbed.floors import floor_cpus, raw_rtt_us

    cpus = host_cpus()
    if len(cpus) < 2:
        pytest.skip("one host CPU: the nodes share it")
    want = (node_cpus(0, 2, cpus)[0], node_cpus(1, 2, cpus)[0])
    assert floor_cpus(2, "node") == want
    assert floor_cpus(2, "none") is None
    floor = raw_rtt_us(samples=50, cpus=want)
    assert floor["cpus"] == list(want) and floor["p50_us"] > 0 and floor["samples"] == 50


def test_the_floor_refuses_a_cpu_it_cannot_have() -> None:
    from testbed.errors import TestbedError
    from testbed.floors import raw_rtt_us, rawrtt_binary

    r = subprocess.run([str(rawrtt_binary()), "50", "0", "-1"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "cpus must be 0.." in r.stderr
    with pytest.raises(TestbedError, match="the raw round trip failed: rawrtt: sched_setaffinity"):
        raw_rtt_us(samples=50, cpus=(0, 1023))  # not in this process's CPU set


def test_the_stream_floor_checks_every_page_it_installs() -> None:
    """rawstream installs what it receives into fresh userfaultfd memory and checks
    every word; a sender that flips one word must make it fail."""
    import os

    from testbed.floors import raw_stream, tool_binary

    floor = raw_stream(4)
    assert floor["mb"] == 4 and floor["cpus"] == [-1, -1]
    assert floor["mb_s"] > 0 and floor["socket_mb_s"] > 0 and floor["install_us_per_page"] > 0
    # the fastest of three passes, each kept
    assert len(floor["passes_mb_s"]) == 3 and floor["mb_s"] == max(floor["passes_mb_s"])
    r = subprocess.run([str(tool_binary("rawstream")), "4"], capture_output=True, text=True,
                       timeout=60, check=False, env={**os.environ, "RAWSTREAM_CORRUPT": "1"})
    assert r.returncode == 1 and "page 512 word 7 arrived wrong" in r.stderr, r.stderr
    bad = subprocess.run([str(tool_binary("rawstream")), "0"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "usage: rawstream" in bad.stderr
