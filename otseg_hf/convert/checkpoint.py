"""Convert the OTSeg authors' mmsegmentation checkpoints (and OpenAI CLIP weights) to `otseg_hf`.

    python -m otseg_hf.cli.convert --checkpoint voc_inductive.pth --dataset voc \\
        --setting inductive --text-embeddings voc12_otseg.npy --out otseg-vit-b16-voc-inductive

writes a Hub-ready folder (`otseg_hf.hub.folders.save_otseg_folder`): safetensors + config, the image processor of the
dataset's test protocol, the tokenizer and processor when a CLIP tokenizer is at hand (`--tokenizer`, or a
transformers CLIP folder as `--clip`), the code for `trust_remote_code` and a model card. It loads with
`OTSegForSemanticSegmentation.from_pretrained` and both pipelines.

The jobs are split by module: `convert.keys` (the key rules and their inverse), `convert.shapes` (the config
from tensor shapes), `convert.readers` (safe readers of every input file), this module (the end-to-end
conversion) and `otseg_hf.cli.convert` (the command line). Their public names are importable from here too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..cli.choices import SETTING_ALIASES, SETTINGS
from ..data.splits import DATASETS, resolve_vocabulary
from ..hub.folders import default_image_processor, save_otseg_folder
from ..model.configuration_otseg import CONTEXT_PROMPT_TEMPLATES, VOC_PROMPT_TEMPLATES
from ..model.image_processing_otseg import OTSegImageProcessor
from ..model.modeling_otseg import OTSegForSemanticSegmentation
from ..model.processing_otseg import load_tokenizer
from .keys import (
    ReferenceCheckpointError,
    convert_reference_state_dict,
    dropped_reference_keys,
    has_text_tower,
    to_reference_state_dict,
)
from .readers import (
    TextTower,
    load_clip_text_tower,
    load_openai_clip_state_dict,
    load_text_embeddings,
    openai_text_tower,
    read_reference_checkpoint,
    sha256_of,
    transformers_text_tower,
)
from .shapes import infer_config, text_config_from_openai

# SHA-256 of OpenAI's ViT-B/16 file (it is part of OpenAI's download URL; the `clip` package checks it)
OPENAI_VIT_B16_SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"



def convert_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    setting: str,
    dataset: str | None = None,
    class_names: list[str] | None = None,
    seen_label_ids: list[int] | None = None,
    text_embeddings: str | os.PathLike | None = None,
    clip: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    prompt_templates: list[str] | None = None,
    head_dim: int = 64,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Read, convert, check and save; nothing is written unless every step succeeds.

    Args:
        checkpoint: the reference `.pth`.
        out: the output folder (must not exist or be empty, unless `overwrite`).
        setting: "inductive", "transductive" or "fully_supervised" ("fully-supervised" is accepted too).
        dataset: a key of `dataset_splits.DATASETS` ("voc", "context", "coco-stuff") for class names,
            unseen ids, templates and the inference window.
        class_names, seen_label_ids: an explicit vocabulary and seen ids (override the dataset's).
        text_embeddings: the reference's `*_otseg.npy` to fill the class text cache.
        clip: an OpenAI CLIP `.pt` or a transformers CLIP folder; its text tower is used when the checkpoint
            has none; its tokenizer (folder only) computes the class text cache when no text embeddings are
            given, and is saved with the model.
        tokenizer: a CLIP tokenizer (folder or Hub id) to compute the class text cache (when no text embeddings are
            given) and to save with the model, for other vocabularies.
        prompt_templates: explicit templates (default: the dataset's; else from the `.npy` N: 6 -> VOC's,
            8 -> Context's; else Context's eight).
        head_dim: attention head size (64 for OpenAI CLIP).
        overwrite: replace an existing non-empty `out`.

    Returns:
        The output folder: model, image processor (the dataset's test short side, else the training size),
        tokenizer and processor (when a tokenizer is at hand), code and model card.
    """
    out = Path(out)
    setting = SETTING_ALIASES.get(setting, setting)
    if setting not in SETTINGS:
        raise ReferenceCheckpointError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ReferenceCheckpointError(f"{str(out)!r} exists and is not an empty folder (pass overwrite)")

    # 1. vocabulary and setting
    split = None
    if dataset is not None:
        if dataset not in DATASETS:
            raise ReferenceCheckpointError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        split = DATASETS[dataset]
    try:
        vocabulary = resolve_vocabulary(split, class_names, seen_label_ids=seen_label_ids)
    except ValueError as error:
        raise ReferenceCheckpointError(str(error)) from None
    class_names = list(vocabulary.class_names)
    # a split without unseen classes (ADE20K) gives no zero-shot setting of its own
    known = seen_label_ids is not None or bool(vocabulary.unseen_label_ids)
    if setting == "fully_supervised":
        seen = None
    elif known:
        seen = list(vocabulary.seen_label_ids)
    else:
        raise ReferenceCheckpointError(f"the {setting} setting needs seen label ids (--seen-label-ids)")

    # 2. read everything
    reference = read_reference_checkpoint(checkpoint)
    embeds = load_text_embeddings(text_embeddings) if text_embeddings is not None else None
    tower, clip_tokenizer = (None, None)
    if clip is not None:
        if Path(clip).is_file():
            digest = sha256_of(clip)
            known = (
                "OpenAI's published ViT-B/16" if digest == OPENAI_VIT_B16_SHA256 else "not OpenAI's ViT-B/16"
            )
            log(f"CLIP file sha256 {digest} ({known})")
        tower, clip_tokenizer = load_clip_text_tower(clip, head_dim)
        if has_text_tower(reference):
            log("the checkpoint carries its text encoder: using it (the --clip text tower is not used)")
    if prompt_templates is None:
        if split is not None:
            prompt_templates = list(split.prompt_templates)
        elif embeds is not None and embeds.shape[1] == len(VOC_PROMPT_TEMPLATES):
            prompt_templates = list(VOC_PROMPT_TEMPLATES)
        else:
            prompt_templates = list(CONTEXT_PROMPT_TEMPLATES)
    window = {}
    if split is not None:
        window = dict(
            inference_window_size=split.inference_window_size,
            inference_window_stride=split.inference_window_stride,
        )

    # 3. convert and check
    config = infer_config(
        reference,
        class_names,
        seen_label_ids=seen,
        transductive=setting == "transductive",
        prompt_templates=prompt_templates,
        text_config=tower.text_config if tower is not None else None,
        head_dim=head_dim,
        **window,
    )
    state_dict = convert_reference_state_dict(
        reference,
        config,
        text_tower=tower.state_dict if tower is not None else None,
        class_text_embeds=embeds,
    )
    model = OTSegForSemanticSegmentation(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    text_tokenizer = (
        clip_tokenizer if tokenizer is None else load_tokenizer(tokenizer, "pass a tokenizer folder")
    )
    if embeds is None:
        if text_tokenizer is None:
            raise ReferenceCheckpointError(
                "no class text embeddings: pass --text-embeddings (the reference's .npy) or a tokenizer "
                "(--tokenizer, or --clip with a transformers CLIP folder that has one)"
            )
        model.set_class_names(class_names, text_tokenizer, seen_label_ids=seen)

    # 4. write: into a temporary folder beside `out`, moved in place at the end
    if split is not None:
        patch = config.clip_config.vision_config.patch_size
        image_processor = OTSegImageProcessor(
            size={"shortest_edge": split.test_short_side}, size_divisor=patch
        )
    else:
        image_processor = default_image_processor(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_otseg_folder(
            model, staging, tokenizer=text_tokenizer, image_processor=image_processor, model_name=out.name
        )
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(
        f"wrote {out}: {config.setting}, {len(class_names)} classes, {len(prompt_templates)} templates, "
        f"P={config.num_visual_prompts}, depth={config.visual_prompt_depth}, "
        f"grid={config.clip_config.vision_config.image_size // config.clip_config.vision_config.patch_size}, "
        f"{'with' if text_tokenizer is not None else 'without'} a tokenizer"
    )
    return out


if __name__ == "__main__":  # python -m otseg_hf.convert.checkpoint, as before
    from ..cli.convert import main

    main()


__all__ = [
    "OPENAI_VIT_B16_SHA256",
    "SETTINGS",
    "ReferenceCheckpointError",
    "TextTower",
    "convert_checkpoint",
    "convert_reference_state_dict",
    "dropped_reference_keys",
    "has_text_tower",
    "infer_config",
    "load_clip_text_tower",
    "load_openai_clip_state_dict",
    "load_text_embeddings",
    "openai_text_tower",
    "read_reference_checkpoint",
    "sha256_of",
    "text_config_from_openai",
    "to_reference_state_dict",
    "transformers_text_tower",
]
