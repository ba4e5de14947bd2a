"""Issue 13 item 10: every input a user can get wrong ends with exit status 2 and one message naming the file
or key, never a traceback, and leaves the user's data folder as it was.

The battery runs the `accelyolo` console entry point in-process (`cli.main(argv)`) on files built in a temp
folder; two cases run it as a real subprocess (`python -m accelyolo`, `python accelyolo/train.py`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from accelyolo.commands import cli
from tests.conftest import TINY_ANCHOR_BASED, TINY_ANCHOR_FREE

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_demo):
    """The user's data folder (a copy of the tiny demo set, label cache already built) and the bad files."""
    import torch

    from accelyolo.core.config import load_config
    from accelyolo.families import build_model
    from accelyolo.training.optim import build_optimizer
    from accelyolo.weights.checkpoint import save_checkpoint, strip_checkpoint

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
    # metadata['model'] that builds no model (0 classes)
    save_checkpoint(
        bad / "no_model.safetensors", model_state=model.state_dict(), metadata={"model": {**model.config, "nc": 0}}
    )
    # a bundle that holds weights but no run (no saved options): nothing to resume
    save_checkpoint(bad / "bare.safetensors", model_state=model.state_dict(), metadata={"model": model.config})
    image = next((data_dir / "images" / "val").iterdir())

    # a multi-task model (detection + 5 segmentation classes) and data.yamls that do not fit it
    multi_spec = {**yaml.safe_load((data_dir / "data-multitask.yaml").read_text()), "path": str(data_dir)}
    multi = build_model(TINY_ANCHOR_FREE, nc=len(names), seg_classes=len(multi_spec["seg_names"]))
    save_checkpoint(
        bad / "multitask.safetensors",
        model_state=multi.state_dict(),
        metadata={"model": multi.config, "names": names, "seg_names": multi_spec["seg_names"]},
    )
    without_seg_val = {k: v for k, v in multi_spec.items() if k != "seg_val"}
    (bad / "no_seg_val.yaml").write_text(yaml.safe_dump(without_seg_val))
    (bad / "three_seg_names.yaml").write_text(yaml.safe_dump({**multi_spec, "seg_names": ["bg", "a", "b"]}))
    (bad / "not_a_pipeline.yaml").write_text(yaml.safe_dump({"just": "a mapping"}))

    # resumable-looking bundles: an inference file, and a run whose optimizer state is another model's
    config = load_config(model=TINY_ANCHOR_FREE, data=str(data), imgsz=64, epochs=2, workers=0, optimizer="SGD")
    run = {"model": model.config, "names": names, "config": config.to_dict(), "epoch": 1}
    save_checkpoint(bad / "run.safetensors", model_state=model.state_dict(), metadata=run)
    strip_checkpoint(bad / "run.safetensors", bad / "inference.safetensors")
    wrong_groups = build_optimizer("SGD", build_model(TINY_ANCHOR_BASED, nc=len(names)), 0.01, 0.9, 0.0)
    save_checkpoint(
        bad / "other_optimizer" / "weights" / "last.safetensors",
        model_state=model.state_dict(),
        optimizer_state=wrong_groups.state_dict(),
        metadata=run,
    )
    return {"data": data, "data_dir": data_dir, "bad": bad, "image": image, "base": base}


def _train(*extra: str) -> list[str]:
    return ["train", "--model", TINY_ANCHOR_FREE, "--imgsz", "64", "--epochs", "1", "--workers", "0", *extra]


