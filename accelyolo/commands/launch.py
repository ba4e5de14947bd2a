"""Several processes from Python or a notebook: `accelyolo.fit(..., num_processes=N)` (or `launch(...)`).

It starts N training processes with `accelerate.notebook_launcher` (torch's elastic launcher, forking this
process) and returns the main process's `FitResult`. Forking is what lets a function of a notebook run in
the children, and it is why nothing device-related may have started in this process before: a CUDA context
does not survive a fork (the check below refuses it with a message), nor does an `Accelerator` made here.
accelyolo itself starts nothing at import, and the options are validated here, before any fork, so a bad
option is one error in this process rather than one per child.

The children are told nothing through pickles: rank 0 writes its `FitResult` as JSON into a temporary
folder that this process reads back; a child that fails with an accelyolo error writes its message there
too, and this process raises it as a `LaunchError` (one line, the first failing rank's).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from accelyolo.core.errors import DistributedError
from accelyolo.training.records import FitResult

__all__ = ["LaunchError", "launch"]

_RESULT, _ERROR = "result.json", "error-rank{}.json"


class LaunchError(DistributedError):
    """A launched training process failed; the message is its error (or how the launch itself failed)."""


def launch(
    recipe: str | None = None,
    *,
    num_processes: int,
    port: int | None = None,
    **fit_kwargs: Any,
) -> FitResult:
    """Train on `num_processes` processes of this machine (GPUs, or CPU processes with gloo when there is no
    GPU) and return the main process's `FitResult`; the keywords are `fit()`'s. One process trains here,
    without a launcher."""
    from accelyolo.commands.fit import fit

    if num_processes <= 1:
        return fit(recipe, **fit_kwargs)
    _check_fork_safe()
    _check_options(recipe, fit_kwargs)
    single_threaded = not _forked_threads_work()
    from accelerate import notebook_launcher

    mixed_precision = fit_kwargs.get("mixed_precision") or "no"
    with tempfile.TemporaryDirectory(prefix="accelyolo-launch-") as exchange:
        try:
            notebook_launcher(
                _train_in_child,
                args=(exchange, recipe, fit_kwargs, single_threaded),
                num_processes=num_processes,
                mixed_precision=mixed_precision,
                use_port=str(port or _free_port()),
            )
        except Exception as error:  # the elastic launcher's report of a failed child, or a refused launch
            raise _launch_error(Path(exchange), error) from None
        result = Path(exchange) / _RESULT
        if not result.is_file():
            raise LaunchError(f"the {num_processes} processes ended without the main process's result")
        return _result_from_json(json.loads(result.read_text()))


def _train_in_child(exchange: str, recipe: str | None, fit_kwargs: dict[str, Any], single_threaded: bool) -> None:
    """One launched process: the training, and (rank 0) the result written for the parent."""
    from accelyolo.commands.fit import fit
    from accelyolo.core.errors import AccelyoloError

    _use_gloo_without_gpu()
    if single_threaded:  # see _forked_threads_work
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"  # Accelerate would raise the count again on a CPU
        torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = fit(recipe, **fit_kwargs)
    except AccelyoloError as error:
        if not error.reported_elsewhere:  # the rank that raised it, not one told to stop by another
            message = {"type": type(error).__name__, "message": str(error)}
            (Path(exchange) / _ERROR.format(rank)).write_text(json.dumps(message))
        raise SystemExit(2) from None  # the caller raises the message; no traceback per child
    if rank == 0:
        (Path(exchange) / _RESULT).write_text(json.dumps(_result_to_json(result)))


def _use_gloo_without_gpu() -> None:
    """Without a GPU, Accelerate joins the processes with gloo only when told to use the CPU (otherwise each
    would train alone). It then gives each its share of the physical cores unless OMP_NUM_THREADS is set."""
    import torch

    if not torch.cuda.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "1"


def _forked_threads_work(timeout_s: float = 5.0) -> bool:
    """Whether a forked process can run PyTorch on several threads. It cannot once this process has run
    multi-threaded PyTorch work (a cell that trained, validated or predicted): the OpenMP thread pool does not
    survive a fork, and the child's first parallel operation waits forever for threads it does not have. A
    probe child runs one parallel operation; when it does not finish, the training processes run on one
    thread each (slower on a CPU, unchanged on a GPU) rather than hang."""
    import multiprocessing
    import sys

    torch = sys.modules.get("torch")
    if torch is None:  # not even imported: no pool can have started
        return True
    probe = multiprocessing.get_context("fork").Process(target=_parallel_operation, daemon=True)
    probe.start()
    probe.join(timeout_s)
    if probe.exitcode == 0:
        return True
    probe.kill()
    probe.join()
    import logging

    logging.getLogger("accelyolo").warning(
        "launch: this process already ran multi-threaded PyTorch work, whose thread pool forked processes cannot "
        "use; each training process runs on one thread. For all cores, restart the kernel and launch first."
    )
    return False


def _parallel_operation() -> None:
    import torch

    torch.set_num_threads(2)
    torch.ones(1 << 22).mul(2).sum()  # above ATen's grain size: an OpenMP parallel region


def _check_fork_safe() -> None:
    """Refuse, with what to do, the states a fork does not survive."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise LaunchError(
            "CUDA is already initialised in this process, and forked training processes cannot use it; restart "
            "the kernel and call accelyolo.fit(..., num_processes=N) before anything touches the GPU (in a "
            "script, use `accelerate launch accelyolo/train.py` instead)."
        )
    accelerate_state = sys.modules.get("accelerate.state")
    if accelerate_state is not None and accelerate_state.AcceleratorState._shared_state:
        raise LaunchError(
            "an Accelerator was already created in this process (a fit() without num_processes, for one); "
            "restart the kernel and launch before any other training in it."
        )


def _check_options(recipe: str | None, fit_kwargs: dict[str, Any]) -> None:
    """Validate the options before forking (the same checks fit() makes), so a mistake is one error here."""
    from accelyolo.core.config import load_config

    options = {k: v for k, v in fit_kwargs.items() if k not in ("callbacks", "parts", "trainer_class")}
    if not options.get("resume"):
        load_config(recipe, **options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_error(exchange: Path, error: Exception) -> LaunchError:
    """The first failing rank's accelyolo error when one wrote it, else the launcher's own message."""
    for path in sorted(exchange.glob(_ERROR.format("*"))):
        reported = json.loads(path.read_text())
        return LaunchError(reported["message"])
    return LaunchError(f"the launch failed: {' '.join(str(error).split())[:2000]}")


def _result_to_json(result: FitResult) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}


def _result_from_json(data: dict[str, Any]) -> FitResult:
    paths = {"run_dir", "last_checkpoint", "best_checkpoint", "inference_checkpoint"}
    values = {f.name: data[f.name] for f in fields(FitResult) if f.name in data}
    for key in paths & values.keys():
        values[key] = None if values[key] is None else Path(values[key])
    return FitResult(**values)
