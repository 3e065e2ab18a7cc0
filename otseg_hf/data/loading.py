"""Reading a split of a `datasets` dataset given by Hub id or by a folder written with `save_to_disk`."""

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


__all__ = ["load_dataset_split"]
