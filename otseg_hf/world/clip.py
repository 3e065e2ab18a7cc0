"""The zero-shot world's CLIP: a tokenizer for its captions, a tiny CLIP, its batches and losses.

A tiny `CLIPModel` is pretrained contrastively on world v2's captioned scenes (`otseg_hf.world.captions`,
`training/pretrain_clip.py`), with no mask:

- scene-caption: CLIP's symmetric InfoNCE between the image embedding (CLS) and the caption. The shipped
  world CLIP is trained with this loss alone, as a web CLIP is: its patch tokens are informative (a linear
  probe separates the classes) but not aligned with the text, so its frozen dense zero-shot argmax is weak,
  the gap that OTSeg's training closes on real CLIPs too;
- patch-phrase (opt-in, `patch_loss_weight > 0`): multiple-instance grounding of the patch tokens, taken
  through `post_layernorm` and `visual_projection` as OTSeg reads them: for every phrase true of an object
  in the image ("a photo of a striped red shape.", "a photo of a red shape.", ...), the image's
  best-matching patches must match it better than the phrases true of nothing in it. It trains dense
  alignment directly, which no web CLIP has, and makes the frozen dense baseline unrealistically strong.

```python
>>> from otseg_hf.world.clip import world_clip_config, world_clip_tokenizer
>>> from otseg_hf.world.scenes import world_v2_words
>>> tokenizer = world_clip_tokenizer(world_v2_words())  # one token per word of the world
>>> tokenizer.tokenize("a photo of a red circle.")
['a</w>', 'photo</w>', 'of</w>', 'a</w>', 'red</w>', 'circle</w>', '.</w>']
>>> model = CLIPModel(world_clip_config(tokenizer))
```
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..testing import char_clip_tokenizer
from .shapes import GENERIC_NOUN

PATCH_PROMPT = "a photo of a {}."
MAX_TEXT_LENGTH = 40  # tokens; world v2's longest caption has 32 (3000 pretraining scenes)

Attributes = tuple[str | None, str | None, str | None]  # (texture, colour, shape); None: unsaid


def description_text(attributes: Attributes) -> str:
    """'a photo of a striped red circle.'; a missing shape reads 'shape'."""
    texture, colour, shape = attributes
    return PATCH_PROMPT.format(" ".join(word for word in (texture, colour, shape or GENERIC_NOUN) if word))


def describes(description: Attributes, attributes: Attributes) -> bool:
    """Whether every attribute the description names is the object's."""
    return all(said is None or said == value for said, value in zip(description, attributes))


# ----------------------------------------------------------------------------------------------------
# tokenizer and config
# ----------------------------------------------------------------------------------------------------
def learn_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that build every word of `words` into one token ('red' -> 'red</w>').

    Greedy BPE on the word list: merge the most frequent adjacent pair (ties: the smallest pair),
    until every word is one symbol. Applying the merges in this order, as CLIP's BPE does, rebuilds
    the words; `world_clip_tokenizer` checks it.
    """
    words = sorted(set(words))
    if not words or any(not word.isalpha() or not word.islower() for word in words):
        raise ValueError(f"words must be non-empty lowercase letters only, got {words}")
    # 'red' -> ('r', 'e', 'd</w>'): CLIP marks the end of a word on its last character
    symbols = [(*word[:-1], word[-1] + "</w>") for word in words]
    merges = []
    while any(len(word) > 1 for word in symbols):
        counts = Counter(pair for word in symbols for pair in zip(word, word[1:]))
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        symbols = [_merge(word, pair) for word in symbols]
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace the occurrences of `pair` in `word`, left to right, by their concatenation."""
    out, index = [], 0
    while index < len(word):
        if index + 1 < len(word) and (word[index], word[index + 1]) == pair:
            out.append(word[index] + word[index + 1])
            index += 2
        else:
            out.append(word[index])
            index += 1
    return tuple(out)


def world_clip_tokenizer(words: Sequence[str]) -> CLIPTokenizer:
    """A CLIP tokenizer with one token per word of `words` (e.g. `world_v2_words()`, every word of the world).

    The vocabulary is CLIP's 512 byte-level characters (alone and word-final, as in
    `char_clip_tokenizer`), then the merged symbols, then <|startoftext|> and <|endoftext|> (also
    padding), so any text still tokenizes: unknown words fall back to pieces and characters.
    """
    characters = [
        token
        for token, _ in sorted(char_clip_tokenizer().get_vocab().items(), key=lambda kv: kv[1])
        if not token.startswith("<|")
    ]
    vocab = {token: index for index, token in enumerate(characters)}
    merges = learn_merges(words)
    for first, second in merges:
        vocab.setdefault(first + second, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TEXT_LENGTH)
    broken = [word for word in words if tokenizer.tokenize(word) != [word + "</w>"]]
    if broken:
        raise ValueError(f"the merges do not rebuild the words {broken}")
    return tokenizer


