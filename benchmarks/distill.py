"""What a teacher adds: the nano student trained with and without distillation at the same budget.

    python benchmarks/distill.py DATA_YAML --teacher W [--student yolov8n] [--epochs 10] [--imgsz 320]
        [--batch 16] [--workers 2] [--nbs 64] [--distill-feat] [--temperature 20] [--distill-weight 1]

Both runs share every option (seed, data, schedule, epochs) except the teacher; the student starts from
scratch in both. Prints the best mAP50-95 of each and, as its last line, `distill_gain=<number>` (with
minus without; negative when the teacher hurt). W is an accelyolo bundle of a model of the student's
family trained on the same classes, e.g. `runs/train/exp/weights/best.safetensors` of a yolov8s run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from accelyolo.engine import fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", default="yolov8n")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nbs", type=int, default=64, help="nominal batch (16 suits small data sets)")
    parser.add_argument("--close-mosaic", type=int, default=2)
    parser.add_argument("--distill-feat", action="store_true")
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=20.0)
    args = parser.parse_args(argv)
    for what, path in (("data.yaml", args.data), ("teacher", args.teacher)):
        if not Path(path).is_file():
            print(f"{what} '{path}' not found", file=sys.stderr)
            return 2
    common = dict(
        data=args.data,
        model=args.student,
        imgsz=args.imgsz,
        batch_size=args.batch,
        workers=args.workers,
        epochs=args.epochs,
        close_mosaic=args.close_mosaic,
        nbs=args.nbs,
        plots=False,
        patience=0,
    )
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("without", {}),
            (
                "with",
                dict(
                    teacher=args.teacher,
                    distill_feat=args.distill_feat,
                    distill_weight=args.distill_weight,
                    temperature=args.temperature,
                ),
            ),
        ):
            result = fit(project=tmp, name=label, **common, **extra)
            scores[label] = float((result.metrics or {}).get("mAP50-95", 0.0))
    print(f"student {args.student}, {args.epochs} epochs at {args.imgsz} px, batch {args.batch}")
    print(f"mAP50-95 without teacher: {scores['without']:.4f}")
    print(f"mAP50-95 with teacher {args.teacher}: {scores['with']:.4f}")
    print(f"distill_gain={scores['with'] - scores['without']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
