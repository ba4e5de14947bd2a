"""Training configuration: one flat dataclass, validated from recipes, CLI flags and `fit()` keywords.

A recipe is a yaml mapping of option names to values. Its `hyp` key may be a mapping of hyperparameters
or the path of a YOLOv5-style hyp yaml (relative to the recipe). The same names are the CLI flags
(`--batch-size` for `batch_size`) and the keywords of `accelyolo.fit()`: there is one list of options,
the fields of `TrainConfig`. An unknown name or a value of the wrong type raises `ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from accelyolo.core.config_checks import did_you_mean, unit_interval_problems, value_problems
from accelyolo.core.defaults import MAX_DET, PREDICT_CONF, VAL_CONF_THRES, VAL_IOU_THRES, imgsz_problem
from accelyolo.core.errors import AccelyoloError
from accelyolo.core.hyp import HYPERPARAMETERS


def _recipes_dir() -> Path:
    """Where the shipped recipes are: `<repo>/recipes` in a source checkout (the copy users read and
    edit), else the `accelyolo.recipes` package data of an installed wheel (see pyproject.toml)."""
    checkout = Path(__file__).resolve().parents[2]  # accelyolo/core/config.py -> the checkout
    if (checkout / "pyproject.toml").is_file() and (checkout / "recipes").is_dir():
        return checkout / "recipes"
    from importlib.resources import files

    # `files("accelyolo") / "recipes"` rather than `files("accelyolo.recipes")`: the folder has no
    # __init__.py, and files() of such a namespace package is a MultiplexedPath, not a plain path.
    return Path(str(files("accelyolo").joinpath("recipes")))


RECIPES_DIR = _recipes_dir()


class ConfigError(AccelyoloError, ValueError):
    """A recipe, flag or keyword that does not fit `TrainConfig`."""


def _opt(default: Any, help: str, section: str) -> Any:
    return field(default=default, metadata={"help": help, "section": section})


def _hyp(name: str) -> Any:
    """A hyperparameter field whose default and help come from the one table, `HYPERPARAMETERS`."""
    entry = HYPERPARAMETERS[name]
    return _opt(entry.default, entry.help, "hyp")


@dataclass
class TrainConfig:
    """Every option of a training run. Sections only group them in `args.yaml` and `--help`."""

    # model
    model: str = _opt("yolov8n", "registered model name (yolov8n..x, yolov5n..x)", "model")
    weights: str | None = _opt(
        None, "start from these weights (matching tensors): an accelyolo .safetensors or a YOLOv5/v8/11 .pt", "model"
    )
    freeze: int = _opt(0, "freeze the first N backbone stages", "model")
    anchors: list | None = _opt(  # issue 12: YOLOv5's anchors from the recipe
        None,
        "anchor-based models: anchors per level P3/P4/P5 in pixels, YOLOv5 style "
        "[[10,13, 16,30, 33,23], [30,61, 62,45, 59,119], [116,90, 156,198, 373,326]]; empty = COCO's",
        "model",
    )
    # data
    data: str | None = _opt(
        None, "data.yaml, COCO .json or Hugging Face dataset folder; empty = the built-in demo data", "data"
    )
    imgsz: int = _opt(640, "train/val image size in pixels (a multiple of 32)", "data")
    batch_size: int = _opt(16, "images per step on each process", "data")
    workers: int = _opt(2, "dataloader worker processes per training process", "data")
    cache: str | None = _opt(
        None,
        "cache decoded images: 'ram', 'disk' (.npy files beside the images, reused across runs), or empty / 'none'",
        "data",
    )
    cache_budget_mb: float | None = _opt(
        None,
        "most memory (MB) that 'cache: ram' takes per dataset; images beyond it are decoded when used. "
        "Empty = half of the memory available when the run starts",
        "data",
    )
    single_cls: bool = _opt(False, "train every class as one class 'item'", "data")
    rect_val: bool = _opt(True, "validate with rectangular (aspect-preserving) batches", "data")
    # YOLOv5 data options (issue 12): rectangular training, image weights, a user's albumentations pipeline
    rect: bool = _opt(False, "train with rectangular batches (sorted by aspect, no shuffle, no mosaic)", "data")
    image_weights: bool = _opt(
        False, "draw training images by their class weights (rarer, worse-detected classes more often)", "data"
    )
    augment: str | None = _opt(
        None, "albumentations pipeline yaml (albumentations.save(..., data_format='yaml')), run after mosaic", "data"
    )
    # training
    epochs: int = _opt(100, "total epochs", "train")
    optimizer: str = _opt(
        "auto",
        "SGD, Adam, AdamW, RMSProp, or auto: AdamW at lr0 0.002 for runs of up to 10,000 optimizer "
        "steps, SGD with the hyp's lr0/momentum beyond (auto ignores lr0, momentum and warmup_bias_lr then)",
        "train",
    )
    cos_lr: bool = _opt(False, "one-cycle cosine LR decay instead of linear", "train")
    scheduler: str = _opt(
        "yolo",
        "'yolo' (warmup + cosine/linear decay, the hyp's lr0/lrf) or the name of a "
        "torch.optim.lr_scheduler class, e.g. OneCycleLR",
        "train",
    )
    scheduler_args: dict | None = _opt(
        None,
        "keyword arguments of a torch scheduler (a yaml mapping); "
        "its total_steps/T_max default to the run's optimizer steps",
        "train",
    )
    nbs: int = _opt(64, "nominal batch size reached by gradient accumulation", "train")
    max_grad_norm: float = _opt(10.0, "clip the gradient norm once per optimizer step", "train")
    channels_last: bool = _opt(True, "NHWC memory format for model and images (faster convolutions)", "train")
    retain_memory: bool = _opt(
        True,
        "on a CPU device under glibc (Linux), keep the memory a step frees for the next step instead of returning "
        "it to the OS and page-faulting it back (accelyolo.core.memory; ~8% of a CPU epoch, ~5% more peak RSS)",
        "train",
    )
    multi_scale: bool = _opt(False, "random image size in [0.5, 1.5] x imgsz per batch", "train")
    close_mosaic: int = _opt(10, "turn mosaic/mixup off for the last N epochs", "train")
    ema_decay: float = _opt(0.9999, "EMA decay", "train")
    ema_tau: float = _opt(2000.0, "EMA decay ramp in optimizer steps", "train")
    warmup_min_iters: int = _opt(
        0, "fewest warmup iterations when warmup_epochs > 0 (YOLOv5: 100); never past the last epoch's start", "train"
    )
    seed: int = _opt(0, "global seed", "train")
    deterministic: bool = _opt(False, "use deterministic algorithms", "train")
    mixed_precision: str | None = _opt(None, "no, fp16 or bf16; empty = from the accelerate config", "train")
    compile: bool = _opt(
        False,
        "torch.compile the training model (Accelerate's 'inductor' dynamo backend); the first steps compile for "
        "a few minutes on a CPU. Measured on a 2-core CPU (yolov8n, 320 px) it saves ~3% of a step: worth it for "
        "long GPU runs, not for short CPU ones",
        "train",
    )
    # knowledge distillation (YOLOv6): a frozen teacher of the same family and classes guides the student
    teacher: str | None = _opt(None, "teacher weights (an accelyolo .safetensors bundle) to distil from", "train")
    distill_weight: float = _opt(
        1.0, "weight of the distillation terms at epoch 1, decaying (cosine) to 0 by the end", "train"
    )
    distill_feat: bool = _opt(False, "also distil the neck feature maps (channel-wise distillation)", "train")
    temperature: float = _opt(20.0, "softmax temperature of the distillation terms (20 as YOLOv6)", "train")
    # YOLOv5 training options (issue 12)
    sync_bn: bool = _opt(False, "synchronized BatchNorm across processes (several processes only)", "train")
    noautoanchor: bool = _opt(False, "keep the model's anchors (no autoanchor check), anchor-based models", "train")
    # validation
    val_interval: int = _opt(1, "validate every N epochs (and always at the last)", "val")
    # evaluation schedule (YOLOv6): every epoch near the end, or only once at the end
    heavy_eval_range: int = _opt(0, "validate every epoch inside the last N epochs, whatever val_interval", "val")
    val_final_only: bool = _opt(False, "validate only after the last epoch", "val")
    conf_thres: float = _opt(VAL_CONF_THRES, "validation confidence threshold", "val")
    iou_thres: float = _opt(VAL_IOU_THRES, "validation NMS IoU threshold", "val")
    max_det: int = _opt(MAX_DET, "validation detections per image", "val")
    patience: int = _opt(100, "stop after N epochs without fitness improvement (0 = never)", "val")
    best_min_score: float = _opt(
        PREDICT_CONF,
        "an epoch is taken as best (and counts for patience) only when its highest detection score on the "
        "validation set reaches this (predict's default conf), besides having left the warm-up; 0 = no score floor",
        "val",
    )
    # run folder and logging
    project: str = _opt("runs/train", "parent folder of run folders", "run")
    name: str = _opt("exp", "run folder name (incremented unless exist_ok)", "run")
    exist_ok: bool = _opt(False, "reuse an existing run folder", "run")
    resume: str | None = _opt(None, "'auto' (latest last.safetensors) or a checkpoint path", "run")
    save_period: int = _opt(-1, "also save weights/epochN.safetensors every N epochs", "run")
    save_last_n: int = _opt(0, "keep weights/epochK.safetensors (full, resumable) of the last N epochs", "run")
    nosave: bool = _opt(False, "save only the final checkpoint (no per-epoch last/best)", "run")
    log_with: str | None = _opt(
        None,
        "trackers, comma-separated: tensorboard, wandb, mlflow, trackio, comet_ml, aim, clearml, dvclive, swanlab, "
        "or all (every installed one)",
        "run",
    )
    push_to_hub: str | None = _opt(
        None, "at the end, upload the best weights as this Hub model repository (org/name; needs a login)", "run"
    )
    plots: bool = _opt(True, "write label, batch and metric pictures", "run")
    max_steps_per_epoch: int = _opt(0, "cap on batches per epoch (0 = all); for quick runs", "run")
    # multi-task: detection + semantic segmentation in one network (accelyolo.tasks.multitask)
    segment: bool = _opt(
        False,
        "also train a semantic segmentation head (data.yaml seg_train/seg_val/seg_names; the demo data has them)",
        "model",
    )
    seg_batch_size: int = _opt(0, "segmentation images per step on each process (0 = batch_size)", "data")
    seg_aspect: float = _opt(0.5, "segmentation crop height / width (width = imgsz)", "data")
    seg_scale: float = _opt(0.5, "segmentation random scale range 1 +- seg_scale", "data")
    det_gain: float = _opt(0.6, "multi-task loss = det_gain * detection loss + ...", "train")
    seg_gain: float = _opt(0.35, "... + seg_gain * segmentation cross-entropy * batch size", "train")
    seg_class_weights: dict | None = _opt(
        None, "cross-entropy weight per segmentation class, {name or id: weight} (others 1)", "train"
    )
    seg_val_interval: int = _opt(1, "measure mIoU every N epochs (and every epoch of the last N)", "val")
    det_weight: float = _opt(
        0.5, "multi-task fitness = det_weight * detection fitness + (1 - det_weight) * mIoU", "val"
    )
    # hyperparameters: names, defaults and help from accelyolo.core.hyp.HYPERPARAMETERS (YOLOv5 hyp.scratch-low)
    lr0: float = _hyp("lr0")
    lrf: float = _hyp("lrf")
    momentum: float = _hyp("momentum")
    weight_decay: float = _hyp("weight_decay")
    warmup_epochs: float = _hyp("warmup_epochs")
    warmup_momentum: float = _hyp("warmup_momentum")
    warmup_bias_lr: float = _hyp("warmup_bias_lr")
    box: float | None = _hyp("box")
    cls: float | None = _hyp("cls")
    dfl: float | None = _hyp("dfl")
    obj: float | None = _hyp("obj")
    cls_pw: float = _hyp("cls_pw")
    obj_pw: float = _hyp("obj_pw")
    anchor_t: float = _hyp("anchor_t")
    fl_gamma: float = _hyp("fl_gamma")
    label_smoothing: float = _hyp("label_smoothing")
    tal_min_side: float = _hyp("tal_min_side")
    hsv_h: float = _hyp("hsv_h")
    hsv_s: float = _hyp("hsv_s")
    hsv_v: float = _hyp("hsv_v")
    degrees: float = _hyp("degrees")
    translate: float = _hyp("translate")
    scale: float = _hyp("scale")
    shear: float = _hyp("shear")
    perspective: float = _hyp("perspective")
    flipud: float = _hyp("flipud")
    fliplr: float = _hyp("fliplr")
    mosaic: float = _hyp("mosaic")
    mixup: float = _hyp("mixup")
    crop: float = _hyp("crop")
    crop_erosion: float = _hyp("crop_erosion")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hyp(self) -> dict[str, Any]:
        """The hyperparameter section, keyed by YOLOv5's names."""
        return {f.name: getattr(self, f.name) for f in fields_in_section("hyp")}

    def concept(self, name: str) -> dict[str, Any]:
        """The options of one concept (`CONCEPTS`), e.g. `cfg.concept("optimisation")`."""
        if name not in CONCEPTS:
            raise ConfigError(f"unknown concept '{name}'; the concepts are {', '.join(CONCEPTS)}")
        return {key: getattr(self, key) for key in CONCEPTS[name]}