def world_clip_config(
    tokenizer: CLIPTokenizer,
    image_size: int = 64,
    patch_size: int = 8,
    vision_hidden_size: int = 128,
    vision_layers: int = 4,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    projection_dim: int = 64,
) -> CLIPConfig:
    """A tiny CLIP for `tokenizer` (its vocabulary size and special ids), 4 heads of 16 or 32 dims.

    Args:
        tokenizer: the text side's tokenizer, e.g. `world_clip_tokenizer(world_v2_words())`.
        image_size: side of the square images; a multiple of `patch_size`.
        patch_size: side of the square patches.
        vision_hidden_size: width of the ViT; a multiple of 4.
        vision_layers: depth of the ViT.
        text_hidden_size: width of the text transformer; a multiple of 4.
        text_layers: depth of the text transformer.
        projection_dim: dimension of the joint embedding space.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    if vision_hidden_size % 4 or text_hidden_size % 4:
        raise ValueError(
            f"hidden sizes must be multiples of 4 (heads), got {vision_hidden_size}, {text_hidden_size}"
        )
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden_size,
            intermediate_size=4 * text_hidden_size,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            max_position_embeddings=MAX_TEXT_LENGTH,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=vision_hidden_size,
            intermediate_size=4 * vision_hidden_size,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def pixel_values_from_images(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32, ImageNet-normalised like OTSeg's inputs."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


class WorldCollator:
    """Batches `SceneCaptions` items: pixel values, tokenized captions and phrases, and which is true.

    Returns a dict of tensors:
        pixel_values (B, 3, H, W); caption_ids, caption_mask (B, L); caption_groups (B,), equal for
        equal captions; phrase_ids, phrase_mask (P, L') for the phrases `describe` gives of the batch's
        named objects, P distinct; phrase_truth (B, P), 1 where a phrase describes an object of the image.
    """

    def __init__(self, tokenizer: CLIPTokenizer, describe):
        self.tokenizer = tokenizer
        self.describe = describe  # attributes -> the phrases true of them, e.g. `scene_descriptions`

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        captions = [item["caption"] for item in items]
        distinct_captions = {caption: number for number, caption in enumerate(dict.fromkeys(captions))}
        phrases = list(
            dict.fromkeys(form for item in items for obj in item["objects"] for form in self.describe(obj))
        )
        truth = [[any(describes(form, obj) for obj in item["objects"]) for form in phrases] for item in items]
        caption_tokens = self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        texts = [description_text(form) for form in phrases] or [""]
        phrase_tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {
            "pixel_values": pixel_values_from_images(np.stack([item["image"] for item in items])),
            "caption_ids": caption_tokens["input_ids"],
            "caption_mask": caption_tokens["attention_mask"],
            "caption_groups": torch.tensor([distinct_captions[caption] for caption in captions]),
            "phrase_ids": phrase_tokens["input_ids"],
            "phrase_mask": phrase_tokens["attention_mask"],
            "phrase_truth": torch.tensor(truth, dtype=torch.bool).view(len(items), len(phrases)),
        }


# ----------------------------------------------------------------------------------------------------
# model parts and losses
# ----------------------------------------------------------------------------------------------------
def image_and_patch_embeddings(
    clip: CLIPModel, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's image embedding (B, D) and its patch embeddings (B, M, D), both L2-normalised.

    The patch tokens go through `post_layernorm` and `visual_projection`, as OTSeg reads them.
    """
    vision = clip.vision_model
    hidden = vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + M, Cv)
    tokens = clip.visual_projection(vision.post_layernorm(hidden))  # (B, 1 + M, D)
    tokens = F.normalize(tokens, dim=-1)
    return tokens[:, 0], tokens[:, 1:]


