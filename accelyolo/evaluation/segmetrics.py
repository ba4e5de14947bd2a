"""Semantic segmentation metrics from a confusion matrix: pixel accuracy, per-class IoU, mIoU.

`confusion[t, p]` counts the pixels of true class `t` predicted as `p`; pixels whose truth is the
ignore value (or any id outside 0..K-1) are not counted. From it:
pixel accuracy = trace / total; IoU_c = C[c, c] / (row_c + col_c - C[c, c]); mIoU = the mean of IoU_c
over the classes present in the truth or the predictions (a class absent from both has no IoU and is
left out, as the Cityscapes evaluation does). Counts are int64 tensors, so ranks add them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SegmentationResult", "confusion_matrix", "segmentation_result"]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """(K, K) int64 counts of (true, predicted) class pairs over the pixels of `pred` / `target` (same shape)."""
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    valid = (t != ignore_index) & (t >= 0) & (t < num_classes)
    index = t[valid] * num_classes + p[valid].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class SegmentationResult:
    """Pixel accuracy, mIoU and per-class IoU (NaN for a class absent from truth and predictions)."""

    pixel_accuracy: float
    miou: float
    iou: list[float]
    names: list[str]
    pixels: int

    def as_dict(self) -> dict[str, float]:
        return {"pixel_accuracy": self.pixel_accuracy, "mIoU": self.miou}

    def table(self) -> str:
        """Per-class IoU lines for the end-of-run log."""
        rows = [f"{'class':>16} {'IoU':>7}"]
        rows += [f"{name:>16} {iou:7.4f}" for name, iou in zip(self.names, self.iou)]
        rows.append(f"{'all (mIoU)':>16} {self.miou:7.4f}   pixel accuracy {self.pixel_accuracy:.4f}")
        return "\n".join(rows)


def segmentation_result(confusion: torch.Tensor, names: list[str] | None = None) -> SegmentationResult:
    """The metrics of a (K, K) confusion matrix (see the module docstring)."""
    c = confusion.double().cpu()
    k = c.shape[0]
    total = c.sum().item()
    diag = torch.diag(c)
    union = c.sum(0) + c.sum(1) - diag
    iou = torch.where(union > 0, diag / union.clamp(min=1), torch.full_like(diag, float("nan")))
    present = union > 0
    miou = float(iou[present].mean()) if present.any() else 0.0
    return SegmentationResult(
        pixel_accuracy=float(diag.sum() / total) if total else 0.0,
        miou=miou,
        iou=iou.tolist(),
        names=list(names) if names is not None else [str(i) for i in range(k)],
        pixels=int(total),
    )
