"""Folders saved before the package was redesigned still load and compute what they computed then.

`tests/fixtures/legacy_folders/` was written by otseg-hf at commit f27802f (the script is `MAKE.txt` beside it): a
tiny OTSeg and a tiny ZegOT folder (save_otseg_folder, with that version's remote code) and the logits that version
computed for a fixed input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSemanticSegmentation, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

import otseg_hf  # noqa: F401  (registers the classes)
from otseg_hf import OTSegForSemanticSegmentation, ZegOTForSemanticSegmentation
from otseg_hf.model.modeling_base import _align_cpu_tensors

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_folders"


@pytest.mark.parametrize(
    ("name", "model_class"), [("otseg", OTSegForSemanticSegmentation), ("zegot", ZegOTForSemanticSegmentation)]
)
def test_legacy_folder_loads_and_gives_the_old_logits(name, model_class):
    expected = load_file(FIXTURES / "expected_logits.safetensors")
    model = AutoModelForSemanticSegmentation.from_pretrained(FIXTURES / name).eval()
    assert type(model) is model_class
    pixel_values = expected["pixel_values"]
    # The old code stopped the Sinkhorn iterations of a batch together, so its logits of a batch of images
    # depend on the batch; today each image stops on its own at inference, as the reference (and the old code)
    # segment one image alone. So: the old code (the folder's own remote code) on one image at a time is the
    # reference, and it reproduces the stored logits of the batch up to that coupling.
    old_class = get_class_from_dynamic_module(f"modeling_{name}.{model_class.__name__}", str(FIXTURES / name))
    old_model = old_class.from_pretrained(FIXTURES / name).eval()
    _align_cpu_tensors(old_model)  # its weights in aligned memory, as today's from_pretrained leaves them
    assert old_class is not model_class
    with torch.no_grad():
        logits = model(pixel_values).logits
        old_alone = torch.cat([old_model(pixel_values[i : i + 1]).logits for i in range(len(pixel_values))])
        old_batched = old_model(pixel_values).logits
    # the stored logits are the old code's on the machine that made the fixture; another CPU (vector ISA) or
    # weights loaded at another memory alignment round the sums differently, so to float32 rounding only
    torch.testing.assert_close(old_batched, expected[f"{name}_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, old_alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, expected[f"{name}_logits"], rtol=0, atol=1e-4)  # the coupling is small


@pytest.mark.parametrize("name", ["otseg", "zegot"])
def test_legacy_folder_runs_in_both_pipelines(name):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    segments = pipeline("image-segmentation", model=str(FIXTURES / name))(image)
    assert segments and {s["label"] for s in segments} <= {"red circle", "blue square", "green triangle", "yellow star"}
    zero_shot = pipeline("zero-shot-image-segmentation", model=str(FIXTURES / name))
    segments = zero_shot(image, candidate_labels=["red circle", "purple cube"])
    assert {s["label"] for s in segments} <= {"red circle", "purple cube"}
    assert all(s["mask"].size == image.size for s in segments)
