"""Optimizer-step time of the full trainer against a bare PyTorch step on the same batches, interleaved.

    python benchmarks/train_step.py [DATA_YAML] [--model yolov8n] [--imgsz 320] [--batch 16] [--steps 30]
                                    [--threads N]

The trainer runs as `fit()` runs it (every default callback, the progress bar included) with accumulation 1
(nbs = batch) and no warmup, so every batch is an optimizer step; its step time is `StepOutput.step_time_s`,
from "batch in hand" to "EMA updated" (data loading excluded). Right after each trainer step, a callback runs
the bare step on the very same batch: a copy of the same freshly built model, the same loss and the same
optimizer (`build_optimizer`), forward, loss, backward, clip, step, zero_grad, channels-last as the trainer's
default; no Accelerate, no EMA, no callbacks. Interleaving the two step by step puts both under the same
machine load at the same moment, which matters on a shared machine more than any other choice here.
`--threads` sets torch's thread count for both (on a loaded 2-core machine one thread gives steadier figures;
two threads whose cores are taken by other processes wait on each other at every parallel region).
Last line: `overhead_ratio=<median over steps of trainer time / bare time>` (goal <= 1.03).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from accelyolo.commands.fit import fit
from accelyolo.data import demo_data_yaml, load_data_yaml
from accelyolo.families import build_loss
from accelyolo.training.callbacks import Callback
from accelyolo.training.optim import build_optimizer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"
WARM_STEPS = 5  # left out of the figures: allocator and cache warm-up on both sides


class BareStep:
    """The reference step: plain PyTorch over a copy of the trainer's model as it was built."""

    def __init__(self, model: torch.nn.Module, imgsz: int, max_grad_norm: float) -> None:
        self.model = copy.deepcopy(model).train().to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(self.model, imgsz=imgsz)
        self.optimizer = build_optimizer("SGD", self.model, 0.01, 0.937, 0.0005)
        self.max_grad_norm = max_grad_norm

    def __call__(self, batch: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        images = (batch["images"].float() / 255.0).contiguous(memory_format=torch.channels_last)
        loss, _ = self.loss_fn(self.model(images), batch["targets"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0


class Interleave(Callback):
    """After each trainer optimizer step, the bare step on the same batch; both times recorded."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.bare: BareStep | None = None
        self.pairs: list[tuple[float, float]] = []

    def on_fit_start(self, trainer) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.bare = BareStep(model, trainer.cfg.imgsz, trainer.cfg.max_grad_norm)

    def on_step_end(self, trainer, step) -> None:
        if not step.optimizer_step or len(self.pairs) >= self.steps:
            return
        self.pairs.append((step.step_time_s, self.bare(trainer.last_batch)))
        if len(self.pairs) == self.steps:
            trainer.request_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=None, help="data.yaml (default: coco128 if present, else demo)")
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both loops (0: torch's default)")
    args = parser.parse_args(argv)
    data = args.data or (str(DEFAULT_DATA) if DEFAULT_DATA.is_file() else str(demo_data_yaml()))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    recorder = Interleave(args.steps + WARM_STEPS)
    batches_per_epoch = math.ceil(len(load_data_yaml(data).splits["train"]) / args.batch)
    epochs = math.ceil((args.steps + WARM_STEPS) / batches_per_epoch) + 1  # small datasets take several epochs
    with tempfile.TemporaryDirectory() as tmp:
        fit(
            data=data,
            model=args.model,
            imgsz=args.imgsz,
            batch_size=args.batch,
            nbs=args.batch,
            optimizer="SGD",  # the bare step's optimizer (the default 'auto' would pick AdamW here)
            epochs=epochs,
            warmup_epochs=0.0,
            workers=0,
            project=tmp,
            plots=False,
            val_final_only=True,
            callbacks=[recorder],
            close_mosaic=0,
        )
    pairs = recorder.pairs[WARM_STEPS:]
    trainer = [t for t, _ in pairs]
    bare = [b for _, b in pairs]
    ratios = [t / b for t, b in pairs]
    print(
        f"data={data} model={args.model} imgsz={args.imgsz} batch={args.batch} steps={len(pairs)} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        f"bare_median_s={statistics.median(bare):.4f} trainer_median_s={statistics.median(trainer):.4f} "
        f"ratio_of_medians={statistics.median(trainer) / statistics.median(bare):.3f}"
    )
    print(f"overhead_ratio={statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
