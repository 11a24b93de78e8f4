"""Which kernel object sits at a guest-physical address, asked of the running guest.

Three kinds of memory are named; KASLR moves all three at every boot, so the
guest that stalled is the one asked, once per boot (``GuestMap.of``):

* The kernel's image (text, rodata, data, bss) is one physically contiguous
  block, whose place ``/proc/iomem`` gives ("Kernel code", ...);
  ``/proc/kallsyms`` gives each symbol's virtual address, and ``_text`` is the
  image's first byte. An address inside the image is then ``_text + (gpa -
  start)``, and the symbol at or below it names the object:
  ``data: jiffies_64+0x0``.
* Each CPU's per-CPU area (its run queue, its IPI queue, its timers): the
  first chunk is embedded in the direct map, one unit per CPU, at
  ``__per_cpu_offset[cpu]``; kallsyms lists the static per-CPU variables at
  their offsets into a unit (small addresses). ``percpu cpu1:
  call_single_queue+0x0``; past the static variables, ``percpu cpu1: dynamic
  +0x...``.
* The ``struct page`` array (vmemmap): 64 bytes per guest page, written when
  a page is allocated, freed or mapped, and by SLUB for the slab it holds.
  Its 2 MiB blocks are found by walking the kernel's page table
  (``init_top_pgt``). ``struct page of gpa 0x1a2b3000``.

The values in guest memory (the offsets, the table) are read with the
monitor's ``xp``, which reads guest-physical memory as the node sees it
(coherently, like any other access). Anything else (slab objects, page
tables, the page cache) is not named: that would need the guest's own
debugging tools.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

from testbed.cluster import Cluster
from testbed.errors import TestbedError

_IOMEM = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) : Kernel (code|rodata|data|bss)$", re.M)
_WINDOW_HEX = 11  # kallsyms lines sharing the first 11 hex digits: a 1 MiB window
_PERCPU = re.compile(r"percpu: Embedded \d+ pages/cpu s(\d+) r(\d+) d(\d+) u(\d+)")
_STRUCT_PAGE = 64  # sizeof(struct page) on x86-64
_BLOCK = 2 << 20  # vmemmap is mapped in 2 MiB pages
_ADDR = (1 << 52) - 1 & ~0xFFF  # a page-table entry's address bits


@dataclass
class _Image:
    start: int  # guest-physical address of the image's first byte
    text: int  # its virtual address (_text)
    sections: list[tuple[int, int, str]]


@dataclass
class _PerCpu:
    bases: list[int]  # guest-physical address of each CPU's unit
    size: int  # bytes named per unit: static, reserved and dynamic parts
    static: int  # bytes of static variables at the start of a unit
    symbols: list[tuple[int, str]]  # (offset, name), sorted


@dataclass
class GuestMap:
    """What one booted guest keeps where; built from the guest, once per boot."""

    cluster: weakref.ref[Cluster]  # not the cluster: _MAPS holds this map by it
    image: _Image | None = None
    percpu: _PerCpu | None = None
    vmemmap: dict[int, int] = field(default_factory=dict)  # block gpa -> its first pfn
    _windows: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    _symbols: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cluster: Cluster) -> GuestMap:
        """The map of this cluster's guest (built at the first call)."""
        found = _MAPS.get(cluster)
        if found is None:
            found = _MAPS[cluster] = cls(weakref.ref(cluster))
            found._build()
        return found

    # ---- building ----------------------------------------------------------

    def _live(self) -> Cluster:
        cluster = self.cluster()
        if cluster is None:
            raise TestbedError("the cluster this map was made of is gone")
        return cluster

    def _run(self, command: str) -> str:
        return self._live().run(command).output

    def _build(self) -> None:
        try:
            iomem = self._run("grep -E ' : (Kernel |System RAM$)' /proc/iomem")
            wanted = "_text|__per_cpu_offset|page_offset_base|vmemmap_base|init_top_pgt"
            for line in self._run(f"grep -E ' ({wanted})$' /proc/kallsyms").splitlines():
                f = line.split()
                if len(f) == 3 and re.fullmatch(r"[0-9a-f]{16}", f[0]):
                    self._symbols[f[2]] = int(f[0], 16)
        except TestbedError:
            return
        sections = [(int(a, 16), int(b, 16), kind) for a, b, kind in _IOMEM.findall(iomem)]
        text = self._symbols.get("_text", 0)
        if not sections or not text:  # no image, or kptr_restrict hides the addresses
            return
        self.image = _Image(min(a for a, _, _ in sections), text, sections)
        ram = [int(b, 16) for b in re.findall(r"^[0-9a-f]+-([0-9a-f]+) : System RAM$", iomem, re.M)]
        try:
            self._build_percpu()
            if ram:
                self._build_vmemmap(max(ram) + 1)
        except (TestbedError, ValueError, KeyError):
            pass  # the image is still named; the rest stays unnamed

    def _phys_of_image(self, virt: int) -> int:
        assert self.image is not None
        return self.image.start + (virt - self.image.text)

    def _xp(self, gpa: int, count: int = 1) -> list[int]:
        """count 8-byte words of guest-physical memory at gpa."""
        node = self._live().live_nodes[0]
        args: dict[str, Any] = {"command-line": f"xp /{count}gx {gpa:#x}"}
        out = node.qmp.command("human-monitor-command", **args)
        words = [int(w, 16) for line in str(out).splitlines() if ":" in line
                 for w in line.split(":", 1)[1].split()]
        if len(words) != count:
            raise ValueError(f"xp {gpa:#x}: {out!r}")
        return words

    def _build_percpu(self) -> None:
        cpus = _cpu_count(self._run("cat /sys/devices/system/cpu/possible"))
        offsets = self._xp(self._phys_of_image(self._symbols["__per_cpu_offset"]), cpus)
        direct = self._xp(self._phys_of_image(self._symbols["page_offset_base"]))[0]
        symbols = sorted((int(f[0], 16), f[2]) for f in
                         (line.split() for line in self._run(
                             "grep '^00000000000' /proc/kallsyms").splitlines())
                         if len(f) >= 3)
        # only an embedded first chunk sits in the direct map, where an offset
        # is a physical address; it is laid out as static, reserved, dynamic
        layout = _PERCPU.search(self._run("dmesg | grep 'percpu: Embedded' || true"))
        if not symbols or not layout:
            return
        static = int(layout.group(1))
        size = static + int(layout.group(2)) + int(layout.group(3))
        self.percpu = _PerCpu([o - direct for o in offsets], size, static, symbols)

    def _walk(self, virt: int) -> int | None:
        """The guest-physical address of a kernel virtual address, by the
        kernel's own 4-level page table."""
        table = self._phys_of_image(self._symbols["init_top_pgt"])
        for shift in (39, 30, 21, 12):
            entry = self._xp(table + ((virt >> shift) & 511) * 8)[0]
            if not entry & 1:
                return None
            if shift == 12 or (shift < 39 and entry & 0x80):  # a leaf: 4 KiB, 2 MiB or 1 GiB
                return (entry & _ADDR & ~((1 << shift) - 1)) + (virt & ((1 << shift) - 1))
            table = entry & _ADDR
        return None

    def _build_vmemmap(self, top: int) -> None:
        """The blocks of struct pages for guest memory below top (the end of
        its highest RAM); those for holes are not mapped."""
        base = self._xp(self._phys_of_image(self._symbols["vmemmap_base"]))[0]
        for block in range(0, ((top >> 12) * _STRUCT_PAGE + _BLOCK - 1) // _BLOCK):
            gpa = self._walk(base + block * _BLOCK)
            if gpa is None:
                continue
            self.vmemmap[gpa & ~(_BLOCK - 1)] = block * (_BLOCK // _STRUCT_PAGE)

    # ---- naming ------------------------------------------------------------

    def name(self, gpa: int) -> str | None:
        """The kernel object at a guest-physical address, or None."""
        return self._in_image(gpa) or self._in_percpu(gpa) or self._in_vmemmap(gpa)

    def _in_image(self, gpa: int) -> str | None:
        if self.image is None:
            return None
        kind = next((k for a, b, k in self.image.sections if a <= gpa <= b), None)
        if kind is None:
            return None
        virt = self.image.text + (gpa - self.image.start)
        window = f"{virt:016x}"[:_WINDOW_HEX]
        if window not in self._windows:
            try:
                out = self._run(f"grep '^{window}' /proc/kallsyms")
            except TestbedError:
                return None
            self._windows[window] = [(int(f[0], 16), f[2]) for f in
                                     (line.split() for line in out.splitlines())
                                     if len(f) >= 3 and re.fullmatch(r"[0-9a-f]{16}", f[0])]
        below = [s for s in self._windows[window] if s[0] <= virt]
        if not below:
            return f"{kind}: (no symbol in its 1 MiB)"
        at, name = max(below)
        return f"{kind}: {name}+{virt - at:#x}"

    def _in_percpu(self, gpa: int) -> str | None:
        p = self.percpu
        if p is None:
            return None
        for cpu, base in enumerate(p.bases):
            if base <= gpa < base + p.size:
                off = gpa - base
                if off >= p.static:
                    return f"percpu cpu{cpu}: dynamic +{off - p.static:#x}"
                at, name = max(s for s in p.symbols if s[0] <= off)
                return f"percpu cpu{cpu}: {name}+{off - at:#x}"
        return None

    def _in_vmemmap(self, gpa: int) -> str | None:
        first = self.vmemmap.get(gpa & ~(_BLOCK - 1))
        if first is None:
            return None
        pfn = first + (gpa & (_BLOCK - 1)) // _STRUCT_PAGE
        return f"struct page of gpa {pfn << 12:#x}"


_MAPS: weakref.WeakKeyDictionary[Cluster, GuestMap] = weakref.WeakKeyDictionary()


def _gpa(page: dict[str, Any]) -> int:
    """A hottest page's guest-physical address (its RAM offset is the same
    below the PCI hole, which is all older records give)."""
    return int(str(page["gpa"]), 16) if page.get("gpa") else int(page["offset"])


def _cpu_count(possible: str) -> int:
    """The number of CPUs in a list such as ``0-3`` or ``0,2-5``."""
    count = 0
    for part in possible.strip().split(","):
        lo, _, hi = part.partition("-")
        count = max(count, int(hi or lo) + 1)
    return count


def kernel_symbols(cluster: Cluster, addresses: list[int]) -> dict[int, str]:
    """Name each guest-physical address inside the kernel image, e.g.
    ``{0xa207040: "data: jiffies+0x0"}``; others are left out. Empty if the
    guest hides its kernel addresses (kptr_restrict) or cannot be asked."""
    guest = GuestMap.of(cluster)
    names = {a: guest._in_image(a) for a in addresses}
    return {a: n for a, n in names.items() if n}


def kernel_objects(cluster: Cluster, addresses: list[int]) -> dict[int, str]:
    """Name each guest-physical address that is in the kernel image, a CPU's
    per-CPU area or the struct page array; others are left out."""
    guest = GuestMap.of(cluster)
    names = {a: guest.name(a) for a in addresses}
    return {a: n for a, n in names.items() if n}


def name_hottest(cluster: Cluster, pages: list[dict[str, Any]]) -> None:
    """Add ``"kernel"`` to each hottest page that holds a kernel object the
    guest can name: the object at each of its hot lines (or at its start, if
    no line is known), e.g. ``"+0x9c0 data: jiffies_64+0x0; +0xa40 data:
    jiffies_seq+0x0"`` or ``"+0xb00 percpu cpu1: call_single_queue+0x0"``."""
    wanted = {id(p): [_gpa(p) + int(x) for x in (p.get("lines") or [0])] for p in pages}
    names = kernel_objects(cluster, [a for addrs in wanted.values() for a in addrs])
    for page in pages:
        named = [f"+{a - _gpa(page):#x} {names[a]}" for a in wanted[id(page)] if a in names]
        if named:
            page["kernel"] = "; ".join(named)
