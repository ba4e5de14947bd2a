"""Anchor-free (YOLOv8) detection loss: task-aligned assignment, BCE classes, CIoU boxes, DFL.

Each component is normalised by the batch's sum of soft class targets (the assigner's scores), then
weighted by their gains (box 7.5, cls 0.5, dfl 1.5) and, as in YOLOv5, multiplied by the batch size.

Under DDP the normaliser is the sum over the *global* batch (an all-reduce, as DETR does with its box
count), divided by the world size: the trainer sums the ranks' gradients, so a 2-process step over two
half batches equals a 1-process step over the whole batch, also while the `max(sum, 1)` clamp is active.

The class BCE takes YOLOv5's class options too: `label_smoothing` eps (targets at object anchors become
`s * (1 - eps) + eps / 2`), `fl_gamma` (focal modulation `alpha_t * (1 - p_t) ** gamma`, alpha 0.25) and
`cls_pw` (the BCE's positive weight).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from accelyolo.core.boxes import bbox_iou, xywh2xyxy
from accelyolo.core.hyp import HYPERPARAMETERS
from accelyolo.losses.assigner import TaskAlignedAssigner
from accelyolo.models.heads import AnchorFreeHead, make_anchor_points

__all__ = ["AnchorFreeLoss", "pad_targets"]


def pad_targets(targets: torch.Tensor, batch_size: int, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group flat targets by image into a padded tensor, without a Python loop over images.

    Args:
        targets: (T, 6) [image index, class, cx, cy, w, h] normalised to the input image.
        batch_size: B.
        scale: (4,) [W, H, W, H] in pixels.

    Returns:
        gt (B, M, 5) [class, x1, y1, x2, y2] in pixels (zero padding), mask (B, M, 1) of real rows.
    """
    device = targets.device
    if targets.numel() == 0:
        return torch.zeros(batch_size, 0, 5, device=device), torch.zeros(batch_size, 0, 1, device=device)
    image = targets[:, 0].long()
    counts = torch.bincount(image.clamp(0, batch_size - 1), minlength=batch_size)  # (B,)
    low, high, m = torch.stack((image.min(), image.max(), counts.max())).tolist()  # one device-to-host wait
    if low < 0 or high >= batch_size:
        raise ValueError(f"loss: target image indices (column 0) must lie in [0, {batch_size}), got {low}..{high}")
    order = torch.argsort(image, stable=True)
    image = image[order]
    starts = torch.cumsum(counts, 0) - counts  # first row of each image in the sorted order
    slot = torch.arange(len(image), device=device) - starts[image]  # position within its image
    gt = torch.zeros(batch_size, m, 5, device=device)
    rows = targets[order]
    gt[image, slot] = torch.cat((rows[:, 1:2], xywh2xyxy(rows[:, 2:6] * scale)), 1)
    mask = (torch.arange(m, device=device).view(1, m) < counts.view(-1, 1)).unsqueeze(-1).float()
    return gt, mask


