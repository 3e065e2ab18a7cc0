"""Half precision end to end: `from_pretrained(..., dtype=...)` and `pipeline(..., dtype=...)` give one dtype
everywhere (CLIP's nested configs pin float32 in saved folders), bfloat16 and float16 label maps agree with
float32 on >= 99 % of the shipped world model's pixels, and Sinkhorn solves in float32 under autocast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

import otseg_hf  # noqa: F401  (registers the pipelines)
from otseg_hf import OTSegForSemanticSegmentation
from otseg_hf.model.image_processing_otseg import OTSegImageProcessor
from otseg_hf.model.sinkhorn import log_sinkhorn
from otseg_hf.world.demo import images_with_unseen_classes

WORLD = Path(__file__).resolve().parent.parent / "otseg_hf" / "world" / "pretrained" / "world-otseg"
HALF = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def world_images():
    processor = OTSegImageProcessor.from_pretrained(WORLD)
    images = [image for image, _ in images_with_unseen_classes(16)]
    return processor, processor(images=images, return_tensors="pt")["pixel_values"]


def label_maps(model, processor, pixel_values):
    with torch.no_grad():
        logits = model(pixel_values.to(model.dtype)).logits.float()
    sizes = [pixel_values.shape[-2:]] * len(pixel_values)
    maps = processor.post_process_semantic_segmentation(
        {"logits": logits}, target_sizes=sizes, seen_label_ids=model.config.seen_label_ids
    )
    return torch.stack(maps)


@pytest.mark.parametrize("dtype", HALF)
def test_from_pretrained_dtype_gives_one_dtype_everywhere(dtype):
    model = OTSegForSemanticSegmentation.from_pretrained(WORLD, dtype=dtype)
    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()}
    assert dtypes == {dtype}
    clip_config = model.config.clip_config
    assert clip_config.vision_config.dtype == clip_config.text_config.dtype == dtype
    assert not any(p.requires_grad for p in model.clip.parameters())


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_label_maps_agree_with_float32(dtype, world_images):
    processor, pixel_values = world_images
    reference = label_maps(OTSegForSemanticSegmentation.from_pretrained(WORLD).eval(), processor, pixel_values)
    half = label_maps(OTSegForSemanticSegmentation.from_pretrained(WORLD, dtype=dtype).eval(), processor, pixel_values)
    agreement = (half == reference).float().mean().item()
    assert agreement >= 0.99, f"{dtype}: {agreement:.4f} of the pixels agree with float32"


def test_pipeline_accepts_a_dtype():
    segmenter = pipeline("image-segmentation", model=str(WORLD), dtype=torch.bfloat16)
    assert segmenter.model.dtype == torch.bfloat16
    image = images_with_unseen_classes(1)[0][0]
    segments = segmenter(image)
    assert segments and all(np.asarray(s["mask"]).shape == image.shape[:2] for s in segments)


@pytest.mark.parametrize("dtype", HALF)
def test_sinkhorn_solves_in_float32_under_autocast(dtype):
    gen = torch.Generator().manual_seed(0)
    cost = (2 * torch.rand(3, 32, 4, generator=gen)).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        result = log_sinkhorn(cost, 0.05, return_info=True)
    assert result.plan.dtype == result.u.dtype == torch.float32
    expected = log_sinkhorn(cost.float(), 0.05, return_info=True)
    assert result.n_iter == expected.n_iter
    assert torch.equal(result.plan, expected.plan)
