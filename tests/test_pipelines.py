"""Both pipelines end to end with a tiny saved model, installed and as remote code (subprocess)."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import CLASS_NAMES, SEEN_LABEL_IDS, TINY_OVERRIDES
from transformers import (
    AutoConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessorPil,
    pipeline,
)
from transformers.pipelines import PIPELINE_REGISTRY, ImageSegmentationPipeline

from otseg_hf import (
    OTSegConfig,
    OTSegForSemanticSegmentation,
    OTSegImageProcessor,
    OTSegImageSegmentationPipeline,
    OTSegZeroShotImageSegmentationPipeline,
)
from otseg_hf.model.pipeline_otseg import otseg_custom_pipelines, save_pipeline_folder
from otseg_hf.registration import route_image_segmentation
from tests.pipeline_helpers import (
    PENALTY,
    calibrated_argmax,
    label_map,
    run_without_otseg_hf,
    summary,
    upsampled_probabilities,
)


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    torch.manual_seed(0)
    model = OTSegForSemanticSegmentation.from_clip(
        tiny_clip_dir,
        CLASS_NAMES,
        seen_label_ids=SEEN_LABEL_IDS,
        image_size=32,
        seen_class_penalty=PENALTY,
        **TINY_OVERRIDES,
    )
    return model.eval()


@pytest.fixture(scope="module")
def image_processor():
    return OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)


@pytest.fixture(scope="module")
def folder(model, image_processor, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("otseg-folder")
    save_pipeline_folder(path, model, image_processor, tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def folder_without_tokenizer(model, image_processor, tmp_path_factory):
    path = tmp_path_factory.mktemp("otseg-no-tokenizer")
    save_pipeline_folder(path, model, image_processor)
    return path


@pytest.fixture(scope="module")
def square_image():
    """32x32: the processor keeps its size and one 32-pixel window covers it."""
    return np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


def reference_probabilities(model, image: np.ndarray, text_embeds=None) -> torch.Tensor:
    return upsampled_probabilities(model, image, text_embeds=text_embeds)


def check_format(segments: list[dict], size: tuple[int, int]):
    for segment in segments:
        assert set(segment) == {"score", "label", "mask"}
        assert isinstance(segment["score"], float) and 0.0 <= segment["score"] <= 1.0
        assert segment["mask"].mode == "L" and segment["mask"].size == (size[1], size[0])


# ----------------------------------------------------------------------------------------------------
# image-segmentation
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, load_kwargs",
    [
        ("folder", {}),  # plain: otseg_hf is imported, as for a native transformers model
        ("folder", {"trust_remote_code": True}),  # transformers prefers the imported classes
        ("folder", {"pipeline_class": OTSegImageSegmentationPipeline}),
        ("model", {}),
    ],
    ids=["folder", "folder-trust_remote_code", "folder-pipeline_class", "model-in-memory"],
)
def test_image_segmentation_matches_the_reference(
    source, load_kwargs, folder, model, image_processor, square_image
):
    if source == "folder":
        segmenter = pipeline("image-segmentation", model=str(folder), **load_kwargs)
    else:
        segmenter = pipeline("image-segmentation", model=model, image_processor=image_processor)
    assert type(segmenter) is OTSegImageSegmentationPipeline
    segments = segmenter(PIL.Image.fromarray(square_image))
    check_format(segments, (32, 32))
    probabilities = reference_probabilities(model, square_image)
    expected = calibrated_argmax(probabilities, SEEN_LABEL_IDS)
    assert not np.array_equal(expected, probabilities.argmax(0).numpy()), "precondition: the penalty matters"
    np.testing.assert_array_equal(label_map(segments, CLASS_NAMES), expected)
    for segment in segments:
        index = CLASS_NAMES.index(segment["label"])
        mask = torch.from_numpy(np.asarray(segment["mask"]) > 0)
        assert segment["score"] == pytest.approx(float(probabilities[index][mask].mean()), rel=1e-5)


def test_image_segmentation_of_other_sizes_and_batches(folder):
    segmenter = pipeline("image-segmentation", model=str(folder))
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, size=(24, 70, 3), dtype=np.uint8)  # resized to 32x93: 3 windows
    tall = rng.integers(0, 256, size=(45, 9, 3), dtype=np.uint8)
    results = segmenter([PIL.Image.fromarray(wide), tall])
    assert len(results) == 2
    check_format(results[0], (24, 70))
    check_format(results[1], (45, 9))
    label_map(results[0], CLASS_NAMES)
    single = segmenter(tall)
    assert [s["label"] for s in single] == [s["label"] for s in results[1]]
    with pytest.raises(ValueError, match="window_batch_size"):
        segmenter([wide, tall], batch_size=2)


def test_installed_config_leaves_custom_pipelines_out(folder, model, tmp_path):
    """config.json names the pipelines for remote code; the imported classes leave the entry out, so pipeline()
    resolves the tasks through its registry (no trust_remote_code) and a plain save writes no dangling entry."""
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == otseg_custom_pipelines()
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is OTSegConfig and config.pipelines_installed
    assert not hasattr(config, "custom_pipelines") and "custom_pipelines" not in config.to_dict()
    assert "custom_pipelines" not in json.loads(config.to_json_string(use_diff=False))
    assert "custom_pipelines" not in OTSegConfig(custom_pipelines=otseg_custom_pipelines()).to_dict()
    OTSegForSemanticSegmentation.from_pretrained(folder).save_pretrained(tmp_path)
    assert not (tmp_path / "pipeline_otseg.py").exists()  # a model alone has no pipeline code to name
    saved = json.loads((folder / "config.json").read_text())
    del saved["custom_pipelines"]
    assert json.loads((tmp_path / "config.json").read_text()) == saved
    assert AutoConfig.from_pretrained(tmp_path).to_diff_dict() == config.to_diff_dict()


def test_both_tasks_build_the_installed_pipelines(folder, monkeypatch):
    questions = []  # transformers asks before it runs a folder's code (e.g. a video processor it infers)
    monkeypatch.setattr("builtins.input", lambda prompt="": questions.append(prompt) or "n")
    for task, pipeline_class in [
        ("image-segmentation", OTSegImageSegmentationPipeline),
        ("zero-shot-image-segmentation", OTSegZeroShotImageSegmentationPipeline),
    ]:
        for load_kwargs in ({}, {"trust_remote_code": True}):
            segmenter = pipeline(task, model=str(folder), **load_kwargs)
            assert type(segmenter) is pipeline_class
            assert type(segmenter.model) is OTSegForSemanticSegmentation
            assert type(segmenter.image_processor) is OTSegImageProcessor
    assert questions == []


def test_image_segmentation_of_other_models_is_transformers_own(tmp_path):
    """The routed "image-segmentation" builds exactly transformers' pipeline for any other model."""
    entry = PIPELINE_REGISTRY.supported_tasks["image-segmentation"]
    assert entry["impl"].__mro__[1] is ImageSegmentationPipeline
    route_image_segmentation(PIPELINE_REGISTRY, model_types=("otseg", "zegot"))  # routing again: a no-op
    assert PIPELINE_REGISTRY.supported_tasks["image-segmentation"]["impl"] is entry["impl"]
    assert entry["default"]["model"][0] == "facebook/detr-resnet-50-panoptic"

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        num_attention_heads=[1, 1],
        decoder_hidden_size=16,
        id2label={0: "sky", 1: "grass", 2: "road"},
    )
    segformer = SegformerForSemanticSegmentation(config).eval()
    image_processor = SegformerImageProcessorPil(size={"height": 32, "width": 32})
    segformer.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    image = PIL.Image.fromarray(np.random.default_rng(4).integers(0, 256, size=(24, 40, 3), dtype=np.uint8))
    expected = summary(ImageSegmentationPipeline(model=segformer, image_processor=image_processor)(image))
    assert {s["label"] for s in expected} == {"sky", "grass", "road"} and expected[0]["score"] is None
    for segmenter in (
        pipeline("image-segmentation", model=str(tmp_path)),
        pipeline("image-segmentation", model=segformer, image_processor=image_processor),
    ):
        assert type(segmenter) is ImageSegmentationPipeline
        assert summary(segmenter(image)) == expected


