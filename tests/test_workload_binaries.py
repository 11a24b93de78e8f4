"""The guest workloads, run natively on the host, and their Python catalogue.

The workloads are ordinary static Linux programs, so every self-check and
every injected fault can be proven here in seconds, before any guest boots.
The in-guest runs live with the cluster tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.workloads import (
    COMMON_PARAMS,
    WORKLOADS,
    ParamValue,
    WorkloadError,
    WorkloadResult,
    guest_command,
    parse_result,
    validate_params,
)

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "workloads" / "build.sh"

# Small enough to run in well under a second each on the host.
QUICK: dict[str, dict[str, ParamValue]] = {
    "private": {"size_kb": 1024, "passes": 4},
    "falseshare": {"iters": 200000},
    "pingpong": {"rounds": 2000},
    "lock": {"iters": 20000, "kind": "spin"},
    "sweep": {"threads": 2, "size_mb": 8, "passes": 3},
    "pchase": {"size_mb": 2, "threads": 2},
    "prodcons": {"items": 20000, "queue": "mpmc", "producers": 2, "consumers": 2},
    "lmat": {"duration_ms": 300, "period_ms": 50, "mode": "swap", "write_pct": 20},
    "sqlite": {"rows": 500, "lookups": 500, "updates": 200},
    "clock": {"duration_ms": 300},
    "smc": {"rounds": 500},
    "firstread": {"pages": 500, "stream_mb": 4},
    "redis": {"requests": 500, "keys": 300},
}
NATIVE = [name for name in WORKLOADS if name != "redis"]

# What each workload's own check reports: the figures of a clean run, and the
# reason it gives when inject=1 corrupts a value. "ok=1" alone could come
# from a check that never ran; these figures are what it computed.
CLEAN_FIGURES: dict[str, dict[str, ParamValue | bool]] = {
    "private": {"mismatches": 0, "bad_checksums": 0},
    "falseshare": {"wrong_counters": 0, "stray_writes": 0},
    "pingpong": {"sequence_errors": 0},
    "lock": {"tickets_ok": 1, "counter": True},
    "sweep": {"mismatches": 0},
    "pchase": {"errors": 0},
    "prodcons": {"missing": 0, "duplicates": 0, "out_of_order": 0, "checksum_ok": 1},
    "lmat": {"bad_reads": 0, "bad_records": 0, "lost_updates": 0},
    "sqlite": {"wrong_lookups": 0, "wrong_updates": 0, "integrity_ok": 1, "checksum_ok": 1},
    "clock": {"mono_backwards": 0, "tsc_backwards": 0, "cross_vcpu_backwards": 0},
    "smc": {"mismatches": 0},
    "firstread": {"read_mismatches": 0, "stream_mismatches": 0},
    "redis": {"mismatches": 0, "clean_shutdown": 1},
}
INJECTED_REASON = {
    "private": "data_mismatch",
    "falseshare": "count_mismatch",
    "pingpong": "sequence_mismatch",
    "lock": "count_mismatch",
    "sweep": "pattern_mismatch",
    "pchase": "cycle_broken",
    "prodcons": "items_mismatch",
    "lmat": "table_inconsistent",
    "sqlite": "checksum_mismatch",
    "clock": "time went backwards",
    "smc": "stale_code",
    "firstread": "stale_read",
    "redis": "data_mismatch",
}


def check_figures(result: WorkloadResult) -> dict[str, ParamValue | None]:
    """The self-check figures a workload reported, to compare with CLEAN_FIGURES."""
    f = result.fields
    got = {k: f.get(k) for k in CLEAN_FIGURES[result.name]}
    if result.name == "lock":
        # The counter under the lock and its shadow must both count every acquisition.
        got["counter"] = f["counter"] == f["shadow"] == int(f["threads"]) * int(f["iters"])
    return got


def caught_by_its_check(result: WorkloadResult) -> bool:
    """ok=0 with the reason of the workload's own check (not a timeout or a crash)."""
    return not result.ok and result.raw.endswith(f" reason={INJECTED_REASON[result.name]}")


