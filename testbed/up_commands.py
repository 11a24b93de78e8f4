"""Commands a person gives the cluster from ``testbed up`` (after Ctrl-]):
the harness turns each into QMP on the right node, as the Python API does.

    add                        start a node in the next free slot; it joins the guest
    migrate CPU NODE           move vCPU CPU to node NODE
    evacuate K | remove K      move everything off node K; it leaves, the guest runs on
    health K [ce=N] [temp=C] [link=N]   report hardware trouble on node K
    vcpus N                    bring the guest's online vCPU count to N
    status                     nodes, vCPU counts, health and residency
    help                       this list
An empty line goes back to the console; ``quit`` (or Ctrl-] again) detaches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from testbed.errors import ConfigError, TestbedError

if TYPE_CHECKING:
    from testbed.cluster import Cluster

HELP = ("commands: add | migrate CPU NODE | evacuate K | remove K | "
        "health K [ce=N] [temp=C] [link=N] | vcpus N | status | help | quit; "
        "an empty line returns to the console")


def _int(word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ConfigError(f"{what} {word!r} is not a whole number", HELP) from None


def _status(cluster: Cluster) -> str:
    out = []
    for node, info in zip(cluster.live_nodes, cluster.node_stats(), strict=True):
        st = info.get("stats", {})
        out.append(f"node {node.index}: {st.get('resident_pages', '?')} pages, health "
                   f"{st.get('health', {}).get('score', '?')}, vCPUs {info.get('local-vcpus')}")
    gone = [n.index for n in cluster.nodes if n.departed]
    if gone:
        out.append(f"left: nodes {gone}")
    if cluster.spec.uses_hyperkernel:
        out.append(f"vCPUs: {cluster.vcpu_counts()}")
    return "\n".join(out)


def run(cluster: Cluster, line: str) -> str:
    """Do one command; return what to show. Bad input raises ConfigError."""
    words = line.split()
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    if cmd == "help":
        return HELP
    if cmd == "status":
        return _status(cluster)
    if cmd == "add":
        if args:
            raise ConfigError("add takes nothing: the node takes the next free slot", "add")
        index = cluster.add_node()
        homes = cluster.node_stats()[-1].get("stats", {}).get("home_chunks", [])
        return (f"node {index} joined; it is home for {homes[index] if index < len(homes) else '?'}"
                " chunks of pages; move vCPUs to it with: migrate CPU " + str(index))
    if cmd == "migrate":
        if len(args) != 2:
            raise ConfigError("migrate takes a vCPU and a node", "e.g. migrate 2 3")
        cpu, node = _int(args[0], "vCPU"), _int(args[1], "node")
        moved = cluster.migrate_vcpu(cpu, node)
        if not moved["moved"]:
            return f"vCPU {cpu} runs on node {node} already"
        return (f"vCPU {cpu} moved from node {moved['from']} to node {node} "
                f"({moved['state-bytes']} bytes, {moved['latency-ns'] / 1e6:.2f} ms)")
    if cmd in ("evacuate", "remove"):
        if len(args) != 1:
            raise ConfigError(f"{cmd} takes one node", "e.g. evacuate 2")
        node = _int(args[0], "node")
        ev = cluster.evacuate(node)
        return (f"node {ev.node} left in {ev.seconds:.3f} s: {ev.pages_pushed} pages pushed, "
                f"{ev.copies_dropped} copies dropped, {ev.homes_moved} directory entries moved, "
                f"{ev.vcpus} vCPU(s) moved")
    if cmd == "health":
        if not args:
            raise ConfigError("health takes a node and values", "e.g. health 2 ce=500 temp=80")
        node = _int(args[0], "node")
        values: dict[str, int] = {}
        names = {"ce": "corrected_errors", "temp": "temperature", "link": "link_errors"}
        for a in args[1:]:
            key, _, val = a.partition("=")
            if key not in names or not val:
                raise ConfigError(f"unknown health value {a!r}", "use ce=N, temp=C or link=N")
            values[names[key]] = _int(val, key)
        left = cluster.inject_health(node, evacuation_timeout=600.0,
                                   corrected_errors=values.get("corrected_errors"),
                                   temperature=values.get("temperature"),
                                   link_errors=values.get("link_errors"))
        if left is None:
            return f"node {node}: reported; below every threshold, it stays"
        return f"node {node} evacuated ({left.reason}) in {left.seconds:.3f} s and left"
    if cmd == "vcpus":
        if len(args) != 1:
            raise ConfigError("vcpus takes a count", "e.g. vcpus 3")
        count = _int(args[0], "count")
        return f"vCPUs now: {cluster.set_online_vcpus(count)}"
    raise ConfigError(f"unknown command {cmd!r}", HELP)


def run_safely(cluster: Cluster, line: str) -> str:
    """As ``run``, with a refusal or a failure shown rather than raised."""
    try:
        return run(cluster, line)
    except TestbedError as e:
        return f"refused: {e}"
