"""The CLI refuses bad input with one clear line, before building or booting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.record import RunRecord
from testbed.store import open_store

TESTBED = [sys.executable, "-m", "testbed.cli"]


def _run(*args: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, check=False)


@pytest.mark.parametrize("args,words", [
    (["run", "--frobnicate", "--", "true"], "unrecognized arguments: --frobnicate"),
    (["run", "--vcpus", "0", "--", "true"], "--vcpus 0 is out of range"),
    (["run", "--vcpus", "two", "--", "true"], "'two' is not a whole number"),
    (["run", "--mem", "1K", "--", "true"], "is not a whole number of MiB"),
    (["run", "--mem", "64M", "--", "true"], "--mem 64M is out of range"),
    (["run"], "no command given"),
    (["launch"], "invalid choice: 'launch'"),
    (["run", "--nodes", "2", "--vcpus", "2", "--placement", "0-1:1", "--", "true"],
     "vCPU 1 on two nodes"),
    (["run", "--nodes", "2", "--vcpus", "2", "--placement", "0:", "--", "true"], "on no node"),
    (["run", "--nodes", "2", "--mem", "1G", "--budget", "256M", "--", "true"],
     "less than the 1024M of guest RAM"),
    (["run", "--policy", "magic", "--", "true"], "invalid choice: 'magic'"),
    (["bench", "policies", "--policies", "page,learnt"], "unknown policy learnt"),
    (["bench", "policies", "--nodes", "1"], "--nodes 1 compares nothing"),
    (["bench", "policies", "--workloads", "pingpong,nosuch"], "unknown workload 'nosuch'"),
    (["bench", "policies", "--repeat", "0"], "0 is out of range; use 1 or more"),
    (["run", "--nodes", "2", "--vcpus", "4", "--max-vcpus", "5", "--", "true"],
     "--max-vcpus 5 is out of range"),
    (["run", "--vcpus", "4", "--max-vcpus", "2", "--", "true"], "needs the hyperkernel"),
    (["run", "--nodes", "2", "--vcpus", "4", "--max-vcpus", "2", "--online-vcpus", "3", "--",
      "true"], "--online-vcpus 3 is out of range"),
    (["run", "--nodes", "3", "--max-nodes", "2", "--", "true"], "--max-nodes 2 is out of range"),
    (["run", "--nodes", "3", "--max-nodes", "65", "--", "true"], "--max-nodes 65 is out of range"),
    (["run", "--max-nodes", "2", "--", "true"], "join only a cluster run by the hyperkernel"),
    (["workload", "--fault-trace", "pingpong"], "--fault-trace records the hyperkernel's stalls"),
    (["bench", "evacuate", "--nodes", "2"], "bench evacuate needs 3 nodes or more"),
    (["bench", "knob", "--knob", "HK_READAHEAD"], "HK_READAHEAD cannot be changed while the guest runs"),
    (["bench", "knob", "--values", "300"], "--values '300' compares nothing"),
    (["bench", "knob", "--values", "0,3ms"], "--values '0,3ms' is not a list of integers"),
    (["bench", "knob", "--values", "0,100001"], "HK_PAGE_HOLD_US=100001 is out of range"),
    (["bench", "knob", "--nodes", "1"], "--nodes 1: a knob of the protocol needs several nodes"),
    (["bench", "knob", "--workloads", "nosuch"], "unknown workload 'nosuch'"),
    (["bench", "evacuate", "--size", "900M", "--mem", "1G"], "does not fit a 1024 MiB guest"),
])
def test_bad_arguments_stop_with_one_line(args: list[str], words: str) -> None:
    r = _run(*args)
    assert r.returncode == 125  # testbed.exitcodes.USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert words in lines[0]
    assert r.stdout == ""


def test_missing_qemu_binary_is_a_clear_error() -> None:
    r = _run("run", "--qemu", "/nonexistent/qemu-system-x86_64", "--", "true")
    assert r.returncode == 125  # testbed.exitcodes.USAGE
    assert "QEMU binary /nonexistent/qemu-system-x86_64 does not exist" in r.stderr


def test_missing_kernel_is_a_clear_error() -> None:
    r = _run("run", "--kernel", "/nonexistent/vmlinuz", "--", "true")
    assert r.returncode == 125  # testbed.exitcodes.USAGE
    assert "guest kernel /nonexistent/vmlinuz does not exist" in r.stderr


def test_help_lists_the_commands() -> None:
    r = _run("--help")
    assert r.returncode == 0
    # One indented line per command: its name, then what it does.
    listed = re.findall(r"^    (\w+) +\S", r.stdout, re.M)
    assert {"build", "run", "up", "workload", "demo"} <= set(listed), r.stdout


@pytest.mark.boot
def test_run_prints_output_and_exits_with_its_status(tmp_path: Path) -> None:
    r = _run("-q", "run", "--vcpus", "2", "--run-dir", str(tmp_path / "a"), "--",
             "nproc; exit 3", timeout=300)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "2\n"


def _store_records(store: Path) -> list[RunRecord]:
    with open_store(store) as s:
        return s.records()


@pytest.mark.boot
def test_up_hands_over_the_console(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    r = _run("-q", "up", "--vcpus", "1", "--run-dir", str(tmp_path / "b"), "--store", str(store),
             stdin="echo console-$((6*7))\npoweroff -f\n", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "console-42" in r.stdout
    # The session has a record like every other command: in the store and beside its logs.
    [record] = _store_records(store)
    assert (record.kind, record.name, record.ok) == ("run", "up", True)
    assert record.params == {"interactive": True}
    assert 0 < record.metrics["boot_seconds"].value < 300
    assert record.metrics["session_seconds"].value > 0
    assert [p.name for p in (tmp_path / "b").glob("record-run-up-*.json")] != []


@pytest.mark.boot
def test_up_detached_records_what_the_session_cost_the_hyperkernel(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    # Ctrl-] detaches with the guest still up: the statistics are read before shutdown.
    r = _run("-q", "up", "--hyperkernel", "--vcpus", "1", "--run-dir", str(tmp_path / "c"),
             "--store", str(store), stdin="cat /proc/meminfo > /dev/null; sleep 1\n\x1d",
             timeout=300)
    assert r.returncode == 0, r.stderr
    [record] = _store_records(store)
    assert record.ok and record.dimensions["hyperkernel"] is True
    assert record.hk_stats, "no hyperkernel statistics in the record of a detached session"


@pytest.mark.boot
@pytest.mark.parametrize("args,kind,name,metric", [
    (["workload", "pingpong", "--vcpus", "2", "--param", "rounds=50"], "workload", "pingpong",
     "ops_per_s"),
    (["bench", "migrate", "--migrations", "2"], "bench", "migrate", "migration_latency_us"),
])
def test_every_command_stores_its_record(tmp_path: Path, args: list[str], kind: str, name: str,
                                         metric: str) -> None:
    store, run_dir = tmp_path / "s.sqlite", tmp_path / "r"
    r = _run("-q", *args, "--run-dir", str(run_dir), "--store", str(store), timeout=600)
    assert r.returncode == 0, r.stderr
    [record] = _store_records(store)
    assert (record.kind, record.name, record.ok) == (kind, name, True)
    assert record.metrics[metric].samples, record.metrics
    assert list(run_dir.glob(f"record-{kind}-{name}-*.json")) != []
