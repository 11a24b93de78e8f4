"""Merging every node's hyperkernel statistics into one record."""

from __future__ import annotations

from typing import Any


def _add_counters(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            _add_counters(total.setdefault(key, {}), value)


def merge_node_stats(per_node: list[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """Sum counters and messages over nodes; merge the hottest pages; keep per-node data.

    ``per_node`` is what ``query-hyperkernel`` returns on each node:
    ``{"node": i, "stats": {...library statistics...}, ...}``.
    """
    totals: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    hottest: dict[int, int] = {}
    lines: dict[int, list[int]] = {}
    for info in per_node:
        stats = info.get("stats", {})
        _add_counters(totals, stats.get("counters", {}))
        _add_counters(messages, stats.get("messages", {}))
        for page in stats.get("hottest_pages", []):
            off = int(page["offset"])
            hottest[off] = hottest.get(off, 0) + int(page["stalls"])
            seen = lines.setdefault(off, [])
            seen += [int(x) for x in page.get("lines", []) if int(x) not in seen]
    ranked = sorted(hottest.items(), key=lambda kv: -kv[1])[:top]
    return {
        "totals": totals,
        "messages": messages,
        "hottest_pages": [{"offset": off, "gpa": hex(off), "stalls": n,
                           "lines": sorted(lines.get(off, []))} for off, n in ranked],
        "nodes": per_node,
    }


def node_counters(per_node: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Each node's library counters (pages_received, evictions, ...), by node id."""
    by_id = sorted(per_node, key=lambda info: int(info["node"]))
    return [dict(info.get("stats", {}).get("counters", {})) for info in by_id]


def vcpu_stalls(per_node: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """Page stalls (read + write) of each vCPU thread, keyed by (node, vCPU).

    Every node has a thread for every vCPU; only the node where a vCPU runs
    can stall in its thread, so these counts show where each vCPU executed.
    """
    stalls: dict[tuple[int, int], int] = {}
    for info in per_node:
        for thread in info.get("stats", {}).get("threads", []):
            if int(thread["vcpu"]) >= 0:
                key = (int(info["node"]), int(thread["vcpu"]))
                stalls[key] = (stalls.get(key, 0) + int(thread["read_stalls"])
                               + int(thread["write_stalls"]))
    return stalls
