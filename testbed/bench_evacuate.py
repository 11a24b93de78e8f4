"""``testbed bench evacuate``: how long a node takes to leave, against how long
streaming the same bytes takes, both measured in one run.

One boot of N nodes (vCPU k on node k). First the page-streaming rate: a
thread on node 1 reads for the first time a region a thread on node N-1
wrote (``firstread``). Then a thread on node N-1 writes ``size`` MiB of
non-zero data (a zero page would move without its bytes) and a rewriter
(``lmat``) starts there. Node N-1 is evacuated while the rewriter runs;
afterwards the data's checksum and the rewriter's own checks must hold.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from testbed.bench import _figure
from testbed.cluster import Artifacts, Cluster
from testbed.config import ClusterSpec
from testbed.errors import ConfigError, GuestError
from testbed.hkdelta import delta
from testbed.progress import Progress
from testbed.record import RunRecord
from testbed.workloads import guest_command, parse_result, validate_params

TARGET_RATIO = 2.0  # the evacuation takes <= 2x what streaming its bytes takes
STREAM_MB = 64
FILL = "/tmp/evac-fill"


def check_args(nodes: int, size_mb: int, mem_mib: int) -> None:
    if nodes < 3:
        raise ConfigError(f"bench evacuate needs 3 nodes or more, not {nodes}",
                          "node 0 owns the devices and cannot leave; the leaver needs a peer "
                          "to stream to and one to take its pages")
    if size_mb < 16:
        raise ConfigError(f"--size {size_mb} MiB is too small to time", "use 16 MiB or more")
    if size_mb + STREAM_MB + 192 > mem_mib:
        raise ConfigError(f"--size {size_mb} MiB does not fit a {mem_mib} MiB guest",
                          f"give --mem {size_mb + STREAM_MB + 256}M or more")


def bench_evacuate(arts: Artifacts, run_dir: Path, nodes: int, size_mb: int, mem_mib: int,
                   progress: Progress, cpu_affinity: str = "node"
                   ) -> tuple[dict[str, Any], list[RunRecord]]:
    check_args(nodes, size_mb, mem_mib)
    leaver = nodes - 1
    spec = ClusterSpec(nodes=nodes, vcpus=nodes, mem_mib=mem_mib, boot_timeout=600,
                       cpu_affinity=cpu_affinity).validate()
    params: dict[str, Any] = {"nodes": nodes, "size_mb": size_mb, "mem_mib": mem_mib,
                              "leaver": leaver}
    with Cluster(spec, arts, run_dir) as cluster:
        progress.step("bench", f"booting {nodes} nodes, {nodes} vCPUs, {mem_mib} MiB")
        cluster.boot()
        progress.step("bench", f"streaming rate: node 1 reads {STREAM_MB} MiB node {leaver} wrote")
        fr = cluster.run_workload("firstread", {"pages": 100, "stream_mb": STREAM_MB,
                                                "cpus": f"{leaver},1"}, guest_timeout=900)
        stream_mb_s = _figure(fr, "stream_mb_per_s")
        progress.step("bench", f"node {leaver} writes {size_mb} MiB")
        fill = cluster.run(f"taskset -c {leaver} sh -c 'yes 0123456789abcdef | "
                           f"head -c {size_mb * 2**20} > {FILL} && md5sum {FILL}'", timeout=1800)
        checksum = fill.output.split()[0] if fill.output.split() else ""
        if fill.status != 0 or not re.fullmatch(r"[0-9a-f]{32}", checksum):
            raise GuestError(f"could not write {size_mb} MiB on node {leaver}: {fill.output!r}",
                             f"see {run_dir}")
        lmat_params = validate_params("lmat", {"cpus": str(leaver), "duration_ms": 30000},
                                      nodes)
        cluster.run(f"({guest_command('lmat', lmat_params, nodes)} > /tmp/lmat.out 2>&1 &)")
        time.sleep(2)
        before = cluster.node_stats()
        held = int(before[leaver]["stats"]["resident_pages"])
        progress.step("bench", f"evacuating node {leaver} ({held} pages, "
                      f"{held * 4096 / 2**20:.0f} MiB) while lmat runs there")
        t0 = time.monotonic()
        ev = cluster.evacuate(leaver, timeout=1800)
        wall = time.monotonic() - t0
        after = cluster.node_stats()
        again = cluster.run(f"md5sum {FILL}", timeout=1800).output.split()
        data_ok = bool(checksum) and again[:1] == [checksum]
        cluster.run("while ! grep -q workload=lmat /tmp/lmat.out; do sleep 1; done", timeout=300)
        lmat = parse_result(cluster.run("cat /tmp/lmat.out").output, "lmat")
        nproc = cluster.run("nproc").output.strip()
        record = RunRecord.for_cluster(cluster, "bench", "evacuate", ok=lmat.ok and data_ok,
                                       params=params,
                                       reason=None if lmat.ok and data_ok else
                                       f"lmat ok={lmat.ok}, data checksum ok={data_ok}")
        cluster.poweroff()

    streaming_s = ev.bytes / (stream_mb_s * 2**20) if stream_mb_s else None
    ratio = ev.seconds / streaming_s if streaming_s else None
    pages_ratio = ev.pages_s / streaming_s if streaming_s else None
    mib = ev.bytes / 2**20
    print(f"evacuation: {nodes} nodes, node {leaver} leaves holding {held} pages "
          f"({held * 4096 / 2**20:.0f} MiB), lmat rewriting on it throughout")
    print(f"  {'measure':<44} {'value':>14}")
    print(f"  {'page streaming, firstread, same run':<44} {stream_mb_s or 0:>10.1f} MB/s")
    print(f"  {'evacuation (the leaver: start to BYE)':<44} {ev.seconds:>12.3f} s")
    print(f"  {'  moving its vCPUs':<44} {ev.vcpus_s:>12.3f} s")
    print(f"  {'  moving its pages':<44} {ev.pages_s:>12.3f} s")
    print(f"  {'  moving its directory':<44} {ev.directory_s:>12.3f} s")
    print(f"  {'evacuation (harness: request to exit)':<44} {wall:>12.3f} s")
    print(f"  {'page data moved':<44} {mib:>10.1f} MiB")
    print(f"  {'  streaming those bytes would take':<44} "
          f"{streaming_s if streaming_s is not None else float('nan'):>12.3f} s")
    print(f"  {'  ratio (target <= 2)':<44} "
          f"{ratio if ratio is not None else float('nan'):>12.2f} x")
    print(f"  {'  the page phase alone, same ratio':<44} "
          f"{pages_ratio if pages_ratio is not None else float('nan'):>12.2f} x")
    print(f"  pages pushed {ev.pages_pushed}, shared copies dropped {ev.copies_dropped}, "
          f"zero pages given back {ev.zero_pages}, directory entries moved {ev.homes_moved}, "
          f"vCPUs moved {ev.vcpus}")
    print(f"  phases (s after the request): {ev.phases}")
    print("  where the pages went: " + ", ".join(
        f"node {n['node']}: {n['stats']['evacuation']['pages_taken']} pages, "
        f"{n['stats']['evacuation']['homes_moved']} entries" for n in after))
    print(f"  data checksum after: {'same' if data_ok else 'DIFFERENT'}; lmat: "
          f"{'verified' if lmat.ok else 'FAILED'}; nproc {nproc}")
    for name, value, unit, direction in (
            ("evacuate_s", ev.seconds, "s", "lower"), ("evacuate_wall_s", wall, "s", "lower"),
            ("bytes", float(ev.bytes), "B", "info"),
            ("streaming_mb_per_s", stream_mb_s, "MB/s", "higher"),
            ("ratio_to_streaming", ratio, "x", "lower"),
            ("pages_ratio_to_streaming", pages_ratio, "x", "lower")):
        if value is not None:
            record.add(name, value, unit=unit, direction=direction)
    record.add_hk_stats(delta(before, after))  # the survivors: what they took
    result = {"bench": "evacuate", **params, "evacuate_s": ev.seconds, "wall_s": round(wall, 3),
              "bytes": ev.bytes, "lost_pages": ev.pages_left,
              "workload_ok": lmat.ok, "data_ok": data_ok,
              "streaming_mb_s": stream_mb_s, "ratio_to_streaming": ratio,
              "pages_ratio_to_streaming": pages_ratio,
              "target_ratio_le_2": ratio is not None and ratio <= TARGET_RATIO,
              "evacuation": ev.as_dict(), "ok": record.ok}
    return result, [record, fr]
