"""The initramfs writer is deterministic and produces a valid newc archive."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from testbed import cpio


def _archive() -> bytes:
    entries = [
        cpio.Entry("bin", stat.S_IFDIR | 0o755),
        cpio.Entry("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        cpio.Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        cpio.Entry("dev", stat.S_IFDIR | 0o755),
        cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ]
    buf = io.BytesIO()
    cpio.write(buf, list(reversed(entries)))
    return buf.getvalue()


def test_same_entries_give_same_bytes() -> None:
    assert _archive() == _archive()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_reads_it_back(tmp_path: Path) -> None:
    out = subprocess.run(["cpio", "-it", "--quiet"], input=_archive(), capture_output=True,
                         check=True)
    assert out.stdout.decode().split() == ["bin", "bin/hello", "bin/sh", "dev", "dev/console"]
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=_archive(),
                   cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
