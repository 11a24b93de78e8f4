"""Which kernel object sits at a guest-physical address, asked of the running guest.

The guest kernel's image (text, rodata, data, bss) is one physically
contiguous block, whose place ``/proc/iomem`` gives ("Kernel code", ...);
``/proc/kallsyms`` gives each symbol's virtual address, and ``_text`` is the
image's first byte. An address inside the image is then ``_text + (gpa -
start)``, and the symbol at or below it names the object. KASLR moves the
image at every boot, so the guest that stalled is the one asked.

Anything outside the image (per-CPU areas, slab objects, page tables, the
page cache) is not named: that would need the guest's own debugging tools.
"""

from __future__ import annotations

import re
from typing import Any

from testbed.cluster import Cluster
from testbed.errors import TestbedError

_IOMEM = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Kernel (code|rodata|data|bss)$", re.M)
_WINDOW_HEX = 11  # kallsyms lines sharing the first 11 hex digits: a 1 MiB window


def kernel_symbols(cluster: Cluster, addresses: list[int]) -> dict[int, str]:
    """Name each guest-physical address inside the kernel image, e.g.
    ``{0xa207040: "data: jiffies+0x0"}``; others are left out. Empty if the
    guest hides its kernel addresses (kptr_restrict) or cannot be asked."""
    try:
        iomem = cluster.run("grep ' : Kernel ' /proc/iomem").output
        text_line = cluster.run("grep ' _text$' /proc/kallsyms").output.split()
    except TestbedError:
        return {}
    sections = [(int(a, 16), int(b, 16), kind) for a, b, kind in _IOMEM.findall(iomem)]
    if not sections or not text_line or int(text_line[0], 16) == 0:
        return {}
    text = int(text_line[0], 16)
    start = min(a for a, _, _ in sections)
    names: dict[int, str] = {}
    windows: dict[str, list[tuple[int, str]]] = {}  # one guest command per 1 MiB window
    for addr in addresses:
        kind = next((k for a, b, k in sections if a <= addr <= b), None)
        if kind is None:
            continue
        virt = text + (addr - start)
        window = f"{virt:016x}"[:_WINDOW_HEX]
        if window not in windows:
            try:
                out = cluster.run(f"grep '^{window}' /proc/kallsyms").output
            except TestbedError:
                continue
            windows[window] = [(int(f[0], 16), f[2]) for f in
                               (line.split() for line in out.splitlines())
                               if len(f) >= 3 and re.fullmatch(r"[0-9a-f]{16}", f[0])]
        below = [s for s in windows[window] if s[0] <= virt]
        if below:
            at, name = max(below)
            names[addr] = f"{kind}: {name}+{virt - at:#x}"
        else:
            names[addr] = f"{kind}: (no symbol in its 1 MiB)"
    return names


def name_hottest(cluster: Cluster, pages: list[dict[str, Any]]) -> None:
    """Add ``"kernel"`` to each hottest page inside the kernel image: the
    symbol at each of its hot lines (or at its start, if no line is known),
    e.g. ``"+0x9c0 data: jiffies_64+0x0; +0xa40 data: jiffies_seq+0x0"``."""
    wanted = {id(p): [int(p["offset"]) + int(x) for x in (p.get("lines") or [0])]
              for p in pages}
    names = kernel_symbols(cluster, [a for addrs in wanted.values() for a in addrs])
    for page in pages:
        named = [f"+{a - int(page['offset']):#x} {names[a]}" for a in wanted[id(page)]
                 if a in names]
        if named:
            page["kernel"] = "; ".join(named)
