"""The CLI refuses bad input with one clear line, before building or booting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.boot
def test_up_hands_over_the_console(tmp_path: Path) -> None:
    r = _run("-q", "up", "--vcpus", "1", "--run-dir", str(tmp_path / "b"),
             stdin="echo console-$((6*7))\npoweroff -f\n", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "console-42" in r.stdout
