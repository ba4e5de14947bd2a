"""`accelyolo data convert SRC --to yolo|coco OUT`: write a dataset in the other format.

SRC is anything `--data` takes (a data.yaml with YOLO or COCO splits, a COCO `.json` alone). OUT must be
a new or empty folder; it gets `images/<split>/` (hard links to the source images where the filesystem
allows, copies otherwise), the labels, and a `data.yaml` that trains on them:

- `--to yolo`: `labels/<split>/<stem>.txt` (where the reader looks, `checks.img2label_path`), rows
  `cls cx cy w h` (10 significant digits). YOLO has no crowd regions: COCO `iscrowd: 1` annotations are
  left out, and counted in the summary.
- `--to coco`: `annotations/instances_<split>.json` with pixel `[x, y, w, h]` boxes, `area = w * h`,
  `iscrowd` 0 (1 for crowd regions), the source's category and image ids where it has them (else
  category id = class index + 1, image id = 1, 2, ... in file order).

Labels go through the same checks as training (`sources.checked_entries`): what training would drop is
not written, and the summary says how much. YOLO -> COCO -> YOLO gives the same rows back to 1e-6.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from accelyolo.core.errors import DataError, exit_status
from accelyolo.data.checks import img2label_path
from accelyolo.data.sources import checked_entries, source_of
from accelyolo.data.spec import DataConfigError, DataSpec, load_data_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `data convert` options to `parser`."""
    parser.add_argument("source", metavar="SRC", help="data.yaml or COCO .json of the dataset to convert")
    parser.add_argument("--to", required=True, choices=("yolo", "coco"), help="the format to write")
    parser.add_argument("out", metavar="OUT", help="a new or empty folder for the converted dataset")


def convert(source: str | Path, to: str, out: str | Path) -> dict[str, Any]:
    """Convert dataset `source` into format `to` ("yolo" or "coco") under `out`; returns the summary:
    `{"data": out/data.yaml, "splits": {split: {"images", "boxes", "crowd", "skipped_images"}}}`."""
    if to not in ("yolo", "coco"):
        raise DataError(f"data convert: --to {to!r}; expected yolo or coco")
    spec = load_data_yaml(source)
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: the output folder exists and is not empty; choose a new folder")
    yaml_splits: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    written: dict[int, str] = {}  # id of a split's image list -> the folder it was written to (a lone .json)
    for split, images in spec.splits.items():
        if id(images) in written:
            yaml_splits[split] = yaml_splits[written[id(images)]]
            continue
        written[id(images)] = split
        entries, _, _ = checked_entries(images, spec.nc, spec.yaml_path.parent)
        usable = [e for e in entries if e["status"] != "corrupt"]
        if not usable:
            raise DataError(f"{spec.yaml_path}: split '{split}' has no usable image; run `accelyolo data check`")
        targets = _place_images(usable, out / "images" / split)
        if to == "yolo":
            _write_yolo_labels(usable, targets)
            yaml_splits[split] = f"images/{split}"
        else:
            annotations = out / "annotations" / f"instances_{split}.json"
            _write_coco(spec, images, usable, targets, out / "images" / split, annotations)
            yaml_splits[split] = {"annotations": f"annotations/{annotations.name}", "images": f"images/{split}"}
        summary[split] = {
            "images": len(usable),
            "boxes": sum(len(e["labels"]) for e in usable),
            "crowd": sum(len(e.get("crowd", ())) for e in usable),
            "skipped_images": len(entries) - len(usable),
        }
    data_yaml = out / "data.yaml"
    _write_data_yaml(data_yaml, yaml_splits, spec.names if to == "yolo" else None)
    return {"data": str(data_yaml), "splits": summary}


def _place_images(entries: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Hard-link (else copy) each entry's image under `folder`, keeping paths relative to their common
    folder; returns the new paths."""
    files = [Path(e["file"]) for e in entries]
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    targets = [folder / f.relative_to(root) for f in files]
    for src, dst in zip(files, targets, strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return targets


def _write_yolo_labels(entries: list[dict[str, Any]], images: list[Path]) -> None:
    """Each entry's rows into the label file the YOLO reader looks for beside its (new) image."""
    for entry, image in zip(entries, images, strict=True):
        label = img2label_path(image)
        label.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{int(r[0])} " + " ".join(f"{v:.10g}" for v in r[1:]) for r in entry["labels"]]
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_coco(
    spec: DataSpec, split_images: list[Path], entries: list[dict[str, Any]], images: list[Path], folder: Path,
    path: Path,
) -> None:  # fmt: skip
    source = source_of(split_images)
    category_ids = spec.category_ids or [i + 1 for i in range(spec.nc)]
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": cid, "name": name} for cid, name in zip(category_ids, spec.names, strict=True)],
    }
    for n, (entry, image) in enumerate(zip(entries, images, strict=True), 1):
        h, w = entry["shape"]
        image_id = entry.get("image_id", n) if source is not None else n
        coco["images"].append(
            {"id": image_id, "file_name": image.relative_to(folder).as_posix(), "width": w, "height": h}
        )
        for crowd, rows in ((0, entry["labels"]), (1, entry.get("crowd", []))):
            for cls, cx, cy, bw, bh in rows:
                box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": category_ids[int(cls)],
                    "bbox": box, "area": box[2] * box[3], "iscrowd": crowd,
                })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco), encoding="utf-8")


def _write_data_yaml(path: Path, splits: dict[str, Any], names: list[str] | None) -> None:
    import yaml

    data: dict[str, Any] = {"path": ".", **splits}
    if names is not None:  # a COCO dataset's names come from its categories
        data["names"] = list(names)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Convert for parsed arguments; prints one line per split and returns the exit status."""
    try:
        result = convert(args.source, args.to, args.out)
    except (DataError, DataConfigError) as err:
        return exit_status("accelyolo data convert", err)
    for split, s in result["splits"].items():
        dropped = f", {s['crowd']} crowd regions left out (YOLO has none)" if args.to == "yolo" and s["crowd"] else ""
        skipped = f", {s['skipped_images']} unusable images skipped" if s["skipped_images"] else ""
        print(f"{split}: {s['images']} images, {s['boxes']} boxes{dropped}{skipped}")
    print(f"wrote {result['data']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m accelyolo.data.convert SRC --to yolo|coco OUT`."""
    parser = argparse.ArgumentParser(prog="accelyolo data convert", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
