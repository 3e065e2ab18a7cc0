"""`otseg-export`: a Hub-ready folder (code, processor, tokenizer, model card) from a saved OTSeg or ZegOT model.

    otseg-export MODEL_DIR OUT_DIR [--eval-results results.json] [--push-to-hub user/repo]
    (or: python -m otseg_hf.cli.export ...)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForSemanticSegmentation

from ..hub.folders import MODEL_CLASSES, default_image_processor, push_otseg_folder, save_otseg_folder
from ..model.image_processing_otseg import OTSegImageProcessor
from ..model.processing_otseg import load_tokenizer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="folder (or Hub id) of a saved OTSeg or ZegOT model")
    parser.add_argument("out", type=Path, help="folder to write")
    parser.add_argument(
        "--tokenizer", default=None, help="CLIP tokenizer (folder or Hub id); default: the model's"
    )
    parser.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer (own classes only)")
    parser.add_argument(
        "--eval-results", type=Path, default=None, help="JSON file: a dict or a list of dicts"
    )
    parser.add_argument(
        "--shortest-edge", type=int, default=None, help="test-time short side (default: image size)"
    )
    parser.add_argument("--longest-edge", type=int, default=None, help="cap on the long side (default: none)")
    parser.add_argument("--repo-id", default=None, help="Hub id, shown in the card's usage examples")
    parser.add_argument("--model-name", default=None, help="title of the card")
    parser.add_argument("--dataset", action="append", default=[], help="training dataset Hub id (repeatable)")
    parser.add_argument("--license", default="apache-2.0", help="license identifier for the card")
    parser.add_argument("--base-model", default=None, help="Hub id of the CLIP the model was built from")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder to this repo"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = AutoModelForSemanticSegmentation.from_pretrained(args.model)  # classes registered by otseg_hf
    if not isinstance(model, MODEL_CLASSES):
        raise SystemExit(
            f"otseg-export: {args.model} holds a {type(model).__name__}, not an OTSeg or ZegOT model"
        )
    tokenizer = None
    if not args.no_tokenizer:
        source = args.tokenizer or args.model
        tokenizer = load_tokenizer(source)
        if tokenizer is None:
            raise SystemExit(f"no tokenizer at {source!r}; pass --tokenizer or --no-tokenizer")
    image_processor = default_image_processor(model.config)
    if args.shortest_edge or args.longest_edge:
        size = {"shortest_edge": args.shortest_edge or model.config.clip_config.vision_config.image_size}
        if args.longest_edge:
            size["longest_edge"] = args.longest_edge
        image_processor = OTSegImageProcessor(size=size, size_divisor=image_processor.size_divisor)
    eval_results = json.loads(args.eval_results.read_text()) if args.eval_results else None
    folder = save_otseg_folder(
        model,
        args.out,
        tokenizer=tokenizer,
        image_processor=image_processor,
        eval_results=eval_results,
        repo_id=args.repo_id or args.push_to_hub,
        model_name=args.model_name,
        datasets=args.dataset,
        license=args.license,
        base_model=args.base_model,
    )
    print(f"wrote {folder}")
    if args.push_to_hub:
        info = push_otseg_folder(folder, args.push_to_hub, token=args.token, private=args.private or None)
        print(f"pushed to {info.commit_url}")


if __name__ == "__main__":
    main()
