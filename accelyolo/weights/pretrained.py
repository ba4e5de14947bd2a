"""Reading the Hugging Face layout that `accelyolo.weights.hub` writes (`model.safetensors`, `config.json`,
`README.md`): from a folder, or from a Hub id through `huggingface_hub.snapshot_download`, which under
`HF_HUB_OFFLINE=1` answers from the local cache. `load_weights` (every `--weights`) comes here for a folder
or an `org/name`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from accelyolo.core.config import HUB_ID, is_hub_id
from accelyolo.core.errors import AccelyoloError

__all__ = [
    "CONFIG_FILE",
    "PRETRAINED_FORMAT",
    "WEIGHTS_FILE",
    "HubError",
    "from_pretrained",
    "is_pretrained_reference",
    "resolve_pretrained",
]

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
PRETRAINED_FORMAT = {"name": "accelyolo-pretrained", "version": 1}


class HubError(AccelyoloError, ValueError):
    """A pretrained folder or Hub id that cannot be used: which one, what is wrong, what to do."""


# ----------------------------------------------------------------------------------- reading


def is_pretrained_reference(reference: str | os.PathLike[str]) -> bool:
    """Whether `reference` names a pretrained folder (one holding `config.json`) or looks like a Hub id
    (`org/name`, no file suffix, no such path here) rather than a weights file."""
    path = Path(reference)
    if path.is_dir():
        return True
    if path.exists():
        return False
    return is_hub_id(os.fspath(reference))


def resolve_pretrained(reference: str | os.PathLike[str], revision: str | None = None) -> Path:
    """The local folder for a pretrained folder or Hub id: an id goes through `snapshot_download` (only the
    three files), which under `HF_HUB_OFFLINE=1` answers from the local cache."""
    path = Path(reference)
    if path.is_dir():
        _check_folder(path, os.fspath(reference))
        return path
    repo_id = os.fspath(reference)
    check_repo_id(repo_id, "--weights")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, CARD_FILE])
        )
    except LocalEntryNotFoundError:
        where = f"HF_HUB_OFFLINE=1 and it is not in the local Hub cache ({constants.HF_HUB_CACHE})"
        if not constants.HF_HUB_OFFLINE:
            where = f"the Hub cannot be reached and it is not in the local Hub cache ({constants.HF_HUB_CACHE})"
        raise HubError(
            f"'{repo_id}' is neither a file or folder here nor available: {where}; download it once online "
            f"(hf download {repo_id}) or pass a local file or folder."
        ) from None
    except RepositoryNotFoundError:
        raise HubError(
            f"'{repo_id}': no such file or folder here, and no Hub model repository of that name (or it is "
            "private or gated: log in with `hf auth login`)."
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"'{repo_id}': the Hub repository has no revision '{revision}'.") from None
    except HfHubHTTPError as error:
        raise HubError(f"'{repo_id}': the Hub answered {one_line(error)}") from None
    _check_folder(folder, repo_id)
    return folder


def from_pretrained(
    reference: str | os.PathLike[str], device: str = "cpu", revision: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """`(model in eval mode, metadata)` from a pretrained folder or Hub id.

    The metadata has the keys a training bundle's has (`model`, `names`, `config` = the training options,
    `metrics`, `epoch`, `seg_names`), plus `pretrained` (the whole config.json) and `source`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from accelyolo.families import build_model

    folder = resolve_pretrained(reference, revision)
    config = _read_config(folder / CONFIG_FILE, os.fspath(reference))
    try:
        model = build_model(**config["model"])
    except (TypeError, ValueError) as error:
        raise HubError(f"{folder / CONFIG_FILE}: key 'model' {config['model']} builds no model ({error}).") from None
    try:
        state = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError) as error:
        raise HubError(f"{folder / WEIGHTS_FILE}: not a readable safetensors file ({one_line(error)}).") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise HubError(
            f"{folder / WEIGHTS_FILE}: the weights do not fit the {config['variant']} that config.json describes "
            f"({one_line(error)[:300]})."
        ) from None
    meta = {
        "model": dict(config["model"]),
        "names": list(config["names"]),
        "config": dict(config.get("training") or {}),
        "metrics": dict(config.get("metrics") or {}),
        "epoch": config.get("epoch"),
        "pretrained": config,
        "source": os.fspath(reference),
    }
    for key in ("seg_names", "seg_ignore", "validation", "imported"):
        if key in config:
            meta[key] = config[key]
    meta["config"].setdefault("imgsz", config["imgsz"])
    return model.to(device).eval(), meta


def _read_config(path: Path, reference: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubError(f"{path} (of '{reference}'): not readable JSON ({one_line(error)}).") from None
    if not isinstance(config, dict):
        raise HubError(f"{path} (of '{reference}'): expected a JSON object.")
    fmt = config.get("format")
    if not isinstance(fmt, dict) or fmt.get("name") != PRETRAINED_FORMAT["name"]:
        raise HubError(
            f"{path}: key 'format' is not {PRETRAINED_FORMAT}: not a model saved by accelyolo's save_pretrained "
            "(a transformers or ultralytics repository is another layout)."
        )
    if int(fmt.get("version", 0)) > PRETRAINED_FORMAT["version"]:
        raise HubError(f"{path}: written by a newer accelyolo (format version {fmt['version']}); upgrade accelyolo.")
    for key, kind in (("model", dict), ("names", list), ("variant", str), ("imgsz", int)):
        if not isinstance(config.get(key), kind):
            raise HubError(f"{path}: key '{key}' is missing or not a {kind.__name__}.")
    return config


def _check_folder(folder: Path, reference: str) -> None:
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise HubError(
            f"'{reference}': {folder} has no {' or '.join(missing)}; pass a folder written by "
            "accelyolo's save_pretrained (or `accelyolo push --local-dir`), or a .safetensors bundle."
        )


def check_repo_id(repo_id: str, flag: str) -> None:
    if not HUB_ID.match(repo_id):
        raise HubError(
            f"{flag} '{repo_id}': no such file or folder, and not a Hub model id of the form 'org/name' "
            "(letters, digits, '-', '_', '.')."
        )


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
