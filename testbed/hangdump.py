"""What a node that does not exit is doing: its threads' stacks and its vCPUs.

A node that hangs at exit, a guest that never reaches its shell, or anywhere
else the harness gives up on a node: it is killed soon after, and with it every
clue. Before that, ``dump`` attaches gdb (if the
machine has it) and writes each thread's stack and each vCPU's guest state
(RIP, RSP, CR3, halted or parked) to ``<run_dir>/node<k>.hang.txt``; the guest
RIPs can then be looked up in the guest kernel's System.map.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Walks QEMU's CPU list in the hung process; reads memory only, calls nothing.
VCPUS_PY = """
import gdb
cpu = gdb.parse_and_eval("cpus_queue.tqh_first")
xt = gdb.lookup_type("X86CPU").pointer()
while int(cpu) != 0:
    env = cpu.cast(xt)["env"]
    print("vCPU %d: rip=%#x rsp=%#x cr3=%#x eflags=%#x halted=%d parked=%d interrupt_request=%#x" % (
        int(cpu["cpu_index"]), int(env["eip"]), int(env["regs"][4]), int(env["cr"][3]),
        int(env["eflags"]), int(cpu["halted"]), int(cpu["hk_parked"]),
        int(cpu["interrupt_request"])))
    cpu = cpu["node"]["tqe_next"]
"""


def dump(pid: int, out: Path, timeout: float = 60.0) -> str:
    """Write the stacks and vCPUs of process ``pid`` to ``out``; return a one-line status."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "gdb is not installed: no stacks (apt-get install gdb)"
    script = out.with_suffix(".gdb.py")
    script.write_text(VCPUS_PY)
    try:
        r = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx",
                            "-ex", "set pagination off", "-ex", f"source {script}",
                            "-ex", "thread apply all bt 20"],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"gdb did not finish in {timeout:.0f}s"
    finally:
        script.unlink(missing_ok=True)
    out.write_text(r.stdout + r.stderr)
    return f"stacks and vCPUs in {out}"
