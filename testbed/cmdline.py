"""The guest kernel's command line: what every guest gets, and what the user adds."""

from __future__ import annotations

import re

from testbed.config import ClusterSpec

# tsc=reliable: the guest TSC comes from one cluster-wide clock; the kernel's
# TSC watchdog would otherwise flag the (emulated) skew between vCPUs.
# no_timer_check: under TCG on a loaded host the kernel's check that the
# IO-APIC timer ticks can time out and panic ("IO-APIC + timer doesn't work");
# the timer works, the check is only too impatient for emulation.
BASE_APPEND = "console=ttyS0 panic=-1 numa_balancing=disable tsc=reliable no_timer_check"

# Options by which the user chooses the tick's behaviour themselves.
_TICK_OPTIONS = re.compile(r"(?:^|\s)(?:nohz|nohz_full|isolcpus)=")


def timekeeping(spec: ClusterSpec) -> str:
    """Keep the guest's timekeeping on one CPU: ``nohz_full=`` on all but the boot CPU.

    Under the kernel's default (NO_HZ_IDLE) the CPU that advances ``jiffies``
    and the timekeeper drops the duty whenever it idles, and whichever CPU
    ticks next takes it over.  Across nodes that makes the pages of
    ``jiffies_64``, ``tk_core`` and ``nohz`` the hottest of the boot, written
    from every node in turn (7,000-9,000 stalls each in a 4-node boot).  With
    nohz_full CPUs present the kernel never lets the timekeeping CPU (the boot
    CPU) stop its tick, so the duty stays with vCPU 0, and the other nodes only
    read those pages.

    Every CPU but 0, not only the other nodes' CPUs: on 2 nodes with 4 vCPUs,
    ``nohz_full=2-3`` booted in 4.5-7.5 s (median 6.3, as bad as without at
    times), ``nohz_full=1-3`` in 4.4-4.7 s, and without 6.3-8.5 s (five boots
    each, interleaved).  The same line on one node, so that N nodes compare
    against one node running the same guest; there it made no difference
    that three boots of five workloads could see.  A user who sets nohz=,
    nohz_full= or isolcpus= keeps their own choice.
    """
    if spec.vcpus < 2 or _TICK_OPTIONS.search(spec.append):
        return ""
    return f"nohz_full={cpu_list(list(range(1, spec.vcpus)))}"


def cpu_list(cpus: list[int]) -> str:
    """The kernel's cpu-list form: [1, 2, 3, 5] -> "1-3,5"."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def guest_append(spec: ClusterSpec) -> str:
    """The whole command line for ``spec``'s guest."""
    parts = [BASE_APPEND, timekeeping(spec), spec.append]
    online = spec.online_vcpus
    if online is None and spec.licensed_vcpus < spec.vcpus:
        online = spec.licensed_vcpus
    if online is not None:
        # the guest brings up only these at boot; the rest stay present
        # and can be brought online later (set_online_vcpus)
        parts.append(f"maxcpus={online}")
    return " ".join(p for p in parts if p)
