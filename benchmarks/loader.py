"""Training-loader throughput: mosaic on, collated uint8 batches, after a warm-up.

    python benchmarks/loader.py DATA_YAML [--imgsz 320] [--batch 16] [--workers 0]

The last line printed is `images_per_s=<number>`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from accelyolo.data import YoloDataset, build_dataloader, load_data_yaml  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    """Measure and print images/s of the train loader; returns the figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", help="data.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3, help="measured passes over the split")
    p.add_argument("--warmup-batches", type=int, default=8)
    p.add_argument("--buffer-mb", type=float, default=256.0, help="decoded-image LRU (0: off)")
    p.add_argument("--cache", choices=["ram"], default=None)
    p.add_argument("--mosaic-backend", choices=["fast", "albumentations"], default="fast")
    args = p.parse_args(argv)

    spec = load_data_yaml(args.data)
    ds = YoloDataset(
        spec.splits["train"],
        imgsz=args.imgsz,
        augment=True,
        names=spec.names,
        cache=args.cache,
        batch_size=args.batch,
        buffer_mb=args.buffer_mb,
        mosaic_backend=args.mosaic_backend,
    )
    dl = build_dataloader(ds, batch_size=args.batch, workers=args.workers, shuffle=True, seed=0)
    for i, _ in enumerate(dl):  # warm-up: worker start, first decodes
        if i + 1 >= args.warmup_batches:
            break
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for epoch in range(1, args.epochs + 1):
        ds.set_epoch(epoch)
        for batch in dl:
            n += batch["images"].shape[0]
    rate = n / (time.perf_counter() - t0)
    cpu = time.process_time() - c0  # this process, all its threads (OpenCV uses several)
    print(f"{n} images, imgsz {args.imgsz}, batch {args.batch}, workers {args.workers}")
    print(f"main-process CPU time, all threads: {cpu:.2f} s ({n / max(cpu, 1e-9):.1f} images per CPU-second)")
    print(f"images_per_s={rate:.1f}")
    return rate


if __name__ == "__main__":
    main()
