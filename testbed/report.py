"""The release report: one self-contained HTML page of plotly figures.

plotly.js is embedded in the page, so it opens with no network. What it shows:

* with a base and a new set: each cell's change with its 95% confidence
  interval (bootstrap of the medians), the verdict of the permutation test,
  and a summary by geometric mean;
* the distribution of each cell's headline figure (ops_per_s, boot time);
* from the hyperkernel statistics of the runs: stall-time histograms, the
  hottest pages and the bytes moved by message type;
* a timeline of each suite run: every cell run and boot as a bar in time, with
  the pages received and vCPUs moved by each run below it
  (``testbed.report_timeline``);
* the failed runs with their reasons, and behind every cell the records it
  is made of: dimensions, artifact hashes, commit, host, run directory.

The page checks itself when it loads: ``<body data-report-status="ok">`` once
every figure has drawn its traces, ``data-js-errors`` with any JavaScript
error. ``tests/test_report.py`` reads both in a real headless Chromium.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline

from testbed import report_timeline
from testbed.compare import Comparison, compare_records, geometric_mean_change
from testbed.hkdelta import hist_summary
from testbed.metrics import PRIMARY_METRIC
from testbed.record import RunRecord
from testbed.store import cell_key, cell_label

HEADLINES = (PRIMARY_METRIC, "boot_seconds", "migration_latency_us")
VERDICT_COLOURS = {"regression": "#c0392b", "improvement": "#1e8449", "same": "#7f8c8d",
                   "noise": "#d4ac0d", "too-few": "#aab7b8"}

_EARLY_SCRIPT = """
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  window.__reportErrors.push(String(e.message) + ' at ' + e.filename + ':' + e.lineno);
});
"""

# After load: every plotly div must have drawn an SVG and hold at least one trace with data.
_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  setTimeout(function () {
    var divs = document.querySelectorAll('.plotly-graph-div');
    var empty = [];
    divs.forEach(function (d) {
      var drawn = d.querySelectorAll('.main-svg').length > 0 && d._fullLayout;
      var hasData = (d.data || []).some(function (t) {
        return ['x', 'y', 'values', 'z'].some(function (k) { return t[k] && t[k].length > 0; });
      });
      if (!drawn || !hasData) { empty.push(d.id); }
    });
    var b = document.body;
    b.setAttribute('data-figures', String(divs.length));
    b.setAttribute('data-figures-drawn', String(divs.length - empty.length));
    b.setAttribute('data-js-errors', window.__reportErrors.join(' | '));
    b.setAttribute('data-report-status',
                   window.__reportErrors.length ? 'js-error'
                   : empty.length ? 'empty:' + empty.join(',')
                   : divs.length ? 'ok' : 'no-figures');
  }, 0);
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f4f6f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary { background: #f4f6f7; padding: 1em; border-radius: 6px; }
.regression { color: #c0392b; font-weight: bold; } .improvement { color: #1e8449; }
code, .hash { font-family: ui-monospace, monospace; font-size: 0.9em; }
details { margin: 0.3em 0; } .note { color: #666; font-style: italic; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "-"


class _Page:
    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.figures = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: go.Figure, height: int = 420, div_id: str | None = None) -> None:
        self.figures += 1
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 60},
                          template="plotly_white")
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=False,
                                      config={"displaylogo": False},
                                      div_id=div_id or f"figure-{self.figures}"))

    def html(self) -> str:
        return "\n".join([
            "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
            f"<title>{_esc(self.title)}</title>", f"<style>{_CSS}</style>",
            f"<script>{_EARLY_SCRIPT}</script>",
            f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>",
            "</head><body>", f"<h1>{_esc(self.title)}</h1>", *self.parts,
            f"<script>{_CHECK_SCRIPT}</script>", "</body></html>"])


def _group(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(cell_key(r), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: cell_label(kv[1][0])))


def _provenance(records: list[RunRecord]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {"commit": set(), "host": set(), "qemu": set(), "kernel": set(),
                                 "initramfs": set()}
    for r in records:
        d = r.dimensions
        seen["commit"].add(str(d.get("commit", "?")))
        seen["host"].add(f"{d.get('host', {}).get('hostname', '?')} "
                         f"({d.get('host', {}).get('cpus', '?')} CPUs)")
        for k in ("qemu", "kernel", "initramfs"):
            seen[k].add(str(d.get("artifacts", {}).get(k, "?")))
    return seen


def _summary(page: _Page, new: list[RunRecord], base: list[RunRecord], new_name: str,
             base_name: str, rows: list[Comparison]) -> None:
    failed = [r for r in new if not r.ok]
    cells = {cell_key(r) for r in new}
    items = [f"<b>generated</b> {_esc(time.strftime('%Y-%m-%d %H:%M:%S %z'))}",
             f"<b>new</b>: {_esc(new_name)} — {len(new)} records, {len(cells)} cells, "
             f"{len(failed)} failed"]
    if base:
        items.append(f"<b>base</b>: {_esc(base_name)} — {len(base)} records")
        gm = geometric_mean_change(rows)
        regressions = [r for r in rows if r.verdict == "regression"]
        improvements = [r for r in rows if r.verdict == "improvement"]
        if math.isfinite(gm):
            items.append(f"<b>geometric mean</b> of the headline figures, oriented so that above "
                         f"1 is better: <b>{gm:.3f}</b> ({(gm - 1) * 100:+.1f}%) over {len(rows)} "
                         "comparisons")
        items.append(f"<span class=\"regression\">{len(regressions)} regression(s)</span>, "
                     f"<span class=\"improvement\">{len(improvements)} improvement(s)</span> "
                     "(permutation test p &lt; 0.01 and change ≥ 5%)")
    for key, values in _provenance(base + new).items():
        shown = ", ".join(sorted(v[:16] if key in ("qemu", "kernel", "initramfs") else v
                                 for v in values))
        items.append(f"<b>{key}</b>: <span class=\"hash\">{_esc(shown)}</span>")
    page.add("<div class=\"summary\">" + "<br>".join(items) + "</div>")


def _change_section(page: _Page, rows: list[Comparison]) -> None:
    page.add("<h2>Change per cell</h2><p>Relative change of the median, new against base, "
             "with the 95% bootstrap confidence interval. Colour: the verdict.</p>")
    if not rows:
        page.add("<p class=\"note\">No cell was measured on both sides.</p>")
        return
    labels = [f"{r.cell} · {r.metric}" for r in rows]
    change = [r.change * 100 for r in rows]
    fig = go.Figure(go.Bar(
        x=change, y=labels, orientation="h",
        marker_color=[VERDICT_COLOURS[r.verdict] for r in rows],
        error_x={"type": "data", "symmetric": False,
                 "array": [max(0.0, r.ci[1] * 100 - c) if math.isfinite(r.ci[1]) else 0
                           for r, c in zip(rows, change, strict=True)],
                 "arrayminus": [max(0.0, c - r.ci[0] * 100) if math.isfinite(r.ci[0]) else 0
                                for r, c in zip(rows, change, strict=True)]},
        customdata=[[r.verdict, f"{r.p:.3g}", r.direction] for r in rows],
        hovertemplate="%{y}<br>change %{x:.1f}%<br>verdict %{customdata[0]}, "
                      "p=%{customdata[1]}<br>%{customdata[2]} is better<extra></extra>"))
    fig.update_layout(title="Change of the median (%)", xaxis_title="% change, new vs base",
                      yaxis={"automargin": True})
    page.figure(fig, height=max(300, 40 + 28 * len(rows)))
    head = ("<tr><th>cell</th><th>metric</th><th>base median</th><th>%stddev</th>"
            "<th>%change</th><th>95% CI</th><th>new median</th><th>%stddev</th><th>p</th>"
            "<th>n base/new</th><th>verdict</th></tr>")
    body = []
    for r in rows:
        ci = (f"{r.ci[0] * 100:+.1f}% … {r.ci[1] * 100:+.1f}%"
              if math.isfinite(r.ci[0]) else "-")
        body.append(
            f"<tr><td>{_esc(r.cell)}</td><td>{_esc(r.metric)} [{_esc(r.unit)}]</td>"
            f"<td class=num>{_num(r.base.median)}</td><td class=num>±{r.base.cv * 100:.1f}%</td>"
            f"<td class=num>{r.change * 100:+.1f}%</td><td class=num>{ci}</td>"
            f"<td class=num>{_num(r.new.median)}</td><td class=num>±{r.new.cv * 100:.1f}%</td>"
            f"<td class=num>{r.p:.3g}</td><td class=num>{r.base.n}/{r.new.n}</td>"
            f"<td class=\"{r.verdict}\">{r.verdict}</td></tr>")
    page.add(f"<table>{head}{''.join(body)}</table>")


def _distribution_section(page: _Page, new: list[RunRecord], base: list[RunRecord]) -> None:
    page.add("<h2>Headline figures</h2><p>Every sample of each cell's headline figure; the "
             "box spans the quartiles, the line is the median.</p>")
    for metric in HEADLINES:
        fig = go.Figure()
        for name, records in (("base", base), ("new", new)):
            xs: list[str] = []
            ys: list[float] = []
            for group in _group(records).values():
                for r in group:
                    if r.ok and metric in r.metrics:
                        for s in r.metrics[metric].samples:
                            xs.append(cell_label(r))
                            ys.append(s)
            if ys:
                fig.add_trace(go.Box(x=xs, y=ys, name=name, boxpoints="all", jitter=0.3))
        if not fig.data:
            continue
        unit = next((r.metrics[metric].unit for r in new + base if metric in r.metrics), "")
        # Throughputs of different workloads span orders of magnitude: a log axis shows them all.
        fig.update_layout(title=f"{metric} [{unit}]", boxmode="group", yaxis_title=unit,
                          yaxis_type="log" if metric == PRIMARY_METRIC else "linear",
                          xaxis={"automargin": True})
        page.figure(fig)


def _first_object(kernel: str) -> str:
    """The first object of a hottest page's names, without its offset:
    ``"+0xb00 percpu cpu0: call_single_queue+0x0; ..."`` ->
    ``"percpu cpu0: call_single_queue"``."""
    first = kernel.split(";")[0].strip()
    first = first.split(" ", 1)[1] if first.startswith("+") and " " in first else first
    return (first.rsplit("+", 1)[0] if "+" in first else first).rstrip()


def _bucket_label(b: int) -> str:
    ns = (2 << b) - 1
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"≤{ns / scale:.3g} {unit}"
    return f"≤{ns} ns"


def _bucket_of(bound_ns: int) -> int:
    return max(0, int(bound_ns).bit_length() - 1)


def _hk_section(page: _Page, new: list[RunRecord]) -> None:
    page.add("<h2>Hyperkernel statistics</h2><p>What the coherence protocol did during the "
             "runs of the new set (statistics after minus before each run, summed over the "
             "cell's records).</p>")
    groups = {k: [r for r in g if r.hk_stats] for k, g in _group(new).items()}
    groups = {k: g for k, g in groups.items() if g}
    if not groups:
        page.add("<p class=\"note\">No run of this set used the hyperkernel (1-node cells run "
                 "without it), so there are no stall, page or message statistics.</p>")
        return
    # Stall histograms.
    fig = go.Figure()
    for records in groups.values():
        buckets: list[int] = []
        for r in records:
            for which in ("read_stall", "write_stall"):
                bs = r.hk_stats.get(which, {}).get("log2_ns_buckets", [])
                buckets = [a + b for a, b in zip(buckets + [0] * (len(bs) - len(buckets)),
                                                 bs + [0] * (len(buckets) - len(bs)), strict=True)]
        if sum(buckets):
            summary = hist_summary(buckets, 0.0)
            fig.add_trace(go.Bar(x=[_bucket_label(b) for b in range(len(buckets))], y=buckets,
                                 name=f"{cell_label(records[0])} (p50 "
                                 f"{_bucket_label(_bucket_of(summary['p50_ns']))[1:]})"))
    if fig.data:
        fig.update_layout(title="Stall time (read and write), log2 buckets", barmode="group",
                          xaxis_title="stall time", yaxis_title="stalls")
        page.figure(fig)
    # Hottest pages.
    pages: dict[str, dict[str, int]] = {}
    objects: dict[str, str] = {}  # gpa -> the kernel object the guest named there
    for records in groups.values():
        label = cell_label(records[0])
        for r in records:
            for p in r.hk_stats.get("hottest_pages", []):
                gpa = str(p.get("gpa") or hex(int(p.get("offset", 0))))
                pages.setdefault(gpa, {})
                pages[gpa][label] = pages[gpa].get(label, 0) + int(p.get("stalls", 0))
                if p.get("kernel"):
                    objects[gpa] = _first_object(str(p["kernel"]))
    top = sorted(pages.items(), key=lambda kv: -sum(kv[1].values()))[:20]
    if top:
        fig = go.Figure()
        # a page's place moves with KASLR at every boot, so the same object
        # can show under several addresses: the name says which it is
        names = [f"{gpa} {objects[gpa]}" if gpa in objects else gpa for gpa, _ in top]
        for label in sorted({lab for _, per in top for lab in per}):
            fig.add_trace(go.Bar(x=names, y=[per.get(label, 0) for _, per in top],
                                 name=label))
        fig.update_layout(title="Hottest pages (guest physical address) by stalls",
                          barmode="stack", xaxis_title="page", yaxis_title="stalls")
        page.figure(fig)
    # Bytes by message type.
    fig = go.Figure()
    kinds = sorted({k for g in groups.values() for r in g for k in r.hk_stats.get("messages", {})})
    labels = [cell_label(g[0]) for g in groups.values()]
    for kind in kinds:
        ys = [sum(r.hk_stats.get("messages", {}).get(kind, {}).get("sent_bytes", 0) for r in g)
              / len(g) for g in groups.values()]
        if any(ys):
            fig.add_trace(go.Bar(x=labels, y=ys, name=kind))
    if fig.data:
        fig.update_layout(title="Bytes sent by message type (mean per run)", barmode="stack",
                          yaxis_title="bytes", xaxis={"automargin": True})
        page.figure(fig)


def _failures_section(page: _Page, records: list[RunRecord]) -> None:
    failed = [r for r in records if not r.ok]
    if not failed:
        return
    page.add("<h2>Failed runs</h2><table><tr><th>cell</th><th>when</th><th>reason</th>"
             "<th>logs</th></tr>" + "".join(
                 f"<tr><td>{_esc(cell_label(r))}</td><td>{_esc(r.started)}</td>"
                 f"<td>{_esc(r.reason or '')}</td><td><code>{_esc(r.run_dir)}</code></td></tr>"
                 for r in failed) + "</table>")


def _records_section(page: _Page, new: list[RunRecord], base: list[RunRecord]) -> None:
    page.add("<h2>Behind every number</h2><p>Each cell's records: their dimensions, artifact "
             "hashes (sha256 of the files that ran), commit and host.</p>")
    for side, records in (("new", new), ("base", base)):
        for group in _group(records).values():
            rows = []
            for r in group:
                d = r.dimensions
                arts = d.get("artifacts", {})
                headline = next((f"{m}={r.metrics[m].value:.4g}" for m in HEADLINES
                                 if m in r.metrics), "")
                rows.append(
                    f"<tr><td class=hash>{_esc(r.id[:12])}</td><td>{_esc(r.started)}</td>"
                    f"<td>{'ok' if r.ok else 'FAILED'}</td><td>{_esc(headline)}</td>"
                    f"<td class=hash>{_esc(str(d.get('commit', ''))[:14])}</td>"
                    f"<td>{_esc(d.get('host', {}).get('hostname', ''))}</td>"
                    f"<td class=hash>qemu {_esc(str(arts.get('qemu', ''))[:12])}<br>kernel "
                    f"{_esc(str(arts.get('kernel', ''))[:12])}<br>initramfs "
                    f"{_esc(str(arts.get('initramfs', ''))[:12])}</td>"
                    f"<td><code>{_esc(json.dumps(d.get('params', {}), sort_keys=True))}</code></td>"
                    f"<td><code>{_esc(r.run_dir)}</code></td></tr>")
            d0 = group[0].dimensions
            shape = (f"nodes {d0.get('nodes')}, vCPUs {d0.get('vcpus')}, {d0.get('mem_mib')} MiB, "
                     f"policy {d0.get('policy')}, placement {d0.get('placement')}")
            page.add(f"<details><summary>{side}: {_esc(cell_label(group[0]))} — {len(group)} "
                     f"record(s); {_esc(shape)}</summary><table><tr><th>record</th><th>started"
                     "</th><th>ok</th><th>headline</th><th>commit</th><th>host</th><th>artifacts"
                     "</th><th>params</th><th>run dir</th></tr>" + "".join(rows) +
                     "</table></details>")


def write_report(path: Path, *, new: list[RunRecord], base: list[RunRecord] | None = None,
                 new_name: str = "new", base_name: str = "base",
                 title: str = "Performance report") -> Path:
    base = base or []
    rows = compare_records(base, new) if base else []
    page = _Page(title)
    _summary(page, new, base, new_name, base_name, rows)
    if base:
        _change_section(page, rows)
    _distribution_section(page, new, base)
    _hk_section(page, new)
    report_timeline.section(page, new)
    _failures_section(page, base + new)
    _records_section(page, new, base)
    if not page.figures:
        page.add("<p class=\"note\">No successful run with a headline figure: nothing to plot."
                 "</p>")
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(page.html())
    tmp.rename(path)
    return path

