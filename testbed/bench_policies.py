"""``testbed bench policies``: every policy against 1 node, workload by workload.

One boot of 1 node (the baseline) and one boot of N nodes per policy, in one
run; each boot runs the boot itself and then every chosen workload, at the
sizes of the nightly suite (the first value of any list there). Per cell: the
slowdown against 1 node (throughput on 1 node over throughput on N; for the
boot, time on N over time on 1), the bytes the hyperkernel moved, the stalls,
the vCPU moves by the policy's reason, and ``ok``. Each workload starts with
the vCPUs where the boot placed them (``start_placement`` says where they
were), so no cell inherits what the workloads before it did with them. At the
end of each policy's boot, where every vCPU runs (placement). The boot's own
cell also says what the policy did while the guest booted: its decisions by
reason (``decisions``), where the vCPUs were when the shell came up
(``placement_after``) and, under ``learned``, each node's weight and how it
judged its own moves (``learned``).

When ``private`` is among the workloads, each policy's boot also answers
whether the nodes' CPUs add up: ``private`` with one thread pinned to each
vCPU, against the same threads pinned to node 0's vCPUs, so that they share
that node's CPUs. Spread over squeezed throughput is near N on N nodes; a
policy that gathers the vCPUs on one node, or a cluster whose nodes slow each
other down, shows below it (target 1.8 on 2 nodes). Every policy's spread run
is taken against ``page``'s squeezed run, because ``page`` never moves a vCPU
out of the squeeze.

It ends with one JSON line:
``{"workloads": {NAME: {POLICY: {"ratio", "bytes_moved", "ok", ...}}},
"cpus_add_up": {POLICY: {"ratio", "spread_ops_per_s", "squeezed_ops_per_s", "ok"}},
"summary": {"learned_worst_vs_best", "learned_worst_cell",
"bytes_page_over_learned_geomean", "learned_geomean_slowdown", "cpus_add_up_min",
"unsteady_cells"}}``. ``learned_worst_cell`` names the workload that sets
``learned_worst_vs_best`` and the fixed policy it is measured against; with
``--repeat``, ``unsteady_cells`` lists every ``policy/workload`` whose boots
differ by more than 2x (marked ``~`` in the table), and every such cell of the
1-node baseline as ``1-node/workload``.

Each workload's threads are pinned round-robin over the nodes (thread i on a
vCPU of node i mod N; ``spread_threads``), so threads that share data share it
across nodes, as on a machine whose scheduler spreads them over sockets.

One boot per configuration by default, so one sample per cell on a shared
machine whose boots differ by 20-30%; ``--repeat R`` boots every
configuration R times, in rounds (1 node, then each policy, then again), and
each cell is the median of its R samples (all of them under ``samples``).
"""

from __future__ import annotations

import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

from testbed.cluster import Artifacts, Cluster
from testbed.config import POLICIES, ClusterSpec
from testbed.errors import ConfigError, TestbedError
from testbed.hkdelta import delta, metrics_of
from testbed.progress import Progress
from testbed.record import RunRecord
from testbed.symbolize import name_hottest
from testbed.workloads import WORKLOADS, ParamValue, validate_params

SUITE = Path(__file__).resolve().parent.parent / "suites" / "nightly.toml"
FIXED = ("page", "vcpu", "cost")  # the fixed policies learned is measured against
BOOT = "boot"
# Do the nodes' CPUs add up? ``private`` with one thread per vCPU, spread over
# every node, against the same threads squeezed onto node 0's vCPUs (and so its
# CPUs), in one boot: near N on N nodes, unless the policy collapses the guest.
ADD_UP = "private"
ADD_UP_TARGET = 1.8
ADD_UP_CELL = "cpus_add_up"
# A repeated cell whose boots differ by more than this (largest sample over
# smallest) is flagged: its median is one boot's luck, not the policy's.
UNSTEADY = 2.0


def catalogue_sizes() -> dict[str, dict[str, ParamValue]]:
    """The nightly suite's parameters per workload (a list's first value)."""
    entries = tomllib.loads(SUITE.read_text())["workload"]
    sizes: dict[str, dict[str, ParamValue]] = {}
    for entry in entries:
        params = {k: (v[0] if isinstance(v, list) else v) for k, v in entry.get("params", {}).items()}
        sizes.setdefault(entry["name"], params)
    return sizes


