"""The ``testbed`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from testbed import exitcodes, procs, put, signals, workloads
from testbed.artifacts import ensure_artifacts
from testbed.cli_results import COMMANDS as RESULTS_COMMANDS
from testbed.cli_results import add_commands as add_results_commands
from testbed.cli_results import add_store_arg
from testbed.cluster import Cluster, default_run_dir
from testbed.config import POLICIES, ClusterSpec, parse_placement, parse_size_mib
from testbed.errors import (
    ConfigError,
    GuestError,
    GuestPanic,
    GuestTimeout,
    NodeDied,
    RecordError,
    StoreError,
    TestbedError,
)
from testbed.hkdelta import delta
from testbed.host_load import HostLoad
from testbed.host_load import describe as describe_host
from testbed.progress import Progress
from testbed.record import RunRecord, utc_now
from testbed.store import Store, open_store
from testbed.workloads import ParamValue


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line saying what is wrong and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive_number(text: str, what: str = "number") -> float:
    """A finite number above zero (not nan, inf or negative); ``what`` names it in errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite {what}")
    return value


def _positive_float(text: str) -> float:
    """A finite number above zero (days, say)."""
    return _positive_number(text)


def _count(text: str) -> int:
    """A count that must be at least 1 (repetitions, migrations)."""
    value = _positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; use 1 or more")
    return value


def _seconds(text: str) -> float:
    """A time limit: a finite number of seconds above zero."""
    return _positive_number(text, "number of seconds")


