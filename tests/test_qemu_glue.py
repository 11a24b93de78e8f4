"""The QEMU side is a short patch series of edits to QEMU's own files plus the glue
sources in qemu-glue/, which the build copies into the tree and hashes into its key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from testbed import qemu_build
from testbed.errors import BuildError

# The series edits QEMU; whatever is new lives in qemu-glue/ (issue 8: about 500 lines).
MAX_ADDED_LINES = 500


def _patched_paths(patch: Path) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M)}


def test_the_series_stays_small() -> None:
    added = sum(len(re.findall(r"^\+[^+]", p.read_text(), re.M)) for p in qemu_build.series())
    assert 0 < added <= MAX_ADDED_LINES


def test_patches_only_edit_files_qemu_already_has() -> None:
    for patch in qemu_build.series():
        text = patch.read_text()
        assert "--- /dev/null" not in text, f"{patch.name} creates a file; put it in qemu-glue/"


def test_no_patch_touches_a_glue_file() -> None:
    glue = {name for name, _ in qemu_build.glue_files()}
    for patch in qemu_build.series():
        assert not _patched_paths(patch) & glue, patch.name


def test_every_patch_says_why() -> None:
    for patch in qemu_build.series():
        head = patch.read_text().split("\n---\n", 1)[0]
        body = head.split("\n\n", 1)[1] if "\n\n" in head else ""
        assert len(body.split()) >= 20, f"{patch.name} has no message explaining why"


def test_a_glue_change_changes_the_qemu_key(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = qemu_build.build_key()
    glue = tmp_path / "qemu-glue"
    shutil.copytree(qemu_build.GLUE_DIR, glue)
    monkeypatch.setattr(qemu_build, "GLUE_DIR", glue)
    assert qemu_build.build_key() == before  # a copy is the same input
    source = next(glue.rglob("*.c"))
    source.write_text(source.read_text() + "\n")
    assert qemu_build.build_key() != before


def test_the_glue_documentation_is_not_part_of_the_key(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = qemu_build.build_key()
    glue = tmp_path / "qemu-glue"
    shutil.copytree(qemu_build.GLUE_DIR, glue)
    monkeypatch.setattr(qemu_build, "GLUE_DIR", glue)
    (glue / "NOTES.md").write_text("prose only\n")
    assert qemu_build.build_key() == before


def test_the_glue_lands_at_its_qemu_path(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    tree.mkdir()
    qemu_build.copy_glue(tree)
    for name, data in qemu_build.glue_files():
        assert (tree / name).read_bytes() == data
    assert (tree / "hw/i386/hyperkernel/meson.build").is_file()
    assert not list(tree.rglob("*.md"))


def test_the_glue_never_overwrites_a_qemu_file(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    name = qemu_build.glue_files()[0][0]
    (tree / name).parent.mkdir(parents=True)
    (tree / name).write_text("QEMU's own\n")
    with pytest.raises(BuildError, match=re.escape(name)):
        qemu_build.copy_glue(tree)
    assert (tree / name).read_text() == "QEMU's own\n"
