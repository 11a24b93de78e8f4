"""Running a suite: every cell of its matrix, each result in the store.

A suite run boots one cluster per *unit* (node count, policy, repetition),
runs that unit's cells on it one after another, and records each cell as a
run record labelled with the suite, the suite run, the cell and the
repetition. Units go repetition-major (all shapes once, then all again) so
slow drift of the machine spreads over every cell alike.

* A cell that fails (ok=0), hangs (the cell timeout) or kills the guest is
  recorded as failed with its reason and the tail of every log; the cluster
  is torn down, the next cell boots a fresh one, and the suite goes on.
* A boot is recorded too (kind ``bench``, name ``boot``): boot time is part of
  what a nightly run tracks. A failed boot fails the cells of its unit.
* Resuming (``--resume``) continues the newest unfinished run of the same
  suite and shard: cells that already have a record are skipped.
* ``--shard i/N`` runs every N-th unit; the stores of the shards merge with
  ``testbed import``.
* With ``rerun_cv``, cells whose ops_per_s varies more than that (coefficient
  of variation) get further repetitions, up to ``max_repetitions``.
"""

from __future__ import annotations

import platform
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from testbed import workloads
from testbed.cluster import Artifacts, Cluster, default_run_dir
from testbed.compare import coefficient_of_variation, replicates
from testbed.errors import ConfigError, GuestError
from testbed.hkdelta import delta
from testbed.metrics import PRIMARY_METRIC
from testbed.progress import Progress
from testbed.record import RunRecord, git_commit, utc_now
from testbed.store import Filters, Store, SuiteRun
from testbed.suitefile import Cell, Suite

# The workload's own watchdog fires this long before the harness gives up on
# the cell, so a slow cell reports ok=0 reason=timeout and the guest stays usable.
WATCHDOG_MARGIN_S = 15


@dataclass
class Unit:
    """Cells that share one boot: a (node count, policy) shape, one repetition."""

    nodes: int
    policy: str
    repetition: int
    cells: list[Cell]

    @property
    def label(self) -> str:
        return f"r{self.repetition}-n{self.nodes}-{self.policy}"

    @property
    def boot_cell(self) -> str:
        return f"boot@n{self.nodes}/{self.policy}"


def plan(suite: Suite, shard: tuple[int, int] = (1, 1), only: str | None = None) -> list[Unit]:
    """The units of this shard, repetition-major."""
    units = []
    for rep in range(1, suite.repetitions + 1):
        for nodes, policy in suite.groups:
            cells = [c for c in suite.cells if c.group == (nodes, policy)
                     and (only is None or only in c.id)]
            if cells:
                units.append(Unit(nodes, policy, rep, cells))
    i, n = shard
    return [u for k, u in enumerate(units) if k % n == i - 1]


