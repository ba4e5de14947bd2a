"""Training-loader throughput, ours beside ultralytics': mosaic on, collated uint8 batches, after a warm-up.

    python benchmarks/loader.py DATA_YAML [--imgsz 320] [--batch 16] [--workers 0 2] [--rounds 3]

Both loaders are measured the same way (`../shared/peer/peer_dataloader_bench.py` for ultralytics): `--batches`
batches after `--warmup` batches, the dataset re-iterated epoch after epoch with persistent workers. Rounds
alternate ours and theirs so that drift in this machine's speed hits both; the median of the rounds is
reported. Without `../peer-venv` only our figure is printed.
Last line: `loader_ratio=<ours / theirs, the smallest over the worker counts>` (or `images_per_s=<ours>`
when there is no peer).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from accelyolo.data import YoloDataset, build_dataloader, load_data_yaml  # noqa: E402
from benchmarks.peer import absolute_data_yaml, lines_starting, peer_tools  # noqa: E402


def our_rate(args: argparse.Namespace, workers: int) -> float:
    """Images/s of our train loader over `args.batches` batches after `args.warmup`."""
    spec = load_data_yaml(args.data)
    ds = YoloDataset(spec.splits["train"], imgsz=args.imgsz, augment=True, names=spec.names,
                     cache=args.cache, batch_size=args.batch)  # fmt: skip
    dl = build_dataloader(ds, batch_size=args.batch, workers=workers, shuffle=True, seed=0)
    n = images = 0
    epoch, t0 = 0, time.perf_counter()
    while n < args.warmup + args.batches:
        ds.set_epoch(epoch := epoch + 1)
        for batch in dl:
            n += 1
            if n == args.warmup:
                t0 = time.perf_counter()
            elif n > args.warmup:
                images += batch["images"].shape[0]
            if n >= args.warmup + args.batches:
                break
    rate = images / (time.perf_counter() - t0)
    del dl  # stop the workers before the next measurement
    return rate


def peer_rate(args: argparse.Namespace, workers: int, peer_yaml: Path) -> float:
    out = peer_tools().run(
        "peer_dataloader_bench.py", str(peer_yaml), "--imgsz", str(args.imgsz), "--batch", str(args.batch),
        "--batches", str(args.batches), "--warmup", str(args.warmup), "--workers", str(workers),
    )  # fmt: skip
    return float(lines_starting(out, "PEER_LOADER")[-1]["imgs_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", help="data.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=50, help="measured batches")
    p.add_argument("--warmup", type=int, default=3, help="batches before the clock starts")
    p.add_argument("--rounds", type=int, default=3, help="alternating measurements of each side")
    p.add_argument("--cache", choices=["ram"], default=None, help="our RAM cache (theirs stays off)")
    p.add_argument("--no-peer", action="store_true", help="measure ours only")
    args = p.parse_args(argv)

    peer = None if args.no_peer else peer_tools()
    peer_yaml = absolute_data_yaml(args.data) if peer else None
    ratios = []
    for workers in args.workers:
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(our_rate(args, workers))
            if peer:
                theirs.append(peer_rate(args, workers, peer_yaml))
        line = f"workers {workers}: accelyolo {statistics.median(ours):.1f} img/s (rounds {[round(x) for x in ours]})"
        if peer:
            ratio = statistics.median(ours) / statistics.median(theirs)
            ratios.append(ratio)
            line += f", ultralytics {statistics.median(theirs):.1f} img/s (rounds {[round(x) for x in theirs]}), "
            line += f"ratio {ratio:.2f}"
        print(line, flush=True)
    print(f"imgsz {args.imgsz}, batch {args.batch}, {args.batches} batches after {args.warmup}, data {args.data}")
    if peer:
        print(f"loader_ratio={min(ratios):.2f}")
    else:
        print(f"images_per_s={statistics.median(ours):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
