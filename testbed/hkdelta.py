"""Hyperkernel statistics for one run: what changed between two queries.

A cluster's counters run from the moment its nodes start, so a workload run
on a guest that has already booted (or run other workloads) must subtract
the statistics taken just before it. ``delta(before, after)`` does that for
every node's ``query-hyperkernel`` answer and merges the nodes:

* counters and messages (count and bytes per type): exact differences;
* stall histograms (log2 nanosecond buckets): exact bucket differences, with
  p50/p99/max recomputed from the buckets as the library does (the upper
  bound of the bucket, so within 2x);
* stage histograms (``stages``: where a stall's time goes, one histogram per
  stage that the node ran as requester, home or holder): as the stall
  histograms, merged over nodes by adding buckets;
* scheduler time (``sched``, from the kernel's schedstat): run time and time
  spent runnable but waiting for a CPU, of the event thread and of the vCPU
  threads, as differences;
* placement (``vcpu_placement_ms``): per vCPU, the ms its thread ran on each
  node, from the same schedstat: where the vCPUs were over the run;
* hottest pages: the library reports only its top 10, so a page that was
  not in the earlier top 10 is taken as having had no stalls before. The
  result says ``"hottest_exact": false`` when that guess was needed.

An empty ``before`` means "from the start" (the run began with the nodes).
"""

from __future__ import annotations

from typing import Any

TOP_PAGES = 10
# The library's top list (HK_TOP_PAGES): a shorter list names every page that stalled.
LIBRARY_TOP_PAGES = 10


