"""One node: a QEMU process with its QMP channel and two serial consoles."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from testbed import hangdump, procs
from testbed.console import Console
from testbed.errors import ConfigError, GuestError, GuestPanic, NodeDied
from testbed.qmp import Qmp

log = logging.getLogger(__name__)

FIRMWARE_DIRS = (Path("/usr/share/seabios"), Path("/usr/share/qemu"))
# What a dying kernel prints; seeing any of these fails the wait at once.
PANIC_PATTERNS = re.compile(rb"Kernel panic - not syncing|BUG: |Oops: |general protection fault|"
                            rb"Call Trace:")


@dataclass(frozen=True)
class HyperkernelArgs:
    """This node's part of the cluster, as the QEMU ``hyperkernel`` object takes it."""

    node: int
    nodes: int
    listen: str
    peers: tuple[str, ...]  # every node's address, indexed by node id
    secret_file: Path
    vcpus: tuple[int, ...]
    budget_mib: int
    policy: str
    epoch_ns: int
    max_vcpus: int | None = None
    max_nodes: int | None = None  # slots for nodes that join later
    join: bool = False  # this node joins a running cluster

    def argv(self) -> list[str]:
        # QEMU options separate properties with ',': lists inside use ';'.
        return [
            "-object", f"secret,id=hksec,file={self.secret_file}",
            "-object", ",".join([
                "hyperkernel", "id=hk", f"node={self.node}", f"nodes={self.nodes}",
                f"listen={self.listen}", "peers=" + ";".join(self.peers), "secret=hksec",
                "vcpus=" + ";".join(str(c) for c in self.vcpus),
                f"budget={self.budget_mib}M", f"policy={self.policy}", f"epoch={self.epoch_ns}",
                *([f"max-vcpus={self.max_vcpus}"] if self.max_vcpus is not None else []),
                *([f"max-nodes={self.max_nodes}"] if self.max_nodes is not None else []),
                *(["join=on"] if self.join else []),
            ]),
        ]


# Machine options every node of a multi-node guest needs (see qemu-glue/DESIGN.md):
# no SMM (SMRAM is per-node device state), no HPET, no page merging behind
# userfaultfd's back, and no kvmvapic ROM patching guest memory.
HYPERKERNEL_MACHINE = "pc,smm=off,hpet=off,mem-merge=off"
HYPERKERNEL_GLOBALS = ["-global", "apic.vapic=off"]


def numa_argv(layout: tuple[tuple[int, ...], ...], mem_mib: int) -> list[str]:
    """One RAM backend and one guest NUMA node per node, given each one's vCPUs.

    Each gets an equal share of RAM in 2 MiB units (a home chunk), the last
    one the remainder. The hyperkernel homes each backend's pages on the node
    of the same index (qemu-glue's hk_register_ram), so RAM the guest
    allocates on NUMA node k starts out local to node k.
    """
    share = mem_mib // len(layout) // 2 * 2
    argv: list[str] = []
    for k, cpus in enumerate(layout):
        mib = share if k < len(layout) - 1 else mem_mib - share * k
        argv += ["-object", f"memory-backend-ram,id=ram-node{k},size={mib}M,merge=off"]
        argv += ["-numa", ",".join([f"node,nodeid={k}", f"memdev=ram-node{k}",
                                    *(f"cpus={c}" for c in cpus)])]
    return argv


@dataclass(frozen=True)
class NodeFiles:
    """Where a node keeps its sockets (short paths) and logs (run directory)."""

    sock_dir: Path
    log_dir: Path
    index: int

    def sock(self, what: str) -> Path:
        return self.sock_dir / f"n{self.index}.{what}"

    def log(self, what: str) -> Path:
        return self.log_dir / f"node{self.index}.{what}"