@dataclass
class Outcome:
    run: SuiteRun
    cells_ok: int = 0
    cells_failed: list[tuple[str, int, str, str]] = field(default_factory=list)  # id, rep, why, dir
    cells_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not self.cells_failed


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class SuiteRunner:
    def __init__(self, suite: Suite, store: Store, artifacts: Artifacts, progress: Progress, *,
                 shard: tuple[int, int] = (1, 1), resume: bool = False, only: str | None = None,
                 run_root: Path | None = None, tag: str | None = None,
                 labels: dict[str, object] | None = None, step: str = "suite") -> None:
        """``tag`` replaces the shard in the suite run's bookkeeping (A/B sides use it),
        ``labels`` go into every record, ``step`` names the progress lines."""
        self.suite = suite
        self.tag = tag
        self.extra_labels = dict(labels or {})
        self.step = step
        self.store = store
        self.artifacts = artifacts
        self.progress = progress
        self.shard = shard
        self.only = only
        self.units = plan(suite, shard, only)
        if not self.units:
            raise ConfigError(f"shard {shard[0]}/{shard[1]} of suite {suite.name} has no cells"
                              + (f" matching {only!r}" if only else ""),
                              "use fewer shards, or another --only")
        self.run = self._begin(resume)
        self.run_root = run_root or default_run_dir(f"suite-{suite.name}")
        self.done = store.done_cells(self.run.id)
        # Earlier runs of this suite first; the same cell in another suite is next best.
        self.history = {**store.cell_durations(None), **store.cell_durations(suite.name)}
        self.total = sum(len(u.cells) for u in self.units)
        self.count = 0
        self.t0 = time.monotonic()
        self.spent: list[float] = []  # wall seconds of each cell run in this session
        self.boots_spent: list[float] = []

    # -- bookkeeping -------------------------------------------------------------
    def _shard_text(self) -> str:
        return self.tag or f"{self.shard[0]}/{self.shard[1]}"

    def _begin(self, resume: bool) -> SuiteRun:
        if resume:
            unfinished = [r for r in self.store.suite_runs(self.suite.name)
                          if r.status in ("running", "interrupted") and r.shard == self._shard_text()]
            if not unfinished:
                raise ConfigError(f"no unfinished run of suite {self.suite.name} (shard "
                                  f"{self._shard_text()}) in {self.store.path}",
                                  "drop --resume to start a new run")
            run = unfinished[-1]
            if run.suite_sha256 != self.suite.sha256:
                raise ConfigError(f"{self.suite.path} changed since suite run {run.id[:12]} began",
                                  "drop --resume to start a new run with the new matrix")
            self.progress.step(self.step, f"resuming run {run.id[:12]} from {run.started}")
            return run
        run = SuiteRun(id=uuid.uuid4().hex, suite=self.suite.name,
                       suite_path=str(self.suite.path), suite_sha256=self.suite.sha256,
                       shard=self._shard_text(), commit=git_commit(), hostname=platform.node(),
                       started=utc_now(), finished=None,
                       cells=sum(len(u.cells) for u in self.units), status="running")
        self.store.begin_suite_run(run)
        return run

    def _labels(self, cell: str, repetition: int, seconds: float) -> dict[str, object]:
        return {**self.extra_labels, "suite": self.suite.name, "suite_run": self.run.id,
                "cell": cell, "repetition": repetition, "shard": self._shard_text(),
                "cell_seconds": round(seconds, 3)}

    def _estimate_left(self, remaining: list[tuple[Cell, Unit]], boots_left: int) -> float:
        mean = statistics.fmean(self.spent) if self.spent else None
        boot_mean = statistics.fmean(self.boots_spent) if self.boots_spent else None
        total = 0.0
        for cell, _ in remaining:  # history and means are of one run of a cell
            total += (self.history.get(cell.id) or mean or self.suite.cell_timeout / 10) * self.suite.runs
        for _ in range(boots_left):
            total += boot_mean or 60.0
        return total

    # -- running -------------------------------------------------------------------
    def execute(self) -> Outcome:
        outcome = Outcome(self.run)
        status = "interrupted"
        try:
            queue = list(self.units)
            while queue:
                unit = queue.pop(0)
                self.run_unit(unit, outcome, queue)
                if not queue:
                    queue = self._reruns()
            status = "done" if outcome.ok else "failed"
        finally:
            self.store.end_suite_run(self.run.id, status)
        return outcome

    def _remaining(self, unit: Unit, queue: list[Unit], after: int) -> tuple[list[tuple[Cell, Unit]], int]:
        cells = [(c, unit) for c in unit.cells[after:] if (c.id, unit.repetition) not in self.done]
        boots = 0
        for u in queue:
            todo = [(c, u) for c in u.cells if (c.id, u.repetition) not in self.done]
            cells += todo
            boots += bool(todo)
        return cells, boots

    def run_unit(self, unit: Unit, outcome: Outcome, queue: list[Unit]) -> None:
        """Boot for ``unit`` and run its cells not yet done (``queue``: units still to come,
        for the estimate)."""
        todo = [c for c in unit.cells if (c.id, unit.repetition) not in self.done]
        outcome.cells_skipped += len(unit.cells) - len(todo)
        self.count += len(unit.cells) - len(todo)
        if not todo:
            return
        cluster: Cluster | None = None
        boot_error: str = ""
        boots = 0
        try:
            for cell in todo:
                self.count += 1
                left, boots_left = self._remaining(unit, queue, unit.cells.index(cell) + 1)
                eta = self._estimate_left([(cell, unit), *left], boots_left + (cluster is None))
                self.progress.step(self.step, f"cell {self.count}/{self.total} {cell.id} rep "
                                   f"{unit.repetition}: elapsed "
                                   f"{_fmt_duration(time.monotonic() - self.t0)}, about "
                                   f"{_fmt_duration(eta)} left")
                if cluster is None and not boot_error:
                    boots += 1
                    cluster, boot_error = self._boot(unit, boots)
                for run in range(1, self.suite.runs + 1):
                    t0 = time.monotonic()
                    if cluster is None:
                        record = self._not_run(cell, unit, f"boot failed: {boot_error}")
                    else:
                        record, broken = self._run_cell(cluster, cell)
                        if broken:  # the guest broke or hangs: the next cell needs a fresh boot
                            self._shutdown(cluster)
                            cluster = None
                    self._finish(record, cell, unit, run, time.monotonic() - t0, outcome)
                    if not record.ok:
                        break  # a failed run fails the cell; its other runs would tell no more
                self.done.add((cell.id, unit.repetition))
        finally:
            if cluster is not None:
                self._shutdown(cluster)

    def _shutdown(self, cluster: Cluster) -> None:
        """Tear a cluster down; a teardown that fails is said, and the suite goes on."""
        try:
            cluster.shutdown()
        except GuestError as e:
            self.progress.step(self.step, f"  teardown of {cluster.run_dir} failed: {e}")

    def _finish(self, record: RunRecord, cell: Cell, unit: Unit, run: int, seconds: float,
                outcome: Outcome) -> None:
        """Label, write and store one run of a cell, and say how it went."""
        self.spent.append(seconds)
        record.labels = self._labels(cell.id, unit.repetition, seconds)
        if self.suite.runs > 1:
            record.labels["run"] = run
        if record.run_dir:
            record.write_to_run_dir()
        self.store.add(record)
        what = f"  run {run}/{self.suite.runs}" if self.suite.runs > 1 else " "
        if record.ok:
            if run == self.suite.runs:
                outcome.cells_ok += 1
            figure = record.metrics.get(PRIMARY_METRIC)
            self.progress.step(self.step, f"{what} ok in {seconds:.1f}s"
                               + (f": {PRIMARY_METRIC} {figure.value:.4g}" if figure else ""))
        else:
            outcome.cells_failed.append((cell.id, unit.repetition, record.reason or "",
                                         record.run_dir))
            self.progress.step(self.step, f"{what} FAILED: {record.reason} (logs: {record.run_dir})")

    def _boot(self, unit: Unit, attempt: int) -> tuple[Cluster | None, str]:
        """Boot the unit's cluster; the boot itself is recorded. (cluster, error)."""
        spec = self.suite.spec(unit.nodes, unit.policy)
        run_dir = self.run_root / f"{unit.label}-boot{attempt}"
        cluster = Cluster(spec, self.artifacts, run_dir)
        record = RunRecord.for_cluster(cluster, "bench", "boot", ok=False, params={})
        t0 = time.monotonic()
        try:
            cluster.boot()
            stats = cluster.node_stats()  # a node that hangs right after the boot fails it
        except GuestError as e:
            record.reason = str(e)
            record.failure = cluster.failure_report() if cluster.nodes else ""
            self._shutdown(cluster)
            result: tuple[Cluster | None, str] = (None, str(e))
        except BaseException:
            cluster.shutdown()
            raise
        else:
            record.ok = True
            assert cluster.boot_seconds is not None
            record.add("boot_seconds", cluster.boot_seconds)
            record.add_hk_stats(delta([], stats))
            result = (cluster, "")
        seconds = time.monotonic() - t0
        self.boots_spent.append(seconds)
        record.labels = self._labels(unit.boot_cell, unit.repetition, seconds)
        record.labels["attempt"] = attempt
        record.write_to_run_dir()
        self.store.add(record)
        return result

    def _params(self, cell: Cell) -> dict[str, workloads.ParamValue]:
        params = dict(cell.params)
        params.setdefault("timeout_s", max(1, int(self.suite.cell_timeout) - WATCHDOG_MARGIN_S))
        return params

    def _run_cell(self, cluster: Cluster, cell: Cell) -> tuple[RunRecord, bool]:
        """The cell's record, and whether the cluster is unusable after it."""
        try:
            return cluster.run_workload(cell.workload, self._params(cell),
                                        guest_timeout=self.suite.cell_timeout), False
        except GuestError as e:
            record = RunRecord.for_cluster(cluster, "workload", cell.workload, ok=False,
                                           params=workloads.validate_params(
                                               cell.workload, self._params(cell), cluster.spec.vcpus),
                                           reason=f"{type(e).__name__}: {e}")
            record.failure = cluster.failure_report()
            return record, True

    def _not_run(self, cell: Cell, unit: Unit, why: str) -> RunRecord:
        from testbed.record import dimensions

        spec = self.suite.spec(unit.nodes, unit.policy)
        params = workloads.validate_params(cell.workload, self._params(cell), spec.vcpus)
        return RunRecord(kind="workload", name=cell.workload, ok=False, reason=why,
                         dimensions=dimensions(spec, self.artifacts, params), run_dir="")

    def _reruns(self) -> list[Unit]:
        """Further repetitions for cells whose primary figure is too noisy (Phoronix-style)."""
        limit = self.suite.rerun_cv
        if limit is None:
            return []
        records = self.store.records(Filters(suite_run=self.run.id, kind="workload"))
        planned = {c.id: c for u in self.units for c in u.cells}
        units: dict[tuple[int, str, int], Unit] = {}
        for cell_id, reps, cv in noisy_cells(records, limit):
            cell = planned.get(cell_id)
            if cell is None or reps >= self.suite.max_repetitions:
                continue
            self.progress.step(self.step, f"{cell_id}: coefficient of variation {cv:.1%} > "
                               f"{limit:.1%} after {reps} repetitions; one more")
            key = (cell.nodes, cell.policy, reps + 1)
            units.setdefault(key, Unit(cell.nodes, cell.policy, reps + 1, [])).cells.append(cell)
        more = list(units.values())
        self.total += sum(len(u.cells) for u in more)
        return more


