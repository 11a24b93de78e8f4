"""Suites: a TOML matrix checked before anything boots, run cell by cell into the store,
failing and hanging cells recorded while the suite goes on, interrupted runs resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cluster import Artifacts, Cluster
from testbed.config import POLICIES
from testbed.errors import ConfigError
from testbed.progress import Progress
from testbed.record import RunRecord
from testbed.store import Filters, SuiteRun, open_store
from testbed.suite import SuiteRunner, plan
from testbed.suitefile import SuiteError, load_suite, parse_shard

TESTBED = [sys.executable, "-m", "testbed.cli"]
REPO = Path(__file__).resolve().parent.parent

GOOD = """\
[suite]
name = "t"
nodes = [1, 2]
policies = ["page", "vcpu"]

[[workload]]
name = "pingpong"
params = { rounds = 500 }

[[workload]]
name = "lock"

[workload.params]
threads = 2
kind = ["spin", "mutex"]
"""


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, **(env or {})})


def test_the_matrix_expands_and_one_node_has_no_policy(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    suite = load_suite(path)
    ids = [c.id for c in suite.cells]
    assert ids[:3] == ["pingpong[rounds=500]@n1/none", "lock[threads=2 kind=spin]@n1/none",
                       "lock[threads=2 kind=mutex]@n1/none"]
    assert len(ids) == 3 * 3  # n1 once, n2 with each of two policies
    assert suite.groups == [(1, "none"), (2, "page"), (2, "vcpu")]


@pytest.mark.parametrize("old,new,line,words", [
    ('policies = ["page", "vcpu"]', 'policies = ["page", "teleport"]', 4,
     "unknown policy 'teleport'"),
    ('name = "lock"', 'name = "locke"', 11, "unknown workload 'locke'"),
    ('threads = 2', 'threadz = 2', 14, "workload 'lock' has no parameter 'threadz'"),
    ("{ rounds = 500 }", "{ rounds = 500, cpu = 1 }", 8,
     "workload 'pingpong' has no parameter 'cpu'"),
    ("rounds = 500", "rounds = 0", 8, "rounds=0 is out of range"),
    ('kind = ["spin", "mutex"]', 'kind = ["spin", "ticket"]', 15, "kind=ticket is not one of"),
    ('nodes = [1, 2]', 'nodes = [1, 2]\ncolour = "blue"', 4, "unknown [suite] key 'colour'"),
    ('name = "pingpong"', 'name = "pingpong"\nrepeat = 3', 8, "unknown [[workload]] key 'repeat'"),
    ('nodes = [1, 2]', 'nodes = [1, 99]', 3, "node count 99 is out of range"),
    ('nodes = [1, 2]', 'nodes = [1, 2]\nruns = 0', 4, "runs must be a whole number >= 1"),
    ("rounds = 500", "rounds = = 500", 8, "not valid TOML"),
    ('[suite]', '[suit]', 1, "unknown top-level key 'suit'"),
])
def test_a_bad_suite_is_refused_with_file_and_line(tmp_path: Path, old: str, new: str, line: int,
                                                   words: str) -> None:
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert words in str(err.value)


def test_a_bad_suite_stops_the_cli_before_anything_boots(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('"locke"', '"lock"').replace("rounds = 500", "rounds = -1"))
    runs = tmp_path / "runs"
    r = _cli("suite", "run", str(path), "--store", str(tmp_path / "s.sqlite"),
             env={"SDS_RUNS": str(runs)})
    assert r.returncode == 125
    assert f"{path}:8: rounds=-1 is out of range" in r.stderr
    assert not runs.exists() and not (tmp_path / "s.sqlite").exists()


def test_a_dry_run_lists_the_cells_and_estimates_from_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD.replace('nodes = [1, 2]', 'nodes = [1]\nrepetitions = 2'))
    store = tmp_path / "s.sqlite"
    r = _cli("suite", "run", str(path), "--dry-run", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "rep 2  pingpong[rounds=500]@n1/none" in r.stdout
    assert "6 cell(s) in 2 boot(s)" in r.stdout
    # Nothing ran before: a tenth of the cell timeout (600 s) a cell, 60 s a boot.
    assert "estimate: about 8m00s; 4 cell(s)/boot(s) never ran before, counted at 60s" in r.stdout
    assert not store.exists()  # a dry run creates no store
    with open_store(store) as s:  # earlier runs, of another suite, timed every cell
        for cell, seconds in (("boot@n1/none", 5.0), ("pingpong[rounds=500]@n1/none", 10.0),
                              ("lock[threads=2 kind=spin]@n1/none", 20.0),
                              ("lock[threads=2 kind=mutex]@n1/none", 30.0)):
            record = RunRecord(kind="workload", name="x", ok=True, dimensions={"nodes": 1},
                               labels={"suite": "other", "suite_run": "r", "cell": cell,
                                       "repetition": 1, "cell_seconds": seconds})
            s.add(record)
    r = _cli("suite", "run", str(path), "--dry-run", "--store", str(store))
    assert r.returncode == 0, r.stderr
    # Two boots of 5 s, each running 10 + 20 + 30 s of cells.
    assert "estimate: about 2m10s; every cell timed by earlier runs in the store" in r.stdout


def test_shards_split_the_boots_between_machines(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD.replace('name = "t"', 'name = "t"\nrepetitions = 2'))
    suite = load_suite(path)
    whole = [(u.label, c.id) for u in plan(suite) for c in u.cells]
    parts = [[(u.label, c.id) for u in plan(suite, (i, 3)) for c in u.cells] for i in (1, 2, 3)]
    # Every cell once, in exactly one shard.
    assert sorted(cell for part in parts for cell in part) == sorted(whole)
    assert all(parts)
    with pytest.raises(ConfigError):
        parse_shard("3/2")


def test_the_shipped_suites_are_valid() -> None:
    smoke = load_suite(REPO / "suites" / "smoke.toml")
    assert {c.nodes for c in smoke.cells} == {1, 2}
    nightly = load_suite(REPO / "suites" / "nightly.toml")
    assert {c.nodes for c in nightly.cells} == {1, 2, 4}
    assert {c.policy for c in nightly.cells} == {"none", *POLICIES}
    from testbed.workloads import WORKLOADS
    assert {c.workload for c in nightly.cells} == set(WORKLOADS)


def test_resume_refuses_a_changed_suite(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    store = tmp_path / "s.sqlite"
    with open_store(store) as s:
        s.begin_suite_run(SuiteRun("r" * 32, "t", str(path), "0" * 64, "1/1", "c", "h",
                                   "2000-01-01", None, 9, "interrupted"))
    r = _cli("suite", "run", str(path), "--store", str(store), "--resume")
    assert r.returncode == 125
    assert "changed since suite run rrrrrrrrrrrr began" in r.stderr


FAILING = """\
[suite]
name = "failing"
nodes = [1]
repetitions = 1
cell_timeout = 30

