"""Training losses against hand computations, and the min-over-multimask choice."""
from __future__ import annotations

import math

import pytest
import torch

from segapp.training.losses import (LossWeights, dice_loss, mask_iou, multimask_loss, object_score_loss,
                                    sigmoid_focal_loss)


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0]]]])  # [P=1, M=1, H=1, W=2]
    targets = torch.tensor([[[[1.0, 0.0]]]])
    # pixel 1: p = 0.5, target 1: alpha 0.25 * (1 - 0.5)^2 * ln 2
    fg = 0.25 * 0.5**2 * math.log(2)
    # pixel 2: p = sigmoid(2), target 0: (1 - alpha) * p^2 * -ln(1 - p)
    p = 1 / (1 + math.exp(-2))
    bg = 0.75 * p**2 * -math.log(1 - p)
    got = sigmoid_focal_loss(logits, targets)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx((fg + bg) / 2, rel=1e-5)


def test_dice_loss_matches_hand_computation():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    targets = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # 1 - (2 * (0.5 + 0.5) + 1) / (2 + 2 + 1)
    assert dice_loss(logits, targets).item() == pytest.approx(1 - 3 / 5)
    exact = torch.where(targets.bool(), 30.0, -30.0)
    assert dice_loss(exact, targets).item() == pytest.approx(0.0, abs=1e-6)


def test_mask_iou_and_object_score_loss():
    targets = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    targets[..., :2, :] = True  # 8 pixels
    logits = torch.full((1, 1, 4, 4), -1.0)
    logits[..., :1, :] = 1.0  # 4 pixels, all inside
    assert mask_iou(logits, targets).item() == pytest.approx(0.5)
    loss = object_score_loss(torch.tensor([[0.0], [3.0]]), torch.tensor([True, False]))
    assert loss.tolist() == pytest.approx([math.log(2), math.log(1 + math.exp(3))], rel=1e-5)


def _square_target():
    t = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    t[..., 2:6, 2:6] = True
    return t


def test_multimask_loss_keeps_the_output_of_lowest_loss():
    target = _square_target()
    exact = torch.where(target[0, 0], 20.0, -20.0)
    half = exact.clone()
    half[2:4] = -20.0  # covers half of the square
    empty = torch.full((8, 8), -20.0)
    masks = torch.stack([empty, exact, half])[None]  # [1, 3, 8, 8]
    iou_pred = torch.tensor([[0.1, 0.9, 0.2]])
    w = LossWeights()
    terms = multimask_loss(masks, iou_pred, torch.tensor([[5.0]]), target, w)
    assert terms.chosen.tolist() == [1]
    assert terms.chosen_iou.item() == pytest.approx(1.0)
    assert terms.focal.item() == pytest.approx(sigmoid_focal_loss(masks[:, 1:2], target).item())
    assert terms.dice.item() == pytest.approx(dice_loss(masks[:, 1:2], target).item())
    # IoU loss over all three outputs: actual IoUs 0, 1, 0.5
    expected_iou = ((0.1 - 0.0) ** 2 + (0.9 - 1.0) ** 2 + (0.2 - 0.5) ** 2) / 3
    assert terms.iou.item() == pytest.approx(expected_iou, rel=1e-5)
    expected_total = (w.focal * terms.focal + w.dice * terms.dice + w.iou * terms.iou
                      + w.object_score * terms.object_score)
    assert terms.total.item() == pytest.approx(expected_total.item(), rel=1e-6)

    # reorder: the choice follows the mask, not its position
    terms = multimask_loss(masks[:, [2, 0, 1]], iou_pred, torch.tensor([[5.0]]), target, w)
    assert terms.chosen.tolist() == [2]


def test_multimask_loss_gradient_reaches_only_the_chosen_mask():
    target = _square_target()
    masks = torch.stack([torch.where(target[0, 0], 5.0, -5.0), torch.zeros(8, 8)])[None].requires_grad_()
    terms = multimask_loss(masks, torch.zeros(1, 2), torch.zeros(1, 1), target,
                           LossWeights(iou=0.0, object_score=0.0))
    terms.total.backward()
    assert masks.grad[0, 0].abs().sum() > 0
    assert masks.grad[0, 1].abs().sum() == 0


def test_absent_targets_train_only_the_object_score():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks = torch.randn(1, 1, 8, 8)
    terms = multimask_loss(masks, torch.zeros(1, 1), torch.tensor([[2.0]]), target)
    assert terms.focal.item() == terms.dice.item() == terms.iou.item() == 0.0
    assert terms.object_score.item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-5)


def test_multimask_loss_rejects_mismatched_targets():
    with pytest.raises(ValueError, match="targets"):
        multimask_loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3), torch.zeros(2, 1),
                       torch.zeros(2, 3, 8, 8, dtype=torch.bool))


def test_soft_targets_at_the_mask_resolution():
    """loss_resolution "mask": targets are the share of each low-res cell the object covers.
    For an object on whole cells, the loss on the low-res logits equals the loss on those logits
    upsampled (nearest) to the input against the input-size mask (the dice smoothing scaled by
    the cell's area); mask_iou of fractions equals
    the plain IoU for 0/1 fractions and counts covered shares otherwise."""
    from segapp.training.trainer import loss_targets_at

    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:12, 0:8] = True  # whole 4x4 cells
    soft = loss_targets_at(mask, 4)
    assert soft.shape == (1, 1, 4, 4) and set(soft.unique().tolist()) == {0.0, 1.0}
    logits = torch.randn(1, 1, 4, 4)
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="nearest")
    low_terms = multimask_loss(logits, torch.zeros(1, 1), torch.zeros(1, 1), soft, pixels_per_cell=16)
    high_terms = multimask_loss(up, torch.zeros(1, 1), torch.zeros(1, 1), mask[:, None])
    for name in ("focal", "dice", "iou", "total", "chosen_iou"):
        torch.testing.assert_close(getattr(low_terms, name), getattr(high_terms, name), msg=name)
    # a quarter-covered cell: share 0.25; a predicted mask on that cell alone has IoU 0.25
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True
    soft = loss_targets_at(mask, 2)
    assert soft[0, 0, 0, 0] == 0.25 and soft.sum() == 0.25
    pred = torch.full((1, 1, 2, 2), -5.0)
    pred[0, 0, 0, 0] = 5.0
    assert mask_iou(pred, soft).item() == pytest.approx(0.25)
