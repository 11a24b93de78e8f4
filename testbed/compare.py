"""Comparing two sets of samples: robust summaries, a permutation test, a verdict.

The rule, as in Firecracker's A/B tooling: a difference counts only if it is
both *significant* (a two-sided permutation test on the difference of
means gives p < ``alpha``, 0.01 by default) and *large* (the medians differ
by at least ``min_effect``, 5% by default). Which way is worse comes from the
metric's direction. A difference that is large but not significant is
reported as noise; with few samples no difference can be significant (three
against three allows p >= 0.1 at best), and the verdict says so instead of
guessing.

The unit of replication is the boot. A suite may run a cell several times in
one boot (``runs``); those runs share the boot's page placement and the load
of the moment, so they are not independent samples: the records of one boot
(same suite run and repetition) give one value, the median of their samples
(``replicates``). Counting them as independent would make p too small, and
two runs of the same version would be flagged.

How many boots a side needs: an exact two-sided test of n against n can
give p no smaller than 2 / C(2n, n) (both extreme labellings). Five against
five gives 2/252 = 0.0079, just under 0.01, and only when every sample of
one side lies beyond every sample of the other; eight against eight gives
2/12870 = 0.00016, which leaves room for a stray boot on a shared machine.

Summaries are robust: median, MAD (scaled to a standard deviation for normal
data) and the range after trimming the top and bottom 10%. The LKP-style
table also shows %stddev (the coefficient of variation) so noisy cells stand
out. A confidence interval for the relative change comes from a bootstrap of
the medians.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from testbed.metrics import Direction
from testbed.record import RunRecord
from testbed.store import cell_key, cell_label

Verdict = Literal["regression", "improvement", "same", "noise", "too-few"]
MIN_EFFECT = 0.05
ALPHA = 0.01
RESAMPLES = 20000  # permutation resamples when exact enumeration would be larger
BOOTSTRAP = 4000
TRIM = 0.10
MAD_TO_SD = 1.4826  # MAD of normal data times this is its standard deviation


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mad: float  # scaled to a standard deviation
    mean: float
    stddev: float
    cv: float  # stddev / |mean|: the %stddev of LKP tables
    trimmed_lo: float
    trimmed_hi: float


def summarize(samples: list[float]) -> Summary:
    x = np.asarray([s for s in samples if math.isfinite(s)], dtype=float)
    if x.size == 0:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan, nan, nan)
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * MAD_TO_SD
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo, hi = (float(v) for v in np.quantile(x, [TRIM, 1 - TRIM]))
    return Summary(int(x.size), med, mad, mean, sd, sd / abs(mean) if mean else 0.0, lo, hi)


def _mean_diff(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mean(new) - mean(base) for each row of a boolean mask (True = new)."""
    k = mask[0].sum()
    total = x.sum()
    new_sum = (mask * x).sum(axis=1)
    return np.asarray(new_sum / k - (total - new_sum) / (x.size - k))


def min_p_value(n_base: int, n_new: int) -> float:
    """The smallest two-sided p a permutation test of these sizes can give."""
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_base)) if n_base and n_new else 1.0