[[workload]]
name = "pingpong"
params = { rounds = 300 }

[[workload]]
name = "falseshare"
params = { iters = 2000, inject = 1 }   # its self-check must fail: ok=0

[[workload]]
name = "clock"
params = { duration_ms = 600000, timeout_s = 3000 }   # outlives the cell timeout: a hang

[[workload]]
name = "pchase"
params = { size_mb = 2 }
"""


@pytest.mark.boot
def test_failing_and_hanging_cells_are_recorded_and_the_suite_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "failing.toml"
    path.write_text(FAILING)
    store = tmp_path / "s.sqlite"
    r = _cli("suite", "run", str(path), "--store", str(store), "--run-dir", str(tmp_path / "runs"),
             timeout=600)
    assert r.returncode == 1, r.stderr  # some cells failed
    assert "cell 4/4 pchase" in r.stderr and "elapsed" in r.stderr and "left" in r.stderr
    with open_store(store) as s:
        [run] = s.suite_runs("failing")
        cells = {rec.name: rec for rec in s.records(Filters(suite_run=run.id, kind="workload"))}
        boots = s.records(Filters(suite_run=run.id, kind="bench"))
    assert run.status == "failed"
    assert cells["pingpong"].ok and cells["pchase"].ok
    assert not cells["falseshare"].ok and "falseshare" in cells["falseshare"].output
    hang = cells["clock"]
    assert not hang.ok and "did not finish" in (hang.reason or "")
    assert "node0.console.log" in hang.failure  # the logs come with the failure
    assert len(boots) == 2 and all(b.ok for b in boots)  # a fresh boot after the hang
    assert cells["pchase"].run_dir != hang.run_dir
    assert "FAILED clock" in r.stdout and "FAILED falseshare" in r.stdout


RESUMABLE = """\
[suite]
name = "resumable"
nodes = [1]
repetitions = 2
cell_timeout = 120

[[workload]]
name = "pingpong"
params = { rounds = 300 }

