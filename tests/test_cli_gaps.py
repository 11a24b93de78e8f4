"""The CLI gaps of issue 10, one test each: bad numbers, bench baselines and exit status,
a QEMU without the hyperkernel, reused run directories, the exit-status scheme, and a
harness that is stopped or killed taking its nodes with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import procs, signals
from testbed.bench import bench_boot
from testbed.cli import _node_counts
from testbed.errors import ConfigError
from testbed.progress import Progress
from testbed.record import RunRecord
from testbed.store import Filters, open_store

TESTBED = [sys.executable, "-m", "testbed.cli"]


def _run(*args: str, timeout: float = 120, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, **(env or {})})


def _refused(r: subprocess.CompletedProcess[str], words: str) -> None:
    assert r.returncode == 125, r.stderr  # testbed.exitcodes.USAGE
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args,words", [
    (["run", "--boot-timeout", "nan", "--", "true"], "'nan' is not a positive, finite number"),
    (["run", "--boot-timeout", "-5", "--", "true"], "'-5' is not a positive, finite number"),
    (["run", "--timeout", "nan", "--", "true"], "'nan' is not a positive, finite number"),
    (["run", "--timeout", "-1", "--", "true"], "'-1' is not a positive, finite number"),
    (["run", "--timeout", "inf", "--", "true"], "'inf' is not a positive, finite number"),
    (["workload", "pingpong", "--timeout", "NaN"], "'NaN' is not a positive, finite number"),
    (["bench", "boot", "--repeat", "0"], "--repeat: 0 is out of range; use 1 or more"),
    (["bench", "migrate", "--migrations", "0"], "--migrations: 0 is out of range"),
    (["bench", "boot", "--nodes", "2,4"], "lacks 1: boot ratios are taken against 1 node"),
    (["bench", "boot", "--nodes", "1,1,2"], "must list distinct counts"),
])
def test_bad_numbers_are_refused(args: list[str], words: str) -> None:
    _refused(_run(*args), words)


def test_bench_boot_takes_its_ratios_against_one_node() -> None:
    assert _node_counts("4,1") == [1, 4]
    assert _node_counts("2,1,4") == [1, 2, 4]
    with pytest.raises(ConfigError, match="starting at 1"):
        bench_boot(None, Path("/nonexistent"), [4, 1], 4, 512, 1, Progress(quiet=True))  # type: ignore[arg-type]


@pytest.mark.boot
def test_bench_boot_in_any_order_reports_ratios_to_one_node(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    r = _run("-q", "bench", "boot", "--nodes", "2,1", "--repeat", "1", "--vcpus", "2",
             "--run-dir", str(tmp_path / "b"), "--store", str(store), timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["baseline_nodes"] == 1
    assert result["nodes"]["1"]["ratio"] == 1.0
    n2 = result["nodes"]["2"]
    assert n2["ratio"] == pytest.approx(n2["median_s"] / result["nodes"]["1"]["median_s"])
    with open_store(store) as s:
        records = {r.dimensions["nodes"]: r for r in s.records(Filters(kind="bench"))}
    assert set(records) == {1, 2} and all(rec.ok for rec in records.values())
    assert records[2].metrics["boot_ratio_vs_1_node"].samples == [pytest.approx(n2["ratio"])]
    assert records[2].hk_stats["totals"]["pages_received"] > 0


def test_a_failed_bench_boot_fails_the_bench(tmp_path: Path) -> None:
    # A "QEMU" that exits at once: every boot fails, and the bench must say so.
    store = tmp_path / "s.sqlite"
    r = _run("-q", "bench", "boot", "--nodes", "1", "--repeat", "1", "--run-dir",
             str(tmp_path / "b"), "--store", str(store), env={"SDS_QEMU": "/bin/false"})
    assert r.returncode == 1, r.stderr
    assert "FAILED" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["ok"] is False
    with open_store(store) as s:
        [record] = s.records()
    assert not record.ok and "node0" in (record.reason or "")
    assert "node0.qemu.log" in record.failure  # the logs come with the failure


@pytest.mark.parametrize("binary", ["/bin/true", "/usr/bin/qemu-system-x86_64"])
def test_multi_node_needs_a_qemu_with_the_hyperkernel(binary: str, tmp_path: Path) -> None:
    if not Path(binary).is_file():
        pytest.skip(f"{binary} is not installed")
    run_dir = tmp_path / "r"
    r = _run("run", "--nodes", "2", "--qemu", binary, "--run-dir", str(run_dir), "--", "true")
    _refused(r, f"--nodes 2 needs a QEMU with the hyperkernel object, and {binary} has none")
    assert not any(run_dir.glob("node*"))  # refused before any node started


def test_a_reused_run_dir_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "node0.console.log").write_text("an earlier run\n")
    for args in (["run", "--run-dir", str(old), "--", "true"],
                 ["workload", "pingpong", "--run-dir", str(old)],
                 ["bench", "boot", "--run-dir", str(old)]):
        _refused(_run(*args), f"--run-dir {old} already holds files of an earlier run")
    assert sorted(p.name for p in old.iterdir()) == ["node0.console.log"]
    assert (old / "node0.console.log").read_text() == "an earlier run\n"


@pytest.mark.boot
def test_guest_status_and_harness_status_do_not_collide(tmp_path: Path) -> None:
    """Guest statuses pass through; the harness's own are 124, 125 and 126."""
    for status in (1, 2):
        r = _run("-q", "run", "--run-dir", str(tmp_path / f"s{status}"), "--",
                 f"exit {status}", timeout=300)
        assert r.returncode == status and "testbed: error" not in r.stderr, r.stderr
    r = _run("-q", "run", "--timeout", "3", "--run-dir", str(tmp_path / "t"), "--", "sleep 60",
             timeout=300)
    assert r.returncode == 124, r.stderr  # timed out, like timeout(1)
    assert "testbed: error: guest did not finish" in r.stderr
    r = _run("-q", "run", "--run-dir", str(tmp_path / "d"), "--", "true",
             env={"SDS_QEMU": "/bin/false"})
    assert r.returncode == 126, r.stderr  # the harness or the system under test broke
    assert "testbed: error: node0" in r.stderr
    with open_store(Path(os.environ["SDS_STORE"])) as s:
        timed_out = [rec for rec in s.records(Filters(kind="run")) if rec.run_dir == str(tmp_path / "t")]
    assert len(timed_out) == 1 and not timed_out[0].ok and "did not finish" in (timed_out[0].reason or "")


