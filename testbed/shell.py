"""Commands in the guest over the control console (ttyS1).

The guest side is a non-interactive busybox shell on a raw, echo-less tty, so
output comes back byte for byte. Each command is sent base64-encoded (so any
quoting or newline survives) between markers that carry a sequence number.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pexpect

from testbed.console import Console
from testbed.errors import GuestError, GuestTimeout

READY_RE = re.compile(rb"SDS-READY nproc=(\d+)\n")
POLL = 0.25  # how often a wait checks that every node is alive and the guest healthy


@dataclass(frozen=True)
class CommandResult:
    command: str
    output: str
    status: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


class GuestShell:
    def __init__(self, console: Console, health_check: Callable[[], None]) -> None:
        self.console = console
        self.health_check = health_check
        self._seq = 0
        self._busy = False  # a timed-out command may still be running

    def _expect(self, pattern: re.Pattern[bytes], timeout: float, what: str) -> re.Match[bytes]:
        spawn = self.console.spawn
        if spawn is None:
            raise GuestError(f"{self.console.name}: not connected")
        deadline = time.monotonic() + timeout
        while True:
            self.health_check()
            try:
                spawn.expect(pattern, timeout=POLL)
                match = spawn.match
                assert isinstance(match, re.Match)
                return match
            except pexpect.TIMEOUT:
                if time.monotonic() > deadline:
                    raise GuestTimeout(f"guest did not {what} within {timeout:.0f}s",
                                       f"see {self.console.log_path}") from None
            except pexpect.EOF:
                self._blame_a_dead_node()
                raise GuestError(f"{self.console.name}: console closed while waiting to {what}",
                                 f"see {self.console.log_path}") from None

    def _blame_a_dead_node(self) -> None:
        """Raise the health check's error if a node died, after a short grace.

        The console closes a moment before the dead process can be reaped: give
        it a little time so the error names the real cause, not the socket.
        """
        grace = time.monotonic() + 3
        while time.monotonic() < grace:
            self.health_check()
            time.sleep(0.05)

    def wait_ready(self, timeout: float) -> int:
        """Wait for the guest's ready line; return the vCPU count it reports."""
        m = self._expect(READY_RE, timeout, "reach its shell")
        return int(m.group(1))

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        if self._busy:
            raise GuestError("an earlier command timed out and may still be running",
                             "restart the cluster")
        self._seq += 1
        n = self._seq
        encoded = base64.b64encode(command.encode()).decode()
        line = (f"printf '\\n__SDS_B_{n}__\\n'; "
                f"( eval \"$(echo {encoded} | base64 -d)\" ) </dev/null 2>&1; "
                f"printf '\\n__SDS_E_{n}_%d__\\n' $?\n")
        t0 = time.monotonic()
        self._busy = True
        self.health_check()
        try:
            self.console.write(line.encode())
        except GuestError:
            self._blame_a_dead_node()
            raise
        self._expect(re.compile(rb"\n__SDS_B_%d__\n" % n), timeout, "start the command")
        m = self._expect(re.compile(rb"\n__SDS_E_%d_(\d+)__\n" % n), timeout,
                         f"finish {command[:60]!r}")
        self._busy = False
        spawn = self.console.spawn
        assert spawn is not None
        before = spawn.before
        assert isinstance(before, bytes)
        return CommandResult(command, before.decode(errors="replace"), int(m.group(1)),
                             time.monotonic() - t0)
