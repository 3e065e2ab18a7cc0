"""`otseg-segment`: segment images with a saved OTSeg or ZegOT model from the command line.

    otseg-segment IMAGE [IMAGE ...] --model DIR [--labels cat dog grass ...] --out DIR

For every image, writes to --out:
    <name>_overlay.png  the image with the classes coloured in, and a legend of the classes found;
    <name>_labels.png   the label map: a palette PNG whose pixel values are indices into the label list
                        (16-bit greyscale PNG above 255 labels);
and once, legend.json: the label list with each label's colour.
Without --labels the model's own classes are used. With --threshold T, pixels whose best class probability is
below T stay unlabelled (index 255 in the label map, not coloured in the overlay).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

# only what `--help` and usage errors need: torch and transformers are imported after the arguments are parsed
from .conventions import HelpFormatter, add_debug_argument, model_source, quiet_libraries, run_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-segment", description=__doc__, formatter_class=HelpFormatter
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
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="leave pixels whose best class probability is below this unlabelled (0: label every pixel)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def build_pipeline(args: argparse.Namespace):
    from transformers import AutoModelForSemanticSegmentation

    from ..model.image_processing_otseg import OTSegImageProcessor
    from ..model.modeling_otseg import OTSegForSemanticSegmentation
    from ..model.modeling_zegot import ZegOTForSemanticSegmentation
    from ..model.pipeline_otseg import OTSegImageSegmentationPipeline, OTSegZeroShotImageSegmentationPipeline
    from ..model.processing_otseg import check_class_names, load_tokenizer

    source = model_source(args.model, "--model")
    model = AutoModelForSemanticSegmentation.from_pretrained(source).eval()  # classes registered by otseg_hf
    if not isinstance(model, (OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation)):
        raise ValueError(
            f"{args.model} holds a {type(model).__name__}, not an OTSeg or ZegOT model"
        )
    try:
        image_processor = OTSegImageProcessor.from_pretrained(source)
    except OSError:
        vision = model.config.clip_config.vision_config
        image_processor = OTSegImageProcessor(
            size={"shortest_edge": vision.image_size}, size_divisor=vision.patch_size
        )
    if args.longest_edge:
        size = {key: value for key, value in dict(image_processor.size).items() if key in ("shortest_edge",)}
        if not size:
            raise ValueError(
                "--longest-edge needs a model whose image processor keeps the aspect ratio"
            )
        image_processor.size = {**size, "longest_edge": args.longest_edge}
    if args.labels is None:
        return OTSegImageSegmentationPipeline(
            model=model, image_processor=image_processor, device=args.device
        )
    try:
        labels = check_class_names(args.labels)
    except ValueError as error:
        raise ValueError(f"--labels: {error}") from error
    tokenizer = None
    if any(label not in model.config.label2id for label in labels):
        source = args.tokenizer or args.model
        tokenizer = load_tokenizer(source)
        if tokenizer is None:
            raise ValueError(
                f"labels other than the model's classes need a tokenizer, and none was found at "
                f"{source!r}; pass --tokenizer"
            )
    return OTSegZeroShotImageSegmentationPipeline(
        model=model, image_processor=image_processor, tokenizer=tokenizer, device=args.device
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads or anything is written."""
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be a probability in [0, 1] (0 = off), got {args.threshold}")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise ValueError(f"no such image file: {', '.join(missing)}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder (created if needed)")
    for flag, value in (("--window-size", args.window_size), ("--stride", args.stride),
                        ("--longest-edge", args.longest_edge)):  # fmt: skip
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.window_size and args.stride and args.stride > args.window_size:
        raise ValueError(
            f"--stride {args.stride} is larger than --window-size {args.window_size}: pixels between windows "
            "would get no prediction"
        )
    check_device(args.device)
    from ..hub.checks import check_model_folder

    check_model_folder(args.model)


def check_device(device: str) -> None:
    """A torch device that exists here (`cuda:0` without CUDA is refused before the model loads)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"--device {device!r} is not a torch device ({error})") from None
    if parsed.type == "cuda" and (
        not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()
    ):
        where = "CUDA is not available here" if not torch.cuda.is_available() else "no such GPU"
        raise ValueError(f"--device {device}: {where}; use --device cpu")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_arguments(args)  # the numbers and paths first: a mistake there is reported before torch loads
    import numpy as np
    import PIL.Image
    from tqdm.auto import tqdm

    from ..app.drawing import label_map_image, overlay, palette, segments_to_label_map
    from ..model.sliding_window import check_window

    quiet_libraries()
    segmenter = build_pipeline(args)
    labels = args.labels or segmenter.model.config.class_names
    call = {"window_size": args.window_size, "stride": args.stride, "threshold": args.threshold or None}
    if args.labels is not None:
        call["candidate_labels"] = labels
    call = {key: value for key, value in call.items() if value is not None}
    config = segmenter.model.config  # the model's defaults for what was not given
    check_window(args.window_size or config.inference_window_size, args.stride or config.inference_window_stride)

    args.out.mkdir(parents=True, exist_ok=True)
    colors = palette(len(labels))
    legend = [{"index": i, "label": label, "color": colors[i].tolist()} for i, label in enumerate(labels)]
    (args.out / "legend.json").write_text(json.dumps(legend, indent=2) + "\n")
    used_names = set()
    progress = tqdm(
        args.images, desc="segmenting", unit="image", disable=args.no_progress or len(args.images) < 2
    )
    failed = []
    for path in progress:
        try:
            rgb = segmenter.image_processor.to_rgb(PIL.Image.open(path))  # upright (EXIF), RGB, any bit depth
        except (OSError, ValueError) as error:  # unreadable: report it, go on with the others
            failed.append(f"{path} ({error})")
            print(f"otseg-segment: skipped {path}: {error}", file=sys.stderr)
            continue
        image = PIL.Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
        label_map = segments_to_label_map(segmenter(rgb, **call), labels, rgb.shape[:2])
        name = path.stem
        suffix = 1
        while name in used_names:
            name, suffix = f"{path.stem}_{suffix}", suffix + 1
        used_names.add(name)
        label_map_image(label_map, len(labels)).save(args.out / f"{name}_labels.png")
        overlay(image, label_map, labels, args.alpha).save(args.out / f"{name}_overlay.png")
    if failed:
        raise ValueError(
            f"wrote {len(args.images) - len(failed)} of {len(args.images)} images to {args.out}; could not read "
            + ", ".join(failed)
        )
    print(f"wrote {len(args.images)} overlay(s) and label map(s) to {args.out}", file=sys.stderr)


def cli(argv: Sequence[str] | None = None) -> None:
    """The console script: errors as one line and exit code 2 (see `otseg_hf.cli.conventions`)."""
    run_cli(main, "otseg-segment", argv)


if __name__ == "__main__":
    cli()
