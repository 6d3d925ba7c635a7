"""Training losses of SAM / SAM 2: focal and dice on masks, MSE on IoU predictions, BCE on
object scores, with the multimask output of lowest loss selected per prompt.

Why the minimum over the multimask outputs: a single click is ambiguous (a shirt, the person,
the crowd), so the decoder proposes three masks and only the one closest to the target is
pushed towards it; the others stay free to cover the other readings. The IoU head is still
trained on all outputs, so it learns to rank them.

Shapes: P prompts, M masks per prompt, [H, W] the resolution the loss is computed at.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# SAM's focal-loss parameters and the smoothing term of the dice loss (SAM 2's values).
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (SAM 2's training config: 20 : 1 : 1 : 1)."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss averaged over pixels.

    logits: [P, M, H, W]; targets: [P, 1 or M, H, W] in {0, 1} -> [P, M].
    Per pixel: alpha_t * (1 - p_t)^gamma * BCE, with p_t the probability of the true class and
    alpha_t = alpha on foreground, 1 - alpha on background (no weighting when alpha < 0).
    """
    logits = logits.float()
    targets = targets.float().expand_as(logits)
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Soft dice loss: 1 - (2 |p t| + s) / (|p| + |t| + s) with p = sigmoid(logits).

    logits: [P, M, H, W]; targets: [P, 1 or M, H, W] -> [P, M].
    """
    prob = logits.float().sigmoid().flatten(-2)
    targets = targets.float().expand_as(logits).flatten(-2)
    numerator = 2 * (prob * targets).sum(-1) + smooth
    denominator = prob.sum(-1) + targets.sum(-1) + smooth
    return 1 - numerator / denominator


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised masks (logit > 0) with the targets: [P, M, H, W] -> [P, M];
    1 where both are empty. Targets are bool, or fractions in [0, 1] (the share of each cell
    covered by the object, for a loss at a lower resolution than the masks): then the
    intersection is the covered share inside the predicted mask and the union
    |pred| + |target| - intersection, which is the plain IoU for 0/1 targets."""
    pred = (logits > 0).flatten(-2)
    if targets.dtype == torch.bool:
        targets = targets.expand_as(logits).flatten(-2)
        inter = (pred & targets).sum(-1).float()
        union = (pred | targets).sum(-1).float()
    else:
        targets = targets.float().expand_as(logits).flatten(-2)
        inter = (pred * targets).sum(-1)
        union = pred.sum(-1).float() + targets.sum(-1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.ones_like(union))


def iou_mse_loss(iou_pred: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error between predicted and actual IoU: [P, M] (targets are not differentiated)."""
    actual = mask_iou(logits.detach(), targets)
    return (iou_pred.float() - actual) ** 2


def object_score_loss(object_score_logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """BCE of the object-score logit [P, 1] against whether the target has any pixel [P] -> [P]."""
    return F.binary_cross_entropy_with_logits(object_score_logits.float().reshape(-1),
                                              present.float().reshape(-1), reduction="none")


@dataclass
class LossTerms:
    """Scalar loss terms (means over prompts) and the index of the mask each prompt kept."""

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    chosen: torch.Tensor  # [P] long: the output trained towards the target
    chosen_iou: torch.Tensor  # [P]: actual IoU of that output (no gradient)

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "focal", "dice", "iou", "object_score")}


def multimask_loss(masks: torch.Tensor, iou_pred: torch.Tensor, object_score_logits: torch.Tensor,
                   targets: torch.Tensor, weights: LossWeights = LossWeights(),
                   supervise_all_iou: bool = True, pixels_per_cell: float = 1.0,
                   totals: tuple[torch.Tensor, int] | None = None) -> LossTerms:
    """SAM 2's loss of one decoding step.

    masks: [P, M, H, W] logits (M = 1 or the multimask outputs); iou_pred: [P, M];
    object_score_logits: [P, 1]; targets: [P, 1, H, W] bool, or float fractions in [0, 1] of each
    cell covered by the object (soft targets, for a loss at a lower resolution than the masks').
    Each prompt keeps the output with the lowest `focal * w_focal + dice * w_dice`; focal and dice
    are those of that output, the IoU loss covers all outputs (or only the kept one), and mask
    and IoU losses count only for prompts whose target is present (the object-score loss
    teaches the rest). Terms are means over prompts; `total` is their weighted sum.
    pixels_per_cell: input pixels per cell of the masks (16 for 96 px masks of a 384 px input
    with soft targets): the dice smoothing term is divided by it, so that it weighs what it
    weighs at the input size (focal and IoU terms are means and ratios, the same at any
    resolution for masks constant on each cell).
    totals: (present targets, prompts) of a larger batch that these prompts are a part of: the
    terms are then this part's shares of that batch's means (the parts' terms add up to them).
    """
    if masks.shape[0] != targets.shape[0] or targets.shape[1] != 1:
        raise ValueError(f"targets must be [P, 1, H, W] for masks {tuple(masks.shape)}, got {tuple(targets.shape)}")
    if masks.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape[-2:])} and targets {tuple(targets.shape[-2:])} differ in size")
    focal = sigmoid_focal_loss(masks, targets)  # [P, M]
    dice = dice_loss(masks, targets, DICE_SMOOTH / pixels_per_cell)
    iou = iou_mse_loss(iou_pred, masks, targets)
    combined = focal * weights.focal + dice * weights.dice
    chosen = combined.argmin(dim=1)  # first on ties
    rows = torch.arange(masks.shape[0], device=masks.device)
    present = targets.flatten(1).any(dim=1).float()  # [P]
    focal_k, dice_k = focal[rows, chosen], dice[rows, chosen]
    iou_k = iou.mean(dim=1) if supervise_all_iou else iou[rows, chosen]
    obj = object_score_loss(object_score_logits, present)
    present_total, prompt_total = totals if totals is not None else (present.sum(), masks.shape[0])
    denom = present_total.clamp(min=1)
    focal_m = (focal_k * present).sum() / denom
    dice_m = (dice_k * present).sum() / denom
    iou_m = (iou_k * present).sum() / denom
    obj_m = obj.sum() / prompt_total
    total = (weights.focal * focal_m + weights.dice * dice_m + weights.iou * iou_m
             + weights.object_score * obj_m)
    with torch.no_grad():
        chosen_iou = mask_iou(masks[rows, chosen].unsqueeze(1), targets)[:, 0]
    return LossTerms(total, focal_m, dice_m, iou_m, obj_m, chosen, chosen_iou)
