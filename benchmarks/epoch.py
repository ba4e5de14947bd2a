"""Epoch wall time (training + validation) and peak memory of ours beside ultralytics', on any data.yaml.

    python benchmarks/epoch.py [DATA_YAML] [--varied] [--model yolov8n] [--imgsz 320] [--batch 16]
                               [--workers 2] [--threads N] [--epochs 2] [--repeat 1] [--compile]

DATA_YAML defaults to ../shared/datasets/coco128/data.yaml; `--varied` trains instead on the generated
set of varied image sizes (`varied_set.make_varied_set`, 160 train / 40 val images, written to a temporary
folder). Both sides train `--epochs` epochs from scratch with mosaic on throughout (close_mosaic 0), the
same image size, batch, loader workers and torch threads (`--threads`, default: the CPUs this process
may use; ultralytics' own default would be one less), and validate every epoch. The figure is the last
epoch (the first pays for worker start-up and warm-up): training, validation and the checkpoint writes, as
each tool's own epoch timer sees them.

Each run is a child process (ours: this script with `--child`; theirs: `../shared/peer/peer_train.sh` in
`../peer-venv`, when both exist beside the checkout). While it runs, its process tree (the trainer and its
loader workers) is sampled twice a second from /proc: `peak_rss_mb` is the peak over the samples of the
tree's anonymous resident memory summed over the processes, plus the largest file-backed and shared-memory
residency of any one of them (libraries and shared batches are mapped by all, counted once).
`max_process_rss_mb` is the kernel's high-water mark of the largest single process (what `/usr/bin/time -v`
reports). `--repeat N` alternates ours and theirs N times and reports the medians (the machine's load drifts).
Last line: `epoch_ratio=<ours / theirs>`, or `epoch_s=<ours>` without the peer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: peer, varied_set

from peer import absolute_data_yaml, lines_starting, peer_tools  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco128" / "data.yaml"
SAMPLE_S = 0.5


@dataclass
class Run:
    """One side's training run: seconds of each epoch (train + val + save) and its memory."""

    epoch_s: list[float]
    train_s: list[float]
    peak_rss_mb: float
    max_process_rss_mb: float
    threads: str  # torch threads the run used


class TreeMemory:
    """Samples the resident memory of a process and its descendants until `stop()`; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb = pid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_mb

    def _loop(self) -> None:
        while not self._done.wait(SAMPLE_S):
            self.peak_mb = max(self.peak_mb, tree_resident_mb(self.pid))


def tree_resident_mb(root: int) -> float:
    """Anonymous memory of `root` and its descendants summed, plus the largest file-backed and shared-memory
    residency of any one of them, in MB (0 for processes that ended meanwhile)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    anon = file_backed = shared = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        fields = _status_kb(pid)
        anon += fields.get("RssAnon", 0)
        file_backed = max(file_backed, fields.get("RssFile", 0))
        shared = max(shared, fields.get("RssShmem", 0))
    return (anon + file_backed + shared) / 1024


def _status_kb(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if v.strip().endswith("kB")}


def run_sampled(cmd: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run `cmd`; its output and the peak of its process tree's memory (MB, see the module's docstring)."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    sampler = TreeMemory(proc.pid)
    out, _ = proc.communicate()
    peak = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (rc {proc.returncode}):\n{out[-3000:]}")
    return out, peak


