"""testbed run --put: a host file reaches the guest where it was asked to go,
executable if it was; bad --put arguments are refused before anything builds."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from testbed import put
from testbed.errors import ConfigError


def _entries(archive: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive (a reader independent of the writer)."""
    out: dict[str, tuple[int, bytes]] = {}
    f = io.BytesIO(archive)
    while True:
        hdr = f.read(110)
        assert hdr[:6] == b"070701"
        fields = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = f.read(namesize)[:-1].decode()
        f.read((4 - (110 + namesize) % 4) % 4)
        data = f.read(size)
        f.read((4 - size % 4) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data)


def test_a_put_file_and_its_directories_are_in_the_archive(tmp_path: Path) -> None:
    prog = tmp_path / "prog.sh"
    prog.write_text("echo hi\n")
    prog.chmod(0o755)
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x00\x01\x02")
    arc = _entries(put.archive([put.parse(f"{prog}:/usr/local/bin/prog"), put.parse(str(data))]))
    assert arc["usr/local/bin/prog"] == (0o100755, b"echo hi\n")
    assert arc["opt/put/data.bin"] == (0o100644, b"\x00\x01\x02")
    assert arc["usr/local/bin"][0] == 0o40755 and arc["opt/put"][0] == 0o40755


def test_bad_put_arguments_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    for bad, word in ((str(tmp_path / "missing"), "is not a file"),
                      (str(tmp_path), "is not a file"),
                      (f"{f}:/a/../etc/passwd", "not an absolute path"),
                      (f"{f}:/", "not an absolute path")):
        with pytest.raises(ConfigError, match=word):
            put.parse(bad)
    assert put.parse(f"{f}:/x/y").guest == PurePosixPath("/x/y")


def test_cli_refuses_a_missing_put_file_before_building(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", "--put",
                        str(tmp_path / "nope"), "--", "true"],
                       capture_output=True, text=True, env={**os.environ, "SDS_CACHE": str(tmp_path / "c")},
                       check=False)
    assert r.returncode != 0 and "is not a file on this host" in r.stderr
    assert not (tmp_path / "c" / "qemu").exists()  # nothing was built


@pytest.mark.boot
def test_a_put_program_runs_in_the_guest(tmp_path: Path) -> None:
    prog = tmp_path / "hello.sh"
    prog.write_text("#!/bin/sh\necho \"hello from $(basename $0) $*\"\n")
    prog.chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "-q", "run", "--no-store",
                        "--run-dir", str(tmp_path / "run"), "--put", f"{prog}:/usr/local/bin/hello",
                        "--", "/usr/local/bin/hello a b"],
                       capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from hello a b\n"