def _size(text: str) -> int:
    try:
        return parse_size_mib(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _placement(text: str) -> tuple[tuple[int, ...], ...]:
    try:
        return parse_placement(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _budgets(text: str) -> tuple[int, ...]:
    return tuple(_size(part) for part in text.split(","))


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=_positive_int, default=1, help="QEMU node processes (default 1)")
    p.add_argument("--vcpus", type=_positive_int, default=2, help="guest vCPUs (default 2)")
    p.add_argument("--mem", type=_size, default=512, metavar="SIZE",
                   help="guest RAM, e.g. 512M or 1G (default 512M)")
    p.add_argument("--placement", type=_placement, metavar="CPUS:CPUS:...",
                   help="vCPUs each node starts with, e.g. 0-1:2:3 (default: even blocks)")
    p.add_argument("--budget", type=_budgets, metavar="SIZE[,SIZE...]",
                   help="guest memory each node may hold (one for all, or one per node; "
                   "default: all of --mem)")
    p.add_argument("--policy", default="page", choices=list(POLICIES),
                   help="on a stall: bring the page (page), send the vCPU to it (vcpu), or whichever "
                   "measured costs say is cheaper (cost)")
    p.add_argument("--hyperkernel", action="store_true",
                   help="run a single node through the hyperkernel too (multi-node always does)")
    p.add_argument("--cpu-affinity", default="node", choices=["node", "none"],
                   help="node: each node's threads on host CPUs of its own, as separate "
                   "machines (default); none: anywhere")
    p.add_argument("--flat", action="store_true",
                   help="hide the topology from the guest: one NUMA node, pages homed in "
                   "chunks striped across the nodes (default with several nodes: a guest NUMA "
                   "node per node, its RAM homed there)")
    p.add_argument("--fault-trace", action="store_true",
                   help="each node writes every stall to <run dir>/faults.nodeN, for the "
                   "simulation to replay under every policy (make -C hyperkernel replay)")
    p.add_argument("--max-vcpus", type=_positive_int, metavar="N",
                   help="licensed vCPUs: from vCPU N on, the hyperkernel never starts them "
                   "(default: all of --vcpus)")
    p.add_argument("--max-nodes", type=_positive_int, metavar="N",
                   help="node slots: up to N nodes in all, the ones beyond --nodes join while "
                   "the guest runs (Cluster.add_node; 'add' in testbed up; default: --nodes)")
    p.add_argument("--online-vcpus", type=_positive_int, metavar="N",
                   help="vCPUs the guest brings up at boot; the rest can be brought online "
                   "later (default: every licensed one)")
    _add_append_arg(p)
    p.add_argument("--put", action="append", default=[], metavar="HOSTFILE[:GUESTPATH]",
                   help="bring a host file into the guest (default under /opt/put/); repeatable")
    p.add_argument("--boot-timeout", type=_seconds, default=120.0, metavar="SECONDS")
    p.add_argument("--run-dir", type=Path,
                   help="where logs go (default runs/<time>-...); must be new or empty")
    p.add_argument("--qemu", type=Path, help="use this QEMU binary instead of the built one")
    p.add_argument("--kernel", type=Path, help="use this guest kernel instead of Debian's")


EPILOG = ("exit status: 0 success (run: the guest command's own status); 1 a workload check, "
          "bench boot or suite cell failed, or compare found a regression; 124 the guest "
          "command timed out; 125 bad invocation, nothing ran; 126 the harness or the guest "
          "broke (build, boot, node death, panic); 128+N stopped by signal N, nodes shut down.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="testbed", description=(
        "Testbed for the software-defined server: builds the patched QEMU and guest images, "
        "boots one Linux guest across N QEMU node processes, and runs commands and workloads."),
        epilog=EPILOG)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("build", help="build QEMU and the guest images if missing",
                   description="Build what is missing: QEMU with qemu-patches/series and qemu-glue/, the "
                   "guest kernel and initramfs. Cached under ~/.cache/sds by input hash.")

    p = sub.add_parser("run", help="boot, run a command in the guest, exit with its status",
                       description="Boot the guest, run CMD in its shell, print its output and "
                       "exit with its exit status. Example: testbed run --vcpus 2 -- nproc")
    _add_cluster_args(p)
    add_store_arg(p, optional=True)
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="SECONDS",
                   help="limit for CMD (default 600); exit status 124 when reached")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")

    p = sub.add_parser("up", help="boot and attach to the guest console (Ctrl-] leaves)",
                       description="Boot the guest and hand over its serial console. "
                       "Ctrl-] detaches and shuts everything down. The session's record "
                       "(boot time, its length, the hyperkernel statistics it cost) goes "
                       "into the results store.")
    _add_cluster_args(p)
    add_store_arg(p, optional=True)

    p = sub.add_parser("workload", help="run a self-verifying workload and print its record",
                       description="Run a catalogue workload in the guest. Parameters are "
                       "checked before the guest boots. Exit status 0 only if the workload "
                       "verified its result (ok=1).")
    _add_cluster_args(p)
    p.add_argument("name", metavar="NAME", help="workload name; 'list' shows the catalogue")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload parameter (repeatable)")
    p.add_argument("--json", action="store_true", help="print the full run record as JSON")
    p.add_argument("--timeout", type=_seconds, default=600.0, metavar="SECONDS")
    add_store_arg(p, optional=True)

    sub.add_parser("sweep", help="kill node processes left by harnesses that died")

    p = sub.add_parser("cache", help="the build cache (~/.cache/sds or $SDS_CACHE)")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    g = cache_sub.add_parser("gc", help="remove old builds; keep what was used recently",
                             description="Keep, per kind, the most recently used build and "
                                         "those used within --keep-days; remove the rest "
                                         "and the leftovers of builds that died.")
    g.add_argument("--keep-days", type=_positive_float, default=7.0, metavar="DAYS",
                   help="keep builds used within this many days (default 7)")
    g.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")

    p = sub.add_parser("bench", help="benchmarks: figures measured side by side in one run",
                       description="Benchmarks print their figures and end with one JSON line. "
                       "Latencies are ratios to the raw socket round trip measured in the same "
                       "run; slowdowns are ratios to a single-node run.")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=_Parser)
    bench_sub.required = True
    b = bench_sub.add_parser("boot", help="boot-to-shell time for 1, 2 and 4 nodes")
    b.add_argument("--vcpus", type=_positive_int, default=4)
    b.add_argument("--mem", type=_size, default=512, metavar="SIZE")
    b.add_argument("--nodes", default="1,2,4",
                   help="node counts to compare; 1 is the baseline (default 1,2,4)")
    b.add_argument("--repeat", type=_count, default=3, help="boots per node count")
    _add_append_arg(b)
    b = bench_sub.add_parser("migrate", help="vCPU migration latency and state size")
    b.add_argument("--nodes", type=_positive_int, default=2)
    b.add_argument("--vcpus", type=_positive_int, default=2)
    b.add_argument("--mem", type=_size, default=512, metavar="SIZE")
    b.add_argument("--migrations", type=_count, default=200)
    b = bench_sub.add_parser("stall", help="a remote page's cost inside the guest, 2 nodes: "
                             "hand-off, first read, streaming, vs the raw round trip")
    b.add_argument("--policy", default="page", choices=list(POLICIES),
                   help="on a stall: bring the page (page, default), send the vCPU (vcpu), "
                   "or the cheaper (cost)")
    b.add_argument("--mem", type=_size, default=512, metavar="SIZE")
    b.add_argument("--rounds", type=_positive_int, default=2000,
                   help="pingpong round trips, two hand-offs each (default 2000, at least 100)")
    b.add_argument("--pages", type=_positive_int, default=1000,
                   help="pages read once each, timed (default 1000, at least 100)")
    b.add_argument("--stream-mb", type=_positive_int, default=64, metavar="MIB",
                   help="region read through for the streaming rate (default 64)")
    b = bench_sub.add_parser("policies", help="every workload and the boot under every policy, "
                             "N nodes against 1, in one run")
    b.add_argument("--nodes", type=_positive_int, default=2, help="nodes (default 2; 1 is the baseline)")
    b.add_argument("--vcpus", type=_positive_int, default=4)
    b.add_argument("--mem", type=_size, default=768, metavar="SIZE")
    b.add_argument("--workloads", metavar="NAME,...",
                   help="catalogue workloads to run (default: all; the boot always)")
    b.add_argument("--policies", default=",".join(POLICIES), metavar="POLICY,...",
                   help="policies to compare (default: all)")
    b.add_argument("--repeat", type=_count, default=1,
                   help="boots of each configuration, in rounds; a cell is the median (default 1)")
    _add_append_arg(b)
    b = bench_sub.add_parser("knob", help="a hyperkernel knob's values compared within one boot, "
                             "workload by workload")
    b.add_argument("--knob", default="HK_PAGE_HOLD_US",
                   help="a knob that can change while the guest runs: HK_PAGE_HOLD_US (default), "
                        "HK_READ_HOLD_US or HK_MIGRATORY_HOLD_US")
    b.add_argument("--values", default="0,1000", metavar="V,V,...",
                   help="values to compare; the first is the baseline (default 0,1000)")
    b.add_argument("--nodes", type=_positive_int, default=2)
    b.add_argument("--vcpus", type=_positive_int, default=4)
    b.add_argument("--mem", type=_size, default=768, metavar="SIZE")
    b.add_argument("--policy", default="page", choices=list(POLICIES))
    b.add_argument("--workloads", metavar="NAME,...",
                   help="catalogue workloads, at the nightly suite's sizes (default: all)")
    b.add_argument("--repeat", type=_count, default=3, help="rounds over every value (default 3)")
    b = bench_sub.add_parser("evacuate", help="a node leaves holding SIZE of guest memory while "
                             "a workload runs there: time, bytes, vs page streaming in one run")
    b.add_argument("--nodes", type=_positive_int, default=3, help="nodes (default 3); the last leaves")
    b.add_argument("--size", type=_size, default=256, metavar="SIZE",
                   help="guest memory the leaver holds (default 256M)")
    b.add_argument("--mem", type=_size, default=1024, metavar="SIZE")
    for b in bench_sub.choices.values():
        b.add_argument("--run-dir", type=Path, help="where logs go; must be new or empty")
        b.add_argument("--cpu-affinity", default="node", choices=["node", "none"],
                       help="node: each node on host CPUs of its own (default); none: anywhere")
        add_store_arg(b, optional=True)

    p = sub.add_parser("trace", help="where a traced run's stall time went (--fault-trace)",
                       description="Summarise the fault trace a run with --fault-trace left in "
                       "its run directory: for each workload's window, the stall time by vCPU, "
                       "kind and wait, read-then-write upgrades, and the costliest pages; or one "
                       "page's stalls in order (--page).")
    p.add_argument("trace_dir", type=Path, metavar="RUN_DIR",
                   help="the run directory, with faults.node* and faults.windows")
    p.add_argument("--window", metavar="NAME",
                   help="only this workload's window (default: each one in turn)")
    p.add_argument("--all", action="store_true",
                   help="the whole trace as one, boot included, not each workload's window")
    p.add_argument("--top", type=_count, default=10, metavar="N",
                   help="costliest pages to list (default 10)")
    p.add_argument("--page", metavar="OFFSET",
                   help="print this page's stalls in order instead, e.g. 0x1ea31000")
    p.add_argument("--limit", type=_count, default=100, metavar="N",
                   help="with --page, stalls to print (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of the text")
    p = sub.add_parser("demo", help="the main job: boot, run the self-check, show results")
    _add_cluster_args(p)
    add_store_arg(p, optional=True)
    add_results_commands(sub)
    return parser


