"""Tests of the label handling of the three settings (spec section 8) on hand-made maps."""

from __future__ import annotations

import pytest
import torch

from otseg_hf.model.loss_targets import check_labels, inductive_labels, transductive_labels

I = 255  # noqa: E741 -- the ignore index, short so the maps below read as grids


# ---------------------------------------------------------------------------------------------------
# check_labels
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_check_labels_returns_int64(dtype):
    labels = torch.tensor([[[0, 4], [I, 2]]], dtype=dtype)
    checked = check_labels(labels, 5, 255)
    assert checked.dtype == torch.int64
    assert checked.tolist() == [[[0, 4], [I, 2]]]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([[[0, 5]]]), r"\[5\]"),
        (torch.tensor([[[0, -1]]]), r"\[-1\]"),
        (torch.tensor([[[0, 254]]]), r"\[254\]"),
        (torch.tensor([[[0.0, 1.0]]]), "integer"),
        (torch.tensor([[[True, False]]]), "integer"),
        (torch.tensor([[0, 1]]), "shape"),
    ],
)
def test_check_labels_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        check_labels(labels, 5, 255)


def test_check_labels_with_a_negative_ignore_index():
    assert check_labels(torch.tensor([[[-1, 3]]]), 5, -1).tolist() == [[[-1, 3]]]
    with pytest.raises(ValueError, match="255"):
        check_labels(torch.tensor([[[255, 3]]]), 5, -1)


# ---------------------------------------------------------------------------------------------------
# inductive: seen ids -> 0..K_seen-1 in seen order, everything else -> ignore
# ---------------------------------------------------------------------------------------------------
def test_inductive_labels_remap_in_seen_order():
    labels = torch.tensor([[[0, 1, 2, 3, 4, I]]])
    # seen [3, 0, 1]: 3 -> 0, 0 -> 1, 1 -> 2; unseen 2 and 4 -> ignore
    assert inductive_labels(labels, [3, 0, 1], 255).tolist() == [[[1, 2, I, 0, I, I]]]


def test_inductive_labels_with_a_negative_ignore_index():
    labels = torch.tensor([[[0, 1, 2, -1]]])
    assert inductive_labels(labels, [2], -1).tolist() == [[[-1, -1, 0, -1]]]


# ---------------------------------------------------------------------------------------------------
# transductive: unseen ground truth -> argmax over unseen classes of sigmoid(w decoder + (1 - w) score)
# ---------------------------------------------------------------------------------------------------
def _constant_maps(values, height, width):
    """Per-class constants (K,) -> (1, K, height, width) float logits."""
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1).expand(1, len(values), height, width)


def test_transductive_labels_hand_computed():
    # 4 classes, unseen 1 and 3. Class 0 (seen) has the largest logits and must never be chosen.
    # decoder: c1 = 0, c3 = 1; score: c1 = 3, c3 = 0.
    # w = 0.5: c1 = 1.5, c3 = 0.5 -> 1;  w = 0.9: c1 = 0.3, c3 = 0.9 -> 3.
    decoder = _constant_maps([10.0, 0.0, 5.0, 1.0], 2, 3)
    score = _constant_maps([10.0, 3.0, 5.0, 0.0], 2, 3)
    labels = torch.tensor([[[0, 1, 3], [2, I, 1]]])
    ensemble = lambda w: w * decoder + (1 - w) * score  # noqa: E731  (OTSeg+'s ensemble, spec section 7)
    assert transductive_labels(labels, ensemble(0.5), [1, 3]).tolist() == [[[0, 1, 1], [2, I, 1]]]
    assert transductive_labels(labels, ensemble(0.9), [1, 3]).tolist() == [[[0, 3, 3], [2, I, 3]]]


def test_transductive_labels_are_upsampled_per_pixel():
    # a 1 x 2 feature map (left favours class 3, right class 2) upsampled to 2 x 4 labels; unseen = [2, 3]
    left_right = [[[0.0, 0.0]], [[0.0, 0.0]], [[-2.0, 2.0]], [[2.0, -2.0]]]  # (K=4, h=1, w=2)
    logits = torch.tensor(left_right).unsqueeze(0)
    labels = torch.tensor([[[2, 2, 3, 3], [0, 3, 2, I]]])
    # bilinear, align_corners=False: columns 0-1 lie on the left half (c3 > c2), columns 2-3 on the right
    expected = [[[3, 3, 2, 2], [0, 3, 2, I]]]
    assert transductive_labels(labels, logits, [2, 3]).tolist() == expected


def test_transductive_labels_without_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, I]]])
    pseudo = transductive_labels(labels, logits, [1, 2])
    assert not pseudo.requires_grad
    assert pseudo[0, 0, 0] == 0 and pseudo[0, 1, 1] == I
    assert set(pseudo[0].flatten().tolist()) <= {0, 1, 2, I}
