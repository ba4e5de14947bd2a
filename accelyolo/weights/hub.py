"""The Hugging Face layout for sharing a trained model: a folder (or Hub repository) with

- `model.safetensors`: the weights (a bundle's EMA weights when it has them), plain tensor names;
- `config.json`: everything needed to rebuild the model: family, variant, the `build_model` keywords, class
  names, strides, image size, segmentation classes, the training options and the last validation's metrics;
- `README.md`: a model card (`accelyolo.weights.card`).

`save_pretrained` writes the folder, `from_pretrained` reads it back from a folder or a Hub id (through
`huggingface_hub.snapshot_download`, so `HF_HUB_OFFLINE=1` resolves ids from the local cache), and
`push_to_hub` uploads it with `HfApi.create_repo` + `HfApi.upload_folder`. Reading lives in
`accelyolo.weights.pretrained` (below the importers, which come to it for every `--weights`). Training bundles stay the
resumable format; this layout is for inference and fine-tuning (`--weights org/name`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from accelyolo.core.errors import AccelyoloError
from accelyolo.weights.pretrained import (
    CARD_FILE,
    CONFIG_FILE,
    PRETRAINED_FORMAT,
    WEIGHTS_FILE,
    HubError,
    check_repo_id,
    from_pretrained,
    one_line,
)

__all__ = ["from_pretrained", "pretrained_config", "push_to_hub", "save_pretrained"]

# ----------------------------------------------------------------------------------- writing


def pretrained_config(model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """`config.json` of a model loaded by `load_weights`: the build keywords and everything a user of the
    model needs (classes, strides, image size, segmentation classes), the training options and metrics."""
    training = dict(meta.get("config") or {})
    seg_classes = int(getattr(model, "seg_classes", 0) or 0)
    config: dict[str, Any] = {
        "format": PRETRAINED_FORMAT,
        "library_name": "accelyolo",
        "accelyolo_version": meta.get("accelyolo_version") or _version(),
        "family": model.family,
        "variant": model.config["name"],
        "model": dict(model.config),  # the accelyolo.families.build_model keywords
        "nc": int(model.nc),
        "names": list(meta.get("names") or [str(i) for i in range(model.nc)]),
        "strides": [int(s) for s in model.stride.tolist()],
        "imgsz": int(training.get("imgsz", 640)),
        "seg_classes": seg_classes,
    }
    if seg_classes:
        config["seg_names"] = list(meta.get("seg_names") or [str(i) for i in range(seg_classes)])
        if meta.get("seg_ignore") is not None:
            config["seg_ignore"] = meta["seg_ignore"]
    config["epoch"] = meta.get("epoch")
    config["metrics"] = dict(meta.get("metrics") or {})
    config["training"] = training
    if "validation" in meta:
        config["validation"] = meta["validation"]
    elif training.get("data"):
        config["validation"] = _validation_data(training["data"], bool(training.get("single_cls")))
    if meta.get("imported"):
        config["imported"] = meta["imported"]
    return config


def _version() -> str:
    from accelyolo import __version__

    return __version__


def _validation_data(data_yaml: str, single_cls: bool) -> dict[str, Any]:
    """What the metrics were measured on: the data.yaml, its val entry and (when it can be read here) the
    number of images."""
    import yaml

    out: dict[str, Any] = {"data": str(data_yaml), "split": "val"}
    path = Path(data_yaml)
    if not path.is_file():
        return out
    try:
        raw = yaml.safe_load(path.read_text())
        out["val"] = raw.get("val") if isinstance(raw, dict) else None
        from accelyolo.data.spec import load_data_yaml

        out["images"] = len(load_data_yaml(path).splits.get("val", []))
    except (AccelyoloError, OSError, yaml.YAMLError, AttributeError):
        pass  # the folder is someone else's to fix; the card then names only the file
    if single_cls:
        out["single_cls"] = True
    return out


def save_pretrained(
    weights: str | os.PathLike[str],
    save_directory: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the model card's field name
) -> Path:
    """Write `model.safetensors`, `config.json` and `README.md` for `weights` (a bundle, a `.pt` import, or
    another pretrained folder / Hub id) into `save_directory`; returns the folder.

    `repo_id` appears in the card's usage snippets (default: the folder's name); `license` is the card's
    licence field (an identifier of https://huggingface.co/docs/hub/repositories-licenses).
    """
    from safetensors.torch import save_file

    from accelyolo.core.fileio import replace_atomically, write_text_atomically
    from accelyolo.weights.card import model_card
    from accelyolo.weights.importers import load_weights

    model, meta = load_weights(weights)
    config = pretrained_config(model, meta)
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    # a fresh contiguous copy of each tensor: safetensors refuses shared storage
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    replace_atomically(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_text_atomically(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    card = model_card(config, repo_id=repo_id or folder.name, license=license)
    write_text_atomically(folder / CARD_FILE, card)
    return folder


def push_to_hub(
    weights: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    license: str = "apache-2.0",  # noqa: A002
    commit_message: str | None = None,
) -> str:
    """Upload `weights` as a Hub model repository (created if missing) in one commit; returns the commit URL.

    A thin call into `huggingface_hub` (`HfApi.create_repo`, `HfApi.upload_folder`): authentication comes
    from `token`, `HF_TOKEN` or `hf auth login`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(repo_id, "--repo")
    with tempfile.TemporaryDirectory(prefix="accelyolo-push-") as tmp:
        folder = save_pretrained(weights, Path(tmp) / repo_id.split("/")[-1], repo_id=repo_id, license=license)
        api = HfApi(token=token)
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {Path(weights).name} with accelyolo",
            )
        except OfflineModeIsEnabled:
            raise HubError(f"pushing to '{repo_id}': HF_HUB_OFFLINE=1 is set; uploading needs the network.") from None
        except HfHubHTTPError as error:
            raise HubError(f"pushing to '{repo_id}' failed: {one_line(error)}") from None
    return str(getattr(commit, "commit_url", commit))
