"""Process ownership: node processes share one process group per cluster, and
leftovers from harnesses that died are swept by the owner pid in their name."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

NAME_PREFIX = "sds-node"
_NAME_RE = re.compile(rb"sds-node-o(\d+)-")


def node_name(index: int, run_id: str) -> str:
    """The QEMU ``-name``: carries the owning harness's pid for the sweep."""
    return f"{NAME_PREFIX}-o{os.getpid()}-{run_id}-n{index}"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace: float = 3.0) -> None:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap_children()
            if not group_alive(pgid):
                return
            time.sleep(0.05)


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def our_nodes() -> list[int]:
    """Pids of node processes owned by this harness process."""
    mine = []
    for pid, owner in _scan():
        if owner == os.getpid():
            mine.append(pid)
    return mine


def _scan() -> list[tuple[int, int]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        m = _NAME_RE.search(cmdline)
        if m and b"qemu-system" in cmdline.split(b"\0", 1)[0]:
            found.append((int(entry.name), int(m.group(1))))
    return found


def sweep_orphans() -> list[int]:
    """Kill node processes whose owning harness is gone; return their pids."""
    killed = []
    for pid, owner in _scan():
        if owner != os.getpid() and not pid_alive(owner):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


SETPRIV = Path("/usr/bin/setpriv")


def parent_death_argv(argv: list[str]) -> list[str]:
    """``argv`` started so the kernel SIGKILLs it when the harness dies.

    The harness tears its nodes down on any exception or stop signal, but a
    SIGKILL (an OOM kill, ``kill -9``, a CI runner reaping its job) gives it
    no chance. util-linux's setpriv sets PR_SET_PDEATHSIG and execs QEMU, so
    no Python runs between fork and exec. The signal follows the thread that
    started the node: start clusters from a thread that outlives them (the
    main thread does).
    """
    if not SETPRIV.is_file():
        return argv  # the sweep at the next start still catches leftovers
    return [str(SETPRIV), "--pdeathsig", "KILL", "--", *argv]
