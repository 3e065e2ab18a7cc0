"""Safe readers of the files the converter takes: nothing read runs code.

Reading files safely:
- reference `.pth`: `torch.load(weights_only=True)`; numpy scalars/arrays that mmcv may leave in
  the checkpoint's `meta` are allowed, nothing else outside torch's allow-list.
- OpenAI CLIP `.pt`: a TorchScript archive. `torch.jit.load` has no safe mode (a TorchScript
  model is a program, see PyTorch's SECURITY.md and pytorch/pytorch#143403), and
  `torch.load(weights_only=True)` refuses TorchScript archives. We therefore read the archive's
  `data.pkl` with a restricted unpickler that only rebuilds tensors and inert attribute holders:
  no TorchScript code is compiled or run, no Python global outside a short allow-list is resolved.
- transformers CLIP folder: `CLIPModel.from_pretrained` (safetensors, or torch's weights-only load).
- text embeddings `.npy`: `numpy.load(allow_pickle=False)`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.configuration_otseg import OTSegConfig
from ..model.processing_otseg import load_tokenizer
from .keys import ReferenceCheckpointError, _apply_rules, _check_tensors, _expected_shapes, _text_rules
from .shapes import text_config_from_openai

# ----------------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------------
# numpy objects mmcv may leave in a checkpoint's meta; data only (object arrays go through the same
# restricted unpickler element by element)
_NUMPY_DATA_GLOBALS = {
    f"{core}.{name}"
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("scalar", "_reconstruct")
} | {"numpy.ndarray", "numpy.dtype"}


def _numpy_dtype_classes() -> list[type]:
    """numpy's dtype classes (`numpy.dtypes.Float64DType`, ...) that a pickled dtype is built from."""
    dtypes = getattr(np, "dtypes", None)
    return (
        [
            cls
            for name, cls in vars(dtypes).items()
            if isinstance(cls, type) and name.endswith("DType") and name != "ObjectDType"
        ]
        if dtypes is not None
        else []
    )


def _resolve(qualified_name: str):
    module, _, name = qualified_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def read_reference_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `state_dict` of a reference mmsegmentation checkpoint, read without running pickled code.

    Raises:
        ReferenceCheckpointError: the file cannot be read with `weights_only=True` (it holds objects
            other than tensors and plain data), is not a torch file, or holds no OTSeg state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    not_a_checkpoint = f"{str(path)!r} is not a PyTorch checkpoint"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path)
        if not unsafe:  # not a pickle torch can read at all
            raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(error)})") from None
        if not set(unsafe) <= _NUMPY_DATA_GLOBALS:
            raise ReferenceCheckpointError(
                f"{str(path)!r} was refused by torch's weights-only loader: it references {', '.join(unsafe)}, "
                "not only tensors and plain data. It is not loaded (unpickling it could run code); an authors' "
                "checkpoint holds only tensors, numbers and strings"
            ) from None
        try:
            with torch.serialization.safe_globals(
                [_resolve(name) for name in unsafe] + _numpy_dtype_classes()
            ):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as retry_error:
            raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(retry_error)})") from None
    except Exception as error:  # bad magic number, not a zip, truncated, ...
        raise ReferenceCheckpointError(f"{not_a_checkpoint} ({_brief(error)})") from None
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict) or not any(
        isinstance(k, str) and k.startswith(("backbone.", "decode_head.")) for k in state_dict
    ):
        raise ReferenceCheckpointError(
            f"{str(path)!r} holds no OTSeg state dict (expected a dict with 'state_dict' whose keys start with "
            "'backbone.' and 'decode_head.')"
        )
    _check_tensors(state_dict, f"{str(path)!r} state_dict")
    return dict(state_dict)


def _brief(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


# -- OpenAI TorchScript archives ----------------------------------------------------------------------
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Inert stand-in for a TorchScript object (a module): holds the attributes it was pickled with."""

    def __init__(self, *args):
        self.attributes = {}

    def __setstate__(self, state):
        self.attributes = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage, offset, size, stride, *_):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor without storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _identity(value, *_):
    return value


class _ArchiveUnpickler(pickle.Unpickler):
    """Restricted unpickler for a TorchScript archive's data.pkl (see the module docstring)."""

    _GLOBALS = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("collections", "OrderedDict"): dict,
        ("torch.jit._pickle", "build_intlist"): _identity,
        ("torch.jit._pickle", "build_doublelist"): _identity,
        ("torch.jit._pickle", "build_boollist"): _identity,
        ("torch.jit._pickle", "build_tensorlist"): _identity,
        ("torch.jit._pickle", "restore_type_tag"): _identity,
    }

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {})
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights archive")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not re.fullmatch(r"\w+", str(key)):
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        if key not in self.storages:
            try:
                data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key!r} missing from the archive") from None
            dtype = storage_type.dtype
            if len(data) != int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(
                    f"storage {key!r} has {len(data)} bytes, expected {numel} x {dtype}"
                )
            self.storages[key] = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _named_tensors(
    obj: _ScriptObject, prefix: str = "", seen: frozenset = frozenset()
) -> dict[str, torch.Tensor]:
    """Tensor attributes of a module tree, dotted names like `state_dict()`'s."""
    if id(obj) in seen:
        raise ReferenceCheckpointError(f"the archive's module tree has a cycle at {prefix.rstrip('.')!r}")
    seen = seen | {id(obj)}
    tensors = {}
    for name, value in obj.attributes.items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + str(name)] = value.clone()
        elif isinstance(value, _ScriptObject):
            tensors.update(_named_tensors(value, f"{prefix}{name}.", seen))
    return tensors


