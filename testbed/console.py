"""A guest serial port: always drained into a log, driven with pexpect.

QEMU exposes each serial port as a Unix socket. A drain thread reads it as
fast as the guest writes (an unread console stalls the guest), appends to the
log file, and forwards into a pipe that a ``pexpect.fdpexpect.fdspawn`` reads.
The forwarding queue is unbounded in practice so the drain never blocks on a
slow reader; writes go straight to the socket.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from testbed import signals
from testbed.errors import GuestError


class Console:
    def __init__(self, socket_path: Path, log_path: Path, name: str) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.name = name
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._text = bytearray()  # everything read, for failure-pattern scans
        self.closed = threading.Event()  # the guest side went away
        self._pipe_r, self._pipe_w = os.pipe()
        os.set_blocking(self._pipe_w, False)
        self.spawn: pexpect.fdpexpect.fdspawn | None = None

    def connect(self, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(str(self.socket_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    sock.close()
                    raise GuestError(f"{self.name}: console socket {self.socket_path} "
                                     f"did not appear within {timeout:.0f}s") from None
                time.sleep(0.02)
        self._sock = sock
        self.spawn = pexpect.fdpexpect.fdspawn(self._pipe_r, timeout=5, encoding=None)
        thread = threading.Thread(target=self._drain, name=f"drain-{self.name}", daemon=True)
        with signals.held():
            thread.start()
            self._thread = thread

    def _drain(self) -> None:
        assert self._sock is not None
        pending: collections.deque[bytes] = collections.deque()
        with self.log_path.open("ab", buffering=0) as log:
            while not self._stop.is_set():
                wfds = [self._pipe_w] if pending else []
                r, _, _ = select.select([self._sock], wfds, [], 0.2)
                if r:
                    try:
                        data = self._sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    log.write(data)
                    with self._lock:
                        self._text += data
                    pending.append(data)
                if pending:
                    self._flush(pending)
        self.closed.set()
        self._flush(pending)
        try:
            os.close(self._pipe_w)
        except OSError:
            pass

    def _flush(self, pending: collections.deque[bytes]) -> None:
        while pending:
            chunk = pending[0]
            try:
                n = os.write(self._pipe_w, chunk)
            except BlockingIOError:
                return
            except OSError:
                pending.clear()
                return
            if n < len(chunk):
                pending[0] = chunk[n:]
                return
            pending.popleft()

    def text(self, since: int = 0) -> bytes:
        with self._lock:
            return bytes(self._text[since:])

    def size(self) -> int:
        with self._lock:
            return len(self._text)

    def write(self, data: bytes) -> None:
        if self._sock is None:
            raise GuestError(f"{self.name}: console is not connected")
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise GuestError(f"{self.name}: console write failed: {e}") from e

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            os.close(self._pipe_r)
        except OSError:
            pass