def choose(names: str | None, vcpus: int) -> dict[str, dict[str, ParamValue]]:
    """The workloads to run (all by default, ``boot`` always), checked before any boot."""
    sizes = catalogue_sizes()
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else sorted(WORKLOADS)
    chosen: dict[str, dict[str, ParamValue]] = {}
    for name in wanted:
        if name == BOOT:
            continue
        if name not in WORKLOADS:
            raise ConfigError(f"unknown workload {name!r}",
                              "choose from " + ", ".join(sorted([*WORKLOADS, BOOT])))
        chosen[name] = dict(validate_params(name, {**sizes.get(name, {}), "timeout_s": 300},
                                            vcpus))
    return chosen


def throughput(record: RunRecord) -> float | None:
    """A workload record's ops/s, or None if it has none."""
    m = record.metrics.get("ops_per_s")
    return float(m.samples[0]) if m and m.samples and m.samples[0] > 0 else None


def _cell(record: RunRecord) -> dict[str, Any]:
    hk = record.hk_stats
    decisions = hk.get("decisions", {})
    moves = {k: v for k, v in decisions.items() if k.startswith("vcpu.") and v}
    bytes_moved = record.metrics.get("hk_bytes_sent")
    return {"ok": record.ok, "throughput": throughput(record),
            "bytes_moved": int(bytes_moved.samples[0]) if bytes_moved else 0,
            "stalls": int(hk.get("totals", {}).get("read_stalls", 0)
                          + hk.get("totals", {}).get("write_stalls", 0)),
            "vcpu_moves_by_reason": moves,
            "pulls": int(hk.get("glue", {}).get("pulls", 0)),
            "migrations": int(hk.get("glue", {}).get("vcpu-migrations-in", 0)),
            # ms each vCPU ran on each node during the cell: placement over the run
            "placement_ms": hk.get("vcpu_placement_ms"),
            # a node home to more vCPUs than its CPUs, seen on a tick, and
            # the vCPUs its tick then sent where there was room
            "overfull_ticks": int(hk.get("totals", {}).get("overfull_ticks", 0)),
            "capacity_moves": int(hk.get("totals", {}).get("capacity_moves", 0))}


Cells = dict[str, dict[str, Any]]


def _boot_cell(cluster: Cluster) -> dict[str, Any]:
    """What the boot cost and what the policy did in it, from the nodes' start:
    MB moved, stalls, its decisions by reason, where the vCPUs ended, and under
    ``learned`` each node's weight and how it judged its own moves."""
    nodes = cluster.node_stats()
    hk = delta([], nodes)
    decisions = {k: v for k, v in hk.get("decisions", {}).items() if v}
    sent = metrics_of(hk).get("hk_bytes_sent")
    learned = [{k: n["stats"]["learned"].get(k) for k in ("weight_pct", "moves_good", "moves_bad")}
               for n in nodes if isinstance(n.get("stats", {}).get("learned"), dict)]
    return {"bytes_moved": int(sent[0]) if sent else 0,
            "stalls": int(hk.get("totals", {}).get("read_stalls", 0)
                          + hk.get("totals", {}).get("write_stalls", 0)),
            "vcpu_moves_by_reason": {k: v for k, v in decisions.items() if k.startswith("vcpu.")},
            "decisions": decisions, "placement_after": cluster.vcpu_locations(),
            **({"learned": learned} if learned else {})}


def _restore_placement(cluster: Cluster) -> list[int]:
    """Put the vCPUs back where the boot placed them; returns where they are.

    Every workload then starts from the same placement under every policy,
    and a cell measures what the policy did during that workload, not where
    the workloads before it left the vCPUs (``firstread`` with its writer and
    reader on one node runs 20x faster than with them on two). A vCPU sent to
    a full node is answered by a settled one sent back (node capacity), so
    this takes a few moves; it gives up after three per vCPU.
    """
    want = [cluster.spec.node_of_vcpu(cpu) for cpu in range(cluster.spec.vcpus)]
    where = cluster.vcpu_locations()
    for _ in range(3 * len(want)):
        wrong = [cpu for cpu, node in enumerate(where) if node != want[cpu]]
        if not wrong:
            break
        cluster.migrate_vcpu(wrong[0], want[wrong[0]])
        where = cluster.vcpu_locations()
    return where


