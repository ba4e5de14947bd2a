"""Training quality against ultralytics: the same budget from scratch, both scored by pycocotools on one truth.

    python benchmarks/quality.py DATA_YAML [DATA_YAML ...] [--epochs 30] [--imgsz 320] [--batch 16]
        [--seeds 3] [--first-seed 0] [--model yolov8n] [--workers 2] [--close-mosaic 5] [--out DIR]
        [--checkpoints last|both] [--ours KEY=VALUE ...] [--no-peer | --no-ours]
    python benchmarks/quality.py --report DIR [DIR ...]

For each set, and each seed F..F+N-1 (F = `--first-seed`, 0 unless given), it trains ours (`accelyolo.fit`,
seed s) and, where `../peer-venv` and `../shared/peer` stand beside the checkout, ultralytics
(`peer_train.sh`, PEER_SEED=s) with the same epochs, image size, batch and close_mosaic. By default each side
is validated after its last epoch only and its last model (EMA weights) is scored, so that neither side is
chosen on the validation split; `--checkpoints both` validates both sides after every epoch and scores the
`best` checkpoint (the one a user takes home) as well as the `last`. Each scored model writes COCO predictions
of the val split at conf 0.001: ours through `accelyolo.validate(save_json=True)`, theirs through
`peer_val.py`.
Both files are scored by pycocotools against the same ground truth, built here from the split's YOLO
labels in original-image pixels; each side's `image_id` (the file stem, an int when it is all digits)
is mapped to that truth's ids. Every score is appended to `OUT/scores.jsonl` (set, side, seed, checkpoint,
options, metrics, training time), so a long comparison can run one seed or one side per call and
`--report DIR ...` prints the table of all of them.

The report: per-seed lines, then per set, side and checkpoint the mean and range over the seeds of AP50, AP75
and AP50-95, then per set the ratio ours / theirs of the mean AP50-95 (over the seeds both sides scored), and
as its last lines `quality_ratio_best=` (the geometric mean over the sets of that ratio, each side's `best`
checkpoint where it was scored, else its last), `quality_ratio_last=` (the same for the last checkpoints) and
`quality_ratio_min=` (the worst set's ratio, as in `quality_ratio_best`); `nan` without the peer. With
options of ours (`--ours`), the lines name them (`quality_ratio_best[optimizer=SGD]=`).
`--ours KEY=VALUE` sets a training option of our side only (e.g. `--ours optimizer=SGD` to compare a default
with another choice); `--no-peer` leaves ultralytics out, `--no-ours` trains the peer alone.
Data for it: `../shared/datasets/*/data.yaml` (real photographs) and `python benchmarks/varied_set.py OUT_DIR`.
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
SCORES_FILE = "scores.jsonl"


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
    checkpoint and the training's wall time (`best_*`: the same for its best checkpoint, when asked for)."""

    predictions_json: Path
    own_map: float
    last_checkpoint: Path
    seconds: float
    best_predictions_json: Path | None = None
    best_own_map: float | None = None


def _validate_ours(checkpoint: Path, args: argparse.Namespace, data: str, out: Path, name: str) -> tuple[Path, float]:
    """Validate one checkpoint of ours at conf 0.001, writing predictions.json; returns it and the mAP50-95."""
    from accelyolo.commands.validate import validate

    val = validate(
        str(checkpoint),
        data=data,
        imgsz=args.imgsz,
        batch_size=args.batch,
        conf_thres=0.001,
        workers=args.workers,
        save_json=True,
        plots=False,
        project=str(out),
        name=name,
        exist_ok=True,
        verbose=False,
    )
    if val.predictions_json is None:
        raise RuntimeError(f"{name}: accelyolo.validate wrote no predictions.json")
    return Path(val.predictions_json), float(val.metrics["mAP50-95"])


