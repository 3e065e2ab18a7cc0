"""Reading a split of a `datasets` dataset given by Hub id or by a folder written with `save_to_disk`, and the
command-line flags that describe a user's dataset (shared by `training/train.py` and `training/evaluate.py`)."""

from __future__ import annotations

from pathlib import Path


def load_dataset_split(name: str, split: str, config: str | None = None, streaming: bool = False):
    """`datasets.load_from_disk(name)[split]` for a saved folder, else `datasets.load_dataset(name, config,
    split=split, streaming=streaming)`. A saved folder is streamed through `to_iterable_dataset()`."""
    import datasets

    path = Path(name)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{path} has no split {split!r}; it has {list(data)}")
            data = data[split]
        return data.to_iterable_dataset() if streaming else data
    return datasets.load_dataset(name, config, split=split, streaming=streaming)


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


__all__ = ["add_dataset_arguments", "load_dataset_split"]
