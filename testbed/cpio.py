"""A deterministic ``newc`` cpio writer for the initramfs.

Writing the archive ourselves (instead of calling cpio) lets us fix every
timestamp, owner and inode number, and create device nodes without root, so
the same inputs always give the same bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    path: str  # relative, no leading slash
    mode: int  # full st_mode including the file type bits
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, mode: int, nlink: int, filesize: int, rdev: tuple[int, int],
            namesize: int) -> bytes:
    fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev[0], rdev[1], namesize, 0]
    return b"070701" + b"".join(f"{v:08X}".encode() for v in fields)


def write(out: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` sorted by path (parents before children) and the trailer."""
    for ino, e in enumerate(sorted(entries, key=lambda e: e.path), start=1):
        name = e.path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        hdr = _header(ino, e.mode, nlink, len(e.data), e.rdev, len(name))
        out.write(hdr + name + _pad(len(hdr) + len(name)))
        out.write(e.data + _pad(len(e.data)))
    name = b"TRAILER!!!\0"
    hdr = _header(0, 0, 1, 0, (0, 0), len(name))
    out.write(hdr + name + _pad(len(hdr) + len(name)))
