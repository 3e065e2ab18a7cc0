"""The frozen-CLIP dense baseline: what a CLIP segments with no training at all (MaskCLIP-style).

Each patch token of the last vision layer goes through `post_layernorm` and `visual_projection` (as
OTSeg reads them) and is compared, by cosine, with every class's text embedding: the mean over the
prompt templates of the L2-normalised embeddings of "template(class name)", normalised again (CLIP's
prompt ensembling). The logits, CLIP's `logit_scale` times the cosines at patch resolution, are
scored exactly as OTSeg's are: `evaluate_model` (sliding windows, bilinear upsampling, argmax, the
same confusion-matrix metrics). No seen-class penalty: nothing was trained on any class.

```python
>>> from otseg_hf.evaluation.baseline import FrozenCLIPSegmenter, evaluate_frozen_clip
>>> segmenter = FrozenCLIPSegmenter.from_pretrained("path/to/clip", class_names, templates, unseen_label_ids)
>>> metric = evaluate_frozen_clip(segmenter, dataset)   # a datasets.Dataset with image / label columns
>>> print(metric.table())
```
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, CLIPModel
from transformers.utils import ModelOutput

from ..hub.folders import default_image_processor
from .evaluate import EvaluationSet, evaluate_model
from .metrics import SegmentationMetric


class FrozenCLIPSegmenter(nn.Module):
    """A `CLIPModel` used densely, frozen, as a segmentation model with OTSeg's interface.

    Args:
        clip: the CLIP.
        tokenizer: its tokenizer.
        class_names: the vocabulary, in label-id order.
        prompt_templates: templates with one `{}` each; class embeddings are averaged over them.
        unseen_label_ids: classes reported as unseen in the metric table (nothing is trained, so this
            only groups the numbers).
        window_size, window_stride: sliding-window inference (default: the CLIP's image size, and 3/4 of it).
        ignore_index: label of pixels without a class.

    `forward(pixel_values)` returns `logits` (B, K, h, w) at patch resolution.
    """

    def __init__(
        self,
        clip: CLIPModel,
        tokenizer,
        class_names: Sequence[str],
        prompt_templates: Sequence[str] = ("a photo of a {}.",),
        unseen_label_ids: Sequence[int] = (),
        window_size: int | None = None,
        window_stride: int | None = None,
        ignore_index: int = 255,
    ):
        super().__init__()
        class_names, prompt_templates = list(class_names), list(prompt_templates)
        if not class_names or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct and non-empty, got {class_names}")
        if not prompt_templates or any(t.count("{}") != 1 for t in prompt_templates):
            raise ValueError(f"every prompt template needs exactly one '{{}}', got {prompt_templates}")
        unseen = sorted({int(i) for i in unseen_label_ids})
        if any(not 0 <= i < len(class_names) for i in unseen):
            raise ValueError(f"unseen_label_ids {unseen} are out of range for {len(class_names)} classes")
        vision = clip.config.vision_config
        window_size = int(window_size or vision.image_size)
        self.clip = clip.eval().requires_grad_(False)
        self.config = SimpleNamespace(
            clip_config=clip.config,
            id2label=dict(enumerate(class_names)),
            class_names=class_names,
            unseen_label_ids=unseen,
            seen_label_ids=[i for i in range(len(class_names)) if i not in unseen],
            setting="frozen",  # not "inductive": no seen-class penalty
            seen_class_penalty=0.0,
            ignore_index=ignore_index,
            inference_window_size=window_size,
            inference_window_stride=int(window_stride or max(1, window_size * 3 // 4)),
        )
        self.register_buffer("class_embeds", self._class_embeddings(tokenizer, class_names, prompt_templates))

    @classmethod
    def from_pretrained(cls, path, class_names, prompt_templates=("a photo of a {}.",), unseen_label_ids=(), **kw):
        """From a CLIP folder (or Hub id) holding a `CLIPModel` and its tokenizer."""
        return cls(CLIPModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), class_names,
                   prompt_templates, unseen_label_ids, **kw)  # fmt: skip

    @torch.no_grad()
    def _class_embeddings(self, tokenizer, class_names, templates) -> torch.Tensor:
        texts = [template.format(name) for name in class_names for template in templates]
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        embeds = self.clip.get_text_features(**tokens)
        embeds = getattr(embeds, "pooler_output", embeds)  # newer transformers return an output object
        embeds = F.normalize(embeds, dim=-1).view(len(class_names), len(templates), -1).mean(1)
        return F.normalize(embeds, dim=-1)  # (K, D)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, text_embeds=None) -> ModelOutput:
        if text_embeds is not None:
            raise ValueError("FrozenCLIPSegmenter segments its own vocabulary; build another for new classes")
        vision = self.clip.vision_model
        patch = self.config.clip_config.vision_config.patch_size
        batch, _, height, width = pixel_values.shape
        if height % patch or width % patch:
            raise ValueError(f"image size {(height, width)} must be a multiple of the patch size {patch}")
        resized = (height, width) != (vision.config.image_size,) * 2
        hidden = vision(pixel_values=pixel_values, interpolate_pos_encoding=resized).last_hidden_state
        tokens = F.normalize(self.clip.visual_projection(vision.post_layernorm(hidden[:, 1:])), dim=-1)
        cosines = tokens @ self.class_embeds.t()  # (B, h w, K)
        logits = self.clip.logit_scale.exp() * cosines
        logits = logits.transpose(1, 2).reshape(batch, -1, height // patch, width // patch)
        return ModelOutput(logits=logits)


def evaluate_frozen_clip(
    segmenter: FrozenCLIPSegmenter,
    dataset,
    image_column: str = "image",
    label_column: str = "label",
    do_reduce_labels: bool = False,
    accelerator=None,
) -> SegmentationMetric:
    """`evaluate_model` of the baseline on a dataset of image / label rows, with OTSeg's test preprocessing
    (`default_image_processor`: short side to the CLIP's image size) and sliding windows."""
    config = segmenter.config
    data = EvaluationSet(
        dataset,
        default_image_processor(config),
        image_column,
        label_column,
        do_reduce_labels=do_reduce_labels,
        num_classes=len(config.id2label),
        ignore_index=config.ignore_index,
    )
    return evaluate_model(segmenter, data, accelerator)


__all__ = ["FrozenCLIPSegmenter", "evaluate_frozen_clip"]