def test_saved_pipeline_loads_back(folder, square_image, tmp_path):
    segmenter = pipeline("image-segmentation", model=str(folder))
    segmenter.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"] == otseg_custom_pipelines()
    assert (tmp_path / "pipeline_otseg.py").is_file() and (tmp_path / "sliding_window.py").is_file()
    again = pipeline("image-segmentation", model=str(tmp_path))
    first, second = segmenter(square_image), again(square_image)
    assert [(s["label"], s["score"]) for s in first] == [(s["label"], s["score"]) for s in second]


# ----------------------------------------------------------------------------------------------------
# zero-shot-image-segmentation
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["model", "folder"])
def test_zero_shot_calibrates_only_seen_training_classes(
    source, folder, model, image_processor, tokenizer, square_image
):
    """'red circle' was a seen class (penalised), 'yellow star' an unseen one and 'cat' a new one (not)."""
    if source == "model":
        segmenter = pipeline(
            "zero-shot-image-segmentation", model=model, image_processor=image_processor, tokenizer=tokenizer
        )
    else:  # plain: the folder's tokenizer and processor come with it
        segmenter = pipeline("zero-shot-image-segmentation", model=str(folder))
    assert type(segmenter) is OTSegZeroShotImageSegmentationPipeline  # the task registered by otseg_hf
    labels = ["cat", "red circle", "yellow star"]
    segments = segmenter(square_image, candidate_labels=labels)
    check_format(segments, (32, 32))
    prompts = [template.format("cat") for template in model.config.prompt_templates]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        cat = model.get_text_embeddings(tokens["input_ids"], tokens["attention_mask"])
    text_embeds = torch.cat([cat, model.class_text_embeds[[0, 3]]])
    probabilities = reference_probabilities(model, square_image, text_embeds)
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1]))
    for segment in segments:
        mask = torch.from_numpy(np.asarray(segment["mask"]) > 0)
        expected = float(probabilities[labels.index(segment["label"])][mask].mean())
        assert segment["score"] == pytest.approx(expected, rel=1e-5)


