"""Command-line flags shared by the scripts (`training/train.py`, `training/evaluate.py`)."""

from __future__ import annotations


def add_dataset_arguments(parser, dataset_name_help: str, class_names_help: str, unseen_help: str) -> None:
    """The flags of a user's dataset: where it is, its columns, its labels and its zero-shot split."""
    parser.add_argument("--dataset-name", help=dataset_name_help)
    parser.add_argument("--dataset-config", help="configuration name of a Hub dataset")
    parser.add_argument("--image-column", default="image", help="column of the images")
    parser.add_argument("--label-column", default="label", help="column of the label maps (class ids)")
    parser.add_argument(
        "--reduce-labels", action="store_true", help="label 0 is an ignored background: 0->255, k->k-1"
    )
    parser.add_argument("--class-names", nargs="+", help=class_names_help)
    parser.add_argument("--unseen-label-ids", type=int, nargs="*", help=unseen_help)


__all__ = ["add_dataset_arguments"]
