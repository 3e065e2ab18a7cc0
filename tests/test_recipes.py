"""Recipes of spec section 9: the table, the optimizer groups, the schedule, the accumulation rule."""

from __future__ import annotations

import pytest
import torch

from otseg_hf.recipes import (
    RECIPES,
    Recipe,
    build_optimizer,
    gradient_accumulation_steps,
    parameter_groups,
    poly_warmup_factor,
)


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dataset", "inductive", "transductive", "crop"),
    [("voc", 20000, 10000, 512), ("context", 40000, 20000, 480), ("coco-stuff", 80000, 40000, 512)],
)
def test_reference_recipes_follow_the_spec(dataset, inductive, transductive, crop):
    for model_type in ("otseg", "zegot"):
        ind = RECIPES[f"{model_type}-{dataset}-inductive"]
        trans = RECIPES[f"{model_type}-{dataset}-transductive"]
        assert (ind.max_steps, trans.max_steps) == (inductive, transductive)
        assert ind.crop_size == trans.crop_size == crop
        assert trans.init_from == ind.name and ind.init_from is None
        for recipe in (ind, trans):
            assert recipe.total_batch_size == 16
            assert (recipe.learning_rate, recipe.lr_multiplier, recipe.weight_decay) == (2e-5, 10.0, 0.01)
            assert (recipe.warmup_steps, recipe.warmup_ratio, recipe.min_learning_rate) == (1500, 1e-6, 1e-6)
            assert recipe.poly_power == 0.9
            assert (recipe.rescale_scale, recipe.ratio_range, recipe.cat_max_ratio) == (
                (2048, 512),
                (0.5, 2.0),
                0.75,
            )
    assert RECIPES[f"otseg-{dataset}-fully_supervised"].seen_label_ids is None


def test_voc_inductive_split():
    assert RECIPES["otseg-voc-inductive"].seen_label_ids == list(range(15))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(setting="semi"), "setting"),
        (dict(model_type="segformer"), "model_type"),
        (dict(dataset="imagenet"), "dataset"),
        (dict(max_steps=0), "max_steps"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(colour="red"), "unknown recipe fields"),
    ],
)
def test_bad_recipe_fields_raise(changes, message):
    with pytest.raises(ValueError, match=message):
        RECIPES["otseg-voc-inductive"].replace(**changes)


# ------------------------------------------------------------------------------------------------
# schedule: mmcv's PolyLrUpdaterHook with linear warm-up, transcribed
# ------------------------------------------------------------------------------------------------
def mmcv_lr(step, base_lr, max_iters, power, min_lr, warmup_iters, warmup_ratio):
    regular = (base_lr - min_lr) * (1 - step / max_iters) ** power + min_lr
    if step >= warmup_iters:
        return regular
    k = (1 - step / warmup_iters) * (1 - warmup_ratio)
    return (1 - k) * regular


@pytest.mark.parametrize("step", [0, 1, 750, 1499, 1500, 1501, 10000, 19999, 20000])
def test_schedule_is_mmcv_poly_with_linear_warmup(step):
    recipe = RECIPES["otseg-voc-inductive"]
    base = recipe.learning_rate * recipe.lr_multiplier
    expected = mmcv_lr(step, base, 20000, 0.9, 1e-6, 1500, 1e-6)
    assert base * poly_warmup_factor(step, base, recipe) == pytest.approx(expected, rel=1e-12)


def test_schedule_by_hand():
    recipe = RECIPES["otseg-voc-inductive"]
    base = 2e-4
    # half way, after warm-up: (2e-4 - 1e-6) * 0.5 ** 0.9 + 1e-6
    assert base * poly_warmup_factor(10000, base, recipe) == pytest.approx(1.0764e-4, rel=1e-4)
    assert base * poly_warmup_factor(20000, base, recipe) == pytest.approx(1e-6)
    assert base * poly_warmup_factor(0, base, recipe) == pytest.approx(2e-4 * 1e-6, rel=1e-3)


def test_optimizer_steps_follow_the_schedule(make_model):
    model = make_model()
    recipe = RECIPES["otseg-synthetic-inductive"].replace(max_steps=20, warmup_steps=5)
    optimizer, scheduler = build_optimizer(model, recipe)
    base = recipe.learning_rate * recipe.lr_multiplier
    for step in range(20):
        for group in optimizer.param_groups:
            expected = mmcv_lr(step, base, 20, 0.9, 1e-6, 5, 1e-6)
            assert group["lr"] == pytest.approx(expected, rel=1e-9)
        optimizer.step()
        scheduler.step()


# ------------------------------------------------------------------------------------------------
# parameter groups
# ------------------------------------------------------------------------------------------------
def test_parameter_groups_cover_exactly_the_trainable_parameters(make_model):
    model = make_model()
    recipe = RECIPES["otseg-synthetic-inductive"]
    groups = parameter_groups(model, recipe)
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    names = {id(p): name for name, p in model.named_parameters()}
    no_decay = next(group for group in groups if group["weight_decay"] == 0.0)
    decay = next(group for group in groups if group["weight_decay"] == recipe.weight_decay)
    norm_names = {names[id(p)] for p in no_decay["params"]}
    assert norm_names and all("norm" in name for name in norm_names)
    assert "visual_prompts.prompt_norm.weight" in norm_names
    assert all("norm" not in names[id(p)] for p in decay["params"])
    assert all(group["lr"] == recipe.learning_rate * recipe.lr_multiplier for group in groups)


def test_frozen_model_has_no_groups():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(model, RECIPES["otseg-voc-inductive"])


# ------------------------------------------------------------------------------------------------
# accumulation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("per_device", "processes", "steps"), [(4, 1, 4), (4, 4, 1), (2, 4, 2), (1, 16, 1), (8, 2, 1)]
)
def test_accumulation_reaches_the_total_batch(per_device, processes, steps):
    assert gradient_accumulation_steps(16, per_device, processes) == steps
    assert per_device * processes * steps == 16


@pytest.mark.parametrize(("per_device", "processes"), [(3, 1), (4, 3), (32, 1), (0, 1)])
def test_unreachable_total_batch_raises(per_device, processes):
    with pytest.raises(ValueError, match="total batch of 16"):
        gradient_accumulation_steps(16, per_device, processes)


def test_recipe_fields_are_typed():
    recipe = Recipe(name="x", model_type="otseg", dataset="synthetic", setting="fully_supervised")
    assert recipe.seen_label_ids is None and recipe.split.name == "synthetic"
