"""Suite files: a TOML matrix of node counts x policies x workloads x repetitions.

::

    [suite]
    name = "smoke"                 # names the suite in the store
    description = "..."
    nodes = [1, 2]                 # node counts
    policies = ["page"]            # stall policies for multi-node cells (testbed.config.POLICIES)
    repetitions = 2                # fresh boots per (nodes, policy): samples of each cell
    runs = 1                       # runs of each cell in one boot; their median is the
                                   #   boot's sample (transient load spikes fall out)
    vcpus = 2
    mem = "512M"
    boot_timeout = 300             # seconds
    cell_timeout = 300             # seconds a workload may run in the guest
    rerun_cv = 0.10                # optional: rerun a cell while the coefficient of
    max_repetitions = 5            #   variation of its ops_per_s stays above this

    [[workload]]
    name = "falseshare"
    params = { iters = 50000, spacing = ["8", "4096"] }   # a list is one more matrix axis
    nodes = [2]                    # optional: only these of the suite's node counts
    policies = ["page"]            # optional: only these of the suite's policies

A 1-node cell runs without the hyperkernel, so it has no policy: it runs once
whatever ``policies`` says. Everything is checked before anything boots; an
error names the file and line.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import workloads
from testbed.config import MAX_NODES, POLICIES, ClusterSpec, parse_size_mib
from testbed.errors import ConfigError

SUITE_KEYS = {
    "name": "the suite's name in the store",
    "description": "one line about the suite",
    "nodes": "list of node counts, e.g. [1, 2, 4]",
    "policies": f"list of policies, from {list(POLICIES)}",
    "repetitions": "fresh boots per node count and policy (samples per cell)",
    "runs": "runs of each cell in one boot (their median is that boot's sample)",
    "vcpus": "guest vCPUs",
    "mem": "guest RAM, e.g. \"512M\"",
    "boot_timeout": "seconds a boot may take",
    "cell_timeout": "seconds a workload may run in the guest",
    "rerun_cv": "rerun a cell while its ops_per_s coefficient of variation is above this",
    "max_repetitions": "the most repetitions reruns may reach",
}
WORKLOAD_KEYS = {
    "name": "a catalogue workload (testbed workload list)",
    "params": "a table of parameters; a list value makes a matrix axis",
    "nodes": "optional subset of the suite's node counts",
    "policies": "optional subset of the suite's policies",
}
TOP_KEYS = {"suite": "the [suite] table", "workload": "one [[workload]] table per workload"}


class SuiteError(ConfigError):
    """A suite file that cannot run; the message starts with file:line."""


@dataclass(frozen=True)
class Cell:
    """One workload with one set of parameters on one cluster shape."""

    workload: str
    params: dict[str, workloads.ParamValue]  # as given in the suite (defaults left out)
    nodes: int
    policy: str  # "none" on one node

    @property
    def id(self) -> str:
        given = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.workload}{'[' + given + ']' if given else ''}@n{self.nodes}/{self.policy}"

    @property
    def group(self) -> tuple[int, str]:
        return self.nodes, self.policy


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    sha256: str
    nodes: tuple[int, ...]
    policies: tuple[str, ...]
    repetitions: int
    vcpus: int
    mem_mib: int
    boot_timeout: float
    cell_timeout: float
    rerun_cv: float | None
    max_repetitions: int
    cells: tuple[Cell, ...] = field(default=())
    runs: int = 1

    def spec(self, nodes: int, policy: str) -> ClusterSpec:
        return ClusterSpec(nodes=nodes, vcpus=self.vcpus, mem_mib=self.mem_mib,
                           boot_timeout=self.boot_timeout,
                           policy=policy if policy != "none" else "page").validate()

    @property
    def groups(self) -> list[tuple[int, str]]:
        """(nodes, policy) in the order cells name them."""
        seen: list[tuple[int, str]] = []
        for cell in self.cells:
            if cell.group not in seen:
                seen.append(cell.group)
        return seen


# -- where a key is written ---------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_\-]+)\s*=")


class _Lines:
    """Maps a key path like ('workload', 1, 'params', 'rounds') to its line number."""

    def __init__(self, text: str) -> None:
        self.where: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        arrays: dict[str, int] = {}
        for n, line in enumerate(text.splitlines(), start=1):
            h = _HEADER.match(line)
            if h:
                parts = [p.strip().strip("\"'") for p in h.group(2).split(".")]
                if h.group(1) == "[[":
                    arrays[parts[0]] = arrays.get(parts[0], -1) + 1
                    table = (parts[0], arrays[parts[0]], *parts[1:])
                elif parts[0] in arrays and len(parts) > 1:
                    table = (parts[0], arrays[parts[0]], *parts[1:])
                else:
                    table = tuple(parts)
                self.where.setdefault(table, n)
                continue
            k = _KEY.match(line)
            if k:
                key = tuple(p.strip().strip("\"'") for p in k.group(1).split("."))
                self.where.setdefault(table + key, n)
                for inner in _INLINE_KEY.findall(line[k.end() - 1:]):
                    self.where.setdefault(table + key + (inner,), n)

    def line(self, path: tuple[Any, ...]) -> int:
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return 1


def _fail(path: Path, lines: _Lines, where: tuple[Any, ...], message: str, hint: str = "") -> SuiteError:
    return SuiteError(f"{path}:{lines.line(where)}: {message}", hint)


def _list_of(value: Any, kind: type, path: Path, lines: _Lines, where: tuple[Any, ...]) -> list[Any]:
    if isinstance(value, kind) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
            isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise _fail(path, lines, where, f"{where[-1]} must be a non-empty list of "
                    f"{kind.__name__}s, got {value!r}")
    return value


def _number(value: Any, path: Path, lines: _Lines, where: tuple[Any, ...], *, minimum: float,
            integer: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (integer and not isinstance(value, int)):
        what = "a whole number" if integer else "a number"
        raise _fail(path, lines, where, f"{where[-1]} must be {what} >= {minimum}, got {value!r}")
    return float(value)


def _unknown(path: Path, lines: _Lines, where: tuple[Any, ...], key: str, known: dict[str, str],
             what: str) -> SuiteError:
    return _fail(path, lines, (*where, key), f"unknown {what} {key!r}",
                 "valid: " + ", ".join(f"{k} ({v})" for k, v in known.items()))


def load_suite(path: Path) -> Suite:
    """Read and check a suite file; raises SuiteError naming file:line."""
    try:
        data_bytes = path.read_bytes()
    except OSError as e:
        raise SuiteError(f"{path}: cannot read the suite file: {e.strerror}",
                         "give the path of a .toml suite, e.g. suites/smoke.toml") from None
    text = data_bytes.decode(errors="replace")
    lines = _Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        raise SuiteError(f"{path}:{m.group(1) if m else 1}: not valid TOML: {e}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(path, lines, (), key, TOP_KEYS, "top-level key")
    top = data.get("suite")
    if not isinstance(top, dict):
        raise _fail(path, lines, (), "the file has no [suite] table", "see suites/smoke.toml")
    for key in top:
        if key not in SUITE_KEYS:
            raise _unknown(path, lines, ("suite",), key, SUITE_KEYS, "[suite] key")
    at = ("suite",)
    name = top.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise _fail(path, lines, (*at, "name"), f"name {name!r} must be letters, digits, -_. only")
    nodes = [int(n) for n in _list_of(top.get("nodes", [1]), int, path, lines, (*at, "nodes"))]
    for n in nodes:
        if not 1 <= n <= MAX_NODES:
            raise _fail(path, lines, (*at, "nodes"), f"node count {n} is out of range",
                        f"use 1 to {MAX_NODES}")
    policies = _list_of(top.get("policies", ["page"]), str, path, lines, (*at, "policies"))
    for p in policies:
        if p not in POLICIES:
            raise _fail(path, lines, (*at, "policies"), f"unknown policy {p!r}",
                        "valid policies: " + ", ".join(POLICIES))
    repetitions = int(_number(top.get("repetitions", 1), path, lines, (*at, "repetitions"),
                              minimum=1, integer=True))
    runs = int(_number(top.get("runs", 1), path, lines, (*at, "runs"), minimum=1, integer=True))
    vcpus = int(_number(top.get("vcpus", 2), path, lines, (*at, "vcpus"), minimum=1, integer=True))
    mem = top.get("mem", "512M")
    try:
        mem_mib = parse_size_mib(str(mem))
    except ConfigError as e:
        raise _fail(path, lines, (*at, "mem"), e.message, e.hint) from None
    boot_timeout = _number(top.get("boot_timeout", 300), path, lines, (*at, "boot_timeout"),
                           minimum=1)
    cell_timeout = _number(top.get("cell_timeout", 600), path, lines, (*at, "cell_timeout"),
                           minimum=1)
    rerun_cv = top.get("rerun_cv")
    if rerun_cv is not None:
        rerun_cv = _number(rerun_cv, path, lines, (*at, "rerun_cv"), minimum=0)
    max_reps = int(_number(top.get("max_repetitions", repetitions), path, lines,
                           (*at, "max_repetitions"), minimum=repetitions, integer=True))
    for n in nodes:  # the cluster shapes must be valid for every node count and policy
        for p in policies:
            try:
                ClusterSpec(nodes=n, vcpus=vcpus, mem_mib=mem_mib, boot_timeout=boot_timeout,
                            policy=p).validate()
            except ConfigError as e:
                raise _fail(path, lines, (*at, "nodes"), f"{n} node(s): {e.message}",
                            e.hint) from None

    entries = data.get("workload", [])
    if not isinstance(entries, list) or not entries:
        raise _fail(path, lines, (), "the suite names no workload",
                    "add [[workload]] tables with name = \"...\"")
    cells: list[Cell] = []
    for i, entry in enumerate(entries):
        cells += _workload_cells(entry, i, path, lines, nodes, policies, vcpus)
    seen: set[str] = set()
    for cell in cells:
        if cell.id in seen:
            raise _fail(path, lines, ("workload",), f"cell {cell.id} appears twice",
                        "give each [[workload]] different params")
        seen.add(cell.id)
    # Group order: node counts as written, policies as written; cells of a group together.
    order = {(n, p): k for k, (n, p) in enumerate(
        itertools.product(nodes, ["none", *policies]))}
    cells.sort(key=lambda c: order[c.group])
    return Suite(name=name, description=str(top.get("description", "")), path=path,
                 sha256=hashlib.sha256(data_bytes).hexdigest(), nodes=tuple(nodes),
                 policies=tuple(policies), repetitions=repetitions, vcpus=vcpus,
                 mem_mib=mem_mib, boot_timeout=boot_timeout, cell_timeout=cell_timeout,
                 rerun_cv=rerun_cv, max_repetitions=max_reps, cells=tuple(cells), runs=runs)


def _workload_cells(entry: Any, i: int, path: Path, lines: _Lines, nodes: list[int],
                    policies: list[str], vcpus: int) -> list[Cell]:
    at: tuple[Any, ...] = ("workload", i)
    if not isinstance(entry, dict):
        raise _fail(path, lines, at, "a [[workload]] entry must be a table")
    for key in entry:
        if key not in WORKLOAD_KEYS:
            raise _unknown(path, lines, at, key, WORKLOAD_KEYS, "[[workload]] key")
    name = entry.get("name")
    if not isinstance(name, str) or name not in workloads.WORKLOADS:
        raise _fail(path, lines, (*at, "name"), f"unknown workload {name!r}",
                    "valid workloads: " + ", ".join(sorted(workloads.WORKLOADS)))
    spec = workloads.WORKLOADS[name]
    raw = entry.get("params", {})
    if not isinstance(raw, dict):
        raise _fail(path, lines, (*at, "params"), "params must be a table, e.g. { threads = 2 }")
    axes: list[list[tuple[str, workloads.ParamValue]]] = []
    for key, value in raw.items():
        where = (*at, "params", key)
        try:
            spec.param(key)
        except workloads.WorkloadError:
            raise _fail(path, lines, where, f"workload {name!r} has no parameter {key!r}",
                        "valid parameters: " + ", ".join(p.name for p in spec.params)) from None
        values = value if isinstance(value, list) else [value]
        if not values:
            raise _fail(path, lines, where, f"{key} is an empty list")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                raise _fail(path, lines, where, f"{key}={v!r} must be a number or text")
        axes.append([(key, v) for v in values])
    combos = [dict(c) for c in itertools.product(*axes)] if axes else [{}]
    for combo in combos:
        try:
            workloads.validate_params(name, combo, vcpus)
        except workloads.WorkloadError as e:
            key = next((k for k in combo if f"{k}=" in str(e)), None)
            raise _fail(path, lines, at + (("params", key) if key else ("params",)),
                        str(e)) from None
    my_nodes = nodes
    if "nodes" in entry:
        my_nodes = [int(n) for n in _list_of(entry["nodes"], int, path, lines, (*at, "nodes"))]
        extra = [n for n in my_nodes if n not in nodes]
        if extra:
            raise _fail(path, lines, (*at, "nodes"), f"node counts {extra} are not in the "
                        f"suite's nodes {nodes}", "a workload may only narrow the matrix")
    my_policies = policies
    if "policies" in entry:
        my_policies = _list_of(entry["policies"], str, path, lines, (*at, "policies"))
        extra_p = [p for p in my_policies if p not in policies]
        if extra_p:
            raise _fail(path, lines, (*at, "policies"), f"policies {extra_p} are not in the "
                        f"suite's policies {policies}", "a workload may only narrow the matrix")
    out = []
    for n in my_nodes:
        for policy in (["none"] if n == 1 else my_policies):
            for combo in combos:
                out.append(Cell(workload=name, params=dict(combo), nodes=n, policy=policy))
    return out


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard {text!r} is not i/N with 1 <= i <= N", "e.g. --shard 1/2")
    return int(m.group(1)), int(m.group(2))
