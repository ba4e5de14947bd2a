"""What a teacher adds: the nano student with and without distillation, same budget, seeds, real data sets.

    python benchmarks/distill.py [DATA_YAML ...] [--teachers larger self other] [--seeds 3] [--epochs 30]
        [--imgsz 320] [--batch 16] [--workers 2] [--close-mosaic 5] [--student yolov8n] [--larger yolov8s]
        [--other yolo11n] [--distill-feat] [--distill-weight 1] [--temperature 20] [--out DIR]

Without DATA_YAML: the real photograph sets in `../shared/datasets` (aquarium, cards, licenseplates). Per set,
each teacher is trained first (seed 0, the same budget as the students) and its training time measured:

- `larger`: `--larger` (yolov8s), the usual teacher;
- `self`: the student's own architecture (YOLOv6's self-distillation: a teacher of the same size);
- `other`: `--other` (yolo11n), the other anchor-free family.

Then, for each seed 0..N-1, the student from scratch alone and with each teacher: every option shared
except the teacher. Every final model (EMA weights of the last epoch, not the best: nothing is chosen on the
validation split) is scored by pycocotools against one ground truth built from the split's YOLO labels in
original-image pixels (`benchmarks/quality.py`). Prints a line per run, then per set and teacher the mean
and range over the seeds of the student alone, the student distilled and the gain, beside the teacher's own
AP50-95 and training time; the last line is `distill_gain=<mean gain over sets and teachers>` (AP50-95,
negative when the teachers hurt). The runs go to a temporary folder unless `--out` keeps them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from benchmarks.quality import coco_scores, ground_truth, train_and_validate  # noqa: E402

SETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_SETS = ("aquarium", "cards", "licenseplates")
TEACHERS = ("larger", "self", "other")


@dataclass
class SetResult:
    """One data set's figures: per teacher kind its own score and time, and per seed each student's."""

    name: str
    teacher: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (AP50-95, seconds)
    alone: list[float] = field(default_factory=list)  # by seed
    distilled: dict[str, list[float]] = field(default_factory=dict)  # kind -> by seed


def train_and_score(
    args: argparse.Namespace, data: str, truth: Any, out: Path, name: str, **options: Any
) -> tuple[float, float, Path]:
    """One model at the shared budget (`quality.train_and_validate`), scored by pycocotools:
    (AP50-95, training seconds, last checkpoint)."""
    run = train_and_validate(args, data, out, name, **{"model": args.student, **options})
    score = coco_scores(truth, json.loads(run.predictions_json.read_text()))["AP50-95"]
    return score, run.seconds, run.last_checkpoint


def run_set(args: argparse.Namespace, data: str, out: Path) -> SetResult:
    name = Path(data).resolve().parent.name
    truth = ground_truth(data)
    result = SetResult(name)
    models = {"larger": args.larger, "self": args.student, "other": args.other}
    weights = {}
    for kind in args.teachers:
        score, seconds, weights[kind] = train_and_score(
            args, data, truth, out / name, f"teacher-{kind}", model=models[kind], seed=0
        )
        result.teacher[kind] = (score, seconds)
        print(f"{name} teacher {kind} ({models[kind]}): AP50-95={score:.4f}, trained in {seconds:.0f} s", flush=True)
    distill = dict(distill_feat=args.distill_feat, distill_weight=args.distill_weight, temperature=args.temperature)
    for seed in range(args.seeds):
        score, _, _ = train_and_score(args, data, truth, out / name, f"alone-seed{seed}", seed=seed)
        result.alone.append(score)
        print(f"{name} seed {seed} alone: AP50-95={score:.4f}", flush=True)
        for kind in args.teachers:
            score, _, _ = train_and_score(
                args, data, truth, out / name, f"{kind}-seed{seed}", seed=seed, teacher=str(weights[kind]), **distill
            )
            result.distilled.setdefault(kind, []).append(score)
            print(f"{name} seed {seed} with {kind}: AP50-95={score:.4f}", flush=True)
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} [{min(values):.4f}-{max(values):.4f}]"


def report(args: argparse.Namespace, results: list[SetResult]) -> float:
    """The table (markdown) and the mean gain over sets and teachers."""
    print(
        f"student {args.student} from scratch, {args.epochs} epochs at {args.imgsz} px, batch {args.batch}, "
        f"close_mosaic {args.close_mosaic}, seeds 0..{args.seeds - 1}; distill_weight {args.distill_weight}, "
        f"temperature {args.temperature}, feature term {'on' if args.distill_feat else 'off'}; AP50-95 by pycocotools"
    )
    print("| set | teacher | teacher AP50-95 | teacher s | student alone | student distilled | gain (range) |")
    print("|---|---|---|---|---|---|---|")
    gains = []
    for r in results:
        for kind, scores in r.distilled.items():
            per_seed = [d - a for d, a in zip(scores, r.alone)]
            gains.append(statistics.mean(per_seed))
            t_score, t_seconds = r.teacher[kind]
            print(
                f"| {r.name} | {kind} | {t_score:.4f} | {t_seconds:.0f} | {spread(r.alone)} | {spread(scores)} | "
                f"{statistics.mean(per_seed):+.4f} [{min(per_seed):+.4f}..{max(per_seed):+.4f}] |"
            )
    return statistics.mean(gains) if gains else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help="data.yaml files (default: the real sets in ../shared/datasets)")
    parser.add_argument("--teachers", nargs="+", choices=TEACHERS, default=list(TEACHERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--close-mosaic", type=int, default=5)
    parser.add_argument("--student", default="yolov8n")
    parser.add_argument("--larger", default="yolov8s", help="the 'larger' teacher")
    parser.add_argument("--other", default="yolo11n", help="the 'other' teacher: the other anchor-free family")
    parser.add_argument("--distill-feat", action="store_true")
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    sets = args.data or [str(SETS / name / "data.yaml") for name in DEFAULT_SETS]
    missing = [path for path in sets if not Path(path).is_file()]
    if missing:
        print(f"data.yaml not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("--seeds must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out).resolve() if args.out else Path(tmp)
        results = [run_set(args, str(Path(path).resolve()), out) for path in sets]
    print(f"distill_gain={report(args, results):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
