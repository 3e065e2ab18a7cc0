"""`otseg-segment`: segment images with a saved OTSeg or ZegOT model from the command line.

    otseg-segment IMAGE [IMAGE ...] --model DIR [--labels cat dog grass ...] --out DIR

For every image, writes to --out:
    <name>_overlay.png  the image with the classes coloured in, and a legend of the classes found;
    <name>_labels.png   the label map: a palette PNG whose pixel values are indices into the label list
                        (16-bit greyscale PNG above 256 labels);
and once, legend.json: the label list with each label's colour.
Without --labels the model's own classes are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from tqdm.auto import tqdm
from transformers import AutoModelForSemanticSegmentation

from ..model.image_processing_otseg import OTSegImageProcessor
from ..model.modeling_otseg import OTSegForSemanticSegmentation
from ..model.modeling_zegot import ZegOTForSemanticSegmentation
from ..model.pipeline_otseg import OTSegImageSegmentationPipeline, OTSegZeroShotImageSegmentationPipeline
from ..model.processing_otseg import check_class_names, load_tokenizer


def palette(num_colors: int) -> np.ndarray:
    """(num_colors, 3) uint8: PASCAL VOC's colour map without its black first entry (bit-interleaved ids)."""
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, color = index + 1, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                color[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colors[index] = color
    return colors


def overlay(
    image: PIL.Image.Image, label_map: np.ndarray, labels: Sequence[str], alpha: float = 0.5
) -> PIL.Image.Image:
    """The image blended with the label colours, and a legend (colour, label, share of the image) at its right
    for the labels present."""
    colors = palette(len(labels))
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1 - alpha) * rgb + alpha * colors[label_map].astype(np.float32)
    picture = PIL.Image.fromarray(np.round(blended).astype(np.uint8))

    present, counts = np.unique(label_map, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    entries = [(int(present[i]), counts[i] / label_map.size) for i in order]
    font = PIL.ImageFont.load_default()
    line, swatch, margin = 16, 12, 6
    texts = [f"{labels[index]} ({share:.0%})" for index, share in entries]
    measure = PIL.ImageDraw.Draw(picture)
    text_width = max(int(measure.textlength(text, font=font)) for text in texts)
    legend_width = margin * 3 + swatch + text_width
    height = max(picture.height, margin * 2 + line * len(entries))
    canvas = PIL.Image.new("RGB", (picture.width + legend_width, height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = PIL.ImageDraw.Draw(canvas)
    for row, ((index, _), text) in enumerate(zip(entries, texts)):
        x, y = picture.width + margin, margin + row * line
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(int(c) for c in colors[index]))
        draw.text((x + swatch + margin, y), text, fill=(0, 0, 0), font=font)
    return canvas


def label_map_image(label_map: np.ndarray, num_labels: int) -> PIL.Image.Image:
    """Palette PNG of class indices (up to 256 labels), else 16-bit greyscale."""
    if num_labels <= 256:
        image = PIL.Image.fromarray(label_map.astype(np.uint8), mode="P")
        image.putpalette(palette(num_labels).flatten().tolist())
        return image
    return PIL.Image.fromarray(label_map.astype(np.uint16))


def segments_to_label_map(segments: list[dict], labels: Sequence[str]) -> np.ndarray:
    """Pipeline output (one binary mask per label found) -> (H, W) array of indices into `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    label_map = None
    for segment in segments:
        mask = np.asarray(segment["mask"]) > 0
        if label_map is None:
            label_map = np.zeros(mask.shape, dtype=np.int64)
        label_map[mask] = index[segment["label"]]
    return label_map


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-segment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--model", required=True, help="OTSeg or ZegOT model folder (or Hub id)")
    parser.add_argument("--labels", nargs="+", default=None, help="vocabulary (default: the model's classes)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if needed)")
    parser.add_argument(
        "--tokenizer", default=None, help="CLIP tokenizer for new labels (default: the model's)"
    )
    parser.add_argument("--window-size", type=int, default=None, help="sliding window (default: the model's)")
    parser.add_argument(
        "--stride", type=int, default=None, help="sliding window stride (default: the model's)"
    )
    parser.add_argument("--longest-edge", type=int, default=None, help="cap on the resized long side")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the colours in the overlay")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def build_pipeline(args: argparse.Namespace):
    model = AutoModelForSemanticSegmentation.from_pretrained(
        args.model
    ).eval()  # classes registered by otseg_hf
    if not isinstance(model, (OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation)):
        raise SystemExit(
            f"otseg-segment: {args.model} holds a {type(model).__name__}, not an OTSeg or ZegOT model"
        )
    try:
        image_processor = OTSegImageProcessor.from_pretrained(args.model)
    except OSError:
        vision = model.config.clip_config.vision_config
        image_processor = OTSegImageProcessor(
            size={"shortest_edge": vision.image_size}, size_divisor=vision.patch_size
        )
    if args.longest_edge:
        size = {key: value for key, value in dict(image_processor.size).items() if key in ("shortest_edge",)}
        if not size:
            raise SystemExit(
                "otseg-segment: --longest-edge needs a model whose image processor keeps the aspect ratio"
            )
        image_processor.size = {**size, "longest_edge": args.longest_edge}
    if args.labels is None:
        return OTSegImageSegmentationPipeline(
            model=model, image_processor=image_processor, device=args.device
        )
    try:
        labels = check_class_names(args.labels)
    except ValueError as error:
        raise SystemExit(f"otseg-segment: --labels: {error}") from error
    tokenizer = None
    if any(label not in model.config.label2id for label in labels):
        source = args.tokenizer or args.model
        tokenizer = load_tokenizer(source)
        if tokenizer is None:
            raise SystemExit(
                f"otseg-segment: labels other than the model's classes need a tokenizer, and none was found at "
                f"{source!r}; pass --tokenizer"
            )
    return OTSegZeroShotImageSegmentationPipeline(
        model=model, image_processor=image_processor, tokenizer=tokenizer, device=args.device
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise SystemExit(f"otseg-segment: --alpha must be in [0, 1], got {args.alpha}")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise SystemExit(f"otseg-segment: no such image file: {', '.join(missing)}")
    segmenter = build_pipeline(args)
    labels = args.labels or segmenter.model.config.class_names
    call = {"window_size": args.window_size, "stride": args.stride}
    if args.labels is not None:
        call["candidate_labels"] = labels
    call = {key: value for key, value in call.items() if value is not None}

    args.out.mkdir(parents=True, exist_ok=True)
    colors = palette(len(labels))
    legend = [{"index": i, "label": label, "color": colors[i].tolist()} for i, label in enumerate(labels)]
    (args.out / "legend.json").write_text(json.dumps(legend, indent=2) + "\n")
    used_names = set()
    progress = tqdm(
        args.images, desc="segmenting", unit="image", disable=args.no_progress or len(args.images) < 2
    )
    for path in progress:
        rgb = segmenter.image_processor.to_rgb(PIL.Image.open(path))  # upright (EXIF), RGB, any bit depth
        image = PIL.Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
        label_map = segments_to_label_map(segmenter(rgb, **call), labels)
        name = path.stem
        suffix = 1
        while name in used_names:
            name, suffix = f"{path.stem}_{suffix}", suffix + 1
        used_names.add(name)
        label_map_image(label_map, len(labels)).save(args.out / f"{name}_labels.png")
        overlay(image, label_map, labels, args.alpha).save(args.out / f"{name}_overlay.png")
    print(f"wrote {len(args.images)} overlay(s) and label map(s) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
