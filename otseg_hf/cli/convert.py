"""Convert an OTSeg reference (mmsegmentation) checkpoint to a Hub-ready transformers folder.

    otseg-convert-reference --checkpoint voc_inductive.pth --dataset voc --setting inductive \\
        --text-embeddings voc12_otseg.npy --out otseg-vit-b16-voc-inductive
    (or: python -m otseg_hf.cli.convert ...)

See `otseg_hf.convert.checkpoint.convert_checkpoint`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# only what `--help` and usage errors need: torch and transformers are imported after the arguments are parsed
from .choices import DATASET_NAMES, SETTING_ALIASES, SETTINGS
from .conventions import HelpFormatter, add_debug_argument, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="otseg-convert-reference",
        description="Convert an OTSeg reference (mmsegmentation) checkpoint to a transformers folder.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="the authors' .pth checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASET_NAMES),
        help="dataset preset: class names, unseen ids, templates, window",
    )
    parser.add_argument(
        "--setting",
        required=True,
        choices=SETTINGS + tuple(SETTING_ALIASES),
        help="the checkpoint's training setting (fully-supervised: the same as fully_supervised)",
    )
    parser.add_argument(
        "--text-embeddings", type=Path, help="the reference's precomputed *_otseg.npy (K, N, D)"
    )
    parser.add_argument(
        "--clip",
        help="OpenAI CLIP ViT-B/16 .pt or a transformers CLIP folder: the text tower when the checkpoint has none",
    )
    parser.add_argument(
        "--tokenizer",
        help="CLIP tokenizer (folder or Hub id): computes the class text cache without --text-embeddings, and is "
        "saved with the model for other vocabularies",
    )
    parser.add_argument(
        "--class-names", nargs="+", help="explicit class names, ids 0..K-1 (override --dataset)"
    )
    parser.add_argument("--seen-label-ids", nargs="+", type=int, help="explicit seen class ids")
    parser.add_argument("--prompt-templates", nargs="+", help="explicit prompt templates, each with one {}")
    parser.add_argument("--head-dim", type=int, default=64, help="attention head size of both towers")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ..convert.checkpoint import convert_checkpoint

    try:
        convert_checkpoint(
            args.checkpoint,
            args.out,
            setting=args.setting,
            dataset=args.dataset,
            class_names=args.class_names,
            seen_label_ids=args.seen_label_ids,
            text_embeddings=args.text_embeddings,
            clip=args.clip,
            tokenizer=args.tokenizer,
            prompt_templates=args.prompt_templates,
            head_dim=args.head_dim,
            overwrite=args.overwrite,
        )
    except ValueError as error:  # ReferenceCheckpointError and invalid configurations
        if args.debug:
            raise
        raise SystemExit(f"error: {error}") from None


def cli(argv: list[str] | None = None) -> None:
    """The console script: errors as one line and exit code 2 (see `otseg_hf.cli.conventions`)."""
    run_cli(main, "otseg-convert-reference", argv)


if __name__ == "__main__":
    cli()


__all__ = ["cli", "main", "parse_args"]