def noisy_cells(records: list[RunRecord], limit: float) -> list[tuple[str, int, float]]:
    """(cell, repetitions so far, CV) of each suite cell whose primary figure, one value
    per boot (``compare.replicates``), varies more than ``limit`` (a coefficient of
    variation); cells with fewer than two good boots are not judged yet."""
    by_cell: dict[str, list[RunRecord]] = {}
    for r in records:
        by_cell.setdefault(str(r.labels.get("cell")), []).append(r)
    out = []
    for cell_id, recs in by_cell.items():
        values = replicates([r for r in recs if r.ok], PRIMARY_METRIC)
        reps = max(int(r.labels.get("repetition", 0)) for r in recs)
        cv = coefficient_of_variation(values)
        if len(values) >= 2 and cv > limit:
            out.append((cell_id, reps, cv))
    return out


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the planned repetitions
    worst_seconds: float  # every cell rerun up to max_repetitions (rerun_cv)
    untimed: list[str]  # cells and boots with no earlier run to go by
    cell_default: float
    boot_default: float

    def text(self) -> str:
        out = f"estimate: about {_fmt_duration(self.seconds)}"
        if self.worst_seconds > self.seconds:
            out += f", {_fmt_duration(self.worst_seconds)} if every cell is rerun (rerun_cv)"
        if self.untimed:
            out += (f"; {len(self.untimed)} cell(s)/boot(s) never ran before, counted at "
                    f"{self.cell_default:.0f}s a cell run and {self.boot_default:.0f}s a boot")
        else:
            out += "; every cell timed by earlier runs in the store"
        return out


