"""One node: boot the stock Debian cloud kernel, drive its shell, fail fast."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import pytest
from conftest import ClusterFactory

from testbed.cluster import Cluster
from testbed.errors import GuestPanic, NodeDied
from testbed.images import build_initramfs
from testbed.progress import Progress
from testbed.symbolize import kernel_objects, kernel_symbols

pytestmark = pytest.mark.boot


@pytest.mark.parametrize("vcpus", [1, 2])
def test_boots_the_cloud_kernel_with_the_requested_vcpus(cluster_factory: ClusterFactory,
                                                         vcpus: int) -> None:
    cluster = cluster_factory(vcpus=vcpus)
    cluster.boot()
    assert cluster.guest_nproc == vcpus
    assert cluster.run("nproc").output == f"{vcpus}\n"
    release = cluster.artifacts.images.kernel.metadata()["release"]
    uname = cluster.run("uname -r").output.strip()
    assert uname == release and uname.endswith("-cloud-amd64")


def test_guest_ram_matches_the_request(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(vcpus=1, mem_mib=384)
    cluster.boot()
    total_kib = int(cluster.run("awk '/MemTotal/ {print $2}' /proc/meminfo").output)
    # The kernel keeps some memory for itself; what it reports is a bit below 384 MiB.
    assert 300 * 1024 < total_kib <= 384 * 1024


def test_output_and_exit_status_come_back_intact(booted_cluster: Cluster) -> None:
    tricky = "tab\there\n\nquotes ' \" and \\ backslash $HOME $(x)\n  trailing spaces  \nno-newline"
    r = booted_cluster.run("printf '%s' " + "'" + tricky.replace("'", "'\\''") + "'")
    assert (r.output, r.status) == (tricky, 0)
    assert booted_cluster.run("exit 7").status == 7
    assert booted_cluster.run("false").status == 1
    r = booted_cluster.run("echo to-stderr >&2; echo to-stdout; exit 255")
    assert r.status == 255 and "to-stderr\n" in r.output and "to-stdout\n" in r.output
    big = booted_cluster.run("seq 1 20000")
    assert big.output == "".join(f"{i}\n" for i in range(1, 20001))


def test_commands_see_a_multiline_script(booted_cluster: Cluster) -> None:
    r = booted_cluster.run("x=0\nfor i in 1 2 3 4; do\n  x=$((x + i))\ndone\necho sum=$x")
    assert r.output == "sum=10\n"


def test_an_address_in_the_kernel_image_is_named_by_its_symbol(booted_cluster: Cluster) -> None:
    """testbed.symbolize: the first byte of the kernel's data is a data symbol at +0,
    a byte 0x40 further is the same symbol at +0x40 or a later one, and memory
    below the image is not named."""
    iomem = booted_cluster.run("grep ' : Kernel data$' /proc/iomem").output.split("-")[0]
    data = int(iomem.strip(), 16)
    names = kernel_symbols(booted_cluster, [data, data + 0x40, 0x1000])
    assert 0x1000 not in names, names
    assert re.fullmatch(r"data: \S+\+0x0", names[data]), names
    sym = names[data].split()[1].split("+")[0]
    second = names[data + 0x40]
    assert second.startswith("data: "), names
    if second.startswith(f"data: {sym}+"):  # still inside the first object
        assert second == f"data: {sym}+0x40", names


def _monitor(cluster: Cluster, line: str) -> str:
    args: dict[str, Any] = {"command-line": line}
    return str(cluster.nodes[0].qmp.command("human-monitor-command", **args))


def _gpa_of(cluster: Cluster, virt: int) -> int:
    """The monitor's own translation (vCPU 0's page walk), not the symbolizer's."""
    out = _monitor(cluster, f"gva2gpa {virt:#x}")
    m = re.search(r"gpa: (0x[0-9a-f]+)", out)
    assert m, out
    return int(m.group(1), 16)


def _word_at(cluster: Cluster, virt: int) -> int:
    return int(_monitor(cluster, f"x /1gx {virt:#x}").split(":")[1].split()[0], 16)


def _symbol(cluster: Cluster, name: str) -> int:
    return int(cluster.run(f"grep ' {name}$' /proc/kallsyms").output.split()[0], 16)


def test_a_per_cpu_variable_and_a_struct_page_are_named(booted_cluster: Cluster) -> None:
    """testbed.symbolize: CPU 1's run queue and the struct page of the page
    that holds jiffies_64, each found through the vCPU's virtual addresses
    (its per-CPU offset and vmemmap_base read there, translated by the
    monitor), are named as such; memory below the kernel is not named."""
    cluster = booted_cluster
    offset = _word_at(cluster, _symbol(cluster, "__per_cpu_offset") + 8)  # CPU 1's
    rq = _gpa_of(cluster, _symbol(cluster, "runqueues") + offset)
    page = _gpa_of(cluster, _symbol(cluster, "jiffies_64")) & ~0xFFF
    vmemmap = _word_at(cluster, _symbol(cluster, "vmemmap_base"))
    struct_page = _gpa_of(cluster, vmemmap + (page >> 12) * 64 + 8)
    names = kernel_objects(cluster, [rq + 0x40, struct_page, 0x1000])
    assert names.get(rq + 0x40) == "percpu cpu1: runqueues+0x40", names
    assert names.get(struct_page) == f"struct page of gpa {page:#x}", names
    assert 0x1000 not in names, names


def test_a_panicking_guest_fails_fast_with_the_logs(cluster_factory: ClusterFactory) -> None:
    broken = build_initramfs(Progress(quiet=True),
                             init_override=b"#!/bin/sh\necho broken init on purpose\nexit 1\n")
    cluster = cluster_factory(vcpus=1, initramfs=broken.path / "initramfs.cpio.gz",
                              boot_timeout=300)
    # GuestPanic, not GuestTimeout: detected from the console and the exit,
    # not by running into the 300 s boot timeout.
    with pytest.raises(GuestPanic, match="Kernel panic") as err:
        cluster.boot()
    assert "console.log" in str(err.value)
    assert "node0.console.log" in cluster.failure_report()
    console_log = cluster.nodes[0].files.log("console.log").read_text(errors="replace")
    assert "broken init on purpose" in console_log


def test_poweroff_ends_every_node(booted_cluster: Cluster) -> None:
    booted_cluster.poweroff(timeout=60)
    # poweroff() returns once no node runs; each must have ended cleanly.
    assert [n.returncode() for n in booted_cluster.nodes] == [0], [
        n.death_summary() for n in booted_cluster.nodes]


def test_a_killed_node_is_reported(booted_cluster: Cluster) -> None:
    os.kill(booted_cluster.nodes[0].pid, signal.SIGKILL)
    with pytest.raises(NodeDied, match=r"node0 \(pid \d+\) killed by SIGKILL") as err:
        booted_cluster.run("sleep 30", timeout=120)
    assert err.value.node == 0