def spread_cpus(spec: ClusterSpec) -> str:
    """vCPUs in the order that puts a workload's thread i on node i mod N
    (workloads pin thread i to the i-th vCPU of ``cpus``, round-robin)."""
    per_node = [sorted(cpus) for cpus in spec.vcpu_placement]
    depth = max(map(len, per_node))
    return ",".join(str(cpus[k]) for k in range(depth) for cpus in per_node if k < len(cpus))


def spread_threads(spec: ClusterSpec, chosen: dict[str, dict[str, ParamValue]]
                   ) -> dict[str, dict[str, ParamValue]]:
    """Every workload with its threads spread over the nodes, as a scheduler
    spreads threads over sockets, unless the suite pins them itself.

    In vCPU order, a workload of two threads (pingpong, pchase, sweep) ran
    both on node 0's vCPUs: its shared data never crossed the wire, and its
    cells measured only the guest kernel's pages. Spread, two threads that
    share data share it across nodes, the pathology the policies are for; the
    1-node baseline runs the same threads on the same vCPUs."""
    order = spread_cpus(spec)
    return {name: dict(validate_params(name, {**params, "cpus": params.get("cpus", order)},
                                       spec.vcpus))
            for name, params in chosen.items()}


def add_up_params(spec: ClusterSpec, params: dict[str, ParamValue]
                  ) -> tuple[dict[str, ParamValue], dict[str, ParamValue]]:
    """``private``'s parameters spread (thread i on vCPU i) and squeezed (the
    same threads on node 0's vCPUs), both checked."""
    vcpus = spec.vcpus
    home0 = [cpu for cpu in range(vcpus) if spec.node_of_vcpu(cpu) == 0]
    spread = {**params, "threads": vcpus, "cpus": ",".join(map(str, range(vcpus)))}
    squeezed = {**params, "threads": vcpus, "cpus": ",".join(map(str, home0))}
    return (dict(validate_params(ADD_UP, spread, vcpus)),
            dict(validate_params(ADD_UP, squeezed, vcpus)))


def add_up_cell(spread: RunRecord | None, squeezed: RunRecord | None) -> dict[str, Any]:
    """Spread over squeezed throughput, or why there is none."""
    if spread is None or squeezed is None or not spread.ok or not squeezed.ok:
        return {"ok": False, "ratio": None}
    fast, slow = throughput(spread), throughput(squeezed)
    return {"ok": True, "spread_ops_per_s": fast, "squeezed_ops_per_s": slow,
            "ratio": fast / slow if fast and slow else None}


def squeeze_against_page(add_up: dict[str, dict[str, Any]]) -> None:
    """Measure every policy's spread run against ``page``'s squeezed one.

    A moving policy may un-squeeze its own squeezed run (learned once sent a
    squeezed vCPU to the idle node), which makes any spread look no faster;
    ``page`` never moves a vCPU, so its squeezed run is the one-node figure.
    Without ``page``, each policy's own is used, and the cell says so."""
    page = add_up.get("page", {})
    ref = page.get("squeezed_ops_per_s") if page.get("ok") else None
    for cell in add_up.values():
        if not cell.get("ok"):
            continue
        cell["squeezed_by"] = "page" if ref else "own"
        slow = ref or cell["squeezed_ops_per_s"]
        cell["ratio"] = cell["spread_ops_per_s"] / slow if slow else None


def _cpus_add_up(cluster: Cluster, params: dict[str, ParamValue], progress: Progress,
                 label: str) -> tuple[dict[str, Any], list[RunRecord]]:
    spread_p, squeezed_p = add_up_params(cluster.spec, params)
    runs: list[RunRecord] = []
    for what, p in (("spread", spread_p), ("squeezed onto node 0", squeezed_p)):
        progress.step("bench", f"{label}: {ADD_UP} {what}, cpus={p['cpus']}")
        _restore_placement(cluster)
        try:
            runs.append(cluster.run_workload(ADD_UP, p, guest_timeout=600))
        except TestbedError as e:
            return {"ok": False, "ratio": None, "error": str(e)}, runs
    cell = add_up_cell(*runs)
    cell["placement_after"] = cluster.vcpu_locations()
    return cell, runs


