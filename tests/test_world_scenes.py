"""World v2: every pixel a class, label maps painted by the same masks as the image, disjoint split seeds."""

from __future__ import annotations

import numpy as np
import pytest

from otseg_hf.world.captions import patch_labels, scene_descriptions
from otseg_hf.world.scenes import WORLD_SEEDS, WorldScenes, caption_world_scene, scene_attributes
from otseg_hf.world.splits import GENERATED_SPLIT_SEEDS, WORLD, generated_dataset

# the world's definition, written out independently of the module
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 50, 200),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")
STUFF = ("gravel", "wall", "fence", "water", "bricks", "tiles")
UNSEEN = {"striped red shape", "dotted green shape", "checkered blue shape", "solid yellow shape",
          "checkered purple shape", "water", "tiles"}  # fmt: skip


def dark(texture: str, y: int, x: int) -> bool:
    """Whether pixel (y, x) of a thing shows the shade (every channel halved) of its colour."""
    if texture == "striped":
        return ((y + x) // 3) % 2 == 1
    if texture == "dotted":
        return (y % 6 - 2.5) ** 2 + (x % 6 - 2.5) ** 2 <= 2.5
    if texture == "checkered":
        return (y // 3 + x // 3) % 2 == 1
    return False


def test_vocabulary_and_split():
    world = WorldScenes()
    things = [f"{t} {c} shape" for c in COLOURS for t in TEXTURES]
    assert world.class_names == things + list(STUFF)
    assert {world.class_names[i] for i in world.unseen_label_ids} == UNSEEN
    assert list(WORLD.class_names) == world.class_names
    assert sorted(WORLD.unseen_label_ids) == world.unseen_label_ids
    # compositional: each unseen thing's texture and colour are shown by seen things
    seen = [world.class_names[i] for i in world.seen_label_ids]
    for name in UNSEEN - set(STUFF):
        texture, colour, _ = name.split()
        assert any(s.startswith(texture + " ") for s in seen) and any(f" {colour} " in s for s in seen)


@pytest.mark.parametrize("index", range(12))
def test_every_pixel_is_a_class_painted_by_its_mask(index):
    world = WorldScenes()
    scene = world.generate_scene(index, seed=5)
    image, label = scene.image.astype(int), scene.label
    assert label.shape == image.shape[:2] == (64, 64)
    assert label.max() < len(world.class_names)  # no ignored pixel: every pixel a class
    names = np.array(world.class_names)[label]
    in_grey = ((image >= 90) & (image <= 160)).all(-1)
    for y in range(64):
        for x in range(64):
            name = names[y, x]
            if name in STUFF:
                assert in_grey[y, x], (y, x, name)
            else:
                texture, colour, _ = name.split()
                rgb = np.array(COLOURS[colour])
                expected = rgb // 2 if dark(texture, y, x) else rgb
                assert (image[y, x] == expected).all(), (y, x, name)
    # the stuff named by the scene covers exactly its label's pixels (after the things on top)
    for region in scene.stuff:
        assert region.visible_fraction == pytest.approx(np.mean(label == region.label_id))
    # the last thing drawn, if a circle, owns exactly the pixels whose centre is inside it
    last = scene.things[-1] if scene.things else None
    if last is not None and last.shape == "circle":
        yy, xx = np.mgrid[:64, :64] + 0.5
        inside = (yy - last.center[0]) ** 2 + (xx - last.center[1]) ** 2 <= last.radius**2
        assert (label[inside] == last.label_id).all()


def test_stuff_regions_and_things_vary():
    world = WorldScenes()
    scenes = [world.generate_scene(i, seed=0) for i in range(60)]
    assert {len(s.stuff) for s in scenes} == {1, 2, 3}
    assert {len(s.things) for s in scenes} == {1, 2, 3}
    shown = {int(i) for s in scenes for i in np.unique(s.label)}
    assert shown == set(range(len(world.class_names)))  # 60 scenes show every class


def test_deterministic_and_seen_only_scenes():
    world = WorldScenes()
    a, b = world.generate(7, seed=3), WorldScenes().generate(7, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(world.generate(7, seed=4)[0], a[0])
    seen = world.seen_label_ids
    for index in range(30):
        assert set(np.unique(world.generate_scene(index, 0, label_ids=seen).label)) <= set(seen)
    with pytest.raises(ValueError, match="stuff"):
        world.generate_scene(0, 0, label_ids=[0, 1])


def test_split_seeds_are_disjoint_and_used_by_the_generated_data():
    assert len(set(WORLD_SEEDS.values())) == len(WORLD_SEEDS) == 4
    assert GENERATED_SPLIT_SEEDS == WORLD_SEEDS
    test = generated_dataset(WORLD.name, 2, seed=WORLD_SEEDS["test"])
    image, label = WorldScenes().generate(1, seed=2)
    assert np.array_equal(np.asarray(test[1]["image"]), image)
    assert np.array_equal(np.asarray(test[1]["label"]), label)
    train = generated_dataset(WORLD.name, 2, seed=WORLD_SEEDS["train"])
    assert not np.array_equal(np.asarray(train[1]["image"]), image)


def test_captions_name_visible_things_and_main_stuff_only():
    world = WorldScenes()
    for index in range(20):
        scene = world.generate_scene(index, seed=1)
        caption = caption_world_scene(scene, np.random.default_rng(index))
        assert caption.startswith("a ") and caption.endswith(".")
        for region in scene.stuff:
            if region.kind in caption:
                assert region.visible_fraction >= 0.15
        named = scene_attributes(scene)
        assert all(t in TEXTURES and c in COLOURS for t, c, s in named if s not in STUFF)


def test_descriptions_of_a_thing_include_its_class_name():
    forms = scene_descriptions(("striped", "red", "star"))
    assert ("striped", "red", None) in forms and ("striped", "red", "star") in forms
    assert (None, None, "star") in forms and (None, "red", None) in forms
    assert scene_descriptions((None, None, "water")) == [(None, None, "water")]


def test_patch_labels_majority_or_none():
    label = np.zeros((16, 16), np.uint8)
    label[:8, 8:] = 3  # the top-right patch all class 3
    label[8:, :8][:5] = 2  # bottom-left: 40 of 64 pixels class 2
    label[8:, 8:][:, :4] = 1  # bottom-right: 32 of 64 class 1, 32 class 0: a tie at half -> the first
    assert patch_labels(label, 8).tolist() == [0, 3, 2, 0]
    label[8:, 8:][:, :4] = 1
    label[8:, 8:][:, 4:6] = 4  # 32 / 16 / 16: class 1 covers exactly half
    assert patch_labels(label, 8).tolist()[3] == 1
    label[8:, 8:][:, 3] = 5  # 24 / 16 / 8 / 16: nothing covers half
    assert patch_labels(label, 8).tolist()[3] == -1
