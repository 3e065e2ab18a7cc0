"""The otseg-segment command: overlays with a legend, label maps, progress, errors."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import CLASS_NAMES, SEEN_LABEL_IDS, TINY_OVERRIDES

from otseg_hf import (
    OTSegForSemanticSegmentation,
    OTSegImageProcessor,
    OTSegZeroShotImageSegmentationPipeline,
)
from otseg_hf.app.drawing import palette
from otseg_hf.cli.segment import main
from otseg_hf.model.pipeline_otseg import save_pipeline_folder


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    torch.manual_seed(0)
    return OTSegForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, image_size=32, **TINY_OVERRIDES
    ).eval()


@pytest.fixture(scope="module")
def folders(model, tokenizer, tmp_path_factory):
    image_processor = OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    with_tokenizer = tmp_path_factory.mktemp("cli-model")
    save_pipeline_folder(with_tokenizer, model, image_processor, tokenizer=tokenizer)
    without = tmp_path_factory.mktemp("cli-model-no-tokenizer")
    save_pipeline_folder(without, model, image_processor)
    return with_tokenizer, without


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, size in [("street", (20, 36)), ("beach", (30, 18))]:
        path = tmp_path / f"{name}.png"
        PIL.Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_palette_is_vocs_without_black():
    np.testing.assert_array_equal(
        palette(5), [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    )
    assert len({tuple(c) for c in palette(256)}) == 256


def test_segment_with_labels(folders, model, tokenizer, images, tmp_path, capsys):
    out = tmp_path / "out"
    labels = ["red circle", "cat", "grass"]
    main(
        [
            *map(str, images),
            "--model",
            str(folders[0]),
            "--labels",
            *labels,
            "--out",
            str(out),
            "--alpha",
            "0.4",
        ]
    )
    assert "segmenting" in capsys.readouterr().err  # a progress bar for several images
    legend = json.loads((out / "legend.json").read_text())
    assert [entry["label"] for entry in legend] == labels
    assert legend[1]["color"] == [0, 128, 0]

    segmenter = OTSegZeroShotImageSegmentationPipeline(
        model=model,
        image_processor=OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8),
        tokenizer=tokenizer,
    )
    for path in images:
        image = np.asarray(PIL.Image.open(path))
        label_png = PIL.Image.open(out / f"{path.stem}_labels.png")
        assert label_png.mode == "P" and label_png.size == (image.shape[1], image.shape[0])
        label_map = np.asarray(label_png)
        expected = np.zeros(image.shape[:2], dtype=np.int64)
        for segment in segmenter(image, candidate_labels=labels):
            expected[np.asarray(segment["mask"]) > 0] = labels.index(segment["label"])
        np.testing.assert_array_equal(label_map, expected)
        np.testing.assert_array_equal(np.asarray(label_png.convert("RGB")), palette(3)[label_map])

        overlay = np.asarray(PIL.Image.open(out / f"{path.stem}_overlay.png").convert("RGB")).astype(
            np.float64
        )
        height, width = image.shape[:2]
        assert overlay.shape[0] >= height and overlay.shape[1] > width  # legend on the right
        blended = np.round(0.6 * image + 0.4 * palette(3)[label_map])
        np.testing.assert_allclose(overlay[:height, :width], blended, atol=1)
        legend_area = overlay[:, width:].reshape(-1, 3)
        for index in np.unique(label_map):  # a swatch for every label found
            assert (np.abs(legend_area - palette(3)[index]).sum(axis=1) == 0).any()


def test_segment_with_the_models_classes(folders, images, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(images[0]), "--model", str(folders[1]), "--out", str(out)])  # no tokenizer needed
    assert "segmenting" not in capsys.readouterr().err  # no progress bar for one image
    legend = json.loads((out / "legend.json").read_text())
    assert [entry["label"] for entry in legend] == CLASS_NAMES
    label_map = np.asarray(PIL.Image.open(out / "street_labels.png"))
    assert label_map.shape == (20, 36) and label_map.max() < len(CLASS_NAMES)
    assert (out / "street_overlay.png").is_file()


def test_same_names_do_not_overwrite(folders, images, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    copy = other / images[0].name
    copy.write_bytes(images[0].read_bytes())
    out = tmp_path / "out"
    main([str(images[0]), str(copy), "--model", str(folders[1]), "--out", str(out), "--no-progress"])
    assert {p.name for p in out.glob("street*_labels.png")} == {"street_labels.png", "street_1_labels.png"}


def test_errors(folders, images, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="no such image file: .*missing.png"):
        main([str(tmp_path / "missing.png"), "--model", str(folders[0]), "--out", out])
    with pytest.raises(ValueError, match="need a tokenizer"):
        main([str(images[0]), "--model", str(folders[1]), "--labels", "cat", "red circle", "--out", out])
    with pytest.raises(ValueError, match="duplicated"):
        main([str(images[0]), "--model", str(folders[0]), "--labels", "cat", "cat", "--out", out])
    with pytest.raises(ValueError, match="alpha"):
        main([str(images[0]), "--model", str(folders[0]), "--out", out, "--alpha", "2"])
