"""Sharing through the Hugging Face Hub layout: save_pretrained / from_pretrained / push_to_hub, `--weights`
given a folder or a Hub id, the model card, and offline use. Nothing here reaches the network: the Hub cache is
a temporary folder laid out as huggingface_hub lays it out, `HF_HUB_OFFLINE=1`, and the upload calls are
recorded instead of made."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from accelyolo.commands.cli import main as cli_main
from tests.conftest import tiny_train_options

REPO_ID = "accelyolo-tests/demo-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty Hub cache in tmp_path; returns the cache folder. huggingface_hub reads
    its environment when imported, so its constants are set too."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(cache.parent))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Lay `folder`'s files out as `snapshot_download` leaves a download: blobs named by their hash (sha256
    for LFS files such as the weights, the git blob sha1 for the others), a snapshot folder of relative
    symlinks to them, and refs/main naming the commit. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        if file.suffix == ".safetensors":
            blob = hashlib.sha256(data).hexdigest()
        else:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (blobs / blob).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


class RecordedUpload:
    """Stands in for HfApi's create_repo and upload_folder: keeps a copy of what would have been uploaded."""

    def __init__(self, keep: Path) -> None:
        self.keep, self.calls = keep, []

    def create_repo(self, api, repo_id, **kwargs):
        from huggingface_hub.hf_api import RepoUrl

        self.calls.append(("create_repo", repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, api, *, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, self.keep)
        self.calls.append(("upload_folder", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"

    def install(self, monkeypatch) -> None:
        from huggingface_hub import HfApi

        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: self.create_repo(api, repo_id, **kw))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: self.upload_folder(api, **kw))


@pytest.fixture(scope="module")
def pushed_run(tiny_demo, tmp_path_factory):
    """One tiny training run with `push_to_hub` set; the upload is recorded. Returns (FitResult, uploaded folder,
    the recorder)."""
    import accelyolo

    root = tmp_path_factory.mktemp("pushed")
    recorder = RecordedUpload(root / "uploaded")
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder.install(monkeypatch)
        torch.set_num_threads(1)
        result = accelyolo.fit(**tiny_train_options(tiny_demo, root / "runs", epochs=1, push_to_hub=REPO_ID))
    return result, root / "uploaded", recorder


def test_training_with_push_to_hub_uploads_the_three_files_once(pushed_run):
    result, uploaded, recorder = pushed_run
    assert [call[:2] for call in recorder.calls] == [("create_repo", REPO_ID), ("upload_folder", REPO_ID)]
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((uploaded / "config.json").read_text())
    assert config["variant"] == "yolov8t" and config["family"] == "anchor_free"
    assert config["names"] == ["circle", "square", "triangle", "cross"]
    assert config["strides"] == [8, 16, 32] and config["imgsz"] == 64 and config["seg_classes"] == 0
    assert config["model"] == {"name": "yolov8t", "nc": 4, "width": 0.0625, "depth": 0.33, "max_channels": 1024}
    assert config["metrics"] == pytest.approx(result.metrics)


def test_folder_round_trip_gives_bit_identical_outputs(pushed_run, tmp_path):
    import accelyolo
    from accelyolo.weights.checkpoint import load_checkpoint

    result, _, _ = pushed_run
    folder = accelyolo.save_pretrained(result.best_checkpoint, tmp_path / "shared")
    expected_model, _ = load_checkpoint(result.best_checkpoint)  # the EMA weights
    model, meta = accelyolo.from_pretrained(str(folder))
    assert meta["names"] == ["circle", "square", "triangle", "cross"] and meta["config"]["imgsz"] == 64
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, expected = model(x), expected_model(x)
    assert torch.equal(got, expected)
    for name, tensor in expected_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_hub_id_loads_offline_from_the_local_cache(pushed_run, offline_hub, tmp_path, tiny_demo, capsys):
    import accelyolo

    _, uploaded, _ = pushed_run
    snapshot = put_in_hub_cache(offline_hub, REPO_ID, uploaded)
    model, meta = accelyolo.from_pretrained(REPO_ID)
    reference, _ = accelyolo.from_pretrained(str(snapshot))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert meta["source"] == REPO_ID
    # every command that takes --weights takes the id: predict and val here
    images = tiny_demo.parent / "images" / "val"
    assert cli_main(["predict", "--weights", REPO_ID, "--source", str(images), "--project", str(tmp_path)]) == 0
    assert cli_main(["val", "--weights", REPO_ID, "--data", str(tiny_demo), "--project", str(tmp_path)]) == 0


def test_model_card_names_metrics_data_options_classes_licence_and_usage(pushed_run, tmp_path):
    from huggingface_hub import ModelCard

    import accelyolo

    result, _, _ = pushed_run
    folder = accelyolo.save_pretrained(result.best_checkpoint, tmp_path / "card", repo_id="me/shapes", license="mit")
    text = (folder / "README.md").read_text()
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "accelyolo"
    assert card.data.pipeline_tag == "object-detection"
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["mAP50-95"] == round(result.metrics["mAP50-95"], 4)
    assert set(metrics) == {"mAP50-95", "mAP50", "precision", "recall"}
    data_yaml = json.loads((folder / "config.json").read_text())["training"]["data"]
    assert f"`{data_yaml}`, split `val`" in text and "16 images" in text  # the data the metrics come from
    assert "after epoch 1" in text
    for name in ("circle", "square", "triangle", "cross"):
        assert f"| {name} |" in text
    assert "`epochs=1`" in text and "`imgsz=64`" in text and "batch_size: 8" in text
    assert "accelyolo predict --weights me/shapes --source" in text
    assert 'accelyolo.from_pretrained("me/shapes")' in text
    assert "`mit`" in text
    assert "for 4 classes at 64 px" in text


def test_model_card_counts_one_class_in_the_singular():
    from accelyolo.weights.card import _summary

    config = {"variant": "yolov8n", "family": "anchor_free", "nc": 1, "imgsz": 320, "strides": [8, 16, 32]}
    assert "for 1 class at 320 px" in _summary(config)
    assert "segments 2 classes (road, sky)" in _summary({**config, "seg_classes": 2, "seg_names": ["road", "sky"]})


def test_push_command_uploads_a_bundle_and_local_dir_writes_it(pushed_run, tmp_path, monkeypatch, capsys):
    result, _, _ = pushed_run
    recorder = RecordedUpload(tmp_path / "uploaded")
    recorder.install(monkeypatch)
    weights = str(result.best_checkpoint)
    assert cli_main(["push", "--weights", weights, "--repo", "org/name", "--private", "--license", "cc-by-4.0"]) == 0
    assert recorder.calls[0] == ("create_repo", "org/name", {"private": True, "exist_ok": True})
    assert "license: cc-by-4.0" in (tmp_path / "uploaded" / "README.md").read_text()
    assert "pushed" in capsys.readouterr().out
    assert cli_main(["push", "--weights", weights, "--local-dir", str(tmp_path / "here")]) == 0
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_fine_tuning_from_a_hub_id(pushed_run, offline_hub, tiny_demo, tmp_path, caplog):
    import accelyolo

    _, uploaded, _ = pushed_run
    put_in_hub_cache(offline_hub, REPO_ID, uploaded)
    options = tiny_train_options(tiny_demo, tmp_path, epochs=1, weights=REPO_ID, max_steps_per_epoch=1)
    with caplog.at_level("INFO", logger="accelyolo"):
        accelyolo.fit(**options)
    moved = re.search(rf"transferred (\d+)/(\d+) tensors from {REPO_ID}", caplog.text)
    assert moved and moved[1] == moved[2]  # the same architecture: every tensor


def test_hub_id_not_in_the_offline_cache_is_one_line_and_exit_2(offline_hub, tiny_demo, capsys):
    images = str(tiny_demo.parent / "images" / "val")
    assert cli_main(["predict", "--weights", "org/not-cached", "--source", images]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'org/not-cached'" in err and "HF_HUB_OFFLINE=1" in err and "not in the local Hub cache" in err
    assert str(offline_hub) in err


def test_bad_pretrained_folders_name_the_file_and_key(pushed_run, tmp_path):
    import accelyolo
    from accelyolo.weights.pretrained import HubError

    _, uploaded, _ = pushed_run
    with pytest.raises(HubError, match="has no model.safetensors or config.json"):
        accelyolo.from_pretrained(str(tmp_path))
    folder = tmp_path / "copy"
    shutil.copytree(uploaded, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": {"name": "transformers"}}))
    with pytest.raises(HubError, match=r"config.json: key 'format'"):
        accelyolo.from_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "names": "circle"}))
    with pytest.raises(HubError, match=r"config.json: key 'names' is missing or not a list"):
        accelyolo.from_pretrained(str(folder))
    with pytest.raises(HubError, match="not a Hub model id of the form 'org/name'"):
        accelyolo.push_to_hub(str(uploaded), "not an id")


