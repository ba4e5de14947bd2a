"""Training quality against ultralytics: the same budget from scratch, both scored by pycocotools on one truth.

    python benchmarks/quality.py DATA_YAML [--epochs 30] [--imgsz 320] [--batch 16] [--seeds 3]
        [--first-seed 0] [--model yolov8n] [--workers 2] [--close-mosaic 5] [--out DIR]
        [--ours KEY=VALUE ...] [--no-peer]

For each seed F..F+N-1 (F = `--first-seed`, 0 unless given) it trains ours (`accelyolo.fit`, seed s) and,
where `../peer-venv` and `../shared/peer` stand beside the checkout, ultralytics (`peer_train.sh`,
PEER_SEED=s) with the same epochs, image size, batch and close_mosaic. Each final model (EMA weights of the
last epoch, not the best one, so that neither side is chosen on the validation split) writes COCO predictions
of the val split at conf 0.001: ours through `accelyolo.validate(save_json=True)`, theirs through
`peer_val.py`.
Both files are scored by pycocotools against the same ground truth, built here from the split's YOLO
labels in original-image pixels; each side's `image_id` (the file stem, an int when it is all digits)
is mapped to that truth's ids. Prints per-seed lines, the mean and range over the seeds of AP50, AP75
and AP50-95 for each side, and as its last line `quality_ratio=<ours AP50-95 / theirs>` (`nan`
without the peer). The runs go to a temporary folder unless `--out` names one (then they stay).
`--ours KEY=VALUE` sets a training option of our side only (e.g. `--ours optimizer=SGD` to compare a default
with another choice), `--no-peer` leaves ultralytics out.
Data for it: `python benchmarks/varied_set.py OUT_DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from accelyolo.data import load_data_yaml
from accelyolo.data.checks import check_image_label

CHECKOUT = Path(__file__).resolve().parents[1]
PEER_DIR = CHECKOUT.parent / "shared" / "peer"
PEER_VENV = Path(os.environ.get("PEER_VENV", CHECKOUT.parent / "peer-venv"))
METRICS = ("AP50", "AP75", "AP50-95")


@dataclass
class GroundTruth:
    """A split's labels as a COCO dataset, and the key of each image (its stem) -> its COCO id."""

    coco: dict[str, Any]
    ids: dict[str, int]


def ground_truth(data_yaml: str | Path, split: str = "val") -> GroundTruth:
    """COCO ground truth of one split from its YOLO labels, boxes in original-image pixels.

    Labels are read with the package's own checks (rows dropped or clipped as training sees them);
    unreadable images are left out, images without boxes stay (their detections are false positives).
    Image ids are 1, 2, ... in file order; both a stem and, for an all-digit stem, its integer value
    are keys of `ids`, as either tool may write that stem as an int.
    """
    spec = load_data_yaml(data_yaml)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(spec.nc)]}
    ids: dict[str, int] = {}
    for image in spec.splits.get(split, []):
        entry = check_image_label(image, spec.nc)
        if entry["shape"] is None:
            continue
        stem = image.stem
        if stem in ids:
            raise ValueError(f"{spec.yaml_path}: two '{split}' images named '{stem}'; COCO ids need unique stems")
        image_id = len(coco["images"]) + 1
        ids[stem] = image_id
        if stem.isascii() and stem.isdigit():
            ids[str(int(stem))] = image_id
        height, width = entry["shape"]
        coco["images"].append({"id": image_id, "file_name": image.name, "height": height, "width": width})
        for cls, cx, cy, w, h in entry["labels"]:
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,  # COCOeval reads id 0 as "unmatched"
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    if not coco["images"]:
        raise ValueError(f"{spec.yaml_path}: the '{split}' split has no readable images")
    return GroundTruth(coco=coco, ids=ids)


def with_truth_ids(predictions: list[dict[str, Any]], truth: GroundTruth) -> list[dict[str, Any]]:
    """The predictions with each `image_id` (a stem, or its int) replaced by the ground truth's id."""
    out = []
    for record in predictions:
        key = str(record["image_id"])
        if key not in truth.ids:
            raise ValueError(f"a prediction names image '{key}', which is not an image of the ground truth")
        out.append({**record, "image_id": truth.ids[key]})
    return out


