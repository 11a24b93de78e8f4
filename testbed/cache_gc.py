"""Garbage collection of the build cache.

Every change to a patch, the hyperkernel or a guest recipe publishes a new
content-addressed entry; nothing removed the old ones. ``gc`` keeps, per kind
of artifact, the most recently used entry (the one the current checkout runs)
and every entry used within ``keep_days``; it removes the rest, and the
half-built temporaries of builders that died. Downloads are kept: they are
inputs, not builds.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from testbed import cache, procs

KEPT_KINDS = frozenset({"downloads"})


@dataclass(frozen=True)
class Entry:
    kind: str
    path: Path
    bytes: int
    last_used: float
    why: str  # why it goes, or why it stays


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def _last_used(path: Path) -> float:
    for marker in (cache.LAST_USED, cache.COMPLETE_MARKER):
        try:
            return (path / marker).stat().st_mtime
        except OSError:
            continue
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _builder_alive(name: str) -> bool:
    """``<key>.tmp-<pid>``: is the process that builds it still running?"""
    try:
        pid = int(name.rsplit(".tmp-", 1)[1])
    except (IndexError, ValueError):
        return False
    return procs.pid_alive(pid)


def _build_running(path: Path) -> bool:
    """A QEMU work tree whose build lock is held (testbed/qemu_build.py)."""
    lock = path / ".lock"
    if not lock.exists():
        return False
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def plan(keep_days: float, root: Path | None = None,
         now: float | None = None) -> tuple[list[Entry], list[Entry]]:
    """(to remove, to keep), without touching anything."""
    root = root or cache.cache_root()
    now = time.time() if now is None else now
    horizon = now - keep_days * 86400
    remove: list[Entry] = []
    keep: list[Entry] = []
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if kind_dir.name in KEPT_KINDS:
            continue
        entries = sorted((p for p in kind_dir.iterdir() if p.is_dir()), key=_last_used, reverse=True)
        newest_done = False
        for path in entries:
            used = _last_used(path)
            if ".tmp-" in path.name:
                if _builder_alive(path.name):
                    keep.append(Entry(kind_dir.name, path, 0, used, "being built"))
                else:
                    remove.append(Entry(kind_dir.name, path, _size(path), used,
                                        "left by a build that died"))
                continue
            if _build_running(path):
                keep.append(Entry(kind_dir.name, path, 0, used, "a build is running in it"))
                continue
            # qemu-work trees have no completion marker; artifacts do
            if not newest_done:
                newest_done = True
                keep.append(Entry(kind_dir.name, path, 0, used, "most recently used"))
            elif used >= horizon:
                keep.append(Entry(kind_dir.name, path, 0, used, f"used in the last {keep_days:g} days"))
            else:
                remove.append(Entry(kind_dir.name, path, _size(path), used,
                                    f"not used for {(now - used) / 86400:.1f} days"))
    return remove, keep


def collect(keep_days: float, dry_run: bool = False,
            root: Path | None = None) -> tuple[list[Entry], list[Entry]]:
    remove, keep = plan(keep_days, root)
    if not dry_run:
        for e in remove:
            shutil.rmtree(e.path, ignore_errors=True)
    return remove, keep
