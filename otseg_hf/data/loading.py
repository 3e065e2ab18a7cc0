"""Reading a split of a `datasets` dataset given by Hub id or by a folder written with `save_to_disk`."""

from __future__ import annotations

import json
from pathlib import Path


def load_dataset_split(name: str, split: str, config: str | None = None, streaming: bool = False):
    """`datasets.load_from_disk` of the split's folder for a saved folder, else `datasets.load_dataset(name,
    config, split=split, streaming=streaming)`. A saved folder is streamed through `to_iterable_dataset()`.
    A saved split without rows raises a `ValueError` (datasets itself fails with an `IndexError`)."""
    import datasets

    path = Path(name)
    if path.is_dir() and (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise ValueError(f"{path} has no split {split!r}; it has {list(splits)}")
        path = path / split
    if path.is_dir() and (path / "state.json").exists():
        state = json.loads((path / "state.json").read_text())
        if not state.get("_data_files"):
            raise ValueError(f"the split {split!r} of {name} is empty (0 rows)")
        data = datasets.load_from_disk(str(path))
        return data.to_iterable_dataset() if streaming else data
    return datasets.load_dataset(name, config, split=split, streaming=streaming)


__all__ = ["load_dataset_split"]
