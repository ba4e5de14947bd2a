"""Anchor-based (YOLOv5) detection loss: anchor-matched targets, CIoU boxes, IoU objectness, BCE classes.

Target building: a ground truth is matched to every anchor whose width and height are both within a
factor `anchor_t` of its own, at its cell and at the two neighbouring cells nearest its centre (the
decoded centre spans -0.5..1.5 cells, so those cells can reach it). Objectness learns the CIoU of the
matched prediction (through `gr`); each level's objectness loss is weighted by [4.0, 1.0, 0.4].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from accelyolo.core.boxes import bbox_iou
from accelyolo.core.hyp import HYPERPARAMETERS
from accelyolo.models.heads import AnchorBasedHead

__all__ = ["AnchorBasedLoss", "FocalLoss"]

# Cell offsets: own cell, then left, up, right, down neighbours (in units of the 0.5 cell threshold).
_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


class FocalLoss(nn.Module):
    """BCE-with-logits scaled by `alpha_t * (1 - p_t) ** gamma` (focal loss), mean reduction."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25) -> None:
        super().__init__()
        self.bce, self.gamma, self.alpha = bce, gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.bce.pos_weight, reduction="none")
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha_t * (1.0 - p_t) ** self.gamma).mean()


class AnchorBasedLoss(nn.Module):
    """YOLOv5 loss for the `AnchorBasedHead`'s raw train-mode outputs.

    Args:
        head: the model's head (anchors are read from it at every call, so autoanchor changes apply).
        box, obj, cls: component gains, already scaled for levels, classes and image size (`build_loss`).
        cls_pw, obj_pw: BCE positive weights.
        anchor_t: largest width/height ratio between a target and a matched anchor.
        fl_gamma: focal-loss gamma (0 = plain BCE).
        label_smoothing: eps; class targets become 1 - eps/2 and eps/2.
        gr: objectness target = (1 - gr) + gr * IoU.
    """

    names = ("box", "obj", "cls")

    def __init__(
        self,
        head: AnchorBasedHead,
        box: float,
        obj: float,
        cls: float,
        cls_pw: float = HYPERPARAMETERS["cls_pw"].default,
        obj_pw: float = HYPERPARAMETERS["obj_pw"].default,
        anchor_t: float = HYPERPARAMETERS["anchor_t"].default,
        fl_gamma: float = HYPERPARAMETERS["fl_gamma"].default,
        label_smoothing: float = HYPERPARAMETERS["label_smoothing"].default,
        gr: float = 1.0,
    ) -> None:
        super().__init__()
        self.head = [head]  # a list, so the head is not registered as a submodule of the loss
        self.nc, self.nl, self.na, self.strides = head.nc, head.nl, head.na, head.strides
        self.gains = (box, obj, cls)
        self.anchor_t, self.gr = anchor_t, gr
        self.cp, self.cn = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing
        self.balance = [4.0, 1.0, 0.4] if self.nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][: self.nl]
        self.bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([cls_pw]))
        self.bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([obj_pw]))
        if fl_gamma > 0:
            self.bce_cls, self.bce_obj = FocalLoss(self.bce_cls, fl_gamma), FocalLoss(self.bce_obj, fl_gamma)

    def forward(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (total = sum of weighted components x batch size, detached (3,) components)."""
        if isinstance(preds, torch.Tensor) or len(preds) != self.nl or preds[0].dim() != 5:
            raise ValueError(
                f"AnchorBasedLoss: preds must be the model's train-mode output, a list of {self.nl} "
                f"(B, {self.na}, H, W, {5 + self.nc}) maps; call model.train() before the loss"
            )
        preds = [p.float() for p in preds]
        device = preds[0].device
        self.bce_cls.to(device)
        self.bce_obj.to(device)
        targets = targets.to(device=device, dtype=torch.float32)
        lbox = lobj = lcls = torch.zeros((), device=device)
        for i, (p, (b, a, gj, gi, tbox, tcls, anchors)) in enumerate(zip(preds, self.build_targets(preds, targets))):
            tobj = torch.zeros(p.shape[:4], device=device)  # (B, na, H, W)
            if b.numel():
                pxy, pwh, _, pcls = p[b, a, gj, gi].split((2, 2, 1, self.nc), 1)  # matched predictions (n, ...)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors
                iou = bbox_iou(torch.cat((pxy, pwh), 1), tbox, xywh=True, kind="ciou")  # (n,)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = (1.0 - self.gr) + self.gr * iou.detach().clamp(min=0)
                if self.nc > 1:  # a single class is learned by objectness alone
                    t = torch.full_like(pcls, self.cn)
                    t[torch.arange(len(tcls), device=device), tcls] = self.cp
                    lcls = lcls + self.bce_cls(pcls, t)
            lobj = lobj + self.bce_obj(p[..., 4], tobj) * self.balance[i]
        items = torch.stack((lbox * self.gains[0], lobj * self.gains[1], lcls * self.gains[2]))
        return items.sum() * preds[0].shape[0], items.detach()

    def build_targets(self, preds: list[torch.Tensor], targets: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Match targets to anchors and cells, per level.

        Args:
            preds: per level (B, na, H, W, 5 + nc).
            targets: (T, 6) [image, class, cx, cy, w, h] normalised.

        Returns:
            Per level: image, anchor, gy, gx indices (n,), box targets (n, 4) xywh relative to the cell
            corner in cells, classes (n,) and matched anchors (n, 2) in cells.
        """
        device, na, nt = targets.device, self.na, targets.shape[0]
        anchor_idx = torch.arange(na, device=device, dtype=torch.float32).view(na, 1).expand(na, nt)
        t_all = torch.cat((targets.expand(na, nt, 6), anchor_idx[..., None]), 2)  # (na, T, 7)
        offsets = _OFFSETS.to(device)
        head_anchors = self.head[0].anchors.to(device=device, dtype=torch.float32)  # (nl, na, 2) pixels
        out = []
        for i, p in enumerate(preds):
            h, w = p.shape[2:4]
            anchors = head_anchors[i] / self.strides[i]  # (na, 2) cells
            gain = torch.tensor([1, 1, w, h, w, h, 1], device=device, dtype=torch.float32)
            t = t_all * gain  # (na, T, 7) in cells
            if nt:
                ratio = t[..., 4:6] / anchors[:, None]  # (na, T, 2)
                t = t[torch.max(ratio, 1 / ratio).amax(2) < self.anchor_t]  # (n, 7)
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy  # distance from the far edges
                j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
                m, n = ((gxi % 1 < 0.5) & (gxi > 1)).T
                keep = torch.stack((torch.ones_like(j), j, k, m, n))  # (5, n)
                t = t.repeat((5, 1, 1))[keep]
                off = (torch.zeros_like(gxy)[None] + offsets[:, None])[keep]
            else:
                t, off = t_all[0], torch.zeros(0, 2, device=device)
            b, cls = t[:, 0].long(), t[:, 1].long()
            gxy, gwh, a = t[:, 2:4], t[:, 4:6], t[:, 6].long()
            gij = (gxy - off).long()
            gi, gj = gij[:, 0].clamp(0, w - 1), gij[:, 1].clamp(0, h - 1)
            tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
            out.append((b, a, gj, gi, tbox, cls, anchors[a]))
        return out
