"""Command-line flags shared by the scripts (`training/train.py`, `training/evaluate.py`)."""

from __future__ import annotations

import difflib
import json


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


def parse_overrides(items: list[str], config_class=None) -> dict:
    """FIELD=VALUE pairs, VALUE read as JSON (a bare word is a string). With `config_class`, a FIELD that is
    not one of its fields raises a `ValueError` (a typo would otherwise be stored and ignored)."""
    fields = set(config_class().to_dict()) if config_class is not None else None
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--model-override wants FIELD=VALUE, got {item!r}")
        if fields is not None and field not in fields:
            close = difflib.get_close_matches(field, sorted(fields), n=3)
            raise ValueError(
                f"--model-override {item!r}: {config_class.__name__} has no field {field!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    return overrides


__all__ = ["add_dataset_arguments", "parse_overrides"]