def _run_config(arts: Artifacts, run_dir: Path, spec: ClusterSpec,
                chosen: dict[str, dict[str, ParamValue]], progress: Progress,
                label: str) -> tuple[Cells, list[RunRecord], list[int]]:
    cells: dict[str, dict[str, Any]] = {}
    records: list[RunRecord] = []
    cluster = Cluster(spec, arts, run_dir / label)
    placement: list[int] = []
    try:
        with cluster:
            progress.step("bench", f"{label}: booting {spec.nodes} node(s), {spec.vcpus} vCPUs")
            secs = cluster.boot()
            cells[BOOT] = {"ok": True, "seconds": secs, "bytes_moved": None, "stalls": None,
                           "vcpu_moves_by_reason": {}}
            if spec.uses_hyperkernel:
                cells[BOOT].update(_boot_cell(cluster))
            for name, params in chosen.items():
                progress.step("bench", f"{label}: {name}")
                try:
                    start = _restore_placement(cluster) if spec.uses_hyperkernel else []
                    record = cluster.run_workload(name, params, guest_timeout=600)
                except TestbedError as e:
                    cells[name] = {"ok": False, "error": str(e)}
                    continue
                if spec.nodes > 1:  # which kernel objects its hottest pages hold
                    name_hottest(cluster, record.hk_stats.get("hottest_pages", [])[:5])
                records.append(record)
                cells[name] = {**_cell(record), "start_placement": start}
            if spec.nodes > 1 and ADD_UP in chosen:
                cells[ADD_UP_CELL], runs = _cpus_add_up(cluster, chosen[ADD_UP], progress, label)
                records += runs
            placement = cluster.vcpu_locations() if spec.uses_hyperkernel else [0] * spec.vcpus
            cluster.poweroff()
    except TestbedError as e:
        cells.setdefault(BOOT, {"ok": False, "error": str(e)})
        progress.step("bench", f"{label} failed: {e}")
    return cells, records, placement


def _ratio(name: str, cell: dict[str, Any], base: dict[str, Any]) -> float | None:
    if not cell.get("ok") or not base.get("ok"):
        return None
    if name == BOOT:
        return float(cell["seconds"]) / float(base["seconds"])
    if cell.get("throughput") and base.get("throughput"):
        return float(base["throughput"]) / float(cell["throughput"])
    return None


def add_grids(grids: list[list[list[float]]]) -> list[list[float]]:
    """Element-wise sum of vCPU x node tables (ms run), padded to the largest."""
    rows = max(len(g) for g in grids)
    cols = max((len(r) for g in grids for r in g), default=0)
    out = [[0.0] * cols for _ in range(rows)]
    for g in grids:
        for v, row in enumerate(g):
            for node, ms in enumerate(row):
                out[v][node] = round(out[v][node] + ms, 1)
    return out


def placement_shares(table: dict[str, dict[str, dict[str, Any]]], policy: str
                     ) -> list[list[int]]:
    """Per vCPU, the percent of its run time on each node over every cell of a
    policy: where the vCPUs worked, not only where they ended."""
    grids = [row[policy]["placement_ms"] for row in table.values()
             if row.get(policy, {}).get("placement_ms")]
    if not grids:
        return []
    return [[round(100 * ms / sum(row)) if sum(row) else 0 for ms in row]
            for row in add_grids(grids)]


