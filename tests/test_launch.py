"""Several processes from Python and from a notebook (`accelyolo.fit(..., num_processes=2)`), on CPU with gloo.

The launches run in fresh interpreters (a script, a Jupyter kernel): forking this test process, which has
already trained in earlier tests, is what `accelyolo.commands.launch` refuses to do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from safetensors import safe_open

from tests.conftest import tiny_train_options
from tests.test_distributed import TRAIN, env, launch_args, run, train_flags


def python_call(data, project, num_processes: int = 2, **extra) -> str:
    """A script that trains through `accelyolo.fit(..., num_processes=N)` with the options `train_flags` gives
    `accelerate launch`, and prints the returned FitResult as JSON."""
    options = tiny_train_options(data, project, epochs=1, batch_size=4, max_steps_per_epoch=3, **extra)
    return textwrap.dedent(
        f"""
        import json, accelyolo
        result = accelyolo.fit(**{options!r}, num_processes={num_processes})
        print("FIT_RESULT", json.dumps({{"run_dir": str(result.run_dir), "epochs": result.epochs_completed}}))
        """
    )


def tensors(path) -> dict:
    with safe_open(path, framework="pt") as file:
        return {k: file.get_tensor(k) for k in file.keys() if k.startswith(("model.", "ema."))}  # noqa: SIM118


def world_size_of(path) -> int:
    """The number of ranks whose RNG states a bundle saved: the processes that trained it."""
    with safe_open(path, framework="pt") as file:
        return len({k.split(".")[1] for k in file.keys() if k.startswith("rng.")})  # noqa: SIM118


@pytest.mark.slow
def test_two_processes_from_a_python_call_train_what_accelerate_launch_trains(tiny_demo, tmp_path):
    import torch

    run(
        launch_args(2)
        + [TRAIN]
        + train_flags(tiny_demo, tmp_path / "launched", "--epochs", "1", "--max-steps-per-epoch", "3")
    )
    proc = run([sys.executable, "-c", python_call(tiny_demo, tmp_path / "called")])
    result = json.loads(proc.stdout.split("FIT_RESULT", 1)[1])
    assert result == {"run_dir": str(tmp_path / "called" / "exp"), "epochs": 1}  # the main process's FitResult
    log = proc.stdout + proc.stderr
    assert "world size 2 (MULTI_CPU" in log and "validation: 8 + 8 images on 2 ranks" in log
    launched = tmp_path / "launched" / "exp" / "weights" / "last.safetensors"
    called = tmp_path / "called" / "exp" / "weights" / "last.safetensors"
    assert world_size_of(called) == world_size_of(launched) == 2
    expected, got = tensors(launched), tensors(called)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


@pytest.mark.slow
def test_a_failing_child_is_one_error_in_the_caller(tmp_path):
    script = textwrap.dedent(
        f"""
        import accelyolo
        from accelyolo.commands.launch import LaunchError
        try:
            accelyolo.fit(data={str(tmp_path / "missing.yaml")!r}, model="yolov8t", imgsz=64, epochs=1,
                          project={str(tmp_path)!r}, num_processes=2)
        except LaunchError as error:
            print("LAUNCH_ERROR", error)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env(), capture_output=True, text=True, timeout=300)
    line = proc.stdout.split("LAUNCH_ERROR ", 1)[-1].strip()
    assert "missing.yaml" in line and "\n" not in line, proc.stdout + proc.stderr


@pytest.mark.slow
def test_after_multi_threaded_work_in_the_caller_the_processes_train_on_one_thread(tiny_demo, tmp_path):
    # OpenMP's thread pool, once running here, does not survive a fork: a child using 2 threads would hang
    warm_up = "import torch; torch.set_num_threads(2); torch.ones(1 << 22).mul(2).sum()\n"
    script = warm_up + python_call(tiny_demo, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**env(), "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "each training process runs on one thread" in log and "world size 2" in log
    assert "threads: 1 (OMP_NUM_THREADS=1" in log


def test_launch_refuses_before_forking(monkeypatch):
    from accelerate.state import AcceleratorState

    import accelyolo
    from accelyolo.commands.launch import LaunchError
    from accelyolo.core.config import ConfigError

    monkeypatch.setattr(AcceleratorState, "_shared_state", {"distributed_type": "NO"})
    with pytest.raises(LaunchError, match="an Accelerator was already created in this process"):
        accelyolo.fit("demo", num_processes=2)
    monkeypatch.setattr(AcceleratorState, "_shared_state", {})
    with pytest.raises(ConfigError, match="epochs"):
        accelyolo.fit("demo", epochs="many", num_processes=2)


@pytest.mark.slow
def test_a_jupyter_kernel_trains_on_two_processes(tiny_demo, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in env().items():  # the kernel inherits this environment: gloo on CPU, one thread
        monkeypatch.setenv(key, value)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import accelyolo"),
        nbformat.v4.new_code_cell(python_call(tiny_demo, tmp_path)),
    ]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[1].outputs if o.get("name") == "stdout")
    result = json.loads(printed.split("FIT_RESULT", 1)[1])
    assert result == {"run_dir": str(tmp_path / "exp"), "epochs": 1}
    assert world_size_of(tmp_path / "exp" / "weights" / "last.safetensors") == 2
