"""Stopping the harness stops its nodes.

SIGTERM, SIGHUP and SIGINT raise ``Interrupted`` in the main thread, so every
``with Cluster(...)`` block unwinds and shuts its nodes down exactly as it
does for an error. Signals that arrive while that teardown runs are noted and
ignored: interrupting the teardown is what would leave nodes behind.

SIGKILL cannot be caught: for that, every node is started with a parent-death
signal (``procs.parent_death_argv``), so the kernel kills it when the harness
dies.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The harness was told to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_raised: list[int] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    if _raised:
        print(f"testbed: {signal.Signals(signum).name} again; still shutting the nodes down",
              file=sys.stderr, flush=True)
        return
    _raised.append(signum)
    raise Interrupted(signum)


def install() -> None:
    """Route the stop signals through ``Interrupted`` (main thread only)."""
    _raised.clear()
    for sig in HANDLED:
        signal.signal(sig, _handler)


def exit_status(exc: KeyboardInterrupt) -> int:
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    return 128 + signum


def name_of(exc: KeyboardInterrupt) -> str:
    return signal.Signals(exit_status(exc) - 128).name