def merge_repeats(runs: list[Cells]) -> Cells:
    """One configuration's cells from several boots as one: the median of
    each figure, ``ok`` only if every boot's was, and the figures of every
    boot under ``samples``."""
    merged: Cells = {}
    for name in dict.fromkeys(k for cells in runs for k in cells):
        seen = [cells.get(name, {"ok": False, "error": "not run (the boot failed)"})
                for cells in runs]
        cell: dict[str, Any] = {"ok": all(c.get("ok") for c in seen)}
        for key in ("throughput", "seconds", "bytes_moved", "stalls", "pulls", "migrations",
                    "overfull_ticks", "capacity_moves", "spread_ops_per_s", "squeezed_ops_per_s"):
            values = [c[key] for c in seen if c.get(key) is not None]
            if values:
                cell[key] = statistics.median(values)
                if key in ("throughput", "seconds", "spread_ops_per_s", "squeezed_ops_per_s"):
                    cell.setdefault("samples", {})[key] = values
        for key in ("vcpu_moves_by_reason", "decisions"):
            counts: dict[str, int] = {}
            for c in seen:
                for why, count in (c.get(key) or {}).items():
                    counts[why] = counts.get(why, 0) + count
            if counts or key == "vcpu_moves_by_reason":
                cell[key] = counts  # summed over the boots
        grids = [c["placement_ms"] for c in seen if c.get("placement_ms")]
        if grids:
            cell["placement_ms"] = add_grids(grids)  # summed over the boots
        for key in ("start_placement", "placement_after", "learned", "error"):
            found = [c[key] for c in seen if c.get(key) is not None]
            if found:
                cell[key] = found[-1]
        merged[name] = cell
    return merged


def check_args(nodes: int, names: str | None, policies: list[str],
               vcpus: int, repeat: int = 1) -> dict[str, dict[str, ParamValue]]:
    """Every argument checked before a run directory, a build or a boot: the
    workloads to run with their parameters."""
    if repeat < 1:
        raise ConfigError(f"--repeat {repeat} is out of range", "use 1 or more")
    bad = [p for p in policies if p not in POLICIES]
    if bad or not policies:
        raise ConfigError(f"unknown policy {','.join(bad) or '(none given)'}",
                          "valid policies: " + ", ".join(POLICIES))
    if nodes < 2:
        raise ConfigError(f"--nodes {nodes} compares nothing", "use 2 or more (1 node is the baseline)")
    return choose(names, vcpus)


def bench_policies(arts: Artifacts, run_dir: Path, nodes: int, vcpus: int, mem_mib: int,
                   names: str | None, policies: list[str], progress: Progress,
                   cpu_affinity: str = "node", repeat: int = 1, append: str = ""
                   ) -> tuple[dict[str, Any], list[RunRecord]]:
    chosen = check_args(nodes, names, policies, vcpus, repeat)
    base_spec = ClusterSpec(nodes=1, vcpus=vcpus, mem_mib=mem_mib, cpu_affinity=cpu_affinity,
                            boot_timeout=300, append=append).validate()
    specs = {label: ClusterSpec(nodes=nodes, vcpus=vcpus, mem_mib=mem_mib, policy=policy,
                                cpu_affinity=cpu_affinity, append=append,
                                boot_timeout=max(300.0, 100.0 * nodes)).validate()
             for label, policy in ((f"n{nodes}-{p}", p) for p in policies)}
    chosen = spread_threads(next(iter(specs.values())), chosen)
    runs: dict[str, list[Cells]] = {"n1": [], **{label: [] for label in specs}}
    last_placement: dict[str, list[int]] = {}
    records: list[RunRecord] = []
    # every configuration once per round, so drift on the machine hits all alike
    for r in range(repeat):
        suffix = f"-r{r}" if repeat > 1 else ""
        for label, spec in [("n1", base_spec), *specs.items()]:
            cells, recs, placement = _run_config(arts, run_dir, spec, chosen, progress,
                                                 label + suffix)
            runs[label].append(cells)
            records += recs
            last_placement[label] = placement
    base = merge_repeats(runs["n1"])
    table: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in [BOOT, *chosen]}
    placements: dict[str, list[int]] = {}
    add_up: dict[str, dict[str, Any]] = {}
    for policy in policies:
        label = f"n{nodes}-{policy}"
        cells = merge_repeats(runs[label])
        placements[policy] = last_placement[label]
        if ADD_UP in chosen:
            add_up[policy] = cells.pop(ADD_UP_CELL, {"ok": False, "ratio": None,
                                                     "error": "not run (the boot failed)"})
        for name in table:
            cell = cells.get(name, {"ok": False, "error": "not run (the boot failed)"})
            cell["ratio"] = _ratio(name, cell, base.get(name, {}))
            table[name][policy] = cell
    summary = summarize(table, policies, base)
    if add_up:
        squeeze_against_page(add_up)
        ratios = [c["ratio"] for c in add_up.values() if c.get("ratio")]
        summary["cpus_add_up_min"] = min(ratios) if len(ratios) == len(add_up) else None
    print_table(table, policies, nodes, vcpus, placements, summary)
    _print_add_up(add_up, nodes)
    result = {"bench": "policies", "nodes": nodes, "vcpus": vcpus, "mem_mib": mem_mib,
              "repeat": repeat,
              "baseline": {k: {"ok": v.get("ok"), "throughput": v.get("throughput"),
                               "seconds": v.get("seconds"), "samples": v.get("samples")}
                           for k, v in base.items()},
              "workloads": {name: {p: {"ratio": c.get("ratio"), "bytes_moved": c.get("bytes_moved"),
                                       "ok": c.get("ok"), "stalls": c.get("stalls"),
                                       "vcpu_moves_by_reason": c.get("vcpu_moves_by_reason"),
                                       "pulls": c.get("pulls"), "migrations": c.get("migrations"),
                                       "start_placement": c.get("start_placement"),
                                       "samples": c.get("samples")}
                                   for p, c in row.items()} for name, row in table.items()},
              "placement": placements, "summary": summary, ADD_UP_CELL: add_up,
              "ok": all(c.get("ok") for row in table.values() for c in row.values())
              and all(c.get("ok") for c in add_up.values())}
    return result, records


