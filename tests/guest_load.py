"""A self-checking workload looping in the guest while a test does something
else to the cluster (migrations, say): it must keep finishing runs, stay the
same process throughout, and every run must verify."""

from __future__ import annotations

import time
from dataclasses import dataclass

from testbed.cluster import Cluster
from testbed.workloads import WorkloadResult, parse_result


def wait_for_output(cluster: Cluster, command: str, timeout: float, until: str = "") -> str:
    """Run ``command`` until its output is not empty (or contains ``until``)."""
    deadline = time.monotonic() + timeout
    while not ((out := cluster.run(command).output) and until in out):
        assert time.monotonic() < deadline, f"{command!r} gave {out!r} for {timeout:.0f} s"
        time.sleep(0.5)
    return out


@dataclass
class GuestLoad:
    cluster: Cluster
    name: str
    args: str
    pid: str = ""
    started: str = ""  # the loop's start time: same pid and start time, same process
    stopped: bool = False

    @property
    def out(self) -> str:
        return f"/tmp/{self.name}.out"

    def start(self) -> GuestLoad:
        """Run the workload again and again until /tmp/stop-<name> exists.

        Its result lines go to /tmp/<name>.out, then a line "done".
        """
        run = (f"while [ ! -e /tmp/stop-{self.name} ]; do "
               f"/opt/workloads/bin/{self.name} {self.args}; done")
        self.cluster.run(f"(({run}) > {self.out} 2>&1 & echo $! > /tmp/{self.name}.pid; "
                         f"wait $!; echo done >> {self.out}) &")
        self.pid = wait_for_output(self.cluster, f"cat /tmp/{self.name}.pid 2>/dev/null", 30).strip()
        self.started = self._start_time()
        assert self.started, f"the {self.name} loop did not start"
        return self

    def _start_time(self) -> str:
        stat = self.cluster.run(f"cat /proc/{self.pid}/stat 2>/dev/null").output
        return stat.rsplit(")", 1)[1].split()[19] if ")" in stat else ""

    def runs_done(self) -> int:
        out = self.cluster.run(f"grep -c '^workload={self.name} ' {self.out}").output.strip()
        return int(out or 0)

    def wait_for_another_run(self, after: int, timeout: float = 120) -> int:
        """Until a run beyond the first ``after`` has ended: the workload still runs."""
        deadline = time.monotonic() + timeout
        while (done := self.runs_done()) == after:
            assert time.monotonic() < deadline, f"no {self.name} run ended for {timeout:.0f} s"
            time.sleep(0.5)
        return done

    def still_running(self) -> bool:
        return self._start_time() == self.started

    def stop(self, timeout: float = 600) -> list[WorkloadResult]:
        """Let the current run finish and return every run's result."""
        self.stopped = True
        self.cluster.run(f"touch /tmp/stop-{self.name}")
        out = wait_for_output(self.cluster, f"cat {self.out}", timeout, until="done")
        return [parse_result(line, self.name) for line in out.splitlines()
                if line.startswith(f"workload={self.name} ")]
