"""The model card (`README.md`) of a pretrained folder, generated from its `config.json`.

The YAML header is `huggingface_hub.ModelCardData` (licence, library, tags, pipeline tag and the metrics as
a `model-index`, which the Hub shows beside the model); the body says what the model detects, how it scored
on which data, how it was trained, and how to use it from the command line and from Python.
"""

from __future__ import annotations

from typing import Any

# the options a reader of a card asks about first; the card lists every other one in a folded block
_KEY_OPTIONS = ("epochs", "imgsz", "batch_size", "optimizer", "lr0", "lrf", "momentum", "weight_decay", "seed")
_METRICS = (("mAP50-95", "mAP50-95"), ("mAP50", "mAP50"), ("precision", "precision"), ("recall", "recall"))


def model_card(config: dict[str, Any], *, repo_id: str, license: str = "apache-2.0") -> str:  # noqa: A002
    """The card's text for a `config.json` (see `accelyolo.weights.hub.pretrained_config`)."""
    from huggingface_hub import ModelCard, ModelCardData

    variant = config["variant"]
    validation = config.get("validation") or {}
    dataset = _dataset_name(validation)
    data = ModelCardData(
        license=license,
        library_name="accelyolo",
        pipeline_tag="object-detection",
        tags=["accelyolo", "object-detection", "yolo", variant, config["family"]],
        model_name=repo_id,
        eval_results=_eval_results(config, dataset),
    )
    sections = [
        f"# {repo_id}",
        _summary(config),
        _metrics_section(config, validation),
        _classes_section(config),
        _training_section(config),
        _usage_section(config, repo_id),
        f"## Licence\n\n`{license}` (the `license` field above; choose it with `--license` when pushing). "
        "The weights inherit any terms of the data they were trained on.",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"))


def _dataset_name(validation: dict[str, Any]) -> str:
    from pathlib import Path

    data = validation.get("data")
    if not data:
        return "unknown"
    path = Path(data)
    return path.parent.name if path.name == "data.yaml" else path.stem


def _eval_results(config: dict[str, Any], dataset: str) -> list[Any] | None:
    from huggingface_hub import EvalResult

    metrics = config.get("metrics") or {}
    results = [
        EvalResult(
            task_type="object-detection",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="val",
            metric_type=key,
            metric_name=label,
            metric_value=round(float(metrics[key]), 4),
        )
        for key, label in _METRICS
        if isinstance(metrics.get(key), int | float)
    ]
    return results or None


def _classes(n: int) -> str:
    """'1 class', '4 classes'."""
    return f"{n} class" if n == 1 else f"{n} classes"


def _summary(config: dict[str, Any]) -> str:
    strides = ", ".join(str(s) for s in config["strides"])
    text = (
        f"An accelyolo **{config['variant']}** object detector ({config['family']} family) for "
        f"{_classes(config['nc'])} at {config['imgsz']} px (strides {strides}), trained with "
        f"accelyolo {config.get('accelyolo_version', '')} (YOLO training on Hugging Face Accelerate)."
    )
    if config.get("seg_classes"):
        text += (
            f" It also segments {_classes(config['seg_classes'])} ({', '.join(config.get('seg_names', []))}) "
            "with a second head on the same trunk."
        )
    if config.get("imported"):
        text += f" Its weights were imported from `{config['imported'].get('file')}`."
    return text + "\n\nFiles: `model.safetensors` (EMA weights), `config.json` (what rebuilds the model), this card."


def _metrics_section(config: dict[str, Any], validation: dict[str, Any]) -> str:
    metrics = config.get("metrics") or {}
    shown = [(label, metrics[key]) for key, label in _METRICS if isinstance(metrics.get(key), int | float)]
    if not shown:
        return "## Validation\n\nNo validation metrics were recorded with these weights."
    where = f"`{validation.get('data', 'unknown data')}`, split `{validation.get('split', 'val')}`"
    if validation.get("val") is not None:
        where += f" (`val: {validation['val']}`)"
    if validation.get("images") is not None:
        where += f", {validation['images']} images"
    epoch = f" after epoch {config['epoch']}" if config.get("epoch") else ""
    header = "| " + " | ".join(label for label, _ in shown) + " |"
    rule = "|" + "---|" * len(shown)
    row = "| " + " | ".join(f"{value:.4f}" for _, value in shown) + " |"
    return (
        f"## Validation\n\nThe last validation of these weights{epoch}, on {where} "
        f"(COCO-style AP at IoU 0.50 and 0.50:0.95):\n\n{header}\n{rule}\n{row}"
    )


def _classes_section(config: dict[str, Any]) -> str:
    rows = "\n".join(f"| {i} | {name} |" for i, name in enumerate(config["names"]))
    return f"## Classes\n\n| id | name |\n|---|---|\n{rows}"


def _training_section(config: dict[str, Any]) -> str:
    import yaml

    training = config.get("training") or {}
    if not training:
        return ""
    key = ", ".join(f"`{k}={training[k]}`" for k in _KEY_OPTIONS if k in training)
    full = yaml.safe_dump(training, sort_keys=False).rstrip()
    return (
        f"## Training\n\n{key}.\n\n<details><summary>All training options</summary>\n\n"
        f"```yaml\n{full}\n```\n\n</details>"
    )


def _usage_section(config: dict[str, Any], repo_id: str) -> str:
    return (
        "## Use it\n\n"
        "With accelyolo installed:\n\n```bash\n"
        f"accelyolo predict --weights {repo_id} --source path/to/images --save\n"
        f"accelyolo val --weights {repo_id} --data path/to/data.yaml\n"
        f"accelyolo train --weights {repo_id} --data path/to/data.yaml --model {config['variant']}   # fine-tune\n"
        "```\n\n"
        "```python\nimport accelyolo\n\n"
        f'model, meta = accelyolo.from_pretrained("{repo_id}")\n'
        f'detections = accelyolo.predict(weights="{repo_id}", source="path/to/images")\n'
        'print(meta["names"], detections[0])\n```'
    )
