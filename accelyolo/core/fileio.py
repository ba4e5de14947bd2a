"""Atomic file replacement: a reader sees the old file or the new one, never a partial file.

The one recipe every writer uses (checkpoints, the label cache, the demo dataset): fill a temporary
file in the destination's folder (same filesystem, so the rename is atomic), fsync it, `os.replace`
it over the destination, then fsync the folder so the rename survives a power cut. On any error
the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "copy_atomically",
    "replace_atomically",
    "temporary_sibling",
    "write_bytes_atomically",
    "write_text_atomically",
]


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def temporary_sibling(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh, unused name beside `path` (hidden, unique per process); removed on exit if still there.

    The caller creates a file or a folder under that name and renames it over `path`; whatever is
    left behind (after an error, or a lost race) is deleted, file or folder.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable; not every filesystem lets a folder be fsynced."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def replace_atomically(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Have `write(tmp_name)` fill a temporary file beside `path`, then rename it over `path`.

    The file gets the usual permissions (0666 minus the umask; some writers such as safetensors
    create files 0600), so teammates on a shared machine can read it. The parent folder is created
    when missing. Errors from `write` or the filesystem propagate after the temporary file is removed.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_sibling(path) as tmp:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    _fsync_folder(path.parent)
    return path


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see `replace_atomically`)."""
    return replace_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomically(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `replace_atomically`)."""
    return replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def copy_atomically(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy the file `src` to `dst` atomically (see `replace_atomically`)."""
    return replace_atomically(dst, lambda tmp: shutil.copyfile(src, tmp))
