"""Fetch, verify, patch and build QEMU 10.0.2 for the nodes.

The source is Debian's upstream tarball of the ``qemu`` source package in
bookworm-backports, checked against a pinned sha256. The patch series in
``qemu-patches/series`` is applied in order, then the glue sources in
``qemu-glue/`` (new files, laid out by their path in the QEMU tree) are
copied in. The build tree is reused across changes (files are synced by
content so ninja rebuilds exactly what changed), and the finished binary is
published into the content-addressed cache under a key of source hash +
series + glue + configure flags (+ the hyperkernel library it links).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed import cache
from testbed.errors import BuildError
from testbed.progress import Progress

SOURCE_PACKAGE = "qemu"
SOURCE_VERSION = "1:10.0.2+ds-2+deb13u1~bpo12+1"
TARBALL = "qemu_10.0.2+ds.orig.tar.xz"
TARBALL_SHA256 = "0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1"
SOURCE_DIR = "qemu-10.0.2"

CONFIGURE_FLAGS = (
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-tcg",
    "--enable-kvm",
    "--enable-slirp",
    "--disable-docs",
    "--disable-rust",
    "--disable-download",
    "--disable-install-blobs",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = REPO_ROOT / "qemu-patches"
GLUE_DIR = REPO_ROOT / "qemu-glue"


@dataclass(frozen=True)
class QemuBuild:
    artifact: cache.Artifact

    @property
    def binary(self) -> Path:
        return self.artifact.path / "bin" / "qemu-system-x86_64"


def series(patch_dir: Path = PATCH_DIR) -> list[Path]:
    """The patches named in ``series``, in order; comments and blanks ignored."""
    series_file = patch_dir / "series"
    if not series_file.is_file():
        raise BuildError(f"{series_file} is missing", "restore it from git")
    patches = []
    for line in series_file.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        path = patch_dir / name
        if not path.is_file():
            raise BuildError(f"qemu-patches/series names {name}, which does not exist",
                             "fix the series file or add the patch")
        patches.append(path)
    return patches


def _is_doc(path: Path) -> bool:
    return path.suffix == ".md"


def glue_files(glue_dir: Path | None = None) -> list[tuple[str, bytes]]:
    """The glue sources as (path in the QEMU tree, content); documentation excluded."""
    return cache.hash_tree(glue_dir or GLUE_DIR, exclude=_is_doc)


def uses_hyperkernel() -> bool:
    """True once a patch of the series links the hyperkernel library."""
    return (REPO_ROOT / "hyperkernel" / "Makefile").is_file() and any(
        "hyperkernel" in p.read_text(errors="replace") for p in series())


def extra_inputs() -> list[tuple[str, bytes]]:
    """Inputs beyond the patch series that the QEMU binary depends on.

    The glue sources are compiled into QEMU. Once the series links the
    hyperkernel library, its sources are part of the key too, so a library
    change relinks QEMU.
    """
    parts = [(f"glue/{name}", data) for name, data in glue_files()]
    if uses_hyperkernel():
        parts += [(f"hyperkernel/{name}", data) for name, data in cache.hash_tree(
            REPO_ROOT / "hyperkernel",
            exclude=lambda p: _is_doc(p) or "tests" in p.relative_to(REPO_ROOT).parts)]
    return parts


def hyperkernel_prefix() -> Path:
    """Where the library and its header are installed for QEMU's configure."""
    return cache.cache_root() / "hyperkernel" / "prefix"


def configure_flags() -> tuple[str, ...]:
    if uses_hyperkernel():
        return (*CONFIGURE_FLAGS, f"-Dhyperkernel={hyperkernel_prefix()}")
    return CONFIGURE_FLAGS


def build_hyperkernel(log: Path, progress: Progress) -> bool:
    """Build libhyperkernel.a and install it with its header into the prefix.

    Returns True if the installed library changed (QEMU must relink: ninja
    does not track a library found with find_library).
    """
    # make decides by timestamps, so each checkout keeps its own objects: two
    # worktrees sharing one directory would link whichever compiled last.
    checkout = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
    out = cache.cache_root() / "hyperkernel" / f"build-{checkout}"
    lib = out / "libhyperkernel.a"
    progress.step("qemu", "building libhyperkernel.a")
    _run_logged(["make", "-C", str(REPO_ROOT / "hyperkernel"), f"O={out}", str(lib)],
                REPO_ROOT, log, progress, "hyperkernel build")
    prefix = hyperkernel_prefix()
    (prefix / "include").mkdir(parents=True, exist_ok=True)
    changed = False
    for src, dst in ((lib, prefix / "libhyperkernel.a"),
                     (REPO_ROOT / "hyperkernel" / "include" / "hyperkernel.h",
                      prefix / "include" / "hyperkernel.h")):
        data = src.read_bytes()
        if not dst.is_file() or dst.read_bytes() != data:
            dst.write_bytes(data)
            changed = True
    return changed


