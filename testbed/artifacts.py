"""Everything a run needs, built if missing: QEMU and the guest images."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from testbed.cluster import Artifacts
from testbed.errors import ConfigError
from testbed.images import build_images
from testbed.progress import Progress
from testbed.qemu_build import build_qemu


def ensure_artifacts(progress: Progress | None = None, *, qemu: Path | None = None,
                     kernel: Path | None = None) -> Artifacts:
    """Build what is missing; ``qemu``/``kernel`` (or $SDS_QEMU/$SDS_KERNEL) override."""
    progress = progress or Progress()
    qemu = qemu or (Path(os.environ["SDS_QEMU"]) if os.environ.get("SDS_QEMU") else None)
    kernel = kernel or (Path(os.environ["SDS_KERNEL"]) if os.environ.get("SDS_KERNEL") else None)
    if qemu is not None and not qemu.is_file():
        raise ConfigError(f"QEMU binary {qemu} does not exist",
                          "drop the override to use the built one, or run 'testbed build'")
    if kernel is not None and not kernel.is_file():
        raise ConfigError(f"guest kernel {kernel} does not exist",
                          "drop the override to use Debian's cloud kernel")
    if qemu is None:
        built = build_qemu(progress)
        qemu_path, qemu_key = built.binary, built.artifact.key
    else:
        qemu_path, qemu_key = qemu, f"custom:{qemu}"
    images = build_images(progress)
    arts = Artifacts(qemu=qemu_path, images=images, qemu_key=qemu_key)
    if kernel is not None:
        arts = replace(arts, images=images.with_kernel(kernel))
    return arts
