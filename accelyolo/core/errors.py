"""The library's exception types: one base class, `AccelyoloError`, and one subclass per kind of problem.

Every error a user can cause (a bad option, data.yaml, checkpoint, model name, run folder) is an
`AccelyoloError` whose message names the file or key and says what to do; the command-line entry
points print that message and exit with status 2 (`exit_status`), never a traceback.
Most kinds also subclass `ValueError` (or `FileNotFoundError`, `OSError`, `RuntimeError`), so code
written against the older types keeps working.

This module imports nothing from the package: every layer may raise these.
"""

from __future__ import annotations

import sys

__all__ = [
    "AccelyoloError",
    "DataError",
    "DistributedError",
    "ExportError",
    "MissingDependencyError",
    "ModelNameError",
    "ResumeError",
    "RunFolderError",
    "SourceError",
]

# ConfigError (accelyolo.core.config), CheckpointError (accelyolo.weights.checkpoint) and DataConfigError
# (accelyolo.data.spec) are subclasses too; they live beside the code that raises them.


class AccelyoloError(Exception):
    """Base of every error a user can cause; its message is meant to be shown as it is.

    `reported_elsewhere` is set on the processes of a distributed run whose failure another process
    has already printed (see `accelyolo.core.failure`), so the message appears once.
    """

    reported_elsewhere: bool = False


class DataError(AccelyoloError, ValueError):
    """A dataset that cannot be trained or validated on: a split without usable images, classes that
    do not match the model."""


class ModelNameError(AccelyoloError, ValueError):
    """A model name that is not registered."""


class ResumeError(AccelyoloError, FileNotFoundError):
    """`--resume` with nothing to resume."""


class SourceError(AccelyoloError, FileNotFoundError):
    """An input named on the command line (`--source`) that is missing or holds no usable file."""


class RunFolderError(AccelyoloError, OSError):
    """A run folder (project/name) that cannot be created or written."""


class DistributedError(AccelyoloError, RuntimeError):
    """Another process of a distributed run failed; the message is that process's."""


class MissingDependencyError(AccelyoloError, ImportError):
    """An optional package a command needs is not installed (the message says which extra to install)."""


class ExportError(AccelyoloError, ValueError):
    """An export that cannot be made or a file that is not an accelyolo export."""


def exit_status(prog: str, error: AccelyoloError) -> int:
    """What every entry point does with a user's mistake: print `prog: message` on stderr as one line (once
    per distributed run: not where another process already printed it) and return the exit status 2. A
    message that quotes another library's (yaml's, torch's) spans lines; it is joined into one."""
    if not error.reported_elsewhere:
        print(f"{prog}: {' '.join(str(error).split())}", file=sys.stderr)
    return 2