BOOT_DEFAULT_S = 60.0


def estimate(suite: Suite, units: list[Unit], history: dict[str, float]) -> Estimate:
    """How long these units take, from earlier runs' wall times (``Store.cell_durations``:
    cell id or ``boot@nN/policy`` -> seconds); cells never run count as the runner's
    own estimate does (a tenth of the cell timeout)."""
    cell_default = suite.cell_timeout / 10
    total = 0.0
    untimed: set[str] = set()
    for unit in units:
        boot = history.get(unit.boot_cell)
        if boot is None:
            untimed.add(unit.boot_cell)
        total += boot if boot is not None else BOOT_DEFAULT_S
        for cell in unit.cells:
            seconds = history.get(cell.id)
            if seconds is None:
                untimed.add(cell.id)
            total += (seconds if seconds is not None else cell_default) * suite.runs
    worst = total * suite.max_repetitions / suite.repetitions if suite.rerun_cv is not None \
        else total
    return Estimate(total, worst, sorted(untimed), cell_default, BOOT_DEFAULT_S)


def suite_summary(outcome: Outcome) -> str:
    lines = [f"suite run {outcome.run.id} ({outcome.run.suite}, shard {outcome.run.shard}): "
             f"{outcome.cells_ok} cell(s) ok, {len(outcome.cells_failed)} failed"
             + (f", {outcome.cells_skipped} already done" if outcome.cells_skipped else "")]
    for cell, rep, why, run_dir in outcome.cells_failed:
        lines.append(f"  FAILED {cell} rep {rep}: {why}" + (f" (logs: {run_dir})" if run_dir else ""))
    return "\n".join(lines)

