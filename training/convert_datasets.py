"""Convert the standard on-disk segmentation datasets into `datasets` DatasetDicts (`save_to_disk`).

Every output has the columns `image` (the original JPEG bytes) and `label` (a PNG of class ids,
0-based as in `otseg_hf.data.splits.DATASETS`, 255 = ignore), the splits `train` and
`validation`, and an `id2label.json` beside the data. Label ids are checked against the class list.

Layouts (the folders mmsegmentation's preparation scripts produce):

    voc         VOCdevkit/VOC2012: JPEGImages/, SegmentationClass/ (palette PNGs) and/or
                SegmentationClassAug/ (the augmented set), ImageSets/Segmentation/{train_aug|aug,train,val}.txt;
                0 = background -> ignore, 1..20 -> 0..19; 255 stays ignore.
                Splits: train_aug (-> train, 10,582 images), val (-> validation), train, trainval.
    context     VOCdevkit/VOC2010: JPEGImages/, SegmentationClassContext/ (mmseg's 59-class PNGs),
                ImageSets/SegmentationContext/{train,val}.txt; 0 = background -> ignore, 1..59 -> 0..58.
    coco-stuff  coco_stuff164k: images/{train2017,val2017}/*.jpg, annotations/{split}/*_labelTrainIds.png;
                ids 0..170 kept, 255 ignore.
    ade20k      ADEChallengeData2016: images/{training,validation}/*.jpg, annotations/{split}/*.png;
                0 = other -> ignore, 1..150 -> 0..149.

Usage:

    python training/convert_datasets.py voc --root data/VOCdevkit/VOC2012 --output-dir data/voc
    python training/convert_datasets.py coco-stuff --root data/coco_stuff164k --output-dir data/coco-stuff --num-proc 8

    >>> datasets.load_from_disk("data/voc")["train"][0]  # {"image": PIL RGB, "label": PIL L}
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from otseg_hf.data.splits import DATASETS
from otseg_hf.model.image_transforms import check_label_ids, reduce_labels

IGNORE_INDEX = 255
# split names of the layouts -> names in the output DatasetDict
OUTPUT_SPLIT_NAMES = {
    "train_aug": "train",
    "train2017": "train",
    "training": "train",
    "val": "validation",
    "val2017": "validation",
    "validation": "validation",
}

Pairs = list[tuple[str, str]]  # (image path, label path)


# ----------------------------------------------------------------------------------------------------
# layouts: list the (image, label) files of a split
# ----------------------------------------------------------------------------------------------------
def _read_list(path: Path) -> list[str]:
    """Image ids of a split list. Lines are 'id' or '/JPEGImages/id.jpg /SegmentationClassAug/id.png'."""
    ids = []
    for line in path.read_text().splitlines():
        if line.strip():
            ids.append(Path(line.split()[0]).stem)
    return ids


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    return path


def voc_pairs(root: Path, split: str) -> Pairs:
    """PASCAL VOC 2012 (+ SBD's augmented labels): labels from SegmentationClassAug when it has the image,
    else SegmentationClass."""
    lists = root / "ImageSets" / "Segmentation"
    candidates = (
        [lists / "train_aug.txt", lists / "aug.txt"] if split == "train_aug" else [lists / f"{split}.txt"]
    )
    list_file = next((path for path in candidates if path.is_file()), None)
    if list_file is None:
        raise FileNotFoundError(
            f"no split list for {split!r}: looked for {[str(p) for p in candidates]}. The augmented set needs "
            "SegmentationClassAug/ and its train_aug.txt (or mmsegmentation's aug.txt from tools/convert_datasets/voc_aug.py)"
        )
    pairs = []
    for image_id in _read_list(list_file):
        labels = [
            root / folder / f"{image_id}.png" for folder in ("SegmentationClassAug", "SegmentationClass")
        ]
        label = next((path for path in labels if path.is_file()), None)
        if label is None:
            raise FileNotFoundError(
                f"no label for {image_id!r} of {list_file}: looked for {[str(p) for p in labels]}"
            )
        pairs.append((str(_existing(root / "JPEGImages" / f"{image_id}.jpg")), str(label)))
    return pairs


def context_pairs(root: Path, split: str) -> Pairs:
    """PASCAL Context 59 as mmsegmentation prepares it (tools/convert_datasets/pascal_context.py)."""
    list_file = _existing(root / "ImageSets" / "SegmentationContext" / f"{split}.txt")
    return [
        (
            str(_existing(root / "JPEGImages" / f"{image_id}.jpg")),
            str(_existing(root / "SegmentationClassContext" / f"{image_id}.png")),
        )
        for image_id in _read_list(list_file)
    ]


def _folder_pairs(image_dir: Path, label_dir: Path, label_name: Callable[[str], str]) -> Pairs:
    if not image_dir.is_dir():
        raise FileNotFoundError(f"missing folder {image_dir}")
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no .jpg images in {image_dir}")
    return [(str(image), str(_existing(label_dir / label_name(image.stem)))) for image in images]


def coco_stuff_pairs(root: Path, split: str) -> Pairs:
    """COCO-Stuff 164k with mmsegmentation's *_labelTrainIds.png (tools/convert_datasets/coco_stuff164k.py)."""
    return _folder_pairs(
        root / "images" / split, root / "annotations" / split, lambda stem: f"{stem}_labelTrainIds.png"
    )


def ade20k_pairs(root: Path, split: str) -> Pairs:
    """ADE20K SceneParse150 (ADEChallengeData2016)."""
    return _folder_pairs(root / "images" / split, root / "annotations" / split, lambda stem: f"{stem}.png")


@dataclass(frozen=True)
class Layout:
    """How to read one dataset: its file lister, default splits and whether label 0 is a non-class background."""

    list_pairs: Callable[[Path, str], Pairs]
    splits: tuple[str, ...]
    do_reduce_labels: bool


LAYOUTS = {
    "voc": Layout(voc_pairs, ("train_aug", "val"), do_reduce_labels=True),
    "context": Layout(context_pairs, ("train", "val"), do_reduce_labels=True),
    "coco-stuff": Layout(coco_stuff_pairs, ("train2017", "val2017"), do_reduce_labels=False),
    "ade20k": Layout(ade20k_pairs, ("training", "validation"), do_reduce_labels=True),
}


# ----------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------
def read_label(
    path: str, do_reduce_labels: bool, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Class ids (H, W) of a label PNG (palette or grey), reduced if asked, checked against the classes."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"{path}: label images must hold one class id per pixel (mode L or P), got mode {image.mode}"
            )
        label = np.asarray(image)
    if do_reduce_labels:
        label = reduce_labels(label, ignore_index)
    return check_label_ids(label, num_classes, ignore_index, where=path)


def _png_bytes(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label.astype(np.uint8 if label.max(initial=0) <= 255 else np.uint16)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _examples(pairs: Pairs, do_reduce_labels: bool, num_classes: int, ignore_index: int):
    for image_path, label_path in pairs:
        label = read_label(label_path, do_reduce_labels, num_classes, ignore_index)
        with Image.open(image_path) as image:
            width, height = image.size
        if (height, width) != label.shape:
            raise ValueError(
                f"{image_path} is {height}x{width} but its label {label_path} is {label.shape[0]}x{label.shape[1]}"
            )
        yield {
            "image": {"bytes": Path(image_path).read_bytes(), "path": Path(image_path).name},
            "label": {"bytes": _png_bytes(label), "path": Path(label_path).name},
        }


FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def pairs_to_dataset(
    pairs: Pairs,
    do_reduce_labels: bool,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """A `datasets.Dataset` with `image` and `label` columns from (image, label) file pairs."""
    try:
        return datasets.Dataset.from_generator(
            _examples,
            features=FEATURES,
            gen_kwargs=dict(
                pairs=pairs,
                do_reduce_labels=do_reduce_labels,
                num_classes=num_classes,
                ignore_index=ignore_index,
            ),
            num_proc=num_proc if num_proc and num_proc > 1 and len(pairs) > 1 else None,
            cache_dir=cache_dir,
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(
            error.__cause__, (ValueError, OSError)
        ):  # our checks: show their message, not the wrapper's
            raise error.__cause__ from None
        raise


def convert(
    name: str,
    root: str | Path,
    output_dir: str | Path,
    splits: list[str] | None = None,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Convert dataset `name` (a key of `LAYOUTS`) found at `root`; save it to `output_dir` and return it."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(LAYOUTS)}")
    layout, classes = LAYOUTS[name], DATASETS[name]
    root, output_dir = Path(root), Path(output_dir)
    splits = list(splits or layout.splits)
    output_names = [OUTPUT_SPLIT_NAMES.get(split, split) for split in splits]
    if len(set(output_names)) != len(output_names):
        raise ValueError(f"splits {splits} map to repeated output names {output_names}")
    pairs = {output: layout.list_pairs(root, split) for split, output in zip(splits, output_names)}
    # a fresh cache: from_generator would otherwise reuse an older conversion of the same file names
    with tempfile.TemporaryDirectory() as cache_dir:
        dataset = datasets.DatasetDict(
            {
                output: pairs_to_dataset(
                    split_pairs,
                    layout.do_reduce_labels,
                    classes.num_classes,
                    IGNORE_INDEX,
                    num_proc,
                    cache_dir,
                )
                for output, split_pairs in pairs.items()
            }
        )
        dataset.save_to_disk(str(output_dir))
    (output_dir / "id2label.json").write_text(
        json.dumps(dict(enumerate(classes.class_names)), indent=2) + "\n"
    )
    return datasets.load_from_disk(str(output_dir))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=sorted(LAYOUTS), help="which on-disk layout to read")
    parser.add_argument("--root", type=Path, required=True, help="the dataset folder (see the layouts above)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where to save the DatasetDict")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=None,
        help="splits of the layout to convert (default: its train and val splits)",
    )
    parser.add_argument("--num-proc", type=int, default=None, help="processes that read and check the files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dataset = convert(args.dataset, args.root, args.output_dir, args.splits, args.num_proc)
    sizes = ", ".join(f"{split}: {len(part)}" for split, part in dataset.items())
    print(f"saved {args.dataset} to {args.output_dir} ({sizes})")


if __name__ == "__main__":
    main()