def coco_scores(truth: GroundTruth, predictions: list[dict[str, Any]]) -> dict[str, float]:
    """AP50, AP75 and AP50-95 of predictions (the tools' image ids) by pycocotools' COCOeval."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise SystemExit("pycocotools is needed: pip install -e '.[test]'") from error
    if not predictions:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(truth.coco))  # COCO keeps and indexes the dict it is given
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(with_truth_ids(predictions, truth))
        evaluation = COCOeval(coco_gt, coco_dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ap, ap50, ap75 = (max(float(v), 0.0) for v in evaluation.stats[:3])  # -1 = no ground truth at all
    return {"AP50": ap50, "AP75": ap75, "AP50-95": ap}


@dataclass
class OursRun:
    """One training of ours, validated: its predictions.json, its own evaluator's mAP50-95, its last
    checkpoint and the training's wall time."""

    predictions_json: Path
    own_map: float
    last_checkpoint: Path
    seconds: float


def train_and_validate(args: argparse.Namespace, data: str, out: Path, name: str, **options: Any) -> OursRun:
    """Train ours at the budget of `args` (epochs, imgsz, batch, workers, close_mosaic; validated after the
    last epoch only) with `options` on top (model, seed, teacher, ...), then validate the last epoch's EMA
    weights at conf 0.001 writing predictions.json (nothing is chosen on the validation split)."""
    from accelyolo.engine import fit
    from accelyolo.validation import validate

    start = time.perf_counter()
    result = fit(
        **{
            "data": data,
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "batch_size": args.batch,
            "workers": args.workers,
            "close_mosaic": args.close_mosaic,
            "val_final_only": True,
            "patience": 0,
            "plots": False,
            "project": str(out),
            "exist_ok": True,
            **options,
            "name": name,
        }
    )
    seconds = time.perf_counter() - start
    val = validate(
        str(result.last_checkpoint),
        data=data,
        imgsz=args.imgsz,
        batch_size=args.batch,
        conf=0.001,
        workers=args.workers,
        save_json=True,
        plots=False,
        project=str(out),
        name=f"{name}-val",
        exist_ok=True,
        verbose=False,
    )
    if val.predictions_json is None:
        raise RuntimeError(f"{name}: accelyolo.validate wrote no predictions.json")
    return OursRun(Path(val.predictions_json), float(val.metrics["mAP50-95"]), Path(result.last_checkpoint), seconds)


def train_ours(args: argparse.Namespace, seed: int, out: Path) -> tuple[Path, float]:
    """Train and validate ours; returns its predictions.json and its own evaluator's mAP50-95."""
    run = train_and_validate(args, args.data, out, f"ours-seed{seed}", model=args.model, seed=seed, **args.ours)
    return run.predictions_json, run.own_map


def peer_missing() -> str | None:
    """Why the peer cannot run here, or None."""
    for path, what in (
        (PEER_VENV / "bin" / "python", "the peer venv"),
        (PEER_DIR / "peer_train.sh", "the peer scripts"),
    ):
        if not path.is_file():
            return f"{what} ({path}) is absent"
    return None


