"""Issue 13 item 12: an error on one rank of a DDP run ends every rank, with the message printed once."""

from __future__ import annotations

import subprocess
import textwrap
import time

import pytest

from tests.conftest import TINY_ANCHOR_FREE
from tests.test_distributed import env, launch_args

# rank 1 cannot read the data (as when a network mount is missing on one machine); rank 0 can
SCRIPT = """
import os
import sys

from accelyolo.training import experiment
from accelyolo.data.spec import DataConfigError

real = experiment.load_data_yaml


def unreadable_on_rank_1(path):
    if os.environ.get("RANK") == "1":
        raise DataConfigError(f"{path}: cannot be read on this machine (simulated)")
    return real(path)


experiment.load_data_yaml = unreadable_on_rank_1
from accelyolo.commands.train import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_error_on_rank_1_ends_both_ranks_with_one_message(tiny_demo, tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(textwrap.dedent(SCRIPT))
    flags = [
        "--data",
        str(tiny_demo),
        "--model",
        TINY_ANCHOR_FREE,
        "--imgsz",
        "64",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--project",
        str(tmp_path / "runs"),
        "--no-plots",
    ]
    start = time.monotonic()
    proc = subprocess.run(
        launch_args(2) + [str(script), *flags], env=env(), capture_output=True, text=True, timeout=300
    )
    seconds = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert log.count("cannot be read on this machine (simulated)") == 1, log[-4000:]
    assert "accelyolo train: " in log
    # no traceback from either rank (the launcher reports the failed child in its own words)
    assert "[rank0]: Traceback" not in log and "[rank1]: Traceback" not in log, log[-4000:]
    assert not (tmp_path / "runs").exists()
    assert seconds < 240, f"took {seconds:.0f} s"  # the launch itself takes tens of seconds on a loaded CPU
