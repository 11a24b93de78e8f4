"""Exit statuses of the ``testbed`` command.

``testbed run`` passes the guest command's status through, so the harness's
own statuses must not be ones a command commonly returns. They follow the
convention of wrappers like timeout(1), env(1) and chroot(1)::

    0     success (run: the guest command's status, whatever it is)
    1     what was measured failed: a workload's self-check (ok=0), a failed
          benchmark boot, a failing suite cell, a regression found by compare
    124   the guest command or workload did not finish within --timeout
    125   the invocation was refused before anything started (bad argument,
          bad suite file, unusable store); nothing ran
    126   the harness or the system under test broke: build failed, a node
          died, the guest panicked or did not boot
    128+N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP); every
          node was shut down first

A guest command that itself exits 124, 125 or 126 is indistinguishable by
status alone; the harness then also prints a ``testbed: error:`` line on
stderr, the guest never does.
"""

from __future__ import annotations

OK = 0
FAILED = 1
TIMEOUT = 124
USAGE = 125
BROKEN = 126
SIGNAL_BASE = 128
