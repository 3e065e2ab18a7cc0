"""Shared fixtures: a tiny random CLIP saved to a temporary folder, and tiny OTSeg models built from it."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings
from transformers import CLIPModel

from otseg_hf import OTSegForSemanticSegmentation
from otseg_hf.testing import char_clip_tokenizer, tiny_clip_config

# Property tests draw the same examples on every run, so CI proves the same thing each time (a
# counterexample found once is kept as an @example). `HYPOTHESIS_PROFILE=explore` draws new ones.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

CLASS_NAMES = ["red circle", "blue square", "green triangle", "yellow star", "striped square"]
SEEN_LABEL_IDS = [0, 1, 2]
# tiny OTSeg: 8x8 patches, 32x32 training size (4x4 grid), 3 vision layers, D = 16
TINY_OVERRIDES = dict(
    num_visual_prompts=3,
    visual_prompt_depth=2,
    decoder_ffn_dim=32,
    inference_window_size=32,
    inference_window_stride=24,
)


@pytest.fixture
def single_thread():
    """One intra-op thread for a test of tiny problems: more threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return char_clip_tokenizer()


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory, tokenizer):
    """A folder made by `CLIPModel.save_pretrained` (+ tokenizer), image size 32, patch 8."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(tiny_clip_config(image_size=32, patch_size=8)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def make_model(tiny_clip_dir):
    """Factory: `make_model(seen_label_ids=..., transductive=..., **config_overrides)` -> eval-mode model."""

    def make(class_names=CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, transductive=False, seed=0, **overrides):
        torch.manual_seed(seed)
        kwargs = {**TINY_OVERRIDES, **overrides}
        model = OTSegForSemanticSegmentation.from_clip(
            tiny_clip_dir,
            class_names,
            seen_label_ids=seen_label_ids,
            transductive=transductive,
            image_size=32,
            **kwargs,
        )
        return model.eval()

    return make
