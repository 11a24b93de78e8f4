"""The report's timeline: what ran when, and what the hyperkernel moved meanwhile.

One figure per suite run of the new set (the newest few; runs outside a
suite make one more): every record as a bar from when it started for as long
as it took, one row per cell and a row for the boots, coloured by outcome
(a cell that hung shows as a long red bar). Under it, on the same time axis,
the pages each run received and the vCPUs it moved between nodes.

This is what a release engineer asks of a night: where the time went, which
cells failed or hung and when, whether the machine drifted (one cell's bars
getting longer through the night), and whether a slow cell coincided with a
burst of page transfers or migrations. The records hold the hyperkernel
statistics per run (after minus before), so the lower panel has one point
per run, not one per event.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from testbed.metrics import PRIMARY_METRIC
from testbed.record import RunRecord
from testbed.store import cell_label

if TYPE_CHECKING:
    from testbed.report import _Page

MAX_RUNS = 3  # suite runs drawn; a release compares one or two, history is in the other figures
OUTSIDE = "outside a suite"
COLOURS = {"ok": "#2e86c1", "boot": "#95a5a6", "failed": "#c0392b"}


def _start(record: RunRecord) -> datetime | None:
    try:
        when = datetime.strptime(record.started, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        try:  # records written before the stamps were UTC carry their offset
            when = datetime.strptime(record.started, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _iso(record: RunRecord, later: float = 0.0) -> str:
    """The record's start (plus ``later`` seconds) for a date axis; records without a
    start time are left out before this is asked."""
    start = _start(record)
    assert start is not None
    return (start + timedelta(seconds=later)).strftime("%Y-%m-%d %H:%M:%S.%f")


def span_seconds(record: RunRecord) -> float:
    """How long the record's run took: the suite's wall time of the cell, else the
    record's own duration, else its boot time."""
    for value in (record.labels.get("cell_seconds"), record.duration_s,
                  record.metrics["boot_seconds"].value if "boot_seconds" in record.metrics
                  else None):
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return float(value)
    return 0.0


def _row(record: RunRecord) -> str:
    return "boots" if record.kind == "bench" and record.name == "boot" else cell_label(record)


def _outcome(record: RunRecord) -> str:
    if not record.ok:
        return "failed"
    return "boot" if _row(record) == "boots" else "ok"


def _total(record: RunRecord, key: str) -> int:
    value = record.hk_stats.get("totals", {}).get(key, 0)
    return int(value) if isinstance(value, int | float) else 0


def _hover(record: RunRecord, seconds: float) -> str:
    lab = record.labels
    parts = [f"<b>{cell_label(record)}</b>", f"started {record.started}, {seconds:.1f} s",
             "ok" if record.ok else f"FAILED: {record.reason or ''}"[:160]]
    if "repetition" in lab:
        parts.append(f"repetition {lab['repetition']}" + (f", run {lab['run']}" if "run" in lab
                                                            else ""))
    headline = next((m for m in (PRIMARY_METRIC, "boot_seconds") if m in record.metrics), None)
    if headline:
        m = record.metrics[headline]
        parts.append(f"{headline} {m.value:.4g} {m.unit}")
    if record.hk_stats:
        parts.append(f"{_total(record, 'pages_received')} pages received, "
                     f"{_total(record, 'vcpu_blobs_sent')} vCPU moves")
    parts.append(f"record {record.id[:12]}")
    return "<br>".join(parts)


