"""What a teacher adds: the nano student with and without distillation, same budget, seeds, real data sets.

    python benchmarks/distill.py [DATA_YAML ...] [--teachers larger self other] [--seeds 3] [--first-seed 0]
        [--epochs 30] [--imgsz 320] [--batch 16] [--workers 2] [--close-mosaic 5] [--student yolov8n]
        [--larger yolov8s] [--other yolo11n] [--distill-feat] [--distill-weight 1] [--temperature 20] [--out DIR]
    python benchmarks/distill.py --report DIR

Without DATA_YAML: the real photograph sets in `../shared/datasets` (aquarium, cards, licenseplates). Per set,
each teacher is trained first (seed 0, the same budget as the students) and its training time measured:

- `larger`: `--larger` (yolov8s), the usual teacher;
- `self`: the student's own architecture (YOLOv6's self-distillation: a teacher of the same size);
- `other`: `--other` (yolo11n), the other anchor-free family.

Then, for each seed F..F+N-1 (`--first-seed` F, 0 unless given), the student from scratch alone and with each
teacher: every option shared except the teacher. Every final model (EMA weights of the last epoch, not the
best: nothing is chosen on the validation split) is scored by pycocotools against one ground truth built from
the split's YOLO labels in original-image pixels (`benchmarks/quality.py`). Prints a line per run, then per
set and teacher the mean and range over the seeds of the student alone, the student distilled and the gain,
beside the teacher's own AP50-95 and training time; the last line is `distill_gain=<mean gain over sets and
teachers>` (AP50-95, negative when the teachers hurt). The runs go to a temporary folder unless `--out` keeps
them; with `--out` every finished training is recorded in `OUT/scores.jsonl` and not run again by a later call
with the same `--out`, so the comparison (45 trainings on the three sets) can be run a few trainings at a
time: `--teachers self --first-seed 1 --seeds 1` adds one seed of one teacher, and `--report OUT` prints the
table of everything kept (each gain over the seeds that have both students).
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

from benchmarks.quality import SCORES_FILE, coco_scores, ground_truth, read_scores, train_and_validate  # noqa: E402

SETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DEFAULT_SETS = ("aquarium", "cards", "licenseplates")
TEACHERS = ("larger", "self", "other")


@dataclass
class SetResult:
    """One data set's figures: per teacher kind its own score and time, and per seed each student's."""

    name: str
    teacher: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (AP50-95, seconds)
    alone: dict[int, float] = field(default_factory=dict)  # seed -> AP50-95
    distilled: dict[str, dict[int, float]] = field(default_factory=dict)  # kind -> seed -> AP50-95


class Scores:
    """The trainings done so far, one JSON line each in `OUT/scores.jsonl` (set, role, kind, seed, model,
    AP50-95, seconds, checkpoint): a training whose line is there (and whose checkpoint still is) is not run
    again, so the comparison can run a few trainings per call (`--first-seed`, `--teachers`) and `--report`
    prints the table of all of them. Without `--out` nothing is kept."""

    def __init__(self, folder: Path | None) -> None:
        self.file = folder / SCORES_FILE if folder is not None else None
        kept = read_scores([folder]) if self.file is not None and self.file.is_file() else []
        self.records = {(r["set"], r["role"], r["kind"], r["seed"]): r for r in kept}

    def get(self, key: tuple[str, str, str, int]) -> dict[str, Any] | None:
        record = self.records.get(key)
        return record if record is not None and Path(record["checkpoint"]).is_file() else None

    def add(self, record: dict[str, Any]) -> None:
        self.records[(record["set"], record["role"], record["kind"], record["seed"])] = record
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def train_and_score(
    args: argparse.Namespace, data: str, truth: Any, out: Path, name: str, **options: Any
) -> tuple[float, float, Path]:
    """One model at the shared budget (`quality.train_and_validate`), scored by pycocotools:
    (AP50-95, training seconds, last checkpoint)."""
    run = train_and_validate(args, data, out, name, **{"model": args.student, **options})
    score = coco_scores(truth, json.loads(run.predictions_json.read_text()))["AP50-95"]
    return score, run.seconds, run.last_checkpoint


def scored(
    args: argparse.Namespace,
    scores: Scores,
    key: tuple[str, str, str, int],
    data: str,
    truth: Any,
    out: Path,
    **options: Any,
) -> dict[str, Any]:
    """The record of one training (`key` = set, role, kind, seed): the kept one, else a new training."""
    record = scores.get(key)
    if record is not None:
        return record
    name, role, kind, seed = key
    run_name = f"teacher-{kind}" if role == "teacher" else f"{kind}-seed{seed}"
    score, seconds, checkpoint = train_and_score(args, data, truth, out / name, run_name, seed=seed, **options)
    record = {"set": name, "role": role, "kind": kind, "seed": seed, "model": options.get("model", args.student),
              "AP50-95": score, "seconds": seconds, "checkpoint": str(checkpoint), "budget": budget(args)}  # fmt: skip
    scores.add(record)
    return record


def run_set(args: argparse.Namespace, data: str, out: Path, scores: Scores) -> None:
    """Each teacher (seed 0), then per seed the student alone and with each teacher, as far as not kept."""
    name = Path(data).resolve().parent.name
    truth = ground_truth(data)
    models = {"larger": args.larger, "self": args.student, "other": args.other}
    weights = {}
    for kind in args.teachers:
        record = scored(args, scores, (name, "teacher", kind, 0), data, truth, out, model=models[kind])
        weights[kind] = record["checkpoint"]
        print(f"{name} teacher {kind} ({models[kind]}): AP50-95={record['AP50-95']:.4f}, trained in "
              f"{record['seconds']:.0f} s", flush=True)  # fmt: skip
    distill = dict(distill_feat=args.distill_feat, distill_weight=args.distill_weight, temperature=args.temperature)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        record = scored(args, scores, (name, "alone", "alone", seed), data, truth, out)
        print(f"{name} seed {seed} alone: AP50-95={record['AP50-95']:.4f}", flush=True)
        for kind in args.teachers:
            record = scored(args, scores, (name, "distilled", kind, seed), data, truth, out, teacher=weights[kind],
                            **distill)  # fmt: skip
            print(f"{name} seed {seed} with {kind}: AP50-95={record['AP50-95']:.4f}", flush=True)


def results_of(records: list[dict[str, Any]]) -> list[SetResult]:
    """The per-set figures of the kept records."""
    results: dict[str, SetResult] = {}
    for r in records:
        result = results.setdefault(r["set"], SetResult(r["set"]))
        if r["role"] == "teacher":
            result.teacher[r["kind"]] = (r["AP50-95"], r["seconds"])
        elif r["role"] == "alone":
            result.alone[r["seed"]] = r["AP50-95"]
        else:
            result.distilled.setdefault(r["kind"], {})[r["seed"]] = r["AP50-95"]
    return [results[name] for name in sorted(results)]


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} [{min(values):.4f}-{max(values):.4f}]"


def budget(args: argparse.Namespace) -> str:
    """The shared budget and distillation options of a call, as the report prints them."""
    return (
        f"student {args.student} from scratch, {args.epochs} epochs at {args.imgsz} px, batch {args.batch}, "
        f"close_mosaic {args.close_mosaic}; distill_weight {args.distill_weight}, temperature {args.temperature}, "
        f"feature term {'on' if args.distill_feat else 'off'}; AP50-95 by pycocotools"
    )


def report(budgets: set[str], results: list[SetResult]) -> float:
    """The budgets the trainings ran at, the table (markdown) and the mean gain over sets and teachers; each
    gain pairs the seeds that have both the student alone and the student distilled."""
    for line in sorted(budgets):
        print(line)
    print("| set | teacher | teacher AP50-95 | teacher s | seeds | student alone | student distilled | gain (range) |")
    print("|---|---|---|---|---|---|---|---|")
    gains = []
    for r in results:
        for kind, by_seed in r.distilled.items():
            seeds = sorted(set(by_seed) & set(r.alone))
            if not seeds:
                continue
            per_seed = [by_seed[s] - r.alone[s] for s in seeds]
            gains.append(statistics.mean(per_seed))
            t_score, t_seconds = r.teacher.get(kind, (float("nan"), float("nan")))
            print(
                f"| {r.name} | {kind} | {t_score:.4f} | {t_seconds:.0f} | {','.join(map(str, seeds))} | "
                f"{spread([r.alone[s] for s in seeds])} | {spread([by_seed[s] for s in seeds])} | "
                f"{statistics.mean(per_seed):+.4f} [{min(per_seed):+.4f}..{max(per_seed):+.4f}] |"
            )
    return statistics.mean(gains) if gains else float("nan")


def print_report(records: list[dict[str, Any]]) -> int:
    """The report of `records` and its last line `distill_gain=`."""
    print(f"distill_gain={report({r.get('budget', '') for r in records}, results_of(records)):.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help="data.yaml files (default: the real sets in ../shared/datasets)")
    parser.add_argument("--teachers", nargs="+", choices=TEACHERS, default=list(TEACHERS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds F..F+N-1 of the students")
    parser.add_argument("--first-seed", type=int, default=0, help="F: the first seed (to run a few per call)")
    parser.add_argument("--report", metavar="DIR", help="print the table of the trainings kept in DIR and stop")
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
    if args.report:
        try:
            return print_report(read_scores([args.report]))
        except (FileNotFoundError, KeyError, ValueError) as error:  # no scores there, or a damaged line
            print(f"--report: {error}", file=sys.stderr)
            return 2
    sets = args.data or [str(SETS / name / "data.yaml") for name in DEFAULT_SETS]
    missing = [path for path in sets if not Path(path).is_file()]
    if missing:
        print(f"data.yaml not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.seeds < 1 or args.first_seed < 0:
        print("--seeds must be at least 1 and --first-seed at least 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out).resolve() if args.out else Path(tmp)
        scores = Scores(out if args.out else None)
        for path in sets:
            run_set(args, str(Path(path).resolve()), out, scores)
        print_report(list(scores.records.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
