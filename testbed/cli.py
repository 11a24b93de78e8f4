"""The ``testbed`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from testbed import procs, workloads
from testbed.artifacts import ensure_artifacts
from testbed.cluster import Cluster, default_run_dir
from testbed.config import ClusterSpec, parse_placement, parse_size_mib
from testbed.errors import ConfigError, GuestError, TestbedError
from testbed.progress import Progress
from testbed.workloads import ParamValue


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line saying what is wrong and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


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
    p.add_argument("--policy", default="page", choices=["page", "vcpu"],
                   help="on a stall: bring the page (page) or send the vCPU (vcpu)")
    p.add_argument("--hyperkernel", action="store_true",
                   help="run a single node through the hyperkernel too (multi-node always does)")
    p.add_argument("--append", default="", help="extra guest kernel command line")
    p.add_argument("--boot-timeout", type=float, default=120.0, metavar="SECONDS")
    p.add_argument("--run-dir", type=Path, help="where logs go (default runs/<time>-...)")
    p.add_argument("--qemu", type=Path, help="use this QEMU binary instead of the built one")
    p.add_argument("--kernel", type=Path, help="use this guest kernel instead of Debian's")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="testbed", description=(
        "Testbed for the software-defined server: builds the patched QEMU and guest images, "
        "boots one Linux guest across N QEMU node processes, and runs commands and workloads."))
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
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="limit for CMD (default 600)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")

    p = sub.add_parser("up", help="boot and attach to the guest console (Ctrl-] leaves)",
                       description="Boot the guest and hand over its serial console. "
                       "Ctrl-] detaches and shuts everything down.")
    _add_cluster_args(p)

    p = sub.add_parser("workload", help="run a self-verifying workload and print its record",
                       description="Run a catalogue workload in the guest. Parameters are "
                       "checked before the guest boots. Exit status 0 only if the workload "
                       "verified its result (ok=1).")
    _add_cluster_args(p)
    p.add_argument("name", metavar="NAME", help="workload name; 'list' shows the catalogue")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload parameter (repeatable)")
    p.add_argument("--json", action="store_true", help="print the full run record as JSON")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")

    sub.add_parser("sweep", help="kill node processes left by harnesses that died")

    p = sub.add_parser("bench", help="benchmarks: figures measured side by side in one run",
                       description="Benchmarks print their figures and end with one JSON line. "
                       "Latencies are ratios to the raw socket round trip measured in the same "
                       "run; slowdowns are ratios to a single-node run.")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH", parser_class=_Parser)
    bench_sub.required = True
    b = bench_sub.add_parser("boot", help="boot-to-shell time for 1, 2 and 4 nodes")
    b.add_argument("--vcpus", type=_positive_int, default=4)
    b.add_argument("--mem", type=_size, default=512, metavar="SIZE")
    b.add_argument("--nodes", default="1,2,4", help="node counts to compare (default 1,2,4)")
    b.add_argument("--repeat", type=_positive_int, default=3, help="boots per node count")
    b = bench_sub.add_parser("migrate", help="vCPU migration latency and state size")
    b.add_argument("--nodes", type=_positive_int, default=2)
    b.add_argument("--vcpus", type=_positive_int, default=2)
    b.add_argument("--mem", type=_size, default=512, metavar="SIZE")
    b.add_argument("--migrations", type=_positive_int, default=200)
    for b in bench_sub.choices.values():
        b.add_argument("--run-dir", type=Path, help="where logs go")

    p = sub.add_parser("demo", help="the main job: boot, run the self-check, show results")
    _add_cluster_args(p)
    return parser


def _spec(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(nodes=args.nodes, vcpus=args.vcpus, mem_mib=args.mem, append=args.append,
                       boot_timeout=args.boot_timeout, placement=args.placement,
                       budget_mib=args.budget, policy=args.policy,
                       hyperkernel=True if args.hyperkernel else None).validate()


def _cluster(args: argparse.Namespace, progress: Progress, label: str) -> Cluster:
    spec = _spec(args)  # refuse bad input before building or booting anything
    arts = ensure_artifacts(progress, qemu=args.qemu, kernel=args.kernel)
    return Cluster(spec, arts, args.run_dir or default_run_dir(label))


def cmd_run(args: argparse.Namespace, progress: Progress) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("no command given", "write it after --, e.g. testbed run -- uname -r")
    command = cmd[0] if len(cmd) == 1 else shlex.join(cmd)
    with _cluster(args, progress, "run") as cluster:
        progress.step("run", f"booting {cluster.spec.nodes} node(s), {cluster.spec.vcpus} vCPU(s), "
                      f"logs in {cluster.run_dir}")
        try:
            secs = cluster.boot()
            progress.step("run", f"guest shell after {secs:.2f}s")
            result = cluster.run(command, timeout=args.timeout)
        except GuestError:
            print(cluster.failure_report(), file=sys.stderr)
            raise
        sys.stdout.write(result.output)
        sys.stdout.flush()
        return result.status


def cmd_up(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.interactive import attach

    with _cluster(args, progress, "up") as cluster:
        progress.step("up", f"booting; logs in {cluster.run_dir}")
        secs = cluster.boot()
        progress.step("up", f"guest shell after {secs:.2f}s")
        attach(cluster)
    return 0


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
    with _cluster(args, progress, f"workload-{args.name}") as cluster:
        progress.step("workload", f"booting {spec.nodes} node(s), {spec.vcpus} vCPU(s); "
                      f"logs in {cluster.run_dir}")
        try:
            cluster.boot()
            progress.step("workload", f"running {args.name}")
            record = cluster.run_workload(args.name, params, guest_timeout=args.timeout)
        except GuestError:
            print(cluster.failure_report(), file=sys.stderr)
            raise
    if args.json:
        print(record.to_json())
    else:
        print(record.raw)
        print(f"ok={int(record.ok)} params={record.params} artifacts={record.artifacts}")
    return 0 if record.ok else 1


def cmd_bench(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.bench import bench_boot, bench_migrate

    run_dir = args.run_dir or default_run_dir(f"bench-{args.bench}")
    arts = ensure_artifacts(progress)
    if args.bench == "boot":
        try:
            counts = [int(n) for n in args.nodes.split(",")]
        except ValueError:
            raise ConfigError(f"--nodes {args.nodes!r} is not a list of numbers",
                              "e.g. --nodes 1,2,4") from None
        result = bench_boot(arts, run_dir, counts, args.vcpus, args.mem, args.repeat,
                                  progress)
    else:
        result = bench_migrate(arts, run_dir, args.nodes, args.vcpus, args.mem,
                                     args.migrations, progress)
    print(json.dumps(result, sort_keys=True))
    return 0


def cmd_sweep(args: argparse.Namespace, progress: Progress) -> int:
    killed = procs.sweep_orphans()
    print(f"killed {len(killed)} orphaned node process(es)" + (f": {killed}" if killed else ""))
    return 0


def cmd_demo(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.demo import run_demo

    given = "--nodes" in sys.argv[1:] or any(a.startswith("--nodes=") for a in sys.argv[1:])
    return run_demo(_spec(args), ensure_artifacts(progress, qemu=args.qemu, kernel=args.kernel),
                    args.run_dir or default_run_dir("demo"), progress, nodes_given=given)


COMMANDS = {"run": cmd_run, "up": cmd_up, "build": cmd_build, "sweep": cmd_sweep,
            "demo": cmd_demo, "workload": cmd_workload, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    progress = Progress(quiet=args.quiet)
    try:
        return COMMANDS[args.command](args, progress)
    except TestbedError as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("testbed: interrupted; nodes shut down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
