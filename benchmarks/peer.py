"""The measuring instrument beside ours: ultralytics 8.4 run through `../shared/peer/` in `../peer-venv`.

ultralytics is AGPL: it is never imported here, only run as a separate program from its own virtual
environment (set-up: `../shared/peer/README.md`). Every benchmark that compares with it finds it through
`peer_tools()`, which is None on a machine without the venv or without `../shared` (a user's fresh clone):
the benchmark then prints our figure alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]  # the checkout
WORKSPACE = ROOT.parent  # beside the checkout: shared/, peer-venv/


@dataclass(frozen=True)
class PeerTools:
    python: Path  # the peer venv's interpreter
    scripts: Path  # ../shared/peer

    def run(self, script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 7200) -> str:
        """Run one of the peer scripts (`.py` with the venv's python, `.sh` with bash); its stdout.

        Raises RuntimeError with the tail of its output when it fails."""
        path = self.scripts / script
        cmd = ["bash", str(path)] if script.endswith(".sh") else [str(self.python), str(path)]
        full_env = {**os.environ, "PEER_VENV": str(self.python.parents[1]), **(env or {})}
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"peer {script} failed (rc {proc.returncode}):\n{tail}")
        return proc.stdout


def peer_tools() -> PeerTools | None:
    """The peer venv and scripts when both exist beside the checkout, else None."""
    python, scripts = WORKSPACE / "peer-venv" / "bin" / "python", WORKSPACE / "shared" / "peer"
    if python.is_file() and scripts.is_dir():
        return PeerTools(python, scripts)
    return None


def absolute_data_yaml(data_yaml: str | Path, out_dir: str | Path | None = None) -> Path:
    """A copy of `data_yaml` whose `path` is absolute (ultralytics resolves a relative `path` against its
    own datasets folder, not the yaml's); written to `out_dir` (a new temporary folder by default)."""
    data_yaml = Path(data_yaml).resolve()
    spec = yaml.safe_load(data_yaml.read_text())
    base = Path(spec.get("path") or ".")
    spec["path"] = str(base if base.is_absolute() else (data_yaml.parent / base).resolve())
    out = Path(out_dir or tempfile.mkdtemp(prefix="peer-data-")) / data_yaml.name
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def parse_fields(line: str) -> dict[str, str]:
    """`key=value` pairs of one line of a peer script (`PEER_LOADER workers=0 imgs_per_s=767.4 ...`)."""
    return dict(re.findall(r"(\w+)=(\S+)", line))


def lines_starting(text: str, prefix: str) -> list[dict[str, str]]:
    """The `key=value` fields of every line of `text` that starts with `prefix + " "`."""
    return [parse_fields(line) for line in text.splitlines() if line.startswith(prefix + " ")]
