"""A node dies while the guest runs: every survivor names it and exits with status 3,
also when one of its vCPUs touches a page that died with it."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from conftest import ClusterFactory

pytestmark = [pytest.mark.boot, pytest.mark.usefixtures("needs_hyperkernel")]

# Status of a node that stopped because a peer died (hw/i386/hyperkernel/peer-loss.c).
LOST_PEER_EXIT = 3


def _kill_a_node_under_a_sweep(cluster_factory: ClusterFactory) -> bool:
    """Kill node 2 of 3 while every vCPU sweeps memory: both survivors exit 3
    and name the loss. True if a vCPU touched a lost page before the VM
    stopped."""
    cluster = cluster_factory(nodes=3, vcpus=3, mem_mib=512, boot_timeout=400)
    cluster.boot()
    # Every vCPU rewrites 300 MiB over and over: a third of those pages have
    # their directory on node 2, so the survivors' vCPUs fault on pages lost
    # with it before the VM stop reaches them (SIGBUS from UFFDIO_POISON).
    cluster.run("(/opt/workloads/bin/sweep threads=3 size_mb=300 passes=100000"
                " > /tmp/sweep.out 2>&1) &")
    time.sleep(8)
    survivors = cluster.nodes[:2]
    os.kill(cluster.nodes[2].pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(n.alive() for n in survivors) and time.monotonic() < deadline:
        time.sleep(0.2)
    for node in survivors:
        assert not node.alive(), f"node{node.index} kept running after node 2 died"
        log = node.qemu_log_text()
        assert node.returncode() == LOST_PEER_EXIT, (
            f"node{node.index} ended with {node.death_summary()}, not exit "
            f"{LOST_PEER_EXIT}:\n{log[-2000:]}")
        assert re.search(rf"hyperkernel node {node.index}: node 2 lost; \d+ guest pages lost",
                         log), log[-2000:]
    return any(re.search(r"hyperkernel node \d: a guest page lost with node 2 was touched",
                         n.qemu_log_text()) for n in survivors)


def test_survivors_of_a_killed_node_exit_3_even_when_a_vcpu_touches_a_lost_page(
        cluster_factory: ClusterFactory) -> None:
    # The case this test is about must happen: a vCPU hits a lost page
    # (SIGBUS). Whether one does before the VM stops is a race; one
    # fresh-clone CI run lost it once (at c98b60d), after it had passed in
    # every run before. So up to 3 clusters, each of which must end right.
    for _ in range(3):
        if _kill_a_node_under_a_sweep(cluster_factory):
            return
    pytest.fail("no survivor touched a lost page in 3 tries: the sweep never reached one "
                "before the VM stopped")


def test_a_node_that_dies_while_it_evacuates_stops_the_guest_cleanly(
        cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Death in the middle of an evacuation is a loss like any other: every
    survivor names the node and the pages lost with it, and exits 3."""
    # The kill must land while pages still leave. With corked link writes
    # (HK_LINK_CORK, the default) 186 MB left in 0.6 s and the pages phase
    # once ended before the kill did (CI on 2c5d6c7: the survivors rightly
    # kept running, as after a clean leave): a write per frame keeps it slow
    # enough. (The nodes inherit the harness's environment.)
    monkeypatch.setenv("HK_LINK_CORK", "0")
    cluster = cluster_factory(nodes=3, vcpus=3, mem_mib=512, boot_timeout=400)
    cluster.boot()
    # enough on node 2 that its pages take a while to leave
    cluster.run("taskset -c 2 sh -c 'dd if=/dev/urandom of=/tmp/x bs=1M count=160 "
                "2>/dev/null'", timeout=300)
    leaver = cluster.nodes[2]
    leaver.qmp.drain_events()
    leaver.qmp.command("hyperkernel-evacuate")
    leaver.qmp.wait_event("HYPERKERNEL_EVACUATION", timeout=30,
                          match=lambda d: d.get("phase") == "pages")
    os.kill(leaver.pid, signal.SIGKILL)
    survivors = cluster.nodes[:2]
    deadline = time.monotonic() + 30
    while any(n.alive() for n in survivors) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leaver.returncode() == -signal.SIGKILL, "node 2 finished before it was killed"
    lost = 0
    for node in survivors:
        log = node.qemu_log_text()
        assert not node.alive(), f"node{node.index} kept running after node 2 died"
        assert node.returncode() == LOST_PEER_EXIT, (
            f"node{node.index} ended with {node.death_summary()}:\n{log[-2000:]}")
        # Named by every survivor, also one whose link got node 2's BYE
        # (killed in its hand-over, with its last frames to the other still
        # queued): that one lost no page itself, the other did.
        said = re.search(rf"hyperkernel node {node.index}: node 2 lost; (\d+) guest pages lost",
                         log)
        assert said, log[-2000:]
        lost += int(said.group(1))
    assert lost > 0, "node 2 died with pages on it, yet no survivor lost one"
