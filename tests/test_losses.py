"""Tests of `otseg_hf.model.losses` against a literal numpy transcription of spec section 8."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from otseg_hf.model.losses import count_masks, mask_loss, mask_loss_reference, upsample

IGNORE = 255

# Two 4x4 label maps, K = 3 classes. Image 0 has classes 0 and 1 (class 2 absent), image 1 has
# classes 0 and 2 (class 1 absent); both have ignore pixels. Present (image, class) pairs: 4.
LABELS = torch.tensor(
    [
        [
            [0, 0, 1, IGNORE],
            [0, 0, 1, 1],
            [IGNORE, 0, 1, 1],
            [0, 0, IGNORE, 1],
        ],
        [
            [2, 2, IGNORE, IGNORE],
            [2, 0, 0, IGNORE],
            [2, 0, 0, 2],
            [IGNORE, 2, 2, 2],
        ],
    ]
)
PRESENT = {(0, 0), (0, 1), (1, 0), (1, 2)}
# (B, K, 2, 2) logits, hand-picked: a mix of right and wrong, confident and unsure.
LOGITS_2X2 = torch.tensor(
    [
        [[[2.0, -1.0], [1.5, 0.5]], [[-2.0, 1.0], [-0.5, 2.5]], [[-3.0, -0.2], [0.3, -1.5]]],
        [[[-1.0, 0.0], [1.0, 0.7]], [[0.4, -2.0], [-1.2, -0.3]], [[1.8, -0.6], [2.2, 0.9]]],
    ],
    dtype=torch.float64,
)
# Bilinear 2 -> 4 with align_corners=False, written out: source coordinate (i + 0.5) / 2 - 0.5,
# clamped to the edge.
W_2_TO_4 = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


# ------------------------------------------------------------------------------------------------
# independent transcription of spec section 8 (numpy, float64, per-pixel loops)
# ------------------------------------------------------------------------------------------------
def bilinear_2_to_4(logits):
    """(B, K, 2, 2) -> (B, K, 4, 4) numpy, with the explicit interpolation matrix."""
    return np.einsum("ip,bkpq,jq->bkij", W_2_TO_4, np.asarray(logits, dtype=np.float64), W_2_TO_4)


def transcribed_loss(
    maps,
    labels,
    num_masks,
    focal_weight=100.0,
    dice_weight=1.0,
    alpha=0.25,
    gamma=2.0,
    ignore_in_mean=True,
):
    """Spec section 8 on label-sized logit maps (B, K, H, W), numpy float64.

    `ignore_in_mean=False` is the variant the spec rules out (ignore pixels left out of the focal
    mean); it exists only to show the tests can tell the two apart.
    """
    maps = np.asarray(maps, dtype=np.float64)
    labels = np.asarray(labels)
    batch, classes, height, width = maps.shape
    focal_sum, dice_sum = 0.0, 0.0
    for b in range(batch):
        for k in range(classes):
            focal_map, count = 0.0, 0
            sum_p, sum_y, sum_py = 0.0, 0.0, 0.0
            for i in range(height):
                for j in range(width):
                    x = maps[b, k, i, j]
                    y = 1.0 if labels[b, i, j] == k else 0.0  # ignore (255): negative for every class
                    p = 1.0 / (1.0 + math.exp(-x))
                    if y == 1.0:
                        ce, p_t = -math.log(p), p
                    else:
                        ce, p_t = -math.log(1.0 - p), 1.0 - p
                    term = ce * (1.0 - p_t) ** gamma
                    if alpha >= 0:
                        term *= alpha if y == 1.0 else 1.0 - alpha
                    if ignore_in_mean or labels[b, i, j] != IGNORE:
                        focal_map += term
                        count += 1
                    sum_p += p
                    sum_y += y
                    sum_py += p * y
            focal_sum += focal_map / count
            if sum_y > 0:  # dice only on (image, class) pairs present in the labels
                dice_sum += 1.0 - (2.0 * sum_py + 1.0) / (sum_p + sum_y + 1.0)
    return (focal_weight * focal_sum + dice_weight * dice_sum) / num_masks


def numeric_gradient(function, logits, step=1e-6):
    """Central differences of a numpy-valued function of a (B, K, h, w) array."""
    logits = np.asarray(logits, dtype=np.float64)
    grad = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad


LOSSES = {"reference": mask_loss_reference, "chunked": mask_loss}


def loss_and_grad(loss_fn, logits, labels, num_masks, **kwargs):
    leaf = logits.clone().requires_grad_(True)
    loss = loss_fn(leaf, labels, num_masks, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


# ------------------------------------------------------------------------------------------------
# the hand-made 4x4 example
# ------------------------------------------------------------------------------------------------
def test_hand_example_setup():
    """The example is what the tests below rely on: ignore pixels, one absent class per image."""
    assert count_masks(LABELS, 3).item() == len(PRESENT) == 4
    assert (LABELS == IGNORE).sum() == 7
    torch.testing.assert_close(
        torch.from_numpy(bilinear_2_to_4(LOGITS_2X2)),
        F.interpolate(LOGITS_2X2, size=(4, 4), mode="bilinear", align_corners=False),
    )


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("resolution", ["2x2", "4x4"])
def test_hand_example_value_and_gradient(name, resolution):
    if resolution == "2x2":
        logits = LOGITS_2X2

        def transcribed(array):
            return transcribed_loss(bilinear_2_to_4(array), LABELS.numpy(), 4)

    else:
        logits = torch.from_numpy(bilinear_2_to_4(LOGITS_2X2)) + 0.3 * torch.sin(torch.arange(96.0)).view(
            2, 3, 4, 4
        )

        def transcribed(array):
            return transcribed_loss(array, LABELS.numpy(), 4)

    loss, grad = loss_and_grad(LOSSES[name], logits.float(), LABELS, 4)
    expected = transcribed(logits.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    expected_grad = numeric_gradient(transcribed, logits.numpy())
    np.testing.assert_allclose(
        grad.numpy(), expected_grad, rtol=1e-3, atol=1e-4 * np.abs(expected_grad).max()
    )


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 0.0), (0.5, 1.0), (-1.0, 2.0), (0.75, 1.5)])
def test_hand_example_other_alpha_gamma(name, alpha, gamma):
    kwargs = dict(focal_weight=3.0, dice_weight=0.5, alpha=alpha, gamma=gamma)
    loss = LOSSES[name](LOGITS_2X2.float(), LABELS, 4, **kwargs)
    expected = transcribed_loss(bilinear_2_to_4(LOGITS_2X2), LABELS.numpy(), 4, **kwargs)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_ignore_pixels_are_negatives_for_every_class(name):
    """Ignore (255) gives the same loss as an id of no class (negative everywhere), and is not left out."""
    loss_fn = LOSSES[name]
    loss = loss_fn(LOGITS_2X2.float(), LABELS, 4).item()
    for stand_in in (3, 7, -1):  # ids of no class
        other = torch.where(LABELS == IGNORE, stand_in, LABELS)
        assert loss_fn(LOGITS_2X2.float(), other, 4).item() == pytest.approx(loss, rel=1e-6)
    # ignore pixels are in the per-map focal mean: the variant without them is far off
    included = transcribed_loss(bilinear_2_to_4(LOGITS_2X2), LABELS.numpy(), 4)
    excluded = transcribed_loss(bilinear_2_to_4(LOGITS_2X2), LABELS.numpy(), 4, ignore_in_mean=False)
    assert abs(included - excluded) > 1e-2 * included
    assert loss == pytest.approx(included, rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_ignore_pixel_gradient_is_the_negative_focal_gradient(name):
    """At label resolution, an ignore pixel of an absent class gets only the negative-class focal gradient."""
    logits = torch.from_numpy(bilinear_2_to_4(LOGITS_2X2)).float()
    _, grad = loss_and_grad(LOSSES[name], logits, LABELS, 4)
    b, k, i, j = 0, 2, 0, 3  # image 0, class 2 is absent; pixel (0, 3) is ignore
    assert LABELS[b, i, j] == IGNORE
    x = logits[b, k, i, j].double().item()

    def negative_focal(value):  # (1 - alpha) * -log(1 - p) * p^gamma, alpha 0.25, gamma 2
        p = 1 / (1 + math.exp(-value))
        return 0.75 * -math.log(1 - p) * p**2

    expected = 100.0 * (negative_focal(x + 1e-6) - negative_focal(x - 1e-6)) / 2e-6 / 16 / 4
    assert grad[b, k, i, j].item() == pytest.approx(expected, rel=1e-4)
    assert expected > 0


@pytest.mark.parametrize("name", LOSSES)
def test_dice_only_on_present_pairs(name):
    logits = torch.from_numpy(bilinear_2_to_4(LOGITS_2X2)).float()
    loss, grad = loss_and_grad(LOSSES[name], logits, LABELS, 4, focal_weight=0.0, dice_weight=1.0)
    probs = torch.sigmoid(logits.double())
    dice = {}
    for b in range(2):
        for k in range(3):
            target = (LABELS[b] == k).double()
            dice[b, k] = 1 - (2 * (probs[b, k] * target).sum() + 1) / (probs[b, k].sum() + target.sum() + 1)
    present_only = sum(dice[pair] for pair in PRESENT).item() / 4
    every_pair = sum(dice.values()).item() / 4
    assert loss.item() == pytest.approx(present_only, rel=1e-5)
    assert abs(every_pair - present_only) > 0.1  # absent pairs would have added a lot
    # absent pairs get no gradient at all from the dice term; present pairs do
    assert grad[0, 2].abs().max() == 0 and grad[1, 1].abs().max() == 0
    assert grad[0, 0].abs().max() > 0 and grad[1, 2].abs().max() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_num_masks_normalisation(name):
    loss_fn = LOSSES[name]
    logits = LOGITS_2X2.float()
    by_count = loss_fn(logits, LABELS, count_masks(LABELS, 3)).item()
    assert by_count == pytest.approx(loss_fn(logits, LABELS, 4.0).item(), rel=1e-6)
    unnormalised = loss_fn(logits, LABELS, 1.0).item()
    assert by_count == pytest.approx(unnormalised / 4, rel=1e-6)
    assert loss_fn(logits, LABELS, 2.5).item() == pytest.approx(unnormalised / 2.5, rel=1e-6)
    assert unnormalised == pytest.approx(
        transcribed_loss(bilinear_2_to_4(LOGITS_2X2), LABELS.numpy(), 1), rel=1e-5
    )


# ------------------------------------------------------------------------------------------------
# chunked loss == reference loss
# ------------------------------------------------------------------------------------------------
def random_problem(batch, classes, low, high, seed, dtype):
    """Logits (B, K, *low) and labels (B, *high) with ignore pixels and ids of no class."""
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(batch, classes, *low, generator=gen, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, classes, (batch, *high), generator=gen)
    noise = torch.rand(batch, *high, generator=gen)
    labels = torch.where(noise < 0.15, IGNORE, labels)
    labels = torch.where(noise > 0.95, classes + 2, labels)  # out of range: negative everywhere
    labels[0][labels[0] == classes - 1] = IGNORE  # one class absent from image 0
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_classes", [1, 2, 5])
@pytest.mark.parametrize(("low", "high"), [((3, 4), (7, 9)), ((5, 3), (5, 3)), ((2, 2), (8, 8))])
def test_chunked_matches_reference(dtype, chunk_classes, low, high):
    batch, classes = 2, 5
    logits, labels = random_problem(batch, classes, low, high, seed=sum(low) + sum(high), dtype=dtype)
    num_masks = count_masks(labels, classes)
    max_chunk_elements = chunk_classes * batch * high[0] * high[1]
    upstream = 1.7  # a non-unit incoming gradient

    ref = logits.clone().requires_grad_(True)
    ref_loss = mask_loss_reference(ref, labels, num_masks)
    (upstream * ref_loss).backward()
    ours = logits.clone().requires_grad_(True)
    our_loss = mask_loss(ours, labels, num_masks, max_chunk_elements=max_chunk_elements)
    (upstream * our_loss).backward()

    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert ours.grad.dtype == dtype and ours.grad.shape == logits.shape
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-6 * ref.grad.abs().max().item())


@pytest.mark.parametrize(
    ("alpha", "gamma", "focal_weight", "dice_weight"),
    [
        (0.25, 0.0, 100.0, 1.0),
        (0.5, 1.0, 100.0, 1.0),
        (-1.0, 2.0, 20.0, 2.0),
        (0.75, 1.5, 1.0, 0.0),
        (0.1, 3.0, 0.0, 1.0),
    ],
)
def test_chunked_matches_reference_other_settings(alpha, gamma, focal_weight, dice_weight):
    logits, labels = random_problem(2, 4, (3, 3), (6, 5), seed=3, dtype=torch.float32)
    kwargs = dict(focal_weight=focal_weight, dice_weight=dice_weight, alpha=alpha, gamma=gamma)
    ref_loss, ref_grad = loss_and_grad(mask_loss_reference, logits, labels, 3.0, **kwargs)
    our_loss, our_grad = loss_and_grad(
        mask_loss, logits, labels, 3.0, max_chunk_elements=2 * 30 * 2, **kwargs
    )
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-5, atol=1e-6 * ref_grad.abs().max().item())
    expected = transcribed_loss(upsample(logits.double(), (6, 5)).numpy(), labels.numpy(), 3.0, **kwargs)
    assert our_loss.item() == pytest.approx(expected, rel=1e-5)


def test_chunked_gradient_matches_numeric_gradient_of_transcription():
    """The analytic backward, against central differences of the numpy transcription (non-square, 3 chunks)."""
    logits, labels = random_problem(1, 3, (2, 3), (5, 7), seed=11, dtype=torch.float64)

    def transcribed(array):
        maps = F.interpolate(torch.from_numpy(array), size=(5, 7), mode="bilinear", align_corners=False)
        return transcribed_loss(maps.numpy(), labels.numpy(), 2.0)

    loss, grad = loss_and_grad(mask_loss, logits, labels, 2.0, max_chunk_elements=35)
    assert loss.item() == pytest.approx(transcribed(logits.numpy()), rel=1e-5)
    expected = numeric_gradient(transcribed, logits.numpy())
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_chunked_bfloat16_logits_match_reference():
    logits, labels = random_problem(2, 3, (2, 2), (4, 4), seed=5, dtype=torch.bfloat16)
    ref_loss, ref_grad = loss_and_grad(mask_loss_reference, logits, labels, 2.0)
    our_loss, our_grad = loss_and_grad(mask_loss, logits, labels, 2.0, max_chunk_elements=32)
    assert our_loss.dtype == torch.float32 and our_grad.dtype == torch.bfloat16
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        our_grad.float(), ref_grad.float(), rtol=1e-2, atol=1e-2 * ref_grad.abs().max().item()
    )


def test_labels_dtype_does_not_matter_for_the_loss():
    logits, labels = random_problem(2, 3, (2, 2), (4, 4), seed=6, dtype=torch.float32)
    labels = torch.where(labels > 200, IGNORE, labels.clamp(max=IGNORE))
    expected = mask_loss(logits, labels, 2.0)
    for dtype in (torch.uint8, torch.int32):
        torch.testing.assert_close(mask_loss(logits, labels.to(dtype), 2.0), expected, rtol=0, atol=0)
        torch.testing.assert_close(
            mask_loss_reference(logits, labels.to(dtype), 2.0), expected, rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("name", LOSSES)
def test_float64_logits_keep_float64_precision(name):
    loss = LOSSES[name](LOGITS_2X2, LABELS, 4)
    assert loss.dtype == torch.float64
    expected = transcribed_loss(bilinear_2_to_4(LOGITS_2X2), LABELS.numpy(), 4)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------------
# count_masks
# ------------------------------------------------------------------------------------------------
def test_count_masks_hand_made_batch():
    labels = torch.tensor(
        [
            [[0, 2, IGNORE], [2, 2, 0]],  # classes 0 and 2
            [[1, 5, -1], [3, IGNORE, 1]],  # class 1; 5, -1 and 3 are not classes of K=3
            [[IGNORE, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE]],  # nothing
        ]
    )
    count = count_masks(labels, 3)
    assert count.is_floating_point()
    assert count.item() == 3.0
    assert count_masks(labels, 6).item() == 5.0  # with K=6, ids 3 and 5 are classes of image 1
    assert count_masks(labels, 1).item() == 1.0  # only class 0 exists: image 0


def test_count_masks_is_at_least_one():
    assert count_masks(torch.full((2, 3, 3), IGNORE), 4).item() == 1.0
    assert count_masks(torch.full((1, 2, 2), 9), 4).item() == 1.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_count_masks_accepts_integer_labels_of_any_width(dtype):
    labels = torch.tensor([[[0, 2, IGNORE], [2, 2, 0]], [[1, 1, IGNORE], [IGNORE, 1, 1]]], dtype=dtype)
    assert count_masks(labels, 3).item() == 3.0


# ------------------------------------------------------------------------------------------------
# upsample
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("low", "high"), [((2, 2), (4, 4)), ((3, 5), (7, 4)), ((6, 6), (3, 3)), ((1, 4), (5, 9))]
)
def test_upsample_is_bilinear_without_corner_alignment(low, high):
    logits = torch.randn(2, 3, *low, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(logits, size=high, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample(logits, high), expected, rtol=0, atol=0)
    assert not torch.allclose(
        upsample(logits, high), F.interpolate(logits, size=high, mode="bilinear", align_corners=True)
    )


def test_upsample_2_to_4_by_hand():
    out = upsample(LOGITS_2X2, (4, 4))
    np.testing.assert_allclose(out.numpy(), bilinear_2_to_4(LOGITS_2X2), rtol=1e-12)


def test_upsample_is_identity_when_sizes_match():
    logits = torch.randn(1, 2, 3, 5, requires_grad=True)
    out = upsample(logits, (3, 5))
    torch.testing.assert_close(out, logits, rtol=0, atol=0)
    out.sum().backward()
    torch.testing.assert_close(logits.grad, torch.ones_like(logits), rtol=0, atol=0)
