"""Opening a page in a real headless Chromium (Debian's package): its DOM after the
page's own scripts ran, its console errors, and a screenshot."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=20000"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise AssertionError("Chromium is not installed: run 'make setup' (tools/setup-system.sh "
                             "installs Debian's chromium package)")
    return found


@dataclass(frozen=True)
class Page:
    dom: str
    console_errors: list[str]
    body: dict[str, str]  # the <body> element's attributes


def open_page(path: Path, timeout: float = 120) -> Page:
    """Load ``path`` with a fresh profile; return its DOM and the console errors logged."""
    with tempfile.TemporaryDirectory(prefix="sds-chromium-") as profile:
        r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}",
                            "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri()],
                           capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise AssertionError(f"chromium exited {r.returncode}: {r.stderr[-2000:]}")
    errors = [line for line in r.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line)]
    body = re.search(r"<body([^>]*)>", r.stdout)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    return Page(r.stdout, errors, attrs)


def screenshot(path: Path, out: Path, width: int = 1280, height: int = 2400,
               timeout: float = 120) -> Path:
    with tempfile.TemporaryDirectory(prefix="sds-chromium-") as profile:
        r = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={width},{height}", f"--screenshot={out}",
                            path.as_uri()], capture_output=True, text=True, timeout=timeout,
                           check=False)
    if r.returncode != 0 or not out.is_file():
        raise AssertionError(f"chromium made no screenshot (exit {r.returncode}): {r.stderr[-2000:]}")
    return out


def png_ink(path: Path) -> float:
    """Fraction of the image's filtered scanline bytes that are not zero.

    A blank page compresses to rows of zeros after PNG's per-row filters; a page
    with text and plots does not. Enough to tell "drew something" from "drew nothing".
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert width and height and raw
    return sum(1 for b in raw if b) / len(raw)
