"""The guest kernel command line the harness builds (testbed/cmdline.py)."""

from __future__ import annotations

import pytest

from testbed.cmdline import BASE_APPEND, cpu_list, guest_append
from testbed.config import ClusterSpec


def _line(**kw: object) -> list[str]:
    return guest_append(ClusterSpec(**kw).validate()).split()  # type: ignore[arg-type]


@pytest.mark.parametrize("nodes,vcpus,expected", [
    (1, 4, "nohz_full=1-3"),   # one node runs the same guest as N
    (2, 4, "nohz_full=1-3"),
    (8, 8, "nohz_full=1-7"),
    (2, 2, "nohz_full=1"),
])
def test_every_cpu_but_the_boot_cpu_is_nohz_full(nodes: int, vcpus: int, expected: str) -> None:
    line = _line(nodes=nodes, vcpus=vcpus)
    assert line[:len(BASE_APPEND.split())] == BASE_APPEND.split()
    assert [a for a in line if a.startswith("nohz")] == [expected]


def test_one_vcpu_has_no_other_cpu_to_free() -> None:
    assert not [a for a in _line(nodes=1, vcpus=1) if a.startswith("nohz")]


@pytest.mark.parametrize("user", ["nohz=on", "nohz_full=2-3", "isolcpus=1", "quiet nohz=off"])
def test_the_users_own_tick_choice_replaces_ours(user: str) -> None:
    line = _line(nodes=2, vcpus=4, append=user)
    assert [a for a in line if a.startswith(("nohz", "isolcpus"))] == \
        [a for a in user.split() if a.startswith(("nohz", "isolcpus"))]


def test_an_option_that_only_looks_alike_keeps_ours() -> None:
    line = _line(nodes=2, vcpus=4, append="mynohz=1 rcu_nocbs=1-3")
    assert "nohz_full=1-3" in line and line[-2:] == ["mynohz=1", "rcu_nocbs=1-3"]


def test_the_vcpus_brought_up_later_are_left_out_at_boot() -> None:
    line = _line(nodes=2, vcpus=4, online_vcpus=2)
    assert line[-1] == "maxcpus=2" and "nohz_full=1-3" in line


@pytest.mark.parametrize("cpus,text", [
    ([1], "1"), ([2, 3], "2-3"), ([1, 2, 3, 5], "1-3,5"), ([7, 1, 3, 4, 5], "1,3-5,7"),
])
def test_cpu_lists_in_the_kernels_form(cpus: list[int], text: str) -> None:
    assert cpu_list(cpus) == text


def test_records_carry_the_line_and_a_users_append_sets_them_apart() -> None:
    from testbed.record import RunRecord, spec_dimensions
    from testbed.store import cell_key

    def record(append: str) -> RunRecord:
        spec = ClusterSpec(nodes=2, vcpus=4, append=append).validate()
        return RunRecord(kind="bench", name="boot", ok=True, dimensions=spec_dimensions(spec))

    ours, theirs = record(""), record("nohz=on")
    assert "nohz_full=1-3" in ours.dimensions["guest_cmdline"].split()
    assert "append" not in ours.dimensions
    assert theirs.dimensions["append"] == "nohz=on"
    assert "nohz_full=1-3" not in theirs.dimensions["guest_cmdline"].split()
    assert cell_key(ours) != cell_key(theirs)
    assert cell_key(ours) == cell_key(record(""))
