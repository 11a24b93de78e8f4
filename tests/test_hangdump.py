"""A node that will not exit leaves its threads' stacks behind before it is killed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import hangdump


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed (make setup)")
def test_the_stacks_of_a_running_process_are_written(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        out = tmp_path / "node0.hang.txt"
        status = hangdump.dump(proc.pid, out)
        text = out.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert str(out) in status
    # the sleeping thread's stack: it waits in the kernel's nanosleep
    assert "Thread 1" in text and "sleep" in text, text[-2000:]
    assert not (tmp_path / "node0.hang.gdb.py").exists()  # the script does not linger
