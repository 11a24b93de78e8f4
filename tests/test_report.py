"""The release report, from a real suite run on 1 and 2 nodes, checked in headless Chromium:
no JavaScript error, no empty figure, a screenshot with something on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import pytest
from chromium import open_page, png_ink, screenshot

from testbed.report import _Page
from testbed.store import Filters, open_store

TESTBED = [sys.executable, "-m", "testbed.cli"]
SUITE = """\
[suite]
name = "report"
nodes = [1, 2]
repetitions = 1
cell_timeout = 300

[[workload]]
name = "falseshare"
params = { iters = 20000 }

[[workload]]
name = "sqlite"
params = { rows = 200, lookups = 200, updates = 50 }
"""


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with two real runs of a small suite: a base and a new."""
    root = tmp_path_factory.mktemp("report")
    suite = root / "report.toml"
    suite.write_text(SUITE)
    path = root / "results.sqlite"
    for _ in range(2):
        r = _cli("-q", "suite", "run", str(suite), "--store", str(path))
        assert r.returncode == 0, r.stdout + r.stderr
    yield path


def _figure_dom(dom: str, div_id: str) -> str:
    """The rendered DOM of one plotly figure: from its div to the next figure's."""
    divs = [(m.start(), m.group(0)) for m in
            re.finditer(r'<div[^>]*class="[^"]*plotly-graph-div[^"]*"[^>]*>', dom)]
    at = [k for k, (_, tag) in enumerate(divs) if f'id="{div_id}"' in tag]
    assert at, f"no figure {div_id} in the page"
    k = at[0]
    return dom[divs[k][0]:divs[k + 1][0] if k + 1 < len(divs) else len(dom)]


@pytest.mark.boot
def test_the_comparison_report_renders_in_a_real_browser(store: Path, tmp_path: Path) -> None:
    with open_store(store) as s:
        base_run, new_run = s.suite_runs("report")
        records = s.records(Filters(suite_run=new_run.id))
    out = tmp_path / "report.html"
    r = _cli("report", "--store", str(store), "--base", base_run.id[:12], "--new", new_run.id[:12],
             "-o", str(out))
    assert r.returncode == 0, r.stderr
    page = open_page(out)
    assert page.body.get("data-js-errors") == "" and page.console_errors == []
    assert page.body.get("data-report-status") == "ok", page.body
    # change per cell, ops_per_s, boot time, stall histogram, hottest pages, bytes by type,
    # the timeline
    assert int(page.body["data-figures"]) >= 7
    assert page.body["data-figures-drawn"] == page.body["data-figures"]
    assert "<b>geometric mean</b>" in page.dom
    for record in records:  # the provenance behind every number
        assert record.id[:12] in page.dom
        assert record.dimensions["artifacts"]["qemu"][:12] in page.dom
    assert "falseshare n2 page iters=20000" in page.dom
    # The timeline of the new run: one bar per record (cell runs and boots), drawn.
    timeline = _figure_dom(page.dom, f"timeline-{new_run.id[:12]}")
    assert timeline.count('class="point"') >= len(records), "timeline bars missing"
    assert "pages received (per run)" in timeline  # the lower panel: 2-node runs moved pages
    shot = screenshot(out, tmp_path / "report.png")
    assert png_ink(shot) > 0.01
    assert os.path.getsize(out) > 3_000_000  # plotly.js is inside: readable offline


@pytest.mark.boot
def test_a_report_of_one_result_set_renders_too(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.html"
    r = _cli("report", "--store", str(store), "--suite", "report", "-o", str(out))
    assert r.returncode == 0, r.stderr
    page = open_page(out)
    assert page.body.get("data-report-status") == "ok", page.body
    assert "<b>geometric mean</b>" not in page.dom  # nothing to compare with


@pytest.mark.parametrize("breakage,status", [("empty", "empty:figure-2"), ("script", "js-error")])
def test_the_browser_check_catches_a_broken_page(tmp_path: Path, breakage: str,
                                                 status: str) -> None:
    page = _Page("broken on purpose")
    page.figure(go.Figure(go.Bar(x=["a"], y=[1])))
    if breakage == "empty":
        page.figure(go.Figure(go.Bar(x=[], y=[])))
    else:
        page.add("<script>window.notAFunction();</script>")
    out = tmp_path / "broken.html"
    out.write_text(page.html())
    opened = open_page(out)
    assert opened.body.get("data-report-status") == status, opened.body
    if breakage == "script":
        assert "notAFunction" in opened.body["data-js-errors"]
        assert opened.console_errors


def test_report_without_records_says_what_to_do(tmp_path: Path) -> None:
    with open_store(tmp_path / "empty.sqlite"):
        pass
    r = _cli("report", "--store", str(tmp_path / "empty.sqlite"), "-o", str(tmp_path / "x.html"))
    assert r.returncode == 125
    assert "nothing to report" in r.stderr and "testbed suite run" in r.stderr
    assert not (tmp_path / "x.html").exists()
