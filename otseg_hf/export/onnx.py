"""ONNX export of the OTSeg / ZegOT inference path: pixel values and class text embeddings in (the vocabulary
stays open), logits out.

    from otseg_hf.export.onnx import export_onnx
    export_onnx(model, "model.onnx")   # then onnxruntime.InferenceSession("model.onnx")

Needs the `onnx` extra (`pip install "otseg-hf[onnx]"`: onnx, onnxscript, onnxruntime). The graph is traced by
`torch.onnx.export(..., dynamo=True)`; Sinkhorn's stopping rule becomes an ONNX `Loop` (see
`otseg_hf.model.sinkhorn.log_sinkhorn`), so the graph runs the same iterations as PyTorch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

INPUT_NAMES = ("pixel_values", "text_embeds")
OUTPUT_NAMES = ("logits",)


class _LogitsOnly(nn.Module):
    """`model(pixel_values, text_embeds=...).logits` as a plain two-tensor function."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, text_embeds=text_embeds).logits


def example_inputs(model: nn.Module, batch: int = 1, num_classes: int | None = None) -> tuple[torch.Tensor, ...]:
    """Pixel values at the model's inference size and its cached class text embeddings (K, N, D)."""
    config = model.config
    size = config.clip_config.vision_config.image_size
    param = next(model.parameters())
    text = model.class_text_embeds.detach()
    if num_classes is not None:
        text = text[:num_classes]
    if text.shape[0] < 2:  # torch.export would fix a size-1 dimension
        text = text.expand(2, -1, -1)
    if text.shape[1] < 2:  # torch.export would fix a size-1 dimension
        text = text.expand(-1, 2, -1)
    pixel_values = torch.randn(batch, config.clip_config.vision_config.num_channels, size, size, generator=torch.Generator().manual_seed(0))
    return pixel_values.to(param.device, param.dtype), text.to(param.device, param.dtype)


def export_onnx(
    model: nn.Module, path: str | os.PathLike, batch_size: int | None = 1, opset: int | None = None
) -> Path:
    """Write the ONNX graph of `model`'s inference path (eval mode, logits at feature resolution) to `path`.

    Inputs: `pixel_values` (batch, 3, height, width), float; `text_embeds` (classes, prompts, projection_dim),
    L2-normalised prompt embeddings (`model.get_text_embeddings(...)`, or `model.class_text_embeds`). Output:
    `logits` (batch, classes, height / patch, width / patch). The class and prompt (>= 2) counts are dynamic;
    the batch is `batch_size`, or dynamic (any batch of at least 1) with `batch_size=None`; the image size is the
    one of `model.config.clip_config.vision_config.image_size` (the sliding-window size). Every image's Sinkhorn
    problems stop on their own convergence (per-image stopping, as in PyTorch at inference), so a dynamic batch
    gives each image the logits it gets alone.

    Raises ImportError (naming the extra) when onnx or onnxscript is missing; the file is written atomically.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError('ONNX export needs the onnx extra: pip install "otseg-hf[onnx]"') from error
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX file name must end in .onnx, got {str(path)!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, or None for a dynamic batch, got {batch_size!r}")
    if not path.parent.is_dir():
        raise ValueError(f"the folder {str(path.parent)!r} does not exist")
    was_training = model.training
    model.eval()
    try:
        inputs = example_inputs(model, batch=2 if batch_size is None else batch_size)  # a size-1 dim is fixed
        classes = torch.export.Dim("classes", min=2, max=4096)
        prompts = torch.export.Dim("prompts", min=2, max=64)
        pixels = None if batch_size is not None else {0: torch.export.Dim("batch", min=1, max=1024)}
        dynamic = {"pixel_values": pixels, "text_embeds": {0: classes, 1: prompts}}
        with torch.no_grad():
            program = torch.onnx.export(
                _LogitsOnly(model).eval(),
                inputs,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=dynamic,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            tmp_path = Path(tmp) / path.name
            program.save(str(tmp_path))
            os.replace(tmp_path, path)
    finally:
        model.train(was_training)
    return path


__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "example_inputs", "export_onnx"]
