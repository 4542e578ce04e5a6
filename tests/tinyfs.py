"""Small real filesystems for the full- and read-only-disk tests (root only).

`tmpfs(folder, size)` mounts a size-limited tmpfs on `folder`; `ext4(folder, size)` a
loop-mounted ext4 image with `errors=remount-ro`, which `emergency_ro()` turns read-only
the way the kernel does after an I/O error (a plain `mount -o remount,ro` is refused
while files are open for writing, as the daemon's are). Both unmount in `finally`, lazily
if something still holds the mount, so a failing test leaves no mount behind.

`fill(folder)` writes a filler file until the filesystem refuses (ENOSPC) and returns
it; deleting it gives the space back.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def can_mount() -> str | None:
    """None when this process may mount filesystems, else why not."""
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    if shutil.which("mount") is None:
        return "no mount(8)"
    return None


def require_mount() -> None:
    why = can_mount()
    if why is not None:
        pytest.skip(why)


def _umount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def tmpfs(folder: Path, size: str = "4m") -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(folder)], check=True, capture_output=True)
    try:
        yield folder
    finally:
        _umount(folder)


@contextmanager
def ext4(folder: Path, image: Path, size_mb: int = 16, fresh: bool = True) -> Iterator[Path]:
    """`fresh=False` mounts an existing image after `e2fsck -fy` (as after a reboot)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True,
                       capture_output=True)
    else:
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(folder)],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        _umount(folder)


def loop_device(folder: Path) -> str:
    return subprocess.run(["findmnt", "-no", "SOURCE", str(folder)], check=True,
                          capture_output=True, text=True).stdout.strip()


def emergency_ro(folder: Path) -> None:
    """Make the ext4 filesystem on `folder` read-only as after an I/O error."""
    device = os.path.basename(loop_device(folder))
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("mso test: go read-only\n")
    try:
        (folder / ".ro-check").write_text("x")
    except OSError as exc:
        assert exc.errno == errno.EROFS, exc
    else:
        raise AssertionError("the filesystem did not become read-only")


def fill(folder: Path, name: str = "filler") -> Path:
    """Write zeros into `folder/name` until the filesystem is full."""
    path = folder / name
    block = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    # The last partial block: what is left fits no whole 64 KiB write, try smaller ones.
    with open(path, "ab", buffering=0) as f:
        for size in (4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return path