def _add_append_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--append", default="", metavar="ARGS",
                   help="extra guest kernel command line (in a bench, for every node count); "
                   "a nohz=, nohz_full= or isolcpus= of yours replaces the default nohz_full= "
                   "(testbed/cmdline.py)")


def _spec(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(nodes=args.nodes, vcpus=args.vcpus, mem_mib=args.mem, append=args.append,
                       boot_timeout=args.boot_timeout, placement=args.placement,
                       budget_mib=args.budget, policy=args.policy,
                       cpu_affinity=args.cpu_affinity, guest_numa=not args.flat,
                       hyperkernel=True if args.hyperkernel else None,
                       max_vcpus=getattr(args, "max_vcpus", None),
                       online_vcpus=getattr(args, "online_vcpus", None),
                       max_nodes=getattr(args, "max_nodes", None),
                       fault_trace=getattr(args, "fault_trace", False)).validate()


def _run_dir(given: Path | None, label: str) -> Path:
    """A fresh run directory: logs of two runs appended into one would mislead."""
    if given is None:
        return default_run_dir(label)
    if given.exists() and not given.is_dir():
        raise ConfigError(f"--run-dir {given} is a file", "give a directory")
    if given.is_dir() and any(given.iterdir()):
        raise ConfigError(f"--run-dir {given} already holds files of an earlier run",
                          "give a new or empty directory, or remove the old one")
    given.mkdir(parents=True, exist_ok=True)
    return given


def _cluster(args: argparse.Namespace, progress: Progress, label: str) -> Cluster:
    spec = _spec(args)  # refuse bad input before building or booting anything
    puts = [put.parse(p) for p in getattr(args, "put", [])]
    if args.run_dir is not None:
        _run_dir(args.run_dir, label)  # checked before a build, created later
    arts = ensure_artifacts(progress, qemu=args.qemu, kernel=args.kernel)
    if spec.uses_hyperkernel and not arts.supports_hyperkernel():
        what = f"--nodes {spec.nodes}" if spec.nodes > 1 else "--hyperkernel"
        raise ConfigError(f"{what} needs a QEMU with the hyperkernel object, and {arts.qemu} "
                          "has none (-object help does not list it)",
                          "drop --qemu/$SDS_QEMU to use the built one, or run on 1 node")
    cluster = Cluster(spec, arts, args.run_dir or default_run_dir(label))
    if puts:
        cluster.initramfs = put.initrd_with(cluster.initramfs, puts,
                                            cluster.run_dir / "initrd-with-put.img")
    return cluster


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Store | None]:
    """The results store, opened (and checked) before anything runs."""
    if getattr(args, "no_store", False):
        yield None
        return
    with open_store(args.store) as store:
        yield store


