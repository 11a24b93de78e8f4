"""Content-addressed build cache outside the checkout.

Every artifact lives in ``<cache>/<kind>/<key>/`` where ``key`` hashes all of
its inputs. Builds happen in a sibling temporary directory that is renamed into
place only on success, so a failed or interrupted build never leaves a
half-built artifact that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = "ARTIFACT.json"
# Touched whenever an artifact is looked up or built: what `gc` keeps.
LAST_USED = "LAST_USED"


def cache_root() -> Path:
    """The cache directory: ``$SDS_CACHE`` or ``~/.cache/sds``."""
    env = os.environ.get("SDS_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "sds"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_inputs(parts: Iterable[tuple[str, bytes]]) -> str:
    """Hash named byte strings; names are part of the hash so reordering counts."""
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def hash_tree(root: Path, exclude: Callable[[Path], bool] | None = None) -> list[tuple[str, bytes]]:
    """All regular files under ``root`` as (relative path, content), sorted."""
    parts: list[tuple[str, bytes]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if exclude is not None and exclude(path):
            continue
        parts.append((str(path.relative_to(root)), path.read_bytes()))
    return parts


@dataclass(frozen=True)
class Artifact:
    """A finished artifact: its directory and the key that names it."""

    kind: str
    key: str
    path: Path

    @property
    def short(self) -> str:
        return self.key[:16]

    def metadata(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.path / COMPLETE_MARKER).read_text())
        return data


def _mark_used(path: Path) -> None:
    try:
        (path / LAST_USED).touch()
    except OSError:
        pass  # a read-only cache still works; gc then goes by the build time


def lookup(kind: str, key: str) -> Artifact | None:
    path = cache_root() / kind / key
    if (path / COMPLETE_MARKER).is_file():
        _mark_used(path)
        return Artifact(kind, key, path)
    return None


def build(kind: str, key: str, recipe: Callable[[Path], dict[str, object]]) -> Artifact:
    """Return the cached artifact, or run ``recipe(tmpdir)`` and publish it atomically.

    ``recipe`` fills the directory and returns metadata recorded beside it.
    """
    found = lookup(kind, key)
    if found is not None:
        return found
    final = cache_root() / kind / key
    tmp = final.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = recipe(tmp)
        meta = {"kind": kind, "key": key, **meta}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():  # a concurrent builder won; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _mark_used(final)
    return Artifact(kind, key, final)
