"""CPU threads under `accelerate launch`: accelerate's one-thread default is replaced by the cores this process
has; a count the user chose (the launch flag, OMP_NUM_THREADS, torch.set_num_threads) is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accelyolo.core import threads
from accelyolo.core.threads import Launcher, launch_options, plan_threads
from tests.conftest import TINY_ANCHOR_FREE

REPO = Path(__file__).resolve().parents[1]
DEFAULT = Launcher(options=["--config_file", "accelerate_config.yaml", "accelyolo/train.py"], environ={})
ACCELERATE_ENV = {"OMP_NUM_THREADS": "1"}  # what accelerate launch gives the process it starts


# ------------------------------------------------------------------------------ the decision


def test_accelerate_default_becomes_the_available_cores():
    plan = plan_threads(ACCELERATE_ENV, DEFAULT, cores=8, local_processes=1)
    assert plan.threads == 8
    assert plan.reason == "cores available to this process, divided among 1 local process"


def test_cores_are_divided_among_the_local_processes_at_least_one_each():
    assert plan_threads(ACCELERATE_ENV, DEFAULT, cores=8, local_processes=2).threads == 4
    assert plan_threads(ACCELERATE_ENV, DEFAULT, cores=7, local_processes=2).threads == 3
    assert plan_threads(ACCELERATE_ENV, DEFAULT, cores=2, local_processes=4).threads == 1
    plan = plan_threads(ACCELERATE_ENV, DEFAULT, cores=2, local_processes=0)
    assert plan.threads == 2 and "1 local process" in plan.reason
    assert "2 local processes" in plan_threads(ACCELERATE_ENV, DEFAULT, cores=8, local_processes=2).reason


@pytest.mark.parametrize(
    "flag",
    [
        ["--num_cpu_threads_per_process", "1"],
        ["--num_cpu_threads_per_process=1"],
        ["--num-cpu-threads-per-process", "1"],
    ],
)
def test_the_launch_flag_is_kept(flag):
    launcher = Launcher(options=[*flag, "--config_file", "c.yaml", "train.py"], environ={})
    plan = plan_threads(ACCELERATE_ENV, launcher, cores=8, local_processes=1)
    assert plan.threads is None
    assert plan.reason == "OMP_NUM_THREADS=1, set by you with --num_cpu_threads_per_process"


def test_the_users_omp_num_threads_is_kept():
    launcher = Launcher(options=DEFAULT.options, environ={"OMP_NUM_THREADS": "1", "HOME": "/root"})
    plan = plan_threads(ACCELERATE_ENV, launcher, cores=8, local_processes=1)
    assert (plan.threads, plan.reason) == (None, "OMP_NUM_THREADS=1, set by you")


def test_a_count_set_in_the_process_is_kept():
    plan = plan_threads(ACCELERATE_ENV, DEFAULT, cores=8, local_processes=1, set_in_process=True)
    assert plan.threads is None and "torch.set_num_threads" in plan.reason


def test_without_accelerate_launch_nothing_changes():
    assert plan_threads({}, None, cores=8, local_processes=1).threads is None  # python -m accelyolo.train, fit()
    plan = plan_threads({"OMP_NUM_THREADS": "3"}, None, cores=8, local_processes=1)
    assert (plan.threads, plan.reason) == (None, "OMP_NUM_THREADS=3 from the environment")
    # a launcher that somehow left OMP_NUM_THREADS unset: torch's own count stands
    assert plan_threads({}, DEFAULT, cores=8, local_processes=1).threads is None


def test_launch_options_recognizes_the_spellings_of_accelerate_launch():
    script = ["--config_file", "c.yaml", "train.py", "--epochs", "1"]
    assert launch_options(["/venv/bin/python3", "/venv/bin/accelerate", "launch", *script]) == script
    assert launch_options(["/venv/bin/accelerate", "launch", *script]) == script
    assert launch_options(["python", "/venv/bin/accelerate-launch", *script]) == script
    assert launch_options(["python", "-m", "accelerate.commands.launch", *script]) == script
    assert launch_options(["python", "-m", "accelerate.commands.accelerate_cli", "launch", *script]) == script
    assert launch_options([r"C:\venv\Scripts\accelerate.exe", "launch", *script]) == script
    assert launch_options(["/venv/bin/accelerate", "config"]) is None
    assert launch_options(["/usr/bin/python3", "-m", "pytest", "tests"]) is None
    assert launch_options([]) is None


# ------------------------------------------------------------------------------ applying it


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_applied", None)
    yield
    torch.set_num_threads(before)


def test_use_available_cores_sets_the_count_on_cpu_under_the_default(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "find_launcher", lambda: DEFAULT)
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    torch.set_num_threads(1)
    line = threads.use_available_cores(torch.device("cpu"))
    assert line == "threads: 3 (cores available to this process, divided among 1 local process)"
    assert torch.get_num_threads() == 3
    # a second fit() in the same process sets it again (the count is its own, not the user's)
    assert threads.use_available_cores(torch.device("cpu")) == line
    torch.set_num_threads(2)  # then the user's own choice is kept
    assert threads.use_available_cores(torch.device("cpu")).startswith("threads: 2 (set in this process")
    assert torch.get_num_threads() == 2


def test_use_available_cores_leaves_a_gpu_run_alone(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "find_launcher", lambda: DEFAULT)
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    torch.set_num_threads(1)
    line = threads.use_available_cores(torch.device("cuda", 0))
    assert line == "threads: 1 (OMP_NUM_THREADS=1, accelerate launch's default; left as they are on a cuda device)"
    assert torch.get_num_threads() == 1


def test_use_available_cores_outside_accelerate_launch_keeps_the_count(monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)  # e.g. the user's, before fit()
    assert threads.find_launcher() is None  # pytest's parent is no accelerate launch
    line = threads.use_available_cores(torch.device("cpu"))
    assert line == "threads: 1 (PyTorch's count in this process; OMP_NUM_THREADS is not set)"
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------------ real launches


def launch_threads(tiny_demo: Path, project: Path, *launch_flags: str, omp: str | None = None) -> int:
    """Train one tiny epoch under `accelerate launch` with the shipped config; the logged thread count."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU device even on a GPU machine: the case this is about
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [accelerate, "launch", "--config_file", str(REPO / "accelerate_config.yaml"), *launch_flags]
    cmd += [str(REPO / "accelyolo" / "train.py"), "--data", str(tiny_demo), "--model", TINY_ANCHOR_FREE]
    cmd += ["--imgsz", "64", "--batch-size", "8", "--epochs", "1", "--max-steps-per-epoch", "2", "--workers", "0"]
    cmd += ["--project", str(project), "--name", "exp", "--no-plots", "--close-mosaic", "0", "--no-rect-val"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{log[-4000:]}"
    assert "device cpu" in log
    found = re.findall(r"threads: (\d+) \(", log)
    assert len(found) == 1, log[-4000:]
    return int(found[0])


@pytest.mark.slow
def test_launch_without_a_thread_flag_uses_every_available_core(tiny_demo, tmp_path):
    assert launch_threads(tiny_demo, tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_launch_keeps_num_cpu_threads_per_process(tiny_demo, tmp_path):
    assert launch_threads(tiny_demo, tmp_path, "--num_cpu_threads_per_process", "1") == 1


@pytest.mark.slow
def test_launch_keeps_the_users_omp_num_threads(tiny_demo, tmp_path):
    assert launch_threads(tiny_demo, tmp_path, omp="1") == 1
