"""Progress lines for long steps, on stderr so stdout stays for results."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``[step] message`` lines; overwrites in place on a terminal."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._tty = sys.stderr.isatty()
        self._last_inline = 0.0
        self._inline_open = False

    def step(self, name: str, message: str) -> None:
        if self.quiet:
            return
        self._close_inline()
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    def update(self, name: str, message: str) -> None:
        """A frequent status (e.g. compile progress): throttled, in place on a tty."""
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_inline < (0.2 if self._tty else 15.0):
            return
        self._last_inline = now
        if self._tty:
            print(f"\r\033[K[{name}] {message}", end="", file=sys.stderr, flush=True)
            self._inline_open = True
        else:
            print(f"[{name}] {message}", file=sys.stderr, flush=True)

    def _close_inline(self) -> None:
        if self._inline_open:
            print(file=sys.stderr, flush=True)
            self._inline_open = False