def _harness(tmp_path: Path, *cmd: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*TESTBED, "run", "--vcpus", "1", "--run-dir", str(tmp_path / "r"),
                             "--", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _nodes_of(pid: int) -> list[int]:
    return [node for node, owner in procs._scan() if owner == pid]


def _wait_for_nodes(h: subprocess.Popen[str], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert h.poll() is None, h.communicate()
        nodes = _nodes_of(h.pid)
        if nodes:
            return nodes
        time.sleep(0.05)
    raise AssertionError("the harness started no node")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"  # dead, waiting to be reaped by its new parent


@pytest.mark.boot
@pytest.mark.parametrize("sig,when", [(signal.SIGTERM, "boot"), (signal.SIGHUP, "boot"),
                                      (signal.SIGINT, "boot"), (signal.SIGTERM, "command")])
def test_a_stopped_harness_shuts_its_nodes_down(tmp_path: Path, sig: signal.Signals,
                                                when: str) -> None:
    h = _harness(tmp_path, "echo started; sleep 600")
    try:
        nodes = _wait_for_nodes(h)
        if when == "command":
            assert h.stderr is not None
            while "guest shell after" not in h.stderr.readline():
                assert h.poll() is None
        h.send_signal(sig)
        _, err = h.communicate(timeout=60)
    finally:
        if h.poll() is None:
            h.kill()
    assert h.returncode == 128 + sig, err
    assert f"stopped by {sig.name}; every node was shut down" in err
    assert all(_gone(pid) for pid in nodes), nodes
    assert not _nodes_of(h.pid)


def test_a_stop_signal_inside_a_held_step_lands_after_it() -> None:
    # The console's drain thread starts inside signals.held(): a stop signal
    # that arrived inside Thread.start() once left a thread that the teardown
    # could not join, and the harness exited 1 instead of 128 + N.
    old = {sig: signal.getsignal(sig) for sig in signals.HANDLED}
    signals.install()
    steps = []
    try:
        with pytest.raises(signals.Interrupted) as stopped, signals.held():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)  # the handler would have run by now, unheld
            steps.append("finished")
        assert steps == ["finished"]
        assert stopped.value.signum == signal.SIGHUP
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@pytest.mark.boot
def test_a_killed_harness_takes_its_nodes_with_it(tmp_path: Path) -> None:
    h = _harness(tmp_path, "sleep 600")
    try:
        nodes = _wait_for_nodes(h)
        h.send_signal(signal.SIGKILL)  # no handler runs: only the parent-death signal helps
        h.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in nodes):
            assert time.monotonic() < deadline, f"nodes {nodes} outlived their harness"
            time.sleep(0.05)
    finally:
        for pid in _nodes_of(h.pid):
            os.kill(pid, signal.SIGKILL)


def test_run_writes_a_record_even_when_refused_late(tmp_path: Path) -> None:
    """A record of a run that died at boot is in the store, with the logs' tails."""
    r = _run("-q", "run", "--run-dir", str(tmp_path / "d"), "--", "true",
             env={"SDS_QEMU": "/bin/false"})
    assert r.returncode == 126
    [path] = (tmp_path / "d").glob("record-run-*.json")
    record = RunRecord.load(path)
    assert not record.ok and record.kind == "run" and "node0" in (record.reason or "")
