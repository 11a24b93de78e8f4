"""The guest workload catalogue, as data.

Each workload is a program in the guest (built from ``workloads/src`` by
``workloads/build.sh`` and staged under ``/opt/workloads/bin``). It takes
``key=value`` arguments, checks its own result and prints one line::

    workload=<name> ok=<0|1> <parameters echoed> <figures> [reason=<why>]

This module knows every workload's parameters (the same table the C program
prints with ``--params``; ``tests/test_workload_binaries.py`` checks they
agree), refuses bad input before any guest boots, builds the guest command
line and parses the result line back into a record.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

ParamType = Literal["int", "float", "str", "enum", "cpulist"]
ParamValue = int | float | str

GUEST_BIN = "/opt/workloads/bin"


class WorkloadError(ValueError):
    """Bad workload input (name, parameter, value) or a missing result line."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a workload, with its type, default and valid range."""

    name: str
    type: ParamType
    default: ParamValue | None
    help: str
    min: int | float | None = None
    max: int | float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for error messages and help: name, type, range, default."""
        if self.type == "enum":
            valid = "one of " + "|".join(self.choices)
        elif self.type in ("int", "float"):
            valid = f"{self.type} {self.min}..{self.max}"
        elif self.type == "cpulist":
            valid = "cpu list like 0,1 or 0-3"
        else:
            valid = "text without spaces or '='"
        default = "all vCPUs" if self.default is None else self.default
        return f"{self.name}: {valid}, default {default} ({self.help})"

    def parse(self, raw: ParamValue, vcpus: int | None = None) -> ParamValue:
        """Converts and range-checks one value; raises WorkloadError if invalid."""
        text = str(raw).strip()
        if self.type == "int":
            if isinstance(raw, float) or not re.fullmatch(r"[+-]?\d+", text):
                raise self.error(raw, "is not an integer")
            return self._in_range(int(text), raw)
        if self.type == "float":
            try:
                return self._in_range(float(text), raw)
            except ValueError:
                raise self.error(raw, "is not a number") from None
        if self.type == "enum":
            if text not in self.choices:
                raise self.error(raw, "is not one of " + ", ".join(self.choices))
            return text
        if self.type == "cpulist":
            return format_cpulist(parse_cpulist(text, self, vcpus))
        if not text or re.search(r"[\s=]", text):
            raise self.error(raw, "must be non-empty without spaces or '='")
        return text

    def _in_range(self, value: int | float, raw: ParamValue) -> int | float:
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.error(raw, f"is out of range [{self.min}, {self.max}]")
        return value

    def error(self, raw: ParamValue, why: str) -> WorkloadError:
        return WorkloadError(f"{self.name}={raw} {why}; expected {self.describe()}")


def parse_cpulist(text: str, spec: ParamSpec, vcpus: int | None = None) -> list[int]:
    """Parses '0,2-3' into [0, 2, 3]; every CPU must exist if vcpus is known."""
    cpus: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not match:
            raise spec.error(text, "is not a cpu list")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if hi < lo:
            raise spec.error(text, "has a descending range")
        cpus.extend(range(lo, hi + 1))
    if vcpus is not None and any(c >= vcpus for c in cpus):
        raise spec.error(text, f"names a cpu beyond the guest's {vcpus} vCPUs (0-{vcpus - 1})")
    return cpus


def format_cpulist(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


Constraint = Callable[[Mapping[str, ParamValue]], str | None]


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload: what it stresses, how the guest runs it, its parameters."""

    name: str
    description: str
    params: tuple[ParamSpec, ...]
    command: str = ""
    # Checks across parameters; returns a message when the combination is invalid.
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        if not self.command:
            object.__setattr__(self, "command", f"{GUEST_BIN}/{self.name}")

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise WorkloadError(
            f"workload {self.name!r} has no parameter {name!r}; valid parameters:\n" + self.describe_params()
        )

    def describe_params(self) -> str:
        return "\n".join("  " + p.describe() for p in self.params)


def _int(name: str, default: int, lo: int, hi: int, help: str) -> ParamSpec:
    return ParamSpec(name, "int", default, help, lo, hi)


def _enum(name: str, default: str, choices: str, help: str) -> ParamSpec:
    return ParamSpec(name, "enum", default, help, choices=tuple(choices.split(",")))


# Every workload accepts these (workloads/src/common.c appends them).
COMMON_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "cpus",
        "cpulist",
        None,
        "vCPUs to pin threads to, round-robin (e.g. 0,1 or 0-3); default all usable",
    ),
    _int("inject", 0, 0, 1, "1 corrupts one value on purpose: the check must report ok=0"),
    _int("timeout_s", 300, 1, 86400, "watchdog: report ok=0 reason=timeout after this long"),
)


def _spsc_pairs(params: Mapping[str, ParamValue]) -> str | None:
    if params["queue"] == "spsc" and params["producers"] != params["consumers"]:
        return (
            "queue=spsc needs producers == consumers "
            f"(got {params['producers']} and {params['consumers']}); use queue=mpmc otherwise"
        )
    return None


