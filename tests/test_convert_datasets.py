"""Tests of `training/convert_datasets.py` on tiny fake directory trees in each on-disk layout."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from otseg_hf.data.splits import DATASETS

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "convert_datasets.py"
_spec = importlib.util.spec_from_file_location("convert_datasets", SCRIPT)
convert_datasets = importlib.util.module_from_spec(_spec)
sys.modules["convert_datasets"] = convert_datasets  # training/ is scripts, not a package
_spec.loader.exec_module(convert_datasets)

IGNORE = 255


def write_jpeg(path: Path, height: int, width: int, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path.read_bytes()


def write_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8))
    if palette:  # VOC's SegmentationClass PNGs are palette images whose indices are the class ids
        image = image.convert("P")
        image.putpalette(
            [value for index in range(256) for value in ((index * 37) % 256, (index * 91) % 256, index)]
        )
        image.putdata(label.ravel().tolist())
    image.save(path)


def raw_label(seed: int, height: int, width: int, num_raw_ids: int) -> np.ndarray:
    """Raw ids 0..num_raw_ids-1 with some 255 pixels."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_raw_ids, size=(height, width))
    label[rng.random(label.shape) < 0.15] = IGNORE
    return label.astype(np.uint8)


def zero_is_background(raw: np.ndarray) -> np.ndarray:
    """Expected ids of datasets whose 0 is not a class: 0 -> ignore, k -> k - 1, 255 stays."""
    expected = raw.astype(np.int64) - 1
    expected[(raw == 0) | (raw == IGNORE)] = IGNORE
    return expected


def check_split(dataset, expected: dict[str, tuple[bytes, np.ndarray]]):
    """Each example's image bytes equal the source file's, and its label equals the expected ids."""
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    assert dataset.column_names == ["image", "label"] and len(dataset) == len(expected)
    for index in range(len(dataset)):
        name = Path(raw[index]["image"]["path"]).stem
        image_bytes, label = expected[name]
        assert raw[index]["image"]["bytes"] == image_bytes
        decoded = dataset[index]["label"]
        assert decoded.mode == "L"
        assert np.array_equal(np.asarray(decoded), label)
        assert dataset[index]["image"].size == (label.shape[1], label.shape[0])


def check_id2label(output: Path, name: str):
    id2label = json.loads((output / "id2label.json").read_text())
    assert [id2label[str(i)] for i in range(len(id2label))] == list(DATASETS[name].class_names)


# ----------------------------------------------------------------------------------------------------
# layouts
# ----------------------------------------------------------------------------------------------------
def make_voc(root: Path, aug_list_name: str = "train_aug.txt"):
    """VOC2012 with SegmentationClassAug (train_aug, grey) and SegmentationClass (val, palette)."""
    expected = {"train": {}, "validation": {}}
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    train_ids, val_ids = ["2008_000001", "2008_000002", "2008_000003"], ["2007_000033", "2007_000042"]
    for seed, image_id in enumerate(train_ids):
        height, width = 6 + seed, 9
        image_bytes = write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", height, width, seed)
        raw = raw_label(seed, height, width, 21)
        write_label(root / "SegmentationClassAug" / f"{image_id}.png", raw)
        expected["train"][image_id] = (image_bytes, zero_is_background(raw))
        if seed == 0:  # also in SegmentationClass, differently: the augmented set's label is the one used
            write_label(root / "SegmentationClass" / f"{image_id}.png", np.zeros_like(raw), palette=True)
    for seed, image_id in enumerate(val_ids, start=10):
        height, width = 7, 5 + seed % 3
        image_bytes = write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", height, width, seed)
        raw = raw_label(seed, height, width, 21)
        write_label(root / "SegmentationClass" / f"{image_id}.png", raw, palette=True)
        expected["validation"][image_id] = (image_bytes, zero_is_background(raw))
    # the SBD-style list of the augmented set: "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
    (lists / aug_list_name).write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in train_ids)
    )
    (lists / "val.txt").write_text("\n".join(val_ids) + "\n")
    return expected


@pytest.mark.parametrize("aug_list_name", ["train_aug.txt", "aug.txt"])
def test_voc(tmp_path, aug_list_name):
    expected = make_voc(tmp_path / "VOC2012", aug_list_name)
    output = tmp_path / "voc-hf"
    result = convert_datasets.convert("voc", tmp_path / "VOC2012", output)
    assert sorted(result) == ["train", "validation"]
    reloaded = datasets.load_from_disk(str(output))
    for split in ("train", "validation"):
        check_split(reloaded[split], expected[split])
    check_id2label(output, "voc")


