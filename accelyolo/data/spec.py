"""`data.yaml` as YOLO users write it, resolved into a `DataSpec` of image lists per split.

```yaml
path: ../datasets/coco128     # dataset root, relative to this yaml's folder (default: that folder)
train: images/train           # a folder, a .txt list of image paths, or a list of those
val: [images/val, extra.txt]
test: images/test             # optional
nc: 80                        # optional; must equal the number of names
names: [person, bicycle, ...] # or {0: person, 1: bicycle, ...}
```
Lines of a `.txt` list are relative to the `.txt` file's folder (absolute paths kept). Every error
names the yaml file and the key.

A split may instead name a COCO annotation file and the folder its `file_name`s are relative to
(default: the annotation file's folder); `names` then come from the file's categories (sorted by id):
```yaml
train: {annotations: annotations/instances_train.json, images: images/train}
val: {annotations: annotations/instances_val.json, images: images/val}
```
and a COCO file alone (`--data instances_val.json`) is a dataset whose `train` and `val` are that file.
A split may also be a split of a Hugging Face dataset (`{dataset: FOLDER, split: NAME, bbox_format:
coco|pascal_voc}`), and a dataset folder alone is `--data FOLDER`; see `accelyolo.data.hf`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accelyolo.core.config import yaml_problem
from accelyolo.core.errors import AccelyoloError
from accelyolo.data.checks import IMG_SUFFIXES
from accelyolo.data.sources import SplitImages

SPLIT_KEYS = ("train", "val", "test")


class DataConfigError(AccelyoloError, ValueError):
    """A data.yaml that cannot be used; the message names the file, the key and the expected form."""


@dataclass
class DataSpec:
    """A resolved data.yaml.

    Attributes:
        yaml_path: the data.yaml file.
        root: dataset root (`path` resolved against the yaml's folder).
        names: class names, index = class id.
        nc: number of classes (`len(names)`).
        splits: image files per split key present in the yaml (`train`, `val`, `test`).
    """

    yaml_path: Path
    root: Path
    names: list[str]
    nc: int
    splits: dict[str, list[Path]] = field(default_factory=dict)
    category_ids: list[int] | None = None  # the COCO category id of each class index (COCO splits)


def load_data_yaml(path: str | Path) -> DataSpec:
    """Read and validate a data.yaml; list the images of every split.

    Raises:
        DataConfigError: missing file, bad YAML, a missing/ill-formed key, nc not matching names,
            a split path that does not exist.
    """
    yaml_path = Path(path).expanduser().resolve()
    if yaml_path.suffix.lower() == ".json":
        return load_coco_file(yaml_path)
    if yaml_path.is_dir():
        return load_hf_folder(yaml_path)
    if not yaml_path.is_file():
        raise DataConfigError(f"{yaml_path}: data.yaml not found; pass the path of a data.yaml")
    try:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataConfigError(f"{yaml_path}: not valid YAML ({yaml_problem(err)})") from err
    if not isinstance(cfg, dict):
        raise DataConfigError(f"{yaml_path}: expected a mapping with keys path/train/val/names")
    root = _root(cfg, yaml_path)
    yaml_names = _names(cfg, yaml_path) if cfg.get("names") is not None or cfg.get("nc") is not None else None
    splits = {}
    for key in SPLIT_KEYS:
        if cfg.get(key) is not None:
            splits[key] = _split_images(cfg[key], root, yaml_path, key, yaml_names)
    if not splits:
        raise DataConfigError(f"{yaml_path}: no split; add `train:` and `val:` (folder or .txt list)")
    sources = {key: images.source for key, images in splits.items() if isinstance(images, SplitImages)}
    if not sources:
        names = _names(cfg, yaml_path)
        return DataSpec(yaml_path=yaml_path, root=root, names=names, nc=len(names), splits=splits)
    names, category_ids = _annotation_classes(cfg, yaml_path, sources)
    return DataSpec(yaml_path, root, names, len(names), splits, category_ids)


def load_coco_file(path: Path) -> DataSpec:
    """A COCO annotation file alone as a dataset: its images are both `train` and `val`."""
    from accelyolo.data.coco import CocoSource, read_coco

    source = CocoSource(read_coco(path))
    images = SplitImages(source.image_paths, source)
    if not images:
        raise DataConfigError(f"{path}: key 'images' is empty; the annotation file lists no image")
    _some_image_exists(images, path, "the annotation file's folder", "or write a data.yaml whose split is "
                       "{annotations: FILE.json, images: FOLDER}")  # fmt: skip
    names = source.names
    return DataSpec(path, path.parent, names, len(names), {"train": images, "val": images}, source.category_ids)


def load_hf_folder(folder: Path) -> DataSpec:
    """A Hugging Face dataset folder alone: `train` and the first of validation/val/test (else `train`)."""
    from accelyolo.data.hf import VAL_SPLIT_NAMES, HfSource, load_splits

    found = load_splits(folder)
    if "train" not in found:
        raise DataConfigError(
            f"{folder}: the dataset has no 'train' split (has {sorted(found)}); name the splits in a data.yaml: "
            "train: {dataset: FOLDER, split: NAME}"
        )
    val = next((name for name in VAL_SPLIT_NAMES if name in found), "train")
    sources = {name: HfSource(folder, name, found[name]) for name in {"train", val}}
    splits = {
        key: SplitImages(sources[name].image_paths, sources[name]) for key, name in (("train", "train"), ("val", val))
    }
    names = sources["train"].names
    if sources[val].names != names:
        raise DataConfigError(f"{folder}: the class names of split '{val}' differ from those of 'train'")
    return DataSpec(folder, folder, names, len(names), splits, None)


def _annotation_classes(
    cfg: dict[str, Any], yaml_path: Path, sources: dict[str, Any]
) -> tuple[list[str], list[int] | None]:
    """Names and category ids shared by every annotation-file split; a data.yaml's own `names` (optional)
    must agree with them."""
    first, source = next(iter(sources.items()))
    for key, other in sources.items():
        if (other.category_ids, other.names) != (source.category_ids, source.names):
            raise DataConfigError(
                f"{yaml_path}: the categories of '{key}' differ from those of '{first}' "
                f"({other.where} vs {source.where}); the splits must share one class list"
            )
    if cfg.get("names") is not None or cfg.get("nc") is not None:
        names = _names(cfg, yaml_path)
        if names != source.names:
            raise DataConfigError(
                f"{yaml_path}: key 'names' {names} differs from the categories of {source.where} "
                f"{source.names}; remove 'names' (they come from the annotation file) or make them equal"
            )
    ids = source.category_ids
    return list(source.names), (list(ids) if ids is not None else None)


def _root(cfg: dict[str, Any], yaml_path: Path) -> Path:
    raw = cfg.get("path")
    if raw is None:
        return yaml_path.parent
    if not isinstance(raw, str):
        raise DataConfigError(f"{yaml_path}: key 'path' must be a string (the dataset root)")
    root = Path(raw).expanduser()
    root = root if root.is_absolute() else (yaml_path.parent / root)
    root = root.resolve()
    if not root.is_dir():
        raise DataConfigError(
            f"{yaml_path}: key 'path' = {raw!r} -> {root} is not a folder "
            "(relative paths are resolved against the data.yaml's folder)"
        )
    return root


def _names(cfg: dict[str, Any], yaml_path: Path) -> list[str]:
    raw, nc = cfg.get("names"), cfg.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise DataConfigError(f"{yaml_path}: key 'nc' must be a positive integer, got {nc!r}")
    if raw is None:
        if nc is None:
            raise DataConfigError(f"{yaml_path}: key 'names' missing; give a list of class names")
        return [f"class{i}" for i in range(nc)]
    if isinstance(raw, dict):
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError) as err:
            raise DataConfigError(f"{yaml_path}: key 'names' as a mapping needs integer ids") from err
        if ids != list(range(len(ids))):
            raise DataConfigError(f"{yaml_path}: key 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        names = [str(raw.get(i, raw.get(str(i)))) for i in ids]
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise DataConfigError(f"{yaml_path}: key 'names' must be a list or {{id: name}} mapping")
    if not names:
        raise DataConfigError(f"{yaml_path}: key 'names' is empty")
    if nc is not None and nc != len(names):
        raise DataConfigError(
            f"{yaml_path}: key 'nc' = {nc} does not match the {len(names)} entries of 'names'; "
            "fix nc or names (nc is optional)"
        )
    return names


def _split_images(value: Any, root: Path, yaml_path: Path, key: str, names: list[str] | None = None) -> list[Path]:
    if isinstance(value, dict) and "dataset" in value:
        return _hf_split(value, root, yaml_path, key, names)
    if isinstance(value, dict):
        return _annotation_split(value, root, yaml_path, key)
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise DataConfigError(f"{yaml_path}: key '{key}' entries must be strings, got {entry!r}")
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMG_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            images += _read_list(p, yaml_path, key)
        else:
            raise DataConfigError(
                f"{yaml_path}: key '{key}' = {entry!r} -> {p} is neither a folder nor a .txt list "
                f"of images (relative to 'path' = {root})"
            )
    return images


def _annotation_split(value: dict[str, Any], root: Path, yaml_path: Path, key: str) -> SplitImages:
    """`{annotations: FILE.json, images: FOLDER}`: a COCO file, `images` (optional) the folder its
    `file_name`s are relative to; both relative to 'path'."""
    from accelyolo.data.coco import CocoSource, read_coco

    unknown = sorted(set(value) - {"annotations", "images"})
    if unknown or not isinstance(value.get("annotations"), str):
        raise DataConfigError(
            f"{yaml_path}: key '{key}' as a mapping must be {{annotations: FILE.json, images: FOLDER}}"
            + (f"; unknown key(s) {unknown}" if unknown else "; 'annotations' missing")
        )
    paths = {}
    for part in ("annotations", "images"):
        if value.get(part) is None:
            continue
        if not isinstance(value[part], str):
            raise DataConfigError(f"{yaml_path}: key '{key}.{part}' must be a string path, got {value[part]!r}")
        p = Path(value[part]).expanduser()
        paths[part] = (p if p.is_absolute() else root / p).resolve()
    if not paths["annotations"].is_file():
        raise DataConfigError(
            f"{yaml_path}: key '{key}.annotations' = {value['annotations']!r} -> {paths['annotations']} "
            f"is not a file (relative to 'path' = {root})"
        )
    if "images" in paths and not paths["images"].is_dir():
        raise DataConfigError(
            f"{yaml_path}: key '{key}.images' = {value['images']!r} -> {paths['images']} is not a folder "
            f"(relative to 'path' = {root})"
        )
    source = CocoSource(read_coco(paths["annotations"], paths.get("images")))
    images = SplitImages(source.image_paths, source)
    where = f"'{key}.images'" if "images" in paths else "the annotation file's folder"
    _some_image_exists(images, yaml_path, where, f"set '{key}.images' to the folder the file names start in")
    return images


def _hf_split(value: dict[str, Any], root: Path, yaml_path: Path, key: str, names: list[str] | None) -> SplitImages:
    """`{dataset: FOLDER, split: NAME, bbox_format: coco|pascal_voc}`: a split of a Hugging Face dataset."""
    from accelyolo.data.hf import BBOX_FORMATS, HfSource, load_splits

    unknown = sorted(set(value) - {"dataset", "split", "bbox_format"})
    fmt = value.get("bbox_format", "coco")
    if unknown or not isinstance(value["dataset"], str) or fmt not in BBOX_FORMATS:
        raise DataConfigError(
            f"{yaml_path}: key '{key}' must be {{dataset: FOLDER, split: NAME, bbox_format: coco|pascal_voc}}"
            + (f"; unknown key(s) {unknown}" if unknown else f"; got {value!r}")
        )
    folder = Path(value["dataset"]).expanduser()
    folder = (folder if folder.is_absolute() else root / folder).resolve()
    if not folder.is_dir():
        raise DataConfigError(f"{yaml_path}: key '{key}.dataset' = {value['dataset']!r} -> {folder} is not a folder")
    found = load_splits(folder)
    split = value.get("split", "train" if len(found) > 1 else next(iter(found)))
    if split not in found:
        raise DataConfigError(f"{yaml_path}: key '{key}.split' = {split!r}; the dataset {folder} has {sorted(found)}")
    source = HfSource(folder, split, found[split], fmt, names)
    return SplitImages(source.image_paths, source)


def _some_image_exists(images: list[Path], where_file: Path, folder: str, fix: str) -> None:
    """A split none of whose images exists is a wrong folder, not a dataset of missing files."""
    if images and not any(p.is_file() for p in images):
        raise DataConfigError(
            f"{where_file}: none of the {len(images)} images of the annotation file exists relative to {folder} "
            f"(first: {images[0]}); put the images there, {fix}"
        )


def _read_list(txt: Path, yaml_path: Path, key: str) -> list[Path]:
    out = []
    for line in txt.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        p = Path(line).expanduser()
        p = p if p.is_absolute() else (txt.parent / p)
        if p.suffix.lower() not in IMG_SUFFIXES:
            raise DataConfigError(
                f"{yaml_path}: key '{key}': {txt} lists {line!r}, not an image file ({', '.join(IMG_SUFFIXES)})"
            )
        out.append(Path(os.path.normpath(p)))
    return out