def _workload(
    name: str, description: str, *params: ParamSpec, constraint: Constraint | None = None
) -> WorkloadSpec:
    return WorkloadSpec(name, description, params + COMMON_PARAMS, constraint=constraint)


_CATALOGUE = (
    _workload(
        "private",
        "control: each thread updates its own buffer",
        _int("threads", 2, 1, 256, "worker threads, each with its own buffer"),
        _int("size_kb", 4096, 4, 1048576, "buffer size per thread in KiB"),
        _int("passes", 8, 1, 100000, "read-modify-write passes over each buffer"),
    ),
    _workload(
        "falseshare",
        "per-thread counters 8, 64 or 4096 bytes apart",
        _int("threads", 2, 1, 256, "threads, one counter each"),
        _enum("spacing", "64", "8,64,4096", "bytes between neighbouring counters"),
        _int("iters", 2000000, 1, 10000000000, "increments per thread"),
    ),
    _workload(
        "pingpong",
        "one word handed back and forth between two vCPUs",
        _int("rounds", 5000, 1, 100000000, "round trips (two hand-offs each)"),
    ),
    _workload(
        "lock",
        "many threads on one lock",
        _int("threads", 2, 1, 256, "threads contending for the lock"),
        _int("iters", 100000, 1, 1000000000, "acquisitions per thread"),
        _enum("kind", "mutex", "mutex,spin", "pthread mutex, or a test-and-test-and-set spinlock"),
        _int("hold", 10, 0, 1000000, "work units done while holding the lock"),
    ),
    _workload(
        "sweep",
        "sequential verify-and-rewrite passes over a large region",
        _int("threads", 1, 1, 256, "threads; slices rotate between them each pass"),
        _int("size_mb", 64, 1, 65536, "region size in MiB"),
        _int("passes", 4, 1, 100000, "verify-and-rewrite passes"),
    ),
    _workload(
        "pchase",
        "dependent random loads around one random cycle",
        _int("threads", 1, 1, 256, "threads chasing the same cycle from different starts"),
        _int("size_mb", 16, 1, 65536, "working set in MiB (64-byte nodes)"),
        _int("cycles", 2, 1, 100000, "full cycles each thread chases"),
        _int("seed", 1, 0, 1000000000, "seed of the random permutation"),
    ),
    _workload(
        "prodcons",
        "bounded queues between producer and consumer threads",
        _int("producers", 1, 1, 64, "producer threads"),
        _int("consumers", 1, 1, 64, "consumer threads (spsc: must equal producers)"),
        _enum(
            "queue",
            "spsc",
            "spsc,mpmc",
            "one ring per producer/consumer pair, or one shared ring",
        ),
        _int("depth", 256, 2, 1048576, "slots per ring (rounded up to a power of two)"),
        _int("items", 200000, 1, 1000000000, "items sent by each producer"),
        constraint=_spsc_pairs,
    ),
    _workload(
        "lmat",
        "read-mostly lookups while a compactor rewrites the whole table",
        _int("readers", 2, 1, 256, "lookup threads"),
        _int("table_mb", 16, 1, 65536, "table size in MiB (64-byte records)"),
        _enum("mode", "inplace", "inplace,swap", "compaction rewrites in place, or copies and swaps"),
        _int("duration_ms", 2000, 10, 3600000, "how long the readers run"),
        _int("period_ms", 500, 0, 3600000, "pause between compactions"),
        _int("write_pct", 1, 0, 100, "percent of lookups that update the record"),
        _int("seed", 1, 0, 1000000000, "seed of the readers' random keys"),
    ),
    _workload(
        "clock",
        "CLOCK_MONOTONIC and the TSC never step back, per vCPU and across vCPUs",
        _int("duration_ms", 2000, 10, 3600000, "how long each thread reads the clocks"),
    ),
    _workload(
        "smc",
        "code rewritten on one vCPU and called on another (cross-modifying code)",
        _int("rounds", 1000, 1, 10000000, "rewrite-and-call rounds"),
        _int("race", 0, 0, 1, "1: the caller translates while the store waits for its page "
             "(cpus=0,1,2: a third thread on the other node reads the code page)"),
    ),
    _workload(
        "firstread",
        "pages written on one vCPU, read for the first time on another: latency and streaming",
        _int("pages", 1000, 1, 1000000,
             "pages written on the first cpu, each read once (timed) on the second"),
        _int("stream_mb", 64, 1, 65536,
             "MiB written on the first cpu, then read through once on the second"),
    ),
    _workload(
        "sqlite",
        "SQLite: transactions, indexed lookups, updates, integrity_check, checksum",
        _int("rows", 2000, 10, 10000000, "rows inserted"),
        _int("batch", 100, 1, 1000000, "rows per transaction for inserts and updates"),
        _int("lookups", 2000, 0, 100000000, "random lookups through the index"),
        _int("updates", 500, 0, 100000000, "random updates through the index"),
        _enum("journal", "delete", "delete,truncate,wal,memory", "journal_mode"),
        ParamSpec("db", "str", "/tmp/wl-sqlite.db", "database file (put it on tmpfs)"),
        _int("seed", 1, 0, 1000000000, "seed of the random lookups and updates"),
    ),
    _workload(
        "redis",
        "redis-server and redis-benchmark over loopback; data set verified",
        _int("requests", 2000, 1, 100000000, "redis-benchmark requests per test (SET and GET)"),
        _int("clients", 4, 1, 1000, "redis-benchmark parallel connections"),
        _int("pipeline", 1, 1, 1000, "redis-benchmark requests per round trip"),
        _int("keys", 1000, 1, 10000000, "keys in the verified data set"),
        _int("value_size", 64, 1, 1048576, "bytes per value"),
        _int("port", 6399, 1024, 65535, "server port on 127.0.0.1"),
        ParamSpec(
            "redis_dir",
            "str",
            "/opt/redis",
            "staged tree with bin/ and lib/ (loader included)",
        ),
    ),
)

