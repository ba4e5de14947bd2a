"""Seconds to index a split (check every image, read every box) in each format: YOLO txt, COCO JSON, a
Hugging Face dataset saved with `save_to_disk`.

`python benchmarks/data_formats.py [--annotations 1000 10000] [--per-image 10]` writes, per size, small
JPEG images (`per-image` boxes each) in a temporary folder in all three formats, then times building the
checked entries with an empty cache ("cold": every image header read, labels parsed, the cache written)
and again with the cache ("warm"). For the HF dataset, "cold" includes `load_from_disk` and writing the
embedded images to files once; "warm" reuses both. Prints one line per format and size; last line
`load_s=` with the cold seconds of the largest size, YOLO/COCO/HF.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_sets(root: Path, n_images: int, per_image: int) -> dict[str, Path]:
    """The same images and boxes as YOLO txt (data.yaml), COCO JSON and a saved HF dataset."""
    rng = np.random.default_rng(0)
    images, labels = root / "images" / "train", root / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(3)]}
    rows = {"image": [], "objects": []}
    for i in range(n_images):
        path = images / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, quality=80)
        boxes = np.c_[rng.uniform(0, 40, (per_image, 2)), rng.uniform(4, 20, (per_image, 2))]  # x y w h pixels
        classes = rng.integers(0, 3, per_image)
        yolo = [(c, (x + w / 2) / 64, (y + h / 2) / 48, w / 64, h / 48) for c, (x, y, w, h) in zip(classes, boxes)]
        (labels / f"{i:06d}.txt").write_text(
            "".join(f"{c} {a:.6f} {b:.6f} {d:.6f} {e:.6f}\n" for c, a, b, d, e in yolo)
        )
        coco["images"].append({"id": i, "file_name": path.name, "width": 64, "height": 48})
        for c, box in zip(classes, boxes):
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": int(c) + 1,
                 "bbox": box.tolist(), "iscrowd": 0}
            )  # fmt: skip
        rows["image"].append(str(path))
        rows["objects"].append({"bbox": boxes.tolist(), "category": classes.tolist()})
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [c0, c1, c2]\n")
    (images / "instances.json").write_text(json.dumps(coco))
    out = {"yolo": root / "data.yaml", "coco": images / "instances.json"}
    try:
        import datasets
    except ImportError:
        return out
    features = datasets.Features({
        "image": datasets.Image(),
        "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                    "category": datasets.List(datasets.ClassLabel(names=["c0", "c1", "c2"]))},
    })  # fmt: skip
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(root / "hf"))
    out["hf"] = root / "hf"
    return out


def index_seconds(data: Path) -> float:
    from accelyolo.data.sources import checked_entries
    from accelyolo.data.spec import load_data_yaml

    t = time.perf_counter()
    spec = load_data_yaml(data)
    entries, _, _ = checked_entries(spec.splits["train"], spec.nc, spec.yaml_path.parent)
    assert sum(len(e["labels"]) for e in entries) > 0
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--annotations", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-image", type=int, default=10)
    args = parser.parse_args()
    cold = {}
    for n in args.annotations:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["ACCELYOLO_HOME"] = str(Path(tmp) / "home")  # caches of this run only
            sets = write_sets(Path(tmp), n // args.per_image, args.per_image)
            for fmt, data in sets.items():
                first, second = index_seconds(data), index_seconds(data)
                cold[fmt] = first
                images = n // args.per_image
                print(f"{fmt:5s} {n:6d} annotations ({images} images): cold {first:.2f} s, warm {second:.2f} s")
    print("load_s=" + "/".join(f"{cold[f]:.2f}" for f in ("yolo", "coco", "hf") if f in cold))


if __name__ == "__main__":
    main()
