"""Damaged, foreign and half-written checkpoint files, and the no-pickle rule."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from accelyolo.core import fileio
from accelyolo.weights import checkpoint
from accelyolo.weights.checkpoint import CheckpointError, load_checkpoint_bundle, save_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "accelyolo"


def write_valid(path: Path, epoch: int = 0) -> Path:
    state = {"w": torch.arange(64, dtype=torch.float32).reshape(8, 8), "b": torch.ones(8)}
    return save_checkpoint(path, model_state=state, metadata={"epoch": epoch})


def expect_error(path: Path, phrase: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_bundle(path)
    message = str(error.value)
    assert str(path) in message, message
    assert phrase in message, message
    assert isinstance(error.value, ValueError)
    return error.value


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "last.safetensors"
    path.write_bytes(b"")
    expect_error(path, "empty")


@pytest.mark.parametrize("keep", [0.5, 0.97, 0.02, 5])
def test_truncated_file(tmp_path, keep):
    data = write_valid(tmp_path / "full.safetensors").read_bytes()
    path = tmp_path / "last.safetensors"
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    expect_error(path, "truncated")


def test_random_bytes(tmp_path):
    path = tmp_path / "last.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expect_error(path, "not a safetensors file")


def test_json_garbage_header(tmp_path):
    path = tmp_path / "last.safetensors"
    body = b'{"w": {"dtype": "F32"}}'  # a header whose tensor entry has no offsets
    path.write_bytes(len(body).to_bytes(8, "little") + body)
    expect_error(path, "not a safetensors file")


def test_zip_checkpoint_is_called_a_pickle(tmp_path):
    path = tmp_path / "yolov5s.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the container torch.save writes
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    error = expect_error(path, "this looks like a PyTorch pickle checkpoint")
    assert "accelyolo reads only .safetensors bundles it wrote" in str(error)


def test_legacy_pickle_is_called_a_pickle(tmp_path):
    path = tmp_path / "last.safetensors"  # a misleading name does not matter
    path.write_bytes(b"\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")
    expect_error(path, "PyTorch pickle checkpoint")


def test_a_safetensors_header_whose_length_starts_like_a_pickle_is_read(tmp_path):
    """A header of 1,152 bytes is 80 04 00 ... as a u64, the same first two bytes as a pickle of protocol 4 (a
    best.safetensors of a distillation run once had such a length and was refused as a pickle)."""
    path = tmp_path / "best.safetensors"
    for pad in range(2000):
        save_file({"x": torch.zeros(2)}, str(path), metadata={"pad": "p" * pad})
        if path.read_bytes()[:2] == b"\x80\x04":
            break
    else:
        pytest.fail("no padding gave a header length that starts with 80 04")
    header = checkpoint._read_header(path)
    assert header["__metadata__"]["pad"] == "p" * pad and header["x"]["shape"] == [2]


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    expect_error(path, "without accelyolo metadata")


def test_newer_format_version(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", checkpoint.FORMAT_VERSION + 1)
    path = write_valid(tmp_path / "future.safetensors")
    monkeypatch.undo()
    error = expect_error(path, "newer accelyolo")
    assert "Upgrade" in str(error)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = write_valid(tmp_path / "last.safetensors", epoch=1)
    before = path.read_bytes()

    def half_write_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # the crash happens mid-write
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", half_write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_valid(path, epoch=2)
    assert path.read_bytes() == before
    assert load_checkpoint_bundle(path).metadata["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_failed_fsync_or_rename_leaves_old_file(tmp_path, monkeypatch):
    path = write_valid(tmp_path / "last.safetensors", epoch=1)

    def fail(*args, **kwargs):
        raise OSError("I/O error")

    for target in ("fsync", "replace"):
        with monkeypatch.context() as patch:
            patch.setattr(fileio.os, target, fail)
            with pytest.raises(OSError):
                write_valid(path, epoch=2)
        assert load_checkpoint_bundle(path).metadata["epoch"] == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]
    write_valid(path, epoch=3)  # and a later save succeeds
    assert load_checkpoint_bundle(path).metadata["epoch"] == 3


def test_saved_file_gets_umask_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        path = write_valid(tmp_path / "last.safetensors")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o640


def test_unsupported_values_are_refused_with_their_location(tmp_path):
    with pytest.raises(TypeError, match=r"optimizer\.param_groups\.0\.weird"):
        save_checkpoint(
            tmp_path / "x.safetensors",
            model_state={},
            optimizer_state={"state": {}, "param_groups": [{"weird": object()}]},
        )
    assert not list(tmp_path.iterdir())


FORBIDDEN = {
    "torch.load call": re.compile(r"\btorch\.load\s*\("),
    "torch.save call": re.compile(r"\btorch\.save\s*\("),
    "pickle import": re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|joblib)\b", re.M),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
}


# The one module allowed to import pickle: the .pt reader, whose Unpickler subclass answers every global
# with an inert stand-in (tests/test_weights_import.py proves nothing the file names runs).
PT_READER = PACKAGE / "weights" / "pt_reader.py"


def test_package_never_unpickles():
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "weights" / "checkpoint.py" in files and PT_READER in files
    offences = [
        f"{file.relative_to(PACKAGE.parent)}: {name}"
        for file in files
        for name, pattern in FORBIDDEN.items()
        if pattern.search(file.read_text(encoding="utf-8")) and not (file == PT_READER and name == "pickle import")
    ]
    assert not offences, offences


def test_pt_reader_uses_pickle_only_through_its_inert_unpickler():
    uses = set(re.findall(r"\bpickle\.(\w+)", PT_READER.read_text(encoding="utf-8")))
    assert uses == {"Unpickler", "UnpicklingError"}, uses  # never pickle.load/loads (the trusting unpickler)