@pytest.fixture(scope="session")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree build.sh stages for the guest, built once per session."""
    out = tmp_path_factory.mktemp("workloads-root")
    build = subprocess.run([str(BUILD_SCRIPT), str(out)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"workloads/build.sh failed:\n{build.stderr}"
    return out


def host_params(name: str, staged: Path) -> dict[str, ParamValue]:
    params = dict(QUICK[name])
    if name == "sqlite":
        params["db"] = str(staged / "wl-sqlite.db")
    if name == "redis":
        params["redis_dir"] = str(staged / "opt" / "redis")
        # Distinct per xdist worker, so parallel sessions do not collide.
        params["port"] = 20000 + os.getpid() % 20000
    return params


def run(staged: Path, name: str, params: dict[str, ParamValue]) -> subprocess.CompletedProcess[str]:
    binary = staged / "opt" / "workloads" / "bin" / name
    args = [f"{k}={v}" for k, v in params.items()]
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)


def require_redis(staged: Path) -> None:
    if not (staged / "opt" / "redis" / "bin" / "redis-server").exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server redis-tools)")


@pytest.mark.parametrize("name", [*NATIVE, "redis"])
def test_workload_passes_its_own_check(staged: Path, name: str) -> None:
    if name == "redis":
        require_redis(staged)
    params = host_params(name, staged)
    proc = run(staged, name, params)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) == 1, "exactly one result line"
    result = parse_result(proc.stdout, name)
    assert result.ok, result.raw
    assert result.reason is None
    echoed = result.params()
    expected = validate_params(name, params)
    assert {k: echoed[k] for k in expected} == expected
    assert isinstance(result.fields["ops"], int) and result.fields["ops"] > 0
    assert isinstance(result.fields["elapsed_s"], float)
    assert check_figures(result) == CLEAN_FIGURES[name], result.raw


@pytest.mark.parametrize("name", [*NATIVE, "redis"])
def test_injected_fault_is_caught(staged: Path, name: str) -> None:
    if name == "redis":
        require_redis(staged)
    proc = run(staged, name, {**host_params(name, staged), "inject": 1})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = parse_result(proc.stdout, name)
    assert result.fields["inject"] == 1  # as the binary parsed it
    assert caught_by_its_check(result), f"expected reason={INJECTED_REASON[name]}: {result.raw}"
    assert check_figures(result) != CLEAN_FIGURES[name], "the check's own figures show the fault"


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_binary_parameter_table_matches_catalogue(staged: Path, name: str) -> None:
    binary = staged / "opt" / "workloads" / "bin" / name
    proc = subprocess.run([str(binary), "--params"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    from_binary = [tuple(line.split("\t")[:6]) for line in proc.stdout.splitlines()]

    def column(value: object) -> str:
        return "-" if value is None or value == () else str(value)

    from_catalogue = [
        (
            p.name,
            p.type,
            column(p.default),
            column(p.min),
            column(p.max),
            ",".join(p.choices) or "-",
        )
        for p in WORKLOADS[name].params
    ]
    assert from_binary == from_catalogue


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["bogus=1"], "unknown parameter 'bogus'"),
        (["inject=2"], "out of range"),
        (["inject=x"], "not an integer"),
        (["cpus=4096"], "not usable"),
        (["timeout_s"], "not key=value"),
    ],
)
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_binary_refuses_bad_arguments_listing_valid_ones(
    staged: Path, name: str, args: list[str], complaint: str
) -> None:
    binary = staged / "opt" / "workloads" / "bin" / name
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert complaint in proc.stderr
    # The listing has one line per parameter, starting with its name and a tab.
    listed = [line.split("\t", 1)[0] for line in proc.stderr.splitlines() if "\t" in line]
    assert listed == [p.name for p in WORKLOADS[name].params]


def test_watchdog_reports_timeout_when_a_run_overstays(staged: Path) -> None:
    proc = run(staged, "lmat", {"duration_ms": 5000, "timeout_s": 1})
    assert proc.returncode == 1
    result = parse_result(proc.stdout, "lmat")
    assert not result.ok
    assert result.reason == "timeout"


def _thread_affinity(pid: int) -> list[str]:
    """Cpus_allowed_list of every thread of ``pid`` but its main thread."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread just ended
        if int(task.name) != pid:
            found += [line.split(":", 1)[1].strip() for line in status.splitlines()
                      if line.startswith("Cpus_allowed_list:")]
    return found


