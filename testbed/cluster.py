"""A cluster: N node processes running one guest, owned as one process group."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from testbed import procs, workloads
from testbed.config import ClusterSpec
from testbed.errors import GuestError, TestbedError
from testbed.images import GuestImages
from testbed.node import Node, NodeFiles
from testbed.record import RunRecord
from testbed.shell import CommandResult, GuestShell

log = logging.getLogger(__name__)

BASE_APPEND = "console=ttyS0 panic=-1 numa_balancing=disable"
_LIVE: weakref.WeakSet[Cluster] = weakref.WeakSet()


@dataclass(frozen=True)
class Artifacts:
    """What a cluster boots: the QEMU binary and the guest images, with their hashes."""

    qemu: Path
    images: GuestImages
    qemu_key: str = ""

    def hashes(self) -> dict[str, str]:
        return {"qemu": self.qemu_key, **self.images.hashes()}


def _run_id(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]


class Cluster:
    """Start with ``with Cluster(...) as c: c.boot(); c.run("uname -r")``."""

    def __init__(self, spec: ClusterSpec, artifacts: Artifacts, run_dir: Path,
                 initramfs: Path | None = None) -> None:
        self.spec = spec.validate()
        self.artifacts = artifacts
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = _run_id(run_dir)
        # Unix socket paths are limited to 108 bytes: keep them short and unique.
        self.sock_dir = Path(tempfile.mkdtemp(prefix=f"sds-{self.run_id}-"))
        self.initramfs = initramfs or artifacts.images.initramfs_path
        self.nodes: list[Node] = []
        self.pgid = 0
        self.boot_seconds: float | None = None
        self.guest_nproc: int | None = None
        self._shell: GuestShell | None = None
        self._closed = False

    # -- life cycle -------------------------------------------------------
    def start(self) -> None:
        """Spawn every node paused, attach to all of them, then let them run."""
        append = f"{BASE_APPEND} {self.spec.append}".strip()
        for i in range(self.spec.nodes):
            files = NodeFiles(self.sock_dir, self.run_dir, i)
            name = procs.node_name(i, self.run_id)
            argv = Node.qemu_argv(self.artifacts.qemu, name=name, files=files,
                                  vcpus=self.spec.vcpus, mem_mib=self.spec.mem_mib,
                                  kernel=self.artifacts.images.kernel_path,
                                  initrd=self.initramfs, append=append)
            self.nodes.append(Node(i, name, files, argv))
        _LIVE.add(self)
        self._t_start = time.monotonic()
        for node in self.nodes:
            node.start(self.pgid)
            if self.pgid == 0:
                self.pgid = node.pid
        for node in self.nodes:
            node.connect()
        for node in self.nodes:
            node.resume()

    def boot(self) -> float:
        """Start and wait for the guest shell; return boot-to-shell seconds."""
        if not self.nodes:
            self.start()
        shell = self.shell
        self.guest_nproc = shell.wait_ready(self.spec.boot_timeout)
        self.boot_seconds = time.monotonic() - self._t_start
        return self.boot_seconds

    @property
    def shell(self) -> GuestShell:
        if self._shell is None:
            self._shell = GuestShell(self.nodes[0].control, self.check_health)
        return self._shell

    def check_health(self) -> None:
        """Raise if any node died or the guest kernel failed."""
        for node in self.nodes:
            node.check_alive()

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        return self.shell.run(command, timeout)

    def run_workload(self, name: str, params: Mapping[str, workloads.ParamValue] | None = None,
                     /, *, guest_timeout: float = 600.0,
                     **kwparams: workloads.ParamValue) -> RunRecord:
        """Run a catalogue workload in the guest and return its parsed record.

        Parameters are validated before anything runs in the guest; the record
        carries them (defaults filled in), the figures and the artifact hashes.
        """
        values = workloads.validate_params(name, {**(params or {}), **kwparams}, self.spec.vcpus)
        command = workloads.guest_command(name, values, self.spec.vcpus)
        result = self.run(command, timeout=guest_timeout)
        parsed = workloads.parse_result(result.output, name)
        record = RunRecord(
            kind="workload", name=name, ok=parsed.ok and result.status == 0,
            cluster=self.dimensions(), params=dict(values), figures=parsed.figures(),
            artifacts=self.artifacts.hashes(), raw=parsed.raw, reason=parsed.reason,
            run_dir=str(self.run_dir))
        record.figures["guest_seconds"] = round(result.seconds, 3)
        record.write(self.run_dir / f"record-{name}-{int(time.time() * 1000)}.json")
        return record

    def dimensions(self) -> dict[str, object]:
        return {"nodes": self.spec.nodes, "vcpus": self.spec.vcpus, "mem_mib": self.spec.mem_mib,
                "boot_seconds": self.boot_seconds}

    def poweroff(self, timeout: float = 30.0) -> None:
        """Power the guest off from inside and wait for every node to exit."""
        self.nodes[0].control.write(b"poweroff -f\n")
        deadline = time.monotonic() + timeout
        while any(n.alive() for n in self.nodes):
            if time.monotonic() > deadline:
                raise GuestError(f"nodes still running {timeout:.0f}s after poweroff",
                                 f"see {self.run_dir}")
            time.sleep(0.05)

    def shutdown(self) -> None:
        """QMP quit, then kill the process group, wait, and verify nothing survived."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            if node.alive():
                try:
                    node.qmp.command("quit", timeout=2)
                except TestbedError:
                    pass
        deadline = time.monotonic() + 3
        while any(n.alive() for n in self.nodes) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.pgid:
            procs.kill_group(self.pgid)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=5)
                except Exception:
                    log.error("node%d (pid %d) did not exit", node.index, node.pid)
            node.close_channels()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        _LIVE.discard(self)
        survivors = [n for n in self.nodes if n.alive()]
        if survivors or (self.pgid and procs.group_alive(self.pgid)):
            raise GuestError(f"processes survived teardown of {self.run_dir}",
                             "kill them by hand: " + " ".join(str(n.pid) for n in survivors))

    def log_paths(self) -> list[Path]:
        return sorted(p for p in self.run_dir.iterdir() if p.is_file())

    def failure_report(self, lines: int = 30) -> str:
        """Every node's log tails plus a command that reproduces the run."""
        out = [f"run directory: {self.run_dir}"]
        for path in self.log_paths():
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name} (last {min(lines, len(text))} of {len(text)} lines)")
            out += text[-lines:]
        out.append(f"reproduce: testbed run --nodes {self.spec.nodes} --vcpus {self.spec.vcpus} "
                   f"--mem {self.spec.mem_mib}M -- <command>")
        return "\n".join(out)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


@atexit.register
def _shutdown_all() -> None:
    for cluster in list(_LIVE):
        try:
            cluster.shutdown()
        except TestbedError as e:
            log.error("%s", e)


def default_run_dir(label: str = "run") -> Path:
    root = Path(os.environ.get("SDS_RUNS", Path(__file__).resolve().parent.parent / "runs"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{label}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path