def peer_data_yaml(data_yaml: str | Path, out: Path) -> Path:
    """A copy of the data.yaml with an absolute `path` (ultralytics reads a relative one in its own folder)."""
    spec = load_data_yaml(data_yaml)
    cfg = yaml.safe_load(spec.yaml_path.read_text(encoding="utf-8"))
    cfg["path"] = str(spec.root)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "peer-data.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def _last_line(command: list[str], env: dict[str, str], prefix: str, what: str) -> str:
    """Run a peer script; its last output line that starts with `prefix` (the script's output on failure)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(prefix)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"{what} failed (exit status {done.returncode}): {' '.join(command)}")
    return lines[-1]


def train_peer(args: argparse.Namespace, seed: int, out: Path, data_yaml: Path) -> tuple[Path, float]:
    """Train and validate ultralytics; returns its predictions.json (YOLO class ids) and its own mAP50-95."""
    run_dir = out / f"peer-seed{seed}"
    env = dict(os.environ, PEER_SEED=str(seed), PEER_WORKERS=str(args.workers), PEER_VENV=str(PEER_VENV))
    env.setdefault("PEER_THREADS", "2")  # its best configuration on the 2-core machine (peer README)
    train_line = _last_line(
        [
            "bash",
            str(PEER_DIR / "peer_train.sh"),
            str(data_yaml),
            f"{args.model}.yaml",
            str(args.epochs),
            str(args.imgsz),
            str(args.batch),
            str(run_dir),
            f"close_mosaic={args.close_mosaic}",  # 8.4 closes at epoch >= epochs - N, as ours
            "val=False",  # as ours: validated after the last epoch only
        ],
        env,
        "PEER epochs=",
        "peer training",
    )
    print(f"  {train_line}", flush=True)
    weights = run_dir / "train" / "weights" / "last.pt"
    val_line = _last_line(
        [str(PEER_VENV / "bin" / "python"), str(PEER_DIR / "peer_val.py"), str(weights), str(data_yaml)]
        + [str(args.imgsz), str(run_dir / "val")],
        env,
        "PEER_VAL ",
        "peer validation",
    )
    head, _, json_path = val_line.partition(" json=")  # the path last: it may hold spaces
    fields = dict(item.split("=", 1) for item in head.split()[1:])
    if not json_path:  # ultralytics writes no predictions.json when its model detects nothing
        if float(fields["map50_95"]) > 0:
            raise RuntimeError(f"peer validation wrote no predictions.json: {val_line}")
        empty = run_dir / "val" / "no-detections.json"
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.write_text("[]")
        print("  peer model detected nothing on the val split: scored as no predictions", flush=True)
        return empty, 0.0
    return Path(json_path), float(fields["map50_95"])


def summary(label: str, scores: list[dict[str, float]]) -> str:
    """Mean and [min-max] over the seeds of each metric."""
    parts = []
    for key in METRICS:
        values = [s[key] for s in scores]
        parts.append(f"{key}={sum(values) / len(values):.4f} [{min(values):.4f}-{max(values):.4f}]")
    return f"{label:5s} mean over {len(scores)} seed(s): " + " ".join(parts)


def per_seed(label: str, seed: int, scores: dict[str, float], own: float) -> str:
    text = " ".join(f"{key}={scores[key]:.4f}" for key in METRICS)
    return f"seed {seed} {label:5s} {text} (its own evaluator: mAP50-95={own:.4f})"


def run(args: argparse.Namespace, out: Path) -> int:
    truth = ground_truth(args.data)
    missing = "--no-peer" if args.no_peer else peer_missing()
    if missing:
        print(f"peer skipped: {missing}", flush=True)
    peer_yaml = None if missing else peer_data_yaml(args.data, out)
    results: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
    lines = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for label in ("ours",) if peer_yaml is None else ("ours", "peer"):
            if label == "ours":
                predictions_json, own = train_ours(args, seed, out)
            else:
                predictions_json, own = train_peer(args, seed, out, peer_yaml)
            scores = coco_scores(truth, json.loads(Path(predictions_json).read_text()))
            results[label].append(scores)
            lines.append(per_seed(label, seed, scores, own))
            print(lines[-1], flush=True)
    print(
        f"{args.model}, {args.epochs} epochs at {args.imgsz} px, batch {args.batch}, close_mosaic {args.close_mosaic}"
        + "".join(f", {k}={v}" for k, v in args.ours.items())
    )
    print(f"val split: {len(truth.coco['images'])} images, {len(truth.coco['annotations'])} boxes (pycocotools)")
    print("\n".join(lines))
    for label, scores in results.items():
        if scores:
            print(summary(label, scores))
    ratio = math.nan
    if results["peer"]:
        ours, theirs = (sum(s["AP50-95"] for s in results[k]) / len(results[k]) for k in ("ours", "peer"))
        ratio = ours / theirs if theirs > 0 else math.nan
    print(f"quality_ratio={ratio:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3, help="seeds F..F+N-1, one training per side each")
    parser.add_argument("--first-seed", type=int, default=0, help="F: the first seed (to run seeds one call at a time)")
    parser.add_argument("--model", default="yolov8n", help="a model both tools know (ultralytics reads MODEL.yaml)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--close-mosaic", type=int, default=5)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                        help="a training option of our side only (repeatable), e.g. --ours optimizer=SGD")
    parser.add_argument("--no-peer", action="store_true", help="our side only")
    args = parser.parse_args(argv)
    try:
        args.ours = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.ours)}
    except ValueError:
        print(f"--ours takes KEY=VALUE, got {args.ours}", file=sys.stderr)
        return 2
    if not Path(args.data).is_file():
        print(f"data.yaml '{args.data}' not found; make one with benchmarks/varied_set.py", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.first_seed < 0:
        print("--seeds must be at least 1 and --first-seed at least 0", file=sys.stderr)
        return 2
    args.data = str(Path(args.data).resolve())
    if args.out:
        return run(args, Path(args.out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
