"""ONNX export of the inference path (otseg_hf.export.onnx, `otseg-export --onnx`): onnxruntime's logits agree
with PyTorch's (within 1e-4, the same argmax) on the shipped world model (a dynamic batch: 1 and 3 images from one
export) and on a tiny ZegOT (a fixed batch), and for other vocabularies than the one traced. Exporting takes about a minute per model on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from otseg_hf import OTSegForSemanticSegmentation  # noqa: E402
from otseg_hf.cli import export as export_cli  # noqa: E402
from otseg_hf.export.onnx import export_onnx  # noqa: E402
from otseg_hf.model.modeling_zegot import ZegOTForSemanticSegmentation  # noqa: E402
from tests.conftest import CLASS_NAMES, TINY_OVERRIDES  # noqa: E402

WORLD = Path(__file__).resolve().parent.parent / "otseg_hf" / "world" / "pretrained" / "world-otseg"


def agree(model, path, batch, text_embeds, seed=0):
    """onnxruntime and PyTorch on the same random inputs: (max |difference|, share of equal argmax pixels)."""
    size = model.config.clip_config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(pixels, text_embeds=text_embeds).logits.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixel_values": pixels.numpy(), "text_embeds": text_embeds.numpy()})
    assert logits.shape == expected.shape
    return np.abs(logits - expected).max(), (logits.argmax(1) == expected.argmax(1)).mean()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    model = OTSegForSemanticSegmentation.from_pretrained(WORLD).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "world-otseg.onnx", batch_size=None)


@pytest.mark.parametrize(("batch", "seed"), [(3, 0), (3, 1), (1, 0)])
def test_world_model_logits_and_argmax_agree(world, batch, seed):
    """One export with a dynamic batch runs batches of 3 and of 1 (each image stops its Sinkhorn iterations on its
    own, in the graph as in PyTorch)."""
    model, path = world
    difference, same = agree(model, path, batch, model.class_text_embeds.detach(), seed=seed)
    assert difference < 1e-4 and same == 1.0


def test_world_model_takes_another_vocabulary(world):
    """The text embeddings are an input: fewer classes, other prompts."""
    model, path = world
    text = model.class_text_embeds.detach()
    other = torch.nn.functional.normalize(text[:7] + 0.3 * torch.randn(text[:7].shape), dim=-1)
    difference, same = agree(model, path, 3, other, seed=2)
    assert difference < 1e-4 and same == 1.0


def test_zegot_logits_and_argmax_agree(tiny_clip_dir, tmp_path):
    torch.manual_seed(0)
    model = ZegOTForSemanticSegmentation.from_clip(
        tiny_clip_dir, CLASS_NAMES, seen_label_ids=[0, 1, 2], image_size=32, **TINY_OVERRIDES
    ).eval()
    path = export_onnx(model, tmp_path / "zegot.onnx")
    difference, same = agree(model, path, 1, model.class_text_embeds.detach())
    assert difference < 1e-4 and same == 1.0


def test_cli_writes_model_onnx_beside_the_folder(make_model, tiny_clip_dir, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "saved")
    export_cli.main([str(tmp_path / "saved"), str(tmp_path / "out"), "--tokenizer", str(tiny_clip_dir), "--onnx"])
    difference, same = agree(model, tmp_path / "out" / "model.onnx", 1, model.class_text_embeds.detach())
    assert difference < 1e-4 and same == 1.0


@pytest.mark.parametrize(("name", "message"), [("model.pt", "must end in .onnx"), ("missing/m.onnx", "does not exist")])
def test_rejects_bad_paths_before_work(make_model, tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(make_model(), tmp_path / name)
