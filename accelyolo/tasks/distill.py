"""Knowledge distillation (YOLOv6's engine): a frozen teacher guides the student through extra loss terms.

The teacher is part of the run's objective (`DistillationObjective`, wrapping the objective the run has
without a teacher), not an edit inside the loop. `DistillExperiment.build_objective` loads it (`load_teacher`),
checks it against the student (`check_teacher`: predictions that pair grid point by
grid point, so yolov8 and yolo11 teach each other at any size, and the same class list), keeps it frozen (eval
mode, so its BatchNorm statistics stay fixed; no gradients; never passed to `accelerator.prepare`, so
under DDP each rank holds its own copy and nothing of it is synchronised) on the student's device, and
adds to the detection loss, per batch, on the same augmented images:

- `distill_cls`: KL divergence between the temperature-softened class distributions of teacher and
  student, per prediction, times T² (Hinton's scaling, so the gradient size does not shrink with T); with a
  single class, between the class's two outcomes (`class_kl`: a softmax over one class is always 1);
- `distill_box` (families whose boxes are distributions, the anchor-free DFL head): the same KL between
  the bin distributions of each box side;
- `distill_feat` (`--distill-feat`): channel-wise distillation (CWD, Shu et al. 2021) on the neck outputs:
  each channel's spatial map softened by a softmax with temperature, KL teacher || student, times T²,
  averaged over channels. Where the student's channel count differs from the teacher's, a learned 1x1
  adapter maps the student's features to the teacher's channels; it is trained with the student, saved
  in the bundle's `extra` section (exact resume) and is no part of the student model.

Each term is weighted by `distill_weight`, decayed over training by a cosine (YOLOv6), and appears as
its own loss column (`train/distill_cls_loss`, ...) and in the progress bar. The teacher is never
saved: the bundle records its path in the config, and a resumed run reads it again from there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from accelyolo.core.config import ConfigError, TrainConfig
from accelyolo.families import family_of, get_family, list_families, list_models
from accelyolo.losses.objective import Objective
from accelyolo.training.experiment import Experiment
from accelyolo.training.records import RunData
from accelyolo.weights.checkpoint import load_checkpoint

__all__ = [
    "DistillExperiment",
    "DistillationObjective",
    "FeatureAdapters",
    "FeatureTap",
    "channel_wise_kl",
    "check_teacher",
    "distill_weight_at",
    "distillation_terms",
    "load_teacher",
    "softened_kl",
    "teacher_outputs",
]

LOGGER = logging.getLogger("accelyolo")


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, list[str] | None]:
    """The teacher model of `path`, frozen (eval mode, `requires_grad=False`), and its class names.

    The one place that reads teacher weights: an accelyolo bundle today (its EMA weights when it has
    them); other weight formats are added here.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'teacher': {path} does not exist; pass a .safetensors bundle of an earlier run.")
    model, meta = load_checkpoint(path, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    names = meta.get("names")
    return model.eval(), list(names) if isinstance(names, list) else None


def check_teacher(
    teacher: nn.Module, teacher_names: list[str] | None, student: nn.Module, student_names: list[str], path: str
) -> None:
    """Refuse, before training starts, a teacher whose predictions do not pair with the student's, or one
    of another class list. Accepted: a teacher of any size whose family has the student's `distill_kind`
    (anchor-free: yolov8 and yolo11 either way; anchor-based: yolov5) and the same layout (strides, DFL
    bins, anchors per cell); the feature term maps channel counts through adapters."""
    t_family, s_family = family_of(teacher), family_of(student)
    t_name, s_name = teacher.config.get("name"), student.config.get("name")
    if s_family.distill_kind is None:
        raise ConfigError(f"'teacher': the student {s_name} ({s_family.name}) has no distillation; {_pairings()}.")
    if t_family.distill_kind != s_family.distill_kind:
        raise ConfigError(
            f"'teacher': {path} is a {t_family.name} model ({t_name}), which does not pair with the "
            f"{s_family.name} student {s_name}; {_pairings()}."
        )
    t_layout, s_layout = t_family.distill_layout(teacher), s_family.distill_layout(student)
    if t_layout != s_layout:
        differ = ", ".join(
            f"{k} {v} (the student's: {s_layout.get(k)})" for k, v in t_layout.items() if v != s_layout.get(k)
        )
        raise ConfigError(
            f"'teacher': {path} ({t_name}) lays out its predictions otherwise than the student {s_name}: {differ}; "
            "a teacher must predict on the same grid in the same form."
        )
    if teacher_names is not None and list(teacher_names) != list(student_names):
        raise ConfigError(
            f"'teacher': {path} was trained on the classes {teacher_names}, the student's data has "
            f"{student_names}; the teacher must share the student's class list."
        )
    if teacher.nc != student.nc:
        raise ConfigError(f"'teacher': {path} predicts {teacher.nc} classes, the student {student.nc}.")


def _pairings() -> str:
    """Which teachers go with which students, from the registered families' kinds."""
    kinds: dict[str, list[str]] = {}
    for name in list_families():
        kind = get_family(name).distill_kind
        if kind is not None:
            kinds.setdefault(kind, []).append(f"{os.path.commonprefix(list_models(name))}*")  # e.g. yolov8*
    return "; ".join(
        f"a student of {' or '.join(m)} takes a teacher of {' or '.join(m)}, any size" for m in kinds.values()
    )


def distill_weight_at(epoch: int, epochs: int, weight: float) -> float:
    """The distillation weight of (1-based) `epoch`: `weight` at epoch 1, cosine down to 0 at the end of
    the last epoch (YOLOv6 decays it the same way over its epochs)."""
    return weight * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2


def softened_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softmax over the last dim at `temperature`, averaged over every other
    position, times T². Zero when the logits are equal."""
    log_s = F.log_softmax(student.float() / temperature, -1)
    log_t = F.log_softmax(teacher.float() / temperature, -1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    return kl.mean() * temperature**2


def class_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The class term: `softened_kl` of the softmax over the classes (YOLOv6). With a single class that softmax
    is 1 whatever the logits and the term would be 0, teaching nothing: there the class's own probability at
    `temperature` (the sigmoid that the BCE-trained head predicts) is compared as the two outcomes "object of
    the class" and "not" (the softmax of the logits beside a 0)."""
    if student.shape[-1] == 1:
        student, teacher = (torch.cat((x, torch.zeros_like(x)), -1) for x in (student, teacher))
    return softened_kl(student, teacher, temperature)


def channel_wise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Channel-wise distillation of two (B, C, H, W) maps: per channel a spatial softmax at `temperature`,
    KL(teacher || student), averaged over batch and channels, times T²."""
    return softened_kl(student.flatten(2), teacher.flatten(2), temperature)


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The teacher's raw head maps and neck features for `images` (no gradients, eval mode)."""
    feats = teacher.neck(teacher.backbone(images))
    return teacher.head.raw_maps(feats), feats


def distillation_terms(
    student: nn.Module,
    student_maps: list[torch.Tensor],
    teacher: nn.Module,
    teacher_maps: list[torch.Tensor],
    temperature: float,
    student_feats: list[torch.Tensor] | None = None,
    teacher_feats: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The unweighted distillation terms, keyed `cls`, `box` (when the family's boxes are distributions)
    and `feat` (CWD summed over levels, when features are given; the student's already in the teacher's
    channel counts, see `FeatureAdapters`)."""
    s_cls, s_box = family_of(student).distill_logits(student, student_maps)
    t_cls, t_box = family_of(teacher).distill_logits(teacher, teacher_maps)  # its own family: may be another
    terms = {"cls": class_kl(s_cls, t_cls, temperature)}
    if s_box is not None and t_box is not None:
        terms["box"] = softened_kl(s_box, t_box, temperature)
    if student_feats is not None and teacher_feats is not None:
        total = student_maps[0].new_zeros((), dtype=torch.float32)
        for s, t in zip(student_feats, teacher_feats):
            total = total + channel_wise_kl(s, t, temperature)
        terms["feat"] = total
    return terms


class FeatureTap:
    """Keeps a module's first training-mode output of each step through a forward hook: the student's neck
    on the detection images (a multi-task forward calls the neck again on the segmentation images)."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] | None = None
        self.handle: Any = None

    def attach(self, module: nn.Module) -> None:
        self.remove()
        self.handle = module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: list[torch.Tensor]) -> None:
        if module.training and self.kept is None:
            self.kept = output

    def take(self) -> list[torch.Tensor]:
        """This step's kept output, handed over once (the next step records anew)."""
        feats, self.kept = self.kept, None
        if feats is None:
            raise RuntimeError("distillation: the student's neck features of this step were not recorded")
        return feats

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class DistillationObjective(Objective):
    """Another objective (detection, or detection + segmentation) plus the weighted distillation terms.

    The inner objective runs the student; the teacher sees the same (augmented) detection images. Items are the
    inner ones followed by `distill_<term>` in the order of `terms`, each already times `scale` (the epoch's
    distillation weight, set by `start_epoch`). `student` returns the unwrapped student (its family reads the
    maps). With the feature term, `tap` holds the student's neck outputs of the step (`prepare` attaches it
    to the student's neck) and `adapters` (trained with the student, saved in the bundle's extra state) maps
    them to the teacher's channels. The teacher and the adapters live here, never in the student.
    """

    def __init__(
        self,
        inner: Objective,
        teacher: nn.Module,
        terms: tuple[str, ...],
        temperature: float,
        student: Callable[[], nn.Module],
        adapters: nn.Module | None = None,
        tap: FeatureTap | None = None,
        weight: float = 1.0,
    ) -> None:
        if "feat" in terms and (adapters is None or tap is None):
            raise ValueError("the feature term needs the adapters and the tap of the student's neck")
        self.inner, self.teacher, self.terms, self.temperature = inner, teacher, terms, temperature
        self.student, self.adapters, self.tap = student, adapters, tap
        self.weight = weight  # the configured weight; `start_epoch` sets each epoch's `scale` (cosine to 0)
        self.scale = 1.0
        self.names = tuple(inner.names) + tuple(f"distill_{t}" for t in terms)

    def run(self, model: Any, batch: dict[str, Any], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if self.teacher.training:  # nothing may switch the teacher's BatchNorm to batch statistics
            self.teacher.eval()
        total, items, preds = self.inner.run(model, batch, images)
        t_maps, t_feats = teacher_outputs(self.teacher, images)
        feat = "feat" in self.terms
        terms = distillation_terms(
            self.student(),
            preds,
            self.teacher,
            t_maps,
            self.temperature,
            student_feats=self.adapters(self.tap.take()) if feat else None,
            teacher_feats=t_feats if feat else None,
        )
        weighted = torch.stack([terms[name] for name in self.terms]) * self.scale
        batch_size = images.shape[0]  # the detection loss is a sum over the batch (YOLOv5); so are these
        return total + weighted.sum() * batch_size, torch.cat((items, weighted.detach().to(items.dtype))), preds

    def trained_adapters(self) -> bool:
        """Whether the adapters have parameters (channel counts that differ somewhere): they train and are saved."""
        return self.adapters is not None and any(True for _ in self.adapters.parameters())

    def prepare(self, accelerator: Any, model: nn.Module) -> None:
        """The adapters on the student's device (DDP-wrapped under several processes, so their gradients are
        averaged like the student's), the tap on the student's neck."""
        if self.adapters is not None:
            if self.trained_adapters():
                self.adapters = accelerator.prepare(self.adapters)
            else:
                self.adapters = self.adapters.to(accelerator.device)
        if self.tap is not None:
            self.tap.attach(model.neck)
        self.inner.prepare(accelerator, model)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.scale = distill_weight_at(epoch, epochs, self.weight)
        if self.adapters is not None:
            self.adapters.train()
        self.inner.start_epoch(epoch, epochs)

    def extra_state(self) -> dict[str, Any]:
        state = self.inner.extra_state()
        if self.trained_adapters():
            state["distill_adapters"] = extract_model_from_parallel(self.adapters).state_dict()
        return state

    def load_extra_state(self, state: Mapping[str, Any], source: Path | None) -> None:
        self.inner.load_extra_state(state, source)
        if not self.trained_adapters():
            return
        if state.get("distill_adapters") is None:
            raise ConfigError(
                f"{source}: this distillation run has feature adapters but the bundle holds none; "
                "resume with the options it was trained with."
            )
        extract_model_from_parallel(self.adapters).load_state_dict(state["distill_adapters"])

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
        self.inner.close()


class FeatureAdapters(nn.Module):
    """Per neck level a 1x1 convolution from the student's channels to the teacher's (none where they
    match), trained with the student; `forward` maps the list of student features."""

    def __init__(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleDict(
            {
                str(i): nn.Conv2d(cs, ct, 1)
                for i, (cs, ct) in enumerate(zip(student_channels, teacher_channels))
                if cs != ct
            }
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.levels[str(i)](x) if str(i) in self.levels else x for i, x in enumerate(feats)]


class DistillExperiment(Experiment):
    """An experiment with a frozen teacher (`cfg.teacher`); `fit()` adds it when a teacher is set.

    Its objective is the objective of the run without a teacher (detection, or detection + segmentation: the
    next experiment in line) wrapped in a `DistillationObjective`, which holds the teacher and the feature
    adapters and, through the objective hooks the loop calls, prepares the adapters, sets each epoch's
    distillation weight, saves and restores the adapters beside the student and removes its neck hook. The
    optimizer also trains the adapters; the resolved configuration records the teacher's absolute path.
    """

    def resolve_config(self, data: RunData, names: list[str]) -> TrainConfig:
        # the teacher's absolute path goes into args.yaml and the bundles: a resumed run reads it from there
        cfg = super().resolve_config(data, names)
        return dataclasses.replace(cfg, teacher=str(Path(cfg.teacher).resolve()))

    def build_objective(self, model: nn.Module, data: RunData, names: list[str]) -> Objective:
        """The objective without a teacher (`super()`), wrapped with the distillation terms of the teacher,
        which is loaded and checked against the student."""
        cfg = self.cfg
        teacher, teacher_names = load_teacher(cfg.teacher, device=self.accelerator.device)
        check_teacher(teacher, teacher_names, model, names, cfg.teacher)
        if cfg.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        LOGGER.info(
            "distillation: teacher %s (%s), weight %g (cosine to 0), temperature %g%s",
            teacher.config.get("name"),
            cfg.teacher,
            cfg.distill_weight,
            cfg.temperature,
            ", with neck features (CWD)" if cfg.distill_feat else "",
        )
        inner = super().build_objective(model, data, names)
        probe = torch.zeros(1, 3, 64, 64, device=self.accelerator.device)
        _, box = family_of(teacher).distill_logits(teacher, teacher_outputs(teacher, probe)[0])
        terms = ("cls",) + (("box",) if box is not None else ()) + (("feat",) if cfg.distill_feat else ())
        adapters = None
        if cfg.distill_feat:
            adapters = FeatureAdapters(tuple(model.neck.out_channels), tuple(teacher.neck.out_channels))
        return DistillationObjective(
            inner,
            teacher,
            terms,
            cfg.temperature,
            student=lambda: model,  # the module itself: `prepare` wraps it (DDP, compile) without copying it
            adapters=adapters,
            tap=FeatureTap() if adapters is not None else None,
            weight=cfg.distill_weight,
        )

    def build_optimizer(self, model: nn.Module, objective: Objective) -> torch.optim.Optimizer:
        """The base optimizer's groups over the student and the feature adapters (when they have parameters)."""
        if not isinstance(objective, DistillationObjective) or not objective.trained_adapters():
            return super().build_optimizer(model, objective)
        return super().build_optimizer(nn.ModuleDict({"model": model, "adapters": objective.adapters}), objective)
