"""The host's CPU pressure in a benchmark's record: read from PSI, and absent
(not zero) where the kernel has none."""

from __future__ import annotations

from pathlib import Path

from testbed.host_load import HostLoad, Pressure, describe, pressure_pct, read_pressure

PSI = ("some avg10=1.86 avg60=11.87 avg300=19.11 total={some}\n"
       "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")


def test_pressure_is_the_share_of_wall_time_some_task_waited(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text(PSI.format(some=3_000_000))
    start = read_pressure(psi)
    assert start is not None and start.some_us == 3_000_000
    # 0.25 s of waiting over 2 s of wall time
    assert pressure_pct(Pressure(1_000_000, 10.0), Pressure(1_250_000, 12.0)) == 12.5
    assert pressure_pct(start, None) is None
    assert pressure_pct(Pressure(0, 5.0), Pressure(10, 5.0)) is None


def test_without_psi_the_figures_are_absent_and_say_so(tmp_path: Path) -> None:
    assert read_pressure(tmp_path / "missing") is None
    bad = tmp_path / "bad"
    bad.write_text("some avg10=1.0 total=x\n")
    assert read_pressure(bad) is None
    load = HostLoad(tmp_path / "missing")
    load.begin(idle_s=0)
    host = load.end()
    assert host["cpu_pressure_before_pct"] is None and host["cpu_pressure_during_pct"] is None
    assert host["cpus"] and host["loadavg_before"] is not None
    assert "n/a (no /proc/pressure/cpu)" in describe(host)


def test_a_run_under_load_shows_it(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text(PSI.format(some=0))
    load = HostLoad(psi)
    load.begin(idle_s=0.05)
    assert load.before_pct == 0.0
    psi.write_text(PSI.format(some=10_000_000))  # 10 s waited: far more than the wall time
    host = load.end()
    assert host["cpu_pressure_during_pct"] is not None and host["cpu_pressure_during_pct"] > 100