def sample_spread(cell: dict[str, Any]) -> float | None:
    """A repeated cell's largest sample over its smallest (None with fewer
    than two samples)."""
    samples = cell.get("samples") or {}
    values = samples.get("throughput") or samples.get("seconds") or []
    if len(values) < 2 or min(values) <= 0:
        return None
    return float(max(values) / min(values))


def unsteady_cells(table: dict[str, dict[str, dict[str, Any]]],
                   base: Cells | None = None) -> dict[str, float]:
    """``policy/workload`` (``1-node/workload`` for the baseline, which every
    policy's ratio divides by) -> spread, for every cell whose boots disagree
    by more than UNSTEADY: a cell decided by whether one early move happened
    (``firstread`` under ``vcpu``: 34 k and 779 k pages/s in two boots),
    whose median says little about either."""
    cells = [(f"1-node/{name}", cell) for name, cell in (base or {}).items()]
    cells += [(f"{p}/{name}", cell) for name, row in table.items() for p, cell in row.items()]
    return {key: spread for key, cell in cells
            if (spread := sample_spread(cell)) is not None and spread > UNSTEADY}


def summarize(table: dict[str, dict[str, dict[str, Any]]], policies: list[str],
              base: Cells | None = None) -> dict[str, Any]:
    worst: float | None = None
    worst_cell: dict[str, Any] | None = None
    logs: list[float] = []
    for name, row in table.items():
        learned = row.get("learned", {}).get("ratio")
        fixed = {p: row[p]["ratio"] for p in FIXED if p in row and row[p].get("ratio")}
        if learned and fixed:
            best = min(fixed, key=lambda p: fixed[p])
            r = learned / fixed[best]
            if worst is None or r > worst:
                worst = r
                worst_cell = {"workload": name, "learned": learned, "best_policy": best,
                              "best": fixed[best]}
        page_b, learned_b = row.get("page", {}).get("bytes_moved"), row.get("learned", {}).get("bytes_moved")
        if name != BOOT and page_b and learned_b:
            logs.append(math.log(page_b / learned_b))
    slowdowns = [row["learned"]["ratio"] for row in table.values()
                 if row.get("learned", {}).get("ratio")]
    return {"learned_worst_vs_best": worst,
            "learned_worst_cell": worst_cell,
            "unsteady_cells": unsteady_cells(table, base),
            "bytes_page_over_learned_geomean": math.exp(sum(logs) / len(logs)) if logs else None,
            "learned_geomean_slowdown": (math.exp(sum(map(math.log, slowdowns)) / len(slowdowns))
                                         if slowdowns else None),
            "policies": policies}


