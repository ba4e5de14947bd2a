"""CPU threads: give PyTorch the cores this process has when `accelerate launch` chose one thread for it.

`accelerate launch` always sets `OMP_NUM_THREADS` in the processes it starts (`utils/launch.py` copies
`args.num_cpu_threads_per_process` into the child's environment). When `--num_cpu_threads_per_process` was
not given, `_validate_launch_command` in `commands/launch.py` (accelerate 1.x) fills it in: the launcher's
own `OMP_NUM_THREADS` if it has one, else 1, raised to physical cores / local processes only for a
`use_cpu` config with `OMP_NUM_THREADS` unset. The shipped `accelerate_config.yaml` says `use_cpu: false`
(it serves GPU machines too), so a CPU run trains on one core. The launched process sees only the result,
`OMP_NUM_THREADS=1`, the same as when the user asked for one thread, and accelerate sets no variable of
its own that tells the two apart.

The launcher itself does: the launched process is its child (the one-process launcher `Popen`s it; the
several-process launcher runs torchrun's agent in its own process, which `Popen`s the workers). Its
command line says whether `--num_cpu_threads_per_process` was given (accelerate's parser takes no
abbreviations, `allow_abbrev=False`, only the `-` spelling beside the `_` one; the config file has no such
key, unknown keys are refused; the same word among the training script's own arguments counts as given,
the safe side), and
its environment at start (`/proc/<pid>/environ` through psutil, which the launcher's own later
`os.environ` changes do not touch) says whether `OMP_NUM_THREADS` was already set. Neither given: the
count is accelerate's default, and `use_available_cores` replaces it with the cores available to this
process divided among the processes on this machine. Anything else (the flag, the user's variable, a
parent that is not `accelerate launch` or cannot be read, a `torch.set_num_threads` call made in this
process) is kept; a GPU run keeps its threads too. The line it returns names the count and its source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

THREADS_FLAG = "num_cpu_threads_per_process"
_applied: int | None = None  # the count use_available_cores set last in this process


@dataclass(frozen=True)
class Launcher:
    """The `accelerate launch` process that started this one."""

    options: Sequence[str]  # its command-line words after `launch`
    environ: Mapping[str, str]  # its environment when it started


@dataclass(frozen=True)
class ThreadPlan:
    """What to do with PyTorch's thread count, and why."""

    threads: int | None  # the count to set; None keeps the current one
    reason: str  # for the log, e.g. "OMP_NUM_THREADS=4, set by you"


def plan_threads(
    env: Mapping[str, str],
    launcher: Launcher | None,
    cores: int,
    local_processes: int,
    set_in_process: bool = False,
) -> ThreadPlan:
    """The thread count for a CPU process with environment `env`, started by `launcher` (None: not by
    `accelerate launch`, or unknown), `cores` CPUs available to it and `local_processes` processes on this
    machine. `set_in_process`: the current count is no longer the one `OMP_NUM_THREADS` gave (someone
    called `torch.set_num_threads`)."""
    omp = env.get("OMP_NUM_THREADS")
    if omp is None:
        return ThreadPlan(None, "PyTorch's count in this process; OMP_NUM_THREADS is not set")
    if launcher is None:
        return ThreadPlan(None, f"OMP_NUM_THREADS={omp} from the environment")
    if any(_is_threads_flag(word) for word in launcher.options):
        return ThreadPlan(None, f"OMP_NUM_THREADS={omp}, set by you with --{THREADS_FLAG}")
    if "OMP_NUM_THREADS" in launcher.environ:
        return ThreadPlan(None, f"OMP_NUM_THREADS={omp}, set by you")
    if set_in_process:
        return ThreadPlan(None, f"set in this process with torch.set_num_threads; OMP_NUM_THREADS={omp}")
    local_processes = max(local_processes, 1)
    plural = "" if local_processes == 1 else "es"
    return ThreadPlan(
        max(cores // local_processes, 1),
        f"cores available to this process, divided among {local_processes} local process{plural}",
    )


def _is_threads_flag(word: str) -> bool:
    """`--num_cpu_threads_per_process`, `--num-cpu-threads-per-process`, with or without `=N`."""
    return word.startswith("--") and word[2:].split("=", 1)[0].replace("-", "_") == THREADS_FLAG


def launch_options(argv: Sequence[str]) -> list[str] | None:
    """The words after `launch` when `argv` is an `accelerate launch` command line (any of its spellings:
    `accelerate launch`, `accelerate-launch`, `python -m accelerate.commands.launch`), else None."""
    for i, word in enumerate(argv):
        name = re.split(r"[\\/]", word)[-1].removesuffix(".exe")
        if name in ("accelerate-launch", "accelerate.commands.launch"):
            return list(argv[i + 1 :])
        if name in ("accelerate", "accelerate.commands.accelerate_cli") and argv[i + 1 : i + 2] == ["launch"]:
            return list(argv[i + 2 :])
    return None


def find_launcher() -> Launcher | None:
    """This process's parent when it is `accelerate launch` and its command line and starting environment
    can be read (psutil: Linux, macOS, Windows); else None."""
    try:
        import psutil  # a dependency of accelerate

        parent = psutil.Process(os.getppid())
        argv, environ = parent.cmdline(), parent.environ()
    except Exception:  # no psutil, the parent is gone, or it belongs to another user
        return None
    options = launch_options(argv)
    return None if options is None else Launcher(options, environ)


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one: taskset, cgroups cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_available_cores(device: torch.device) -> str:
    """Set PyTorch's thread count on a CPU device as `plan_threads` decides (call it on every process);
    returns the run header's line, e.g. `threads: 2 (cores available to this process, divided among 1
    local process)`. On another device the threads are left as they are."""
    global _applied
    from accelerate.utils import get_cpu_distributed_information

    current = torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    started_with = _applied if _applied is not None else (int(omp) if omp.isdigit() else current)
    plan = plan_threads(
        os.environ,
        find_launcher(),
        available_cores(),
        get_cpu_distributed_information().local_world_size,
        set_in_process=current != started_with,
    )
    if device.type != "cpu":
        reason = plan.reason if plan.threads is None else f"OMP_NUM_THREADS={omp}, accelerate launch's default"
        return f"threads: {current} ({reason}; left as they are on a {device.type} device)"
    if plan.threads is None:
        return f"threads: {current} ({plan.reason})"
    torch.set_num_threads(plan.threads)
    _applied = plan.threads
    return f"threads: {plan.threads} ({plan.reason})"
