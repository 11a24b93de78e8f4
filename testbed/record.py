"""Run records: one versioned JSON object per run, the unit of the results store.

Schema version 1 (``SCHEMA_VERSION``)::

    {
      "schema_version": 1,
      "id": "<32 hex>",            # unique per run; importing the same record twice is a no-op
      "kind": "workload" | "run" | "bench" | "demo",
      "name": "<workload, bench or command name>",
      "ok": true, "reason": null,  # reason says why ok is false
      "started": "<ISO 8601>", "duration_s": 12.3,
      "metrics": {"<name>": {"unit": "ops/s", "direction": "higher|lower|info",
                             "samples": [1.0, ...]}},
      "dimensions": {
        "nodes": 2, "vcpus": 2, "mem_mib": 512, "placement": [[0], [1]],
        "budget_mib": [512, 512], "policy": "page" | "vcpu" | "none", "hyperkernel": true,
        "params": {...workload or bench parameters...},
        "artifacts": {"qemu": "<sha256 of the binary>", "kernel": "<sha256>",
                      "initramfs": "<sha256>"},
        "build": {"qemu_key": "<input hash of the QEMU build>"},
        "commit": "<git commit>[-dirty]", "host": {"hostname": ..., "kernel": ..., "cpus": ...}
      },
      "hk_stats": {...hyperkernel statistics of this run, after minus before (testbed.hkdelta)...},
      "labels": {"suite": ..., "suite_run": ..., "cell": ..., "repetition": ...},
      "output": "<the workload's result line or the command's output (tail)>",
      "run_dir": "<logs>", "argv": ["testbed", ...], "failure": "<log tails when ok is false>"
    }

Reading a record of another schema version is refused (``RecordError``): a
newer testbed may have changed what a field means, and a silent misreading
would corrupt comparisons. Bump ``SCHEMA_VERSION`` whenever a field changes
meaning or shape.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.cmdline import guest_append
from testbed.errors import RecordError
from testbed.metrics import Metric, from_figures, metric

if TYPE_CHECKING:
    from testbed.cluster import Artifacts, Cluster
    from testbed.config import ClusterSpec
    from testbed.shell import CommandResult

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent
KINDS = ("workload", "run", "bench", "demo")
OUTPUT_LIMIT = 8000  # characters of command output kept in a record


@functools.cache
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def host_info() -> dict[str, Any]:
    return {"hostname": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "python": platform.python_version()}


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def artifact_dimensions(arts: Artifacts) -> tuple[dict[str, str], dict[str, str]]:
    """(artifacts, build): hashes of the files that ran, and the QEMU build's input key.

    The input key says which sources were built; the file hash says which binary
    actually ran (a rebuild with another compiler differs here, not there).
    """
    files = {"qemu": file_sha256(arts.qemu),
             "kernel": file_sha256(arts.images.kernel_path),
             "initramfs": file_sha256(arts.images.initramfs_path)}
    return files, {"qemu_key": arts.qemu_key}


def spec_dimensions(spec: ClusterSpec) -> dict[str, Any]:
    """The cluster's shape. Without the hyperkernel there is no policy to speak of."""
    return {"nodes": spec.nodes, "vcpus": spec.vcpus, "mem_mib": spec.mem_mib,
            "placement": [list(c) for c in spec.vcpu_placement],
            "budget_mib": list(spec.budgets_mib),
            "policy": spec.policy if spec.uses_hyperkernel else "none",
            "hyperkernel": spec.uses_hyperkernel,
            "guest_numa": spec.numa_layout is not None,
            # what the guest kernel was told; the user's part is also identity
            "guest_cmdline": guest_append(spec),
            **({"append": spec.append} if spec.append else {}),
            # each stall written to a file: a cost of its own
            **({"fault_trace": True} if spec.fault_trace else {})}


