"""Contact sheets of the main job: written, panels of the image's size, colours true to the colour words."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from otseg_hf.world.contact_sheet import class_style, contact_sheet, overview, paint_label_map
from otseg_hf.world.scenes import WorldScenes

NAMES = WorldScenes.class_names


def hue_family(rgb) -> str:
    """The colour word a plain RGB reads as, by its largest channels (independent of the module)."""
    r, g, b = (int(c) for c in rgb)
    if max(r, g, b) - min(r, g, b) < 60:
        return "grey"
    if r > 180 and g > 160 and b < 100:
        return "yellow"
    if r > g and b > g and abs(r - b) < 90:
        return "purple"
    return ("red", "green", "blue")[int(np.argmax([r, g, b]))]


@pytest.mark.parametrize("scale", [1, 4])
def test_sheet_is_written_and_panels_have_the_image_size(tmp_path, scale):
    world = WorldScenes()
    image, truth = world.generate(3, seed=3)
    prediction = truth.copy()
    prediction[:16] = 20  # a wrong stuff band on top
    sheet, panels = contact_sheet(image, truth, {"OTSeg": prediction, "frozen CLIP": truth}, NAMES,
                                  world.unseen_label_ids, scale=scale)  # fmt: skip
    assert len(panels) == 4  # input | ground truth | OTSeg | frozen CLIP
    for panel in panels:
        assert panel.size == (64 * scale, 64 * scale)
    assert np.array_equal(np.asarray(panels[0].resize((64, 64), PIL.Image.NEAREST)), image)
    path = tmp_path / "sheet.png"
    sheet.save(path)
    reloaded = PIL.Image.open(path)
    assert reloaded.width >= 4 * 64 * scale and reloaded.height > 64 * scale
    page = overview([sheet, sheet])
    assert page.size == (sheet.width, 2 * sheet.height)


def test_thing_classes_are_painted_in_their_own_colour_word():
    for index, name in enumerate(NAMES[: WorldScenes.num_things]):
        colour, pattern = class_style(name, index)
        assert hue_family(colour) == name.split()[1], name
        assert pattern == name.split()[0] or (pattern == "solid" and name.startswith("solid"))
    for index, name in enumerate(NAMES[WorldScenes.num_things :], WorldScenes.num_things):
        colour, _ = class_style(name, index)
        assert hue_family(colour) == "grey", name  # stuff has no colour word: no colour that reads as one


def test_painted_regions_keep_their_class_colour():
    label = np.zeros((8, 8), np.int64)
    label[:, 4:] = 8  # solid red shape | solid blue shape
    picture = np.asarray(paint_label_map(label, NAMES, scale=4))
    assert picture.shape == (32, 32, 3)
    assert hue_family(picture[2, 2]) == "red" and hue_family(picture[29, 29]) == "blue"


def test_mismatched_sizes_are_refused():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="same height and width"):
        contact_sheet(image, np.zeros((8, 8), np.int64), {"x": np.zeros((4, 4), np.int64)}, NAMES)
