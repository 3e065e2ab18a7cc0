"""The world recipes train on the world's exact pixels; the reference recipes keep the reference's augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otseg_hf.data.transforms import PhotoMetricDistortion, training_transforms
from otseg_hf.recipes import RECIPES
from otseg_hf.world.scenes import WorldScenes

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
WORLD_RECIPES = ["otseg-world-inductive", "otseg-world-transductive", "otseg-world-fully-supervised",
                 "zegot-world-inductive"]  # fmt: skip


def test_reference_recipes_keep_the_photometric_distortion():
    for name, recipe in RECIPES.items():
        if "world" not in name:
            assert recipe.photometric_distortion, name
    steps = training_transforms(crop_size=64, scale=(128, 64), ratio_range=(0.5, 2.0)).transforms
    assert any(isinstance(step, PhotoMetricDistortion) for step in steps)


@pytest.mark.parametrize("name", WORLD_RECIPES)
def test_world_recipes_see_the_exact_pixels_or_their_mirror(name):
    recipe = RECIPES[name]
    assert recipe.dataset == "world" and not recipe.photometric_distortion
    transform = training_transforms(
        crop_size=recipe.crop_size, scale=recipe.rescale_scale, ratio_range=recipe.ratio_range,
        cat_max_ratio=recipe.cat_max_ratio, num_classes=26, photometric_distortion=False,
    )  # fmt: skip
    world = WorldScenes()
    for index in range(4):
        image, label = world.generate(index, seed=0)
        pixels, target = transform(image, label, np.random.default_rng(index))
        expected = torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)).float()
        flipped = expected.flip(-1)
        same = torch.allclose(pixels, expected, atol=1e-5) and torch.equal(target, torch.from_numpy(label).long())
        mirrored = torch.allclose(pixels, flipped, atol=1e-5) and torch.equal(
            target, torch.from_numpy(label[:, ::-1].copy()).long()
        )
        assert same or mirrored, index


def test_world_transductive_recipe_starts_from_the_inductive_one():
    inductive, transductive = RECIPES["otseg-world-inductive"], RECIPES["otseg-world-transductive"]
    assert transductive.init_from == "otseg-world-inductive" and transductive.setting == "transductive"
    assert transductive.max_steps == inductive.max_steps // 2
    assert RECIPES["otseg-world-fully-supervised"].seen_label_ids is None