class AnchorFreeLoss(nn.Module):
    """YOLOv8 loss for the `AnchorFreeHead`'s raw train-mode outputs.

    Args:
        head: the model's head (supplies nc, reg_max and strides).
        box, cls, dfl: component gains (the family's defaults: `AnchorFreeFamily.loss_gains`).
        topk, alpha, beta: task-aligned assigner settings.
        min_side: the assigner's smallest box side in pixels (`TaskAlignedAssigner`); 0 = the real boxes.
        cls_pw: positive weight of the class BCE (1 = plain BCE).
        fl_gamma: focal-loss gamma of the class BCE (0 = plain BCE).
        label_smoothing: eps in [0, 1); applied at the anchors assigned to an object, where YOLOv5 (whose
            class loss runs only there) applies it; background anchors keep the target 0.
        sync_normaliser: under torch.distributed, all-reduce the target-score sum over the ranks so the
            loss is normalised by the global batch; every rank must then call the loss the same number of
            times (the trainer does). Off, each rank normalises by its own shard.
    """

    names = ("box", "cls", "dfl")

    def __init__(
        self,
        head: AnchorFreeHead,
        box: float,
        cls: float,
        dfl: float,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        cls_pw: float = HYPERPARAMETERS["cls_pw"].default,
        fl_gamma: float = HYPERPARAMETERS["fl_gamma"].default,
        label_smoothing: float = HYPERPARAMETERS["label_smoothing"].default,
        min_side: float = HYPERPARAMETERS["tal_min_side"].default,
        sync_normaliser: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"AnchorFreeLoss: label_smoothing must lie in [0, 1), got {label_smoothing}")
        if cls_pw <= 0 or fl_gamma < 0:
            raise ValueError(f"AnchorFreeLoss: cls_pw must be > 0 and fl_gamma >= 0, got {cls_pw}, {fl_gamma}")
        self.nc, self.reg_max, self.strides = head.nc, head.reg_max, head.strides
        self.no = head.no
        self.gains = (box, cls, dfl)
        self.cls_pw, self.fl_gamma, self.label_smoothing = float(cls_pw), float(fl_gamma), float(label_smoothing)
        self.focal_alpha = 0.25
        self.sync_normaliser = sync_normaliser
        self.assigner = TaskAlignedAssigner(self.nc, topk=topk, alpha=alpha, beta=beta, min_side=min_side)

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (total = sum of weighted components x batch size, detached (3,) components)."""
        if isinstance(preds, torch.Tensor) or len(preds) != len(self.strides):
            raise ValueError(
                "AnchorFreeLoss: preds must be the model's train-mode output, a list of "
                f"{len(self.strides)} (B, {self.no}, H, W) maps; call model.train() before the loss"
            )
        b, device = preds[0].shape[0], preds[0].device
        # concatenated in the head's dtype, then one float copy (under AMP: not a float copy per level too)
        x = torch.cat([p.view(b, self.no, -1) for p in preds], 2).float().transpose(1, 2)  # (B, N, no)
        pred_dist, pred_logits = x.split((4 * self.reg_max, self.nc), -1)
        points, strides = make_anchor_points([p.shape[2:] for p in preds], self.strides, device, torch.float32)
        proj = torch.arange(self.reg_max, device=device, dtype=torch.float32)
        ltrb = pred_dist.view(b, -1, 4, self.reg_max).softmax(-1) @ proj  # (B, N, 4) in cells
        pred_boxes = torch.cat((points - ltrb[..., :2], points + ltrb[..., 2:]), -1)  # (B, N, 4) xyxy cells

        h, w = preds[0].shape[2] * self.strides[0], preds[0].shape[3] * self.strides[0]
        scale = torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        gt, mask_gt = pad_targets(targets.to(device=device, dtype=torch.float32), b, scale)
        assigned = self.assigner(
            pred_logits.detach().sigmoid(),
            pred_boxes.detach() * strides,
            points * strides,
            gt[..., :1],
            gt[..., 1:],
            mask_gt,
        )

        fg = assigned.fg_mask
        score_sum = self.normaliser(assigned.scores.sum())
        loss_cls = self.class_loss(pred_logits, assigned.scores, fg) / score_sum
        loss_box = loss_dfl = torch.zeros((), device=device)
        fg_image, fg_point = fg.nonzero(as_tuple=True)  # by index: one wait for the count, not one per access
        if len(fg_point):
            target_boxes = assigned.bboxes[fg_image, fg_point] / strides[fg_point]  # (P, 4) cells
            weight = assigned.scores[fg_image, fg_point].sum(-1)  # (P,)
            iou = bbox_iou(pred_boxes[fg_image, fg_point], target_boxes, kind="ciou")
            loss_box = ((1.0 - iou) * weight).sum() / score_sum
            dist = self._dfl(pred_dist[fg_image, fg_point].view(-1, self.reg_max), target_boxes, points[fg_point])
            loss_dfl = (dist * weight).sum() / score_sum
        items = torch.stack((loss_box * self.gains[0], loss_cls * self.gains[1], loss_dfl * self.gains[2]))
        return items.sum() * b, items.detach()

    def normaliser(self, score_sum: torch.Tensor) -> torch.Tensor:
        """`max(global score sum, 1) / world size`; on one process `max(score sum, 1)`."""
        world = dist.get_world_size() if self.sync_normaliser and dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            score_sum = score_sum.detach().clone()
            dist.all_reduce(score_sum, op=dist.ReduceOp.SUM)
        return score_sum.clamp(min=1.0) / world

    def class_loss(self, logits: torch.Tensor, scores: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
        """Summed class BCE with label smoothing, positive weight and focal modulation as configured.

        Args:
            logits: (B, N, nc) class logits; scores: (B, N, nc) the assigner's soft targets;
            fg: (B, N) anchors assigned to an object.
        """
        target = scores
        if self.label_smoothing:
            eps = self.label_smoothing
            target = torch.where(fg.unsqueeze(-1), scores * (1.0 - eps) + eps / 2, scores)
        pos_weight = None
        if self.cls_pw != 1.0:
            pos_weight = torch.tensor(self.cls_pw, device=logits.device, dtype=logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        if self.fl_gamma:
            p = logits.sigmoid()
            p_t = target * p + (1 - target) * (1 - p)
            alpha_t = target * self.focal_alpha + (1 - target) * (1 - self.focal_alpha)
            loss = loss * alpha_t * (1.0 - p_t) ** self.fl_gamma
        return loss.sum()

    def _dfl(self, logits: torch.Tensor, target_boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Distribution focal loss: cross-entropy to the two bins around each target distance, (P,).

        Args:
            logits: (P * 4, reg_max) bin logits; target_boxes: (P, 4) xyxy cells; points: (P, 2) cells.
        """
        target = torch.cat((points - target_boxes[:, :2], target_boxes[:, 2:] - points), -1)
        target = target.clamp(0, self.reg_max - 1 - 0.01).view(-1)  # (P * 4,)
        left = target.long()
        w_left = left + 1 - target
        loss = F.cross_entropy(logits, left, reduction="none") * w_left + F.cross_entropy(
            logits, left + 1, reduction="none"
        ) * (1 - w_left)
        return loss.view(-1, 4).mean(-1)
