"""Run records: the versioned schema, metrics, and hyperkernel statistics as a delta."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import ClusterFactory

from testbed.cluster import Artifacts
from testbed.errors import RecordError
from testbed.hkdelta import delta
from testbed.metrics import classify
from testbed.record import SCHEMA_VERSION, RunRecord, file_sha256


def _record() -> RunRecord:
    r = RunRecord(kind="workload", name="pingpong", ok=True,
                  dimensions={"nodes": 2, "policy": "page", "params": {"rounds": 500},
                              "artifacts": {"qemu": "ab"}, "commit": "c0ffee", "host": {}})
    r.add("ops_per_s", 100.0, 102.0)
    r.add("rtt_ns_p50", 900)
    r.add("sequence_errors", 0)
    return r


def test_a_record_survives_the_round_trip_through_json(tmp_path: Path) -> None:
    r = _record()
    path = r.write(tmp_path / "r.json")
    back = RunRecord.load(path)
    assert back.to_dict() == r.to_dict()
    assert back.schema_version == SCHEMA_VERSION
    assert back.metrics["ops_per_s"].samples == [100.0, 102.0]
    assert back.metrics["ops_per_s"].value == 101.0
    assert back.params == {"rounds": 500}


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", None])
def test_a_record_of_another_schema_version_is_refused(tmp_path: Path, version: Any) -> None:
    data = _record().to_dict()
    if version is None:
        del data["schema_version"]
    else:
        data["schema_version"] = version
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="schema" if version is None else "schema version"):
        RunRecord.load(path)


@pytest.mark.parametrize("damage", [
    lambda d: d["metrics"]["ops_per_s"].update(direction="sideways"),
    lambda d: d["metrics"]["ops_per_s"].update(samples=["fast"]),
    lambda d: d.update(kind="party"),
    lambda d: d.pop("dimensions"),
])
def test_a_damaged_record_is_refused(tmp_path: Path, damage: Any) -> None:
    data = _record().to_dict()
    damage(data)
    with pytest.raises(RecordError):
        RunRecord.from_dict(data)


def test_metrics_carry_unit_and_direction() -> None:
    r = _record()
    assert (r.metrics["ops_per_s"].unit, r.metrics["ops_per_s"].direction) == ("ops/s", "higher")
    assert (r.metrics["rtt_ns_p50"].unit, r.metrics["rtt_ns_p50"].direction) == ("ns", "lower")
    assert r.metrics["sequence_errors"].direction == "info"  # a check, not a performance figure
    assert classify("get_p99_ms") == ("ms", "lower")
    assert classify("set_rps")[1] == "higher"


def test_unmeasured_samples_are_dropped_not_stored_as_nan() -> None:
    r = _record()
    r.add("ops_per_s", math.nan, math.inf)
    assert r.metrics["ops_per_s"].samples == [100.0, 102.0]
    json.loads(r.to_json())  # strict JSON: no NaN


def test_binary_hashes_are_of_the_files_that_ran(artifacts: Artifacts) -> None:
    import hashlib

    digest = hashlib.sha256(artifacts.qemu.read_bytes()).hexdigest()
    assert file_sha256(artifacts.qemu) == digest
    assert digest != artifacts.qemu_key  # the input key is a different thing, kept apart


# -- statistics delta, on the library's own JSON layout --------------------------------
def _node(node: int, reads: int, buckets: list[int], pages: list[tuple[int, int]],
          data_bytes: int) -> dict[str, Any]:
    return {"node": node, "stats": {
        "node": node, "resident_pages": 10, "budget_pages": 100,
        "counters": {"read_stalls": reads, "write_stalls": 1, "pages_received": reads},
        "read_stall": {"count": sum(buckets), "mean_ns": 1000, "log2_ns_buckets": buckets},
        "write_stall": {"count": 0, "mean_ns": 0, "log2_ns_buckets": []},
        "messages": {"data": {"sent": reads, "sent_bytes": data_bytes, "received": 0,
                              "received_bytes": 0}},
        "hottest_pages": [{"offset": o, "stalls": s} for o, s in pages]}}


def test_statistics_delta_subtracts_each_node_and_merges_them() -> None:
    before = [_node(0, 10, [0, 4, 6], [(4096, 5)], 1000), _node(1, 3, [3], [(8192, 3)], 10)]
    after = [_node(0, 25, [0, 9, 11, 5], [(4096, 7), (12288, 4)], 5000),
             _node(1, 3, [3], [(8192, 3)], 10)]
    d = delta(before, after)
    assert d["totals"]["read_stalls"] == 15 and d["totals"]["write_stalls"] == 0
    assert d["read_stall"]["log2_ns_buckets"] == [0, 5, 5, 5]
    assert d["read_stall"]["count"] == 15
    assert d["read_stall"]["p50_ns"] == 7  # upper bound of bucket 2, as the library reports
    assert d["messages"]["data"]["sent_bytes"] == 4000
    assert [(p["offset"], p["stalls"]) for p in d["hottest_pages"]] == [(12288, 4), (4096, 2)]
    assert d["hottest_exact"]  # the earlier top list was short: it named every stalled page
    assert d["nodes"][1]["counters"]["read_stalls"] == 0


def _staged(node: int, give: list[int], delay: int, vcpu_delay: int) -> dict[str, Any]:
    n = _node(node, 1, [1], [], 0)
    n["stats"]["stages"] = {"give": {"count": sum(give), "mean_ns": 100,
                                     "log2_ns_buckets": give}}
    n["stats"]["sched"] = {"event_thread": {"tid": 9, "run_ns": 5 * delay,
                                            "run_delay_ns": delay}}
    n["stats"]["threads"] = [{"tid": 10, "vcpu": 0, "sched": {"run_ns": 1, "run_delay_ns": vcpu_delay}},
                             {"tid": 11, "vcpu": -1, "sched": {"run_ns": 1, "run_delay_ns": 999}}]
    return n


def test_stage_histograms_and_scheduler_time_are_per_run_and_summed_over_nodes() -> None:
    before = [_staged(0, [1, 2], 100, 10), _staged(1, [0, 1], 50, 0)]
    after = [_staged(0, [1, 5, 4], 300, 40), _staged(1, [0, 3], 80, 5)]
    d = delta(before, after)
    assert d["stages"]["give"]["log2_ns_buckets"] == [0, 5, 4]
    assert d["nodes"][0]["stages"]["give"]["count"] == 7
    assert d["sched"]["event_thread"]["run_delay_ns"] == 200 + 30
    assert d["sched"]["vcpu_threads"]["run_delay_ns"] == 30 + 5  # a non-vCPU thread is left out
    assert d["nodes"][1]["sched"]["event_thread"]["run_ns"] == 150


def test_a_restarted_node_counts_from_its_restart() -> None:
    d = delta([_node(0, 50, [50], [], 0)], [_node(0, 7, [7], [], 0)])
    assert d["totals"]["read_stalls"] == 7 and d["nodes"][0]["reset"]


def test_no_hyperkernel_no_statistics() -> None:
    assert delta([], []) == {}


@pytest.mark.boot
def test_workload_record_holds_the_statistics_of_its_own_run(cluster_factory: ClusterFactory,
                                                              artifacts: Artifacts) -> None:
    if not artifacts.supports_hyperkernel():
        pytest.skip("this QEMU build lacks the hyperkernel patches")
    cluster = cluster_factory(nodes=2, vcpus=2)
    cluster.boot()
    s0 = cluster.stats()["totals"]
    record = cluster.run_workload("falseshare", {"iters": 20000, "cpus": "0,1"},
                                  guest_timeout=300)
    s1 = cluster.stats()["totals"]
    assert record.ok, record.raw
    hk = record.hk_stats
    assert hk["totals"]["pages_received"] > 0  # two vCPUs on two nodes share one cache line
    for key, value in hk["totals"].items():
        assert 0 <= value <= s1[key] - s0[key], key  # the run's share, not the boot's
    assert hk["totals"]["pages_received"] < s1["pages_received"]  # the boot is left out
    assert record.metrics["hk_pages_received"].samples == [hk["totals"]["pages_received"]]
    assert record.dimensions["policy"] == "page" and record.dimensions["nodes"] == 2
    on_disk = [RunRecord.load(p) for p in cluster.run_dir.glob("record-*.json")]
    assert [r.id for r in on_disk] == [record.id]


def _running(node: int, run_ms: dict[int, int]) -> dict[str, Any]:
    n = _node(node, 1, [1], [], 0)
    n["stats"]["threads"] = [{"tid": 10 + v, "vcpu": v, "sched": {"run_ns": ms * 1_000_000}}
                             for v, ms in run_ms.items()]
    return n


def test_placement_is_each_vcpus_run_time_on_each_node() -> None:
    # vCPU 1 ran 30 ms on node 0, then moved to node 1 and ran 20 ms there;
    # vCPU 0 stayed on node 0; node 1's thread for vCPU 0 never ran
    before = [_running(0, {0: 100, 1: 50}), _running(1, {0: 0, 1: 7})]
    after = [_running(0, {0: 140, 1: 80}), _running(1, {0: 0, 1: 27})]
    d = delta(before, after)
    assert d["vcpu_placement_ms"] == [[40.0, 0.0], [30.0, 20.0]]
