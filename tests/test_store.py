"""The results store: idempotent import, queries, merging, and refusing what is not ours."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import StoreError
from testbed.record import RunRecord
from testbed.store import Filters, import_paths, open_store

TESTBED = [sys.executable, "-m", "testbed.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def _record(name: str = "pingpong", nodes: int = 1, ops: float = 100.0,
            commit: str = "aaaa1111") -> RunRecord:
    r = RunRecord(kind="workload", name=name, ok=True,
                  dimensions={"nodes": nodes, "vcpus": 2, "policy": "page" if nodes > 1 else "none",
                              "params": {"threads": 2}, "commit": commit,
                              "artifacts": {"qemu": "q" * 64}, "host": {"hostname": "h"}})
    r.add("ops_per_s", ops)
    return r


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_importing_the_same_record_twice_keeps_one(tmp_path: Path) -> None:
    r = _record()
    path = r.write(tmp_path / "record-a.json")
    with open_store(tmp_path / "s.sqlite") as store:
        assert store.add(r) is True
        assert store.add(RunRecord.load(path)) is False
        assert import_paths(store, [path, tmp_path]) == (0, 2, [])
        assert store.count() == 1
        assert store.records()[0].to_dict() == r.to_dict()


def test_queries_by_workload_dimension_and_commit(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        store.add_many([_record("pingpong", 1), _record("pingpong", 2, commit="bbbb2222"),
                        _record("lock", 2)])
        assert len(store.records(Filters(name="pingpong"))) == 2
        assert [r.name for r in store.records(Filters(where=[("nodes", "2")]))] == ["pingpong", "lock"]
        assert len(store.records(Filters(where=[("nodes", "2"), ("params.threads", "2")]))) == 2
        assert len(store.records(Filters(commit="bbbb"))) == 1
        assert "artifacts.qemu" in store.dimension_keys()
        indexes = {row[0] for row in store.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"records_workload", "records_commit", "dimensions_key_value"} <= indexes


def test_stores_merge_idempotently(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with open_store(a) as sa, open_store(b) as sb:
        shared = _record("lock")
        sa.add_many([_record("pingpong"), shared])
        sb.add_many([_record("sweep"), shared])
    with open_store(a) as sa:
        assert import_paths(sa, [b]) == (1, 1, [])
        assert import_paths(sa, [b]) == (0, 2, [])
        assert sorted(r.name for r in sa.records()) == ["lock", "pingpong", "sweep"]


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes(name TEXT)")
    conn.execute("INSERT INTO recipes VALUES ('soup')")
    conn.commit()
    conn.close()


def _damaged_store(path: Path) -> None:
    with open_store(path) as store:
        store.add_many([_record(f"w{i}") for i in range(200)])
    data = bytearray(path.read_bytes())
    for i in range(4096 + 100, len(data) - 100, 4096):  # scribble over every page after the first
        data[i:i + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make,words", [
    (lambda p: p.write_text("my notes\n"), "not a results store (not a SQLite database)"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (_foreign_sqlite, "SQLite database of another application"),
    (_damaged_store, "damaged"),
])
def test_a_foreign_or_damaged_file_is_refused_and_left_alone(tmp_path: Path, make: object,
                                                              words: str) -> None:
    path = tmp_path / "store.sqlite"
    make(path)  # type: ignore[operator]
    before = _digest(path)
    with pytest.raises(StoreError, match=re.escape(words)):
        open_store(path)
    r = _run("results", "--store", str(path))
    assert r.returncode == 125, r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    record = _record().write(tmp_path / "record-x.json")
    assert _run("import", "--store", str(path), str(record)).returncode == 125
    assert _digest(path) == before


def test_a_store_of_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="layout version 99"):
        open_store(path)


def test_results_lists_filters_and_exports(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    files = [_record("pingpong", 1, 100).write(tmp_path / "record-1.json"),
             _record("pingpong", 2, 50).write(tmp_path / "record-2.json")]
    r = _run("import", "--store", str(store), *map(str, files))
    assert r.returncode == 0 and "2 record(s) added" in r.stdout
    r = _run("import", "--store", str(store), str(tmp_path))
    assert r.returncode == 0 and "0 record(s) added, 2 already" in r.stdout
    table = _run("results", "--store", str(store), "--where", "nodes=2")
    assert table.returncode == 0
    assert "pingpong n2 page" in table.stdout and "n1" not in table.stdout
    rows = list(csv.DictReader(io.StringIO(_run("results", "--store", str(store), "--format",
                                                "csv").stdout)))
    assert {(row["nodes"], row["metric"], float(row["median"])) for row in rows} == {
        ("1", "ops_per_s", 100.0), ("2", "ops_per_s", 50.0)}
    exported = json.loads(_run("results", "--store", str(store), "--format", "json").stdout)
    assert [RunRecord.from_dict(d).id for d in exported] == [RunRecord.load(f).id for f in files]


def test_import_names_a_record_of_an_unknown_version_and_keeps_the_rest(tmp_path: Path) -> None:
    good = _record().write(tmp_path / "record-good.json")
    data = _record().to_dict()
    data["schema_version"] = 7
    bad = tmp_path / "record-bad.json"
    bad.write_text(json.dumps(data))
    store = tmp_path / "s.sqlite"
    r = _run("import", "--store", str(store), str(good), str(bad))
    assert r.returncode == 1
    assert "record-bad.json has schema version 7" in r.stderr
    assert "1 record(s) added" in r.stdout