def utc_now() -> str:
    """ISO 8601 in UTC: records from hosts in different time zones sort by when they ran."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunRecord:
    """What one run did and measured, with everything needed to compare it later."""

    kind: str
    name: str
    ok: bool
    metrics: dict[str, Metric] = field(default_factory=dict)
    dimensions: dict[str, Any] = field(default_factory=dict)
    hk_stats: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    output: str = ""
    run_dir: str = ""
    argv: list[str] = field(default_factory=lambda: ["testbed", *sys.argv[1:]])
    failure: str = ""
    started: str = field(default_factory=utc_now)
    duration_s: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION

    # -- building ---------------------------------------------------------
    @classmethod
    def for_cluster(cls, cluster: Cluster, kind: str, name: str, ok: bool,
                    params: dict[str, Any] | None = None, **fields: Any) -> RunRecord:
        """A record with the dimensions of ``cluster`` filled in."""
        record = cls(kind=kind, name=name, ok=ok, run_dir=str(cluster.run_dir), **fields)
        record.dimensions = dimensions(cluster.spec, cluster.artifacts, params or {})
        if cluster.knobs:  # turned while the guest ran (Cluster.set_knob)
            record.dimensions["knobs"] = dict(cluster.knobs)
        return record

    def add(self, name: str, *samples: float, unit: str | None = None,
            direction: Any = None) -> None:
        """Add samples to a metric (created with its unit and direction if new).

        NaN and infinite samples are dropped: they mean "not measured", and JSON
        cannot carry them.
        """
        samples = tuple(s for s in samples if math.isfinite(s))
        if name in self.metrics:
            self.metrics[name].samples.extend(float(s) for s in samples)
        else:
            self.metrics[name] = metric(name, *samples, unit=unit, direction=direction)

    def add_figures(self, figures: dict[str, Any]) -> None:
        for name, m in from_figures(figures).items():
            self.add(name, *m.samples, unit=m.unit, direction=m.direction)

    def add_hk_stats(self, stats_delta: dict[str, Any]) -> None:
        """Attach the run's hyperkernel statistics and their headline figures as metrics."""
        from testbed.hkdelta import metrics_of

        self.hk_stats = stats_delta
        for name, (value, unit) in metrics_of(stats_delta).items():
            self.add(name, value, unit=unit, direction="lower")

    # -- views the rest of the harness reads -------------------------------
    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.dimensions.get("params", {})
        return params

    @property
    def artifacts(self) -> dict[str, str]:
        arts: dict[str, str] = self.dimensions.get("artifacts", {})
        return arts

    @property
    def cluster(self) -> dict[str, Any]:
        """The cluster's shape (nodes, vcpus, ...), without params and provenance."""
        skip = {"params", "artifacts", "build", "commit", "host"}
        return {k: v for k, v in self.dimensions.items() if k not in skip}

    @property
    def figures(self) -> dict[str, float]:
        """Each metric's median, for printing."""
        return {k: m.value for k, m in self.metrics.items()}

    @property
    def raw(self) -> str:
        return self.output

    # -- (de)serialising ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "id": self.id, "kind": self.kind,
            "name": self.name, "ok": self.ok, "reason": self.reason, "started": self.started,
            "duration_s": self.duration_s,
            "metrics": {k: m.to_dict() for k, m in sorted(self.metrics.items())},
            "dimensions": self.dimensions, "hk_stats": self.hk_stats, "labels": self.labels,
            "output": self.output[-OUTPUT_LIMIT:], "run_dir": self.run_dir, "argv": self.argv,
            "failure": self.failure,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, allow_nan=False,
                          default=_json_default)

    def write(self, path: Path) -> Path:
        """Write atomically (a reader never sees half a record)."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_json(indent=2) + "\n")
        tmp.rename(path)
        return path

    def write_to_run_dir(self) -> Path:
        """``<run_dir>/record-<kind>-<name>-<id8>.json``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)[:40]
        return self.write(Path(self.run_dir) / f"record-{self.kind}-{safe}-{self.id[:8]}.json")

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> RunRecord:
        """Parse and check a record; refuses other schema versions and damaged records."""
        if not isinstance(data, dict):
            raise RecordError(f"{where} is not a JSON object", "is it a testbed run record?")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            what = "has no schema_version" if version is None else f"has schema version {version!r}"
            raise RecordError(f"{where} {what}; this testbed reads version {SCHEMA_VERSION} only",
                              "read it with the testbed version that wrote it, or re-run")
        for key, typ in (("id", str), ("kind", str), ("name", str), ("ok", bool),
                         ("metrics", dict), ("dimensions", dict)):
            if not isinstance(data.get(key), typ):
                raise RecordError(f"{where}: field {key!r} is missing or not a {typ.__name__}",
                                  "the record is damaged")
        if data["kind"] not in KINDS:
            raise RecordError(f"{where}: unknown kind {data['kind']!r}",
                              "kinds are " + ", ".join(KINDS))
        metrics = {k: Metric.from_dict(v if isinstance(v, dict) else {}, f"{where}: metric {k!r}")
                   for k, v in data["metrics"].items()}
        return cls(kind=data["kind"], name=data["name"], ok=data["ok"], metrics=metrics,
                   dimensions=data["dimensions"], hk_stats=data.get("hk_stats") or {},
                   labels=data.get("labels") or {}, reason=data.get("reason"),
                   output=data.get("output", ""), run_dir=data.get("run_dir", ""),
                   argv=list(data.get("argv", [])), failure=data.get("failure", ""),
                   started=data.get("started", ""), duration_s=float(data.get("duration_s", 0.0)),
                   id=data["id"], schema_version=version)

    @classmethod
    def from_json(cls, text: str, where: str = "record") -> RunRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where} is not valid JSON: {e}", "the file is damaged") from None
        return cls.from_dict(data, where)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        try:
            text = path.read_text()
        except OSError as e:
            raise RecordError(f"cannot read record {path}: {e.strerror}") from None
        return cls.from_json(text, str(path))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dimensions(spec: ClusterSpec, arts: Artifacts, params: dict[str, Any]) -> dict[str, Any]:
    files, build = artifact_dimensions(arts)
    return {**spec_dimensions(spec), "params": dict(params), "artifacts": files, "build": build,
            "commit": git_commit(), "host": host_info()}


