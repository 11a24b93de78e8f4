"""``bench policies``' CPUs-add-up check: which vCPUs its runs use, and what
each policy's spread run is measured against."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.bench_policies import (
    add_up_params,
    boot_line,
    merge_repeats,
    placement_shares,
    print_table,
    spread_cpus,
    spread_threads,
    squeeze_against_page,
    summarize,
    unsteady_cells,
)
from testbed.config import ClusterSpec
from testbed.workloads import WorkloadError


def test_spread_uses_every_vcpu_and_squeezed_only_node_0s() -> None:
    spec = ClusterSpec(nodes=2, vcpus=4, mem_mib=768)
    spread, squeezed = add_up_params(spec, {"size_kb": 2048, "passes": 64})
    assert (spread["threads"], spread["cpus"]) == (4, "0,1,2,3")
    assert (squeezed["threads"], squeezed["cpus"]) == (4, "0,1")
    assert spread["passes"] == squeezed["passes"] == 64
    # on 4 nodes node 0 has one vCPU: all four threads share it
    _, squeezed = add_up_params(ClusterSpec(nodes=4, vcpus=4, mem_mib=768), {})
    assert squeezed["cpus"] == "0"


def test_bad_sizes_are_refused_before_anything_runs() -> None:
    with pytest.raises(WorkloadError, match="passes"):
        add_up_params(ClusterSpec(nodes=2, vcpus=4, mem_mib=768), {"passes": 0})


def test_every_policy_is_measured_against_pages_squeeze() -> None:
    cells: dict[str, dict[str, Any]] = {
             "page": {"ok": True, "spread_ops_per_s": 400.0, "squeezed_ops_per_s": 200.0},
             # learned un-squeezed its own squeezed run: 310, not a squeeze
             "learned": {"ok": True, "spread_ops_per_s": 320.0, "squeezed_ops_per_s": 310.0},
             "cost": {"ok": False, "ratio": None}}
    squeeze_against_page(cells)
    assert cells["page"]["ratio"] == pytest.approx(2.0)
    assert cells["learned"]["ratio"] == pytest.approx(1.6)
    assert cells["learned"]["squeezed_by"] == "page"
    assert cells["cost"]["ratio"] is None
    # without page, a policy's own squeezed run, said so
    alone: dict[str, dict[str, Any]] = {
        "learned": {"ok": True, "spread_ops_per_s": 320.0, "squeezed_ops_per_s": 160.0}}
    squeeze_against_page(alone)
    assert alone["learned"]["ratio"] == pytest.approx(2.0)
    assert alone["learned"]["squeezed_by"] == "own"


def test_repeated_boots_merge_into_medians() -> None:
    runs: list[dict[str, dict[str, Any]]] = [
        {"boot": {"ok": True, "seconds": 6.0},
         "lock": {"ok": True, "throughput": 100.0, "bytes_moved": 10,
                  "vcpu_moves_by_reason": {"vcpu.swap": 2}, "start_placement": [0, 1]}},
        {"boot": {"ok": True, "seconds": 9.0},
         "lock": {"ok": True, "throughput": 300.0, "bytes_moved": 30,
                  "vcpu_moves_by_reason": {"vcpu.swap": 1}, "start_placement": [0, 1]}},
        {"boot": {"ok": True, "seconds": 7.0},
         "lock": {"ok": False, "throughput": 200.0, "bytes_moved": 20}},
    ]
    merged = merge_repeats(runs)
    assert merged["boot"]["seconds"] == 7.0 and merged["boot"]["ok"]
    assert merged["boot"]["samples"]["seconds"] == [6.0, 9.0, 7.0]
    lock = merged["lock"]
    assert (lock["throughput"], lock["bytes_moved"]) == (200.0, 20)
    assert not lock["ok"]  # one boot's run failed its check
    assert lock["vcpu_moves_by_reason"] == {"vcpu.swap": 3}
    assert "placement_ms" not in lock  # no boot measured one
    # a boot that failed leaves its workloads out: the merged cell is not ok
    partial = merge_repeats([{"boot": {"ok": True, "seconds": 6.0}, "lock": {"ok": True}},
                             {"boot": {"ok": False, "error": "boot timed out"}}])
    assert not partial["lock"]["ok"] and not partial["boot"]["ok"]


def test_what_a_policy_did_in_the_boot_adds_up_over_boots_and_prints_on_one_line() -> None:
    runs: list[dict[str, dict[str, Any]]] = [
        {"boot": {"ok": True, "seconds": 6.0, "decisions": {"page.learned": 5, "vcpu.swap": 1},
                  "vcpu_moves_by_reason": {"vcpu.swap": 1}, "placement_after": [0, 1, 1, 0],
                  "learned": [{"weight_pct": 100, "moves_good": 0, "moves_bad": 0},
                              {"weight_pct": 115, "moves_good": 1, "moves_bad": 0}]}},
        {"boot": {"ok": True, "seconds": 7.0, "decisions": {"page.learned": 7},
                  "vcpu_moves_by_reason": {}, "placement_after": [0, 0, 1, 1],
                  "learned": [{"weight_pct": 100, "moves_good": 0, "moves_bad": 0},
                              {"weight_pct": 100, "moves_good": 0, "moves_bad": 0}]}},
    ]
    boot = merge_repeats(runs)["boot"]
    assert boot["decisions"] == {"page.learned": 12, "vcpu.swap": 1}
    assert boot["vcpu_moves_by_reason"] == {"vcpu.swap": 1}
    assert boot["placement_after"] == [0, 0, 1, 1]  # the last boot's
    line = boot_line(runs[0]["boot"])
    assert line.startswith("1 vCPU move, vCPU -> node [0, 1, 1, 0]; decisions page.learned 5")
    assert "weight 100/115%, moves judged good 0/1, bad 0/0" in line
    assert boot_line({"ok": True, "seconds": 3.0}) == ""  # 1 node: no statistics


def test_placement_adds_up_over_boots_and_workloads() -> None:
    runs: list[dict[str, dict[str, Any]]] = [
        {"lock": {"ok": True, "placement_ms": [[10.0, 0.0], [0.0, 30.0]]},
         "sweep": {"ok": True, "placement_ms": [[5.0, 0.0], [10.0, 0.0]]}},
        {"lock": {"ok": True, "placement_ms": [[10.0, 0.0], [10.0, 50.0]]},
         "sweep": {"ok": True}},
    ]
    merged = merge_repeats(runs)
    assert merged["lock"]["placement_ms"] == [[20.0, 0.0], [10.0, 80.0]]
    table = {name: {"learned": cell} for name, cell in merged.items()}
    # vCPU 0 all on node 0; vCPU 1: 20 of 100 ms on node 0
    assert placement_shares(table, "learned") == [[100, 0], [20, 80]]
    assert placement_shares(table, "page") == []


def test_threads_are_spread_over_the_nodes() -> None:
    """Thread i runs on node i mod N, so two threads that share data share it
    across nodes; a suite that pins its threads keeps its own list."""
    assert spread_cpus(ClusterSpec(nodes=2, vcpus=4, mem_mib=768)) == "0,2,1,3"
    assert spread_cpus(ClusterSpec(nodes=4, vcpus=4, mem_mib=768)) == "0,1,2,3"
    assert spread_cpus(ClusterSpec(nodes=2, vcpus=5, mem_mib=768)) == "0,3,1,4,2"
    spec = ClusterSpec(nodes=2, vcpus=4, mem_mib=768)
    chosen = spread_threads(spec, {"pingpong": {"rounds": 10}, "lock": {"cpus": "0,1"}})
    assert chosen["pingpong"]["cpus"] == "0,2,1,3"
    assert chosen["lock"]["cpus"] == "0,1"


def test_the_summary_names_the_cell_that_sets_learned_worst_vs_best_and_flags_unsteady_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A cell whose boots disagree by more than 2x is flagged, in the JSON and
    with ``~`` in the table, and the summary says which workload and which fixed
    policy set learned_worst_vs_best, and whether that cell is unsteady."""
    def cell(ratio: float, *samples: float) -> dict[str, Any]:
        return {"ok": True, "ratio": ratio, "bytes_moved": 1e6,
                "samples": {"throughput": list(samples)}}
    table = {
        # vcpu's two boots: 34 k and 779 k pages/s, one early move apart
        "firstread": {"page": cell(42.0, 14e3, 11e3), "vcpu": cell(1.3, 34e3, 779e3),
                      "learned": cell(46.0, 11.6e3, 11.3e3)},
        "lock": {"page": cell(2.0, 500e3, 450e3), "vcpu": cell(8.6, 100e3, 110e3),
                 "learned": cell(2.7, 400e3, 380e3)},
        "boot": {"page": {"ok": True, "ratio": 1.7, "samples": {"seconds": [10.0, 12.0]}},
                 "learned": {"ok": True, "ratio": 2.0, "samples": {"seconds": [9.0]}}},
    }
    assert unsteady_cells(table) == {"vcpu/firstread": pytest.approx(779e3 / 34e3)}
    summary = summarize(table, ["page", "vcpu", "learned"])
    assert summary["learned_worst_vs_best"] == pytest.approx(46.0 / 1.3)
    assert summary["learned_worst_cell"] == {"workload": "firstread", "learned": 46.0,
                                             "best_policy": "vcpu", "best": 1.3}
    print_table(table, ["page", "vcpu", "learned"], 2, 4, {}, summary)
    out = capsys.readouterr().out
    assert "1.30x~ 1.0MB" in out and "2.00x~" not in out and "8.60x 1.0MB" in out
    assert "~ unsteady: " in out and "vcpu/firstread 22.9x" in out
    assert ("learned_worst_vs_best is 35.38: firstread, learned 46.00x against vcpu 1.30x "
            "(an unsteady cell)") in out
    # the baseline every ratio divides by is checked too
    base = {"lock": {"ok": True, "samples": {"throughput": [1e6, 3e5]}},
            "boot": {"ok": True, "samples": {"seconds": [6.0, 7.0]}}}
    assert unsteady_cells(table, base) == {"1-node/lock": pytest.approx(1e6 / 3e5),
                                           "vcpu/firstread": pytest.approx(779e3 / 34e3)}
    # one boot per cell: nothing to call unsteady
    single = {"lock": {"vcpu": {"ok": True, "ratio": 2.0, "samples": {"throughput": [5.0]}}}}
    assert unsteady_cells(single) == {}