def groups(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records by suite run (newest runs first, at most MAX_RUNS), then those outside suites."""
    by_run: dict[str, list[RunRecord]] = {}
    for r in records:
        if _start(r) is not None:
            by_run.setdefault(str(r.labels.get("suite_run") or OUTSIDE), []).append(r)
    suites = sorted((k for k in by_run if k != OUTSIDE),
                    key=lambda k: min(r.started for r in by_run[k]), reverse=True)[:MAX_RUNS]
    keep = suites + ([OUTSIDE] if OUTSIDE in by_run else [])
    return {k: sorted(by_run[k], key=lambda r: r.started) for k in keep}


def figure(records: list[RunRecord], title: str) -> go.Figure:
    """The timeline of one group of records (see the module's docstring)."""
    moved = [r for r in records if r.hk_stats]
    panels = 2 if moved else 1  # no hyperkernel (1-node runs): nothing to show below
    fig = make_subplots(rows=panels, cols=1, shared_xaxes=True,
                        row_heights=[0.72, 0.28] if moved else [1.0], vertical_spacing=0.06,
                        specs=[[{}], [{"secondary_y": True}]] if moved else [[{}]])
    for outcome, colour in COLOURS.items():
        chosen = [r for r in records if _outcome(r) == outcome]
        if not chosen:
            continue
        seconds = [max(span_seconds(r), 0.5) for r in chosen]  # a sub-second run still shows
        fig.add_trace(go.Bar(
            orientation="h", name={"ok": "cell run", "boot": "boot", "failed": "failed"}[outcome],
            base=[_iso(r) for r in chosen],
            x=[sec * 1000 for sec in seconds],  # a date axis counts milliseconds
            y=[_row(r) for r in chosen], marker_color=colour,
            hovertext=[_hover(r, s) for r, s in zip(chosen, seconds, strict=True)],
            hoverinfo="text"), row=1, col=1)
    if moved:
        mids = [_iso(r, span_seconds(r) / 2) for r in moved]
        fig.add_trace(go.Scatter(x=mids,
                                 y=[_total(r, "pages_received") for r in moved],
                                 mode="markers", name="pages received (per run)",
                                 marker={"color": "#8e44ad"},
                                 hovertext=[cell_label(r) for r in moved]), row=2, col=1)
        fig.add_trace(go.Scatter(x=mids,
                                 y=[_total(r, "vcpu_blobs_sent") for r in moved],
                                 mode="markers", name="vCPU moves (per run, right axis)",
                                 marker={"color": "#e67e22", "symbol": "diamond"},
                                 hovertext=[cell_label(r) for r in moved]),
                      row=2, col=1, secondary_y=True)
    rows = sorted({_row(r) for r in records}, key=lambda t: (t != "boots", t))
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(rows)), automargin=True,
                     row=1, col=1)
    fig.update_xaxes(type="date", row=1, col=1)
    if moved:
        fig.update_yaxes(title_text="pages", type="log", row=2, col=1, secondary_y=False)
        fig.update_yaxes(title_text="vCPU moves", rangemode="tozero", row=2, col=1,
                         secondary_y=True)
    fig.update_xaxes(type="date", title_text="time (UTC)", row=panels, col=1)
    fig.update_layout(title=title, barmode="overlay", legend={"orientation": "h", "y": -0.15})
    return fig


def section(page: _Page, records: list[RunRecord]) -> None:
    page.add("<h2>Timeline</h2><p>What ran when, per suite run of the new set: each bar is one "
             "run of a cell (or a boot) from its start for as long as it took; red ones failed "
             "or hung. Below, on the same time axis, the pages each run received and the vCPUs "
             "it moved between nodes (the records hold these per run, not per event).</p>")
    chosen = groups(records)
    if not chosen:
        page.add("<p class=\"note\">No record has a start time to place on a timeline.</p>")
        return
    for key, group in chosen.items():
        first = group[0]
        title = (f"Suite {first.labels.get('suite', '?')}, run {key[:12]}" if key != OUTSIDE
                 else "Runs outside a suite")
        rows = len({_row(r) for r in group})
        page.figure(figure(group, title), height=max(420, 200 + 26 * rows),
                    div_id=f"timeline-{key[:12] if key != OUTSIDE else 'other'}")
    total = len({r.labels.get("suite_run") for r in records if r.labels.get("suite_run")})
    if total > MAX_RUNS:
        page.add(f"<p class=\"note\">The newest {MAX_RUNS} of {total} suite runs are drawn.</p>")