def workload_record(cluster: Cluster, name: str, params: dict[str, Any], result: CommandResult,
                    before: list[dict[str, Any]], after: list[dict[str, Any]]) -> RunRecord:
    """The record of one catalogue workload run on ``cluster``.

    A workload that printed no result line (it crashed, or was killed) is a
    failed run, not an error of the harness: the record says so and keeps the
    output for the post-mortem.
    """
    from testbed.hkdelta import delta
    from testbed.workloads import WorkloadError, parse_result

    record = RunRecord.for_cluster(cluster, "workload", name, ok=False, params=params,
                                   duration_s=round(result.seconds, 3))
    try:
        parsed = parse_result(result.output, name)
    except WorkloadError as e:
        record.reason = f"{e}; exit status {result.status}"
        record.output = result.output
    else:
        record.ok = parsed.ok and result.status == 0
        record.reason = parsed.reason or (None if result.status == 0 else
                                          f"exit status {result.status}")
        record.output = parsed.raw
        record.add_figures(parsed.figures())
    record.add("guest_seconds", result.seconds)
    record.add_hk_stats(delta(before, after))
    return record


def demo_record(cluster: Cluster, ok: bool, migrations: Sequence[Mapping[str, Any]]) -> RunRecord:
    """The demo's record: its boot, the live migrations and the statistics since the start."""
    from testbed.hkdelta import delta

    record = RunRecord.for_cluster(cluster, "demo", "demo", ok=ok)
    if cluster.boot_seconds is not None:
        record.add("boot_seconds", cluster.boot_seconds)
    # A request can find the vCPU already there (it moved on its own): only
    # real moves have a latency and a state size.
    moved = [m for m in migrations if m.get("moved", True)]
    record.add("vcpu_migrations", len(moved), unit="count", direction="info")
    record.add("migration_requests", len(migrations), unit="count", direction="info")
    record.add("migration_latency_us", *(m.get("latency-ns", 0) / 1000 for m in moved),
               unit="us", direction="lower")
    record.add("vcpu_state_bytes", *(m.get("state-bytes", 0) for m in moved),
               unit="B", direction="lower")
    record.add_hk_stats(delta([], cluster.node_stats()))
    return record