def train_and_validate(
    args: argparse.Namespace, data: str, out: Path, name: str, best: bool = False, **options: Any
) -> OursRun:
    """Train ours at the budget of `args` (epochs, imgsz, batch, workers, close_mosaic) with `options` on top
    (model, seed, teacher, ...), then validate the last epoch's EMA weights at conf 0.001 writing
    predictions.json. Without `best` the run validates after its last epoch only (nothing is chosen on the
    validation split); with it, after every epoch, and its best checkpoint is validated too."""
    from accelyolo.commands.fit import fit

    start = time.perf_counter()
    result = fit(
        **{
            "data": data,
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "batch_size": args.batch,
            "workers": args.workers,
            "close_mosaic": args.close_mosaic,
            "val_final_only": not best,
            "patience": 0,
            "plots": False,
            "project": str(out),
            "exist_ok": True,
            **options,
            "name": name,
        }
    )
    seconds = time.perf_counter() - start
    last_json, last_map = _validate_ours(Path(result.last_checkpoint), args, data, out, f"{name}-val")
    run = OursRun(last_json, last_map, Path(result.last_checkpoint), seconds)
    if best:
        if result.best_checkpoint is None:
            raise RuntimeError(f"{name}: the run saved no best checkpoint")
        run.best_predictions_json, run.best_own_map = _validate_ours(
            Path(result.best_checkpoint), args, data, out, f"{name}-val-best"
        )
    return run


@dataclass
class Scored:
    """A side's trained models of one seed, to be scored: checkpoint ('last' / 'best') -> (predictions.json,
    the side's own mAP50-95), and the training's wall time."""

    models: dict[str, tuple[Path, float]]
    seconds: float


def train_ours(args: argparse.Namespace, data: str, seed: int, out: Path) -> Scored:
    """Train and validate ours (the last checkpoint, and the best one with `--checkpoints both`)."""
    best = args.checkpoints == "both"
    run = train_and_validate(args, data, out, f"ours-seed{seed}", best=best, model=args.model, seed=seed, **args.ours)
    models = {"last": (run.predictions_json, run.own_map)}
    if run.best_predictions_json is not None:
        models["best"] = (run.best_predictions_json, float(run.best_own_map))
    return Scored(models, run.seconds)


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
    """A copy of the data.yaml whose `path` is a mirror of the set's folder under `out` (absolute: ultralytics
    reads a relative one in its own folder).

    ultralytics writes a label cache (`labels/train.cache`) beside the label folders it reads, and it resolves
    the split folders' links; so the mirror is made of real folders holding a link per file, and the cache
    lands under `out`, never in the user's data.
    """
    spec = load_data_yaml(data_yaml)
    cfg = yaml.safe_load(spec.yaml_path.read_text(encoding="utf-8"))
    root, mirror = Path(spec.root).resolve(), (out / "peer-data").resolve()
    for folder, _, files in os.walk(root):
        target = mirror / Path(folder).relative_to(root)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            link = target / name
            if not name.endswith(".cache") and not link.is_symlink():
                link.symlink_to(Path(folder) / name)
    cfg["path"] = str(mirror)
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


def _validate_peer(
    weights: Path, args: argparse.Namespace, data_yaml: Path, out: Path, env: dict[str, str]
) -> tuple[Path, float]:
    """`peer_val.py` on one checkpoint of the peer: its predictions.json (YOLO class ids) and own mAP50-95."""
    val_line = _last_line(
        [str(PEER_VENV / "bin" / "python"), str(PEER_DIR / "peer_val.py"), str(weights), str(data_yaml)]
        + [str(args.imgsz), str(out)],
        env,
        "PEER_VAL ",
        "peer validation",
    )
    head, _, json_path = val_line.partition(" json=")  # the path last: it may hold spaces
    fields = dict(item.split("=", 1) for item in head.split()[1:])
    if not json_path:  # ultralytics writes no predictions.json when its model detects nothing
        if float(fields["map50_95"]) > 0:
            raise RuntimeError(f"peer validation wrote no predictions.json: {val_line}")
        empty = out / "no-detections.json"
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.write_text("[]")
        print(f"  peer model {weights.name} detected nothing on the val split: scored as no predictions", flush=True)
        return empty, 0.0
    return Path(json_path), float(fields["map50_95"])


def train_peer(args: argparse.Namespace, seed: int, out: Path, data_yaml: Path) -> Scored:
    """Train ultralytics and validate its last checkpoint (and its best one with `--checkpoints both`)."""
    run_dir = out / f"peer-seed{seed}"
    env = dict(os.environ, PEER_SEED=str(seed), PEER_WORKERS=str(args.workers), PEER_VENV=str(PEER_VENV))
    env.setdefault("PEER_THREADS", "2")  # its best configuration on the 2-core machine (peer README)
    best = args.checkpoints == "both"
    start = time.perf_counter()
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
            f"val={best}",  # as ours: validated after the last epoch only, unless its best is scored too
        ],
        env,
        "PEER epochs=",
        "peer training",
    )
    seconds = time.perf_counter() - start
    print(f"  {train_line}", flush=True)
    weights = run_dir / "train" / "weights"
    models = {"last": _validate_peer(weights / "last.pt", args, data_yaml, run_dir / "val", env)}
    if best:
        models["best"] = _validate_peer(weights / "best.pt", args, data_yaml, run_dir / "val-best", env)
    return Scored(models, seconds)


