"""Configuration parsing and validation, before anything starts."""

from __future__ import annotations

import pytest

from testbed.config import ClusterSpec, parse_size_mib
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
