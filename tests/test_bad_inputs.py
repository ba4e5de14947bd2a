"""Issue 13 item 10: every input a user can get wrong ends with exit status 2 and one message naming the file
or key, never a traceback, and leaves the user's data folder as it was.

The battery runs the `accelyolo` console entry point in-process (`cli.main(argv)`) on files built in a temp
folder; two cases run it as a real subprocess (`python -m accelyolo`, `python accelyolo/train.py`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from accelyolo import cli
from tests.conftest import TINY_ANCHOR_FREE

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_demo):
    """The user's data folder (a copy of the tiny demo set, label cache already built) and the bad files."""
    import torch

    from accelyolo.checkpoint import save_checkpoint
    from accelyolo.families import build_model

    base = tmp_path_factory.mktemp("bad_inputs")
    data_dir = base / "data"
    shutil.copytree(tiny_demo.parent, data_dir)
    data = data_dir / "data.yaml"
    spec = yaml.safe_load(data.read_text())
    spec["path"] = str(data_dir)
    data.write_text(yaml.safe_dump(spec))
    assert cli.main(["data", "check", str(data), "--json"]) == 0  # builds the label cache once
    names = list(spec["names"].values()) if isinstance(spec["names"], dict) else list(spec["names"])

    bad = base / "bad"
    bad.mkdir()
    (bad / "malformed.yaml").write_text("train: [images/train\nval: {")
    (bad / "no_names.yaml").write_text(yaml.safe_dump({**spec, "names": 5}))
    (bad / "empty_split").mkdir()
    (bad / "empty_val.yaml").write_text(yaml.safe_dump({**spec, "val": str(bad / "empty_split")}))
    (bad / "unknown_key.yaml").write_text(yaml.safe_dump({"model": TINY_ANCHOR_FREE, "epoch": 3}))
    (bad / "wrong_type.yaml").write_text(yaml.safe_dump({"model": TINY_ANCHOR_FREE, "epochs": "ten"}))
    (bad / "with_resume.yaml").write_text(yaml.safe_dump({"model": TINY_ANCHOR_FREE, "resume": "auto"}))
    (bad / "not_a_folder").write_text("a file where a folder should be")
    (bad / "no_images").mkdir()

    torch.manual_seed(0)
    model = build_model(TINY_ANCHOR_FREE, nc=len(names))
    good = bad / "good.safetensors"
    save_checkpoint(good, model_state=model.state_dict(), metadata={"model": model.config, "names": names})
    other = build_model(TINY_ANCHOR_FREE, nc=len(names) + 3)
    save_checkpoint(
        bad / "other_classes.safetensors",
        model_state=other.state_dict(),
        metadata={"model": other.config, "names": [f"c{i}" for i in range(len(names) + 3)]},
    )
    raw = good.read_bytes()
    (bad / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (bad / "damaged.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with zipfile.ZipFile(bad / "pickled.pt", "w") as z:  # the layout of a torch.save file: a pickle stream
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    # a bundle that holds weights but no run (no saved options): nothing to resume
    save_checkpoint(bad / "bare.safetensors", model_state=model.state_dict(), metadata={"model": model.config})
    image = next((data_dir / "images" / "val").iterdir())
    return {"data": data, "data_dir": data_dir, "bad": bad, "image": image, "base": base}


def _train(*extra: str) -> list[str]:
    return ["train", "--model", TINY_ANCHOR_FREE, "--imgsz", "64", "--epochs", "1", "--workers", "0", *extra]


# (case id, argv builder given the paths, text the message must hold)
CASES = [
    ("train: data.yaml missing", lambda p: _train("--data", str(p["bad"] / "missing.yaml")), "missing.yaml"),
    ("train: data.yaml malformed", lambda p: _train("--data", str(p["bad"] / "malformed.yaml")), "malformed.yaml"),
    ("train: data.yaml names not a list", lambda p: _train("--data", str(p["bad"] / "no_names.yaml")), "'names'"),
    ("train: val split without images", lambda p: _train("--data", str(p["bad"] / "empty_val.yaml")), "'val'"),
    ("train: unknown model", lambda p: _train("--data", str(p["data"]), "--model", "yolov8q"), "yolov8q"),
    ("train: damaged weights", lambda p: _train("--weights", str(p["bad"] / "damaged.safetensors")), "damaged"),
    ("train: truncated weights", lambda p: _train("--weights", str(p["bad"] / "truncated.safetensors")), "truncated"),
    ("train: pickled .pt weights", lambda p: _train("--weights", str(p["bad"] / "pickled.pt")), "pickled.pt"),
    ("train: missing weights", lambda p: _train("--weights", str(p["bad"] / "nope.safetensors")), "nope.safetensors"),
    ("train: recipe unknown key", lambda p: ["train", "--recipe", str(p["bad"] / "unknown_key.yaml")], "'epoch'"),
    ("train: recipe wrong type", lambda p: ["train", "--recipe", str(p["bad"] / "wrong_type.yaml")], "'epochs'"),
    ("train: recipe with resume", lambda p: ["train", "--recipe", str(p["bad"] / "with_resume.yaml")], "'resume'"),
    ("train: recipe missing", lambda p: ["train", "--recipe", str(p["bad"] / "nope.yaml")], "nope"),
    ("train: hyp file missing", lambda p: _train("--hyp", str(p["bad"] / "hyp.yaml")), "hyp.yaml"),
    ("train: flag of wrong type", lambda p: _train("--batch-size", "many"), "--batch-size"),
    ("train: unknown flag", lambda p: _train("--learning-rate", "0.1"), "--learning-rate"),
    ("train: imgsz not /32", lambda p: _train("--data", str(p["data"]), "--imgsz", "100"), "'imgsz'"),
    ("train: mixed precision", lambda p: _train("--mixed-precision", "fp32"), "'mixed_precision'"),
    ("train: cache value", lambda p: _train("--cache", "ssd"), "'cache'"),
    ("train: other family's option", lambda p: _train("--data", str(p["data"]), "--obj", "0.7"), "'obj'"),
    ("train: resume auto, nothing", lambda p: ["train", "--resume", "--project", str(p["bad"] / "none")], "--resume"),
    ("train: resume a missing file", lambda p: ["train", "--resume", str(p["bad"] / "x.safetensors")], "x.safetensors"),
    ("train: resume a bare bundle", lambda p: ["train", "--resume", str(p["bad"] / "bare.safetensors")], "--weights"),
    (
        "train: unwritable project",
        lambda p: _train("--data", str(p["data"]), "--project", str(p["bad"] / "not_a_folder" / "runs")),
        "not_a_folder",
    ),
    ("val: damaged weights", lambda p: ["val", "--weights", str(p["bad"] / "damaged.safetensors")], "damaged"),
    ("val: pickled .pt", lambda p: ["val", "--weights", str(p["bad"] / "pickled.pt")], "pickled.pt"),
    (
        "val: model of other classes",
        lambda p: ["val", "--weights", str(p["bad"] / "other_classes.safetensors"), "--data", str(p["data"])],
        "classes",
    ),
    (
        "val: data.yaml missing",
        lambda p: ["val", "--weights", str(p["bad"] / "good.safetensors"), "--data", str(p["bad"] / "m.yaml")],
        "m.yaml",
    ),
    (
        "val: empty val split",
        lambda p: ["val", "--weights", str(p["bad"] / "good.safetensors"), "--data", str(p["bad"] / "empty_val.yaml")],
        "'val'",
    ),
    (
        "val: imgsz not /32",
        lambda p: ["val", "--weights", str(p["bad"] / "good.safetensors"), "--imgsz", "100"],
        "--imgsz",
    ),
    (
        "predict: empty source folder",
        lambda p: ["predict", "--weights", str(p["bad"] / "good.safetensors"), "--source", str(p["bad"] / "no_images")],
        "--source",
    ),
    (
        "predict: missing source",
        lambda p: ["predict", "--weights", str(p["bad"] / "good.safetensors"), "--source", str(p["bad"] / "gone")],
        "gone",
    ),
    (
        "predict: truncated weights",
        lambda p: ["predict", "--weights", str(p["bad"] / "truncated.safetensors"), "--source", str(p["image"])],
        "truncated",
    ),
    (
        "predict: unwritable project",
        lambda p: [
            "predict",
            "--weights",
            str(p["bad"] / "good.safetensors"),
            "--source",
            str(p["image"]),
            "--save",
            "--project",
            str(p["bad"] / "not_a_folder" / "p"),
        ],
        "not_a_folder",
    ),
    ("data check: missing yaml", lambda p: ["data", "check", str(p["bad"] / "missing.yaml")], "missing.yaml"),
    ("data check: malformed yaml", lambda p: ["data", "check", str(p["bad"] / "malformed.yaml")], "malformed.yaml"),
]


@pytest.mark.parametrize(("case", "argv", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message_naming_it(inputs, tmp_path, capsys, monkeypatch, case, argv, named):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/...) would land here
    before = _snapshot(inputs["data_dir"])
    try:
        status = cli.main(argv(inputs))
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert status == 2, f"{case}: status {status}\n{text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    assert named in out.err, f"{case}: {named!r} not in\n{out.err[-2000:]}"
    assert _snapshot(inputs["data_dir"]) == before
    assert not list(tmp_path.glob("runs/*/exp*")), "a failed command left a run folder"


def test_battery_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("entry", [["-m", "accelyolo", "train"], [str(REPO / "accelyolo" / "train.py")]])
def test_real_process_prints_one_line_and_exits_2(inputs, tmp_path, entry):
    cmd = [sys.executable, *entry, "--data", str(inputs["bad"] / "malformed.yaml"), "--project", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.count("malformed.yaml") == 1 and proc.stderr.startswith("accelyolo train: ")
    assert not any(tmp_path.iterdir())
