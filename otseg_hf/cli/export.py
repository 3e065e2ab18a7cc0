"""`otseg-export`: a Hub-ready folder (code, processor, tokenizer, model card) from a saved OTSeg or ZegOT model.

    otseg-export MODEL_DIR OUT_DIR [--eval-results results.json] [--push-to-hub user/repo] [--space SPACE_DIR]
                 [--onnx]
    (or: python -m otseg_hf.cli.export ...)

With --onnx the folder also gets `model.onnx`: the inference path (pixel values and class text embeddings in,
logits out, any batch size; see otseg_hf.export.onnx), which needs the onnx extra (pip install "otseg-hf[onnx]").

The evaluation results are read from --eval-results, else from MODEL_DIR/eval_results.json (what training/train.py
writes) when it exists; both the format training and evaluation write (fractions under `mean_iou`,
`seen_mean_iou`, ...) and the card's own (percentages under `miou_seen`, ...) are accepted. The base model, datasets
and dataset name of MODEL_DIR's own model card are kept unless given here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

# only what `--help` and usage errors need: torch and transformers are imported after the arguments are parsed
from .conventions import HelpFormatter, add_debug_argument, model_source, quiet_libraries, run_cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-export", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("model", help="folder (or Hub id) of a saved OTSeg or ZegOT model")
    parser.add_argument("out", type=Path, help="folder to write")
    parser.add_argument(
        "--tokenizer", default=None, help="CLIP tokenizer (folder or Hub id); default: the model's"
    )
    parser.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer (own classes only)")
    parser.add_argument(
        "--eval-results",
        type=Path,
        default=None,
        help="JSON file: a dict or a list of dicts (default: MODEL/eval_results.json where it exists)",
    )
    parser.add_argument(
        "--dataset-name", default=None, help="dataset name for results that do not name theirs"
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
    parser.add_argument(
        "--space",
        type=Path,
        default=None,
        metavar="SPACE_DIR",
        help="also write a Gradio Space folder (app.py, requirements.txt, README.md) that serves OUT_DIR's model",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write OUT_DIR/model.onnx: pixel values and text embeddings in, logits out (needs the onnx extra)",
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def read_eval_results(args: argparse.Namespace, card_data: dict):
    """The results to put in the card (see the module's docstring), with a dataset name where they lack one."""
    path = args.eval_results
    if path is None:
        default = Path(args.model) / "eval_results.json"
        path = default if default.is_file() else None
    if path is None:
        return None
    if not path.is_file():
        raise ValueError(f"--eval-results {path}: no such file")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--eval-results {path} is not JSON ({error})") from error
    items = [results] if isinstance(results, dict) else results
    if not isinstance(items, list):
        raise ValueError(f"--eval-results {path}: expected a dict or a list of dicts")
    # results that do not name their dataset (older eval_results.json): the flag, the model's card, the folder
    fallback = {
        "dataset_name": args.dataset_name or card_data.get("dataset_name") or Path(args.model).resolve().name,
        "dataset_type": card_data.get("dataset_type") or args.dataset_name or Path(args.model).resolve().name,
    }
    if card_data.get("dataset_split"):
        fallback["dataset_split"] = card_data["dataset_split"]
    return [{**fallback, **item} if isinstance(item, dict) else item for item in items]


def existing_card_data(model: str) -> dict:
    """base_model, datasets and the first result's dataset of MODEL/README.md, where there is one."""
    card_path = Path(model) / "README.md"
    if not card_path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(card_path).data
    except (ValueError, OSError):
        return {}
    found = {"base_model": data.base_model, "datasets": data.datasets}
    if data.eval_results:
        first = data.eval_results[0]
        found.update(
            dataset_name=first.dataset_name, dataset_type=first.dataset_type, dataset_split=first.dataset_split
        )
    return {key: value for key, value in found.items() if value}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    source = model_source(args.model, "MODEL")
    if args.space is not None and args.space.exists():
        raise ValueError(f"--space {args.space} exists already; give a new folder")
    if args.onnx:  # checked before anything is loaded or written
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as error:
            raise ValueError('--onnx needs the onnx extra: pip install "otseg-hf[onnx]"') from error
    card_data = existing_card_data(args.model)
    eval_results = read_eval_results(args, card_data)  # errors before anything is loaded or written
    quiet_libraries()
    from transformers import AutoModelForSemanticSegmentation

    from ..hub.folders import MODEL_CLASSES, default_image_processor, push_otseg_folder, save_otseg_folder
    from ..model.image_processing_otseg import OTSegImageProcessor
    from ..model.processing_otseg import load_tokenizer

    model = AutoModelForSemanticSegmentation.from_pretrained(source)  # classes registered by otseg_hf
    if not isinstance(model, MODEL_CLASSES):
        raise ValueError(f"{args.model} holds a {type(model).__name__}, not an OTSeg or ZegOT model")
    tokenizer = None
    if not args.no_tokenizer:
        tokenizer_source = args.tokenizer or source
        tokenizer = load_tokenizer(tokenizer_source)
        if tokenizer is None:
            raise ValueError(f"no tokenizer at {tokenizer_source!r}; pass --tokenizer or --no-tokenizer")
    image_processor = default_image_processor(model.config)
    if args.shortest_edge or args.longest_edge:
        size = {"shortest_edge": args.shortest_edge or model.config.clip_config.vision_config.image_size}
        if args.longest_edge:
            size["longest_edge"] = args.longest_edge
        image_processor = OTSegImageProcessor(size=size, size_divisor=image_processor.size_divisor)
    folder = save_otseg_folder(
        model,
        args.out,
        tokenizer=tokenizer,
        image_processor=image_processor,
        eval_results=eval_results,
        repo_id=args.repo_id or args.push_to_hub,
        model_name=args.model_name,
        datasets=args.dataset or card_data.get("datasets"),
        license=args.license,
        base_model=args.base_model or card_data.get("base_model"),
    )
    print(f"wrote {folder}")
    if args.onnx:
        from ..export.onnx import export_onnx

        print(f"wrote {export_onnx(model, Path(folder) / 'model.onnx', batch_size=None)}")  # any batch
    if args.space:
        from ..hub.space import write_space_folder

        print(f"wrote the Space {write_space_folder(args.space, folder, title=args.model_name)}")
    if args.push_to_hub:
        info = push_otseg_folder(folder, args.push_to_hub, token=args.token, private=args.private or None)
        print(f"pushed to {info.commit_url}")


def cli(argv: Sequence[str] | None = None) -> None:
    """The console script: errors as one line and exit code 2 (see `otseg_hf.cli.conventions`)."""
    run_cli(main, "otseg-export", argv)


if __name__ == "__main__":
    cli()
