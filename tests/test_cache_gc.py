"""testbed cache gc: old builds go, the current and recently used ones stay,
and a build in progress is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import cache, cache_gc

DAY = 86400.0


def _fill(out: Path) -> dict[str, object]:
    (out / "blob").write_bytes(b"x" * 4096)
    return {}


def _artifact(kind: str, key: str, age_days: float) -> Path:
    art = cache.build(kind, key, _fill)
    t = time.time() - age_days * DAY
    os.utime(art.path / cache.LAST_USED, (t, t))
    return art.path


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SDS_CACHE", str(tmp_path))
    return tmp_path


def test_old_builds_go_and_current_ones_stay(cache_dir: Path) -> None:
    current = _artifact("qemu", "a" * 64, age_days=30)  # old, but the newest of its kind
    older = _artifact("qemu", "b" * 64, age_days=40)
    recent_kernel = _artifact("kernel", "c" * 64, age_days=1)
    old_kernel = _artifact("kernel", "d" * 64, age_days=20)
    (cache_dir / "downloads").mkdir()
    tarball = cache_dir / "downloads" / "qemu.tar.xz"
    tarball.write_bytes(b"t")
    removed, kept = cache_gc.collect(keep_days=7)
    assert {e.path for e in removed} == {older, old_kernel}
    assert {current, recent_kernel} <= {e.path for e in kept}
    assert current.exists() and recent_kernel.exists() and tarball.exists()
    assert not older.exists() and not old_kernel.exists()
    assert sum(e.bytes for e in removed) >= 2 * 4096


def test_a_lookup_makes_a_build_current_again(cache_dir: Path) -> None:
    _artifact("qemu", "a" * 64, age_days=1)
    revived = _artifact("qemu", "b" * 64, age_days=30)
    assert cache.lookup("qemu", "b" * 64) is not None  # used now
    removed, _ = cache_gc.plan(keep_days=7)
    assert revived not in {e.path for e in removed}


def test_leftovers_of_dead_builds_go_but_a_running_build_stays(cache_dir: Path) -> None:
    _artifact("qemu", "a" * 64, age_days=0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = cache_dir / "qemu" / f"{'e' * 64}.tmp-{dead.pid}"
    orphan.mkdir()
    running = cache_dir / "qemu" / f"{'f' * 64}.tmp-{os.getpid()}"
    running.mkdir()
    removed, _ = cache_gc.collect(keep_days=7)
    assert orphan in {e.path for e in removed} and not orphan.exists()
    assert running.exists()


def test_dry_run_removes_nothing_and_the_cli_says_what_would_go(cache_dir: Path) -> None:
    _artifact("qemu", "a" * 64, age_days=0)
    old = _artifact("qemu", "b" * 64, age_days=30)
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "cache", "gc", "--dry-run"],
                       capture_output=True, text=True, env={**os.environ}, check=False)
    assert r.returncode == 0, r.stderr
    assert f"would remove qemu/{'b' * 16}" in r.stdout and "not used for 30" in r.stdout
    assert old.exists()
    bad = subprocess.run([sys.executable, "-m", "testbed.cli", "cache", "gc", "--keep-days", "nan"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "positive, finite" in bad.stderr