def _save(records: list[RunRecord], store: Store | None, progress: Progress) -> None:
    """Write each record beside its logs and import it into the store."""
    for record in records:
        path = record.write_to_run_dir()
        if store is not None:
            store.add(record)
        progress.step("record", f"{path}" + (f" (stored in {store.path})" if store else ""))


def _failed(cluster: Cluster, kind: str, name: str, params: dict[str, Any],
            error: TestbedError) -> RunRecord:
    """The record of a run the harness could not finish: why, and every log's tail."""
    record = RunRecord.for_cluster(cluster, kind, name, ok=False, params=params,
                                   reason=str(error))
    record.failure = cluster.failure_report() if cluster.nodes else ""
    return record


def stats_summary(hk: dict[str, Any]) -> str:
    """One line of what the hyperkernel did for a run (empty without it)."""
    if not hk:
        return ""
    t = hk.get("totals", {})
    sent = sum(m.get("sent_bytes", 0) for m in hk.get("messages", {}).values())
    rs, ws = hk.get("read_stall", {}), hk.get("write_stall", {})
    hot = hk.get("hottest_pages", [])
    return (f"hyperkernel: {t.get('pages_received', 0)} pages received, "
            f"stalls {rs.get('count', 0)} read (p50 {rs.get('p50_ns', 0) / 1000:.0f} us) / "
            f"{ws.get('count', 0)} write (p50 {ws.get('p50_ns', 0) / 1000:.0f} us), "
            f"{t.get('invalidations_sent', 0)} invalidations, {t.get('vcpu_blobs_sent', 0)} "
            f"vCPU moves, {sent / 1e6:.2f} MB sent"
            + (f"; hottest page {hot[0]['gpa']} ({hot[0]['stalls']} stalls)" if hot else ""))


