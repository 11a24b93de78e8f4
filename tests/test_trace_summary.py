"""``testbed trace``: a fault trace's stall time by vCPU, kind, wait and page.

The traces here are written by hand in the library's format (trace.c), so
every figure the summary gives is known; tests/test_fault_trace.py reads a
guest's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed import cli
from testbed import trace_summary as ts
from testbed.errors import ConfigError

HEADER = "# hk fault trace 1 node={n} nodes=2\n# vcpus=4\n"


def _write(d: Path, node: int, lines: list[str]) -> None:
    (d / f"faults.node{node}").write_text(HEADER.format(n=node) + "".join(f"{x}\n" for x in lines))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    # page 0x10 (offset 0x10000): node 1 writes it once, node 0's write then
    # waits 900 us (a hold); node 0 reads then writes page 0x20 (an upgrade);
    # one stall before the window and one after it
    _write(tmp_path, 0, [
        "1000 5000 0 30 r k 1 0",          # before the window
        "10000 900000 0 10 w k 1 0",
        "20000 30000 0 20 r u 2 0",
        "60000 40000 0 20 w u 2 0",
        "9000000 1000 0 10 w k 1 0",       # after it
    ])
    _write(tmp_path, 1, [
        "5000 20000 2 10 w k 3 0",
        "30000 100000 2 20 r k 3 0",
        "40000 2000000 3 40 w k 4 1",
    ])
    (tmp_path / "faults.windows").write_text("lock 5000 1005000\n")
    return tmp_path


def test_the_summary_counts_each_vcpus_stalls_by_kind_and_wait(run_dir: Path) -> None:
    stalls = ts.read_trace(run_dir)
    assert [s.t0_ns for s in stalls] == sorted(s.t0_ns for s in stalls) and len(stalls) == 8
    (window,) = ts.read_windows(run_dir)
    s = ts.summarise(stalls, window, top=2)
    assert (s.stalls, s.span_ns, s.wait_ns) == (6, 1_000_000, 3_090_000)
    assert s.vcpus == {0: (3, 970_000), 2: (2, 120_000), 3: (1, 2_000_000)}
    assert s.kinds == {"r k": (1, 100_000), "r u": (1, 30_000), "w k": (3, 2_920_000),
                       "w u": (1, 40_000)}
    assert [(lab, c) for lab, c, _ in s.buckets] == [
        ("< 64 us", 3), ("64-256 us", 1), ("256-1024 us", 1), ("1024-4096 us", 1),
        (">= 4096 us", 0)]
    # node 0's write of page 0x20 after its own read; node 1's read of the
    # same page between them makes the later write no upgrade of node 0's
    assert (s.upgrades, s.upgrade_wait_ns) == (0, 0)
    assert [(hex(p.page * ts.PAGE_SIZE), p.stalls, p.long_waits) for p in s.pages] == [
        ("0x40000", 1, 1), ("0x10000", 2, 1)]
    assert dict(s.pages[1].by_node) == {"n0 w": 1, "n1 w": 1}


def test_a_write_right_after_the_same_nodes_read_is_an_upgrade(tmp_path: Path) -> None:
    _write(tmp_path, 0, ["100 30000 0 20 r k 1 0", "200 40000 0 20 w k 1 0",
                         "300 30000 0 21 r k 1 0", "400 30000 0 22 w k 1 0"])
    stalls = ts.read_trace(tmp_path)
    s = ts.summarise(stalls, ts.whole_trace(stalls))
    assert (s.upgrades, s.upgrade_wait_ns) == (1, 40_000)


def test_a_pages_timeline_gives_each_stall_in_order(run_dir: Path) -> None:
    (window,) = ts.read_windows(run_dir)
    rows = ts.page_timeline(ts.read_trace(run_dir), ts.parse_offset("0x10000"), window)
    assert [(r["node"], r["kind"], r["wait_us"], r["gap_us"]) for r in rows] == [
        (1, "wk", 20.0, None), (0, "wk", 900.0, 5.0)]


def test_the_command_prints_each_window_or_the_whole_trace(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trace", str(run_dir), "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["window"] == "lock" and doc["stalls"] == 6
    assert cli.main(["trace", str(run_dir), "--all", "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["window"] == "trace" and doc["stalls"] == 8
    assert cli.main(["trace", str(run_dir), "--top", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("lock: 6 stalls in 0.00 s")
    assert "v3 1 stalls" in text and "< 64 us 3 = 0.00 s (3%)" in text
    assert "0x40000" in text and "0x10000" not in text
    assert cli.main(["trace", str(run_dir), "--page", "0x10000"]) == 0
    assert "lock: page 0x10000, 2 stalls" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--window", "redis"], "no window 'redis'"),
    (["--page", "ten"], "--page 'ten' is not a number"),
])
def test_bad_arguments_get_one_clear_line(run_dir: Path, argv: list[str], says: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["trace", str(run_dir), *argv]) == 125
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_directory_without_a_trace_or_with_a_broken_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no fault trace"):
        ts.read_trace(tmp_path)
    _write(tmp_path, 0, ["100 30000 0 20 x k 1 0"])
    with pytest.raises(ConfigError, match=r"faults.node0:3: not a fault trace line"):
        ts.read_trace(tmp_path)
    (tmp_path / "faults.node0").write_text("100 30000 0 20 r k 1 0\n")
    with pytest.raises(ConfigError, match="no '# hk fault trace 1"):
        ts.read_trace(tmp_path)
    (tmp_path / "faults.windows").write_text("lock 5000\n")
    with pytest.raises(ConfigError, match="expected 'name start_ns end_ns'"):
        ts.read_windows(tmp_path)


def test_a_count_below_one_is_refused_before_reading(run_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["trace", str(run_dir), "--top", "0"])
    assert e.value.code == 125 and "--top: 0 is out of range" in capsys.readouterr().err
