"""The frozen-CLIP dense baseline on hand-made examples whose answer is known without the code under test."""

from __future__ import annotations

import math
from types import SimpleNamespace

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter, evaluate_frozen_clip
from otseg_hf.testing import char_clip_tokenizer, tiny_clip_config

PATCH = 8


class HandVision(nn.Module):
    """Patch token = (mean red - mean green, mean green - mean red) of the patch's pixel values; CLS zero."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.post_layernorm = nn.Identity()

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        pooled = nn.functional.avg_pool2d(pixel_values, PATCH)  # (B, 3, h, w)
        diff = (pooled[:, 0] - pooled[:, 1]).flatten(1)  # (B, h w)
        tokens = torch.stack([diff, -diff], -1)
        return SimpleNamespace(last_hidden_state=torch.cat([torch.zeros_like(tokens[:, :1]), tokens], 1))


class HandCLIP(nn.Module):
    """A stand-in CLIP written by hand: `HandVision` patch tokens, identity post-layernorm and projection,
    logit scale 10, and a text's embedding looked up by its first token after <|startoftext|>:
    'r' -> (1, 0), 'g' -> (0, 1), 'x' -> (1, 1), 'y' -> (1, -1)."""

    def __init__(self, tokenizer):
        super().__init__()
        vision = dict(image_size=16, patch_size=PATCH, hidden_size=4, intermediate_size=8,
                      num_hidden_layers=1, num_attention_heads=1)  # fmt: skip
        text = dict(hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1)
        self.config = CLIPConfig(text_config=text, vision_config=vision)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.visual_projection = nn.Identity()
        self.vision_model = HandVision(self.config.vision_config)
        self.lookup = {tokenizer.convert_tokens_to_ids(t): v for t, v in
                       {"r</w>": (1, 0), "g</w>": (0, 1), "x": (1, 1), "y</w>": (1, -1)}.items()}  # fmt: skip

    def get_text_features(self, input_ids, attention_mask=None):
        return torch.tensor([self.lookup[int(ids[1])] for ids in input_ids], dtype=torch.float32)


def image_and_label(red_rows: int, red_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """16 x 16 green (class 1) with a red (class 0) top-left block of red_rows x red_columns."""
    image = np.zeros((16, 16, 3), np.uint8)
    image[:] = (20, 230, 20)
    image[:red_rows, :red_columns] = (230, 20, 20)
    label = np.ones((16, 16), np.uint8)
    label[:red_rows, :red_columns] = 0
    return image, label


def bilinear_weight_of_first(pixel: int) -> float:
    """Weight of patch 0 (centre 3.5) at pixel `pixel` when 2 patch values are upsampled x8 bilinearly
    without aligned corners: source coordinate (pixel + 0.5) / 8 - 0.5, clamped to [0, 1]."""
    source = min(max((pixel + 0.5) / PATCH - 0.5, 0.0), 1.0)
    return 1.0 - source


def rows(*pairs):
    images = [PIL.Image.fromarray(image) for image, _ in pairs]
    labels = [PIL.Image.fromarray(label) for _, label in pairs]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_class_embeddings_are_template_means_normalised():
    tokenizer = char_clip_tokenizer()
    segmenter = FrozenCLIPSegmenter(HandCLIP(tokenizer), tokenizer, ["r", "g"], ["{}", "x{}"])
    # "r" -> (1, 0); "xr" starts with x -> (1, 1)/sqrt(2): mean (1 + 1/sqrt2, 1/sqrt2)/2, normalised
    a, b = 1 + 1 / math.sqrt(2), 1 / math.sqrt(2)
    expected_r = torch.tensor([a, b]) / math.hypot(a, b)
    torch.testing.assert_close(segmenter.class_embeds[0], expected_r)
    torch.testing.assert_close(segmenter.class_embeds[1], torch.tensor([b, a]) / math.hypot(a, b))


def test_logits_are_scaled_cosines_of_each_patch():
    tokenizer = char_clip_tokenizer()
    segmenter = FrozenCLIPSegmenter(HandCLIP(tokenizer), tokenizer, ["r", "g", "y"], ["{}"])
    image, _ = image_and_label(16, 8)  # left patches red, right patches green
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    logits = segmenter(pixels).logits  # (1, 3, 2, 2)
    assert logits.shape == (1, 3, 2, 2)
    # a red patch's token points along (1, -1)/sqrt2: cosines r 1/sqrt2, g -1/sqrt2, y 1; scale 10
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(logits[0, :, 0, 0], torch.tensor([10 * s, -10 * s, 10.0]))
    torch.testing.assert_close(logits[0, :, 1, 1], torch.tensor([-10 * s, 10 * s, -10.0]))


def test_evaluation_on_hand_examples_with_known_ious():
    tokenizer = char_clip_tokenizer()
    segmenter = FrozenCLIPSegmenter(HandCLIP(tokenizer), tokenizer, ["r", "g"], ["{}"], [1])
    # left half red: the two patch columns are red / green, upsampling turns at the patch edge -> exact
    results = evaluate_frozen_clip(segmenter, rows(image_and_label(16, 8))).compute()
    assert results["mean_iou"] == pytest.approx(1.0)
    assert results["seen_mean_iou"] == pytest.approx(1.0) and results["unseen_mean_iou"] == pytest.approx(1.0)
    # only the top-left patch red: the red logit interpolates +c there and -c at the 3 others, so red wins
    # where 2 wy wx - 1 > 0 (wy, wx: the weights of the first patch row / column at the pixel)
    predicted_red = sum(
        bilinear_weight_of_first(y) * bilinear_weight_of_first(x) > 0.5 for y in range(16) for x in range(16)
    )
    assert 16 < predicted_red < 64  # the corner of the block is rounded off, nothing outside it is red
    results = evaluate_frozen_clip(segmenter, rows(image_and_label(8, 8))).compute()
    red_iou, green_iou = predicted_red / 64, (256 - 64) / (256 - predicted_red)
    assert results["seen_mean_iou"] == pytest.approx(red_iou)
    assert results["unseen_mean_iou"] == pytest.approx(green_iou)
    assert results["mean_iou"] == pytest.approx((red_iou + green_iou) / 2)


def test_any_clip_folder_and_bad_vocabularies(tmp_path):
    clip = CLIPModel(tiny_clip_config(image_size=32))
    clip.save_pretrained(tmp_path)
    char_clip_tokenizer().save_pretrained(tmp_path)
    segmenter = FrozenCLIPSegmenter.from_pretrained(tmp_path, ["a", "b", "c"], ["a photo of a {}."], [2])
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    label = np.random.default_rng(1).integers(0, 3, (40, 48), dtype=np.uint8)
    results = evaluate_frozen_clip(segmenter, rows((image, label))).compute()
    assert 0.0 <= results["mean_iou"] <= 1.0
    with pytest.raises(ValueError, match="distinct"):
        FrozenCLIPSegmenter(clip, char_clip_tokenizer(), ["a", "a"])
    with pytest.raises(ValueError, match="out of range"):
        FrozenCLIPSegmenter(clip, char_clip_tokenizer(), ["a", "b"], unseen_label_ids=[5])
    with pytest.raises(ValueError, match="template"):
        FrozenCLIPSegmenter(clip, char_clip_tokenizer(), ["a", "b"], ["no slot"])