def _val(paths: dict, weights: str, *extra: str) -> list[str]:
    return ["val", "--weights", str(paths["bad"] / weights), "--workers", "0", *extra]


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
    # issue 20: values the config's types allow but the run's parts refuse; each fails before the run folder
    ("train: freeze past the model's layers", lambda p: _train("--data", str(p["data"]), "--freeze", "99"), "'freeze'"),
    ("train: negative freeze", lambda p: _train("--freeze", "-1"), "'freeze'"),
    ("train: unknown optimizer", lambda p: _train("--data", str(p["data"]), "--optimizer", "Adamx"), "'optimizer'"),
    ("train: ema_decay of 1.5", lambda p: _train("--ema-decay", "1.5"), "'ema_decay'"),
    ("train: ema_tau of 0", lambda p: _train("--ema-tau", "0"), "'ema_tau'"),
    ("train: conf_thres over 1", lambda p: _train("--conf-thres", "2"), "'conf_thres'"),
    ("train: cls_pw of 0", lambda p: _train("--cls-pw", "0"), "'cls_pw'"),
    ("train: negative fl_gamma", lambda p: _train("--fl-gamma", "-1"), "'fl_gamma'"),
    (
        "train: scheduler_args the scheduler does not take",
        lambda p: _train("--scheduler", "OneCycleLR", "--scheduler-args", "{max_learning_rate: 0.1}"),
        "'scheduler_args'",
    ),
    (
        "train: scheduler_args value torch refuses",
        lambda p: _train("--data", str(p["data"]), "--scheduler", "OneCycleLR", "--scheduler-args", "{pct_start: 2}"),
        "'scheduler_args'",
    ),
    (
        "train: augment file that is no pipeline",
        lambda p: _train("--data", str(p["data"]), "--augment", str(p["bad"] / "not_a_pipeline.yaml")),
        "not_a_pipeline.yaml",
    ),
    (
        "train: resume an inference file",
        lambda p: ["train", "--resume", str(p["bad"] / "inference.safetensors")],
        "inference.safetensors",
    ),
    (
        "train: resume a bundle whose optimizer state is another model's",
        lambda p: ["train", "--resume", str(p["bad"] / "other_optimizer" / "weights" / "last.safetensors")],
        "last.safetensors",
    ),
    (
        "val: multi-task model, data.yaml without segmentation",
        lambda p: _val(p, "multitask.safetensors", "--data", str(p["data"])),
        "'seg_train'",
    ),
    (
        "val: multi-task model, data.yaml without seg_val",
        lambda p: _val(p, "multitask.safetensors", "--data", str(p["bad"] / "no_seg_val.yaml")),
        "'seg_val'",
    ),
    (
        "val: multi-task model, other seg_names count",
        lambda p: _val(p, "multitask.safetensors", "--data", str(p["bad"] / "three_seg_names.yaml")),
        "'seg_names'",
    ),
    ("val: bundle whose metadata builds no model", lambda p: _val(p, "no_model.safetensors"), "no_model.safetensors"),
    ("val: conf over 1", lambda p: _val(p, "good.safetensors", "--conf", "2"), "--conf"),
    ("val: batch size 0", lambda p: _val(p, "good.safetensors", "--batch-size", "0"), "--batch-size"),
    (
        "predict: iou over 1",
        lambda p: ["predict", "--weights", str(p["bad"] / "good.safetensors"), "--source", str(p["image"]), "--iou=9"],
        "--iou",
    ),
    ("data check: missing yaml", lambda p: ["data", "check", str(p["bad"] / "missing.yaml")], "missing.yaml"),
    ("data check: malformed yaml", lambda p: ["data", "check", str(p["bad"] / "malformed.yaml")], "malformed.yaml"),
]


@pytest.mark.parametrize(("case", "argv", "named"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message_naming_it(inputs, tmp_path, capsys, monkeypatch, case, argv, named):
    monkeypatch.chdir(tmp_path)  # default run folders (runs/...) would land here
    before = _snapshot(inputs["base"])  # the user's data and the bad files: a resumed bundle's folder included
    args = argv(inputs)
    try:
        status = cli.main(args)
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert status == 2, f"{case}: status {status}\n{text[-2000:]}"
    assert "Traceback" not in text, text[-2000:]
    # the log lines before it aside, exactly one line is the command's message (argparse's says `accelyolo:`
    # for a flag it finds no subcommand for), the last, and it names the input
    messages = [line for line in out.err.splitlines() if re.match(r"accelyolo( [a-z]+)*: ", line)]
    assert len(messages) == 1 and out.err.rstrip().splitlines()[-1] == messages[0], f"{case}:\n{out.err[-2000:]}"
    assert named in messages[0], f"{case}: {named!r} not in {messages[0]!r}"
    assert _snapshot(inputs["base"]) == before
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
