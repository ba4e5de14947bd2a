"""Median optimizer-step time of the full trainer against a bare PyTorch loop on the same batches.

    python benchmarks/train_step.py [DATA_YAML] [--model yolov8n] [--imgsz 320] [--batch 16] [--steps 30]

The trainer runs with accumulation 1 (nbs = batch) and no warmup, so every batch is an optimizer step; its
step time is measured from "batch in hand" to "EMA updated" (data loading excluded on both sides). The bare
loop is forward, loss, backward, clip, SGD step, zero_grad on batches prefetched into memory (channels-last, as
the trainer's default): no Accelerate, no EMA.
Last line: `overhead_ratio=<trainer median / bare median>` (goal <= 1.03).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from accelyolo.callbacks import Callback
from accelyolo.data import YoloDataset, build_dataloader, demo_data_yaml, load_data_yaml
from accelyolo.engine import fit
from accelyolo.families import build_loss, build_model
from accelyolo.optim import build_optimizer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"


class StepTimes(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, trainer, step) -> None:
        if step.optimizer_step:
            self.times.append(step.step_time_s)


def bare_loop(data_yaml: str, model_name: str, imgsz: int, batch: int, steps: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    spec = load_data_yaml(data_yaml)
    dataset = YoloDataset(
        spec.splits["train"], imgsz=imgsz, augment=True, hyp={}, names=spec.names, batch_size=batch, seed=seed
    )
    loader = build_dataloader(dataset, batch_size=batch, workers=0, shuffle=True, seed=seed)
    batches = []
    while len(batches) < steps:
        for b in loader:
            batches.append(b)
            if len(batches) == steps:
                break
    model = build_model(model_name, nc=len(spec.names)).train().to(memory_format=torch.channels_last)
    loss_fn = build_loss(model, imgsz=imgsz)
    optimizer = build_optimizer("SGD", model, 0.01, 0.937, 0.0005)
    times = []
    for b in batches:
        t0 = time.perf_counter()
        images = (b["images"].float() / 255.0).contiguous(memory_format=torch.channels_last)
        loss, _ = loss_fn(model(images), b["targets"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=None, help="data.yaml (default: coco128 if present, else demo)")
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    data = args.data or (str(DEFAULT_DATA) if DEFAULT_DATA.is_file() else str(demo_data_yaml()))
    warm = 5
    bare = bare_loop(data, args.model, args.imgsz, args.batch, args.steps + warm, 0)[warm:]
    recorder = StepTimes()
    batches_per_epoch = math.ceil(len(load_data_yaml(data).splits["train"]) / args.batch)
    epochs = math.ceil((args.steps + warm) / batches_per_epoch)  # small datasets take several epochs
    with tempfile.TemporaryDirectory() as tmp:
        fit(
            data=data,
            model=args.model,
            imgsz=args.imgsz,
            batch_size=args.batch,
            nbs=args.batch,
            epochs=epochs,
            warmup_epochs=0.0,
            workers=0,
            project=tmp,
            plots=False,
            val_interval=epochs,
            callbacks=[recorder],
            close_mosaic=0,
        )
    trainer = recorder.times[warm:]
    bare_median, trainer_median = statistics.median(bare), statistics.median(trainer)
    print(f"data={data} model={args.model} imgsz={args.imgsz} batch={args.batch} steps={len(trainer)}")
    print(f"bare_median_s={bare_median:.4f} trainer_median_s={trainer_median:.4f}")
    print(f"overhead_ratio={trainer_median / bare_median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
