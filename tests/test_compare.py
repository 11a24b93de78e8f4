"""The regression detector on synthetic samples: a planted shift is flagged, noise is not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.compare import (
    compare_records,
    compare_samples,
    geometric_mean_change,
    lkp_table,
    min_p_value,
    permutation_p,
    replicates,
    samples_needed,
    summarize,
)
from testbed.record import RunRecord


def _normal(seed: int, mean: float, sd_fraction: float = 0.02, n: int = 10) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, mean * sd_fraction, n))


def test_robust_summary() -> None:
    s = summarize([1, 2, 3, 4, 100])
    assert s.median == 3
    assert s.mad == pytest.approx(1.4826)  # the outlier does not move it
    assert s.n == 5 and s.trimmed_hi < 100


def test_exact_permutation_p_value() -> None:
    # Completely separated 3 vs 3: two of the 20 relabellings are as extreme.
    assert permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    assert permutation_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert min_p_value(3, 3) == pytest.approx(0.1)
    # Five against five: both extreme labellings of C(10, 5) = 252, so 2/252 < 0.01.
    assert min_p_value(5, 5) == pytest.approx(2 / 252)
    assert samples_needed(0.01) == 5


@pytest.mark.parametrize("direction,shift,verdict", [
    ("higher", 0.8, "regression"),   # throughput down 20%
    ("higher", 1.2, "improvement"),
    ("lower", 1.2, "regression"),    # latency up 20%
    ("lower", 0.8, "improvement"),
])
def test_a_planted_20_percent_shift_is_flagged(direction: str, shift: float, verdict: str) -> None:
    base, new = _normal(1, 1000), _normal(2, 1000 * shift)
    c = compare_samples("cell", "m", "u", direction, base, new)  # type: ignore[arg-type]
    assert c.verdict == verdict
    assert c.p < 0.01
    assert c.change == pytest.approx(shift - 1, abs=0.03)
    assert c.ci[0] < c.change < c.ci[1]


def test_identical_distributions_are_not_flagged() -> None:
    flagged = [seed for seed in range(100)
               if compare_samples("cell", "m", "u", "higher", _normal(seed, 1000),
                                  _normal(seed + 1000, 1000)).verdict != "same"]
    assert flagged == []


def test_a_significant_but_small_change_is_not_a_regression() -> None:
    base, new = _normal(3, 1000, 0.002, 20), _normal(4, 980, 0.002, 20)  # -2%, very precise
    c = compare_samples("cell", "m", "u", "higher", base, new)
    assert c.p < 0.01 and c.verdict == "same"


def test_a_large_but_noisy_change_is_noise() -> None:
    base, new = _normal(5, 1000, 0.5, 6), _normal(6, 900, 0.5, 6)
    assert compare_samples("cell", "m", "u", "higher", base, new).verdict in ("noise", "same")


def test_too_few_samples_say_so() -> None:
    c = compare_samples("cell", "m", "u", "higher", [100, 101, 99], [50, 51, 49])
    assert c.verdict == "too-few"


def test_lkp_table_and_geometric_mean() -> None:
    worse = compare_samples("a", "ops_per_s", "ops/s", "higher", _normal(7, 100), _normal(8, 80))
    same = compare_samples("b", "ops_per_s", "ops/s", "higher", _normal(9, 100), _normal(10, 100))
    table = lkp_table([worse, same])
    assert "%stddev" in table and "%change" in table
    line = next(t for t in table.splitlines() if "a: ops_per_s" in t)
    assert "REGRESSION" in line and "-2" in line  # about -20%
    gm = geometric_mean_change([worse, same])
    assert gm == pytest.approx(math.sqrt((1 + worse.change) * (1 + same.change)))


def _records(samples: list[float], metric: str = "ops_per_s") -> list[RunRecord]:
    out = []
    for s in samples:
        r = RunRecord(kind="workload", name="pingpong", ok=True,
                      dimensions={"nodes": 2, "vcpus": 2, "policy": "page",
                                  "params": {"rounds": 500, "timeout_s": 99}})
        r.add(metric, s)
        out.append(r)
    return out


def test_records_are_compared_cell_by_cell() -> None:
    base = _records(_normal(11, 1000))
    new = _records(_normal(12, 800))
    for r in new:
        r.dimensions["params"]["timeout_s"] = 5  # a bound, not part of what is measured
    other = _records(_normal(13, 800))
    for r in other:
        r.dimensions["nodes"] = 4  # another cell: not compared with the 2-node base
    rows = compare_records(base, new + other)
    assert [(r.cell, r.verdict) for r in rows] == [("pingpong n2 page rounds=500", "regression")]
    failed = _records(_normal(14, 800))
    for r in failed:
        r.ok = False
    assert compare_records(base, failed) == []  # failed runs are no samples


def _boot_records(boots: list[float], runs: int, seed: int, suite_run: str) -> list[RunRecord]:
    """Suite records: each boot's value shared by its runs, plus 1% run-to-run noise."""
    rng = np.random.default_rng(seed)
    out = []
    for rep, value in enumerate(boots, start=1):
        for run in range(1, runs + 1):
            [r] = _records([value * (1 + rng.normal(0, 0.01))])
            r.labels = {"suite_run": suite_run, "repetition": rep, "run": run}
            out.append(r)
    return out


def test_the_runs_of_one_boot_are_one_sample() -> None:
    records = _boot_records([100.0, 200.0], 3, 0, "s1")
    values = replicates(records, "ops_per_s")
    assert len(values) == 2 and sorted(round(v, -1) for v in values) == [100, 200]
    loose = _records([1.0, 2.0, 3.0])  # outside a suite: every sample counts
    assert sorted(replicates(loose, "ops_per_s")) == [1.0, 2.0, 3.0]


def test_runs_inside_a_boot_do_not_make_the_same_version_look_different() -> None:
    # The boot matters (20% between boots), the run hardly (1%): pooling the runs as
    # if independent flags versions that do not differ; one sample per boot does not.
    pooled, per_boot = 0, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        a = _boot_records(list(rng.normal(100, 20, 6)), 3, seed, "a")
        b = _boot_records(list(rng.normal(100, 20, 6)), 3, seed + 1000, "b")
        [row] = compare_records(a, b)
        assert row.base.n == 6 and row.new.n == 6
        per_boot += row.verdict in ("regression", "improvement")
        flat = compare_samples("c", "ops_per_s", "ops/s", "higher",
                               [s for r in a for s in r.metrics["ops_per_s"].samples],
                               [s for r in b for s in r.metrics["ops_per_s"].samples])
        pooled += flat.verdict in ("regression", "improvement")
    assert per_boot <= 2  # about alpha of 40 (seeded: 1)
    assert pooled >= 5  # what the pooled comparison would have claimed
