"""Attaching to a node's QMP socket (testbed/qmp.py), against a socket that is not QEMU."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from testbed.qmp import Qmp, _refused

GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""},
                    "capabilities": []}}


def _serve_one(sock: socket.socket, listen_after: float, started: threading.Event) -> None:
    """Listen late, as QEMU can after binding, then answer the greeting and qmp_capabilities."""
    started.wait(listen_after)
    sock.listen(1)
    conn, _ = sock.accept()
    with conn:
        conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
        buf = b""
        while True:  # the client sends a command without a newline after it
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
            try:
                msg = json.loads(buf)
                break
            except ValueError:
                continue
        assert msg["execute"] == "qmp_capabilities"
        reply = {"return": {}, **({"id": msg["id"]} if "id" in msg else {})}
        conn.sendall(json.dumps(reply).encode() + b"\r\n")
        while conn.recv(4096):  # until the client goes
            pass


def _bound(tmp_path: Path) -> tuple[socket.socket, Path]:
    path = tmp_path / "n0.qmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # the file exists; connecting is refused until listen()
    return sock, path


def test_a_socket_that_listens_a_moment_after_it_appears_is_attached(tmp_path: Path) -> None:
    sock, path = _bound(tmp_path)
    never = threading.Event()
    server = threading.Thread(target=_serve_one, args=(sock, 0.3, never), daemon=True)
    server.start()
    qmp = Qmp(path, tmp_path / "qmp.log", "node0")
    qmp.connect(timeout=5.0)
    assert "QMP" in (tmp_path / "qmp.log").read_text()
    qmp.close()
    sock.close()


def test_a_socket_that_never_listens_fails_in_bounded_time(tmp_path: Path) -> None:
    sock, path = _bound(tmp_path)
    qmp = Qmp(path, tmp_path / "qmp.log", "node0")
    with pytest.raises(Exception) as e:
        qmp.connect(timeout=1.0, refused_for=0.3)
    assert _refused(e.value), repr(e.value)
    sock.close()
