"""OTSeg and ZegOT behave as transformers models do under the checks of transformers' common model tests
(`tests/test_modeling_common.py` and `tests/test_configuration_common.py` in the transformers repository, read
to learn what each checks; written here for our models): hidden states and attentions, tuple outputs, eager and
sdpa attention, save/load, initialisation on the meta device, input embeddings, `num_labels`, gradient
checkpointing, offloaded loading and batch invariance at inference."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import CLASS_NAMES, SEEN_LABEL_IDS, TINY_OVERRIDES
from transformers import CLIPModel

from otseg_hf import (
    OTSegConfig,
    OTSegForSemanticSegmentation,
    OTSegImageProcessor,
    OTSegImageSegmentationPipeline,
    ZegOTConfig,
    ZegOTForSemanticSegmentation,
)
from otseg_hf.model import modeling_base
from otseg_hf.model.sliding_window import sliding_window_inference

MODELS = {
    "otseg": (OTSegForSemanticSegmentation, TINY_OVERRIDES),
    "zegot": (ZegOTForSemanticSegmentation, dict(inference_window_size=32, inference_window_stride=24)),
}
NUM_VISION_LAYERS, VISION_WIDTH, VISION_HEADS = 3, 32, 2  # tiny_clip_config


@pytest.fixture(params=sorted(MODELS))
def name(request):
    return request.param


@pytest.fixture
def build(tiny_clip_dir, name):
    def make(**overrides):
        model_class, tiny = MODELS[name]
        torch.manual_seed(0)
        model = model_class.from_clip(
            tiny_clip_dir, CLASS_NAMES, seen_label_ids=SEEN_LABEL_IDS, image_size=32, **{**tiny, **overrides}
        )
        return model.eval()

    return make


def images(batch=3, height=32, width=48, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def labels(batch=3, height=32, width=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(CLASS_NAMES), (batch, height, width), generator=generator)


def sequence_lengths(model, grid: int) -> list[int]:
    """The length the vision layers' inputs have, by hand: CLS + prompts + patches while OTSeg's prompts are in."""
    if isinstance(model, ZegOTForSemanticSegmentation):
        return [1 + grid] * (NUM_VISION_LAYERS + 1)
    prompts, depth = model.config.num_visual_prompts, model.config.visual_prompt_depth
    # the last state is the last layer's output: it has the prompts when that layer had them
    return [1 + prompts + grid if min(i, NUM_VISION_LAYERS - 1) <= depth else 1 + grid for i in range(4)]


# ---------------------------------------------------------------------------------------------------
# hidden states, attentions, tuples (test_hidden_states_output, test_attention_outputs,
# test_model_outputs_equivalence, test_retain_grad_hidden_states_attentions)
# ---------------------------------------------------------------------------------------------------
def test_hidden_states_and_attentions_shapes(build, tmp_path):
    build().save_pretrained(tmp_path)
    model = type(build()).from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        output = model(images(), output_hidden_states=True, output_attentions=True)
    lengths = sequence_lengths(model, 4 * 6)
    assert [tuple(h.shape) for h in output.hidden_states] == [(3, t, VISION_WIDTH) for t in lengths]
    assert [tuple(a.shape) for a in output.attentions] == [(3, VISION_HEADS, t, t) for t in lengths[:-1]]
    assert all(torch.allclose(a.sum(-1), torch.ones(())) for a in output.attentions)  # softmax rows
    # the first state is CLIP's embeddings (+ OTSeg's first prompts) after ln_pre, as CLIP computes them
    clip_states = model.clip.vision_model(images(height=32, width=32), output_hidden_states=True).hidden_states
    with torch.no_grad():
        ours = model(images(height=32, width=32), output_hidden_states=True).hidden_states
    if isinstance(model, ZegOTForSemanticSegmentation):  # the plain CLIP ViT: every state is CLIP's
        for got, want in zip(ours, clip_states):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # asked through the config, as transformers models are
    model.config.output_hidden_states = True
    with torch.no_grad():
        assert len(model(images()).hidden_states) == NUM_VISION_LAYERS + 1
    assert model(images(), output_hidden_states=False).hidden_states is None


def test_attentions_need_eager_attention(build):
    model = build()  # sdpa
    assert model.config.clip_config.vision_config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="output_attentions needs eager attention"):
        model(images(), output_attentions=True)


def test_tuple_output_is_the_dict_output_in_the_documented_order(build):
    model = build()
    with torch.no_grad():
        as_dict = model(images(), labels=labels(), output_hidden_states=True)
        as_tuple = model(images(), labels=labels(), output_hidden_states=True, return_dict=False)
    names = ["loss", "logits", "decoder_logits", "score_logits", "hidden_states"]
    if isinstance(model, ZegOTForSemanticSegmentation):
        names = ["loss", "logits", "layer_logits", "hidden_states"]
    assert len(as_tuple) == len(names)
    for field, value in zip(names, as_tuple):
        expected = getattr(as_dict, field)
        pairs = zip(value, expected) if isinstance(value, tuple) else [(value, expected)]
        assert all(torch.equal(a, b) for a, b in pairs), field


def test_hidden_states_keep_their_gradient(build):
    model = build().train()
    output = model(images(batch=2), labels=labels(batch=2), output_hidden_states=True)
    first, last = output.hidden_states[0], output.hidden_states[-1]
    if isinstance(model, ZegOTForSemanticSegmentation):  # a frozen CLIP ViT: no state needs a gradient
        assert not first.requires_grad and not last.requires_grad
        return
    first.retain_grad()  # OTSeg: the prompts make every state trainable
    last.retain_grad()
    output.loss.backward()
    assert last.grad is not None and bool(last.grad.abs().sum() > 0)
    assert first.grad is not None and bool(first.grad.abs().sum() > 0)


def test_eager_and_sdpa_attention_agree(build, tmp_path):
    build().save_pretrained(tmp_path)
    model_class = type(build())
    eager = model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = model_class.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config.clip_config.vision_config._attn_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(sdpa(images()).logits, eager(images()).logits, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# save/load, init on meta, embeddings, num_labels
# ---------------------------------------------------------------------------------------------------
def test_save_load_is_exact(build, tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images()).logits, model(images()).logits)


def test_every_weight_is_initialised_when_built_on_the_meta_device(build):
    built = build()
    config, model_class = built.config, type(built)
    with torch.device("meta"):
        model = model_class(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
            else:
                tensor.fill_(-7)
    model.init_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if (t != t).any() or (t == -7).any()]
    assert left == []
    torch.testing.assert_close(model.clip.logit_scale, torch.tensor(config.clip_config.logit_scale_init_value))


def test_loading_never_reinitialises_clip(build, tiny_clip_dir):
    model = build()
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    ours = model.clip.state_dict()
    for key, value in clip.state_dict().items():
        if "position" not in key:
            assert torch.equal(ours[key], value), key


def test_input_embeddings_are_the_text_token_embeddings(build):
    model = build()
    assert model.get_input_embeddings() is model.clip.text_model.embeddings.token_embedding
    replacement = torch.nn.Embedding(514, 32)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    assert model.clip.text_model.embeddings.token_embedding is replacement


@pytest.mark.parametrize("config_class", [OTSegConfig, ZegOTConfig])
def test_num_labels_alone_gives_placeholder_names_and_a_warning(config_class):
    with pytest.warns(UserWarning, match="set_class_names"):
        config = config_class(num_labels=5)
    assert config.id2label == {i: f"LABEL_{i}" for i in range(5)}
    assert config.num_labels == 5 and config.seen_label_ids is None
    config.num_labels = 3  # as transformers' setter does
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


# ---------------------------------------------------------------------------------------------------
# gradient checkpointing, offloaded loading
# ---------------------------------------------------------------------------------------------------
def gradients(model) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    torch.manual_seed(1)  # dropout
    model(images(batch=2), labels=labels(batch=2)).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_gives_the_same_gradients(build):
    model = build()
    assert model.supports_gradient_checkpointing
    plain = gradients(model)
    calls = []
    layers = list(model.clip.vision_model.encoder.layers)
    if isinstance(model, ZegOTForSemanticSegmentation):
        layers += list(model.clip.text_model.encoder.layers)
    # a sub-module that the recomputation reaches (transformers checkpoints the layer's forward, inside the
    # layer's own hooks, and torch stops recomputing once the saved tensors the backward needs are back)
    hooks = [layer.self_attn.register_forward_pre_hook(lambda *_: calls.append(1)) for layer in layers]
    model.gradient_checkpointing_enable()
    checkpointed = gradients(model)
    for hook in hooks:
        hook.remove()
    assert len(calls) > len(layers)  # the layers ran again in the backward pass: they were checkpointed
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=0, atol=0, msg=key)


def test_offloaded_loading_gives_the_same_logits(build, tmp_path):
    model = build()
    model.save_pretrained(tmp_path / "model")
    offloaded = type(model).from_pretrained(
        tmp_path / "model",
        device_map="auto",
        max_memory={"cpu": 60_000},
        offload_folder=str(tmp_path / "offload"),
    ).eval()
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # something really is offloaded
    # accelerate's hooks read the offloaded weights from the safetensors file at every forward, and safetensors
    # can put them 4 bytes off a 64-byte boundary, where the CPU matrix kernels round differently (about 1e-7
    # relative per product): close, not bit-identical (the weights kept in memory are realigned on load)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(images()).logits, model(images()).logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# batch invariance at inference (test_batching_equivalence)
# ---------------------------------------------------------------------------------------------------
def test_batched_inference_is_one_image_at_a_time_to_the_bit(build):
    model = build()
    pixel_values = images(batch=4)
    with torch.no_grad():
        batched = model(pixel_values).logits
        alone = torch.cat([model(pixel_values[i : i + 1]).logits for i in range(4)])
    assert torch.equal(batched, alone)


def test_sliding_window_results_do_not_depend_on_window_batch_size(build):
    model = build()
    pixel_values = images(batch=1, height=56, width=80)  # 3 x 3 windows of 32 with stride 24
    with torch.no_grad():
        results = [
            sliding_window_inference(model, pixel_values, window_batch_size=size).probabilities
            for size in (1, 4, 9)
        ]
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_training_keeps_the_batch_wide_rule_and_inference_stops_per_image(build, monkeypatch):
    seen = []

    def spy(*args, stop_groups=None, **kwargs):
        seen.append(stop_groups)
        return log_sinkhorn(*args, stop_groups=stop_groups, **kwargs)

    log_sinkhorn = modeling_base.log_sinkhorn
    monkeypatch.setattr(modeling_base, "log_sinkhorn", spy)
    model = build()
    with torch.no_grad():
        model(images(batch=3))
        assert seen and set(seen) == {3}
        seen.clear()
        model.train()(images(batch=3), labels=labels())
    assert seen and set(seen) == {None}


def test_pipelines_do_not_depend_on_window_batch_size(build):


    model = build()
    segmenter = OTSegImageSegmentationPipeline(
        model=model, image_processor=OTSegImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    )
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 100, 3), dtype=np.uint8))
    results = [segmenter(image, window_batch_size=size) for size in (1, 2, 8)]  # 3 windows of 32 x 32
    for other in results[1:]:
        assert [s["label"] for s in other] == [s["label"] for s in results[0]]
        assert [s["score"] for s in other] == [s["score"] for s in results[0]]
        assert all(np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"])) for a, b in zip(other, results[0]))
