"""A cluster: N node processes running one guest, owned as one process group."""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypedDict

from testbed import affinity, evacuation, membership, procs, trace_summary, workloads
from testbed.cmdline import guest_append
from testbed.config import ClusterSpec, NodeOverride
from testbed.errors import ConfigError, GuestError, GuestTimeout, NodeDied, TestbedError
from testbed.images import GuestImages
from testbed.node import HyperkernelArgs, Node, NodeFiles
from testbed.record import RunRecord, utc_now, workload_record
from testbed.shell import CommandResult, GuestShell
from testbed.stats import merge_node_stats

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[Cluster] = weakref.WeakSet()
# How surviving nodes name a peer that died (the library and the QEMU glue).
_LOST_NODE_RE = re.compile(r"\bnode (\d+) (?:died|lost)\b")


# The outcome of Cluster.migrate_vcpu, shaped like the QMP event's data.
VcpuMigration = TypedDict("VcpuMigration", {
    "cpu-index": int,
    "from": int,        # where it ran before (== "to" when it did not move)
    "to": int,
    "moved": bool,      # False: it ran on "to" already, and stays there
    "state-bytes": int,
    "latency-ns": int,
})


@dataclass(frozen=True)
class Artifacts:
    """What a cluster boots: the QEMU binary and the guest images, with their hashes."""

    qemu: Path
    images: GuestImages
    qemu_key: str = ""

    def hashes(self) -> dict[str, str]:
        return {"qemu": self.qemu_key, **self.images.hashes()}

    def supports_hyperkernel(self) -> bool:
        """Whether this QEMU was built with the hyperkernel patches (-object hyperkernel)."""
        return "hyperkernel" in _object_types(self.qemu)