def load_openai_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI CLIP `.pt` TorchScript archive, named like `torch.jit.load(path).state_dict()`.

    Reads the archive's `data.pkl` with a restricted unpickler (nothing is compiled or executed; see the
    module docstring). Returns every tensor attribute, so also a few non-parameter ones.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCheckpointError(f"CLIP file {str(path)!r} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise ReferenceCheckpointError(f"{str(path)!r} is not a TorchScript archive (not a zip file)")
    with zipfile.ZipFile(path) as archive:
        records = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(records) != 1:
            raise ReferenceCheckpointError(f"{str(path)!r} is not a TorchScript archive (no single data.pkl)")
        prefix = records[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ReferenceCheckpointError(f"{str(path)!r} stores big-endian tensors; not supported")
        try:
            with archive.open(records[0]) as file:
                root = _ArchiveUnpickler(file, archive, prefix).load()
        except Exception as error:
            raise ReferenceCheckpointError(f"{str(path)!r} could not be read safely: {error}") from None
    if not isinstance(root, _ScriptObject):
        raise ReferenceCheckpointError(f"{str(path)!r} does not hold a TorchScript module")
    return _named_tensors(root)


@dataclass
class TextTower:
    """A CLIP text tower in our names (`clip.text_model.*`, `clip.text_projection.weight`,
    `clip.logit_scale`) with its `CLIPTextConfig` fields."""

    state_dict: dict[str, torch.Tensor]
    text_config: dict


def openai_text_tower(openai_state_dict: dict[str, torch.Tensor], head_dim: int = 64) -> TextTower:
    """The text tower of an OpenAI CLIP state dict (e.g. from `load_openai_clip_state_dict`)."""
    text_config = text_config_from_openai(openai_state_dict, "", head_dim)
    config = OTSegConfig(
        clip_config=dict(text_config=text_config, projection_dim=text_config["projection_dim"])
    )
    rules = _text_rules(config, prefix="")
    source = {
        rule.reference: openai_state_dict[rule.reference]
        for rule in rules
        if rule.reference in openai_state_dict
    }
    state_dict = _apply_rules(rules, source, _expected_shapes(config), "OpenAI CLIP text tower")
    if "logit_scale" in openai_state_dict:
        state_dict["clip.logit_scale"] = openai_state_dict["logit_scale"]
    return TextTower({k: v.float() for k, v in state_dict.items()}, text_config)


def transformers_text_tower(path: str | os.PathLike) -> tuple[TextTower, object | None]:
    """The text tower of a transformers CLIP folder, and its tokenizer when the folder has one."""
    from transformers import CLIPModel

    try:
        clip = CLIPModel.from_pretrained(path)
    except Exception as error:
        raise ReferenceCheckpointError(f"{str(path)!r} is not a transformers CLIP folder: {error}") from None
    state_dict = {
        f"clip.{k}": v.float()
        for k, v in clip.state_dict().items()
        if k.startswith("text_model.") or k in ("text_projection.weight", "logit_scale")
    }
    tokenizer = load_tokenizer(path)
    return TextTower(state_dict, clip.config.text_config.to_dict()), tokenizer


def load_clip_text_tower(path: str | os.PathLike, head_dim: int = 64) -> tuple[TextTower, object | None]:
    """A text tower from an OpenAI `.pt` file or a transformers CLIP folder (and a tokenizer if found)."""
    if Path(path).is_file():
        return openai_text_tower(load_openai_clip_state_dict(path), head_dim), None
    return transformers_text_tower(path)


def load_text_embeddings(path: str | os.PathLike) -> torch.Tensor:
    """The reference's precomputed prompt embeddings (`*_otseg.npy`, (K, N, D) float16) as float32.

    Used as they are (no re-normalisation), like the reference does.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ReferenceCheckpointError(f"{str(path)!r} is not a .npy array file: {error}") from None
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
        raise ReferenceCheckpointError(
            f"{str(path)!r} holds a {array.dtype} array of shape {array.shape}; expected floats of shape "
            "(classes, prompt templates, projection dim)"
        )
    embeds = torch.from_numpy(array.astype(np.float32))
    if not bool(torch.isfinite(embeds).all()):
        raise ReferenceCheckpointError(f"{str(path)!r} holds non-finite values")
    return embeds


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
