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
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accelyolo.config import yaml_problem
from accelyolo.data.checks import IMG_SUFFIXES
from accelyolo.errors import AccelyoloError

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


def load_data_yaml(path: str | Path) -> DataSpec:
    """Read and validate a data.yaml; list the images of every split.

    Raises:
        DataConfigError: missing file, bad YAML, a missing/ill-formed key, nc not matching names,
            a split path that does not exist.
    """
    yaml_path = Path(path).expanduser().resolve()
    if not yaml_path.is_file():
        raise DataConfigError(f"{yaml_path}: data.yaml not found; pass the path of a data.yaml")
    try:
        cfg = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataConfigError(f"{yaml_path}: not valid YAML ({yaml_problem(err)})") from err
    if not isinstance(cfg, dict):
        raise DataConfigError(f"{yaml_path}: expected a mapping with keys path/train/val/names")
    root = _root(cfg, yaml_path)
    names = _names(cfg, yaml_path)
    splits = {}
    for key in SPLIT_KEYS:
        if cfg.get(key) is not None:
            splits[key] = _split_images(cfg[key], root, yaml_path, key)
    if not splits:
        raise DataConfigError(f"{yaml_path}: no split; add `train:` and `val:` (folder or .txt list)")
    return DataSpec(yaml_path=yaml_path, root=root, names=names, nc=len(names), splits=splits)


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


def _split_images(value: Any, root: Path, yaml_path: Path, key: str) -> list[Path]:
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
