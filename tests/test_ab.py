"""testbed ab: refs that do not exist or do not build are named; the same version twice is
not flagged; a version with a delay planted in the page path is (nightly: it builds QEMU)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from testbed.store import Filters, open_store

TESTBED = [sys.executable, "-m", "testbed.cli"]
REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)


def _git(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=True, input=stdin, env={**os.environ, **(env or {})}).stdout.strip()


def planted_slowdown(tmp_path: Path) -> str:
    """A commit (no branch, no working-tree change) whose hyperkernel sleeps 200 us
    whenever a page arrives: the page path made slower on purpose."""
    path = "hyperkernel/src/requester.c"
    source = _git("show", f"HEAD:{path}")
    anchor = "void hk_requester_on_data(struct hk_node *n, int from, const struct hk_msg *m)\n{\n"
    assert anchor in source
    # A fresh nonce each time: the planted version is never in the build cache,
    # whatever ran before on this machine.
    slowed = source.replace(anchor, anchor + "\tusleep(200); /* planted by tests/test_ab.py "
                            f"{uuid.uuid4().hex} */\n")
    slowed = slowed.replace('#include "hk.h"', '#include <unistd.h>\n\n#include "hk.h"', 1)
    blob = _git("hash-object", "-w", "--stdin", stdin=slowed + "\n")
    index = {"GIT_INDEX_FILE": str(tmp_path / "index")}
    _git("read-tree", "HEAD", env=index)
    _git("update-index", "--cacheinfo", f"100644,{blob},{path}", env=index)
    tree = _git("write-tree", env=index)
    return _git("commit-tree", tree, "-p", "HEAD", "-m", "planted slowdown in the page path")


def _suite(tmp_path: Path, nodes: int) -> Path:
    """sweep moves every slice of its region to the other node each pass: a known number
    of pages crosses the page path, so a slower page path shows in its throughput whatever
    the scheduling (falseshare's transfers depend on it, and its throughput varied 17-fold
    between boots of one version on this shared machine). Three runs per boot (the boot's
    median is its sample) and more pairs while a side stays noisy."""
    path = tmp_path / "ab.toml"
    path.write_text(f"""\
[suite]
name = "abtest"
nodes = [{nodes}]
runs = 3
rerun_cv = 0.10
max_repetitions = 12
cell_timeout = 300

[[workload]]
name = "sweep"
params = {{ threads = 2, size_mb = 4, passes = 4 }}
""")
    return path


def test_a_ref_that_does_not_exist_is_named() -> None:
    r = _cli("ab", "no-such-ref", "HEAD")
    assert r.returncode == 125
    assert "ref 'no-such-ref' does not exist" in r.stderr


def test_a_ref_that_does_not_build_says_which_and_why(tmp_path: Path) -> None:
    root = _git("rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    r = _cli("ab", root, "HEAD", "--suite", str(_suite(tmp_path, 1)), "--store",
             str(tmp_path / "s.sqlite"))
    assert r.returncode == 126
    assert f"ref {root} ({root[:12]}) does not build: it has no testbed/cli.py" in r.stderr


def test_a_ref_needing_a_qemu_build_asks_for_build(tmp_path: Path) -> None:
    slow = planted_slowdown(tmp_path)
    r = _cli("ab", "HEAD", slow, "--suite", str(_suite(tmp_path, 2)), "--store",
             str(tmp_path / "s.sqlite"))
    assert r.returncode == 125
    assert f"ref {slow} ({slow[:12]}) needs a QEMU build" in r.stderr and "--build" in r.stderr


def _clean_build_inputs() -> bool:
    return not _git("status", "--porcelain", "--", "qemu-patches", "hyperkernel")


@pytest.mark.boot
def test_the_same_version_twice_is_not_flagged(tmp_path: Path) -> None:
    if not _clean_build_inputs():
        pytest.skip("qemu-patches/ or hyperkernel/ has uncommitted changes: HEAD is not built")
    store = tmp_path / "s.sqlite"
    r = _cli("ab", "HEAD", "HEAD", "--suite", str(_suite(tmp_path, 1)), "--store", str(store))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "REGRESSION" not in r.stdout and "0 regression(s)" in r.stdout
    with open_store(store) as s:
        records = s.records(Filters(kind="workload"))
    assert all(rec.ok for rec in records)
    boots: list[tuple[str, int]] = []  # (side, repetition) in the order they ran
    for rec in records:
        boot = (rec.labels["ab"]["side"], rec.labels["repetition"])
        if not boots or boots[-1] != boot:
            boots.append(boot)
    pairs = len(boots) // 2
    assert pairs >= 8  # the default iterations, and more if a side stayed noisy
    expected = [s for k in range(pairs) for s in (("A", "B") if k % 2 == 0 else ("B", "A"))]
    assert [side for side, _ in boots] == expected  # interleaved
    assert [rep for _, rep in boots] == [k // 2 + 1 for k in range(2 * pairs)]
    runs = [[rec.labels["run"] for rec in records if (rec.labels["ab"]["side"],
                                                      rec.labels["repetition"]) == boot]
            for boot in boots]
    assert all(r == [1, 2, 3] for r in runs)  # three runs in each boot


@pytest.mark.nightly
@pytest.mark.boot
def test_a_planted_slowdown_in_the_page_path_is_flagged(tmp_path: Path) -> None:
    slow = planted_slowdown(tmp_path)
    r = _cli("ab", "HEAD", slow, "--build", "--suite", str(_suite(tmp_path, 2)),
             "--store", str(tmp_path / "s.sqlite"), timeout=3 * 3600)
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(t for t in r.stdout.splitlines() if "sweep n2 page" in t and "ops_per_s" in t)
    assert "REGRESSION" in line, r.stdout
