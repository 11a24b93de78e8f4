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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """The harness was told to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_raised: list[int] = []
_held: list[bool] = []
_deferred: list[int] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    if _raised:
        print(f"testbed: {signal.Signals(signum).name} again; still shutting the nodes down",
              file=sys.stderr, flush=True)
        return
    _raised.append(signum)
    if _held:
        _deferred.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """Route the stop signals through ``Interrupted`` (main thread only)."""
    _raised.clear()
    _deferred.clear()
    for sig in HANDLED:
        signal.signal(sig, _handler)


@contextmanager
def held() -> Iterator[None]:
    """Hold the stop signals for a step that must not be cut in two.

    ``Interrupted`` raised inside ``threading.Thread.start()`` leaves a thread
    that may run but cannot be joined ("cannot join thread before it is
    started"), and the teardown then failed instead of stopping the nodes
    (CI saw this once). A signal that arrives meanwhile is raised when the
    step ends. (Masking the signal would not do: the kernel hands it to any
    thread that does not mask it, and Python runs the handler in the main
    thread all the same.) A QMP command is such a step too: cut in two, the
    QMP client keeps the unanswered request, and the teardown's ``quit`` was
    then refused ("ID 'None' is in-use"), so the harness exited 1 with its
    nodes left to the parent-death signal (CI saw this once as well).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # the handler runs in the main thread only: nothing to hold here
        return
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()
    if not _held and _deferred:
        raise Interrupted(_deferred.pop())


def exit_status(exc: KeyboardInterrupt) -> int:
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    return 128 + signum


def name_of(exc: KeyboardInterrupt) -> str:
    return signal.Signals(exit_status(exc) - 128).name
