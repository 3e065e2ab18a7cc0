"""The README's main job, offline: build a tiny OTSeg from a tiny random CLIP, save it, load it back
through the Auto class, and segment a generated image, printing the predicted classes.

    python -m otseg_hf.demo [--out DIR]

With random CLIP weights the predictions carry no meaning; the job shows the whole path
(from_clip -> save_pretrained -> AutoModelForSemanticSegmentation -> forward -> label map) working.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSemanticSegmentation, CLIPModel

from . import OTSegForSemanticSegmentation
from .testing import char_clip_tokenizer, tiny_clip_config

CLASS_NAMES = ["red circle", "blue square", "green triangle", "yellow star", "striped square"]
SEEN_LABEL_IDS = [0, 1, 2]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def generated_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image: a red disc and a blue square on grey noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 130, size=(size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size // 3) ** 2 + (xx - size // 3) ** 2 < (size // 6) ** 2] = (220, 30, 30)
    image[size // 2 : size - 6, size // 2 : size - 6] = (30, 30, 220)
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the saved model (default: temporary)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "otseg-tiny"
        clip_dir = Path(tmp) / "clip-tiny"
        CLIPModel(tiny_clip_config()).save_pretrained(clip_dir)
        char_clip_tokenizer().save_pretrained(clip_dir)
        model = OTSegForSemanticSegmentation.from_clip(
            clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, image_size=64,
            num_visual_prompts=4, visual_prompt_depth=2, decoder_ffn_dim=64,
            inference_window_size=64, inference_window_stride=48,
        )  # fmt: skip
        model.save_pretrained(out)
        model = AutoModelForSemanticSegmentation.from_pretrained(out).eval()

        image = generated_image(64, args.seed)
        pixel_values = torch.from_numpy((image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)[None]
        with torch.no_grad():
            outputs = model(pixel_values.float())
        probs = F.interpolate(
            outputs.logits, size=image.shape[:2], mode="bilinear", align_corners=False
        ).sigmoid()
        label_map = probs.argmax(1)[0]

        config = model.config
        print(f"model: {type(model).__name__} ({config.setting}), saved to {out}")
        print(
            f"classes: {config.class_names} (unseen: {[config.id2label[i] for i in config.unseen_label_ids]})"
        )
        print(f"logits {tuple(outputs.logits.shape)} -> label map {tuple(label_map.shape)}")
        ids, counts = torch.unique(label_map, return_counts=True)
        for i, count in sorted(zip(ids.tolist(), counts.tolist()), key=lambda pair: -pair[1]):
            print(f"  {config.id2label[i]:<16} {count / label_map.numel():6.1%} of the pixels")


if __name__ == "__main__":
    main()
