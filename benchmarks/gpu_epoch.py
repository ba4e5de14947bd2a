"""Training throughput on a CUDA device, ours beside ultralytics: images/s, epoch time, GPU memory and use,
and whether each side waits for its loader.

    python benchmarks/gpu_epoch.py DATA_YAML [--models yolov8n yolov8s] [--workers 8 16] [--imgsz 640]
                                   [--batch 64] [--epochs 3] [--repeat-train 16] [--peer-path DIR] [--profile N]
                                   [--dry-run]

The training split is `--repeat-train` hard-linked copies of DATA_YAML's train images (coco128 alone is two
batches of 64 an epoch: too short to time), the validation split is DATA_YAML's own. Both sides train from
scratch with AMP (fp16 autocast and a GradScaler), mosaic on throughout (close_mosaic 0), the same image
size, batch, loader workers and epochs, and validate every epoch. Each run is a child process; the pairs
alternate (ours, theirs) per model and worker count.

Per run, over the epochs after the first (which pays for worker start, cuDNN autotuning, compilation):
- `imgs_per_s`: training images over the time of the training part of those epochs (no validation);
- `epoch_s`: median wall time of an epoch, training + validation + checkpoint writes;
- `wait_pct`: the share of the training part spent waiting for the next batch (loader-bound when large);
- `gpu_util_pct`: the GPU's utilisation sampled (NVML, every 0.2 s) during the training part;
- `peak_alloc_mb`: `torch.cuda.max_memory_allocated()` in the trainer process; `peak_smi_mb`: the device's
  memory in use as NVML sees it (the caching allocator's reservations, CUDA context included), peak over
  the run minus the idle reading before it.

ultralytics runs through `benchmarks/peer_gpu_train.py` as a separate program with `--peer-path` (its
packages, e.g. wheels installed with `pip install --target`) first on PYTHONPATH; without it only our side
runs. ultralytics is never imported by this script or by accelyolo. `--dry-run` runs the whole flow on
whatever device is there at toy size (yolov8n, 64 px, batch 8, 2 epochs) to check the script itself.

`--compile` adds a run of ours with `compile=True` (torch.compile with inductor; its compilation falls in
the first epoch, which is not measured) as side `ours+compile`, for the first model at the most workers. `--profile N` adds one run of ours (first model, most workers, 2 epochs) with torch.profiler over N steps
of its second epoch: tables of CUDA time, CPU time and CUDA memory by operator, and the allocator's peaks.

Last line: `gpu_imgs_per_s_ratio=<ours / theirs>` for the first model at the largest worker count (or
`gpu_imgs_per_s=<ours>` without the peer).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ------------------------------------------------------------------------------------------------- data


def _split_dir(spec: dict, base: Path, split: str) -> Path:
    folder = Path(spec[split])
    return folder if folder.is_absolute() else base / folder


def repeated_data(data_yaml: Path, repeat: int, out: Path) -> Path:
    """A data.yaml whose train split is `repeat` hard-linked copies of `data_yaml`'s train images (and their
    labels), under new names; val is the original split. Written under `out`."""
    spec = yaml.safe_load(data_yaml.read_text())
    base = Path(spec.get("path") or ".")
    base = base if base.is_absolute() else (data_yaml.parent / base).resolve()
    for split in ("train", "val"):
        src_images = _split_dir(spec, base, split)
        src_labels = Path(str(src_images).replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"))
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        copies = repeat if split == "train" else 1
        for image in sorted(p for p in src_images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            label = src_labels / f"{image.stem}.txt"
            for k in range(copies):
                stem = f"{image.stem}_r{k}" if copies > 1 else image.stem
                _link(image, out / "images" / split / f"{stem}{image.suffix}")
                if label.is_file():
                    _link(label, out / "labels" / split / f"{stem}.txt")
    names = spec["names"]
    written = out / "data.yaml"
    written.write_text(yaml.safe_dump({"path": str(out), "train": "images/train", "val": "images/val", "names": names}))
    return written


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy
        dst.write_bytes(src.read_bytes())


# ------------------------------------------------------------------------------------------- GPU sampling


class GpuSampler:
    """Samples the GPU's utilisation and memory in use every `interval` s (NVML, else nvidia-smi) with the
    wall-clock time of each sample, until `stop()`."""

    def __init__(self, interval: float = 0.2) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (time.time(), util %, memory used MB)
        self._read = _nvml_reader() or _smi_reader()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        if self._read is not None:
            self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._done.wait(interval):
            reading = self._read()
            if reading is not None:
                self.samples.append((time.time(), *reading))

    def stop(self) -> list[tuple[float, float, float]]:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.samples


def _nvml_reader():
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no NVML binding or no NVIDIA device
        return None

    def read() -> tuple[float, float]:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        return float(util), float(used)

    return read


def _smi_reader():
    query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]
    try:
        subprocess.run(query, capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None

    def read() -> tuple[float, float] | None:
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.strip().split(",")
            return float(out[0]), float(out[1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    return read


# ------------------------------------------------------------------------------------------------- runs


def child_ours(args: argparse.Namespace) -> int:
    """Our training run (inside the measured child): `GPU_EPOCH` lines per epoch, then `GPU_PEAK`."""
    import torch

    from accelyolo.commands.fit import fit
    from accelyolo.training.callbacks import Callback

    class Timing(Callback):
        def on_epoch_start(self, trainer, epoch) -> None:
            self.start, self.wait, self.images = time.time(), 0.0, 0

        def on_step_end(self, trainer, step) -> None:
            self.wait += step.data_time_s
            self.images += step.batch_size

        def on_epoch_end(self, trainer, row) -> None:
            end = time.time()
            train_end = self.start + row["time_s"]
            print(
                f"GPU_EPOCH epoch={row['epoch']} start={self.start:.3f} train_end={train_end:.3f} end={end:.3f} "
                f"train_s={row['time_s']:.3f} images={self.images} wait_s={self.wait:.3f}",
                flush=True,
            )

    class StepProfile(Callback):
        """`--profile`: torch.profiler over steps 4..4+N of the second epoch (CPU and CUDA activity, memory),
        printed as tables: where a step's time and its memory go."""

        def __init__(self, steps: int) -> None:
            self.steps, self.prof, self.t0 = steps, None, 0.0

        def on_step_end(self, trainer, step) -> None:
            if step.epoch != 2 or not self.steps:
                return
            if step.batch == 3:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                self.prof = profile(activities=activities, profile_memory=True)
                self.prof.__enter__()
                self.t0 = time.time()
            elif self.prof is not None and step.batch == 3 + self.steps:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                wall = (time.time() - self.t0) / self.steps
                self.prof.__exit__(None, None, None)
                averages = self.prof.key_averages()
                device_key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                print(f"GPU_PROFILE steps={self.steps} wall_per_step_ms={1000 * wall:.1f}", flush=True)
                print(averages.table(sort_by=device_key, row_limit=25, max_name_column_width=60), flush=True)
                print(averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60), flush=True)
                if torch.cuda.is_available():
                    print(
                        averages.table(sort_by="self_cuda_memory_usage", row_limit=15, max_name_column_width=60),
                        flush=True,
                    )
                    stats = torch.cuda.memory_stats()
                    print(
                        f"GPU_MEMORY peak_allocated_mb={stats['allocated_bytes.all.peak'] / 2**20:.0f} "
                        f"peak_reserved_mb={stats['reserved_bytes.all.peak'] / 2**20:.0f} "
                        f"alloc_retries={stats.get('num_alloc_retries', 0)}",
                        flush=True,
                    )
                self.prof = None

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        fit(
            data=args.data,
            model=args.model,
            imgsz=args.imgsz,
            batch_size=args.batch,
            workers=args.workers,
            epochs=args.epochs,
            close_mosaic=0,
            mixed_precision="fp16" if cuda else "no",
            compile=args.compile,
            project=tmp,
            plots=False,
            callbacks=[Timing(), StepProfile(args.profile)],
        )
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
    print(f"GPU_PEAK max_allocated_mb={peak:.0f} threads={torch.get_num_threads()}", flush=True)
    return 0