def cmd_run(args: argparse.Namespace, progress: Progress) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("no command given", "write it after --, e.g. testbed run -- uname -r")
    command = cmd[0] if len(cmd) == 1 else shlex.join(cmd)
    name = Path(shlex.split(command)[0] if shlex.split(command) else "command").name or "command"
    params = {"command": command}
    with _store(args) as store, _cluster(args, progress, "run") as cluster:
        progress.step("run", f"booting {cluster.spec.nodes} node(s), {cluster.spec.vcpus} vCPU(s), "
                      f"logs in {cluster.run_dir}")
        try:
            secs = cluster.boot()
            progress.step("run", f"guest shell after {secs:.2f}s")
            before = cluster.node_stats()
            started = utc_now()
            result = cluster.run(command, timeout=args.timeout)
            after = cluster.node_stats()
        except GuestError as e:
            print(cluster.failure_report(), file=sys.stderr)
            _save([_failed(cluster, "run", name, params, e)], store, progress)
            if isinstance(e, GuestTimeout) and cluster.boot_seconds is not None:
                print(f"testbed: error: {e}", file=sys.stderr)
                return exitcodes.TIMEOUT
            raise
        record = RunRecord.for_cluster(cluster, "run", name, ok=result.status == 0,
                                       params=params, output=result.output,
                                       duration_s=round(result.seconds, 3),
                                       reason=None if result.ok else f"exit status {result.status}")
        record.started = started  # when the command began: started + duration_s = its end
        record.add("boot_seconds", secs)
        record.add("guest_seconds", result.seconds)
        record.add("exit_status", result.status, unit="", direction="info")
        record.add_hk_stats(delta(before, after))
        sys.stdout.write(result.output)
        sys.stdout.flush()
        if record.hk_stats:
            print(stats_summary(record.hk_stats), file=sys.stderr)
        _save([record], store, progress)
        return result.status