[[workload]]
name = "sqlite"
params = { rows = 200, lookups = 200, updates = 50 }
"""


@pytest.mark.boot
def test_an_interrupted_suite_resumes_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "resumable.toml"
    path.write_text(RESUMABLE)
    store = tmp_path / "s.sqlite"
    h = subprocess.Popen([*TESTBED, "suite", "run", str(path), "--store", str(store)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert h.stderr is not None
        for line in h.stderr:
            if "  ok in" in line:
                break
        h.send_signal(signal.SIGINT)
        _, err = h.communicate(timeout=120)
    finally:
        if h.poll() is None:
            h.kill()
    assert h.returncode == 130, err
    assert f"testbed suite run {path} --resume" in err
    with open_store(store) as s:
        [run] = s.suite_runs("resumable")
        first = len(s.records(Filters(suite_run=run.id, kind="workload")))
    assert run.status == "interrupted" and 1 <= first < 4
    r = _cli("suite", "run", str(path), "--store", str(store), "--resume", timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"resuming run {run.id[:12]}" in r.stderr
    assert f"{first} already done" in r.stdout
    with open_store(store) as s:
        [again] = s.suite_runs("resumable")
        records = s.records(Filters(suite_run=run.id, kind="workload"))
    assert again.status == "done"
    cells = sorted((rec.labels["cell"], rec.labels["repetition"]) for rec in records)
    assert cells == sorted({(c, rep) for c in ("pingpong[rounds=300]@n1/none",
                                               "sqlite[rows=200 lookups=200 updates=50]@n1/none")
                            for rep in (1, 2)})


NOISY = """\
[suite]
name = "noisy"
nodes = [1]
repetitions = 2
runs = 2              # two runs per boot: their median is the boot's sample
rerun_cv = 0.000001   # any variation at all counts as noise here
max_repetitions = 3
cell_timeout = 120

[[workload]]
name = "pingpong"
params = { rounds = 300 }
"""


@pytest.mark.boot
def test_a_noisy_cell_gets_more_repetitions(tmp_path: Path) -> None:
    path = tmp_path / "noisy.toml"
    path.write_text(NOISY)
    store = tmp_path / "s.sqlite"
    r = _cli("suite", "run", str(path), "--store", str(store), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "coefficient of variation" in r.stderr and "after 2 repetitions; one more" in r.stderr
    with open_store(store) as s:
        runs = sorted((rec.labels["repetition"], rec.labels["run"])
                      for rec in s.records(Filters(kind="workload")))
    # Two runs in each boot, and no more boots than max_repetitions.
    assert runs == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]


HANG_AFTER_BOOT = """\
[suite]
name = "frozen"
nodes = [2]
vcpus = 2
mem = "512M"
repetitions = 2
cell_timeout = 120

[[workload]]
name = "pingpong"
params = { rounds = 300 }
"""


@pytest.mark.boot
@pytest.mark.usefixtures("needs_hyperkernel")
def test_a_node_that_hangs_after_its_boot_fails_that_boot_and_the_suite_goes_on(
        tmp_path: Path, artifacts: Artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real hang: node 0 of the first boot is stopped (SIGSTOP) once it booted, so
    # the boot's statistics query gets no answer, as a hung QEMU's does.
    boot = Cluster.boot
    frozen: list[Cluster] = []

    def boot_then_freeze(self: Cluster) -> None:
        boot(self)
        if not frozen:
            frozen.append(self)
            os.kill(self.nodes[0].pid, signal.SIGSTOP)

    monkeypatch.setattr(Cluster, "boot", boot_then_freeze)
    path = tmp_path / "frozen.toml"
    path.write_text(HANG_AFTER_BOOT)
    with open_store(tmp_path / "s.sqlite") as store:
        runner = SuiteRunner(load_suite(path), store, artifacts, Progress(quiet=True),
                             run_root=tmp_path / "runs")
        outcome = runner.execute()
        boots = store.records(Filters(suite_run=runner.run.id, kind="bench"))
        cells = store.records(Filters(suite_run=runner.run.id, kind="workload"))
    assert not outcome.ok and runner.run.id
    [hung] = [b for b in boots if not b.ok]
    assert "query-hyperkernel got no answer" in (hung.reason or ""), hung.reason
    assert "node0.hang.txt" in (hung.reason or "") or "gdb" in (hung.reason or "")
    assert sorted((c.labels["repetition"], c.ok) for c in cells) == [(1, False), (2, True)]
    assert not frozen[0].nodes[0].alive()  # the stopped node was torn down too