def permutation_p(base: list[float], new: list[float], *, resamples: int = RESAMPLES,
                  seed: int = 0) -> float:
    """Two-sided permutation test of the difference of means (Firecracker's statistic).

    The mean, not the median: with few samples the median difference ties
    across many relabellings, which makes p coarse; the test stays valid with
    outliers (they widen the permutation distribution too), and the effect size
    the verdict needs is still the robust median change.

    Exact (every relabelling) when there are at most ``resamples`` of them,
    otherwise a seeded Monte Carlo estimate with the +1 correction, so p is
    never 0. Deterministic for a given input.
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.size == 0 or b.size == 0:
        return 1.0
    x = np.concatenate([a, b])
    n, k = x.size, b.size
    observed = abs(float(b.mean() - a.mean()))
    tolerance = 1e-12 * max(1.0, abs(observed))
    total = math.comb(n, k)
    if total <= resamples:
        masks = np.zeros((total, n), dtype=bool)
        for row, chosen in enumerate(itertools.combinations(range(n), k)):
            masks[row, list(chosen)] = True
        diffs = np.abs(_mean_diff(x, masks))
        return float(np.count_nonzero(diffs >= observed - tolerance)) / total
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < resamples:  # in batches, to bound memory
        batch = min(2000, resamples - done)
        order = np.argsort(rng.random((batch, n)), axis=1)
        masks = order < k
        diffs = np.abs(_mean_diff(x, masks))
        hits += int(np.count_nonzero(diffs >= observed - tolerance))
        done += batch
    return (hits + 1) / (resamples + 1)


def bootstrap_change_ci(base: list[float], new: list[float], *, level: float = 0.95,
                        resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(base) - 1."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, (resamples, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, (resamples, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = mb / ma - 1.0
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(ratio, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Comparison:
    cell: str
    metric: str
    unit: str
    direction: Direction
    base: Summary
    new: Summary
    change: float  # median(new) / median(base) - 1
    ci: tuple[float, float]
    p: float
    verdict: Verdict

    @property
    def worse(self) -> bool:
        return self.verdict == "regression"


def compare_samples(cell: str, metric: str, unit: str, direction: Direction, base: list[float],
                    new: list[float], *, min_effect: float = MIN_EFFECT,
                    alpha: float = ALPHA) -> Comparison:
    sb, sn = summarize(base), summarize(new)
    change = sn.median / sb.median - 1.0 if sb.median else math.nan
    p = permutation_p(base, new)
    ci = bootstrap_change_ci(base, new)
    large = math.isfinite(change) and abs(change) >= min_effect
    verdict: Verdict
    if min_p_value(sb.n, sn.n) >= alpha:
        verdict = "too-few"
    elif p < alpha and large and direction in ("higher", "lower"):
        better = change > 0 if direction == "higher" else change < 0
        verdict = "improvement" if better else "regression"
    elif large:
        verdict = "noise"
    else:
        verdict = "same"
    return Comparison(cell, metric, unit, direction, sb, sn, change, ci, p, verdict)


def samples_needed(alpha: float = ALPHA) -> int:
    """Samples per side (equal sizes) for an exact test to be able to reach p < alpha."""
    n = 1
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    mag = abs(value)
    if mag >= 1e6 or (0 < mag < 1e-2):
        return f"{value:.4g}"
    return f"{value:.6g}" if mag < 1000 else f"{value:,.0f}"


def lkp_table(rows: list[Comparison], base_name: str = "base", new_name: str = "new") -> str:
    """The LKP layout: base ± %stddev, %change, new ± %stddev, then what was measured."""
    slash, bar = "\\", "|"
    out = [f"{base_name:>24} {new_name:>34}",
           f"{'-' * 24} {'-' * 34}",
           f"{'%stddev':>24} {'%change':>10} {'%stddev':>23}",
           f"{slash:>24} {bar:>10} {slash:>23}"]
    for r in rows:
        flag = {"regression": "  REGRESSION", "improvement": "  improvement",
                "noise": "  (noise)", "too-few": "  (too few samples)"}.get(r.verdict, "")
        change = f"{r.change * 100:+.1f}%" if math.isfinite(r.change) else "-"
        out.append(f"{_fmt(r.base.median):>14} ±{r.base.cv * 100:4.0f}%   {change:>10} "
                   f"{_fmt(r.new.median):>14} ±{r.new.cv * 100:4.0f}%  "
                   f"{r.cell}: {r.metric} [{r.unit}] p={r.p:.3g}{flag}")
    return "\n".join(out)


# Metrics compared by default: each kind of run's headline figure.
DEFAULT_METRICS = ("ops_per_s", "boot_seconds", "migration_latency_us")


def _boot_of(record: RunRecord) -> tuple[str, int] | None:
    """(suite run, repetition) of a suite record: the boot it ran in; None outside suites."""
    run, rep = record.labels.get("suite_run"), record.labels.get("repetition")
    if isinstance(run, str) and isinstance(rep, int) and not isinstance(rep, bool):
        return run, rep
    return None


def replicates(records: list[RunRecord], name: str) -> list[float]:
    """The independent observations of metric ``name`` in one cell's records.

    Records of one boot (a suite cell run several times in one boot) make one
    observation, the median of their samples; a record outside a suite gives
    each of its samples (a bench's repeated boots, a demo's migrations).
    """
    boots: dict[tuple[str, int], list[float]] = {}
    out: list[float] = []
    for r in records:
        m = r.metrics.get(name)
        if m is None or not m.samples:
            continue
        boot = _boot_of(r)
        if boot is None:
            out.extend(m.samples)
        else:
            boots.setdefault(boot, []).extend(m.samples)
    out.extend(float(np.median(v)) for v in boots.values())
    return out


def coefficient_of_variation(values: list[float]) -> float:
    """stddev / |mean| (sample stddev); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = float(np.mean(values))
    return float(np.std(values, ddof=1)) / abs(mean) if mean else 0.0


def compare_records(base: list[RunRecord], new: list[RunRecord], *,
                    metrics: tuple[str, ...] | None = DEFAULT_METRICS,
                    min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> list[Comparison]:
    """Compare every cell measured on both sides, metric by metric.

    Records are grouped by what they measured (``store.cell_key``: workload,
    parameters, cluster shape), failed runs left out, and each side's
    observations of a metric are its ``replicates`` (one per boot in a suite).
    ``metrics=None`` compares every metric with a direction (higher or lower is better).
    """
    def group(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for r in records:
            if r.ok:
                out.setdefault(cell_key(r), []).append(r)
        return out

    a, b = group(base), group(new)
    rows = []
    for key in sorted(set(a) & set(b), key=lambda k: cell_label(b[k][0])):
        names = sorted({m for r in a[key] + b[key] for m in r.metrics})
        for name in names:
            if metrics is not None and name not in metrics:
                continue
            first = next(r.metrics[name] for r in a[key] + b[key] if name in r.metrics)
            if first.direction == "info":
                continue
            sa, sb = replicates(a[key], name), replicates(b[key], name)
            if sa and sb:
                rows.append(compare_samples(cell_label(b[key][0]), name, first.unit,
                                            first.direction, sa, sb, min_effect=min_effect,
                                            alpha=alpha))
    return rows


def geometric_mean_change(rows: list[Comparison]) -> float:
    """Geometric mean of the 'goodness' ratios (above 1: better), over comparable rows.

    Each row's ratio new/base is inverted for lower-is-better metrics, so the
    summary reads the same way for every metric.
    """
    logs = []
    for r in rows:
        if not (math.isfinite(r.change) and r.change > -1):
            continue
        ratio = 1.0 + r.change
        logs.append(math.log(ratio if r.direction == "higher" else 1.0 / ratio))
    return math.exp(sum(logs) / len(logs)) if logs else math.nan
