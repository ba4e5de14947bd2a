"""ultralytics' side of `benchmarks/gpu_epoch.py`: one training run on a CUDA device, timed as ours is.

    PYTHONPATH=PEER_PACKAGES python benchmarks/peer_gpu_train.py DATA_YAML MODEL --workers W --imgsz S
                                                                 --batch B --epochs E --out DIR

A separate program, run only by gpu_epoch.py with ultralytics' packages on PYTHONPATH: ultralytics (AGPL)
is a measuring instrument here and accelyolo never imports it. Offline: YOLO_OFFLINE, a private settings
folder with a local font standing in for Arial (plots are off anyway), the model built from its yaml
(nothing downloaded). Two things differ from a default call, each because the machine has no network:
its AMP check (which downloads a model to compare fp16 with fp32) is replaced by "AMP on", so both
sides train with AMP, and its results-table reader (which needs polars, not installed here) returns an
empty table for the checkpoint's `train_results` entry.

Prints `GPU_EPOCH epoch= start= train_end= end= train_s= images= wait_s=` per epoch (wait = from the end
of one batch, or the epoch's start, to the start of the next) and `GPU_PEAK max_allocated_mb=`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def offline_settings(folder: Path) -> None:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder))
    os.environ.setdefault("MPLCONFIGDIR", str(folder / "matplotlib"))
    fonts = folder / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if not (fonts / name).exists():
                shutil.copyfile(font, fonts / name)
    except (ImportError, OSError):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=tempfile.mkdtemp(prefix="peer-gpu-"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    offline_settings(out / "config")

    import torch
    import ultralytics.engine.trainer as engine_trainer
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer

    cuda = torch.cuda.is_available()
    engine_trainer.check_amp = lambda model: cuda  # no download to compare with: AMP on a GPU, as ours

    class Trainer(DetectionTrainer):
        def read_results_csv(self):  # needs polars; only fills the checkpoint's `train_results`
            return {}

    timing: dict = {}

    def epoch_start(trainer) -> None:
        timing.update(start=time.time(), wait=0.0, images=0)
        timing["last"] = timing["start"]

    def batch_start(trainer) -> None:
        timing["wait"] += time.time() - timing["last"]

    def batch_end(trainer) -> None:
        timing["images"] += int(trainer.batch_size)  # the last batch may be smaller: corrected at epoch end
        timing["last"] = time.time()

    def epoch_end(trainer) -> None:
        timing["train_end"] = time.time()

    def fit_epoch_end(trainer) -> None:
        if "train_end" not in timing:  # final_eval fires this again after training: not an epoch
            return
        end, n_train = time.time(), len(trainer.train_loader.dataset)
        train_s = timing.pop("train_end") - timing["start"]
        print(
            f"GPU_EPOCH epoch={trainer.epoch + 1} start={timing['start']:.3f} train_end={timing['start'] + train_s:.3f} "
            f"end={end:.3f} train_s={train_s:.3f} images={min(timing['images'], n_train)} wait_s={timing['wait']:.3f}",
            flush=True,
        )

    model = YOLO(f"{args.model}.yaml")
    for event, hook in (
        ("on_train_epoch_start", epoch_start),
        ("on_train_batch_start", batch_start),
        ("on_train_batch_end", batch_end),
        ("on_train_epoch_end", epoch_end),
        ("on_fit_epoch_end", fit_epoch_end),
    ):
        model.add_callback(event, hook)
    model.train(
        trainer=Trainer,
        data=str(Path(args.data).resolve()),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=args.workers,
        device=0 if cuda else "cpu",
        amp=cuda,
        close_mosaic=0,
        deterministic=False,
        seed=0,
        pretrained=False,
        plots=False,
        project=str(out),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    print(f"GPU_PEAK max_allocated_mb={peak:.0f} threads={torch.get_num_threads()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
