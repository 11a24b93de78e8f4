"""A/B: two versions of the system, built from git, run interleaved on this host, compared.

``testbed ab REF_A REF_B`` resolves both refs, exports each commit's tree into
the cache (``<cache>/ab-src/<sha>``, ``git archive``: the repository and its
worktrees are not touched) and builds it with *that* tree's own ``testbed
build``, so its qemu-patches and hyperkernel make its QEMU; the content-
addressed cache makes a version built before (or equal to the current one)
cost nothing. What differs between A and B is that QEMU binary, hyperkernel
included; the harness, the guest kernel and the initramfs (with the workloads)
are the current tree's, so both sides run exactly the same work.

The cells of a suite run on both sides, one boot at a time, alternating
A B B A A B ... so drift of a shared machine falls on both alike. A suite
with ``runs`` runs each cell that many times per boot, and the boot's median
is its sample (a load spike during one run falls out). A suite with
``rerun_cv`` gets more A/B pairs (Phoronix-style) while a cell's figure,
one value per boot, varies more than that on either side, up to
``max_repetitions`` boots per side. Each side
is a suite run in the store (suite ``ab-<name>``, tags ``ab:A`` and ``ab:B``,
labels naming the ref and commit); the comparison is ``suite compare``'s
(permutation test, 5% minimum effect, p < 0.01) with A as the base, and a
regression of B fails the command (exit 1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from testbed import cache
from testbed.artifacts import ensure_artifacts
from testbed.cluster import Artifacts, default_run_dir
from testbed.errors import BuildError, ConfigError
from testbed.progress import Progress
from testbed.record import REPO_ROOT, RunRecord
from testbed.store import Filters, Store
from testbed.suite import Outcome, SuiteRunner, Unit, noisy_cells, plan
from testbed.suitefile import Suite

BUILD_TIMEOUT_S = 3 * 3600  # a cold QEMU build takes minutes; a busy 2-core machine, more


@dataclass(frozen=True)
class Side:
    name: str  # "A" or "B"
    ref: str
    commit: str
    artifacts: Artifacts


def resolve(ref: str, repo: Path = REPO_ROOT) -> str:
    """The commit a ref names; ConfigError if there is none."""
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                        f"{ref}^{{commit}}"], capture_output=True, text=True, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise ConfigError(f"ref {ref!r} does not exist in {repo}",
                          "name a branch, tag or commit (git log --oneline, git branch -a)")
    return r.stdout.strip()


def _head_is_clean_for_build(commit: str) -> bool:
    """True if the working tree builds exactly ``commit``'s QEMU (HEAD, nothing changed)."""
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    if head != commit:
        return False
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--",
                            "qemu-patches", "hyperkernel", "testbed/qemu_build.py"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return not dirty


def export_tree(commit: str) -> Path:
    """``commit``'s files under the cache, extracted once (an interrupted export is redone)."""
    final = cache.cache_root() / "ab-src" / commit
    if (final / ".complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{commit[:12]}-", dir=final.parent) as tmpd:
        tmp = Path(tmpd) / "tree"
        tmp.mkdir()
        archive = Path(tmpd) / "tree.tar"
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", "-o",
                            str(archive), commit], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BuildError(f"cannot export commit {commit[:12]}: {r.stderr.strip()}")
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="tar")
        (tmp / ".complete").write_text(commit + "\n")
        if not final.exists():
            tmp.rename(final)
    return final


# Runs in the exported tree's Python: its own testbed, never the one installed in the
# venv (an editable install would otherwise answer for a tree without a testbed).
_CHILD = """
import sys
tree = sys.argv[1]
sys.path.insert(0, tree)
import testbed
assert testbed.__file__.startswith(tree), testbed.__file__
if sys.argv[2] == "cached":
    from testbed import cache
    from testbed.qemu_build import build_key
    print("cached" if cache.lookup("qemu", build_key()) is not None else "missing")
else:
    from testbed.cli import main
    sys.exit(main(["-q", "build"]))
"""


