"""Run folders (`runs/train/exp`, `exp2`, ...) and finding the checkpoint to resume from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from accelyolo.core.errors import ResumeError, RunFolderError

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator


def increment_path(path: str | Path, exist_ok: bool = False) -> Path:
    """`runs/train/exp` if free (or exist_ok), else the first free `exp2`, `exp3`, ..."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    stem = re.sub(r"\d+$", "", path.name) or path.name
    taken = {p.name for p in path.parent.iterdir()} if path.parent.is_dir() else set()
    n = 2
    while f"{stem}{n}" in taken:
        n += 1
    return path.parent / f"{stem}{n}"


def find_resume_checkpoint(resume: str, project: str | Path) -> Path:
    """`auto`: the newest `weights/last.safetensors` under `project`; otherwise the path itself.

    A run folder is accepted too (its `weights/last.safetensors` is used).
    """
    if resume == "auto":
        candidates = sorted(Path(project).glob("**/weights/last.safetensors"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ResumeError(
                f"--resume auto found no weights/last.safetensors under '{project}'; "
                "pass the checkpoint path: --resume runs/train/exp/weights/last.safetensors"
            )
        return candidates[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.safetensors"
    if not path.is_file():
        raise ResumeError(f"--resume: checkpoint '{path}' does not exist; pass a run's weights/last.safetensors.")
    return path


def run_dir_of_checkpoint(path: Path) -> Path:
    """The run folder a `weights/*.safetensors` checkpoint belongs to."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "weights" else path.parent


def make_run_dir(
    accelerator: Accelerator, path: str | Path, exist_ok: bool = False, resume_from: str | Path | None = None
) -> Path:
    """The run folder every rank uses: the resumed checkpoint's run, or `increment_path(path)` chosen by the
    main process and broadcast to the others (which would otherwise race for `exp2`). Created on the main
    process."""
    from accelerate.utils import broadcast_object_list

    if resume_from is not None:
        run_dir = run_dir_of_checkpoint(Path(resume_from))
    else:
        chosen = [str(increment_path(path, exist_ok)) if accelerator.is_main_process else None]
        if accelerator.num_processes > 1:
            broadcast_object_list(chosen, from_process=0)
        run_dir = Path(chosen[0])
    if accelerator.is_main_process:
        create_folder(run_dir)
    return run_dir


def create_folder(path: Path) -> Path:
    """`mkdir -p path`, or a `RunFolderError` naming the folder when it cannot be made or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".accelyolo_write_test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise RunFolderError(
            f"cannot create or write the run folder '{path}' ({error.strerror or error}); "
            "pass a writable --project (and --name)."
        ) from None
    return path
