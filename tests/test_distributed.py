"""Real `accelerate launch` runs: the CLI entry point, two CPU processes (gloo), two machines on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "accelyolo" / "train.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_args(processes: int, machines: int = 1, rank: int = 0, port: int | None = None) -> list[str]:
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if processes == 1:
        return [accelerate, "launch", "--config_file", str(REPO / "accelerate_config.yaml")]
    args = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        str(machines),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port or free_port()),
    ]
    if machines > 1:
        args += ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
    return args


def env() -> dict[str, str]:
    e = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def train_flags(data: Path, project: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--model",
        TINY_ANCHOR_FREE,
        "--imgsz",
        "64",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--project",
        str(project),
        "--name",
        "exp",
        "--warmup-epochs",
        "0",
        "--no-plots",
        "--close-mosaic",
        "0",
        "--no-rect-val",
        *extra,
    ]


def run(cmd: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nSTDOUT\n{proc.stdout[-4000:]}\nSTDERR\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_single_process_launch_with_shipped_config(tiny_demo, tmp_path):
    proc = run(launch_args(1) + [TRAIN] + train_flags(tiny_demo, tmp_path, "--epochs", "1"))
    assert (tmp_path / "exp" / "weights" / "last.safetensors").is_file()
    assert "results in" in proc.stdout


@pytest.mark.slow
def test_two_processes_train_validate_save_once_and_resume(tiny_demo, tmp_path):
    proc = run(launch_args(2) + [TRAIN] + train_flags(tiny_demo, tmp_path, "--epochs", "2"))
    log = proc.stdout + proc.stderr
    assert "world size 2" in log
    # every rank validated its own shard; the records of both were merged (16 val images, none twice)
    assert "validation: 8 + 8 images on 2 ranks" in log
    assert log.count("saved weights/last.safetensors") == 2  # once per epoch, not once per rank
    run_dir = tmp_path / "exp"
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == [
        "best.safetensors",
        "inference.safetensors",
        "last.safetensors",
    ]
    proc = run(launch_args(2) + [TRAIN, "--resume", str(run_dir / "weights" / "last.safetensors"), "--epochs", "3"])
    assert "resuming" in proc.stdout + proc.stderr
    assert (run_dir / "results.csv").read_text().count("\n") == 4  # header + 3 epochs


def _same_image_dataset(root: Path, source_yaml: Path, copies: int = 8) -> Path:
    """A dataset of one demo image repeated, so any split of a batch across ranks sees equal halves."""
    src_images = sorted((source_yaml.parent / "images" / "train").iterdir())
    image = next(p for p in src_images if (source_yaml.parent / "labels" / "train" / f"{p.stem}.txt").read_text())
    label = source_yaml.parent / "labels" / "train" / f"{image.stem}.txt"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(copies):
            shutil.copy(image, root / "images" / split / f"{i:03d}{image.suffix}")
            shutil.copy(label, root / "labels" / split / f"{i:03d}.txt")
    names = yaml.safe_load(source_yaml.read_text())["names"]
    spec = {"path": ".", "train": "images/train", "val": "images/val", "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(spec))
    return root / "data.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("model_name", [TINY_ANCHOR_BASED, TINY_ANCHOR_FREE])
def test_two_process_step_equals_one_process_step_over_the_global_batch(tiny_demo, tmp_path, model_name):
    import torch

    from accelyolo.families import build_model
    from accelyolo.weights.checkpoint import save_checkpoint

    # Equal shards (one image repeated) keep BatchNorm's batch statistics equal on every rank. The
    # anchor-based loss is a mean per element / matched target; the anchor-free one divides by
    # max(target score sum, 1), which each rank takes over the global batch (all-reduced): on an untrained
    # tiny model that sum is below 1 per half batch, where a per-rank normaliser would halve the step.
    data = _same_image_dataset(tmp_path / "same", tiny_demo)
    nc = len(yaml.safe_load(data.read_text())["names"])
    torch.manual_seed(0)
    model = build_model(model_name, nc=nc)
    init = tmp_path / "init.safetensors"
    save_checkpoint(init, model_state=model.state_dict(), metadata={"model": model.config})
    start = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    # clipping off: a clipped update hides a wrongly scaled gradient
    no_aug = [
        "--weights",
        str(init),
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--optimizer",
        "SGD",  # SGD's step is linear in the gradient; AdamW's normalised step magnifies float noise
        "--lr0",
        "0.01",
        "--max-grad-norm",
        "0",
        "--mosaic",
        "0",
        "--hsv-h",
        "0",
        "--hsv-s",
        "0",
        "--hsv-v",
        "0",
        "--translate",
        "0",
        "--scale",
        "0",
        "--fliplr",
        "0",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    model_flag = ["--model", model_name]
    run(launch_args(1) + [TRAIN] + train_flags(data, one, *no_aug, *model_flag, "--batch-size", "4"))
    run(launch_args(2) + [TRAIN] + train_flags(data, two, *no_aug, *model_flag, "--batch-size", "2"))
    a = load_file(str(one / "exp" / "weights" / "last.safetensors"))
    b = load_file(str(two / "exp" / "weights" / "last.safetensors"))
    compared = 0
    for key, before in start.items():
        if before.dtype.kind != "f" or key.endswith("running_var") or key.endswith("running_mean"):
            continue
        da, db = a[key] - before, b[key] - before  # the update each run made to this tensor
        scale = max(float(np.abs(da).max()), 1e-8)
        # float32 resolution at the weight's size (BatchNorm weights near 1.0 round to ~1.2e-7) bounds how
        # closely two sums in another order can agree
        resolution = 16 * float(np.spacing(np.abs(before).max().astype(np.float32)))
        # the anchor-free loss (assigner top-k, softmax DFL) sums more terms in another order: 1e-2 of the
        # update still tells an exact normaliser from a per-rank one, which is off by a factor of 2
        rel = 1e-3 if model_name == TINY_ANCHOR_BASED else 1e-2
        assert float(np.abs(da - db).max()) <= rel * scale + resolution + 1e-7, key
        compared += 1
    assert compared > 50


@pytest.mark.slow
def test_two_machines_on_loopback_train(tiny_demo, tmp_path):
    port = free_port()
    cmds = [
        launch_args(2, machines=2, rank=r, port=port)
        + [TRAIN]
        + train_flags(tiny_demo, tmp_path / f"m{r}", "--epochs", "1")
        for r in (0, 1)
    ]
    procs = [subprocess.Popen(c, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    assert "world size 2" in outs[0]
    assert (tmp_path / "m0" / "exp" / "weights" / "last.safetensors").is_file()
