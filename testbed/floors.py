"""The host's own floors, measured in the same run as the figures they divide.

A figure from inside the guest says little on its own on a shared machine
whose speed changes from hour to hour. So each benchmark also measures what
the machine itself does with the same system calls and no guest, and
reports its figure as a ratio to that:

- ``raw_rtt_us``: a 4 KiB request/response round trip over a Unix socket
  (``tools/rawrtt.c``), the floor of every stall and migration latency;
- ``raw_stream``: pages streamed over a Unix socket and installed into
  memory the receiver never had (``tools/rawstream.c``), the floor of a
  streaming read; its ``install_us_per_page`` also says how dear fresh
  memory is on the host just then.

The tools are C sources under ``tools/``, built once per source into the
cache.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from testbed import affinity, cache
from testbed.errors import BuildError, TestbedError

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def tool_binary(name: str) -> Path:
    """tools/NAME.c, built once per source into the cache."""
    src_path = TOOLS / f"{name}.c"
    src = src_path.read_bytes()

    def recipe(out: Path) -> dict[str, object]:
        r = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out / name),
                            str(src_path)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise BuildError(f"cannot build tools/{name}.c: {r.stderr.strip()}",
                             "install build-essential (make setup)")
        return {}

    art = cache.build(name, cache.hash_inputs([("src", src)]), recipe)
    return art.path / name


def rawrtt_binary() -> Path:
    return tool_binary("rawrtt")


def floor_cpus(nodes: int, cpu_affinity: str) -> tuple[int, int] | None:
    """Where the two ends of the floor's round trip run: on node 0's and node 1's
    first CPUs when nodes have CPUs of their own, so the floor crosses CPUs as
    the nodes' messages do; None (the scheduler's choice) otherwise."""
    if cpu_affinity != "node" or nodes < 2:
        return None
    cpus = affinity.host_cpus()
    a, b = affinity.node_cpus(0, nodes, cpus)[0], affinity.node_cpus(1, nodes, cpus)[0]
    return (a, b) if a != b else None


def _measure(name: str, what: str, size: int, cpus: tuple[int, int] | None,
             timeout: float) -> dict[str, Any]:
    """Run tools/NAME.c with SIZE and the CPU pair; its one JSON line, or a clear error."""
    argv = [str(tool_binary(name)), str(size), *(map(str, cpus) if cpus else ())]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if out.returncode != 0:
        raise TestbedError(f"the {what} failed: {out.stderr.strip() or out.returncode}",
                           f"run {' '.join(argv)} to see why")
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def raw_rtt_us(samples: int = 2000, cpus: tuple[int, int] | None = None) -> dict[str, Any]:
    """The floor: 4 KiB request/response between two processes over a Unix socket,
    one on each of ``cpus`` if given (see tools/rawrtt.c for why it matters)."""
    return _measure("rawrtt", "raw round trip", samples, cpus, timeout=120)


def raw_stream(mb: int, cpus: tuple[int, int] | None = None) -> dict[str, Any]:
    """The floor for a streaming read: ``mb`` MiB of 4 KiB pages over a Unix socket,
    each run of 32 installed with one UFFDIO_COPY into memory the receiver never had,
    as a node installs what it reads (see tools/rawstream.c); and the socket alone.
    The fastest of three passes, each into fresh memory of its own
    (``passes_mb_s`` lists them all)."""
    return _measure("rawstream", "raw stream", mb, cpus, timeout=300)
