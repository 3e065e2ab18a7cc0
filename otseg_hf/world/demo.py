"""The README's main job, offline: zero-shot segmentation in the generated world.

    python -m otseg_hf.world.demo [--out outputs/demo] [--num-images 4] [--num-eval-images 200]

Loads the OTSeg model shipped with the package (`otseg_hf/pretrained/world-otseg`: a tiny CLIP pretrained
contrastively on the world's image-caption pairs, then OTSeg trained inductively on the 15 seen classes
with `training/train.py`), segments generated images that contain classes it never saw in training through
`pipeline("image-segmentation")`, writes overlay PNGs, and prints the metric table over all 20 classes on
the world's validation images. `python training/reproduce_world.py` rebuilds the checkpoints from the seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import pipeline

from .. import OTSegImageProcessor  # noqa: F401  (importing the package registers the Auto classes)
from ..cli.segment import overlay, segments_to_label_map
from ..evaluation.evaluate import EvaluationSet, evaluate_model
from ..hub.folders import default_image_processor
from .shapes import SyntheticShapes
from .splits import WORLD, WORLD_OTSEG_DIR, generated_dataset

DEMO_SEED = 2  # images neither trained on (seed 0) nor in the metric table (seed 1)


def images_with_unseen_classes(count: int, seed: int = DEMO_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` generated world images (of `seed`) in which an unseen class is visible."""
    world = SyntheticShapes.world(image_size=WORLD.image_size)
    unseen = set(WORLD.unseen_label_ids)
    found = []
    index = 0
    while len(found) < count:
        image, label = world.generate(index, seed)
        if unseen & set(np.unique(label).tolist()):
            found.append((image, label))
        index += 1
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=WORLD_OTSEG_DIR, help="model folder (default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="folder for the overlay PNGs")
    parser.add_argument("--num-images", type=int, default=4, help="images segmented through the pipeline")
    parser.add_argument("--num-eval-images", type=int, default=200, help="validation images of the table")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").exists():
        raise SystemExit(
            f"no model at {args.model}: the shipped checkpoints are missing; rebuild them with "
            "`python training/reproduce_world.py --install`"
        )
    torch.manual_seed(0)

    # 1. the standard pipeline on images with unseen classes
    segmenter = pipeline("image-segmentation", model=str(args.model))
    config = segmenter.model.config
    names = config.class_names
    unseen = set(config.unseen_label_ids)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"model: {args.model} ({config.setting}; unseen: {', '.join(names[i] for i in sorted(unseen))})\n")
    for number, (image, label) in enumerate(images_with_unseen_classes(args.num_images)):
        picture = PIL.Image.fromarray(image)
        segments = segmenter(picture)
        label_map = segments_to_label_map(segments, names)
        path = args.out / f"world_{number}_overlay.png"
        overlay(picture.resize((256, 256), PIL.Image.NEAREST), _upscale(label_map, 4), names).save(path)
        truth = [names[i] + (" (unseen)" if i in unseen else "") for i in np.unique(label) if i < len(names)]
        valid = label < len(names)
        accuracy = float((label_map[valid] == label[valid]).mean()) if valid.any() else float("nan")
        print(f"image {number}: objects {', '.join(truth)}")
        print(f"  predicted {', '.join(s['label'] for s in segments)}; pixel accuracy {accuracy:.0%}; {path}")

    # 2. the metric table over all classes
    data = generated_dataset(WORLD.name, args.num_eval_images, seed=1)
    dataset = EvaluationSet(data, default_image_processor(config), num_classes=len(names))
    metric = evaluate_model(segmenter.model, dataset)
    results = metric.compute()
    print(f"\nworld validation, {args.num_eval_images} images, all {len(names)} classes:\n")
    print(metric.table(results))
    shipped = args.model / "eval_results.json"
    if shipped.exists() and args.num_eval_images == 200:
        recorded = json.loads(shipped.read_text())
        print(
            f"\nrecorded when the checkpoint was made: hIoU {100 * (recorded['harmonic_mean_iou'] or 0):.2f}"
        )
    return results


def _upscale(label_map: np.ndarray, factor: int) -> np.ndarray:
    return label_map.repeat(factor, axis=0).repeat(factor, axis=1)


if __name__ == "__main__":
    main()
