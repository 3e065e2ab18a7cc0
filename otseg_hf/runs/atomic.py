"""Writes that a kill cannot leave half done: files and folders are written beside their place and renamed in.

A rename within one file system is atomic: a reader sees the old entry or the new one, never a mix. Everything
is flushed to disk (`fsync`) before the rename, so a power cut does not leave a renamed but empty file either.

- [`atomic_write_text`] / [`atomic_write_json`]: one file.
- [`staged_folder`]: a folder written under a hidden staging name, renamed into place when complete.
- [`publish_folder`]: the files of a staged folder moved into an existing folder (one that holds other things,
  like a training run's output folder) with a marker file (`config.json`) removed first and moved in last, so
  the folder loads only when every file in it is new.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

STAGING_SUFFIX = ".partial"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """`fsync_path` on every file and folder under `folder`, then on `folder`."""
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it and a rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value, **dumps_kwargs) -> Path:
    return atomic_write_text(path, json.dumps(value, **dumps_kwargs) + "\n")


def staging_path(path: str | os.PathLike) -> Path:
    """The hidden sibling a folder is written under before it is renamed to `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}{STAGING_SUFFIX}")


def begin_staging(path: str | os.PathLike) -> Path:
    """An empty staging folder for `path` (a leftover one from a killed write is removed)."""
    staging = staging_path(path)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit_staging(path: str | os.PathLike) -> Path:
    """Flush the staging folder of `path` and rename it to `path`. An existing `path` is first renamed aside
    and removed after: a kill in between leaves no `path` (and the new folder under its staging name), never a
    mix of two versions."""
    path = Path(path)
    staging = staging_path(path)
    fsync_tree(staging)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
        os.rename(staging, path)
        shutil.rmtree(old)
    else:
        os.rename(staging, path)
    fsync_path(path.parent)
    return path


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: the body writes into the yielded staging folder; on a clean exit it becomes
    `path` (see `commit_staging`), on an exception it is removed and `path` is untouched.

        with staged_folder(out / "step_8") as folder:
            save_file(state, folder / "model.safetensors")
    """
    staging = begin_staging(path)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(path)


def publish_folder(
    staging: str | os.PathLike, target: str | os.PathLike, marker: str = "config.json", keep=()
) -> Path:
    """Move the files of `staging` into the existing folder `target`, safely for readers that need `marker`.

    1. `target/marker` is removed: from here on the folder does not load.
    2. Every other top-level file of `target` not named in `keep` (a previous version's files) is removed.
    3. The files of `staging` are moved in, `marker` last. `staging` is removed.

    A kill at any point leaves a folder without `marker` (does not load) or a complete new one.

    Args:
        staging: a flat folder of files (from [`begin_staging`]).
        target: the folder to publish into (created if needed).
        marker: the file whose presence makes `target` a loadable folder.
        keep: names of top-level entries of `target` that are not part of the published folder and stay.
    """
    staging, target = Path(staging), Path(target)
    names = sorted(p.name for p in staging.iterdir())
    if marker not in names:
        raise ValueError(f"{staging} has no {marker}: nothing to publish")
    if any((staging / name).is_dir() for name in names):
        raise ValueError(f"{staging} holds folders; publish_folder moves flat folders of files only")
    fsync_tree(staging)
    target.mkdir(parents=True, exist_ok=True)
    if (target / marker).exists():
        (target / marker).unlink()
        fsync_path(target)
    keep = {*keep, staging.name}
    for entry in target.iterdir():
        if entry.name not in keep and entry.name != marker and entry.is_file() and not entry.name.startswith("."):
            entry.unlink()
    for name in [n for n in names if n != marker] + [marker]:
        os.replace(staging / name, target / name)
        if name == marker:
            fsync_path(target)
    staging.rmdir()
    fsync_path(target)
    return target


__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "begin_staging",
    "commit_staging",
    "fsync_path",
    "fsync_tree",
    "publish_folder",
    "staged_folder",
    "staging_path",
]
