"""COCO JSON annotation files read where they lie, as dataset splits.

A COCO file (`instances_*.json`) holds `images` (`id`, `file_name`, optional `width`/`height`),
`annotations` (`id`, `image_id`, `category_id`, `bbox` as `[x, y, w, h]` in pixels, `iscrowd`) and
`categories` (`id`, `name`). Category ids may have any values (COCO's own are 1..90 with gaps): sorted by
id, they become the contiguous class indices 0..nc-1 used inside, and `category_ids[index]` gives each
index its id back for predictions.json and the checkpoint.

Each image becomes one checked entry in the format of `checks.check_image_label` (so the dataset, the
report and `data check` treat both formats alike), plus `crowd` (the `iscrowd: 1` regions, kept out of
training and scored as COCOeval scores them) and `image_id`. Annotation problems are reported with the
annotation's id and never raised: a zero or negative size, a box outside the image (clipped when it only
sticks out), an unknown category or image id, a malformed bbox. An image listed but missing is reported
with its image id, and so is a `width`/`height` that differs from the image's own size. The checked
entries are cached as JSON (`<file stem>.accelyolo.json` beside the annotation file), keyed by the file
and every image's size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelyolo.core.errors import DataError
from accelyolo.data.cache import cached_entries, home_dir, stat_hash
from accelyolo.data.checks import COORD_TOLERANCE, verify_image

COCO_CACHE_VERSION = 1


class CocoFormatError(DataError):
    """A COCO file that cannot be used at all (not JSON, a missing top-level key, a bad category)."""


@dataclass
class CocoFile:
    """A parsed COCO annotation file.

    Attributes:
        path: the annotation file.
        images_dir: the folder `file_name`s are relative to.
        category_ids: the category id of each class index (sorted ids).
        names: class names, in the same order.
        images: the file's `images` entries, in file order.
        annotations: the file's `annotations` entries.
    """

    path: Path
    images_dir: Path
    category_ids: list[int]
    names: list[str]
    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]

    def image_path(self, image: dict[str, Any]) -> Path:
        p = Path(str(image["file_name"]))
        return p if p.is_absolute() else self.images_dir / p


def read_coco(path: str | Path, images_dir: str | Path | None = None) -> CocoFile:
    """Parse and validate the structure of a COCO file; `images_dir` defaults to the file's folder.

    Raises:
        CocoFormatError: the file is missing or not JSON, a top-level key is missing or not a list, a
            category lacks an integer `id` or a `name`, a category id repeats, an image lacks `id` or
            `file_name`, or an image id repeats. Each message names the file and the key.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CocoFormatError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CocoFormatError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a COCO object with keys images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{path}: key '{key}' missing or not a list (COCO detection format)")
    categories = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise CocoFormatError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name', got {cat!r}")
        if cat["id"] in categories:
            raise CocoFormatError(f"{path}: categories[{i}]: category id {cat['id']} appears twice")
        categories[cat["id"]] = cat["name"]
    if not categories:
        raise CocoFormatError(f"{path}: key 'categories' is empty; list the classes as {{id, name}}")
    seen = set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise CocoFormatError(f"{path}: images[{i}] needs 'id' and a string 'file_name', got {image!r}")
        if image["id"] in seen:
            raise CocoFormatError(f"{path}: images[{i}]: image id {image['id']!r} appears twice")
        seen.add(image["id"])
    ids = sorted(categories)
    folder = Path(images_dir).expanduser().resolve() if images_dir is not None else path.parent
    return CocoFile(path, folder, ids, [categories[c] for c in ids], data["images"], data["annotations"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CocoSource:
    """The labels of one split, read from a COCO file (what `sources.SplitImages.source` holds)."""

    def __init__(self, coco: CocoFile) -> None:
        self.coco = coco
        self.where = str(coco.path)
        self.image_paths = [coco.image_path(im) for im in coco.images]
        self.category_ids = list(coco.category_ids)
        self.names = list(coco.names)

    def image_ids(self) -> dict[str, Any]:
        """Image file (as `str`) -> the file's own image id, for predictions.json."""
        return {str(p): im["id"] for p, im in zip(self.image_paths, self.coco.images, strict=True)}

    def checked_entries(
        self, nc: int | None, fallback_dir: Path | None = None, workers: int = 4
    ) -> tuple[list[dict[str, Any]], Path | None, bool]:
        """One checked entry per listed image (cached); see the module docstring. `nc` must equal the
        number of categories when given (a data.yaml's names)."""

        def build() -> list[dict[str, Any]]:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                return self._entries(list(pool.map(image_shape, self.image_paths)))

        return cached_entries(self._cache_key(), self._cache_paths(fallback_dir), len(self.image_paths), build)

    def _cache_key(self) -> str:
        return stat_hash(f"coco v{COCO_CACHE_VERSION}", (self.coco.path, *self.image_paths))

    def _cache_paths(self, fallback_dir: Path | None) -> list[Path]:
        path = self.coco.path
        name = f"{path.stem}.accelyolo.json"
        digest = hashlib.sha256(f"{path}\0{self.coco.images_dir}".encode()).hexdigest()[:12]
        out = [path.parent / name]
        if fallback_dir is not None:
            out.append(Path(fallback_dir) / f"{path.stem}-{digest}.accelyolo.json")
        out.append(home_dir() / "cache" / f"{path.stem}-{digest}.accelyolo.json")
        return out

    def _entries(self, shapes: list[tuple[tuple[int, int] | None, str | None]]) -> list[dict[str, Any]]:
        coco = self.coco
        index_of = {cid: i for i, cid in enumerate(coco.category_ids)}
        entries, by_id = [], {}
        for image, path, (shape, problem) in zip(coco.images, self.image_paths, shapes, strict=True):
            entry = empty_entry(path, image["id"])
            if problem:
                entry["problems"].append(_problem(coco.path, None, f"image id {image['id']!r} ({path}): {problem}"))
            else:
                entry.update(shape=list(shape), status="background")
                by_id[image["id"]] = entry
                said = (image.get("height"), image.get("width"))
                if all(_is_int(v) for v in said) and said != tuple(shape):
                    why = (f"image id {image['id']!r} ({path}): the file says {said[1]}x{said[0]}, the image is "
                           f"{shape[1]}x{shape[0]} (EXIF rotation?); boxes are read in the image's pixels")  # fmt: skip
                    entry["problems"].append(_problem(coco.path, None, why))
            entries.append(entry)
        listed = {image["id"] for image in coco.images}
        orphans = entries[0] if entries else None  # annotations of no listed image are reported here
        for n, ann in enumerate(coco.annotations):
            ann_id = ann.get("id", f"#{n}") if isinstance(ann, dict) else f"#{n}"
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            entry = by_id.get(image_id)
            if entry is None:
                if image_id in listed:
                    continue  # its image is missing or corrupt: reported once, with the image
                if orphans is not None:
                    why = f"image_id {image_id!r} is not among the file's images; dropped"
                    orphans["problems"].append(_problem(coco.path, ann_id, why))
                    orphans["rows_dropped"] += 1
                continue
            add_annotation(entry, ann, ann_id, index_of, coco.path)
        for entry in entries:
            if entry["labels"]:
                entry["status"] = "ok"
        return entries


def image_shape(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """`verify_image`, with a missing file said as such."""
    if not path.is_file():
        return None, "listed in the annotation file but missing"
    return verify_image(path)


def empty_entry(path: Path, image_id: Any) -> dict[str, Any]:
    """A checked entry (the fields of `checks.check_image_label`, plus `crowd` and `image_id`) with no
    label yet, `corrupt` until its image is found usable."""
    entry: dict[str, Any] = {"file": str(path), "status": "corrupt", "shape": None, "labels": [], "crowd": []}
    entry.update(image_id=image_id, problems=[], missing=False, empty=False, duplicates=0, rows_dropped=0)
    entry.update(rows_clipped=0, class_out_of_range=0)
    return entry


def _problem(file: Path, annotation: Any, text: str, where: str | None = None) -> dict[str, Any]:
    """A problem as the reports hold it; `where` (default `annotation id <id>`) opens the text."""
    if where is None and annotation is not None:
        where = f"annotation id {annotation}"
    return {"file": str(file), "line": None, "annotation": annotation, "problem": f"{where}: {text}" if where else text}


def add_annotation(
    entry: dict[str, Any], ann: dict[str, Any], ann_id: Any, index_of: dict, file: Path, where: str | None = None
) -> None:
    """Check one annotation (`bbox` [x, y, w, h] pixels, `category_id`, `iscrowd`) and add it to its
    image's entry as a normalized `[cls, cx, cy, w, h]` row (to `crowd` when `iscrowd` is 1), or report why
    it is dropped or clipped. `index_of` maps category ids to class indices."""

    def report(text: str, dropped: bool = True) -> None:
        entry["problems"].append(_problem(file, ann_id, text, where))
        entry["rows_dropped" if dropped else "rows_clipped"] += 1

    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        return report(f"bbox must be 4 finite numbers [x, y, w, h], got {box!r}; dropped")
    cat = ann.get("category_id")
    if cat not in index_of:
        entry["class_out_of_range"] += 1
        return report(f"category_id {cat!r} is not among the categories; dropped")
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        return report(f"zero or negative size (w={w:g}, h={h:g}); dropped")
    H, W = entry["shape"]
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
    if x2 <= x1 or y2 <= y1:
        return report(f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {W}x{H} image; dropped")
    tol = COORD_TOLERANCE * max(W, H)
    if x < -tol or y < -tol or x + w > W + tol or y + h > H + tol:
        report(f"box [{x:g}, {y:g}, {w:g}, {h:g}] extends outside the {W}x{H} image; clipped", dropped=False)
    row = [index_of[cat], (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H]
    entry["crowd" if ann.get("iscrowd", 0) == 1 else "labels"].append(row)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