WORKLOADS: dict[str, WorkloadSpec] = {w.name: w for w in _CATALOGUE}


def get_workload(name: str) -> WorkloadSpec:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise WorkloadError(
            f"unknown workload {name!r}; valid workloads: " + ", ".join(sorted(WORKLOADS))
        ) from None


def validate_params(
    name: str, params: Mapping[str, ParamValue], vcpus: int | None = None
) -> dict[str, ParamValue]:
    """Checks a workload's parameters and fills in the defaults.

    Returns every parameter with a value, in the catalogue's order (``cpus``
    only if given: its default is all vCPUs). With ``vcpus``, a cpus list
    naming a CPU the guest does not have is refused too. Raises WorkloadError
    naming the valid workloads, parameters, ranges or choices.
    """
    spec = get_workload(name)
    for key in params:
        spec.param(key)  # raises with the list of valid parameters
    values: dict[str, ParamValue] = {}
    for p in spec.params:
        if p.name in params:
            values[p.name] = p.parse(params[p.name], vcpus)
        elif p.default is not None:
            values[p.name] = p.default
    if spec.constraint is not None:
        problem = spec.constraint(values)
        if problem:
            raise WorkloadError(f"{name}: {problem}")
    return values


def guest_command(name: str, params: Mapping[str, ParamValue] | None = None, vcpus: int | None = None) -> str:
    """The shell command line (for busybox sh) that runs a workload in the guest."""
    spec = get_workload(name)
    values = validate_params(name, params or {}, vcpus)
    args = [shlex.quote(f"{k}={v}") for k, v in values.items()]
    return " ".join([spec.command, *args])


@dataclass(frozen=True)
class WorkloadResult:
    """A workload's result line, parsed."""

    name: str
    ok: bool
    fields: dict[str, ParamValue] = field(default_factory=dict)
    raw: str = ""

    @property
    def reason(self) -> str | None:
        reason = self.fields.get("reason")
        return None if reason is None else str(reason)

    def params(self) -> dict[str, ParamValue]:
        """The parameters the workload echoed (those in its catalogue entry)."""
        names = {p.name for p in get_workload(self.name).params}
        return {k: v for k, v in self.fields.items() if k in names}

    def figures(self) -> dict[str, ParamValue]:
        """Everything else: measurements and check counters."""
        names = {p.name for p in get_workload(self.name).params} | {"workload", "ok"}
        return {k: v for k, v in self.fields.items() if k not in names}


# The console may prefix the line with other output (a prompt, a kernel message).
_RESULT_LINE = re.compile(r"workload=(\S+) ok=([01])(?:\s|$).*")


def _convert(text: str) -> ParamValue:
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", text):
        return float(text)
    return text


def parse_result(output: str, name: str | None = None) -> WorkloadResult:
    """Finds the last result line in a workload's output (or a console log).

    With ``name``, only that workload's line counts. Raises WorkloadError if
    there is none.
    """
    found: re.Match[str] | None = None
    for line in output.replace("\r", "\n").splitlines():
        match = _RESULT_LINE.search(line)
        if match and (name is None or match.group(1) == name):
            found = match
    if found is None:
        what = f"workload {name!r}" if name else "any workload"
        raise WorkloadError(f"no result line (workload=... ok=0|1) from {what} in the output")
    line = found.group(0).strip()
    # Text-valued parameters stay text even when they look numeric (cpus=0, spacing=64).
    spec = WORKLOADS.get(found.group(1))
    text_params = {p.name for p in spec.params if p.type in ("str", "enum", "cpulist")} if spec else set()
    fields: dict[str, ParamValue] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value if key in text_params else _convert(value)
    return WorkloadResult(name=found.group(1), ok=found.group(2) == "1", fields=fields, raw=line)