def build_key() -> str:
    parts = [("source", TARBALL_SHA256.encode()), ("flags", " ".join(configure_flags()).encode())]
    parts += [(f"patch/{p.name}", p.read_bytes()) for p in series()]
    parts += extra_inputs()
    return cache.hash_inputs(parts)


def tarball_url() -> str:
    """Ask apt where the tarball lives (needs the deb-src entry setup-system adds)."""
    try:
        out = subprocess.run(
            ["apt-get", "source", "--print-uris", f"{SOURCE_PACKAGE}={SOURCE_VERSION}"],
            capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError as e:
        raise BuildError("apt-get not found", "this needs a Debian machine") from e
    for line in out.stdout.splitlines():
        m = re.match(r"'([^']+)' (\S+) ", line)
        if m and m.group(2) == TARBALL:
            return m.group(1)
    raise BuildError(
        f"apt cannot find source package {SOURCE_PACKAGE}={SOURCE_VERSION}",
        "run 'make setup' as root (it adds the bookworm-backports deb-src entry and runs apt-get update)")


def fetch_source(progress: Progress) -> Path:
    """The verified tarball in the cache; downloads it if needed."""
    dest = cache.cache_root() / "downloads" / TARBALL
    if dest.is_file() and cache.sha256_file(dest) == TARBALL_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("SDS_QEMU_TARBALL_URL") or tarball_url()
    progress.step("qemu", f"downloading {TARBALL}")
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"cannot download {url}: {e}", "check that Debian's archive is reachable") from e
    got = cache.sha256_file(tmp)
    if got != TARBALL_SHA256:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"checksum mismatch for {TARBALL}: got {got}, expected {TARBALL_SHA256}",
                         "the download is corrupt or the archive changed; retry, and if it persists "
                         "check the pinned hash in testbed/qemu_build.py")
    tmp.rename(dest)
    return dest


def _run_logged(cmd: list[str], cwd: Path, log: Path, progress: Progress, what: str) -> None:
    """Run ``cmd`` appending to ``log``; on failure raise with the log's tail."""
    tail: deque[str] = deque(maxlen=25)
    with log.open("a") as logf:
        logf.write(f"$ {' '.join(cmd)}\n")
        logf.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            tail.append(line.rstrip())
            m = re.match(r"\[(\d+)/(\d+)\]", line)
            if m:
                progress.update("qemu", f"{what} {m.group(1)}/{m.group(2)}")
        rc = proc.wait()
    if rc != 0:
        raise BuildError(
            f"{what} failed (exit {rc}). Last lines:\n  " + "\n  ".join(tail) + f"\nFull log: {log}",
            "fix the error above and run 'testbed build' again")


def _sync_tree(src: Path, dst: Path) -> int:
    """Make ``dst`` equal ``src`` by content, touching only files that differ.

    Rewriting only changed files gives them a fresh mtime, so ninja rebuilds
    exactly what a patch change affects (also when a patch is removed).
    """
    changed = 0
    src_files = {p.relative_to(src) for p in src.rglob("*") if p.is_file() or p.is_symlink()}
    for rel in sorted(src_files):
        s, d = src / rel, dst / rel
        if s.is_symlink():
            if d.is_symlink() and os.readlink(d) == os.readlink(s):
                continue
            d.parent.mkdir(parents=True, exist_ok=True)
            if d.exists() or d.is_symlink():
                d.unlink()
            d.symlink_to(os.readlink(s))
            changed += 1
            continue
        data = s.read_bytes()
        if d.is_file() and not d.is_symlink() and d.read_bytes() == data:
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        if d.is_symlink():
            d.unlink()
        d.write_bytes(data)
        shutil.copymode(s, d)
        changed += 1
    for p in sorted(dst.rglob("*"), reverse=True):
        if (p.is_file() or p.is_symlink()) and p.relative_to(dst) not in src_files:
            p.unlink()
            changed += 1
    return changed