@functools.cache
def _object_types(qemu: Path) -> frozenset[str]:
    out = subprocess.run([str(qemu), "-object", "help"], capture_output=True, text=True,
                         timeout=30, check=False)
    return frozenset(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


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
        self._secret = ""
        self._epoch_ns = 0
        self.boot_seconds: float | None = None
        # knobs turned while the guest runs (set_knob): part of what a record measured
        self.knobs: dict[str, int] = {}
        self.guest_nproc: int | None = None
        self._shell: GuestShell | None = None
        self._closed = False
        self._leaving: set[int] = set()  # evacuating: their exit is expected
        self._append = ""

    # -- life cycle -------------------------------------------------------
    def _hyperkernel_args(self, index: int, files: NodeFiles, *, join: bool = False,
                          budget_mib: int | None = None) -> HyperkernelArgs | None:
        spec = self.spec
        if not spec.uses_hyperkernel:
            return None
        override = spec.overrides.get(index, NodeOverride())
        secret = override.secret if override.secret is not None else self._secret
        secret_file = self.sock_dir / f"n{index}.secret"
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
        peers = tuple(f"unix:{self.sock_dir / f'n{k}.hk'}" for k in range(spec.node_slots))
        return HyperkernelArgs(
            node=index, nodes=spec.nodes, listen=peers[index],
            peers=override.peer_addresses or peers, secret_file=secret_file,
            vcpus=() if join else spec.vcpu_placement[index],
            budget_mib=budget_mib or spec.budgets_mib[index],
            policy=spec.policy, epoch_ns=self._epoch_ns, max_vcpus=spec.max_vcpus,
            max_nodes=spec.max_nodes, join=join)

    def new_node(self, index: int, *, join: bool = False, budget_mib: int | None = None) -> Node:
        """The Node for slot ``index`` (not started)."""
        override = self.spec.overrides.get(index, NodeOverride())
        files = NodeFiles(self.sock_dir, self.run_dir, index)
        name = procs.node_name(index, self.run_id)
        argv = Node.qemu_argv(self.artifacts.qemu, name=name, files=files,
                              vcpus=self.spec.vcpus,
                              mem_mib=override.mem_mib or self.spec.mem_mib,
                              kernel=self.artifacts.images.kernel_path,
                              initrd=self.initramfs, append=self._append,
                              hyperkernel=self._hyperkernel_args(index, files, join=join,
                                                                 budget_mib=budget_mib),
                              numa=self.spec.numa_layout)
        if self.spec.cpu_affinity == "node":
            slots = self.spec.nodes if index < self.spec.nodes else self.spec.node_slots
            argv = affinity.pinned_argv(
                argv, affinity.node_cpus(index, slots, affinity.host_cpus()))
        env = None
        if self.spec.fault_trace:  # the library adds ".node<N>" (hyperkernel/src/trace.c)
            env = {**os.environ, "HK_FAULT_TRACE": str(self.fault_trace_prefix)}
        node = Node(index, name, files, argv, env)
        node.skipped = not override.start
        return node

    def start(self) -> None:
        """Spawn every node paused, attach to all of them, then let them run.

        Nodes resume highest id first so node 0, which owns the devices and
        the boot processor, starts last, when every peer is already running.
        """
        self._append = guest_append(self.spec)
        self._secret = secrets.token_hex(32)
        # One guest clock: every node counts guest time from the same instant.
        self._epoch_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for i in range(self.spec.nodes):
            self.nodes.append(self.new_node(i))
        _LIVE.add(self)
        self._t_start = time.monotonic()
        for node in self.live_nodes:
            node.start(self.pgid)
            if self.pgid == 0:
                self.pgid = node.pid
        for node in self.live_nodes:
            node.connect(health_check=self.check_health)
        for node in reversed(self.live_nodes):
            node.resume()

    @property
    def leaving(self) -> frozenset[int]:
        """Nodes evacuating now."""
        return frozenset(self._leaving)

    @property
    def live_nodes(self) -> list[Node]:
        """The nodes this cluster runs: started (tests may leave one out on
        purpose) and not evacuated since."""
        return [n for n in self.nodes if not n.skipped and not n.departed]

    def boot(self) -> float:
        """Start and wait for the guest shell; return boot-to-shell seconds."""
        if not self.nodes:
            self.start()
        shell = self.shell
        try:
            self.guest_nproc = shell.wait_ready(self.spec.boot_timeout)
        except GuestTimeout:
            # A guest that stops mid-boot without a word (no panic, no RCU
            # report) leaves no clue once its nodes are killed: first each
            # node's thread stacks and vCPUs (RIP, halted, parked), to
            # node<k>.hang.txt beside the console log.
            for n in self.live_nodes:
                n.dump_hang()
            raise
        self.boot_seconds = time.monotonic() - self._t_start
        return self.boot_seconds

    @property
    def shell(self) -> GuestShell:
        if self._shell is None:
            self._shell = GuestShell(self.nodes[0].control, self.check_health)
        return self._shell

    def check_health(self) -> None:
        """Raise if any node died or the guest kernel failed.

        When one node dies the others stop on their own a moment later; the
        report names every dead node, the one killed by a signal first.
        """
        nodes = [n for n in self.live_nodes if n.index not in self._leaving]
        if all(n.alive() for n in nodes):
            for n in nodes:
                n.check_panic()
            return
        deadline = time.monotonic() + 2.0
        while any(n.alive() for n in nodes) and time.monotonic() < deadline:
            time.sleep(0.05)
        dead = [n for n in nodes if not n.alive()]
        for n in dead:
            n.check_panic(final=True)
        # The root cause first: a node the others report lost, then one killed
        # from outside (SIGKILL/SIGTERM), then any other signal, then exits.
        blamed = {int(m) for n in nodes for m in _LOST_NODE_RE.findall(n.qemu_log_text())}
        external = {-signal.SIGKILL, -signal.SIGTERM}
        dead.sort(key=lambda n: (n.index not in blamed, n.returncode() not in external,
                                 n.returncode() >= 0, n.index))
        summary = "; ".join(n.death_summary() for n in dead)
        first = dead[0]
        raise NodeDied(f"node{first.index} died: {summary}", f"logs in {self.run_dir}",
                       node=first.index)

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
        # Statistics just before and after: the record holds what this workload cost.
        before = self.node_stats()
        started = utc_now()  # the record says when the run began, not when it was written
        t0 = time.monotonic_ns()  # CLOCK_MONOTONIC, the fault trace's clock
        result = self.run(command, timeout=guest_timeout)
        t1 = time.monotonic_ns()
        after = self.node_stats()
        if self.spec.fault_trace:
            with self.fault_trace_windows.open("a") as f:
                f.write(f"{name} {t0} {t1}\n")
        record = workload_record(self, name, dict(values), result, before, after)
        record.started = started
        record.write_to_run_dir()
        return record

    @property
    def fault_trace_prefix(self) -> Path:
        """Where the nodes write their fault traces (``--fault-trace``): PREFIX.nodeN."""
        return self.run_dir / trace_summary.TRACE_PREFIX

    @property
    def fault_trace_windows(self) -> Path:
        """One line per workload run: its name, and the first and last ns of it in the traces."""
        return self.run_dir / trace_summary.WINDOWS_FILE

    def replay_command(self) -> str:
        """The command that replays the last workload's faults under every policy."""
        files = " ".join(str(self.fault_trace_prefix) + f".node{n.index}" for n in self.nodes)
        windows = trace_summary.read_windows(self.run_dir)
        window = f" AFTER={windows[-1].start_ns} BEFORE={windows[-1].end_ns}" if windows else ""
        return f'make -C hyperkernel replay TRACE="{files}"{window}'

    def dimensions(self) -> dict[str, object]:
        return {"nodes": self.spec.nodes, "vcpus": self.spec.vcpus, "mem_mib": self.spec.mem_mib,
                "placement": [list(c) for c in self.spec.vcpu_placement],
                "budget_mib": list(self.spec.budgets_mib), "policy": self.spec.policy,
                "hyperkernel": self.spec.uses_hyperkernel,
                "guest_numa": self.spec.numa_layout is not None, "boot_seconds": self.boot_seconds,
                **({"knobs": dict(self.knobs)} if self.knobs else {})}

    # -- hyperkernel ------------------------------------------------------
    def node_stats(self) -> list[dict[str, Any]]:
        """``query-hyperkernel`` from every node (empty without the hyperkernel)."""
        if not self.spec.uses_hyperkernel:
            return []
        return [n.qmp.command("query-hyperkernel") for n in self.live_nodes]

    def set_knob(self, name: str, value: int) -> None:
        """Turn a hyperkernel knob on every node while the guest runs.

        Only knobs that are safe to change at any moment take it (today
        ``HK_PAGE_HOLD_US``, ``HK_READ_HOLD_US`` and ``HK_MIGRATORY_HOLD_US``); the node refuses
        others, and values out of
        range, with a message that says what it accepts. The others are set
        in the nodes' environment when they start.
        """
        if not self.spec.uses_hyperkernel:
            raise ConfigError(f"{name}: a single node without --hyperkernel has no knobs",
                              "run with --hyperkernel or several nodes")
        for node in self.live_nodes:
            node.qmp.command("hyperkernel-set-knob", name=name, value=value)
        self.knobs[name] = value

    def stats(self) -> dict[str, Any]:
        """Every node's statistics merged into one record (see testbed.stats)."""
        return merge_node_stats(self.node_stats())

    def vcpu_locations(self) -> list[int]:
        """The node running each vCPU, from each node's own list of the vCPUs it runs.

        A node's ``vcpu-location`` is only its belief about the others; the
        authority for a vCPU is the node that runs it. A vCPU in flight shows
        up on no node for a moment, so this retries briefly.
        """
        return self._from_runners(lambda node, reply, cpu: node.index)

    def _from_runners(self, pick: Callable[[Node, dict[str, Any], int], int]) -> list[int]:
        """``pick(node, query-hyperkernel reply, cpu)`` per vCPU, from the node running it.

        -1 for a vCPU no node runs after 5 s of retries (one in flight shows up
        on no node for a moment).
        """
        deadline = time.monotonic() + 5
        while True:
            where = [-1] * self.spec.vcpus
            for node in self.live_nodes:
                reply = node.qmp.command("query-hyperkernel")
                for cpu in reply.get("local-vcpus", []):
                    if 0 <= int(cpu) < len(where):
                        where[int(cpu)] = pick(node, reply, int(cpu))
            if -1 not in where or time.monotonic() > deadline:
                return where
            time.sleep(0.01)

    def vcpu_location(self, cpu: int) -> int:
        """The node that runs vCPU ``cpu`` now."""
        if not 0 <= cpu < self.spec.vcpus:
            raise ConfigError(f"vCPU {cpu} does not exist", f"the guest has {self.spec.vcpus}")
        node = self.vcpu_locations()[cpu]
        if node < 0:
            raise GuestError(f"no node reports running vCPU {cpu}", f"see {self.run_dir}")
        return node

    def vcpu_homes(self) -> list[int]:
        """The home of each vCPU, as the node running it knows it.

        Unlike vcpu_locations(), a vCPU visiting the io-node for a device
        access (2 ms at a time) still counts on its home, so a placement
        check right after boot does not depend on what the guest was doing.
        """
        return self._from_runners(lambda node, reply, cpu: int(reply["vcpu-home"][cpu]))

    def vcpu_home(self, cpu: int) -> int:
        """The node vCPU ``cpu`` returns to after an I/O visit, as the node running it knows."""
        runs_on = self.nodes[self.vcpu_location(cpu)]
        return int(runs_on.qmp.command("query-hyperkernel")["vcpu-home"][cpu])

    def migrate_vcpu(self, cpu: int, node: int, timeout: float = 30.0) -> VcpuMigration:
        """Move vCPU ``cpu`` to ``node`` live, and make ``node`` its home so it stays.

        The request goes to ``node``, whose hyperkernel takes it to wherever
        the vCPU runs, following it if it is moving; so the vCPU's own moves
        (a visit to node 0 for I/O and back) cannot make it fail. Returns once
        ``node`` runs the vCPU: with ``moved`` and the state size and latency
        of the move, or ``moved=False`` if the vCPU was there already.
        """
        if not 0 <= cpu < self.spec.vcpus:
            raise ConfigError(f"vCPU {cpu} does not exist", f"the guest has {self.spec.vcpus}")
        if node not in [n.index for n in self.live_nodes]:
            raise ConfigError(f"node {node} does not run",
                              f"the cluster runs nodes {[n.index for n in self.live_nodes]}")
        target = self.nodes[node]
        target.qmp.drain_events()  # only an outcome of this request may count
        target.qmp.command("hyperkernel-migrate-vcpu", **{"cpu-index": cpu, "node": node})

        def outcome(data: dict[str, Any]) -> bool:
            return data.get("cpu-index") == cpu and data.get("reason", "request") == "request"

        deadline = time.monotonic() + timeout
        while True:
            self.check_health()
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestTimeout(f"vCPU {cpu} did not arrive on node {node} in {timeout:.0f}s",
                                   f"see the QMP transcripts and QEMU logs in {self.run_dir}")
            try:
                ev = target.qmp.wait_event(
                    ("HYPERKERNEL_VCPU_MIGRATED", "HYPERKERNEL_VCPU_STAYS"),
                    timeout=min(left, 1.0), match=outcome)
            except GuestTimeout:
                continue
            data: dict[str, Any] = ev.get("data", {})
            if ev["event"] == "HYPERKERNEL_VCPU_STAYS":
                return {"cpu-index": cpu, "from": node, "to": node, "moved": False,
                        "state-bytes": 0, "latency-ns": 0}
            return {"cpu-index": cpu, "from": int(data["from"]), "to": node, "moved": True,
                    "state-bytes": int(data["state-bytes"]),
                    "latency-ns": int(data["latency-ns"])}

    def evacuate(self, index: int, timeout: float = 300.0) -> evacuation.Evacuation:
        """Move everything off node ``index`` while the guest runs, and let it exit.

        Its vCPUs, pages and directory go to the other nodes; it exits with
        status 0 and the guest runs on. Returns what moved and how long it
        took. Node 0 (the devices) cannot leave: its refusal is a QmpError.
        """
        evacuation.check_evacuable(self, index)
        node = self.nodes[index]
        node.qmp.drain_events()
        self._leaving.add(index)
        try:
            node.qmp.command("hyperkernel-evacuate")
            return self._after_evacuation(index, timeout)
        finally:
            self._leaving.discard(index)

    def inject_health(self, index: int, *, corrected_errors: int | None = None,
                      temperature: int | None = None, link_errors: int | None = None,
                      evacuation_timeout: float | None = 300.0) -> evacuation.Evacuation | None:
        """Report hardware trouble on node ``index``, as its sensors would.

        Past a threshold the node evacuates itself; with ``evacuation_timeout``
        this waits for that and returns what moved (None if no threshold was
        passed within a few heartbeats). Without it, returns at once.
        """
        evacuation.check_evacuable(self, index)
        args = evacuation.health_args(corrected_errors, temperature, link_errors)
        node = self.nodes[index]
        node.qmp.drain_events()
        self._leaving.add(index)
        try:
            node.qmp.command("hyperkernel-inject-health", **args)
            if evacuation_timeout is None:
                return None
            try:  # the node checks its health every heartbeat (200 ms)
                first = node.qmp.wait_event("HYPERKERNEL_EVACUATION", timeout=3.0)
            except GuestTimeout:
                return None
            return self._after_evacuation(index, evacuation_timeout,
                                          [str(first.get("data", {}).get("phase"))])
        finally:
            self._leaving.discard(index)

    def remove_node(self, index: int, timeout: float = 300.0) -> evacuation.Evacuation:
        """A planned removal: an evacuation without a warning (see ``evacuate``)."""
        return self.evacuate(index, timeout)

    def add_node(self, budget_mib: int | None = None, timeout: float = 60.0) -> int:
        """Start a node in the next free slot and let it join the running guest.

        It dials every node with the cluster's secret, compares the machine
        definition and learns where vCPUs run and who is home for each page;
        it starts holding nothing. vCPUs move to it with ``migrate_vcpu``.
        Returns its index. Needs a slot (``ClusterSpec.max_nodes``).
        """
        return membership.add_node(self, budget_mib, timeout)

    def _after_evacuation(self, index: int, timeout: float,
                          seen: list[str] | None = None) -> evacuation.Evacuation:
        result = evacuation.wait_evacuated(self, index, timeout, seen)
        node = self.nodes[index]
        node.departed = True
        node.close_channels()
        return result

    def vcpu_counts(self) -> dict[str, int]:
        """vCPUs as the hyperkernel sees them: present (-smp), licensed, online
        (started and not taken offline by the guest) and running (not halted)."""
        counts = {"present": self.spec.vcpus, "licensed": self.spec.licensed_vcpus,
                  "online": 0, "running": 0}
        for node in self.live_nodes:
            info = node.qmp.command("query-hyperkernel")
            counts["licensed"] = int(info.get("licensed-vcpus", counts["licensed"]))
            for vs in info.get("vcpu-states", []):
                if int(vs["cpu-index"]) >= counts["licensed"]:
                    continue
                counts["online"] += vs["state"] != "offline"
                counts["running"] += vs["state"] == "running"
        return counts

    def set_online_vcpus(self, count: int, timeout: float = 120.0) -> dict[str, int]:
        """Bring the guest's online vCPU count to ``count`` (CPU hotplug's
        online/offline, through the guest's sysfs) and return the counts.

        A count above the licensed one is refused here, before the guest is
        touched; the hyperkernel refuses to start an unlicensed vCPU anyway
        (the guest sees it fail to come up).
        """
        licensed = self.spec.licensed_vcpus
        if not 1 <= count <= self.spec.vcpus:
            raise ConfigError(f"{count} online vCPUs is out of range",
                              f"the guest has {self.spec.vcpus} vCPUs; keep 1 to {licensed} online")
        if count > licensed:
            raise ConfigError(f"{count} online vCPUs is above the licensed {licensed}",
                              f"keep {licensed} or fewer online, or license more (--max-vcpus)")
        want = " ".join(str(c) for c in range(1, count))
        drop = " ".join(str(c) for c in reversed(range(count, self.spec.vcpus)))
        cmd = ("cd /sys/devices/system/cpu && "
               f"for c in {drop or '-'}; do [ $c = - ] || [ ! -e cpu$c/online ] || "
               "[ $(cat cpu$c/online) = 0 ] || echo 0 > cpu$c/online || exit 1; done && "
               f"for c in {want or '-'}; do [ $c = - ] || [ $(cat cpu$c/online) = 1 ] || "
               "echo 1 > cpu$c/online || exit 1; done && nproc")
        result = self.run(cmd, timeout=timeout)
        if result.status != 0 or result.output.strip() != str(count):
            raise GuestError(f"the guest did not reach {count} online vCPUs: "
                             f"{result.output.strip()!r} (status {result.status})",
                             f"see the console log in {self.run_dir}")
        return self.vcpu_counts()

    def poweroff(self, timeout: float = 30.0) -> None:
        """Power the guest off from inside and wait for every node to exit."""
        self.nodes[0].control.write(b"poweroff -f\n")
        deadline = time.monotonic() + timeout
        while any(n.alive() for n in self.live_nodes):
            if time.monotonic() > deadline:
                hung = [n for n in self.live_nodes if n.alive()]
                for n in hung:
                    n.dump_hang()
                raise GuestError(f"nodes {[n.index for n in hung]} still running {timeout:.0f}s "
                                 "after poweroff",
                                 f"see {self.run_dir} (node<k>.hang.txt: their stacks and vCPUs)")
            time.sleep(0.05)

    def shutdown(self) -> None:
        """QMP quit, then kill the process group, wait, and verify nothing survived."""
        if self._closed:
            return
        self._closed = True
        for node in reversed(self.live_nodes):
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
            if node.skipped:
                continue
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
