"""The results store: one SQLite file that run records are imported into.

Default ``~/.local/share/sds/results.sqlite`` ($XDG_DATA_HOME is honoured);
``$SDS_STORE`` or ``--store PATH`` override it. The file is marked as ours with
SQLite's ``application_id``; its layout version is ``user_version``.

Rules:

* A file that is not a SQLite database, a SQLite database of another
  application, a store of a newer layout, or a damaged store is refused with
  an error saying which, and is never written to. Only a path that does not
  exist is created.
* Import is idempotent: a record's ``id`` is its primary key, so importing the
  same record (or a store holding it) again adds nothing. Shards of a suite
  run on several machines merge by importing their stores into one.
* Each record is kept whole (its JSON) and indexed by workload (kind, name),
  commit, suite run, comparison cell, every dimension (flattened keys like
  ``nodes``, ``params.threads``, ``artifacts.qemu``) and metric name.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import RecordError, StoreError
from testbed.record import RunRecord, utc_now

APPLICATION_ID = 0x53445352  # "SDSR"
STORE_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
# Parameters that bound a run without changing what it measures.
NON_IDENTITY_PARAMS = frozenset({"timeout_s", "repeat"})

_SCHEMA = """
CREATE TABLE records(
    id TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    ok INTEGER NOT NULL,
    started TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    nodes INTEGER,
    policy TEXT,
    cell_key TEXT NOT NULL,
    cell_label TEXT NOT NULL,
    suite TEXT,
    suite_run TEXT,
    cell TEXT,
    repetition INTEGER,
    imported TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX records_workload ON records(kind, name);
CREATE INDEX records_commit ON records(commit_id);
CREATE INDEX records_cell_key ON records(cell_key);
CREATE INDEX records_suite_run ON records(suite_run, cell, repetition);
CREATE INDEX records_started ON records(started);
CREATE TABLE dimensions(
    record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY(record_id, key)
);
CREATE INDEX dimensions_key_value ON dimensions(key, value);
CREATE TABLE metrics(
    record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    direction TEXT NOT NULL,
    n INTEGER NOT NULL,
    median REAL,
    samples TEXT NOT NULL,
    PRIMARY KEY(record_id, name)
);
CREATE INDEX metrics_name ON metrics(name);
CREATE TABLE suite_runs(
    id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    suite_path TEXT NOT NULL,
    suite_sha256 TEXT NOT NULL,
    shard TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    cells INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX suite_runs_suite ON suite_runs(suite, started);
"""


def default_path() -> Path:
    env = os.environ.get("SDS_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "sds" / "results.sqlite"


# -- what makes two records comparable ---------------------------------------
def identity(record: RunRecord) -> dict[str, Any]:
    """What must be equal for two records to measure the same thing.

    Everything but provenance (artifacts, build, commit, host) and the
    parameters that only bound a run (timeout_s, repeat).
    """
    d = record.dimensions
    params = {k: v for k, v in sorted(d.get("params", {}).items()) if k not in NON_IDENTITY_PARAMS}
    return {"kind": record.kind, "name": record.name,
            **{k: d.get(k) for k in ("nodes", "vcpus", "mem_mib", "placement", "budget_mib",
                                     "policy", "hyperkernel")},
            # a guest told its NUMA topology is another machine; records from
            # before the dimension existed were all flat
            **({"guest_numa": True} if d.get("guest_numa") else {}),
            # knobs turned while the guest ran (Cluster.set_knob)
            **({"knobs": d["knobs"]} if d.get("knobs") else {}),
            # a guest kernel command line of the user's own (--append)
            **({"append": d["append"]} if d.get("append") else {}),
            # every stall written to a file (--fault-trace)
            **({"fault_trace": True} if d.get("fault_trace") else {}),
            "params": params}


def cell_key(record: RunRecord) -> str:
    canon = json.dumps(identity(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def cell_label(record: RunRecord) -> str:
    """A short human name: ``falseshare n2 vcpu iters=200000``."""
    d = record.dimensions
    parts = [record.name if record.kind in ("workload", "bench") else f"{record.kind}:{record.name}"]
    if d.get("nodes") is not None:
        parts.append(f"n{d['nodes']}")
    if d.get("policy") not in (None, "none"):
        parts.append(str(d["policy"]))
    defaults = _catalogue_defaults(record)
    for k, v in sorted(identity(record)["params"].items()):
        if defaults.get(k) != v:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _catalogue_defaults(record: RunRecord) -> dict[str, Any]:
    if record.kind != "workload":
        return {}
    from testbed.workloads import WORKLOADS

    spec = WORKLOADS.get(record.name)
    return {p.name: p.default for p in spec.params} if spec else {}


def flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, str):
        yield prefix, value
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- the store ---------------------------------------------------------------
@dataclass
class Filters:
    """What ``testbed results`` and the comparisons select. Empty means all."""

    kind: str | None = None
    name: str | None = None
    commit: str | None = None  # a prefix
    suite: str | None = None
    suite_run: str | None = None  # a prefix
    ok: bool | None = None
    where: list[tuple[str, str]] = field(default_factory=list)  # dimension key, value
    limit: int | None = None


@dataclass(frozen=True)
class SuiteRun:
    id: str
    suite: str
    suite_path: str
    suite_sha256: str
    shard: str
    commit: str
    hostname: str
    started: str
    finished: str | None
    cells: int
    status: str


class Store:
    """An open results store. Use ``with open_store(path) as store: ...``."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.conn:
                yield self.conn
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot write to the results store {self.path}: {e}",
                             "check the disk and the file's permissions") from None

    # -- records --------------------------------------------------------------
    def add(self, record: RunRecord) -> bool:
        """Import one record; False if the store already held it (same id)."""
        with self._tx() as c:
            return self._insert(c, record)

    def add_many(self, records: Iterable[RunRecord]) -> tuple[int, int]:
        """Import records in one transaction; (added, already present)."""
        added = present = 0
        with self._tx() as c:
            for record in records:
                if self._insert(c, record):
                    added += 1
                else:
                    present += 1
        return added, present

    def _insert(self, c: sqlite3.Connection, r: RunRecord) -> bool:
        d, labels = r.dimensions, r.labels
        cur = c.execute(
            "INSERT OR IGNORE INTO records(id, schema_version, kind, name, ok, started, commit_id,"
            " hostname, nodes, policy, cell_key, cell_label, suite, suite_run, cell, repetition,"
            " imported, json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (r.id, r.schema_version, r.kind, r.name, int(r.ok), r.started,
             str(d.get("commit", "unknown")), str(d.get("host", {}).get("hostname", "")),
             d.get("nodes"), d.get("policy"), cell_key(r), cell_label(r),
             labels.get("suite"), labels.get("suite_run"), labels.get("cell"),
             labels.get("repetition"), utc_now(), r.to_json()))
        if cur.rowcount == 0:
            return False
        dims = dict(flatten("", {k: v for k, v in d.items()}))
        dims.update(flatten("labels", labels))
        c.executemany("INSERT INTO dimensions(record_id, key, value) VALUES (?,?,?)",
                      [(r.id, k, v) for k, v in dims.items()])
        c.executemany(
            "INSERT INTO metrics(record_id, name, unit, direction, n, median, samples)"
            " VALUES (?,?,?,?,?,?,?)",
            [(r.id, name, m.unit, m.direction, len(m.samples),
              m.value if m.samples else None, json.dumps(m.samples))
             for name, m in r.metrics.items()])
        return True

    def records(self, f: Filters | None = None) -> list[RunRecord]:
        """Matching records, oldest first."""
        f = f or Filters()
        sql: list[str] = ["SELECT json, r.started AS s, r.rowid AS n FROM records r WHERE 1=1"]
        args: list[Any] = []
        for column, value in (("kind", f.kind), ("name", f.name), ("suite", f.suite)):
            if value is not None:
                sql.append(f"AND r.{column} = ?")
                args.append(value)
        if f.commit:
            sql.append("AND r.commit_id LIKE ?")
            args.append(f.commit.replace("%", "") + "%")
        if f.suite_run:
            sql.append("AND r.suite_run LIKE ?")
            args.append(f.suite_run.replace("%", "") + "%")
        if f.ok is not None:
            sql.append("AND r.ok = ?")
            args.append(int(f.ok))
        for key, value in f.where:
            sql.append("AND EXISTS (SELECT 1 FROM dimensions d WHERE d.record_id = r.id"
                       " AND d.key = ? AND d.value = ?)")
            args += [key, value]
        if f.limit is not None:  # the newest N, still listed oldest first
            sql.append("ORDER BY s DESC, n DESC LIMIT ?")
            args.append(f.limit)
            query = f"SELECT * FROM ({' '.join(sql)}) ORDER BY s, n"
        else:
            query = " ".join([*sql, "ORDER BY s, n"])
        rows = self.conn.execute(query, args).fetchall()
        return [RunRecord.from_json(row[0], f"record in {self.path}") for row in rows]

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def dimension_keys(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT DISTINCT key FROM dimensions ORDER BY key")]

    # -- suite runs -----------------------------------------------------------
    def begin_suite_run(self, run: SuiteRun) -> None:
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO suite_runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (run.id, run.suite, run.suite_path, run.suite_sha256, run.shard, run.commit,
                       run.hostname, run.started, run.finished, run.cells, run.status))

    def end_suite_run(self, run_id: str, status: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE suite_runs SET finished = ?, status = ? WHERE id = ?",
                      (utc_now(), status, run_id))

    def suite_runs(self, suite: str | None = None) -> list[SuiteRun]:
        rows = self.conn.execute(
            "SELECT * FROM suite_runs" + (" WHERE suite = ?" if suite else "") + " ORDER BY started",
            (suite,) if suite else ()).fetchall()
        return [SuiteRun(*row) for row in rows]

    def find_suite_run(self, prefix: str) -> SuiteRun:
        runs = [r for r in self.suite_runs() if r.id.startswith(prefix)]
        if len(runs) != 1:
            known = ", ".join(r.id[:12] for r in self.suite_runs()[-5:]) or "none"
            raise StoreError(f"{'no' if not runs else 'more than one'} suite run matches "
                             f"{prefix!r} in {self.path}",
                             f"recent runs: {known} (testbed results --suite-runs lists them)")
        return runs[0]

    def done_cells(self, suite_run: str) -> set[tuple[str, int]]:
        """(cell, repetition) pairs that have a record in this suite run."""
        rows = self.conn.execute("SELECT cell, repetition FROM records WHERE suite_run = ?",
                                 (suite_run,)).fetchall()
        return {(str(c), int(r)) for c, r in rows if c is not None and r is not None}

    def cell_durations(self, suite: str | None) -> dict[str, float]:
        """Median wall time of each cell (and boot) of a suite in earlier runs, or of
        every suite's cells (``None``; a cell's id names its workload, parameters and
        shape whatever suite ran it): for estimates."""
        out: dict[str, list[float]] = {}
        where, args = ("suite = ? AND ", (suite,)) if suite is not None else ("", ())
        for cell, text in self.conn.execute(
                "SELECT cell, json_extract(json, '$.labels.cell_seconds') FROM records"
                f" WHERE {where}cell IS NOT NULL", args):
            if text is not None:
                out.setdefault(str(cell), []).append(float(text))
        return {k: sorted(v)[len(v) // 2] for k, v in out.items()}

    # -- merging stores ---------------------------------------------------------
    def merge_from(self, other: Store) -> tuple[int, int]:
        """Import every record and suite run of another store (shards of one suite)."""
        added = self.add_many(other.records())
        for run in other.suite_runs():
            self.begin_suite_run(run)
        return added


def _check_existing(path: Path) -> None:
    """Refuse, before SQLite touches it, a file that is not a SQLite database."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"cannot read the results store {path}: {e.strerror}",
                         "check the path and its permissions") from None
    if not head:
        raise StoreError(f"{path} is an empty file, not a results store",
                         "remove it, or give another path with --store")
    if head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a results store (not a SQLite database)",
                         "it was left untouched; give another path with --store")


def _validate(conn: sqlite3.Connection, path: Path) -> None:
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StoreError(f"{path} is a SQLite database of another application "
                             f"(application_id {app_id:#x}), not a results store",
                             "it was left untouched; give another path with --store")
        if version != STORE_VERSION:
            raise StoreError(f"{path} is a results store of layout version {version}; this "
                             f"testbed reads version {STORE_VERSION}",
                             "use the testbed version that wrote it")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is damaged: {e}",
                         "it was left untouched; restore it from a copy or give another --store"
                         ) from None
    if check != "ok":
        raise StoreError(f"{path} is damaged: integrity check says {check!r}",
                         "it was left untouched; restore it from a copy or give another --store")


def _connect(uri: str, path: Path) -> sqlite3.Connection:
    try:
        # DEFERRED: DML opens a transaction implicitly; ``with conn`` commits it.
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level="DEFERRED")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open the results store {path}: {e}",
                         "check the path and its permissions") from None
    return conn


def open_store(path: Path | None = None, *, create: bool = True, readonly: bool = False) -> Store:
    """Open (or, if ``create`` and the path does not exist, create) a results store."""
    path = (path or default_path()).expanduser()
    quoted = str(path.resolve()).replace("?", "%3f").replace("#", "%23")
    if path.exists():
        _check_existing(path)
        conn = _connect(f"file:{quoted}?mode={'ro' if readonly else 'rw'}", path)
        try:
            _validate(conn, path)
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return Store(path, conn)
    if not create or readonly:
        raise StoreError(f"there is no results store at {path}",
                         "runs and suites create it; or give the right --store")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create {path.parent}: {e.strerror}",
                         "give a writable path with --store") from None
    # Built under a temporary name and renamed: a concurrent opener sees no half store.
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    conn = _connect(f"file:{tmp.resolve()}?mode=rwc", tmp)
    try:
        with conn:
            conn.executescript(f"PRAGMA journal_mode = WAL; PRAGMA application_id = {APPLICATION_ID};"
                               f"PRAGMA user_version = {STORE_VERSION};" + _SCHEMA)
        conn.close()
        try:
            os.link(tmp, path)  # fails if someone created the store meanwhile: use theirs
        except FileExistsError:
            pass
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)
    return open_store(path, create=False, readonly=readonly)


def import_paths(store: Store, paths: Iterable[Path]) -> tuple[int, int, list[str]]:
    """Import record files, run directories (every record-*.json below) and other stores.

    Returns (added, already present, problems); a damaged or foreign record is a
    problem named in the list, and the rest still go in.
    """
    added = present = 0
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.rglob("record-*.json"))
            if not files:
                problems.append(f"{path}: no record-*.json files below it")
        elif path.is_file() and path.read_bytes()[:len(SQLITE_MAGIC)] == SQLITE_MAGIC:
            with open_store(path, readonly=True) as other:
                a, p = store.merge_from(other)
            added, present = added + a, present + p
            continue
        elif path.is_file():
            files = [path]
        else:
            problems.append(f"{path}: no such file or directory")
            continue
        records = []
        for file in files:
            try:
                records.append(RunRecord.load(file))
            except RecordError as e:
                problems.append(str(e))
        a, p = store.add_many(records)
        added, present = added + a, present + p
    return added, present, problems