@pytest.mark.parametrize(("name", "family"), [("yolov5t", "anchor_based"), ("yolo11t", "yolo11")])
def test_multi_task_and_other_families_round_trip_with_their_segmentation_classes(name, family, tmp_path):
    import accelyolo
    from accelyolo.families import build_model
    from accelyolo.weights.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(name, nc=3, seg_classes=2)
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}  # not the model's
    metadata = {"model": dict(model.config), "names": ["a", "b", "c"], "seg_names": ["road", "sky"]}
    metadata["config"] = {"imgsz": 96, "model": name, "segment": True}
    bundle = save_checkpoint(
        tmp_path / "multi.safetensors", model_state=model.state_dict(), ema_state=ema, metadata=metadata
    )
    folder = accelyolo.save_pretrained(bundle, tmp_path / "shared")
    config = json.loads((folder / "config.json").read_text())
    assert config["seg_classes"] == 2 and config["seg_names"] == ["road", "sky"] and config["imgsz"] == 96
    assert config["family"] == family and config["variant"] == name and config["strides"] == [8, 16, 32]
    loaded, meta = accelyolo.from_pretrained(str(folder))
    expected, _ = load_checkpoint(bundle)  # EMA preferred, as the folder holds
    assert meta["seg_names"] == ["road", "sky"]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        (det, logits), (det_ref, logits_ref) = loaded(x, x), expected(x, x)
    assert torch.equal(det, det_ref) and torch.equal(logits, logits_ref)
    assert "It also segments 2 classes (road, sky)" in (folder / "README.md").read_text()
