"""The validation loops shared by the trainer and `accelyolo val`: detection (every rank evaluates its shard)
and the segmentation of a multi-task model (`evaluate_segmentation`); and the evaluators a run validates
with, built by its experiment: `DetectionValidator`, and `MultiTaskEvaluator` (detection plus, when due,
segmentation, as one `MultiTaskResult`).

Each rank runs the model over its own whole batches of the validation loader (`build_dataloader(...,
num_shards, shard)`: no image repeated, no batch padded with an image of another shape), turns detections
and labels into small per-image records, and the records of all ranks are gathered once at the end. A
repeated image id (a loader that Accelerate padded) is still dropped when the records merge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from accelyolo.core.boxes import non_max_suppression, scale_boxes, xywh2xyxy
from accelyolo.core.defaults import MAX_DET, VAL_CONF_THRES, VAL_IOU_THRES
from accelyolo.data.loader import to_model_input
from accelyolo.evaluation.metrics import DetectionEvaluator, DetectionResult
from accelyolo.evaluation.segmetrics import SegmentationResult, confusion_matrix, segmentation_result

LOGGER = logging.getLogger("accelyolo")


def targets_to_pixels(targets: torch.Tensor, batch_size: int, height: int, width: int) -> list:
    """Split collated targets `(N, 6)` [img, cls, cx, cy, w, h] (normalized) into per-image
    `(boxes xyxy pixels (m, 4), classes (m,))` pairs."""
    scale = targets.new_tensor([width, height, width, height])
    boxes = xywh2xyxy(targets[:, 2:6] * scale)
    out = []
    for i in range(batch_size):
        keep = targets[:, 0] == i
        out.append((boxes[keep], targets[keep, 1]))
    return out


def to_original_pixels(boxes: torch.Tensor, ratio_pad, orig_shape) -> torch.Tensor:
    """xyxy boxes `(n, 4)` in letterboxed pixels -> original-image pixels, clipped to the image.

    The metrics are computed in this space, the one predictions.json and COCOeval use: in letterboxed
    pixels a prediction may stick out of the image into the padding (COCO sees it clipped) and x and y
    carry slightly different resize ratios (the resized sides are rounded), which lowered mAP50-95.
    """
    return scale_boxes(boxes.float(), ratio_pad=ratio_pad, orig_shape=tuple(orig_shape))


# Evaluation keeps every (box, class) pair above the confidence floor, not only each box's best class (YOLOv5's
# val.py and ultralytics' validation do the same): a box the model is unsure between two classes then counts
# for the right one. Measured with the same weights (yolov8n, 15 epochs, 320 px), pycocotools on the
# written predictions.json: cards mAP50-95 0.1820 -> 0.1927, aquarium 0.0112 -> 0.0128 (one class: no change).
MULTI_LABEL = True


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    accelerator: Accelerator,
    nc: int,
    names: list[str],
    conf_thres: float = VAL_CONF_THRES,
    iou_thres: float = VAL_IOU_THRES,
    max_det: int = MAX_DET,
    on_batch: Callable[[dict[str, Any], list[torch.Tensor]], None] | None = None,
    channels_last: bool = False,
    multi_label: bool = MULTI_LABEL,
) -> DetectionResult:
    """Run `model` (eval mode, not DDP-wrapped) over this rank's shard of `loader`; gather; compute.

    Every rank returns the same `DetectionResult`, computed with predictions and labels both mapped back to
    original-image pixels (as COCOeval sees predictions.json). `on_batch(batch, detections)` sees each local
    batch with its detections (xyxy, conf, cls in letterboxed pixels), e.g. to plot them or write
    predictions.json.
    `channels_last` feeds NHWC images (for a model converted with `memory_format=torch.channels_last`).
    `multi_label` keeps each class of a box above `conf_thres` (see `MULTI_LABEL`).
    """
    was_training = model.training
    model.eval()
    local = DetectionEvaluator(nc=nc, names=names)
    crowd_regions = getattr(getattr(loader, "dataset", None), "crowd_regions", None)  # COCO iscrowd regions
    for batch in loader:
        images = batch["images"].to(accelerator.device, non_blocking=True)
        images = to_model_input(images, channels_last)  # (B, 3, H, W) in [0, 1]
        with accelerator.autocast():
            out = model(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        detections = non_max_suppression(
            out.float(), conf_thres=conf_thres, iou_thres=iou_thres, multi_label=multi_label, max_det=max_det
        )
        height, width = images.shape[2:]
        truths = targets_to_pixels(batch["targets"].to(images.device), len(detections), height, width)
        for path, det, (gt_boxes, gt_classes), orig, ratio_pad in zip(
            batch["paths"], detections, truths, batch["orig_shapes"], batch["ratio_pads"]
        ):
            det_orig = det.clone()
            det_orig[:, :4] = to_original_pixels(det[:, :4], ratio_pad, orig)
            crowd = crowd_regions(str(path)) if crowd_regions is not None else np.zeros((0, 5))  # cls x1 y1 x2 y2
            gt_orig = to_original_pixels(gt_boxes, ratio_pad, orig)
            local.add(str(path), det_orig, gt_orig, gt_classes, crowd[:, 1:], crowd[:, 0])
        if on_batch is not None:
            on_batch(batch, detections)
    records = local.records()
    if accelerator.num_processes > 1:
        counts = gather_object([len(records)])  # images each rank evaluated
        records = gather_object(records)
        if accelerator.is_main_process:
            LOGGER.info("validation: %s images on %d ranks", " + ".join(map(str, counts)), len(counts))
    merged = DetectionEvaluator(nc=nc, names=names)
    merged.extend(records)
    model.train(was_training)
    return merged.compute()


class DetectionValidator:
    """The trainer's evaluator: `evaluate(model)` runs `evaluate` over the validation loader it holds.

    An experiment builds one (`Experiment.build_evaluator`); a second task wraps it in its own evaluator.
    """

    def __init__(
        self,
        loader,
        accelerator: Accelerator,
        names: list[str],
        conf_thres: float = VAL_CONF_THRES,
        iou_thres: float = VAL_IOU_THRES,
        max_det: int = MAX_DET,
        channels_last: bool = False,
    ) -> None:
        self.loader, self.accelerator, self.names = loader, accelerator, list(names)
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.channels_last = channels_last

    def evaluate(
        self, model: torch.nn.Module, on_batch: Callable[[dict[str, Any], list[torch.Tensor]], None] | None = None
    ) -> DetectionResult:
        return evaluate(
            model,
            self.loader,
            self.accelerator,
            nc=len(self.names),
            names=self.names,
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
            max_det=self.max_det,
            on_batch=on_batch,
            channels_last=self.channels_last,
        )


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    loader: Any,
    accelerator: Accelerator,
    names: list[str],
    ignore: int,
    channels_last: bool = False,
) -> SegmentationResult:
    """Pixel accuracy and mIoU of `model.segment` over this rank's shard of `loader`, gathered over ranks.

    One confusion matrix per image, keyed by its path, so images that DDP's even batches repeat on
    a rank are counted once. Every rank returns the same result.
    """
    was_training = model.training
    model.eval()
    k = len(names)
    per_image: dict[str, np.ndarray] = {}
    for batch in loader:
        images = to_model_input(batch["images"], channels_last)
        with accelerator.autocast():
            logits = model.segment(images)
        pred = logits.argmax(1)  # (B, H, W)
        masks = batch["masks"].to(pred.device)
        for path, p, t in zip(batch["paths"], pred, masks):
            per_image[str(path)] = confusion_matrix(p, t, k, ignore).cpu().numpy()
    if accelerator.num_processes > 1:
        merged: dict[str, np.ndarray] = {}
        for part in gather_object([per_image]):
            merged.update(part)
        per_image = merged
    total = np.zeros((k, k), np.int64)
    for matrix in per_image.values():
        total += matrix
    model.train(was_training)
    return segmentation_result(torch.from_numpy(total), names)


@dataclass
class MultiTaskResult:
    """A validation of both tasks; `as_dict()` = detection metrics, `pixel_accuracy`, `mIoU`, `det_fitness`,
    and `fitness` = det_weight · detection fitness + (1 - det_weight) · mIoU."""

    detection: Any  # DetectionResult
    segmentation: SegmentationResult | None  # None: not measured this epoch
    miou: float  # this epoch's mIoU, else the last measured one (0 before any)
    det_weight: float

    def as_dict(self) -> dict[str, float]:
        out = dict(self.detection.as_dict())
        out["det_fitness"] = out["fitness"]
        seg = self.segmentation
        out["pixel_accuracy"] = seg.pixel_accuracy if seg is not None else float("nan")
        out["mIoU"] = self.miou
        out["fitness"] = self.det_weight * out["det_fitness"] + (1.0 - self.det_weight) * self.miou
        return out


class MultiTaskEvaluator:
    """mAP through the detection evaluator and, every `interval` epochs and every epoch of the last `interval`,
    pixel accuracy / mIoU on `seg_loader` (`evaluate_segmentation`); the result is a `MultiTaskResult`."""

    def __init__(
        self,
        detection: Any,
        seg_loader: Any,
        accelerator: Any,
        seg_names: list[str],
        ignore: int,
        cfg: Any,  # TrainConfig: seg_val_interval, epochs, det_weight, channels_last
    ) -> None:
        self.detection, self.seg_loader, self.accelerator = detection, seg_loader, accelerator
        self.seg_names, self.ignore, self.cfg = list(seg_names), ignore, cfg
        self.epoch = cfg.epochs  # the epoch the next validation measures (the trainer sets it)
        self.last_seg: SegmentationResult | None = None
        self.last_miou = 0.0  # the last measured mIoU, carried to the epochs that do not measure it

    def seg_due(self, epoch: int) -> bool:
        """Whether this epoch's validation measures mIoU: every `seg_val_interval`, and every epoch of the last."""
        n = self.cfg.seg_val_interval
        return epoch % n == 0 or epoch > self.cfg.epochs - n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.detection, "set_epoch"):
            self.detection.set_epoch(epoch)

    def restore(self, last_metrics: dict[str, float]) -> None:
        """A resumed run carries the mIoU its last validation recorded."""
        self.last_miou = float(last_metrics.get("mIoU", 0.0))
        if hasattr(self.detection, "restore"):
            self.detection.restore(last_metrics)

    def evaluate(self, model: torch.nn.Module) -> MultiTaskResult:
        detection = self.detection.evaluate(model)
        seg = None
        if self.seg_due(self.epoch):
            seg = evaluate_segmentation(
                model, self.seg_loader, self.accelerator, self.seg_names, self.ignore, self.cfg.channels_last
            )
            self.last_seg, self.last_miou = seg, seg.miou
        return MultiTaskResult(detection, seg, self.last_miou, self.cfg.det_weight)
