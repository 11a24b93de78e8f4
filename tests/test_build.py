"""Builds: bad sources stop with a clear error and never poison the cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from testbed import cache, qemu_build
from testbed.errors import BuildError
from testbed.progress import Progress


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SDS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_checksum_mismatch_is_refused_and_leaves_nothing(private_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "bogus.tar.xz"
    bogus.write_bytes(b"not the QEMU source")
    monkeypatch.setenv("SDS_QEMU_TARBALL_URL", bogus.as_uri())
    with pytest.raises(BuildError, match="checksum mismatch") as err:
        qemu_build.fetch_source(Progress(quiet=True))
    assert hashlib.sha256(b"not the QEMU source").hexdigest() in str(err.value)
    assert not list((private_cache / "downloads").iterdir())


def test_unreachable_source_gives_a_clear_error(private_cache: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDS_QEMU_TARBALL_URL", "file:///nonexistent/qemu.tar.xz")
    with pytest.raises(BuildError, match="cannot download"):
        qemu_build.fetch_source(Progress(quiet=True))


def test_unknown_source_package_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_build, "SOURCE_VERSION", "9:0.0.0-nonexistent")
    with pytest.raises(BuildError, match="make setup"):
        qemu_build.tarball_url()


def test_failed_recipe_publishes_no_artifact(private_cache: Path) -> None:
    def recipe(out: Path) -> dict[str, object]:
        (out / "half").write_text("half-built")
        raise BuildError("recipe failed")

    with pytest.raises(BuildError):
        cache.build("thing", "k1", recipe)
    assert cache.lookup("thing", "k1") is None
    assert not list((private_cache / "thing").iterdir())


def test_successful_recipe_is_reused(private_cache: Path) -> None:
    calls = []

    def recipe(out: Path) -> dict[str, object]:
        calls.append(1)
        (out / "data").write_text("x")
        return {"n": 1}

    first = cache.build("thing", "k2", recipe)
    second = cache.build("thing", "k2", recipe)
    assert first.path == second.path and len(calls) == 1
    assert first.metadata()["n"] == 1


def test_patch_change_changes_the_qemu_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = qemu_build.build_key()
    patches = tmp_path / "qemu-patches"
    patches.mkdir()
    for p in qemu_build.series():
        (patches / p.name).write_bytes(p.read_bytes() + b"\n")
    (patches / "series").write_text((qemu_build.PATCH_DIR / "series").read_text())
    monkeypatch.setattr(qemu_build, "PATCH_DIR", patches)
    monkeypatch.setattr(qemu_build, "series", lambda patch_dir=patches: sorted(
        p for p in patches.glob("*.patch")))
    assert qemu_build.build_key() != before


def test_series_naming_a_missing_patch_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "series").write_text("0001-nope.patch\n")
    with pytest.raises(BuildError, match=r"0001-nope\.patch"):
        qemu_build.series(tmp_path)


def test_the_qemu_key_does_not_depend_on_where_the_checkout_sits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # hyperkernel/tests is left out of the key; a checkout that itself sits
    # in a directory called "tests" must not lose every hyperkernel source.
    keys = []
    for checkout in (tmp_path / "tests" / "sds", tmp_path / "work" / "sds"):
        shutil.copytree(qemu_build.REPO_ROOT / "hyperkernel", checkout / "hyperkernel")
        monkeypatch.setattr(qemu_build, "REPO_ROOT", checkout)
        inputs = [name for name, _ in qemu_build.extra_inputs()]
        assert "hyperkernel/include/hyperkernel.h" in inputs
        assert not [name for name in inputs if name.startswith("hyperkernel/tests/")]
        keys.append(qemu_build.build_key())
    assert keys[0] == keys[1]