# Every option under the concept it belongs to, as Accelerate groups its own. A recipe (or `fit()`) may write an
# option flat (`lr0: 0.02`) or under its concept (`optimisation: {lr0: 0.02}`); `--help` lists them by concept.
# Each field is in exactly one concept (tests/test_config.py).
CONCEPTS: dict[str, tuple[str, ...]] = {
    "core": ("model", "weights", "freeze", "anchors", "noautoanchor", "epochs", "max_steps_per_epoch", "seed")
    + ("deterministic", "mixed_precision", "compile", "channels_last", "retain_memory"),
    "data": ("data", "imgsz", "batch_size", "workers", "cache", "cache_budget_mb", "single_cls", "rect", "rect_val")
    + ("image_weights",),
    "augmentation": ("augment", "multi_scale", "close_mosaic", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate")
    + ("scale", "shear", "perspective", "flipud", "fliplr", "mosaic", "mixup", "crop", "crop_erosion"),
    "optimisation": ("optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum")
    + ("warmup_bias_lr", "warmup_min_iters", "cos_lr", "scheduler", "scheduler_args", "nbs", "max_grad_norm")
    + ("ema_decay", "ema_tau", "sync_bn"),
    "loss": ("box", "cls", "dfl", "obj", "cls_pw", "obj_pw", "anchor_t", "fl_gamma", "label_smoothing")
    + ("tal_min_side",),
    "evaluation": ("val_interval", "heavy_eval_range", "val_final_only", "conf_thres", "iou_thres", "max_det")
    + ("patience", "best_min_score"),
    "distillation": ("teacher", "distill_weight", "distill_feat", "temperature"),
    "segmentation": ("segment", "seg_batch_size", "seg_aspect", "seg_scale", "det_gain", "seg_gain")
    + ("seg_class_weights", "seg_val_interval", "det_weight"),
    "run": ("project", "name", "exist_ok", "resume", "save_period", "save_last_n", "nosave", "log_with")
    + ("push_to_hub", "plots"),
}


def concept_of(key: str) -> str | None:
    """The concept an option belongs to, or None for a name that is no option."""
    return next((name for name, keys in CONCEPTS.items() if key in keys), None)


def expand_concepts(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with every concept section (`optimisation: {lr0: 0.02}`) written flat; a key under a concept it
    does not belong to, or set both flat and in its section, is a `ConfigError` naming it. `data:` is a section
    only when it is a mapping (a string is the data option itself)."""
    out = {key: value for key, value in values.items() if not (key in CONCEPTS and isinstance(value, dict))}
    for concept, section in values.items():
        if concept not in CONCEPTS or not isinstance(section, dict):
            continue
        for key, value in section.items():
            if key not in CONCEPTS[concept]:
                home = concept_of(str(key))
                if home:
                    raise ConfigError(f"{source}: '{concept}.{key}': '{key}' belongs to '{home}', not '{concept}'.")
                names = list(CONCEPTS[concept])
                raise ConfigError(f"{source}: '{concept}.{key}' is no {concept} option.{did_you_mean(str(key), names)}")
            if key in out:
                raise ConfigError(f"{source}: '{key}' is set twice, on its own and under '{concept}'; keep one.")
            out[key] = value
    return out


# Accelerate's precision choices (accelerate.utils.PrecisionType), spelled out so config stays import-light.

_ALIASES = {"batch": "batch_size", "img_size": "imgsz", "img": "imgsz", "lr": "lr0"}


def fields_in_section(section: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["section"] == section]


@functools.cache
def field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


@functools.cache
def fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Check `value` against the field's type; accept ints for floats and strings from the CLI."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{source}: '{key}' may not be empty; expected {_type_name(annotation)}.")
    for kind in allowed:
        if kind is type(None):
            continue
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (str, Path)):
            return str(value)
        if kind is dict and isinstance(value, dict):
            return dict(value)
        if kind is list and isinstance(value, (list, tuple)):
            return list(value)
    raise ConfigError(f"{source}: '{key}' must be {_type_name(annotation)}, got {type(value).__name__} {value!r}.")


def _type_name(annotation: Any) -> str:
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    names = [a.__name__ for a in allowed if a is not type(None)]
    text = " or ".join(names)
    return text + " (or empty)" if type(None) in allowed else text


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} '{path}' is not valid yaml: {yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must hold a mapping of option: value, not {type(data).__name__}.")
    return data


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML parse error in one line: where (line, column, 1-based) and what, without yaml's quoted snippet."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe path as given, or a name under the shipped recipes, `RECIPES_DIR` (`demo` -> recipes/demo.yaml).

    Recipes refer to their hyp and data files relative to themselves (`hyp/scratch-low.yaml`,
    `data/coco128.yaml`), so they resolve the same in a checkout and in an installed package.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / path, RECIPES_DIR / f"{recipe}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"recipe '{recipe}' not found (a yaml path, or a name in {RECIPES_DIR}).")


def _flatten_recipe(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Inline `hyp:` (mapping or hyp yaml path) and make relative `data`/`weights`/`teacher` paths absolute."""
    data = expand_concepts(data, f"recipe {path}")
    hyp = data.pop("hyp", None)
    flat: dict[str, Any] = {}
    if isinstance(hyp, str):
        hyp_path = Path(hyp) if Path(hyp).is_absolute() else path.parent / hyp
        if not hyp_path.is_file() and (RECIPES_DIR / hyp).is_file():
            hyp_path = RECIPES_DIR / hyp
        hyp = _read_yaml(hyp_path, "hyp file")
        hyp_source = str(hyp_path)
    else:
        hyp_source = f"{path} (hyp)"
    if hyp is not None:
        if not isinstance(hyp, dict):
            raise ConfigError(f"{path}: 'hyp' must be a mapping or a yaml path.")
        hyp_names = list(HYPERPARAMETERS)
        for key in hyp:
            if key not in hyp_names:
                raise ConfigError(f"{hyp_source}: unknown hyperparameter '{key}'.{did_you_mean(key, hyp_names)}")
        flat.update(hyp)
    flat.update(data)
    for key in ("data", "weights", "teacher", "augment"):
        value = flat.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            candidate = (path.parent / value).resolve()
            if key == "weights" and not candidate.exists() and is_hub_id(value):
                continue  # `weights: org/name` names a Hub model, not a file beside the recipe
            if candidate.exists() or not Path(value).exists():
                flat[key] = str(candidate)
    return flat


# `org/name`: what a Hub model id looks like (a bare `name` is not taken: it is far likelier a missing file)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx", ".yaml", ".yml", ".json")


def is_hub_id(value: str) -> bool:
    """Whether a `weights` value that is no path here reads as a Hub model id (`org/name`, no file suffix)."""
    return bool(HUB_ID.match(value)) and not value.lower().endswith(_WEIGHTS_SUFFIXES)


def load_config(recipe: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Build a validated `TrainConfig` from a recipe (optional) and keyword overrides.

    Overrides win over the recipe. `hyp=` may be a hyp yaml path or mapping, as in a recipe.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if recipe is not None:
        path = resolve_recipe(recipe)
        flat = _flatten_recipe(_read_yaml(path, "recipe"), path)
        if "resume" in flat:  # a recipe describes a run to start; resuming is a choice made per launch
            raise ConfigError(
                f"recipe {path}: 'resume' cannot be set in a recipe (it would resume every run started from it); "
                "remove it and pass --resume [CHECKPOINT] on the command line, or fit(resume=...)."
            )
        values.update(flat)
        sources.update({k: f"recipe {path}" for k in flat})
    if "hyp" in overrides:
        hyp = overrides.pop("hyp")
        if hyp is not None:
            flat = _flatten_recipe({"hyp": hyp}, Path.cwd() / "hyp")
            values.update(flat)
            sources.update({k: "hyp" for k in flat})
    for key, value in expand_concepts(overrides, "argument").items():
        key = _ALIASES.get(key, key).replace("-", "_")
        values[key] = value
        sources[key] = "argument"
    return config_from_dict(values, sources)


def config_from_dict(values: dict[str, Any], sources: dict[str, str] | None = None) -> TrainConfig:
    """Validate a flat mapping into a `TrainConfig` (unknown key or wrong type -> `ConfigError`)."""
    sources = sources or {}
    types_ = field_types()
    names = list(types_)
    checked: dict[str, Any] = {}
    for key, value in values.items():
        source = sources.get(key, "config")
        if key not in types_:
            raise ConfigError(f"{source}: unknown option '{key}'.{did_you_mean(key, names)}")
        checked[key] = _coerce(key, value, types_[key], source)
    if isinstance(checked.get("cache"), str) and checked["cache"].lower() in ("", "none"):
        checked["cache"] = None  # `cache: none` in yaml is the string 'none': it means no cache
    cfg = TrainConfig(**checked)
    check_values(cfg)
    return cfg


def check_values(cfg: TrainConfig) -> None:
    """Range checks that types alone do not catch (`config_checks`): all problems in one `ConfigError`."""
    if problems := value_problems(cfg):
        raise ConfigError("invalid configuration: " + "; ".join(problems) + ".")


def check_detection_flags(
    imgsz: int | None, conf_thres: float, iou_thres: float, max_det: int, batch_size: int = 1, workers: int = 0
) -> None:
    """The flags of `accelyolo val` and `predict`, checked before any file is read or written: a
    `ConfigError` naming each flag out of range (the thresholds would fail only inside NMS)."""
    if imgsz is not None and (problem := imgsz_problem("--imgsz", imgsz)):
        raise ConfigError(f"{problem}.")
    problems = unit_interval_problems({"--conf-thres": conf_thres, "--iou-thres": iou_thres})
    for flag, value in (("--max-det", max_det), ("--batch-size", batch_size)):
        if value < 1:
            problems.append(f"{flag} must be at least 1, got {value}")
    if workers < 0:
        problems.append(f"--workers must be >= 0, got {workers}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved configuration (`args.yaml`) in field order, which keeps the sections together."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