def copy_glue(tree: Path, glue_dir: Path | None = None) -> None:
    """Copy the glue sources into a patched QEMU tree.

    The glue only adds files: one that would replace a QEMU file (or a file
    a patch created) is an error, so the patches stay the only edits.
    """
    for name, data in glue_files(glue_dir):
        dest = tree / name
        if dest.exists():
            raise BuildError(f"qemu-glue/{name} would overwrite {name} of the QEMU tree",
                             "the glue adds new files only; change an existing file with a patch")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def _prepare_source(tarball: Path, patches: list[Path], work_src: Path, log: Path,
                    progress: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="qemu-src-", dir=cache.cache_root()) as tmpd:
        tmp = Path(tmpd)
        progress.step("qemu", "unpacking source")
        with tarfile.open(tarball) as tf:
            tf.extractall(tmp, filter="tar")
        tree = tmp / SOURCE_DIR
        for patch in patches:
            progress.step("qemu", f"applying {patch.name}")
            with log.open("a") as logf:
                logf.write(f"$ patch -p1 < {patch}\n")
                r = subprocess.run(["patch", "-p1", "--forward", "--batch", "-i", str(patch)],
                                   cwd=tree, stdout=logf, stderr=subprocess.STDOUT, check=False)
            if r.returncode != 0:
                raise BuildError(f"patch {patch.name} does not apply to QEMU 10.0.2 (see {log})",
                                 "rebase the patch on the pristine source")
        copy_glue(tree)
        if not work_src.exists():
            tree.rename(work_src)
        else:
            n = _sync_tree(tree, work_src)
            progress.step("qemu", f"{n} source files changed since the last build")


def build_qemu(progress: Progress | None = None) -> QemuBuild:
    """Return the built QEMU for the current series, building it if needed."""
    progress = progress or Progress()
    patches = series()
    key = build_key()
    found = cache.lookup("qemu", key)
    if found is not None:
        return QemuBuild(found)

    tarball = fetch_source(progress)
    flags = configure_flags()
    work = cache.cache_root() / "qemu-work" / cache.hash_inputs(
        [("source", TARBALL_SHA256.encode()), ("flags", " ".join(flags).encode())])[:16]
    work.mkdir(parents=True, exist_ok=True)
    # One build at a time per work tree: two would sync different patch sets into the
    # same source tree and run two ninjas in one build directory.
    with _work_lock(work, progress):
        found = cache.lookup("qemu", key)  # built by whoever held the lock before us
        if found is not None:
            return QemuBuild(found)
        return _build_locked(work, key, patches, tarball, flags, progress)


@contextlib.contextmanager
def _work_lock(work: Path, progress: Progress) -> Iterator[None]:
    with (work / ".lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.step("qemu", f"waiting for another QEMU build in {work} to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(work: Path, key: str, patches: list[Path], tarball: Path,
                  flags: tuple[str, ...] | list[str], progress: Progress) -> QemuBuild:
    log = work / "build.log"
    log.write_text("")
    work_src, build_dir = work / "src", work / "build"
    if uses_hyperkernel() and build_hyperkernel(log, progress):
        (build_dir / "qemu-system-x86_64").unlink(missing_ok=True)
    # The patched tree depends on the tarball, the series and the glue only:
    # a change to the hyperkernel library (the laptop loop) relinks QEMU
    # without unpacking and patching the source again.
    source_key = cache.hash_inputs(
        [("source", TARBALL_SHA256.encode())]
        + [(f"patch/{p.name}", p.read_bytes()) for p in patches]
        + [(f"glue/{name}", data) for name, data in glue_files()])
    stamp = work / "source-key"
    if work_src.is_dir() and stamp.is_file() and stamp.read_text() == source_key:
        progress.step("qemu", "patched source unchanged")
    else:
        stamp.unlink(missing_ok=True)
        _prepare_source(tarball, patches, work_src, log, progress)
        stamp.write_text(source_key)

    if not (build_dir / "build.ninja").is_file():
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir()
        progress.step("qemu", "configuring")
        _run_logged([str(work_src / "configure"), f"--python={sys.executable}", *flags],
                    build_dir, log, progress, "configure")
    progress.step("qemu", f"compiling (log: {log})")
    jobs = str(os.cpu_count() or 2)
    try:
        _run_logged(["ninja", "-j", jobs, "qemu-system-x86_64"], build_dir, log, progress, "compile")
    except BuildError:
        # A broken configure result must not stick: reconfigure next time.
        if not (build_dir / "qemu-system-x86_64").exists():
            (build_dir / "build.ninja").unlink(missing_ok=True)
        raise

    def publish(out: Path) -> dict[str, object]:
        (out / "bin").mkdir()
        shutil.copy2(build_dir / "qemu-system-x86_64", out / "bin" / "qemu-system-x86_64")
        shutil.copy2(log, out / "build.log")
        return {"source_sha256": TARBALL_SHA256, "series": [p.name for p in patches],
                "configure": list(flags)}

    art = cache.build("qemu", key, publish)
    progress.step("qemu", f"built {art.path / 'bin' / 'qemu-system-x86_64'}")
    return QemuBuild(art)