def run_child(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run one side's child while sampling the GPU; its per-epoch records, peak and GPU samples."""
    idle = GpuSampler()
    time.sleep(0.5)
    idle_mb = min((s[2] for s in idle.stop()), default=0.0)
    sampler = GpuSampler()
    t0 = time.time()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.time() - t0
    samples = sampler.stop()
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (rc {proc.returncode}):\n{out[-4000:]}")
    epochs = [_fields(line) for line in out.splitlines() if line.startswith("GPU_EPOCH ")]
    peak = next((_fields(line) for line in reversed(out.splitlines()) if line.startswith("GPU_PEAK ")), {})
    return {"epochs": epochs, "peak": peak, "samples": samples, "idle_mb": idle_mb, "wall_s": wall}


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def summarize(run: dict) -> dict[str, float]:
    """The figures of one run over its epochs after the first (see the module docstring)."""
    measured = run["epochs"][1:] or run["epochs"]
    train_s = sum(float(e["train_s"]) for e in measured)
    images = sum(int(e["images"]) for e in measured)
    wait_s = sum(float(e["wait_s"]) for e in measured)
    epoch_s = statistics.median(float(e["end"]) - float(e["start"]) for e in measured)
    windows = [(float(e["start"]), float(e["train_end"])) for e in measured]
    util = [u for t, u, _ in run["samples"] if any(a <= t <= b for a, b in windows)]
    used = [m for _, _, m in run["samples"]]
    return {
        "imgs_per_s": images / train_s if train_s else 0.0,
        "epoch_s": epoch_s,
        "wait_pct": 100 * wait_s / train_s if train_s else 0.0,
        "gpu_util_pct": statistics.mean(util) if util else float("nan"),
        "peak_alloc_mb": float(run["peak"].get("max_allocated_mb", "nan")),
        "peak_smi_mb": (max(used) - run["idle_mb"]) if used else float("nan"),
        "wall_s": run["wall_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "datasets" / "coco128" / "data.yaml"))
    parser.add_argument("--models", nargs="+", default=["yolov8n", "yolov8s"])
    parser.add_argument("--workers", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat-train", type=int, default=16)
    parser.add_argument("--peer-path", default="", help="folder with ultralytics' packages (pip --target)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    parser.add_argument(
        "--budget", type=float, default=0, help="seconds for all runs: none starts past it (0: no limit)"
    )
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--dry-run", action="store_true", help="toy size on any device: checks the script")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run ours with --compile (torch.compile, inductor) as side 'ours+compile'",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="then one more run of ours (first model, most workers) with torch.profiler over N "
        "steps of its second epoch, printing where the step's time and memory go",
    )
    parser.add_argument("--child", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.workers = args.workers[0]
        return child_ours(args)
    if args.dry_run:
        args.models, args.imgsz, args.batch, args.epochs, args.repeat_train = ["yolov8n"], 64, 8, 2, 1
        args.workers = args.workers[:1] if args.workers != [8, 16] else [1]
        if not Path(args.data).is_file():
            from accelyolo.data.demo import generate_demo

            args.data = str(generate_demo(Path(tempfile.mkdtemp(prefix="gpu-dry-")), n_train=16, n_val=8, imgsz=64))

    work = Path(tempfile.mkdtemp(prefix="gpu-epoch-"))
    data = repeated_data(Path(args.data).resolve(), args.repeat_train, work / "data")
    peer = args.peer_path or None  # one folder, or several joined by os.pathsep
    missing = [part for part in (peer or "").split(os.pathsep) if part and not Path(part).is_dir()]
    if missing:
        print(f"peer: {', '.join(missing)} is not a folder; ours alone", flush=True)
        peer = None
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    print(
        f"data {data} ({sum(1 for _ in (work / 'data' / 'images' / 'train').iterdir())} train images), "
        f"imgsz {args.imgsz}, batch {args.batch}, epochs {args.epochs} (first not measured), AMP, close_mosaic 0",
        flush=True,
    )
    results: list[dict] = []
    started = time.time()
    for model in args.models:
        for workers in sorted(args.workers, reverse=True):  # the most workers first: the headline figure
            common = ["--imgsz", str(args.imgsz), "--batch", str(args.batch), "--epochs", str(args.epochs)]
            sides = [
                (
                    "ours",
                    [
                        sys.executable,
                        __file__,
                        str(data),
                        "--child",
                        "ours",
                        "--model",
                        model,
                        "--workers",
                        str(workers),
                        *common,
                    ],
                    env,
                )
            ]
            if args.compile and model == args.models[0] and workers == max(args.workers):  # the headline pair only
                sides.append(("ours+compile", [*sides[0][1], "--compile"], env))
            if peer is not None:
                peer_env = {**env, "PYTHONPATH": str(peer)}  # its own packages only, never ours
                sides.append(
                    (
                        "ultralytics",
                        [
                            sys.executable,
                            str(HERE / "peer_gpu_train.py"),
                            str(data),
                            model,
                            "--workers",
                            str(workers),
                            *common,
                            "--out",
                            str(work / "peer"),
                        ],
                        peer_env,
                    )
                )
            for side, cmd, side_env in sides:
                left = args.budget - (time.time() - started) if args.budget else args.timeout
                if left < 20:
                    print(f"GPU_RUN side={side} model={model} workers={workers} skipped: --budget spent", flush=True)
                    continue
                try:
                    figures = summarize(run_child(cmd, side_env, min(args.timeout, left)))
                except (RuntimeError, subprocess.TimeoutExpired, StopIteration, ValueError) as error:
                    print(f"GPU_RUN side={side} model={model} workers={workers} failed: {error}", flush=True)
                    continue
                record = {"side": side, "model": model, "workers": workers, **figures}
                results.append(record)
                print(
                    "GPU_RUN "
                    + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                    flush=True,
                )
    if args.profile and (not args.budget or time.time() - started < args.budget - 20):
        cmd = [sys.executable, __file__, str(data), "--child", "ours", "--model", args.models[0], "--workers",
               str(max(args.workers)), "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--epochs", "2",
               "--profile", str(args.profile)]  # fmt: skip
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=args.timeout
        )
        lines = (proc.stdout + proc.stderr).splitlines()
        first = next((k for k, line in enumerate(lines) if line.startswith("GPU_PROFILE")), None)
        print("\n".join(lines[first:] if first is not None else lines[-40:]), flush=True)
    _table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    first = [r for r in results if r["model"] == args.models[0] and r["workers"] == max(args.workers)]
    ours = next((r for r in first if r["side"] == "ours"), None)
    theirs = next((r for r in first if r["side"] == "ultralytics"), None)
    if ours and theirs and theirs["imgs_per_s"]:
        print(f"gpu_imgs_per_s_ratio={ours['imgs_per_s'] / theirs['imgs_per_s']:.3f}")
    elif ours:
        print(f"gpu_imgs_per_s={ours['imgs_per_s']:.1f}")
    else:
        print("gpu_epoch: no run finished")
        return 1
    return 0


def _table(results: list[dict]) -> None:
    columns = [
        "model",
        "workers",
        "side",
        "imgs_per_s",
        "epoch_s",
        "wait_pct",
        "gpu_util_pct",
        "peak_alloc_mb",
        "peak_smi_mb",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        cells = [f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
