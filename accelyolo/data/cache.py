"""Label cache: the checked labels of a split as one JSON file, so a second run reads no label.

The cache is keyed by a SHA-256 over every image and label path with its size and mtime (plus
the class count and the cache format version); any change rebuilds it. It is written beside the
labels (`labels/<split>.accelyolo.json`); where that folder is not writable, into the fallback
folder given by the caller (beside the data.yaml) or `$ACCELYOLO_HOME/cache` /
`~/.cache/accelyolo/cache`. JSON only (no pickle anywhere).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from accelyolo.core.fileio import replace_atomically, write_text_atomically
from accelyolo.data.checks import img2label_path

CACHE_VERSION = 2  # 2: problems as {file, line, problem}; clipped and class counts


def home_dir() -> Path:
    """accelyolo's own folder: `$ACCELYOLO_HOME` or `~/.cache/accelyolo` (read when called)."""
    env = os.environ.get("ACCELYOLO_HOME")
    return Path(env) if env else Path.home() / ".cache" / "accelyolo"


def files_hash(images: Sequence[Path], nc: int | None) -> str:
    """Hash of image and label paths, sizes and mtimes (stat only, no file is read)."""
    return stat_hash(f"v{CACHE_VERSION} nc={nc}", (p for image in images for p in (image, img2label_path(image))))


def stat_hash(header: str, paths: Iterable[Path]) -> str:
    """SHA-256 over `header` and each path with its size and mtime (or `missing`)."""
    h = hashlib.sha256(header.encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def cache_paths(images: Sequence[Path], fallback_dir: Path | None) -> list[Path]:
    """Candidate cache files, best first: beside the labels, the fallback folder, the home cache."""
    label_dir = img2label_path(images[0]).parent
    name = f"{label_dir.name}.accelyolo.json"
    digest = hashlib.sha256(str(label_dir.resolve()).encode()).hexdigest()[:12]
    out = [label_dir.parent / name]
    if fallback_dir is not None:
        out.append(Path(fallback_dir) / f"{label_dir.name}-{digest}.accelyolo.json")
    out.append(home_dir() / "cache" / f"{label_dir.name}-{digest}.accelyolo.json")
    return out


def read_cache(path: Path, key: str) -> list[dict[str, Any]] | None:
    """The cached entries if `path` holds a cache with this key, else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("hash") != key:
        return None
    return data.get("entries")


def is_writable(folder: Path) -> bool:
    """Writable by us AND not marked read-only (root passes `os.access` even on `r-x` folders)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(folder, os.W_OK)


def write_cache(path: Path, key: str, entries: list[dict[str, Any]]) -> bool:
    """Write atomically (`accelyolo.core.fileio`); returns False where the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not is_writable(path.parent):
            return False
        write_text_atomically(path, json.dumps({"version": CACHE_VERSION, "hash": key, "entries": entries}))
    except OSError:
        return False
    return True


def load_or_build(
    images: Sequence[Path],
    nc: int | None,
    check_fn: Callable[[Path, int | None], dict[str, Any]],
    fallback_dir: Path | None = None,
    workers: int = 4,
) -> tuple[list[dict[str, Any]], Path | None, bool]:
    """Checked entries for `images`, from the cache when it is current, else rebuilt and saved.

    Args:
        images: image files of the split (non-empty).
        nc: class count for the class-id check (part of the key).
        check_fn: `check_image_label`, run on every image when the cache misses.
        fallback_dir: where to write when the labels folder is read-only.
        workers: threads for the checks (decoders release the GIL).

    Returns:
        `(entries, cache_file or None when nothing could be written, hit)`.
    """

    def build() -> list[dict[str, Any]]:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            return list(pool.map(lambda p: check_fn(p, nc), images))

    return cached_entries(files_hash(images, nc), cache_paths(images, fallback_dir), len(images), build)


def cached_entries(
    key: str, candidates: Sequence[Path], count: int, build: Callable[[], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], Path | None, bool]:
    """The `count` entries cached under `key` in the first candidate file that holds them, else `build()`
    written to the first candidate that takes it: `(entries, cache file or None, hit)`."""
    for path in candidates:
        entries = read_cache(path, key)
        if entries is not None and len(entries) == count:
            return entries, path, True
    entries = build()
    for path in candidates:
        if write_cache(path, key, entries):
            return entries, path, False
    return entries, None, False


# ------------------------------------------------------------------------- decoded images (--cache disk)

IMAGE_CACHE_VERSION = 1


def image_npy_name(image: Path, imgsz: int, fast: bool) -> str:
    """`<stem>.<hash>.npy`: the hash covers the image's path, size and mtime and the decoding settings, so
    a changed image (or another imgsz) gets a new file and a stale one is never read."""
    st = image.stat()
    text = f"v{IMAGE_CACHE_VERSION}\0{image.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{imgsz}\0{int(fast)}"
    return f"{image.stem}.{hashlib.sha256(text.encode()).hexdigest()[:16]}.npy"


def image_npy_path(image: Path, imgsz: int, fast: bool, fallback_dir: Path | None = None) -> Path:
    """Where the decoded image goes: beside the image when that folder is writable, else in the fallback
    folder (`fallback_dir` or `$ACCELYOLO_HOME/cache/images`), under a per-folder subfolder."""
    name = image_npy_name(image, imgsz, fast)
    if is_writable(image.parent):
        return image.parent / name
    digest = hashlib.sha256(str(image.parent.resolve()).encode()).hexdigest()[:12]
    root = Path(fallback_dir) if fallback_dir is not None else home_dir() / "cache" / "images"
    return root / f"{image.parent.name}-{digest}" / name


def save_npy(path: Path, array: Any) -> None:
    """`np.save(..., allow_pickle=False)` to a temp file, then an atomic rename (a killed run leaves no
    half-written cache file)."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:
            np.save(file, array, allow_pickle=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, write)
