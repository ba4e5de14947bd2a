"""Hugging Face `datasets` as dataset splits (`pip install 'accelyolo[hf]'`).

The layout is the one of the transformers object-detection example: an `image` column and an `objects`
column holding per image `bbox` (a list of 4 numbers each), `category` (class indices, best a
`ClassLabel`, whose names become the class names) and optionally `id` and `iscrowd`. Box format `coco`
(`[x, y, w, h]`, the default) or `pascal_voc` (`[x1, y1, x2, y2]`), in pixels.

Where it is read from: a folder written by `save_to_disk` (a `Dataset` or a `DatasetDict`), or a local
folder that `datasets.load_dataset` reads (imagefolder with `metadata.jsonl`, parquet files). A folder
alone (`--data FOLDER`) trains on its `train` split and validates on `validation` (or `val`, `test`; the
`train` split when it has no other); a data.yaml picks the split and the box format:

```yaml
train: {dataset: FOLDER, split: train, bbox_format: pascal_voc}
val: {dataset: FOLDER, split: validation, bbox_format: pascal_voc}
```

Images: our loader decodes image files, so an image the dataset holds as a path to an existing file is
read there; one held as bytes (as `save_to_disk` and parquet store them) is written once, row by row, to a
file under `$ACCELYOLO_HOME/cache/hf/<the split's fingerprint>/` and read from there on (workers, RAM or
disk cache and mosaic as for any image file; nothing of the dataset is held in memory); the list of files
is kept there (`files.json`), so that a later load reads no image bytes. Boxes are checked
as COCO annotations are (`accelyolo.data.coco.add_annotation`); a problem names the row and the object.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from accelyolo.core.errors import DataError, MissingDependencyError
from accelyolo.core.fileio import write_text_atomically
from accelyolo.data.cache import cached_entries, home_dir
from accelyolo.data.coco import add_annotation, empty_entry, image_shape

BBOX_FORMATS = ("coco", "pascal_voc")
VAL_SPLIT_NAMES = ("validation", "val", "test")
HF_CACHE_VERSION = 1


def is_hf_folder(path: Path) -> bool:
    """A folder given as `--data` is read as a Hugging Face dataset."""
    return path.is_dir()


def import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise MissingDependencyError(
            "reading a Hugging Face dataset needs the 'datasets' package: pip install 'accelyolo[hf]'"
        ) from err
    return datasets


def load_splits(folder: Path) -> dict[str, Any]:
    """The splits of a saved or loadable dataset folder, by name (a lone `Dataset` is named `train`)."""
    datasets = import_datasets()
    try:
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(str(folder))
    except Exception as err:  # datasets raises many kinds for a folder it cannot read
        raise DataError(
            f"{folder}: not a dataset that datasets.load_from_disk or load_dataset reads "
            f"({type(err).__name__}: {' '.join(str(err).split())[:300]})"
        ) from err
    return {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)


class HfSource:
    """The labels and images of one split of a Hugging Face dataset (`sources.SplitImages.source`)."""

    def __init__(self, folder: Path, split: str, dataset: Any, bbox_format: str = "coco", names=None) -> None:
        self.where = f"{folder} (split '{split}')"
        if bbox_format not in BBOX_FORMATS:
            raise DataError(f"{self.where}: bbox_format {bbox_format!r}; expected one of {', '.join(BBOX_FORMATS)}")
        for column in ("image", "objects"):
            if column not in dataset.column_names:
                raise DataError(
                    f"{self.where}: column '{column}' missing (has {dataset.column_names}); expected 'image' and "
                    "'objects' with bbox and category, as in the transformers object-detection example"
                )
        self.folder, self.split, self.dataset, self.bbox_format = folder, split, dataset, bbox_format
        self.category_ids = None  # class indices are the dataset's own ids: predictions.json writes them
        label_names = class_label_names(dataset.features["objects"])
        if label_names is None and names is None:
            raise DataError(
                f"{self.where}: objects.category is not a ClassLabel, so the class names are unknown; "
                "give them as 'names:' in a data.yaml whose split is {dataset: FOLDER, split: NAME}"
            )
        self.names = list(label_names if label_names is not None else names)
        self.image_paths = self._image_files()

    def image_ids(self) -> dict[str, Any]:
        """Image file -> the row's `image_id` column (the file stem when there is none)."""
        if "image_id" not in self.dataset.column_names:
            return {}
        ids = self.dataset.select_columns(["image_id"])["image_id"]
        return {str(p): i for p, i in zip(self.image_paths, ids, strict=True)}

    def _image_files(self) -> list[Path]:
        """Each row's image as a file: its own path when it exists, else its bytes written once. The list is
        kept beside the written images (`files.json`), so that a later load reads no image bytes."""
        out_dir = home_dir() / "cache" / "hf" / self._fingerprint()
        index = out_dir / "files.json"
        try:
            files = [Path(p) for p in json.loads(index.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError):
            files = []
        if len(files) == len(self.dataset) and all(f.is_file() for f in files):
            return files
        files = self._write_image_files(out_dir)
        with contextlib.suppress(OSError):  # a read-only cache folder: the next load reads the images again
            index.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(index, json.dumps([str(f) for f in files]))
        return files

    def _write_image_files(self, out_dir: Path) -> list[Path]:
        datasets = import_datasets()
        raw = self.dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        files = []
        for i, row in enumerate(raw):
            image = row["image"] or {}
            path = image.get("path")
            if path and Path(path).is_file():
                files.append(Path(path).resolve())
                continue
            data = image.get("bytes")
            if not data:
                raise DataError(f"{self.where}: row {i} has no image (neither bytes nor an existing path {path!r})")
            files.append(_written(out_dir, i, data, path))
        return files

    def _fingerprint(self) -> str:
        fingerprint = getattr(self.dataset, "_fingerprint", None) or f"{self.folder}\0{self.split}"
        return hashlib.sha256(f"v{HF_CACHE_VERSION}\0{fingerprint}".encode()).hexdigest()[:20]

    def checked_entries(
        self, nc: int | None, fallback_dir: Path | None = None, workers: int = 4
    ) -> tuple[list[dict[str, Any]], Path | None, bool]:
        """One checked entry per row (cached under the split's fingerprint); see the module docstring."""

        def build() -> list[dict[str, Any]]:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                shapes = list(pool.map(image_shape, self.image_paths))
            return self._entries(shapes)

        key = f"{self._fingerprint()}\0{self.bbox_format}\0{len(self.names)}"
        cache = home_dir() / "cache" / "hf" / f"{self._fingerprint()}-{self.bbox_format}.accelyolo.json"
        return cached_entries(key, [cache], len(self.image_paths), build)

    def _entries(self, shapes: list) -> list[dict[str, Any]]:
        objects = self.dataset.select_columns(["objects"])
        index_of = {i: i for i in range(len(self.names))}
        entries = []
        for r, (path, (shape, problem), row) in enumerate(zip(self.image_paths, shapes, objects, strict=True)):
            entry = empty_entry(path, r)
            entries.append(entry)
            if problem:
                entry["problems"].append({"file": str(path), "line": None, "annotation": None,
                                          "problem": f"{self.where} row {r}: {problem}"})  # fmt: skip
                continue
            entry.update(shape=list(shape), status="background")
            for k, ann in enumerate(_objects(row["objects"])):
                if self.bbox_format == "pascal_voc" and _four(ann["bbox"]):
                    x1, y1, x2, y2 = ann["bbox"]
                    ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
                ann_id = ann.get("id", f"{r}/{k}")
                add_annotation(entry, ann, ann_id, index_of, path, where=f"{self.where} row {r} object {k}")
            if entry["labels"]:
                entry["status"] = "ok"
        return entries


def class_label_names(feature: Any) -> list[str] | None:
    """The names of `objects.category` when it is a ClassLabel (in a Sequence of dicts or a dict of lists)."""
    inner = getattr(feature, "feature", feature)  # Sequence({...}) (older datasets) or {...}
    if not isinstance(inner, dict) or "category" not in inner:
        return None
    category = inner["category"]
    category = getattr(category, "feature", category)  # List(ClassLabel) or ClassLabel
    names = getattr(category, "names", None)
    return list(names) if names else None


def _objects(objects: Any) -> list[dict[str, Any]]:
    """A row's objects as one dict per object (`bbox`, `category_id`, `iscrowd`, `id`), whether the column
    holds a dict of lists or a list of dicts."""
    if isinstance(objects, dict):
        n = len(objects.get("bbox") or [])
        rows = [{key: values[k] for key, values in objects.items() if isinstance(values, list) and len(values) == n}
                for k in range(n)]  # fmt: skip
    else:
        rows = [dict(o) for o in objects or []]
    for row in rows:
        row["category_id"] = row.pop("category", None)
    return rows


def _four(box: Any) -> bool:
    return isinstance(box, (list, tuple)) and len(box) == 4


def _written(folder: Path, index: int, data: bytes, name: str | None) -> Path:
    """Row `index`'s image bytes as a file in `folder`, written once: to a temporary name, then renamed.

    Not fsync'd (`fileio.replace_atomically` syncs twice per file, which made writing 1,000 small images
    take seconds on a busy disk): a file torn by a crash has another size than its bytes, and is written again.
    """
    suffix = Path(name).suffix.lower() if name else ""
    if not suffix:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                suffix = f".{(im.format or 'png').lower()}".replace(".jpeg", ".jpg")
        except Exception:  # a damaged image: written anyway, and reported by the image check
            suffix = ".img"
    path = folder / f"{index:07d}{suffix}"
    if not (path.is_file() and path.stat().st_size == len(data)):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path
