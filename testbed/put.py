"""Files from the host in the guest: ``--put HOSTFILE[:GUESTPATH]``.

The guest's root is the initramfs. Linux unpacks every cpio archive that is
concatenated in the initrd, in order, so a run that brings its own files boots
the cached image followed by a second, small archive holding them; the cached
image itself never changes. A file lands at GUESTPATH (absolute), or under
/opt/put/ by its own name; it keeps its executable bit.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from testbed import cpio
from testbed.errors import ConfigError

DEFAULT_DIR = PurePosixPath("/opt/put")


@dataclass(frozen=True)
class Put:
    host: Path
    guest: PurePosixPath


def parse(text: str) -> Put:
    """``HOSTFILE`` or ``HOSTFILE:GUESTPATH``; the host file must be a regular file."""
    host, guest = text, ""
    if ":" in text:
        head, _, tail = text.rpartition(":")
        if tail.startswith("/"):
            host, guest = head, tail
    path = Path(host)
    if not path.is_file():
        raise ConfigError(f"--put {text}: {host} is not a file on this host",
                          "give an existing file, e.g. --put ./prog:/usr/local/bin/prog")
    target = PurePosixPath(guest) if guest else DEFAULT_DIR / path.name
    if not target.is_absolute() or ".." in target.parts or target == PurePosixPath("/"):
        raise ConfigError(f"--put {text}: {guest} is not an absolute path in the guest",
                          "write it as HOSTFILE:/absolute/path")
    return Put(path, target)


def archive(puts: list[Put]) -> bytes:
    """A newc archive with the files and every directory above them."""
    entries: dict[str, cpio.Entry] = {}
    for p in puts:
        for parent in reversed(p.guest.parents):
            rel = str(parent).lstrip("/")
            if rel and rel not in entries:
                entries[rel] = cpio.Entry(rel, stat.S_IFDIR | 0o755)
        data = p.host.read_bytes()
        mode = 0o755 if os.access(p.host, os.X_OK) else 0o644
        entries[str(p.guest).lstrip("/")] = cpio.Entry(str(p.guest).lstrip("/"),
                                                       stat.S_IFREG | mode, data)
    out = io.BytesIO()
    cpio.write(out, list(entries.values()))
    return out.getvalue()


def initrd_with(base: Path, puts: list[Put], out: Path) -> Path:
    """``out``: the image ``base`` followed by an archive of ``puts``."""
    data = base.read_bytes()
    pad = b"\0" * ((4 - len(data) % 4) % 4)  # the next archive starts 4-byte aligned
    out.write_bytes(data + pad + archive(puts))
    return out