def test_zero_shot_batches_and_embeds_the_labels_once(folder, square_image, monkeypatch):
    segmenter = pipeline("zero-shot-image-segmentation", model=str(folder))
    calls = []
    original = segmenter.model.get_text_embeddings
    monkeypatch.setattr(
        segmenter.model, "get_text_embeddings", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    other = np.random.default_rng(2).integers(0, 256, size=(20, 50, 3), dtype=np.uint8)
    labels = "grass, sky, red circle"  # a comma-separated string works too
    results = segmenter([square_image, other], candidate_labels=labels)
    assert len(results) == 2 and len(calls) == 1
    check_format(results[1], (20, 50))
    for image, batched in zip([square_image, other], results):
        single = segmenter(image, candidate_labels=["grass", "sky", "red circle"])
        assert [(s["label"], s["score"]) for s in single] == [(s["label"], s["score"]) for s in batched]
    assert len(calls) == 1  # cached


def test_zero_shot_without_calibration_for_transductive_models(
    make_model, image_processor, tokenizer, square_image
):
    for model in (make_model(transductive=True), make_model(seen_label_ids=None)):
        segmenter = OTSegZeroShotImageSegmentationPipeline(
            model=model, image_processor=image_processor, tokenizer=tokenizer
        )
        labels = ["red circle", "blue square", "striped square"]
        segments = segmenter(square_image, candidate_labels=labels)
        probabilities = reference_probabilities(model, square_image, model.class_text_embeds[[0, 1, 4]])
        np.testing.assert_array_equal(label_map(segments, labels), probabilities.argmax(0).numpy())


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], "empty"),
        (["cat", "dog", "cat"], "duplicated"),
        (["cat", ""], "non-empty"),
        (None, "candidate_labels"),
    ],
)
def test_zero_shot_bad_labels_raise(folder, square_image, labels, message):
    segmenter = pipeline("zero-shot-image-segmentation", model=str(folder))
    with pytest.raises(ValueError, match=message):
        segmenter(square_image, candidate_labels=labels)


def test_folder_without_tokenizer(folder_without_tokenizer, model, square_image):
    own_classes = pipeline("image-segmentation", model=str(folder_without_tokenizer))
    assert type(own_classes) is OTSegImageSegmentationPipeline and own_classes.tokenizer is None
    expected = calibrated_argmax(reference_probabilities(model, square_image), SEEN_LABEL_IDS)
    np.testing.assert_array_equal(label_map(own_classes(square_image), CLASS_NAMES), expected)
    segmenter = pipeline("zero-shot-image-segmentation", model=str(folder_without_tokenizer))
    with pytest.raises(ValueError, match="no tokenizer.*'cat'"):
        segmenter(square_image, candidate_labels=["red circle", "cat"])
    labels = ["yellow star", "red circle"]  # the model's own classes need no tokenizer
    segments = segmenter(square_image, candidate_labels=labels)
    probabilities = reference_probabilities(model, square_image, model.class_text_embeds[[3, 0]])
    np.testing.assert_array_equal(label_map(segments, labels), calibrated_argmax(probabilities, [1]))


# ----------------------------------------------------------------------------------------------------
# remote code: a fresh interpreter where otseg_hf cannot be imported
# ----------------------------------------------------------------------------------------------------
def test_remote_code_without_otseg_hf(folder, model, tmp_path):
    """A fresh interpreter without otseg_hf: refused without trust_remote_code, the folder's own code with it, and
    the same segments as the plain pipelines here, where otseg_hf is imported."""
    remote = run_without_otseg_hf(folder, tmp_path)
    assert remote["classes"] == ["OTSegForSemanticSegmentation"] * 2
    assert remote["trainable"] == sorted(n for n, p in model.named_parameters() if p.requires_grad)
