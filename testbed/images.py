"""Guest images: Debian's stock cloud kernel and the busybox initramfs.

Both are content-addressed cache artifacts (see ``testbed.cache``). Recipes and
the guest's ``/init`` live in ``guest-images/``.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testbed import cache, cpio
from testbed.errors import BuildError
from testbed.progress import Progress

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "guest-images"
WORKLOADS_DIR = REPO_ROOT / "workloads"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True)
class GuestImages:
    kernel: cache.Artifact
    initramfs: cache.Artifact
    kernel_override: Path | None = None

    @property
    def kernel_path(self) -> Path:
        return self.kernel_override or self.kernel.path / "vmlinuz"

    def with_kernel(self, path: Path) -> GuestImages:
        return GuestImages(self.kernel, self.initramfs, path)

    @property
    def initramfs_path(self) -> Path:
        return self.initramfs.path / "initramfs.cpio.gz"

    def hashes(self) -> dict[str, str]:
        kernel = (cache.sha256_file(self.kernel_override) if self.kernel_override
                  else str(self.kernel.metadata()["sha256"]))
        return {"kernel": kernel,
                "initramfs": str(self.initramfs.metadata()["sha256"])}


def _apt_field(package: str, field: str) -> str:
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", package],
                         capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(f"{field}: "):
            return line.split(": ", 1)[1].strip()
    raise BuildError(f"apt knows no {field} for package {package}",
                     "run 'apt-get update' (as root) so the package lists are current")


def kernel_package() -> str:
    """The concrete kernel package the cloud metapackage points to."""
    depends = _apt_field(KERNEL_METAPACKAGE, "Depends")
    for dep in depends.split(","):
        name = dep.strip().split(" ")[0]
        if name.startswith("linux-image-") and name.endswith("-cloud-amd64"):
            return name
    raise BuildError(f"{KERNEL_METAPACKAGE} depends on no cloud kernel image ({depends})",
                     "check the apt sources")


def build_kernel(progress: Progress) -> cache.Artifact:
    package = kernel_package()
    version = _apt_field(package, "Version")
    deb_sha = _apt_field(package, "SHA256")
    key = cache.hash_inputs([("package", package.encode()), ("version", version.encode()),
                             ("sha256", deb_sha.encode())])

    def recipe(out: Path) -> dict[str, object]:
        progress.step("kernel", f"fetching {package} {version}")
        with tempfile.TemporaryDirectory() as tmpd:
            tmp = Path(tmpd)
            r = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=tmp,
                               capture_output=True, text=True, check=False)
            debs = list(tmp.glob("*.deb"))
            if r.returncode != 0 or not debs:
                raise BuildError(f"apt-get download {package} failed: {r.stderr.strip()[-300:]}",
                                 "check the network to Debian's archive and run apt-get update")
            if cache.sha256_file(debs[0]) != deb_sha:
                raise BuildError(f"checksum mismatch for {debs[0].name}", "retry the download")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], check=True)
            vmlinuz = sorted((tmp / "root" / "boot").glob("vmlinuz-*"))
            if not vmlinuz:
                raise BuildError(f"{debs[0].name} holds no /boot/vmlinuz-*", "check the package")
            shutil.copyfile(vmlinuz[0], out / "vmlinuz")
        return {"package": package, "version": version, "deb_sha256": deb_sha,
                "release": vmlinuz[0].name.removeprefix("vmlinuz-"),
                "sha256": cache.sha256_file(out / "vmlinuz")}

    return cache.build("kernel", key, recipe)


def _workloads_tree(progress: Progress) -> cache.Artifact | None:
    """The staged workload tree from ``workloads/build.sh``, cached by its inputs."""
    script = WORKLOADS_DIR / "build.sh"
    if not script.is_file():
        return None
    parts = cache.hash_tree(WORKLOADS_DIR, exclude=lambda p: "__pycache__" in p.parts)
    # The Debian packages it copies from count as inputs too.
    pkgs = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}=${Version}\n", "redis-server", "redis-tools",
         "libsqlite3-dev", "libc6"], capture_output=True, text=True, check=False).stdout
    parts.append(("packages", pkgs.encode()))
    key = cache.hash_inputs(parts)

    def recipe(out: Path) -> dict[str, object]:
        progress.step("workloads", "building guest workloads")
        log = out.parent / f"{key}.log"
        with log.open("w") as logf:
            r = subprocess.run(["sh", str(script), str(out / "root")], cwd=WORKLOADS_DIR,
                               stdout=logf, stderr=subprocess.STDOUT, check=False)
        if r.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise BuildError("workloads/build.sh failed:\n  " + "\n  ".join(tail) +
                             f"\nFull log: {log}", "fix the workload build and retry")
        log.unlink(missing_ok=True)
        return {"packages": pkgs.split()}

    return cache.build("workloads", key, recipe)


def _tree_entries(root: Path, prefix: str = "") -> list[cpio.Entry]:
    entries = []
    for p in sorted(root.rglob("*")):
        rel = prefix + str(p.relative_to(root))
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            entries.append(cpio.Entry(rel, stat.S_IFLNK | 0o777, os.readlink(p).encode()))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(cpio.Entry(rel, stat.S_IFDIR | 0o755))
        elif stat.S_ISREG(st.st_mode):
            perm = 0o755 if st.st_mode & 0o111 else 0o644
            entries.append(cpio.Entry(rel, stat.S_IFREG | perm, p.read_bytes()))
    return entries


def _busybox_applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True)
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def initramfs_entries(init: bytes, workloads_root: Path | None) -> list[cpio.Entry]:
    """Everything in the initramfs, as cpio entries."""
    by_path: dict[str, cpio.Entry] = {}

    def add(e: cpio.Entry) -> None:
        by_path[e.path] = e

    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/sds-init.d", "proc",
              "sys", "dev", "tmp", "run", "root", "opt", "opt/workloads", "opt/workloads/bin",
              "lib", "lib64", "var", "var/tmp"]:
        add(cpio.Entry(d, stat.S_IFDIR | 0o755))
    # The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    add(cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    add(cpio.Entry("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()))
    for applet in _busybox_applets():
        path = applet.lstrip("/")
        if path != "bin/busybox":
            depth = path.count("/")
            add(cpio.Entry(path, stat.S_IFLNK | 0o777, ("../" * depth + "bin/busybox").encode()))
    add(cpio.Entry("etc/passwd", stat.S_IFREG | 0o644, b"root:x:0:0:root:/root:/bin/sh\n"))
    add(cpio.Entry("etc/group", stat.S_IFREG | 0o644, b"root:x:0:\n"))
    add(cpio.Entry("etc/hosts", stat.S_IFREG | 0o644, b"127.0.0.1 localhost sds-guest\n"))
    if workloads_root is not None:
        for e in _tree_entries(workloads_root):
            add(e)
    add(cpio.Entry("init", stat.S_IFREG | 0o755, init))
    return list(by_path.values())


def build_initramfs(progress: Progress, init_override: bytes | None = None) -> cache.Artifact:
    """Build the initramfs; ``init_override`` replaces /init (tests use a broken one)."""
    init = init_override if init_override is not None else (IMAGES_DIR / "init").read_bytes()
    workloads = _workloads_tree(progress)
    busybox = BUSYBOX.read_bytes() if BUSYBOX.is_file() else b""
    if not busybox:
        raise BuildError(f"{BUSYBOX} is missing", "install Debian's busybox-static (make setup)")
    key = cache.hash_inputs([
        ("recipe", Path(__file__).read_bytes()), ("cpio", (Path(__file__).parent / "cpio.py").read_bytes()),
        ("init", init), ("busybox", busybox), ("workloads", (workloads.key if workloads else "").encode()),
    ])

    def recipe(out: Path) -> dict[str, object]:
        progress.step("initramfs", "packing initramfs")
        entries = initramfs_entries(init, workloads.path / "root" if workloads else None)
        raw = io.BytesIO()
        cpio.write(raw, entries)
        with (out / "initramfs.cpio.gz").open("wb") as f, \
                gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(raw.getvalue())
        return {"sha256": cache.sha256_file(out / "initramfs.cpio.gz"),
                "entries": len(entries), "workloads": workloads.key if workloads else None,
                "custom_init": init_override is not None}

    return cache.build("initramfs", key, recipe)


def build_images(progress: Progress | None = None) -> GuestImages:
    progress = progress or Progress()
    return GuestImages(build_kernel(progress), build_initramfs(progress))
