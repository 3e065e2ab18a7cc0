"""OTSegProcessor: class names -> prompt token ids for the model's templates, images -> pixel_values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from otseg_hf import OTSegImageProcessor, OTSegProcessor

TEMPLATES = ["a photo of a {}.", "there is a {} here."]


@pytest.fixture
def processor(tokenizer):
    return OTSegProcessor(
        OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8), tokenizer, TEMPLATES
    )


def test_prompts_are_class_major(processor, tokenizer):
    prompts = processor.prompts(["cat", "striped dog"])
    assert prompts == [
        "a photo of a cat.",
        "there is a cat here.",
        "a photo of a striped dog.",
        "there is a striped dog here.",
    ]
    tokens = processor(text=["cat", "striped dog"])
    expected = tokenizer(prompts, padding=True, return_tensors="pt")
    torch.testing.assert_close(tokens["input_ids"], expected["input_ids"])
    torch.testing.assert_close(tokens["attention_mask"], expected["attention_mask"])
    assert tokens["input_ids"].shape[0] == 4  # K * N
    assert processor(text="cat")["input_ids"].shape[0] == 2  # one name is a vocabulary of one


def test_default_templates_are_the_models(tokenizer):
    processor = OTSegProcessor(OTSegImageProcessor(), tokenizer)
    assert processor.prompts("cow")[0] == "a photo of a cow." and len(processor.prompts("cow")) == 6


def test_token_ids_give_the_models_text_embeddings(make_model, tokenizer):
    """model.get_text_embeddings(**processor(text=names)) equals the cache set_class_names computes."""
    model = make_model()
    processor = OTSegProcessor(OTSegImageProcessor(), tokenizer, model.config.prompt_templates)
    names = ["grass", "red circle", "sky"]
    tokens = processor(text=names)
    embeds = model.get_text_embeddings(tokens["input_ids"], tokens["attention_mask"])
    model.set_class_names(names, tokenizer)
    torch.testing.assert_close(embeds, model.class_text_embeds, rtol=1e-5, atol=1e-6)


def test_model_runs_on_processor_output(make_model, tokenizer):
    model = make_model()
    processor = OTSegProcessor(
        OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8),
        tokenizer,
        model.config.prompt_templates,
    )
    image = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    label = np.zeros((20, 30), dtype=np.int64)
    inputs = processor(images=image, text=["cat", "dog"], segmentation_maps=label)
    assert inputs["pixel_values"].shape == (1, 3, 32, 48)
    assert inputs["labels"].shape == (1, 32, 48)
    with torch.no_grad():
        outputs = model(**inputs)
    assert outputs.logits.shape == (1, 2, 4, 6)
    assert outputs.loss is not None
    maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(20, 30)])
    assert maps[0].shape == (20, 30)


@pytest.mark.parametrize(
    "names, message",
    [
        ([], "empty"),
        (["cat", "dog", "cat"], "duplicated"),
        (["cat", " "], "non-empty"),
        (["cat", 3], "non-empty strings"),
        (None, "list of strings"),
    ],
)
def test_bad_vocabularies_raise(processor, names, message):
    with pytest.raises(ValueError, match=message):
        processor(text=names) if names is not None else processor.prompts(names)


def test_bad_calls_raise(processor, tokenizer):
    with pytest.raises(ValueError, match="images, text"):
        processor()
    with pytest.raises(ValueError, match="need their images"):
        processor(text=["cat"], segmentation_maps=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="exactly one"):
        OTSegProcessor(OTSegImageProcessor(), tokenizer, ["no placeholder"])


def test_save_and_load_through_auto_processor(processor, tmp_path, tokenizer):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is OTSegProcessor
    assert loaded.prompt_templates == TEMPLATES
    assert (
        dict(loaded.image_processor.size) == {"shortest_edge": 32}
        and loaded.image_processor.size_divisor == 8
    )
    torch.testing.assert_close(loaded(text=["cat"])["input_ids"], processor(text=["cat"])["input_ids"])