def text_embeddings(clip: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised text embeddings (N, D) of tokenized texts (N, L)."""
    features = clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return F.normalize(features, dim=-1)


def grouped_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE where pairs in the same group (identical captions) are all positives.

    With targets T_ij = [g_i = g_j] / #{k : g_k = g_i} and logits s * x_i . t_j:
        loss = (CE(logits, T) + CE(logits^T, T)) / 2.
    With distinct groups this is `CLIPModel`'s loss.

    Args:
        image_embeds: (B, D), normalised.
        text_embeds: (B, D), normalised.
        logit_scale: scalar, the log of the inverse temperature.
        groups: (B,) integer ids.
    """
    logits = logit_scale.exp() * image_embeds @ text_embeds.t()  # (B, B)
    same = (groups[:, None] == groups[None, :]).float()
    targets = same / same.sum(-1, keepdim=True)  # symmetric positives, so one target serves both sides
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def patch_phrase_loss(
    patch_embeds: torch.Tensor,
    phrase_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    truth: torch.Tensor,
    sharpness: float = 10.0,
) -> torch.Tensor:
    """Multiple-instance grounding: each phrase true of an image must find its patches, without masks.

    An image's score for phrase p is a soft maximum over its patches m of the cosine x_m . t_p,
        s_p = log(mean_m exp(k x_m . t_p)) / k   (k = `sharpness`; k -> inf: the maximum),
    and every true phrase p must beat the image's false phrases N at temperature 1/s (scale s):
        loss_p = -log(exp(s s_p) / (exp(s s_p) + sum_{n in N} exp(s s_n))) = softplus(LSE_N(s s_n) - s s_p),
    averaged over the true (image, phrase) pairs; 0 where there is none.

    Args:
        patch_embeds: (B, M, D), normalised.
        phrase_embeds: (P, D), normalised.
        logit_scale: scalar, the log of s.
        truth: (B, P) bool, whether phrase p describes an object of image b.
        sharpness: k of the soft maximum.
    """
    if not truth.any():
        return patch_embeds.sum() * 0.0
    cosines = patch_embeds @ phrase_embeds.t()  # (B, M, P)
    num_patches = cosines.shape[1]
    scores = (torch.logsumexp(sharpness * cosines, dim=1) - math.log(num_patches)) / sharpness  # (B, P)
    logits = logit_scale.exp() * scores
    negatives = torch.logsumexp(logits.masked_fill(truth, float("-inf")), dim=-1, keepdim=True)  # (B, 1)
    return F.softplus(negatives - logits)[truth].mean()


class WorldCLIPPretrainer(nn.Module):
    """A `CLIPModel` with the world's two pretraining losses; `forward` takes a `WorldCollator` batch.

    Args:
        clip: the model to train.
        patch_loss_weight: weight of the patch-phrase loss beside the scene-caption loss (0, the shipped
            CLIP's: the caption loss alone; the patch loss is still computed and reported).
    """

    def __init__(self, clip: CLIPModel, patch_loss_weight: float = 0.0):
        super().__init__()
        self.clip = clip
        self.patch_loss_weight = patch_loss_weight

    def forward(
        self,
        pixel_values: torch.Tensor,
        caption_ids: torch.Tensor,
        caption_mask: torch.Tensor,
        caption_groups: torch.Tensor,
        phrase_ids: torch.Tensor,
        phrase_mask: torch.Tensor,
        phrase_truth: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Returns `loss` = caption_loss + patch_loss_weight * patch_loss, and both terms."""
        # 1. images (B, 3, H, W) -> image (B, D) and patch (B, M, D) embeddings
        image_embeds, patch_embeds = image_and_patch_embeddings(self.clip, pixel_values)
        # 2. captions (B, L) -> (B, D), distinct phrases (P, L') -> (P, D)
        caption_embeds = text_embeddings(self.clip, caption_ids, caption_mask)
        phrase_embeds = text_embeddings(self.clip, phrase_ids, phrase_mask)
        # 3. losses at CLIP's temperature, capped at 100 as CLIP does
        logit_scale = self.clip.logit_scale.clamp(max=math.log(100.0))
        caption_loss = grouped_contrastive_loss(image_embeds, caption_embeds, logit_scale, caption_groups)
        patch_loss = patch_phrase_loss(patch_embeds, phrase_embeds, logit_scale, phrase_truth)
        loss = caption_loss + self.patch_loss_weight * patch_loss
        return {"loss": loss, "caption_loss": caption_loss.detach(), "patch_loss": patch_loss.detach()}


__all__ = [
    "PATCH_PROMPT",
    "describes",
    "description_text",
    "WorldCLIPPretrainer",
    "WorldCollator",
    "grouped_contrastive_loss",
    "image_and_patch_embeddings",
    "learn_merges",
    "patch_phrase_loss",
    "pixel_values_from_images",
    "text_embeddings",
    "world_clip_config",
    "world_clip_tokenizer",
]