def _print_add_up(add_up: dict[str, dict[str, Any]], nodes: int) -> None:
    if not add_up:
        return
    print(f"CPUs add up: {ADD_UP}, one thread per vCPU, spread over {nodes} nodes vs squeezed "
          f"onto node 0's vCPUs (target >= {ADD_UP_TARGET}x):")
    for p, c in add_up.items():
        if not c.get("ratio"):
            print(f"  {p:<8} FAILED {c.get('error', '')}")
            continue
        print(f"  {p:<8} {c['ratio']:.2f}x  (spread {c['spread_ops_per_s'] / 1e6:.0f} M ops/s "
              f"against {c.get('squeezed_by')}'s squeezed; its own squeezed "
              f"{c['squeezed_ops_per_s'] / 1e6:.0f}; vCPU -> node after: "
              f"{c.get('placement_after')})")


def boot_line(cell: dict[str, Any]) -> str:
    """What a policy did in the boot, on one line ("" for a boot with no statistics)."""
    if not cell.get("decisions") and not cell.get("placement_after"):
        return ""
    moves = sum(cell.get("vcpu_moves_by_reason", {}).values())
    top = sorted(cell.get("decisions", {}).items(), key=lambda kv: -kv[1])[:5]
    line = (f"{moves or 'no'} vCPU move{'' if moves == 1 else 's'}, vCPU -> node "
            f"{cell.get('placement_after')}; decisions " + ", ".join(f"{k} {v}" for k, v in top))
    learned = cell.get("learned")
    if learned:
        line += ("; learned per node: weight " + "/".join(str(n.get("weight_pct")) for n in learned)
                 + "%, moves judged good " + "/".join(str(n.get("moves_good")) for n in learned)
                 + ", bad " + "/".join(str(n.get("moves_bad")) for n in learned))
    return line


def print_table(table: dict[str, dict[str, dict[str, Any]]], policies: list[str], nodes: int,
                vcpus: int, placements: dict[str, list[int]], summary: dict[str, Any]) -> None:
    print(f"slowdown vs 1 node ({nodes} nodes, {vcpus} vCPUs; lower is better; medians), "
          "MB moved, vCPU moves by the policy:")
    print(f"  {'workload':<12}" + "".join(f"{p:>26}" for p in policies))
    for name, row in table.items():
        line = f"  {name:<12}"
        for p in policies:
            c = row.get(p, {})
            if not c.get("ok"):
                line += f"{'FAILED':>26}"
                continue
            ratio = f"{c['ratio']:.2f}x" if c.get("ratio") else "-"
            mb = f"{c['bytes_moved'] / 1e6:.1f}MB" if c.get("bytes_moved") is not None else ""
            moves = sum(c.get("vcpu_moves_by_reason", {}).values())
            mark = "~" if f"{p}/{name}" in summary.get("unsteady_cells", {}) else ""
            line += f"{ratio + mark + ' ' + mb + (f' m{moves}' if moves else ''):>26}"
        print(line)
    for p in policies:
        line = boot_line(table.get(BOOT, {}).get(p, {}))
        if line:
            print(f"  the boot under {p}: {line}")
    for p, where in placements.items():
        over = sum(int(row.get(p, {}).get("overfull_ticks") or 0) for row in table.values())
        print(f"  placement after {p}: vCPU -> node {where}; ticks that found a node "
              f"over its CPUs: {over}")
        shares = placement_shares(table, p)
        if shares:
            print(f"    {p}: each vCPU's run time by node over the workloads (%): "
                  + ", ".join(f"v{v} " + "/".join(map(str, row)) for v, row in enumerate(shares)))
    unsteady = summary.get("unsteady_cells") or {}
    if unsteady:
        print(f"  ~ unsteady: the boots of these cells differ by more than {UNSTEADY:g}x "
              "(largest sample over smallest): their medians say little about the policy: "
              + ", ".join(f"{k} {v:.1f}x" for k, v in unsteady.items()))
    worst = summary.get("learned_worst_cell")
    if worst:
        cell = (f"{summary.get('learned_worst_vs_best'):.2f}: {worst['workload']}, learned "
                f"{worst['learned']:.2f}x against {worst['best_policy']} {worst['best']:.2f}x")
        steady = all(f"{p}/{worst['workload']}" not in unsteady
                     for p in ("learned", worst["best_policy"], "1-node"))
        print(f"  learned_worst_vs_best is {cell}" + ("" if steady else " (an unsteady cell)"))
    print("summary: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in summary.items()
                                  if k not in ("learned_worst_cell", "unsteady_cells")))