class Node:
    """A QEMU process. It starts paused so no console byte is lost, then runs."""

    def __init__(self, index: int, name: str, files: NodeFiles, argv: list[str],
                 env: Mapping[str, str] | None = None) -> None:
        self.index = index
        self.name = name
        self.files = files
        self.env = dict(env) if env is not None else None  # None: the harness's own
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None
        self.qmp = Qmp(files.sock("qmp"), files.log("qmp.log"), f"node{index}",
                       on_hang=self.dump_hang)
        self.console = Console(files.sock("ttyS0"), files.log("console.log"), f"node{index}/ttyS0")
        self.control = Console(files.sock("ttyS1"), files.log("control.log"), f"node{index}/ttyS1")
        self._panic_scan_pos = 0
        self.skipped = False
        self.departed = False  # evacuated: it left on purpose, the guest runs on

    @staticmethod
    def qemu_argv(qemu: Path, *, name: str, files: NodeFiles, vcpus: int, mem_mib: int,
                  kernel: Path, initrd: Path, append: str,
                  hyperkernel: HyperkernelArgs | None = None,
                  numa: tuple[tuple[int, ...], ...] | None = None) -> list[str]:
        for path, what in ((qemu, "QEMU binary"), (kernel, "guest kernel"), (initrd, "initramfs")):
            if not path.is_file():
                raise ConfigError(f"{what} {path} does not exist", "run 'testbed build'")
        for d in FIRMWARE_DIRS:
            if not d.is_dir():
                raise ConfigError(f"firmware directory {d} is missing",
                                  "install Debian's seabios and qemu-system-data (make setup)")
        argv = [
            str(qemu), "-name", name, "-S",
            "-machine", HYPERKERNEL_MACHINE if hyperkernel else "pc",
            "-accel", "tcg,thread=multi", "-cpu", "qemu64",
            # a socket per vCPU under NUMA: a guest NUMA node holds whole
            # packages, or Linux warns that a core's LLC spans two nodes
            "-smp", f"{vcpus},sockets={vcpus},cores=1,threads=1" if numa else str(vcpus),
            "-m", f"{mem_mib}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
            "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-chardev", f"socket,id=ttyS0,path={files.sock('ttyS0')},server=on,wait=off",
            "-serial", "chardev:ttyS0",
            "-chardev", f"socket,id=ttyS1,path={files.sock('ttyS1')},server=on,wait=off",
            "-serial", "chardev:ttyS1",
            "-qmp", f"unix:{files.sock('qmp')},server=on,wait=off",
        ]
        if numa is not None:
            argv += numa_argv(numa, mem_mib)
        for d in FIRMWARE_DIRS:
            argv += ["-L", str(d)]
        if hyperkernel is not None:
            argv += HYPERKERNEL_GLOBALS + hyperkernel.argv()
        return argv

    def start(self, process_group: int) -> None:
        """Spawn QEMU in ``process_group`` (0: a new group led by this node)."""
        self.files.log("cmdline").write_text(" ".join(self.argv) + "\n")
        stderr = self.files.log("qemu.log").open("wb")
        try:
            self.process = subprocess.Popen(procs.parent_death_argv(self.argv),
                                            stdin=subprocess.DEVNULL, stdout=stderr,
                                            stderr=subprocess.STDOUT, env=self.env,
                                            process_group=process_group)
        except OSError as e:
            raise GuestError(f"node{self.index}: cannot start {self.argv[0]}: {e}",
                             "run 'testbed build'") from e
        finally:
            stderr.close()

    def connect(self, timeout: float = 15.0,
                health_check: Callable[[], None] | None = None) -> None:
        """Attach QMP and both consoles; QEMU is paused (-S) until ``resume``."""
        deadline = time.monotonic() + timeout
        while not self.files.sock("qmp").exists():
            (health_check or self.check_alive)()
            if time.monotonic() > deadline:
                raise GuestError(f"node{self.index}: QMP socket did not appear in {timeout:.0f}s",
                                 f"see {self.files.log('qemu.log')}")
            time.sleep(0.02)
        try:
            self.qmp.connect()
        except Exception as e:  # qemu.qmp raises its own types when QEMU exits mid-handshake
            # The socket closes a moment before the process can be reaped.
            if self.process is not None:
                try:
                    self.process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            (health_check or self.check_alive)()
            raise GuestError(f"node{self.index}: QMP connection failed: {e!r}",
                             f"see {self.files.log('qemu.log')}") from e
        self.console.connect()
        self.control.connect()

    def resume(self) -> None:
        self.qmp.command("cont")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else -1

    def dump_hang(self) -> str:
        """Stacks and vCPU state of this (hung) node into ``node<k>.hang.txt``."""
        if not self.alive():
            return "not running"
        return hangdump.dump(self.pid, self.files.log("hang.txt"))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int:
        return self.process.returncode if self.process and self.process.poll() is not None else 0

    def qemu_log_text(self) -> str:
        try:
            return self.files.log("qemu.log").read_text(errors="replace")
        except OSError:
            return ""

    def death_summary(self) -> str:
        """How this node ended, with the last words from its QEMU log."""
        rc = self.returncode()
        how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}")
        tail = [line for line in self.files.log("qemu.log").read_text(errors="replace")
                .strip().splitlines() if line.strip()][-2:]
        return f"node{self.index} (pid {self.pid}) {how}" + (f": {' | '.join(tail)}" if tail else "")

    def check_alive(self) -> None:
        """Raise NodeDied (or GuestPanic) if QEMU has exited."""
        if self.process is None or self.process.poll() is None:
            self.check_panic()
            return
        self.check_panic(final=True)
        rc = self.process.returncode
        tail = self.files.log("qemu.log").read_text(errors="replace").strip().splitlines()[-5:]
        detail = f": {' | '.join(tail)}" if tail else ""
        raise NodeDied(f"node{self.index} (pid {self.process.pid}) exited with status {rc}{detail}",
                       f"logs in {self.files.log_dir}")

    def check_panic(self, final: bool = False) -> None:
        # Give the drain thread a moment to collect the last words of a dead guest.
        if final:
            self.console.closed.wait(timeout=1.0)
        text = self.console.text(max(0, self._panic_scan_pos - 64))
        m = PANIC_PATTERNS.search(text)
        self._panic_scan_pos = self.console.size()
        if m:
            line_start = text.rfind(b"\n", 0, m.start()) + 1
            line_end = text.find(b"\n", m.start())
            line = text[line_start:line_end if line_end >= 0 else None].decode(errors="replace")
            raise GuestPanic(f"node{self.index}: guest kernel failed: {line.strip()}",
                             f"console log: {self.files.log('console.log')}")

    def kill(self) -> None:
        """SIGKILL this node's QEMU alone (a join that went wrong)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.close_channels()

    def close_channels(self) -> None:
        self.qmp.close()
        self.console.close()
        self.control.close()

    def log_paths(self) -> list[Path]:
        return sorted(self.files.log_dir.glob(f"node{self.index}.*"))