def ours(args: argparse.Namespace, data: Path) -> Run:
    """Our run in a child process, timed by `/usr/bin/time -v` as peer_train.sh times ultralytics."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as time_log:
        cmd = ["/usr/bin/time", "-v", "-o", time_log.name, sys.executable, str(Path(__file__).resolve())]
        cmd += [str(data), "--child", "--model", args.model, "--imgsz", str(args.imgsz), "--batch", str(args.batch)]
        cmd += ["--workers", str(args.workers), "--threads", str(args.threads), "--epochs", str(args.epochs)]
        cmd += ["--compile"] if args.compile else []
        out, peak = run_sampled(cmd)
        maxrss_kb = next(int(line.split(":")[1]) for line in time_log if "Maximum resident set size" in line)
    epochs = lines_starting(out, "OURS_EPOCH")
    epoch_s, train_s = [float(e["epoch_s"]) for e in epochs], [float(e["train_s"]) for e in epochs]
    return Run(epoch_s, train_s, peak, maxrss_kb / 1024, epochs[-1].get("threads", "?"))


def theirs(args: argparse.Namespace, data: Path, work: Path) -> Run | None:
    tools = peer_tools()
    if tools is None:
        return None
    peer_yaml = absolute_data_yaml(data, work)
    env = {
        **os.environ,
        "PEER_VENV": str(tools.python.parents[1]),
        "PEER_WORKERS": str(args.workers),
        "PEER_THREADS": str(args.threads),
    }
    cmd = ["bash", str(tools.scripts / "peer_train.sh"), str(peer_yaml), f"{args.model}.yaml", str(args.epochs)]
    cmd += [str(args.imgsz), str(args.batch), str(work / "peer-run"), "close_mosaic=0"]
    out, peak = run_sampled(cmd, env)
    epochs = lines_starting(out, "PEER_EPOCH")
    final = lines_starting(out, "PEER")[-1]  # its /usr/bin/time -v figure, for the largest process
    return Run(
        [float(e["epoch_s"]) for e in epochs],
        [float(e["train_s"]) for e in epochs],
        peak,
        float(final["peak_rss_mb"]),
        (lines_starting(out, "PEER_INFO") or [{}])[-1].get("torch_threads", "?"),
    )


def child(args: argparse.Namespace) -> int:
    """Our training run (inside the measured child process): one `OURS_EPOCH` line per epoch."""
    import torch

    from accelyolo.commands.fit import fit
    from accelyolo.training.callbacks import Callback

    class EpochTimes(Callback):
        def on_epoch_start(self, trainer, epoch) -> None:
            self.start, self.threads = time.perf_counter(), torch.get_num_threads()

        def on_epoch_end(self, trainer, row) -> None:
            total = time.perf_counter() - self.start
            print(
                f"OURS_EPOCH epoch={row['epoch']} train_s={row['time_s']:.2f} val_s={total - row['time_s']:.2f} "
                f"epoch_s={total:.2f} threads={self.threads}",
                flush=True,
            )

    extra = {"compile": True} if args.compile else {}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        fit(
            data=args.data,
            model=args.model,
            imgsz=args.imgsz,
            batch_size=args.batch,
            workers=args.workers,
            epochs=args.epochs,
            close_mosaic=0,
            project=tmp,
            plots=False,
            callbacks=[EpochTimes()],
            **extra,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="data.yaml (default: coco128)")
    parser.add_argument("--varied", action="store_true", help="train on the generated set of varied image sizes")
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads of both")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate ours and theirs this many times")
    parser.add_argument("--compile", action="store_true", help="ours with --compile (torch.compile)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="epoch-bench-") as tmp:
        work = Path(tmp)
        if args.varied:
            from varied_set import make_varied_set

            data = make_varied_set(work / "varied")
        else:
            data = Path(args.data).resolve()
            if not data.is_file():
                print(f"data.yaml '{args.data}' not found; pass one as the first argument", file=sys.stderr)
                return 2
        print(
            f"data={data} model={args.model} imgsz={args.imgsz} batch={args.batch} workers={args.workers} "
            f"threads={args.threads} epochs={args.epochs} compile={args.compile}",
            flush=True,
        )
        mine, peer = [], []
        for k in range(args.repeat):
            mine.append(ours(args, data))
            report("ours", k, mine[-1])
            their = theirs(args, data, work)
            if their is not None:
                peer.append(their)
                report("ultralytics", k, their)
    ours_s = statistics.median(run.epoch_s[-1] for run in mine)
    print(f"ours_epoch_s={ours_s:.2f} ours_peak_rss_mb={max(run.peak_rss_mb for run in mine):.0f}")
    if not peer:
        print("(no ../peer-venv or ../shared/peer beside the checkout: ours alone)")
        print(f"epoch_s={ours_s:.2f}")
        return 0
    theirs_s = statistics.median(run.epoch_s[-1] for run in peer)
    print(f"ultralytics_epoch_s={theirs_s:.2f} ultralytics_peak_rss_mb={max(run.peak_rss_mb for run in peer):.0f}")
    print(f"epoch_ratio={ours_s / theirs_s:.3f}")
    return 0


def report(side: str, k: int, run: Run) -> None:
    last, train = run.epoch_s[-1], run.train_s[-1]
    print(
        f"{side} run {k + 1}: last epoch {last:.2f} s ({train:.2f} s training, {last - train:.2f} s validation "
        f"and saving); epochs {' '.join(f'{s:.2f}' for s in run.epoch_s)} s; peak_rss_mb={run.peak_rss_mb:.0f} "
        f"max_process_rss_mb={run.max_process_rss_mb:.0f} threads={run.threads}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
