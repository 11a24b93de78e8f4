"""Configuration parsing and validation, before anything starts."""

from __future__ import annotations

import pytest

from testbed.config import ClusterSpec, default_placement, parse_placement, parse_size_mib
from testbed.errors import ConfigError


@pytest.mark.parametrize("text,mib", [("512M", 512), ("1G", 1024), ("1.5G", 1536),
                                      ("256", 256), ("2048MiB", 2048), ("1024K", 1)])
def test_sizes_parse_to_mib(text: str, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "12X", "-5M", "1K", "1.3M"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_size_mib(text)


@pytest.mark.parametrize("spec,words", [
    (ClusterSpec(vcpus=0), "--vcpus 0"),
    (ClusterSpec(vcpus=1000), "--vcpus 1000"),
    (ClusterSpec(mem_mib=1), "--mem 1M"),
    (ClusterSpec(nodes=0), "--nodes 0"),
])
def test_impossible_specs_are_refused(spec: ClusterSpec, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        spec.validate()


def test_a_sane_spec_validates() -> None:
    assert ClusterSpec(vcpus=2, mem_mib=512).validate().vcpus == 2


@pytest.mark.parametrize("placement,words", [
    ("0-1:1", "vCPU 1 on two nodes"),
    ("0:", r"vCPU\(s\) 1 on no node"),
    ("0:1:2", "names 3 node"),
    ("1:0", "vCPU 0 must start on node 0"),
    ("0:5", "only 2 vCPU"),
])
def test_bad_placements_are_refused(placement: str, words: str) -> None:
    spec = ClusterSpec(nodes=2, vcpus=2, placement=parse_placement(placement))
    with pytest.raises(ConfigError, match=words):
        spec.validate()


def test_budgets_that_cannot_hold_the_guest_are_refused() -> None:
    with pytest.raises(ConfigError, match="sum to 512M, less than the 768M"):
        ClusterSpec(nodes=2, vcpus=2, mem_mib=768, budget_mib=(256,)).validate()
    ClusterSpec(nodes=3, vcpus=3, mem_mib=512, budget_mib=(256,)).validate()


def test_default_placement_spreads_vcpus_in_blocks() -> None:
    assert default_placement(2, 2) == ((0,), (1,))
    assert default_placement(2, 4) == ((0, 1), (2, 3))
    assert default_placement(4, 4) == ((0,), (1,), (2,), (3,))
    assert default_placement(3, 1) == ((0,), (), ())


def test_unknown_policy_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid policies: page, vcpu"):
        ClusterSpec(policy="magic").validate()


def test_multi_node_uses_the_hyperkernel_and_single_node_does_not() -> None:
    assert ClusterSpec(nodes=2, vcpus=2).uses_hyperkernel
    assert not ClusterSpec(nodes=1).uses_hyperkernel
    assert ClusterSpec(nodes=1, hyperkernel=True).uses_hyperkernel


def test_an_unknown_policy_is_refused_with_the_choices() -> None:
    from testbed.config import POLICIES, ClusterSpec
    from testbed.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        ClusterSpec(nodes=2, vcpus=2, policy="learnt").validate()
    message = f"{err.value} {err.value.hint}"
    for name in POLICIES:
        assert name in message


def test_a_multi_node_guest_gets_a_numa_node_per_node() -> None:
    from testbed.node import numa_argv
    spec = ClusterSpec(nodes=2, vcpus=3, mem_mib=513, placement=((0, 2), (1,))).validate()
    assert spec.numa_layout == ((0, 2), (1,))
    assert numa_argv(spec.numa_layout, spec.mem_mib) == [
        "-object", "memory-backend-ram,id=ram-node0,size=256M,merge=off",
        "-numa", "node,nodeid=0,memdev=ram-node0,cpus=0,cpus=2",
        "-object", "memory-backend-ram,id=ram-node1,size=257M,merge=off",
        "-numa", "node,nodeid=1,memdev=ram-node1,cpus=1"]
    # flat on request, and a single node (nothing to tell) or no hyperkernel
    assert ClusterSpec(nodes=2, vcpus=2, guest_numa=False).validate().numa_layout is None
    assert ClusterSpec(nodes=1, vcpus=2, hyperkernel=True).validate().numa_layout is None