def cmd_up(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.interactive import attach

    params: dict[str, Any] = {"interactive": True}
    with _store(args) as store, _cluster(args, progress, "up") as cluster:
        progress.step("up", f"booting; logs in {cluster.run_dir}")
        try:
            secs = cluster.boot()
        except GuestError as e:
            print(cluster.failure_report(), file=sys.stderr)
            _save([_failed(cluster, "run", "up", params, e)], store, progress)
            raise
        progress.step("up", f"guest shell after {secs:.2f}s")
        before = cluster.node_stats()
        started, t0 = utc_now(), time.monotonic()
        attach(cluster)
        record = RunRecord.for_cluster(cluster, "run", "up", ok=True, params=params,
                                       duration_s=round(time.monotonic() - t0, 3), started=started)
        record.add("boot_seconds", secs)
        record.add("session_seconds", time.monotonic() - t0, unit="s", direction="info")
        broke = _session_broke(cluster)
        if broke is None and all(n.alive() for n in cluster.live_nodes):
            # Detached with the guest still up: what the session cost the hyperkernel.
            record.add_hk_stats(delta(before, cluster.node_stats()))
        if broke is not None:
            record.ok, record.reason = False, str(broke)
            record.failure = cluster.failure_report()
        _save([record], store, progress)
        if broke is not None:
            raise broke
    return 0


def _session_broke(cluster: Cluster) -> GuestError | None:
    """Why an interactive session ended badly, or None: it was detached, or the guest
    powered off (node 0, which runs the console, exited with status 0 and no panic)."""
    if all(n.alive() for n in cluster.live_nodes):
        return None
    try:
        cluster.check_health()
    except GuestPanic as e:
        return e
    except NodeDied as e:
        return None if cluster.nodes[0].returncode() == 0 else e
    return None


def cmd_build(args: argparse.Namespace, progress: Progress) -> int:
    arts = ensure_artifacts(progress)
    for name, value in arts.hashes().items():
        print(f"{name}: {value}")
    print(f"qemu binary: {arts.qemu}")
    print(f"kernel: {arts.images.kernel_path}")
    print(f"initramfs: {arts.images.initramfs_path}")
    return 0


def _workload_params(pairs: list[str]) -> dict[str, ParamValue]:
    params: dict[str, ParamValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not KEY=VALUE", "e.g. --param threads=2")
        params[key] = value
    return params


def cmd_workload(args: argparse.Namespace, progress: Progress) -> int:
    if args.name == "list":
        for name, wl in sorted(workloads.WORKLOADS.items()):
            print(f"{name}: {wl.description}")
            for p in wl.params:
                print(f"    {p.describe()}")
        return 0
    spec = _spec(args)
    try:  # refuse bad input before anything builds or boots
        params = workloads.validate_params(args.name, _workload_params(args.param), spec.vcpus)
    except workloads.WorkloadError as e:
        raise ConfigError(str(e)) from None
    with _store(args) as store, _cluster(args, progress, f"workload-{args.name}") as cluster:
        progress.step("workload", f"booting {spec.nodes} node(s), {spec.vcpus} vCPU(s); "
                      f"logs in {cluster.run_dir}")
        try:
            cluster.boot()
            progress.step("workload", f"running {args.name}")
            record = cluster.run_workload(args.name, params, guest_timeout=args.timeout)
        except GuestError as e:
            print(cluster.failure_report(), file=sys.stderr)
            _save([_failed(cluster, "workload", args.name, dict(params), e)], store, progress)
            if isinstance(e, GuestTimeout) and cluster.boot_seconds is not None:
                print(f"testbed: error: {e}", file=sys.stderr)
                return exitcodes.TIMEOUT
            raise
        if store is not None:  # run_workload wrote it beside the logs already
            store.add(record)
    if args.json:
        print(record.to_json())
    else:
        print(record.raw or record.reason)
        print(f"ok={int(record.ok)} params={record.params} artifacts={record.artifacts}")
        if record.hk_stats:
            print(stats_summary(record.hk_stats))
    if spec.fault_trace:  # complete now: a node flushes its trace when it exits
        # beside --json's record, not after it: stdout stays one JSON document
        print(f"fault trace: {cluster.fault_trace_prefix}.node*; replay it under every policy:\n"
              f"  {cluster.replay_command()}", file=sys.stderr if args.json else sys.stdout)
    return exitcodes.OK if record.ok else exitcodes.FAILED


def _node_counts(text: str) -> list[int]:
    """``--nodes`` of bench boot: ascending and starting at 1, the baseline of the ratios."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        raise ConfigError(f"--nodes {text!r} is not a list of numbers", "e.g. --nodes 1,2,4") from None
    if any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise ConfigError(f"--nodes {text!r} must list distinct counts of 1 or more",
                          "e.g. --nodes 1,2,4")
    if 1 not in counts:
        raise ConfigError(f"--nodes {text!r} lacks 1: boot ratios are taken against 1 node",
                          f"e.g. --nodes 1,{text}")
    return sorted(counts)


def cmd_bench(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.bench import bench_boot, bench_migrate, bench_stall, stall_params
    from testbed.bench_evacuate import bench_evacuate
    from testbed.bench_evacuate import check_args as check_evacuate_args
    from testbed.bench_knob import bench_knob
    from testbed.bench_knob import check_args as check_knob_args
    from testbed.bench_policies import bench_policies
    from testbed.bench_policies import check_args as check_policies_args

    counts = _node_counts(args.nodes) if args.bench == "boot" else []
    if args.bench == "stall":  # refused before a run directory, a build or a boot
        stall_params(args.rounds, args.pages, args.stream_mb, args.mem)
    policies: list[str] = []
    if args.bench == "policies":  # likewise
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        check_policies_args(args.nodes, args.workloads, policies, args.vcpus, args.repeat)
    if args.bench == "evacuate":  # likewise
        check_evacuate_args(args.nodes, args.size, args.mem)
    if args.bench == "knob":  # likewise
        check_knob_args(args.knob, args.values, args.nodes, args.policy, args.workloads, args.vcpus)
    if args.bench == "boot" and args.nodes.replace(" ", "") != ",".join(map(str, counts)):
        progress.step("bench", f"node counts in order: {','.join(map(str, counts))}")
    run_dir = _run_dir(args.run_dir, f"bench-{args.bench}")
    with _store(args) as store:
        arts = ensure_artifacts(progress)
        host = HostLoad()
        host.begin()
        if args.bench == "boot":
            result, records = bench_boot(arts, run_dir, counts, args.vcpus, args.mem, args.repeat,
                                         progress, args.cpu_affinity, args.append)
        elif args.bench == "stall":
            result, records = bench_stall(arts, run_dir, args.policy, args.mem, args.rounds,
                                          args.pages, args.stream_mb, progress, args.cpu_affinity)
        elif args.bench == "evacuate":
            result, records = bench_evacuate(arts, run_dir, args.nodes, args.size, args.mem,
                                             progress, args.cpu_affinity)
        elif args.bench == "knob":
            result, records = bench_knob(arts, run_dir, args.knob, args.values, args.nodes,
                                         args.vcpus, args.mem, args.policy, args.workloads,
                                         args.repeat, progress, args.cpu_affinity)
        elif args.bench == "policies":
            result, records = bench_policies(arts, run_dir, args.nodes, args.vcpus, args.mem,
                                             args.workloads, policies, progress, args.cpu_affinity,
                                             args.repeat, args.append)
        else:
            result, records = bench_migrate(arts, run_dir, args.nodes, args.vcpus, args.mem,
                                            args.migrations, progress, args.cpu_affinity)
        result["host"] = host.end()
        _save(records, store, progress)
    print(describe_host(result["host"]))
    print(json.dumps(result, sort_keys=True))
    ok = all(r.ok for r in records) and result.get("ok", True) is not False
    return exitcodes.OK if ok else exitcodes.FAILED


def cmd_sweep(args: argparse.Namespace, progress: Progress) -> int:
    killed = procs.sweep_orphans()
    print(f"killed {len(killed)} orphaned node process(es)" + (f": {killed}" if killed else ""))
    return 0


def cmd_cache(args: argparse.Namespace, progress: Progress) -> int:
    from testbed import cache_gc

    if args.cache_command != "gc":
        raise ConfigError("say what to do with the cache", "testbed cache gc [--dry-run]")
    removed, kept = cache_gc.collect(args.keep_days, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in removed:
        print(f"{verb} {e.kind}/{e.path.name[:16]} ({e.bytes / 2**20:.0f} MiB): {e.why}")
    freed = sum(e.bytes for e in removed) / 2**20
    print(f"{verb} {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({freed:.0f} MiB), "
          f"kept {len(kept)}")
    return 0


def cmd_trace(args: argparse.Namespace, progress: Progress) -> int:
    from testbed import trace_summary as ts

    if not args.trace_dir.is_dir():
        raise ConfigError(f"{args.trace_dir} is not a directory",
                          "give the run directory of a run made with --fault-trace")
    stalls = ts.read_trace(args.trace_dir)
    windows = [] if args.all else ts.read_windows(args.trace_dir)
    if args.window:
        chosen = [w for w in windows if w.name == args.window]
        if not chosen:
            raise ConfigError(f"no window {args.window!r} in {args.trace_dir}/faults.windows",
                              "choose from " + (", ".join(w.name for w in windows) or
                                                "none: use --all"))
        windows = chosen
    if not windows:
        windows = [ts.whole_trace(stalls)]
    if args.page is not None:
        page = ts.parse_offset(args.page)
        timelines = {w.name: ts.page_timeline(stalls, page, w) for w in windows}
        if args.json:
            print(json.dumps(timelines))
            return 0
        for name, rows in timelines.items():
            print(f"{name}: page {hex(page * ts.PAGE_SIZE)}, {len(rows)} stalls")
            print(ts.format_timeline(rows, args.limit))
        return 0
    summaries = [ts.summarise(stalls, w, args.top) for w in windows]
    if args.json:
        print(json.dumps([ts.summary_json(s) for s in summaries]))
    else:
        print("\n\n".join(ts.format_summary(s) for s in summaries))
    return 0


def cmd_demo(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.demo import run_demo

    given = "--nodes" in sys.argv[1:] or any(a.startswith("--nodes=") for a in sys.argv[1:])
    run_dir = _run_dir(args.run_dir, "demo")
    with _store(args) as store:
        status = run_demo(_spec(args), ensure_artifacts(progress, qemu=args.qemu, kernel=args.kernel),
                          run_dir, progress, nodes_given=given)
        if store is not None:  # the demo's record and those of the workloads it ran
            store.add_many(RunRecord.load(p) for p in sorted(run_dir.glob("record-*.json")))
    return status


COMMANDS = {"run": cmd_run, "up": cmd_up, "build": cmd_build, "sweep": cmd_sweep, "cache": cmd_cache,
            "demo": cmd_demo, "workload": cmd_workload, "bench": cmd_bench, "trace": cmd_trace}

COMMANDS.update(RESULTS_COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    progress = Progress(quiet=args.quiet)
    if threading.current_thread() is threading.main_thread():
        signals.install()
    try:
        return COMMANDS[args.command](args, progress)
    except (ConfigError, StoreError, RecordError) as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return exitcodes.USAGE
    except TestbedError as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return exitcodes.BROKEN
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt as e:  # also SIGTERM and SIGHUP (testbed.signals)
        print(f"testbed: stopped by {signals.name_of(e)}; every node was shut down",
              file=sys.stderr)
        return signals.exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
