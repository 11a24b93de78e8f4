"""Hand a person the guest's console: raw terminal relay, Ctrl-] to leave."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

from testbed import up_commands
from testbed.cluster import Cluster

ESCAPE = b"\x1d"  # Ctrl-]


def _at_first_prompt(text: bytes) -> bool:
    """The guest's /init is up and its shell has printed a prompt (maybe a terminal probe)."""
    up = text.find(b"SDS-GUEST-UP")
    return up >= 0 and text[up:].rstrip().removesuffix(b"\x1b[6n").endswith(b"#")


def _read_line(stdin_fd: int, pending: bytearray) -> str | None:
    """One line typed in raw mode (after what ``pending`` holds: input read
    with the Ctrl-]), echoed; None on Ctrl-] or end of input."""
    buf = bytearray()
    while True:
        if pending:
            data = bytes(pending[:1])
            del pending[:1]
        else:
            data = os.read(stdin_fd, 1)
        if not data or data == ESCAPE:
            return None
        if data in (b"\r", b"\n"):
            os.write(sys.stdout.fileno(), b"\r\n")
            return buf.decode(errors="replace")
        if data in (b"\x7f", b"\b"):
            if buf:
                buf.pop()
                os.write(sys.stdout.fileno(), b"\b \b")
            continue
        buf += data
        os.write(sys.stdout.fileno(), data)


def _command_mode(cluster: Cluster, stdin_fd: int, pending: bytearray) -> bool:
    """Ctrl-]: the harness's commands (testbed/up_commands.py) until an empty
    line. False: detach (quit, Ctrl-] again, or end of input)."""
    out = sys.stdout.fileno()
    os.write(out, b"\r\n[up] " + up_commands.HELP.encode() + b"\r\n")
    while True:
        os.write(out, b"[up] hk> ")
        line = _read_line(stdin_fd, pending)
        if line is None or line.strip() in ("quit", "q", "exit"):
            return False
        if not line.strip():
            os.write(out, b"[up] back to the console\r\n")
            return True
        reply = up_commands.run_safely(cluster, line)
        os.write(out, reply.replace("\n", "\r\n").encode() + b"\r\n")


def attach(cluster: Cluster) -> None:
    """Relay stdin/stdout to node 0's ttyS0 until Ctrl-], stdin EOF or guest exit."""
    console = cluster.nodes[0].console
    spawn = console.spawn
    assert spawn is not None
    guest_fd = spawn.child_fd
    stdin_fd = sys.stdin.fileno()
    is_tty = os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if is_tty else None
    if is_tty:
        print("[up] attached to the guest console; Ctrl-] gives the harness's commands "
              "(evacuate, health, vcpus, status; quit detaches and shuts the guest down)",
              file=sys.stderr, flush=True)
        tty.setraw(stdin_fd)
    # Type-ahead before the shell has started could be swallowed by its line
    # editor's terminal probe; wait for the first prompt (briefly).
    deadline = time.monotonic() + 30
    while not _at_first_prompt(console.text()) and time.monotonic() < deadline:
        if not any(n.alive() for n in cluster.nodes):
            break
        time.sleep(0.05)
    stdin_open = True
    try:
        while True:
            fds = [guest_fd] + ([stdin_fd] if stdin_open else [])
            r, _, _ = select.select(fds, [], [], 0.25)
            if guest_fd in r:
                try:
                    data = os.read(guest_fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)
            if stdin_fd in r:
                data = os.read(stdin_fd, 4096)
                if not data:
                    stdin_open = False  # piped input finished; keep showing output
                    continue
                if ESCAPE in data:
                    before, after = data.split(ESCAPE, 1)
                    console.write(before)
                    if not _command_mode(cluster, stdin_fd, bytearray(after)):
                        return
                    continue
                console.write(data)
            if not any(n.alive() for n in cluster.nodes) and not r:
                return
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
