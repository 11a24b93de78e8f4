"""Run records: one JSON object per run with metrics and the dimensions behind them."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def host_info() -> dict[str, Any]:
    import os

    return {"hostname": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count()}


@dataclass
class RunRecord:
    """What a run did and measured, with enough context to compare runs later."""

    kind: str  # "workload", "command", "bench", ...
    name: str
    ok: bool
    cluster: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    raw: str = ""
    reason: str | None = None
    run_dir: str = ""
    commit: str = field(default_factory=git_commit)
    host: dict[str, Any] = field(default_factory=host_info)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
