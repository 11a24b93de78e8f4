"""QMP for one node: every command and event wait has a deadline, and every
exchange is written to a per-node transcript for post-mortems."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from testbed import signals
from testbed.errors import GuestError, GuestTimeout

# Every legacy monitor created in a thread runs on that thread's one asyncio loop, so
# threads (the demo's vCPU mover and the main thread's statistics queries, say) must
# take turns on all monitors, not just on one.
_LOOP_LOCK = threading.RLock()

# qemu.qmp logs at ERROR when QEMU closes the socket under its reader task, as
# every node does on `quit`; each real failure reaches the caller as a
# GuestError that names the node and the command, so the library's own log
# lines only add noise to a clean teardown.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


def _refused(e: BaseException | None) -> bool:
    """Whether ``e`` is, or wraps, a refused connection."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, ConnectionRefusedError):
            return True
        e = getattr(e, "exc", None) or e.__cause__
        seen += 1
    return False


class QmpError(GuestError):
    """QEMU answered a command with an error."""


class Qmp:
    def __init__(self, socket_path: Path, transcript: Path, name: str,
                 on_hang: Callable[[], str] | None = None) -> None:
        self.socket_path = socket_path
        self.name = name
        # Called once, on the first command that gets no answer: the process is
        # killed soon after, and with it every clue (see hangdump).
        self._on_hang = on_hang
        self._transcript = transcript.open("a", buffering=1)
        self._mon: QEMUMonitorProtocol | None = None
        self._t0 = time.monotonic()

    def _log(self, direction: str, obj: object) -> None:
        self._transcript.write(f"{time.monotonic() - self._t0:10.3f} {direction} "
                               f"{json.dumps(obj, sort_keys=True)}\n")

    def connect(self, timeout: float = 10.0, refused_for: float = 5.0) -> None:
        """Attach and negotiate.  A refusal is retried for ``refused_for`` seconds:
        QEMU binds its socket (the file appears) a moment before it listens, and
        once in about 50 boots the harness knocked in between (ECONNREFUSED)."""
        deadline = time.monotonic() + refused_for
        while True:
            try:
                with signals.held(), _LOOP_LOCK:
                    mon = QEMUMonitorProtocol(str(self.socket_path), nickname=self.name)
                    mon.settimeout(timeout)
                    greeting = mon.connect(negotiate=True)
                break
            except Exception as e:  # qemu.qmp wraps the OSError in its own types
                if not _refused(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._log("<", greeting)
        self._mon = mon

    def command(self, name: str, /, timeout: float = 10.0, **args: Any) -> Any:
        """Run one command; return its ``return`` value or raise QmpError."""
        if self._mon is None:
            raise GuestError(f"{self.name}: QMP is not connected")
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        try:
            # a stop signal lands after the answer, not inside the client (signals.held)
            with signals.held(), _LOOP_LOCK:
                self._log(">", msg)
                self._mon.settimeout(timeout)
                resp = self._mon.cmd_obj(msg)
        except TimeoutError as e:
            hint = "the node is hung; see its logs"
            if self._on_hang is not None:
                on_hang, self._on_hang = self._on_hang, None
                hint += f" ({on_hang()})"
            raise GuestTimeout(f"{self.name}: QMP {name} got no answer in {timeout:.0f}s",
                               hint) from e
        except (QMPError, OSError, EOFError) as e:
            raise GuestError(f"{self.name}: QMP connection lost during {name}: {e!r}",
                             "the node exited; see its logs") from e
        self._log("<", resp)
        if "error" in resp:
            err = resp["error"]
            raise QmpError(f"{self.name}: QMP {name} failed: {err.get('desc', err)}")
        return resp.get("return")

    def wait_event(self, name: str | tuple[str, ...], timeout: float,
                   match: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Wait for an event called ``name`` (or any of several) whose data ``match``es.

        Events already received count too, oldest first; skipped ones are only
        logged. Issue the command that causes the event after calling
        ``drain_events`` if older events of the same kind must not count.
        """
        if self._mon is None:
            raise GuestError(f"{self.name}: QMP is not connected")
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestTimeout(f"{self.name}: no QMP event {' or '.join(names)} "
                                   f"within {timeout:.0f}s")
            try:
                with _LOOP_LOCK:  # short slices, so commands of other threads get their turn
                    ev = self._mon.pull_event(wait=min(left, 0.2))
            except TimeoutError:
                continue
            if ev is None:
                continue
            self._log("<", ev)
            if ev.get("event") in names and (match is None or match(ev.get("data", {}))):
                return ev

    def drain_events(self) -> None:
        """Read (and log) the events received so far, and forget them."""
        if self._mon is None:
            raise GuestError(f"{self.name}: QMP is not connected")
        with _LOOP_LOCK:  # pulling runs the shared loop too (the demo's mover races this)
            while (ev := self._mon.pull_event(wait=False)) is not None:
                self._log("<", ev)

    def close(self) -> None:
        if self._mon is not None:
            try:
                with _LOOP_LOCK:
                    self._mon.close()
            except Exception:  # closing a half-dead socket must not mask the real error
                pass
            self._mon = None
        self._transcript.close()
