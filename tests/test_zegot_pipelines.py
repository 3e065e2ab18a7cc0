"""ZegOT through the same user paths as OTSeg: Hub folder (card, code, processor), Auto classes, both pipelines
(installed and as remote code in a fresh interpreter without otseg_hf) and the command lines.

References are computed by hand from the model's forward on its own vocabulary: a copy of the model is given the
call's labels with `set_class_names` (the tokenise-and-cache path), so that the pipelines' text path (the
processor's `input_ids` through `get_text_embeddings`) is checked against another one.
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import CLASS_NAMES, SEEN_LABEL_IDS
from huggingface_hub import ModelCard
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    AutoProcessor,
    pipeline,
)

from otseg_hf import (
    OTSegImageProcessor,
    OTSegImageSegmentationPipeline,
    OTSegProcessor,
    OTSegZeroShotImageSegmentationPipeline,
    ZegOTConfig,
    ZegOTForSemanticSegmentation,
)
from otseg_hf.cli.export import main as export_main
from otseg_hf.cli.segment import main as segment_main
from otseg_hf.hub import model_card, save_otseg_folder
from otseg_hf.model.pipeline_otseg import save_pipeline_folder
from tests.pipeline_helpers import (
    PENALTY,
    calibrated_argmax,
    label_map,
    run_without_otseg_hf,
    upsampled_probabilities,
)

TINY = dict(num_text_prompts=3, num_context_tokens=4, inference_window_size=32, inference_window_stride=24)
RESULTS = {
    "dataset_name": "PASCAL VOC 2012",
    "dataset_type": "pascal_voc",
    "dataset_split": "val",
    "miou_seen": 70.0,
    "miou_unseen": 35.0,
}


def build(tiny_clip_dir, seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(seen_label_ids=SEEN_LABEL_IDS, seen_class_penalty=PENALTY, **TINY)
    kwargs.update(overrides)
    return ZegOTForSemanticSegmentation.from_clip(tiny_clip_dir, CLASS_NAMES, image_size=32, **kwargs).eval()


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    return build(tiny_clip_dir)


@pytest.fixture(scope="module")
def image_processor():
    return OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)


@pytest.fixture(scope="module")
def folder(model, tokenizer, image_processor, tmp_path_factory):
    path = tmp_path_factory.mktemp("zegot-folder")
    save_otseg_folder(
        model,
        path,
        tokenizer=tokenizer,
        image_processor=image_processor,
        eval_results=RESULTS,
        repo_id="me/zegot-tiny",
        base_model="openai/clip-vit-base-patch16",
    )
    return path


@pytest.fixture(scope="module")
def square_image():
    """32x32: the processor keeps its size and one 32-pixel window covers it."""
    return np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def reference_probabilities(model, image: np.ndarray, labels=None, tokenizer=None) -> torch.Tensor:
    """(K, H, W) sigmoid of the upsampled logits of a window-sized image; `labels` through `set_class_names`."""
    if labels is not None:
        model = copy.deepcopy(model)
        model.set_class_names(labels, tokenizer)
    return upsampled_probabilities(model, image)


# ----------------------------------------------------------------------------------------------------
# the Hub folder
# ----------------------------------------------------------------------------------------------------
def test_folder_contents(folder):
    files = {path.name for path in folder.iterdir()}
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "configuration_zegot.py",
        "configuration_base.py",
        "modeling_zegot.py",
        "modeling_base.py",
        "sinkhorn.py",
        "image_processing_otseg.py",
        "processing_otseg.py",
        "pipeline_otseg.py",
        "sliding_window.py",
    }
    assert expected <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "zegot"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_zegot.ZegOTConfig",
        "AutoModelForSemanticSegmentation": "modeling_zegot.ZegOTForSemanticSegmentation",
    }
    assert set(config["custom_pipelines"]) == {"image-segmentation", "zero-shot-image-segmentation"}
    # the processor tokenises what ZegOT's text path reads: "[SOS] name . [EOS]", one text per class
    assert json.loads((folder / "processor_config.json").read_text())["prompt_templates"] == ["{}."]
    for code in folder.glob("*.py"):  # remote code: relative imports among the package's modules only
        assert not re.search(r"^\s*(from|import)\s+otseg_hf", code.read_text(), flags=re.MULTILINE), code.name


def test_card_describes_zegot(folder):
    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)
    tags = set(card.data.tags)
    assert {"zegot", "zegot-inductive", "custom_code", "zero-shot-image-segmentation"} <= tags
    assert not any(tag.startswith("otseg") for tag in tags)
    metrics = {result.metric_name: result.metric_value for result in card.data.eval_results}
    assert metrics == {"mIoU(S)": 70.0, "mIoU(U)": 35.0, "hIoU": 46.67}  # 2 * 70 * 35 / 105
    text = card.content
    assert "A **ZegOT** model" in text and "OTSeg+" not in text and "decoder" not in text
    assert "3 learnable text prompts" in text and "(4 context vectors each" in text
    assert "blocks 1, 2, 3 of 3" in text  # feature_layers (-3, -2, -1) of the tiny CLIP's 3 blocks
    assert "red circle, blue square, green triangle" in text and "yellow star, striped square" in text
    assert "lowered by\n0.3" in text or "lowered by 0.3" in text
    assert 'pipeline("zero-shot-image-segmentation", model="me/zegot-tiny", trust_remote_code=True)' in text
    assert "ZegOTForSemanticSegmentation.from_pretrained" in text and "@article{kim2023zegot" in text


def test_cards_of_other_settings(tiny_clip_dir):
    uncalibrated = model_card(build(tiny_clip_dir, seen_class_penalty=0.0).config).content
    assert "lowered by" not in uncalibrated and "the prediction is their\nargmax" in uncalibrated
    transductive = model_card(build(tiny_clip_dir, transductive=True).config).content
    assert "pseudo-labelled" in transductive and "lowered by" not in transductive
    supervised = model_card(build(tiny_clip_dir, seen_label_ids=None).config).content
    assert "fully supervised" in supervised and "unseen (" not in supervised
    last = model_card(build(tiny_clip_dir, feature_layers=[-1], layer_combination="last").config).content
    assert "1 image-encoder\nblocks (block 3 of 3)" in last or "(block 3 of 3)" in last


def test_auto_classes_load_the_folder(folder, model, tokenizer):
    assert type(AutoConfig.from_pretrained(folder)) is ZegOTConfig
    loaded = AutoModelForSemanticSegmentation.from_pretrained(folder)
    assert type(loaded) is ZegOTForSemanticSegmentation
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    assert isinstance(AutoImageProcessor.from_pretrained(folder), OTSegImageProcessor)
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(processor, OTSegProcessor) and processor.prompt_templates == ["{}."]
    # processor(text=...) gives the input_ids ZegOT's forward reads; compared with the tokenizer called by hand
    tokens = processor(text=["cat", "red circle"])
    expected = tokenizer(["cat.", "red circle."], padding=True, return_tensors="pt")
    assert torch.equal(tokens["input_ids"], expected["input_ids"])
    pixel_values = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=1e-5)
        from_ids = loaded(
            pixel_values, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
    reference = copy.deepcopy(model)
    reference.set_class_names(["cat", "red circle"], tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(from_ids.logits, reference(pixel_values).logits, rtol=0, atol=1e-5)


def test_plain_pipelines_build_the_installed_classes(folder):
    """With otseg_hf imported a folder loads like a native model: no trust_remote_code, no pipeline_class."""
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is ZegOTConfig and not hasattr(config, "custom_pipelines")
    for task, pipeline_class in [
        ("image-segmentation", OTSegImageSegmentationPipeline),
        ("zero-shot-image-segmentation", OTSegZeroShotImageSegmentationPipeline),
    ]:
        for load_kwargs in ({}, {"trust_remote_code": True}):  # transformers prefers the imported classes
            segmenter = pipeline(task, model=str(folder), **load_kwargs)
            assert type(segmenter) is pipeline_class and type(segmenter.model) is ZegOTForSemanticSegmentation


# ----------------------------------------------------------------------------------------------------
# pipelines, installed
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["folder", "model"])
def test_image_segmentation_matches_the_reference(source, folder, model, image_processor, square_image):
    if source == "folder":
        segmenter = pipeline("image-segmentation", model=str(folder))
    else:
        segmenter = pipeline("image-segmentation", model=model, image_processor=image_processor)
    assert type(segmenter) is OTSegImageSegmentationPipeline  # not transformers' own segmentation pipeline
    assert type(segmenter.model) is ZegOTForSemanticSegmentation
    segments = segmenter(PIL.Image.fromarray(square_image))
    probabilities = reference_probabilities(model, square_image)
    expected = calibrated_argmax(probabilities, SEEN_LABEL_IDS)
    assert not np.array_equal(expected, probabilities.argmax(0).numpy()), "precondition: the penalty matters"
    np.testing.assert_array_equal(label_map(segments, CLASS_NAMES), expected)
    for segment in segments:
        index = CLASS_NAMES.index(segment["label"])
        mask = torch.from_numpy(np.asarray(segment["mask"]) > 0)
        assert segment["score"] == pytest.approx(float(probabilities[index][mask].mean()), rel=1e-5)


def test_zero_shot_from_the_folder(folder, model, tokenizer, square_image):
    segmenter = pipeline("zero-shot-image-segmentation", model=str(folder))
    assert type(segmenter) is OTSegZeroShotImageSegmentationPipeline
    labels = ["cat", "red circle", "yellow star"]  # new, seen in training (penalised), unseen (not)
    segments = segmenter(square_image, candidate_labels=labels)
    probabilities = reference_probabilities(model, square_image, labels, tokenizer)
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1]))
    other = np.random.default_rng(2).integers(0, 256, size=(20, 50, 3), dtype=np.uint8)
    results = segmenter([square_image, other], candidate_labels="grass, sky, red circle")
    assert len(results) == 2 and results[1][0]["mask"].size == (50, 20)


def test_zero_shot_task_on_loaded_objects(model, image_processor, tokenizer, square_image):
    """`import otseg_hf` registers the task: pipeline(task, model=<ZegOT>, ...) without a folder."""
    segmenter = pipeline(
        "zero-shot-image-segmentation", model=model, image_processor=image_processor, tokenizer=tokenizer
    )
    assert isinstance(segmenter, OTSegZeroShotImageSegmentationPipeline)
    labels = ["purple moon", "blue square"]
    segments = segmenter(square_image, candidate_labels=labels)
    probabilities = reference_probabilities(model, square_image, labels, tokenizer)
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1]))


def test_folder_without_tokenizer(model, image_processor, square_image, tmp_path):
    save_pipeline_folder(tmp_path, model, image_processor)
    assert not (tmp_path / "processor_config.json").exists()
    segmenter = pipeline("zero-shot-image-segmentation", model=str(tmp_path))
    with pytest.raises(ValueError, match="no tokenizer.*'cat'"):
        segmenter(square_image, candidate_labels=["red circle", "cat"])
    labels = ["yellow star", "red circle"]  # the model's own classes need no tokenizer
    segments = segmenter(square_image, candidate_labels=labels)
    probabilities = reference_probabilities(model, square_image)[[3, 0]]
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1]))


def test_a_trained_model_segments_with_current_prompts(tiny_clip_dir, image_processor, square_image):
    """Training changes the prompt contexts; the cache the pipelines read (`get_class_text_embeds`) is refreshed
    lazily, while `.eval()` itself runs nothing."""
    model = build(tiny_clip_dir, seed=1)
    before = model.class_text_embeds.clone()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for step in range(2):
        pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        labels = torch.randint(0, 5, (2, 32, 32), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        fresh = model.encode_prompts(model.class_token_ids, model.class_eos_index)
    assert not torch.allclose(fresh, before, atol=1e-4), "precondition: training moved the prompts"
    assert torch.equal(model.class_text_embeds, before)  # .eval() ran no text encoder
    torch.testing.assert_close(model.get_class_text_embeds(), fresh, rtol=0, atol=1e-6)
    segmenter = OTSegZeroShotImageSegmentationPipeline(model=model, image_processor=image_processor)
    labels = ["striped square", "green triangle", "red circle"]
    segments = segmenter(square_image, candidate_labels=labels)
    probabilities = reference_probabilities(model, square_image)[[4, 2, 0]]
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1, 2]))


# ----------------------------------------------------------------------------------------------------
# remote code: a fresh interpreter where otseg_hf cannot be imported
# ----------------------------------------------------------------------------------------------------
def test_remote_code_without_otseg_hf(folder, model, tmp_path):
    """A fresh interpreter without otseg_hf: refused without trust_remote_code, the folder's own code with it, and
    the same segments as the plain pipelines here, where otseg_hf is imported."""
    remote = run_without_otseg_hf(folder, tmp_path)
    assert remote["classes"] == ["ZegOTForSemanticSegmentation"] * 2
    assert remote["trainable"] == sorted(n for n, p in model.named_parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------
# command lines
# ----------------------------------------------------------------------------------------------------
def test_export_and_segment_commands(model, tokenizer, square_image, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    out = tmp_path / "exported"
    export_main([str(checkpoint), str(out), "--repo-id", "me/zegot-cli"])
    assert "A **ZegOT** model" in (out / "README.md").read_text()
    assert json.loads((out / "processor_config.json").read_text())["prompt_templates"] == ["{}."]

    image = tmp_path / "image.png"
    PIL.Image.fromarray(square_image).save(image)
    labels = ["cat", "red circle", "yellow star"]
    segment_main([str(image), "--model", str(out), "--labels", *labels, "--out", str(tmp_path / "seg")])
    written = np.asarray(PIL.Image.open(tmp_path / "seg" / "image_labels.png"))
    probabilities = reference_probabilities(model, square_image, labels, tokenizer)
    np.testing.assert_array_equal(written, calibrated_argmax(probabilities, [1]))
