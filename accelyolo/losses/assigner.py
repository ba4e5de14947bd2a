"""Task-aligned assigner (TOOD): which anchor points learn which ground-truth box, and how strongly.

For every (ground truth, anchor point) pair the alignment metric is `s^alpha * u^beta`, with `s` the
predicted score of the ground truth's class and `u` the CIoU of the predicted box with it. Each ground
truth takes the `topk` best-aligned anchor points whose centres lie inside it; an anchor point claimed
by several keeps the one it overlaps most. A box thinner than `min_side` is grown about its centre to
that size for the "centre inside" test only (its targets stay the real box): a licence plate 5 px high
misses every row of stride-8 anchor centres three times in eight and then teaches nothing.
Class targets are soft: the alignment metric rescaled so that each ground truth's best anchor gets that
ground truth's best IoU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from accelyolo.core.boxes import bbox_iou

__all__ = ["Assignment", "TaskAlignedAssigner"]


class Assignment(NamedTuple):
    """Per anchor point targets; B images, N anchor points, C classes."""

    labels: torch.Tensor  # (B, N) long, class of the assigned ground truth (0 for background)
    bboxes: torch.Tensor  # (B, N, 4) xyxy of the assigned ground truth
    scores: torch.Tensor  # (B, N, C) soft class targets (zero for background)
    fg_mask: torch.Tensor  # (B, N) bool, anchor point has a ground truth
    gt_index: torch.Tensor  # (B, N) long, index of the assigned ground truth in its image


class TaskAlignedAssigner(nn.Module):
    """Assign ground truths to anchor points by the task-alignment metric.

    Args:
        num_classes: C.
        topk: candidate anchor points per ground truth.
        alpha, beta: exponents of the class score and the IoU in the alignment metric.
        eps: guards divisions and the "centre strictly inside" test.
        min_side: the smallest width and height (in the boxes' units) a ground truth has in the candidate
            test; 0 = the real box.
    """

    def __init__(
        self,
        num_classes: int,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        eps: float = 1e-9,
        min_side: float = 0.0,
    ) -> None:
        super().__init__()
        if min_side < 0:
            raise ValueError(f"TaskAlignedAssigner: min_side must be >= 0, got {min_side}")
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps
        self.min_side = float(min_side)

    @torch.no_grad()
    def forward(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        anchor_points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        mask_gt: torch.Tensor,
    ) -> Assignment:
        """Compute the assignment.

        Args:
            pd_scores: (B, N, C) predicted class probabilities (after sigmoid).
            pd_bboxes: (B, N, 4) predicted boxes xyxy, same units as `gt_bboxes`.
            anchor_points: (N, 2) anchor point centres x, y, same units.
            gt_labels: (B, M, 1) class indices of the (padded) ground truths.
            gt_bboxes: (B, M, 4) ground-truth boxes xyxy.
            mask_gt: (B, M, 1) 1 for real ground truths, 0 for padding.
        """
        b, n, c = pd_scores.shape
        m = gt_bboxes.shape[1]
        device = pd_scores.device
        if m == 0:
            return Assignment(
                torch.zeros(b, n, dtype=torch.long, device=device),
                torch.zeros_like(pd_bboxes),
                torch.zeros_like(pd_scores),
                torch.zeros(b, n, dtype=torch.bool, device=device),
                torch.zeros(b, n, dtype=torch.long, device=device),
            )
        labels = gt_labels.long().view(b, m)
        candidates = self._candidates(anchor_points, gt_bboxes, mask_gt)  # (B, M, N)

        overlaps = self._overlaps(candidates, gt_bboxes, pd_bboxes)  # (B, M, N)
        class_scores = torch.gather(pd_scores.transpose(1, 2), 1, labels.clamp(min=0)[..., None].expand(b, m, n))
        align = class_scores.pow(self.alpha) * overlaps.pow(self.beta) * candidates  # (B, M, N)

        top = align.topk(min(self.topk, n), dim=-1).indices  # (B, M, k)
        in_topk = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True)
        mask_pos = in_topk & candidates  # (B, M, N)

        # an anchor point claimed by several ground truths keeps the one it overlaps most
        claims = mask_pos.sum(1, keepdim=True)  # (B, 1, N)
        best = overlaps.argmax(1, keepdim=True) == torch.arange(m, device=device).view(1, m, 1)  # (B, M, N)
        mask_pos = torch.where(claims > 1, best & candidates, mask_pos)
        fg_mask = mask_pos.any(1)  # (B, N)
        gt_index = mask_pos.to(torch.uint8).argmax(1)  # (B, N): the first ground truth claiming the point

        flat = gt_index + torch.arange(b, device=device).view(b, 1) * m  # (B, N) into (B * M)
        target_labels = labels.reshape(-1)[flat].clamp(min=0)
        target_bboxes = gt_bboxes.reshape(-1, 4)[flat]  # (B, N, 4)
        target_scores = nn.functional.one_hot(target_labels, c).to(pd_scores.dtype) * fg_mask[..., None]

        # soft targets: each ground truth's alignment scaled so its best anchor scores its best IoU
        align = align * mask_pos
        max_align = align.amax(-1, keepdim=True)  # (B, M, 1)
        max_overlap = (overlaps * mask_pos).amax(-1, keepdim=True)  # (B, M, 1)
        norm = (align * max_overlap / (max_align + self.eps)).amax(1)  # (B, N)
        return Assignment(target_labels, target_bboxes, target_scores * norm[..., None], fg_mask, gt_index)

    def _candidates(self, anchor_points: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor) -> torch.Tensor:
        """(B, M, N): anchor centre strictly inside the (grown) box of a real ground truth.

        Each of the four distances to the sides > eps, one side at a time: a (B, M, N, 4) tensor of distances
        would be 4 floats per pair at once (~0.5 GB for 64 images of 60 boxes at 640 px, at the moment the
        forward's activations peak).
        """
        b, m = gt_bboxes.shape[:2]
        n = anchor_points.shape[0]
        candidates = mask_gt.bool().view(b, m, 1).expand(b, m, n).clone()
        reach = self._candidate_boxes(gt_bboxes)
        for k in range(4):
            side = anchor_points[:, k % 2].view(1, 1, n)
            edge = reach[:, :, k, None]
            candidates &= (side - edge if k < 2 else edge - side) > self.eps
        return candidates

    @staticmethod
    def _overlaps(candidates: torch.Tensor, gt_bboxes: torch.Tensor, pd_bboxes: torch.Tensor) -> torch.Tensor:
        """(B, M, N) CIoU (clamped at 0) of each candidate's predicted box with its ground truth, 0 elsewhere.

        Only where it matters: the full (B, M, N) would need many temporaries. The pairs are taken by index:
        one device-to-host wait for their count, not one per masked access.
        """
        pairs = candidates.nonzero(as_tuple=True)  # (P,) x 3: image, ground truth, anchor point
        overlaps = torch.zeros(candidates.shape, dtype=pd_bboxes.dtype, device=pd_bboxes.device)
        gt_pairs = gt_bboxes[pairs[0], pairs[1]]  # (P, 4)
        pd_pairs = pd_bboxes[pairs[0], pairs[2]]
        overlaps[pairs] = bbox_iou(gt_pairs, pd_pairs, kind="ciou").clamp(min=0).to(overlaps.dtype)
        return overlaps

    def _candidate_boxes(self, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """The boxes of the "centre inside" test: each side at least `min_side`, same centre."""
        if self.min_side <= 0:
            return gt_bboxes
        centre = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
        half = (gt_bboxes[..., 2:] - gt_bboxes[..., :2]).clamp(min=self.min_side) / 2
        return torch.cat((centre - half, centre + half), -1)
