"""Epoch wall time (training + validation) and peak memory of the nano anchor-free model.

    python benchmarks/epoch.py [DATA_YAML] [--imgsz 320] [--batch 16] [--workers 2] [--epochs 2]

Default data: ../shared/datasets/coco128/data.yaml. Runs `--epochs` epochs and reports the last one (the
first pays for worker start-up and allocator warm-up). Peak RSS is this process plus its largest child
(the dataloader workers). Last line: `epoch_s=<number>`.
Reference on the 2-core machine: ultralytics 8.4, yolov8n, coco128, 320 px, batch 16, 2 workers, 2 torch
threads: about 12 s per epoch (8.5 s training, 3.5 s validation), peak RSS 2.2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from accelyolo.callbacks import Callback
from accelyolo.engine import fit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"


class EpochTimes(Callback):
    def __init__(self) -> None:
        self.starts: dict[int, float] = {}
        self.times: list[float] = []
        self.train_times: list[float] = []

    def on_epoch_start(self, trainer, epoch) -> None:
        self.starts[epoch] = time.perf_counter()

    def on_epoch_end(self, trainer, row) -> None:
        self.times.append(time.perf_counter() - self.starts[row["epoch"] - 1])
        self.train_times.append(row["time_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"data.yaml '{args.data}' not found; pass one as the first argument", file=sys.stderr)
        return 2
    timer = EpochTimes()
    with tempfile.TemporaryDirectory() as tmp:
        fit(
            data=args.data,
            model=args.model,
            imgsz=args.imgsz,
            batch_size=args.batch,
            workers=args.workers,
            epochs=args.epochs,
            project=tmp,
            plots=False,
            callbacks=[timer],
        )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    for i, (total, train) in enumerate(zip(timer.times, timer.train_times), 1):
        print(f"epoch {i}: {total:.2f} s ({train:.2f} s training, {total - train:.2f} s validation and saving)")
    print(f"peak_rss_gb={own + child:.2f} (main {own:.2f}, largest child {child:.2f})")
    print(f"epoch_s={timer.times[-1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
