"""CLI commands of the results layer: results, import, suite run|compare, ab, report."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed import exitcodes
from testbed.errors import ConfigError
from testbed.progress import Progress
from testbed.record import RunRecord
from testbed.store import Filters, Store, cell_label, default_path, import_paths, open_store

Handler = Callable[[argparse.Namespace, Progress], int]


def add_store_arg(p: argparse.ArgumentParser, *, optional: bool = False) -> None:
    p.add_argument("--store", type=Path, metavar="PATH",
                   help=f"results store (default $SDS_STORE or {default_path()})")
    if optional:
        p.add_argument("--no-store", action="store_true",
                       help="write the run record to the run directory only")


def _where(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. nodes=2, "
                                         "params.threads=2, policy=vcpu)")
    return key, value


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=["workload", "run", "bench", "demo"])
    p.add_argument("--workload", "--name", dest="name", metavar="NAME",
                   help="workload (or bench/command) name")
    p.add_argument("--commit", metavar="PREFIX", help="records made at this commit")
    p.add_argument("--suite", metavar="NAME", help="records of this suite")
    p.add_argument("--suite-run", metavar="ID", help="records of this suite run (id prefix)")
    p.add_argument("--where", type=_where, action="append", default=[], metavar="KEY=VALUE",
                   help="a dimension's value, e.g. nodes=2, policy=vcpu, params.threads=2, "
                   "host.hostname=x (repeatable; --keys lists them)")
    ok = p.add_mutually_exclusive_group()
    ok.add_argument("--ok", dest="ok", action="store_const", const=True, help="successful runs only")
    ok.add_argument("--failed", dest="ok", action="store_const", const=False,
                    help="failed runs only")


def _filters(args: argparse.Namespace, limit: int | None = None) -> Filters:
    return Filters(kind=args.kind, name=args.name, commit=args.commit, suite=args.suite,
                   suite_run=args.suite_run, ok=args.ok, where=list(args.where), limit=limit)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("results", help="list, filter and export what the results store holds",
                       description="List records of the results store, newest last. Filters "
                       "combine; --format csv gives one row per record and metric, json the "
                       "whole records.")
    add_store_arg(p)
    _filter_args(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="metrics to show in the table (default: each record's headline)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the newest N records (table default 50)")
    p.add_argument("--keys", action="store_true", help="list the dimension keys --where takes")
    p.add_argument("--suite-runs", action="store_true", help="list suite runs instead")

    p = sub.add_parser("import", help="import run records, run directories or other stores",
                       description="Import record-*.json files, directories holding them, or "
                       "another results store (e.g. the shards of a suite). Importing what "
                       "the store already holds changes nothing.")
    add_store_arg(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")

    p = sub.add_parser("suite", help="run a suite of cells into the store, or compare runs",
                       description="Suites are TOML matrices: node counts x policies x "
                       "workloads x repetitions (see suites/smoke.toml).")
    suite_sub = p.add_subparsers(dest="suite_command", metavar="ACTION")
    suite_sub.required = True
    s = suite_sub.add_parser("run", help="run every cell of a suite",
                             description="Check the suite file, then boot and run every cell, "
                             "recording each (failures too) in the store. Exit 0 if every cell "
                             "passed, 1 if any failed.")
    s.add_argument("suite_file", type=Path, metavar="SUITE")
    add_store_arg(s)
    s.add_argument("--shard", default="1/1", metavar="I/N", help="run the I-th of N shares")
    s.add_argument("--resume", action="store_true",
                   help="continue the newest unfinished run of this suite and shard")
    s.add_argument("--only", metavar="TEXT", help="only cells whose id contains TEXT")
    s.add_argument("--dry-run", action="store_true", help="check the file and list the cells")
    s.add_argument("--run-dir", type=Path, help="where the logs go (default runs/...)")
    c = suite_sub.add_parser("compare", help="compare a suite run with history or another run",
                             description="Compare two sets of records cell by cell: medians, "
                             "a permutation test, and a verdict. A difference is a regression "
                             "or improvement only when p < --alpha and the medians differ by "
                             "at least --min-effect. Exit 1 when a regression passes that bar. "
                             "SEL is a suite run id (prefix), 'latest', 'previous', "
                             "'history' (all earlier runs of the suite), or commit:PREFIX.")
    add_store_arg(c)
    c.add_argument("--suite", metavar="NAME", help="the suite (default: of the newest run)")
    c.add_argument("--base", default="history", metavar="SEL", help="default: history")
    c.add_argument("--new", default="latest", metavar="SEL", help="default: latest")
    c.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="metrics to compare (default: ops_per_s, boot_seconds, "
                   "migration_latency_us)")
    c.add_argument("--all-metrics", action="store_true",
                   help="compare every metric that has a direction")
    c.add_argument("--min-effect", type=float, default=0.05, metavar="FRACTION")
    c.add_argument("--alpha", type=float, default=0.01)
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.add_argument("--allow-no-history", action="store_true",
                   help="exit 0 with a note when there is nothing earlier to compare with "
                   "(the first night)")

    p = sub.add_parser("ab", help="build two git refs, run a suite interleaved, compare",
                       description="Build REF_A and REF_B from git (each with its own "
                       "qemu-patches and hyperkernel; cached artifacts are reused), run the "
                       "suite's cells on both, alternating boots A B B A ..., and compare B "
                       "against A as 'suite compare' does. Exit 1 if B regresses.")
    p.add_argument("ref_a", metavar="REF_A")
    p.add_argument("ref_b", metavar="REF_B")
    p.add_argument("--suite", dest="suite_file", type=Path, metavar="SUITE",
                   help="the cells to run (default: the repository's suites/smoke.toml)")
    p.add_argument("--iterations", type=int, default=8, metavar="N",
                   help="boots per side and shape (default 8; 5 is the fewest that can reach "
                   "p < 0.01 at all, and only if no sample of one side strays among the other's); "
                   "a suite with rerun_cv adds pairs while a cell stays noisy")
    p.add_argument("--only", metavar="TEXT", help="only cells whose id contains TEXT")
    p.add_argument("--build", action="store_true",
                   help="build a QEMU that is not cached yet (minutes; no other build may run)")
    p.add_argument("--min-effect", type=float, default=0.05, metavar="FRACTION")
    p.add_argument("--alpha", type=float, default=0.01)
    add_store_arg(p)

    p = sub.add_parser("report", help="a self-contained HTML report from the store",
                       description="Write one HTML page with plotly embedded (readable "
                       "offline). With --base and --new (SEL as in 'suite compare'), the "
                       "page compares the two; otherwise it shows the records selected.")
    add_store_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    p.add_argument("--base", metavar="SEL")
    p.add_argument("--new", metavar="SEL")
    p.add_argument("--suite", metavar="NAME")
    p.add_argument("--title", default="Software-defined server: performance report")


# -- results ------------------------------------------------------------------
def _headline(record: RunRecord, wanted: list[str]) -> str:
    names = wanted or [next((n for n in ("ops_per_s", "boot_seconds", "migration_latency_us",
                                        "guest_seconds") if n in record.metrics), "")]
    parts = []
    for name in names:
        m = record.metrics.get(name)
        if m is not None and m.samples:
            n = f" (n={len(m.samples)})" if len(m.samples) > 1 else ""
            parts.append(f"{name}={m.value:.4g}{(' ' + m.unit) if m.unit else ''}{n}")
    return "  ".join(parts)


def cmd_results(args: argparse.Namespace, progress: Progress) -> int:
    with open_store(args.store, create=False, readonly=True) as store:
        if args.keys:
            print("\n".join(store.dimension_keys()))
            return exitcodes.OK
        if args.suite_runs:
            for run in store.suite_runs(args.suite):
                print(f"{run.id[:12]}  {run.started}  {run.suite:12} shard {run.shard:5} "
                      f"{run.status:11} {run.cells:4} cells  commit {run.commit[:12]}  "
                      f"{run.hostname}")
            return exitcodes.OK
        limit = args.limit if args.limit is not None else (50 if args.format == "table" else None)
        records = store.records(_filters(args, limit))
    if args.format == "json":
        json.dump([r.to_dict() for r in records], sys.stdout, indent=1, sort_keys=True)
        print()
    elif args.format == "csv":
        _write_csv(records)
    else:
        for r in records:
            d = r.dimensions
            print(f"{r.started[:19]}  {r.id[:8]}  {'ok  ' if r.ok else 'FAIL'}  "
                  f"{cell_label(r):42.42}  {str(d.get('commit', ''))[:10]:10}  "
                  f"{_headline(r, args.metric) if r.ok else (r.reason or '')[:60]}")
        if not records:
            print("no records match", file=sys.stderr)
    return exitcodes.OK


def _write_csv(records: list[RunRecord]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["id", "started", "kind", "name", "cell", "ok", "nodes", "vcpus", "policy",
                  "params", "commit", "host", "qemu_sha256", "suite", "suite_run", "repetition",
                  "metric", "unit", "direction", "n", "median", "samples"])
    for r in records:
        d, lab = r.dimensions, r.labels
        base = [r.id, r.started, r.kind, r.name, cell_label(r), int(r.ok), d.get("nodes"),
                d.get("vcpus"), d.get("policy"), json.dumps(d.get("params", {}), sort_keys=True),
                d.get("commit"), d.get("host", {}).get("hostname"),
                d.get("artifacts", {}).get("qemu"), lab.get("suite"), lab.get("suite_run"),
                lab.get("repetition")]
        if not r.metrics:
            out.writerow([*base, "", "", "", 0, "", ""])
        for name, m in sorted(r.metrics.items()):
            out.writerow([*base, name, m.unit, m.direction, len(m.samples),
                          "" if math.isnan(m.value) else m.value,
                          " ".join(repr(s) for s in m.samples)])


def cmd_import(args: argparse.Namespace, progress: Progress) -> int:
    with open_store(args.store) as store:
        added, present, problems = import_paths(store, args.paths)
        for problem in problems:
            print(f"testbed: skipped: {problem}", file=sys.stderr)
        print(f"{added} record(s) added, {present} already in {store.path}")
    return exitcodes.FAILED if problems else exitcodes.OK


# -- suites -------------------------------------------------------------------
def cmd_suite(args: argparse.Namespace, progress: Progress) -> int:
    if args.suite_command == "run":
        return _suite_run(args, progress)
    return _suite_compare(args, progress)


def _suite_run(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.artifacts import ensure_artifacts
    from testbed.suite import SuiteRunner, estimate, plan, suite_summary
    from testbed.suitefile import load_suite, parse_shard

    suite = load_suite(args.suite_file)  # every check before anything builds or boots
    shard = parse_shard(args.shard)
    units = plan(suite, shard, args.only)
    if args.dry_run:
        for unit in units:
            for cell in unit.cells:
                print(f"rep {unit.repetition}  {cell.id}")
        print(f"{sum(len(u.cells) for u in units)} cell(s) in {len(units)} boot(s)"
              + (f", {suite.runs} runs of each per boot" if suite.runs > 1 else "")
              + f"; shard {args.shard} of suite {suite.name}")
        print(estimate(suite, units, _history(args.store)).text())
        return exitcodes.OK
    if args.run_dir is not None and args.run_dir.is_dir() and any(args.run_dir.iterdir()) \
            and not args.resume:
        raise ConfigError(f"--run-dir {args.run_dir} already holds files of an earlier run",
                          "give a new or empty directory")
    with open_store(args.store) as store:
        arts = ensure_artifacts(progress)
        if any(u.nodes > 1 for u in units) and not arts.supports_hyperkernel():
            raise ConfigError(f"suite {suite.name} has multi-node cells and {arts.qemu} lacks "
                              "the hyperkernel object", "run 'testbed build' with the patches")
        runner = SuiteRunner(suite, store, arts, progress, shard=shard, resume=args.resume,
                             only=args.only, run_root=args.run_dir)
        progress.step("suite", f"run {runner.run.id} of {suite.name}: {runner.total} cell(s) in "
                      f"{len(runner.units)} boot(s), logs in {runner.run_root}, store {store.path}")
        try:
            outcome = runner.execute()
        except KeyboardInterrupt:
            print(f"testbed: suite run {runner.run.id[:12]} interrupted; continue it with: "
                  f"testbed suite run {args.suite_file} --resume"
                  + (f" --shard {args.shard}" if args.shard != "1/1" else ""), file=sys.stderr)
            raise
    print(suite_summary(outcome))
    print(f"compare: testbed suite compare --suite {suite.name} --new {outcome.run.id[:12]}")
    return exitcodes.OK if outcome.ok else exitcodes.FAILED


def _history(path: Path | None) -> dict[str, float]:
    """Wall times of cells run before, from the store if there is one (never created here)."""
    from testbed.store import default_path

    if not (path or default_path()).expanduser().exists():
        return {}
    with open_store(path, create=False, readonly=True) as store:
        return store.cell_durations(None)


def select(store: Store, selector: str, suite: str | None, *, before: str | None = None
           ) -> tuple[str, list[RunRecord], str]:
    """Records named by a selector (see 'suite compare --help').

    Returns (description, records, when the selection starts); ``history`` and
    ``previous`` take the suite runs that started before ``before``.
    """
    if selector.startswith("commit:"):
        prefix = selector.removeprefix("commit:")
        records = store.records(Filters(commit=prefix, suite=suite))
        return f"commit {prefix}", records, min((r.started for r in records), default="")
    runs = store.suite_runs(suite)
    if not runs:
        raise ConfigError(f"no suite runs{' of ' + suite if suite else ''} in {store.path}",
                          "run one with: testbed suite run suites/smoke.toml")
    if selector in ("history", "previous"):
        if before is None:
            raise ConfigError(f"'{selector}' is relative: it needs --new to name the run compared")
        earlier = [r for r in runs if r.started < before and r.status != "running"]
        if not earlier:
            raise ConfigError(f"no finished run of suite {suite} before the one compared",
                              "run the suite again, or give --base a run id")
        chosen = earlier if selector == "history" else earlier[-1:]
    elif selector == "latest":
        chosen = runs[-1:]
    else:
        chosen = [store.find_suite_run(selector)]
    records = [r for run in chosen for r in store.records(Filters(suite_run=run.id))]
    what = (f"{len(chosen)} earlier run(s) of {suite}" if selector == "history" else
            f"run {chosen[0].id[:12]} ({chosen[0].started[:16]}, commit {chosen[0].commit[:10]})")
    return what, records, min(r.started for r in chosen)


def select_pair(store: Store, base_sel: str, new_sel: str, suite: str | None
                ) -> tuple[str, list[RunRecord], str, list[RunRecord]]:
    """(base description, base records, new description, new records)."""
    if suite is None and store.suite_runs():
        suite = store.suite_runs()[-1].suite
    new_what, new, started = select(store, new_sel, suite)
    base_what, base, _ = select(store, base_sel, suite, before=started)
    return base_what, base, new_what, new


def _suite_compare(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.compare import DEFAULT_METRICS, compare_records, lkp_table, samples_needed

    with open_store(args.store, create=False, readonly=True) as store:
        try:
            base_what, base, new_what, new = select_pair(store, args.base, args.new, args.suite)
        except ConfigError as e:
            if args.allow_no_history and "before the one compared" in e.message:
                print(f"nothing to compare with yet: {e.message}")
                return exitcodes.OK
            raise
    metrics = None if args.all_metrics else tuple(args.metric) or DEFAULT_METRICS
    rows = compare_records(base, new, metrics=metrics, min_effect=args.min_effect,
                           alpha=args.alpha)
    if not rows:
        raise ConfigError(f"no cell was measured successfully on both sides ({base_what}: "
                          f"{len(base)} records; {new_what}: {len(new)} records)",
                          "check the selectors with: testbed results --suite-runs")
    regressions = [r for r in rows if r.verdict == "regression"]
    if args.json:
        print(json.dumps([{"cell": r.cell, "metric": r.metric, "unit": r.unit,
                           "direction": r.direction, "base_median": r.base.median,
                           "new_median": r.new.median, "change": r.change, "ci": list(r.ci),
                           "p": r.p, "verdict": r.verdict, "base_n": r.base.n,
                           "new_n": r.new.n, "base_cv": r.base.cv, "new_cv": r.new.cv}
                          for r in rows], indent=1, allow_nan=True))
    else:
        print(f"base: {base_what}\nnew:  {new_what}\n")
        print(lkp_table(rows))
        improvements = [r for r in rows if r.verdict == "improvement"]
        too_few = [r for r in rows if r.verdict == "too-few"]
        print(f"\n{len(regressions)} regression(s), {len(improvements)} improvement(s) "
              f"(p < {args.alpha}, change >= {args.min_effect:.0%}) in {len(rows)} comparison(s)")
        if too_few:
            print(f"{len(too_few)} comparison(s) had too few samples to reach p < {args.alpha}: "
                  f"{samples_needed(args.alpha)} per side are needed")
        noisy = [r for r in rows if max(r.base.cv, r.new.cv) > 0.10]
        if noisy:
            print(f"{len(noisy)} noisy comparison(s) (%stddev > 10%): rerun with more "
                  "repetitions (rerun_cv in the suite file)")
    return exitcodes.FAILED if regressions else exitcodes.OK


# -- report -------------------------------------------------------------------
def cmd_report(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.report import write_report

    if (args.base is None) != (args.new is None):
        raise ConfigError("--base and --new go together", "give both, or neither")
    with open_store(args.store, create=False, readonly=True) as store:
        if args.base is not None:
            base_what, base, new_what, new = select_pair(store, args.base, args.new, args.suite)
        else:
            base_what, base = "", []
            new_what = f"suite {args.suite}" if args.suite else "every record"
            new = store.records(Filters(suite=args.suite))
    if not new:
        raise ConfigError(f"nothing to report: no records for {new_what} in the store",
                          "run a suite first: testbed suite run suites/smoke.toml")
    path = write_report(args.output, new=new, base=base, new_name=new_what, base_name=base_what,
                        title=args.title)
    print(f"report: {path}")
    return exitcodes.OK


def cmd_ab(args: argparse.Namespace, progress: Progress) -> int:
    from testbed.ab import resolve, run_ab
    from testbed.compare import compare_records, lkp_table
    from testbed.suitefile import load_suite

    if args.iterations < 1:
        raise ConfigError(f"--iterations {args.iterations} is out of range", "use 8 or more")
    for ref in (args.ref_a, args.ref_b):
        resolve(ref)  # before anything builds or boots
    from testbed.record import REPO_ROOT

    suite = load_suite(args.suite_file or REPO_ROOT / "suites" / "smoke.toml")
    with open_store(args.store) as store:
        out_a, out_b, a, b = run_ab(args.ref_a, args.ref_b, suite, store, progress,
                                    iterations=args.iterations, only=args.only,
                                    allow_build=args.build)
    rows = compare_records(a, b, min_effect=args.min_effect, alpha=args.alpha)
    print(lkp_table(rows, base_name=f"A: {args.ref_a}", new_name=f"B: {args.ref_b}"))
    regressions = [r for r in rows if r.verdict == "regression"]
    failed = len(out_a.cells_failed) + len(out_b.cells_failed)
    print(f"\n{len(regressions)} regression(s), "
          f"{sum(r.verdict == 'improvement' for r in rows)} improvement(s) of B against A "
          f"(p < {args.alpha}, change >= {args.min_effect:.0%}); {failed} failed cell(s); "
          f"suite runs A {out_a.run.id[:12]}, B {out_b.run.id[:12]}")
    return exitcodes.FAILED if regressions or failed else exitcodes.OK


COMMANDS: dict[str, Handler] = {"results": cmd_results, "import": cmd_import,
                                "suite": cmd_suite, "report": cmd_report, "ab": cmd_ab}