def _num(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _sub_counters(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    return {k: _num(v) - _num(before.get(k, 0)) for k, v in after.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def _bucket_bound(b: int) -> int:
    return (2 << b) - 1


def hist_summary(buckets: list[int], sum_ns: float) -> dict[str, Any]:
    """count, p50/p99/max (bucket upper bounds), mean and the buckets themselves."""
    while buckets and buckets[-1] == 0:
        buckets = buckets[:-1]
    count = sum(buckets)

    def pct(p: float) -> int:
        if not count:
            return 0
        want, seen = max(1, int(p * count + 0.999999)), 0
        for b, n in enumerate(buckets):
            seen += n
            if seen >= want:
                return _bucket_bound(b)
        return _bucket_bound(len(buckets) - 1)

    return {"count": count, "p50_ns": pct(0.5), "p99_ns": pct(0.99),
            "max_ns": _bucket_bound(len(buckets) - 1) if buckets else 0,
            "mean_ns": int(sum_ns / count) if count else 0, "log2_ns_buckets": buckets}


def _hist_parts(h: dict[str, Any]) -> tuple[list[int], float]:
    buckets = [_num(x) for x in h.get("log2_ns_buckets", [])]
    return buckets, float(_num(h.get("mean_ns", 0)) * _num(h.get("count", 0)))


def _sub_hist(after: dict[str, Any], before: dict[str, Any]) -> tuple[list[int], float]:
    a, a_sum = _hist_parts(after)
    b, b_sum = _hist_parts(before)
    width = max(len(a), len(b))
    a, b = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    return [x - y for x, y in zip(a, b, strict=True)], a_sum - b_sum


def _sub_messages(after: dict[str, Any], before: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for kind, fields in after.items():
        if isinstance(fields, dict):
            diff = _sub_counters(fields, before.get(kind, {}) if isinstance(before.get(kind), dict)
                                 else {})
            if any(diff.values()):
                out[kind] = diff
    return out


def _sub_hottest(after: list[dict[str, Any]], before: list[dict[str, Any]]
                 ) -> tuple[dict[int, int], bool]:
    earlier = {_num(p.get("offset")): _num(p.get("stalls")) for p in before}
    complete = len(before) < LIBRARY_TOP_PAGES  # the earlier list named every stalled page
    exact = True
    out: dict[int, int] = {}
    for page in after:
        off = _num(page.get("offset"))
        if off not in earlier and not complete:
            exact = False
        stalls = _num(page.get("stalls")) - earlier.get(off, 0)
        if stalls > 0:
            out[off] = stalls
    return out, exact


def _vcpu_thread_sched(stats: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(vCPU, schedstat) of each vCPU thread the node reports."""
    out = []
    for t in stats.get("threads", []):
        sc = t.get("sched") if isinstance(t, dict) else None
        if isinstance(sc, dict) and _num(t.get("vcpu", -1)) >= 0:
            out.append((_num(t["vcpu"]), sc))
    return out


def _sched(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Scheduler time per role: the event thread, and the vCPU threads summed."""
    out: dict[str, dict[str, int]] = {}
    ev = stats.get("sched", {}).get("event_thread")
    if isinstance(ev, dict):
        out["event_thread"] = {k: _num(ev.get(k)) for k in SCHED_FIELDS}
    for _, sc in _vcpu_thread_sched(stats):
        mine = out.setdefault("vcpu_threads", dict.fromkeys(SCHED_FIELDS, 0))
        for k in SCHED_FIELDS:
            mine[k] += _num(sc.get(k))
    return out


SCHED_FIELDS = ("run_ns", "run_delay_ns")


def _vcpu_run_ns(stats: dict[str, Any]) -> dict[int, int]:
    """Run time of each vCPU's thread on this node: a vCPU runs on one node at a
    time, and its thread on every other node sleeps, so this is where it ran."""
    out: dict[int, int] = {}
    for vcpu, sc in _vcpu_thread_sched(stats):
        out[vcpu] = out.get(vcpu, 0) + _num(sc.get("run_ns"))
    return out


def placement_ms(nodes: list[dict[str, Any]]) -> list[list[float]]:
    """Per vCPU, the ms of host CPU it ran on each node (by node id) in the
    interval: the placement over the run, not just where it ended."""
    count = 1 + max((_num(n["node"]) for n in nodes), default=-1)
    vcpus = max((len(n["vcpu_run_ms"]) for n in nodes), default=0)
    out = [[0.0] * count for _ in range(vcpus)]
    for n in nodes:
        for v, ms in enumerate(n["vcpu_run_ms"]):
            out[v][_num(n["node"])] += ms
    return out


def _hist_names(stats: dict[str, Any]) -> list[str]:
    return ["read_stall", "write_stall"] + [f"stage:{k}" for k in stats.get("stages", {})]


def _hist_of(stats: dict[str, Any], name: str) -> dict[str, Any]:
    stages = stats.get("stages", {})
    h = stages.get(name[6:], {}) if name.startswith("stage:") else stats.get(name, {})
    return h if isinstance(h, dict) else {}


def _node_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    a, b = after.get("stats", {}), before.get("stats", {})
    counters = _sub_counters(a.get("counters", {}), b.get("counters", {}))
    hist = {}
    for which in _hist_names(a):
        buckets, sum_ns = _sub_hist(_hist_of(a, which), _hist_of(b, which))
        hist[which] = (buckets, sum_ns)
    sched_a, sched_b = _sched(a), _sched(b)
    sched = {role: {k: v - sched_b.get(role, {}).get(k, 0) for k, v in f.items()}
             for role, f in sched_a.items()}
    run_a, run_b = _vcpu_run_ns(a), _vcpu_run_ns(b)
    vcpu_run_ms = [round((run_a.get(v, 0) - run_b.get(v, 0)) / 1e6, 1)
                   for v in range(1 + max(run_a, default=-1))]
    hottest, exact = _sub_hottest(a.get("hottest_pages", []), b.get("hottest_pages", []))
    # the lines of each page its last faults touched (exact fault addresses), as of now
    lines = {_num(p.get("offset")): list(p.get("lines", [])) for p in a.get("hottest_pages", [])}
    # A counter that went down means the node restarted in between: its figures
    # since the restart are all there is.
    reset = any(v < 0 for v in counters.values()) or any(
        x < 0 for buckets, _ in hist.values() for x in buckets)
    if reset:
        return {**_node_delta(after, {}), "reset": True}
    return {
        "node": _num(after.get("node", a.get("node", 0))),
        "counters": counters,
        # the policy's decisions by reason, and the glue's moves and pulls
        "decisions": _sub_counters(a.get("decisions", {}), b.get("decisions", {})),
        "glue": _sub_counters(a.get("glue", {}), b.get("glue", {})),
        "malformed_messages": _num(a.get("malformed_messages")) - _num(b.get("malformed_messages")),
        "read_stall": hist_summary(*hist["read_stall"]),
        "write_stall": hist_summary(*hist["write_stall"]),
        "stages": {k[6:]: hist_summary(*v) for k, v in hist.items() if k.startswith("stage:")},
        "sched": sched,
        "vcpu_run_ms": vcpu_run_ms,
        "messages": _sub_messages(a.get("messages", {}), b.get("messages", {})),
        "hottest_pages": [{"offset": o, "stalls": n, "lines": lines.get(o, [])} for o, n in
                          sorted(hottest.items(), key=lambda kv: -kv[1])],
        "hottest_exact": exact,
        "resident_pages": _num(a.get("resident_pages")),
        "budget_pages": _num(a.get("budget_pages")),
        "_sums": {k: v[1] for k, v in hist.items()},
    }


def delta(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of what ran between two ``Cluster.node_stats()`` answers.

    Empty when the cluster does not use the hyperkernel (``after`` is empty).
    """
    if not after:
        return {}
    earlier = {_num(n.get("node", n.get("stats", {}).get("node", i))): n
               for i, n in enumerate(before)}
    nodes = [_node_delta(n, earlier.get(_num(n.get("node", n.get("stats", {}).get("node", i))), {}))
             for i, n in enumerate(after)]
    totals: dict[str, int] = {}
    decisions: dict[str, int] = {}
    glue: dict[str, int] = {}
    messages: dict[str, dict[str, int]] = {}
    hottest: dict[int, int] = {}
    lines: dict[int, list[int]] = {}
    hists: dict[str, tuple[list[int], float]] = {}
    sched: dict[str, dict[str, int]] = {}
    for node in nodes:
        for role, fields in node["sched"].items():
            mine_s = sched.setdefault(role, dict.fromkeys(SCHED_FIELDS, 0))
            for k, v in fields.items():
                mine_s[k] = mine_s.get(k, 0) + v
        for k, v in node["counters"].items():
            totals[k] = totals.get(k, 0) + v
        for k, v in node["decisions"].items():
            decisions[k] = decisions.get(k, 0) + v
        for k, v in node["glue"].items():
            glue[k] = glue.get(k, 0) + v
        for kind, fields in node["messages"].items():
            mine = messages.setdefault(kind, {})
            for k, v in fields.items():
                mine[k] = mine.get(k, 0) + v
        for page in node["hottest_pages"]:
            hottest[page["offset"]] = hottest.get(page["offset"], 0) + page["stalls"]
            seen = lines.setdefault(page["offset"], [])
            seen += [x for x in page.get("lines", []) if x not in seen]
        sums = node.pop("_sums")
        for which in sums:
            buckets, total = hists.get(which, ([], 0.0))
            mine_b = (node["stages"][which[6:]] if which.startswith("stage:")
                      else node[which])["log2_ns_buckets"]
            width = max(len(buckets), len(mine_b))
            buckets = [x + y for x, y in zip(buckets + [0] * (width - len(buckets)),
                                             mine_b + [0] * (width - len(mine_b)), strict=True)]
            hists[which] = (buckets, total + sums[which])
    ranked = sorted(hottest.items(), key=lambda kv: -kv[1])[:TOP_PAGES]
    return {
        "totals": totals,
        "decisions": decisions,
        "glue": glue,
        "messages": messages,
        "read_stall": hist_summary(*hists["read_stall"]),
        "write_stall": hist_summary(*hists["write_stall"]),
        "stages": {k[6:]: hist_summary(*v) for k, v in hists.items() if k.startswith("stage:")},
        "sched": sched,
        "hottest_pages": [{"offset": o, "gpa": hex(o), "stalls": n,
                           "lines": sorted(lines.get(o, []))} for o, n in ranked],
        "hottest_exact": all(n["hottest_exact"] for n in nodes),
        "vcpu_placement_ms": placement_ms(nodes),
        "nodes": nodes,
    }


# Counters worth comparing between versions: what the coherence protocol cost.
COMPARED_COUNTERS = ("pages_received", "read_stalls", "write_stalls", "invalidations_sent",
                     "vcpu_blobs_sent", "evictions")


def metrics_of(d: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """The delta's headline figures as (value, unit), named ``hk_<figure>``."""
    if not d:
        return {}
    out: dict[str, tuple[float, str]] = {}
    for key in COMPARED_COUNTERS:
        out[f"hk_{key}"] = (float(d["totals"].get(key, 0)), "count")
    sent = sum(f.get("sent_bytes", 0) for f in d["messages"].values())
    out["hk_bytes_sent"] = (float(sent), "B")
    for which in ("read_stall", "write_stall"):
        if d[which]["count"]:
            out[f"hk_{which}_p50_ns"] = (float(d[which]["p50_ns"]), "ns")
            out[f"hk_{which}_p99_ns"] = (float(d[which]["p99_ns"]), "ns")
    for stage, h in d.get("stages", {}).items():
        if h["count"]:
            out[f"hk_stage_{stage}_p50_ns"] = (float(h["p50_ns"]), "ns")
    for role, fields in d.get("sched", {}).items():
        out[f"hk_{role}_run_delay_ns"] = (float(fields.get("run_delay_ns", 0)), "ns")
    return out