def set_name(data_yaml: str | Path) -> str:
    """A set's name in the report: its data.yaml's folder (`../shared/datasets/cards/data.yaml` -> cards)."""
    path = Path(data_yaml)
    return path.parent.name if path.stem == "data" else path.stem


def side_label(record: dict[str, Any]) -> str:
    """'peer', 'ours', or ours with its options (`ours optimizer=SGD`)."""
    options = record.get("options") or {}
    if record["side"] != "ours" or not options:
        return record["side"]
    return "ours " + " ".join(f"{k}={v}" for k, v in sorted(options.items()))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _geometric_mean(values: list[float]) -> float:
    if not values or any(not v > 0 for v in values):
        return math.nan
    return math.exp(_mean([math.log(v) for v in values]))


def seed_line(r: dict[str, Any]) -> str:
    """One scored model: set, seed, side, checkpoint, the pycocotools metrics, its own evaluator, time."""
    return (
        f"{r['set']} seed {r['seed']} {side_label(r)} {r['checkpoint']}: "
        + " ".join(f"{key}={r[key]:.4f}" for key in METRICS)
        + f" (its own evaluator: mAP50-95={r['own_map']:.4f}; trained in {r['train_s']:.0f} s)"
    )


def report(records: list[dict[str, Any]]) -> str:
    """The per-seed lines, the table (set x side x checkpoint: mean [range] over seeds) and the ratio lines."""
    lines = [seed_line(r) for r in records]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["set"], side_label(r), r["checkpoint"]), []).append(r)
    lines += ["", "| set | side | checkpoint | seeds | " + " | ".join(f"{k} mean [range]" for k in METRICS) + " |"]
    lines.append("|---" * (4 + len(METRICS)) + "|")
    for (name, label, checkpoint), rows in sorted(groups.items()):
        cells = []
        for key in METRICS:
            values = [r[key] for r in rows]
            cells.append(f"{_mean(values):.4f} [{min(values):.4f}-{max(values):.4f}]")
        seeds = ",".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
        lines.append(f"| {name} | {label} | {checkpoint} | {seeds} | " + " | ".join(cells) + " |")

    def scored(name: str, label: str, checkpoint: str) -> list[dict[str, Any]]:
        """A side's scores of a checkpoint on a set; for 'best', the last where no best was scored."""
        rows = groups.get((name, label, checkpoint))
        if not rows and checkpoint == "best":
            rows = groups.get((name, label, "last"))
        return rows or []

    def paired_means(name: str, label: str, checkpoint: str) -> tuple[float, float] | None:
        """Mean AP50-95 of ours and of the peer over the seeds both sides scored (all of each side's seeds when
        they share none), so that an extra seed of one side does not move the ratio on its own."""
        ours, theirs = scored(name, label, checkpoint), scored(name, "peer", checkpoint)
        common = {r["seed"] for r in ours} & {r["seed"] for r in theirs}
        if common:
            ours, theirs = [r for r in ours if r["seed"] in common], [r for r in theirs if r["seed"] in common]
        if not ours or not theirs:
            return None
        return _mean([r["AP50-95"] for r in ours]), _mean([r["AP50-95"] for r in theirs])

    sets = sorted({r["set"] for r in records})
    ours_labels = sorted({side_label(r) for r in records if r["side"] == "ours"})
    lines.append("")
    for label in ours_labels:
        suffix = f"[{label.removeprefix('ours ')}]" if label != "ours" else ""  # with options: named
        ratios: dict[str, dict[str, float]] = {"best": {}, "last": {}}
        for name in sets:
            for kind, found in ratios.items():
                means = paired_means(name, label, kind)
                if means is not None:
                    found[name] = means[0] / means[1] if means[1] > 0 else math.nan
        for name, ratio in ratios["best"].items():
            lines.append(f"{name}: ours{suffix} / peer (AP50-95 mean, best checkpoints) = {ratio:.4f}")
        best = list(ratios["best"].values())
        lines.append(f"quality_ratio_best{suffix}={_geometric_mean(best):.4f}")
        lines.append(f"quality_ratio_last{suffix}={_geometric_mean(list(ratios['last'].values())):.4f}")
        lines.append(f"quality_ratio_min{suffix}={min(best) if best else math.nan:.4f}")
    return "\n".join(lines)