def test_threads_pin_to_the_given_cpu(staged: Path) -> None:
    # Long enough (about a second) to look at the worker threads while they run.
    # Besides the two workers there is the watchdog thread, which is not pinned.
    binary = staged / "opt" / "workloads" / "bin" / "private"
    seen: list[str] = []
    with subprocess.Popen([str(binary), "threads=2", "size_kb=16384", "passes=400", "cpus=1"],
                          stdout=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None and seen.count("1") < 2:
            seen = _thread_affinity(proc.pid)
        out, _ = proc.communicate(timeout=120)
    assert seen.count("1") == 2, f"threads' CPUs while it ran: {seen}; {out}"
    assert parse_result(out, "private").ok, out


def test_prodcons_spsc_refuses_unpaired_threads(staged: Path) -> None:
    proc = run(staged, "prodcons", {"producers": 2, "consumers": 1})
    assert proc.returncode == 2
    with pytest.raises(WorkloadError, match="producers == consumers"):
        validate_params("prodcons", {"producers": 2, "consumers": 1})


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_build_is_deterministic(staged: Path, tmp_path: Path) -> None:
    again = subprocess.run([str(BUILD_SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert tree_digest(tmp_path) == tree_digest(staged)


def test_manifest_names_the_debian_packages(staged: Path) -> None:
    manifest = (staged / "opt" / "workloads" / "MANIFEST").read_text()
    for package in ("libsqlite3-dev", "libc6"):
        assert f"\n{package} " in manifest
    if shutil.which("redis-server"):
        assert "\nredis-server " in manifest
        assert "\nlibjemalloc2 " in manifest


# --- the catalogue, without binaries ---------------------------------------


def test_validate_fills_defaults_and_converts_text() -> None:
    values = validate_params("lmat", {"readers": "3", "mode": "swap"})
    assert values["readers"] == 3
    assert values["mode"] == "swap"
    assert values["table_mb"] == 16
    assert "cpus" not in values  # the guest defaults to all vCPUs
    assert list(values)[:2] == ["readers", "table_mb"]


def test_unknown_workload_lists_the_valid_ones() -> None:
    with pytest.raises(WorkloadError) as err:
        validate_params("nosuch", {})
    for name in WORKLOADS:
        assert name in str(err.value)


def test_unknown_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(WorkloadError) as err:
        validate_params("sweep", {"size": 3})
    assert "'size'" in str(err.value)
    for p in WORKLOADS["sweep"].params:
        assert p.name in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "complaint"),
    [
        ("sweep", {"size_mb": 0}, r"out of range \[1, 65536\]"),
        ("lock", {"iters": "12x"}, "not an integer"),
        ("lock", {"iters": 1.5}, "not an integer"),
        ("falseshare", {"spacing": 32}, "not one of 8, 64, 4096"),
        ("private", {"cpus": "0-2"}, "beyond the guest's 2 vCPUs"),
        ("private", {"cpus": "1,x"}, "not a cpu list"),
        ("sqlite", {"db": "/tmp/a b"}, "without spaces"),
    ],
)
def test_bad_values_are_refused_with_the_valid_range(
    name: str, params: dict[str, ParamValue], complaint: str
) -> None:
    with pytest.raises(WorkloadError, match=complaint):
        validate_params(name, params, vcpus=2)


def test_every_workload_shares_the_common_parameters() -> None:
    for spec in WORKLOADS.values():
        assert spec.params[-len(COMMON_PARAMS) :] == COMMON_PARAMS
        assert spec.command == f"/opt/workloads/bin/{spec.name}"


def test_guest_command_has_every_parameter_quoted() -> None:
    command = guest_command("pingpong", {"rounds": 10, "cpus": "0-1"}, vcpus=2)
    assert command == "/opt/workloads/bin/pingpong rounds=10 cpus=0,1 inject=0 timeout_s=300"
    with pytest.raises(WorkloadError):
        guest_command("pingpong", {"rounds": 0})


def test_parse_result_finds_the_line_among_console_noise() -> None:
    console = (
        "[    3.1] random: crng init done\r\n"
        "~ # /opt/workloads/bin/pingpong\r\n"
        "workload=pingpong ok=1 rounds=10 cpus=0 inject=0 timeout_s=300 ops=10 "
        "elapsed_s=0.5 rtt_ns_p50=120\r\n~ # "
    )
    result = parse_result(console, "pingpong")
    assert result.ok
    assert result.fields["rounds"] == 10
    assert result.fields["cpus"] == "0"
    assert result.fields["elapsed_s"] == 0.5
    assert result.figures() == {"ops": 10, "elapsed_s": 0.5, "rtt_ns_p50": 120}
    assert result.raw.startswith("workload=pingpong ok=1")


def test_parse_result_reports_failure_and_reason() -> None:
    result = parse_result("workload=lock ok=0 counter=3 shadow=4 reason=count_mismatch\n")
    assert not result.ok
    assert result.reason == "count_mismatch"


def test_parse_result_without_a_result_line_raises() -> None:
    with pytest.raises(WorkloadError, match="no result line"):
        parse_result("Kernel panic - not syncing\n")
    with pytest.raises(WorkloadError):
        parse_result("workload=lock ok=1\n", "sweep")
