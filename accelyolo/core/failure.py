"""One failure, one message: how a process of a distributed run tells the others why it stopped.

A process that fails (a user error on one rank: data it cannot read, a folder it cannot write) leaves,
before it exits, its message in the store every process of a `torch.distributed` run shares (the
launcher's rendezvous store, which outlives any one process). The other processes then fail too: their
next collective breaks when the peer's connection closes (gloo), or the launcher (torchrun, `accelerate
launch`) stops them. Each of them turns that collective error into a `DistributedError` carrying the
first failing process's message, marked as already reported, so the entry point exits with status 2 and
the message is printed once, by the process that failed first. On one process nothing changes.
"""

from __future__ import annotations

import time

from accelyolo.core.errors import AccelyoloError, DistributedError

_COUNT_KEY = "accelyolo/failures"
_MESSAGE_KEY = "accelyolo/failure_message"


def _store_and_rank():
    """The default process group's store and this rank, or (None, 0) outside a distributed run."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None, 0
    try:  # torch keeps the store of the default group private; it is the launcher's rendezvous store
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store(), dist.get_rank()
    except (ImportError, RuntimeError):
        return None, dist.get_rank()


def share_failure(error: BaseException, wait_s: float = 3.0) -> BaseException:
    """The exception this process should raise for `error` in a distributed run (see the module text).

    A user error (`AccelyoloError`) is published when it is the run's first failure, else marked as
    reported elsewhere. Any other error is looked up: when another process published a failure, a
    `DistributedError` with that message (already reported) replaces it; otherwise `error` is returned.
    """
    store, rank = _store_and_rank()
    if store is None:
        return error
    try:
        if isinstance(error, AccelyoloError):
            if store.add(_COUNT_KEY, 1) == 1:
                store.set(_MESSAGE_KEY, f"process {rank}: {error}")
            else:
                error.reported_elsewhere = True
            return error
        deadline = time.monotonic() + wait_s
        while not store.check([_MESSAGE_KEY]):
            if time.monotonic() > deadline:
                return error
            time.sleep(0.05)
        message = store.get(_MESSAGE_KEY).decode()
    except Exception:  # the store is gone with the launcher: the original error is all we have
        return error
    failure = DistributedError(f"stopped because another process failed: {message}")
    failure.reported_elsewhere = True
    return failure


_CLOSE_AT_EXIT_REGISTERED = False


def close_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits (registered once per process).

    A process that reaches interpreter shutdown with its gloo group still open can abort there ("terminate
    called without an active exception", SIGABRT) while its peer exits first; closing the group from an
    `atexit` handler tears it down while Python is still whole. No barrier here: a peer may be gone already.
    """
    global _CLOSE_AT_EXIT_REGISTERED
    if _CLOSE_AT_EXIT_REGISTERED:
        return
    import atexit

    def close() -> None:
        import contextlib

        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):  # already torn down by the launcher: nothing left to close
                dist.destroy_process_group()

    atexit.register(close)
    _CLOSE_AT_EXIT_REGISTERED = True