def test_pascal_context(tmp_path):
    root = tmp_path / "VOC2010"
    expected = {"train": {}, "validation": {}}
    for split, output_split, ids in (
        ("train", "train", ["2008_000002", "2008_000007"]),
        ("val", "validation", ["2008_000019"]),
    ):
        for seed, image_id in enumerate(ids):
            image_bytes = write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", 5, 8, seed)
            raw = raw_label(seed, 5, 8, 60)
            raw[raw == IGNORE] = 0  # mmseg's Context59 PNGs have no 255; 0 is background
            write_label(root / "SegmentationClassContext" / f"{image_id}.png", raw)
            expected[output_split][image_id] = (image_bytes, zero_is_background(raw))
        list_file = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("\n".join(ids) + "\n")
    output = tmp_path / "context-hf"
    result = convert_datasets.convert("context", root, output)
    for split in ("train", "validation"):
        check_split(result[split], expected[split])
    check_id2label(output, "context")


def test_coco_stuff_keeps_train_ids(tmp_path):
    root = tmp_path / "coco_stuff164k"
    expected = {"train": {}, "validation": {}}
    for split, output_split, ids in (
        ("train2017", "train", ["000000000009", "000000000025"]),
        ("val2017", "validation", ["000000000139"]),
    ):
        for seed, image_id in enumerate(ids):
            image_bytes = write_jpeg(root / "images" / split / f"{image_id}.jpg", 6, 4, seed)
            raw = raw_label(seed, 6, 4, 171)
            write_label(root / "annotations" / split / f"{image_id}_labelTrainIds.png", raw)
            expected[output_split][image_id] = (image_bytes, raw)  # ids unchanged
    output = tmp_path / "coco-hf"
    result = convert_datasets.convert("coco-stuff", root, output, num_proc=2)
    for split in ("train", "validation"):
        check_split(result[split], expected[split])
    check_id2label(output, "coco-stuff")


def test_ade20k(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    expected = {"train": {}, "validation": {}}
    for split, output_split, ids in (
        ("training", "train", ["ADE_train_00000001"]),
        ("validation", "validation", ["ADE_val_00000001", "ADE_val_00000002"]),
    ):
        for seed, image_id in enumerate(ids):
            image_bytes = write_jpeg(root / "images" / split / f"{image_id}.jpg", 5, 6, seed)
            raw = raw_label(seed, 5, 6, 151)
            raw[raw == IGNORE] = 0  # ADE20K has no 255; 0 is "other"
            write_label(root / "annotations" / split / f"{image_id}.png", raw)
            expected[output_split][image_id] = (image_bytes, zero_is_background(raw))
    output = tmp_path / "ade-hf"
    result = convert_datasets.convert("ade20k", root, output, splits=["validation"])
    assert list(result) == ["validation"]
    check_split(result["validation"], expected["validation"])
    check_id2label(output, "ade20k")


# ----------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------
def test_label_ids_outside_the_classes_are_named(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write_jpeg(root / "images" / "validation" / "a.jpg", 4, 4, 0)
    raw = np.zeros((4, 4), np.uint8)
    raw[0, 0], raw[1, 1] = 151, 200  # 151 -> 150 and 200 -> 199: past the 150 classes
    write_label(root / "annotations" / "validation" / "a.png", raw)
    with pytest.raises(ValueError, match=r"label ids \[150, 199\] in .*a\.png"):
        convert_datasets.convert("ade20k", root, tmp_path / "out", splits=["validation"])


def test_missing_and_malformed_files(tmp_path):
    root = tmp_path / "VOC2012"
    make_voc(root)
    (root / "SegmentationClassAug" / "2008_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="2008_000002"):
        convert_datasets.convert("voc", root, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="split list"):
        convert_datasets.convert("voc", root, tmp_path / "out", splits=["trainval"])
    coco = tmp_path / "coco"
    write_jpeg(coco / "images" / "val2017" / "x.jpg", 3, 3, 0)
    (coco / "annotations" / "val2017").mkdir(parents=True)
    Image.new("RGB", (3, 3)).save(coco / "annotations" / "val2017" / "x_labelTrainIds.png")
    with pytest.raises(ValueError, match="mode RGB"):
        convert_datasets.convert("coco-stuff", coco, tmp_path / "out2", splits=["val2017"])
    write_label(coco / "annotations" / "val2017" / "x_labelTrainIds.png", np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="is 3x3 but its label"):
        convert_datasets.convert("coco-stuff", coco, tmp_path / "out3", splits=["val2017"])


def test_command_line(tmp_path, capsys):
    expected = make_voc(tmp_path / "VOC2012")
    convert_datasets.main(
        ["voc", "--root", str(tmp_path / "VOC2012"), "--output-dir", str(tmp_path / "out"), "--splits", "val"]
    )
    assert "validation: 2" in capsys.readouterr().out
    check_split(datasets.load_from_disk(str(tmp_path / "out"))["validation"], expected["validation"])