def _in_tree(tree: Path, what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SDS_QEMU", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-c", _CHILD, str(tree), what], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def build_version(ref: str, commit: str, current: Artifacts, progress: Progress,
                  allow_build: bool = False) -> Artifacts:
    """The artifacts of ``commit``: its QEMU, with the current guest images.

    A QEMU that is not in the cache yet is built only with ``allow_build``: it
    takes minutes of both cores, and every QEMU build shares one work tree in
    the cache, so two at once (another session's, say) would spoil each other.
    """
    if _head_is_clean_for_build(commit):
        return current
    tree = export_tree(commit)
    if not (tree / "testbed" / "cli.py").is_file():
        raise BuildError(f"ref {ref} ({commit[:12]}) does not build: it has no testbed/cli.py",
                         "it predates the harness; compare later versions")
    cached = _in_tree(tree, "cached", 120)
    if cached.returncode != 0:
        tail = "\n  ".join((cached.stdout + cached.stderr).strip().splitlines()[-6:])
        raise BuildError(f"ref {ref} ({commit[:12]}) does not build: its harness fails:\n  {tail}",
                         f"look at {tree}")
    if cached.stdout.strip() != "cached" and not allow_build:
        raise ConfigError(f"ref {ref} ({commit[:12]}) needs a QEMU build (minutes on 2 cores; "
                          "QEMU builds share one work tree, so none may run at the same time)",
                          "run again with --build when no other build is running")
    progress.step("ab", f"building {ref} ({commit[:12]}) in {tree}")
    try:
        r = _in_tree(tree, "build", BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BuildError(f"ref {ref} ({commit[:12]}) did not build within "
                         f"{BUILD_TIMEOUT_S // 60} minutes", f"build it by hand in {tree}") from None
    qemu = re.search(r"^qemu binary: (.+)$", r.stdout, re.MULTILINE)
    if r.returncode != 0 or qemu is None:
        tail = "\n  ".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        raise BuildError(f"ref {ref} ({commit[:12]}) does not build (exit {r.returncode}):\n  {tail}",
                         f"fix that version, or build it by hand in {tree}")
    key = re.search(r"^qemu: (\S+)$", r.stdout, re.MULTILINE)
    return replace(current, qemu=Path(qemu.group(1)),
                   qemu_key=key.group(1) if key else f"{ref}:{commit}")


def run_ab(ref_a: str, ref_b: str, suite: Suite, store: Store, progress: Progress, *,
           iterations: int, only: str | None = None, allow_build: bool = False) -> tuple[Outcome, Outcome,
                                                              list[RunRecord], list[RunRecord]]:
    """Build both refs, run the suite's cells interleaved, return both sides' records."""
    commits = resolve(ref_a), resolve(ref_b)  # both checked before anything builds
    current = ensure_artifacts(progress)
    sides = [Side(name, ref, commit, build_version(ref, commit, current, progress, allow_build))
             for name, ref, commit in (("A", ref_a, commits[0]), ("B", ref_b, commits[1]))]
    for side in sides:
        if any(c.nodes > 1 for c in suite.cells) and not side.artifacts.supports_hyperkernel():
            raise ConfigError(f"ref {side.ref}'s QEMU lacks the hyperkernel object and the suite "
                              "has multi-node cells", "compare 1-node cells only (--only n1/)")
    ab_suite = replace(suite, name=f"ab-{suite.name}", repetitions=iterations,
                       max_repetitions=max(iterations, suite.max_repetitions))
    root = default_run_dir(f"ab-{suite.name}")
    runners = [SuiteRunner(ab_suite, store, side.artifacts, progress, only=only,
                           run_root=root / side.name, tag=f"ab:{side.name}", step=f"ab {side.name}",
                           labels={"ab": {"side": side.name, "ref": side.ref,
                                          "commit": side.commit}})
               for side in sides]
    progress.step("ab", f"A = {ref_a} ({commits[0][:12]}), B = {ref_b} ({commits[1][:12]}); "
                  f"{len(runners[0].units)} boot(s) per side, interleaved; logs in {root}")
    outcomes = [Outcome(r.run) for r in runners]
    units = plan(ab_suite, only=only)
    status = "interrupted"
    try:
        k = 0
        while units:
            for j, unit in enumerate(units):
                order = (0, 1) if k % 2 == 0 else (1, 0)  # A B, B A, A B, ...: drift falls on both
                k += 1
                for i in order:
                    runners[i].run_unit(unit, outcomes[i], units[j + 1:])
            units = _reruns(ab_suite, runners, store, progress)
        status = "done"
    finally:
        for runner, outcome in zip(runners, outcomes, strict=True):
            store.end_suite_run(runner.run.id, status if outcome.ok or status != "done"
                                else "failed")
    records = [_records(store, r) for r in runners]
    return outcomes[0], outcomes[1], records[0], records[1]


def _records(store: Store, runner: SuiteRunner) -> list[RunRecord]:
    return (store.records(Filters(suite_run=runner.run.id, kind="workload")) +
            store.records(Filters(suite_run=runner.run.id, kind="bench")))


def _reruns(suite: Suite, runners: list[SuiteRunner], store: Store, progress: Progress) -> list[Unit]:
    """One more boot on both sides for each cell still too noisy on either (Phoronix-style)."""
    if suite.rerun_cv is None:
        return []
    planned = {c.id: c for c in suite.cells}
    units: dict[tuple[int, str, int], Unit] = {}
    for runner in runners:
        records = store.records(Filters(suite_run=runner.run.id, kind="workload"))
        for cell_id, reps, cv in noisy_cells(records, suite.rerun_cv):
            cell = planned.get(cell_id)
            if cell is None or reps >= suite.max_repetitions:
                continue
            unit = units.setdefault((cell.nodes, cell.policy, reps + 1),
                                    Unit(cell.nodes, cell.policy, reps + 1, []))
            if cell not in unit.cells:
                progress.step("ab", f"{cell_id}: coefficient of variation {cv:.1%} on side "
                              f"{runner.tag} > {suite.rerun_cv:.1%} after {reps} boots; one more "
                              "pair")
                unit.cells.append(cell)
    more = list(units.values())
    for runner in runners:
        runner.total += sum(len(u.cells) for u in more)
    return more