def read_scores(folders: list[str | Path]) -> list[dict[str, Any]]:
    """Every record of the `scores.jsonl` files in `folders` (each folder, or any folder below it)."""
    records = []
    for folder in folders:
        files = sorted(Path(folder).rglob(SCORES_FILE))
        if not files:
            raise FileNotFoundError(f"{folder}: no {SCORES_FILE} in it or below it")
        for path in files:
            records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return records


def run(args: argparse.Namespace, out: Path) -> int:
    missing = "--no-peer" if args.no_peer else peer_missing()
    if missing:
        print(f"peer skipped: {missing}", flush=True)
    sides = [side for side in ("ours", "peer") if not (side == "ours" and args.no_ours or side == "peer" and missing)]
    if not sides:
        print("nothing to train: --no-ours, and the peer is skipped", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for data in args.data:
        name = set_name(data)
        truth = ground_truth(data)
        set_out = out / name if len(args.data) > 1 else out
        peer_yaml = peer_data_yaml(data, set_out) if "peer" in sides else None
        print(
            f"{name}: {len(truth.coco['images'])} val images, {len(truth.coco['annotations'])} boxes; {args.model}, "
            f"{args.epochs} epochs at {args.imgsz} px, batch {args.batch}, close_mosaic {args.close_mosaic}"
            + "".join(f", {k}={v}" for k, v in args.ours.items()),
            flush=True,
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for side in sides:
                if side == "ours":
                    scored = train_ours(args, data, seed, set_out)
                else:
                    scored = train_peer(args, seed, set_out, peer_yaml)
                for checkpoint, (predictions_json, own) in scored.models.items():
                    scores = coco_scores(truth, json.loads(Path(predictions_json).read_text()))
                    record = {
                        "set": name,
                        "data": str(data),
                        "side": side,
                        "seed": seed,
                        "checkpoint": checkpoint,
                        "options": args.ours if side == "ours" else {},
                        **scores,
                        "own_map": own,
                        "train_s": scored.seconds,
                        "budget": dict(
                            epochs=args.epochs,
                            imgsz=args.imgsz,
                            batch=args.batch,
                            model=args.model,
                            close_mosaic=args.close_mosaic,
                            workers=args.workers,
                        ),  # fmt: skip
                    }
                    records.append(record)
                    with open(out / SCORES_FILE, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    print(seed_line(record), flush=True)
    print(report(records))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help="data.yaml of each set")
    parser.add_argument("--report", nargs="+", metavar="DIR", help="print the report of earlier runs' --out folders")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3, help="seeds F..F+N-1, one training per side each")
    parser.add_argument("--first-seed", type=int, default=0, help="F: the first seed (to run seeds one call at a time)")
    parser.add_argument("--model", default="yolov8n", help="a model both tools know (ultralytics reads MODEL.yaml)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--close-mosaic", type=int, default=5)
    parser.add_argument(
        "--checkpoints",
        choices=("last", "both"),
        default="last",
        help="score the last models only, or (validating every epoch) the best ones as well",
    )
    parser.add_argument("--out", default=None, help="keep the runs and scores.jsonl here (default: a temporary folder)")
    parser.add_argument(
        "--ours",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training option of our side only (repeatable), e.g. --ours optimizer=SGD",
    )
    sides = parser.add_mutually_exclusive_group()
    sides.add_argument("--no-peer", action="store_true", help="our side only")
    sides.add_argument("--no-ours", action="store_true", help="the peer only")
    args = parser.parse_args(argv)
    if args.report:
        try:
            print(report(read_scores(args.report)))
        except (FileNotFoundError, KeyError, ValueError) as error:
            print(f"--report: {error}", file=sys.stderr)
            return 2
        return 0
    if not args.data:
        print("name at least one data.yaml (or --report DIR)", file=sys.stderr)
        return 2
    try:
        args.ours = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.ours)}
    except ValueError:
        print(f"--ours takes KEY=VALUE, got {args.ours}", file=sys.stderr)
        return 2
    for data in args.data:
        if not Path(data).is_file():
            print(f"data.yaml '{data}' not found; make one with benchmarks/varied_set.py", file=sys.stderr)
            return 2
    if args.seeds < 1 or args.first_seed < 0:
        print("--seeds must be at least 1 and --first-seed at least 0", file=sys.stderr)
        return 2
    args.data = [str(Path(data).resolve()) for data in args.data]
    if args.out:
        return run(args, Path(args.out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
