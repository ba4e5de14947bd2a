"""accelyolo.core.memory: freed memory stays with the process (glibc), so reusing it costs no page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from accelyolo.core.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()  # applied, and a second call is harmless
faults = []
for step in range(12):  # a step's activations (64, 48 and 40 MB), every page touched, then freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(n << 20, dtype=torch.uint8) for n in (64, 48, 40)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[8:]))  # steps 9-12: the heap settles within the first 4-6 steps
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_freed_memory_is_reused_without_page_faults():
    usual, retained = _faults("usual"), _faults("retain")
    assert usual > 100_000  # 152 MB mmapped afresh each step: one fault per 4 KiB page
    assert retained < usual // 20


def test_retain_is_a_no_op_off_glibc(monkeypatch):
    from accelyolo.core import memory

    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory.retain_freed_memory() is False


TRIM_PROBE = """
import resource
import torch
from accelyolo.core.memory import give_back_freed_memory, retain_freed_memory
assert retain_freed_memory()
block = torch.ones(64 << 20, dtype=torch.uint8)
del block
assert give_back_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = torch.ones(64 << 20, dtype=torch.uint8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_given_back_memory_leaves_the_process():
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) > 10_000  # returned to the OS: the block is faulted in afresh
