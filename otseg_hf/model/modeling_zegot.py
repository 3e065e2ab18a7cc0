"""ZegOT: zero-shot segmentation through optimal transport of text prompts (Kim, Oh, Ye, arXiv 2301.12171).

The whole CLIP is frozen. N learnable text prompts (CoOp-style context vectors, shared by all
classes) run through the frozen text encoder; the class prompt embeddings are matched to pixel
embeddings of several layers of the frozen image encoder by multi-prompt optimal transport (MPOT,
the MPS score of OTSeg) with one relationship descriptor per layer (deep local feature alignment,
DLFA). The logits are the mean of the per-layer score maps. No decoder. Section numbers refer to the
project's spec (`spec/otseg.md`; `spec/zegot.md` describes what differs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.utils import ModelOutput

from .configuration_zegot import ZegOTConfig
from .loss_targets import setting_labels, zero_shot_loss
from .modeling_base import (
    RelationshipDescriptor,
    SinkhornOptions,
    VisionRecord,
    ZeroShotSegmentationPreTrainedModel,
    check_pixel_values,
    multi_prompt_sinkhorn_score,
)


@dataclass
class ZegOTSemanticSegmenterOutput(ModelOutput):
    """Output of [`ZegOTForSemanticSegmentation`].

    K is the number of classes the forward computed: the vocabulary of the call, except that an
    inductive model given `labels` computes only its seen classes, in the order of
    `config.seen_label_ids`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Sum over the per-layer maps and the combined map of `weight * (focal + dice)`.
        logits (`torch.FloatTensor` of shape `(batch_size, K, height / patch, width / patch)`):
            The per-layer MPOT score maps combined by `config.layer_combination` (their mean by default), at
            feature resolution. Use the image processor's `post_process_semantic_segmentation` for label maps.
        layer_logits (`tuple(torch.FloatTensor)`, one per entry of `config.feature_layers`):
            MPOT score map of each feature layer, each of shape `(batch_size, K, height / patch, width / patch)`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The vision encoder's hidden states: the input of each of its L layers, then the last layer's output
            (L + 1 tensors of shape `(batch_size, 1 + M, hidden_size)`, M = (height / patch) x (width / patch)).
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The attention weights of each vision layer, `(batch_size, num_heads, 1 + M, 1 + M)`; eager attention
            only.

    With `return_dict=False` the forward returns the fields that are set, in this order: `(loss, logits,
    layer_logits, hidden_states, attentions)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    layer_logits: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class ZegOTPromptLearner(nn.Module):
    """N learnable prompts of L context vectors each, shared by all classes (CoOp).

    The contexts are spliced into the token embeddings of `[SOS] name . [EOS] pad` right after the
    start token, giving `[SOS] [V_1^n] ... [V_L^n] name . [EOS] pad` for every prompt n.
    """

    def __init__(self, config: ZegOTConfig):
        super().__init__()
        width = config.clip_config.text_config.hidden_size
        self.contexts = nn.Parameter(torch.zeros(config.num_text_prompts, config.num_context_tokens, width))

    def forward(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """(K, S, W) token embeddings of `[SOS] name . [EOS] pad` -> (K, N, S + L, W) prompt embeddings."""
        num_classes = token_embeds.shape[0]
        num_prompts = self.contexts.shape[0]
        start = token_embeds[:, None, :1].expand(-1, num_prompts, -1, -1)  # (K, N, 1, W)
        contexts = self.contexts.to(token_embeds.dtype).expand(num_classes, -1, -1, -1)  # (K, N, L, W)
        rest = token_embeds[:, None, 1:].expand(-1, num_prompts, -1, -1)  # (K, N, S - 1, W)
        return torch.cat([start, contexts, rest], dim=2)


class ZegOTPreTrainedModel(ZeroShotSegmentationPreTrainedModel):
    config_class = ZegOTConfig
    config: ZegOTConfig
    base_model_prefix = "zegot"

    @torch.no_grad()
    def _init_weights(self, module):
        from transformers import initialization as init

        super()._init_weights(module)
        if isinstance(module, ZegOTPromptLearner):
            init.normal_(module.contexts, std=self.config.context_init_std)
        elif isinstance(module, ZegOTForSemanticSegmentation):
            init.zeros_(module.class_token_ids)
            init.zeros_(module.class_eos_index)


class ZegOTForSemanticSegmentation(ZegOTPreTrainedModel):
    """ZegOT for zero-shot semantic segmentation.

    Trainable: the prompt contexts and one relationship descriptor per feature layer. Every CLIP
    weight is frozen. Persistent buffers hold the vocabulary's tokens (`class_token_ids` (K, S):
    `[SOS] name . [EOS] pad` with S = text positions - L; `class_eos_index` (K,): where its end token
    is) and the cache of class prompt embeddings `class_text_embeds` (K, N, D). In training mode the
    prompts run through the text encoder at every forward; in eval mode the cache is used. A training
    forward marks the cache stale. It is refreshed explicitly by `update_class_text_embeds()`, or lazily:
    by the next eval-mode forward, `get_class_text_embeds()` (what the pipelines read) and `save_pretrained`
    (so a saved folder holds the current cache). Switching modes (`.eval()`, `.train()`) runs nothing.
    """

    def __init__(self, config: ZegOTConfig):
        super().__init__(config)
        self.clip = self._build_clip(config)
        self.prompt_learner = ZegOTPromptLearner(config)
        self.descriptors = nn.ModuleList(
            [RelationshipDescriptor(config.projection_dim) for _ in config.feature_layers]
        )
        num_classes = len(config.id2label)
        num_tokens = config.clip_config.text_config.max_position_embeddings - config.num_context_tokens
        self.register_buffer("class_token_ids", torch.zeros(num_classes, num_tokens, dtype=torch.long))
        self.register_buffer("class_eos_index", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer(
            "class_text_embeds", torch.zeros(num_classes, config.num_text_prompts, config.projection_dim)
        )
        self._text_cache_stale = False
        self.post_init()

    # ------------------------------------------------------------------------------------------------
    # vision: plain frozen CLIP ViT, pixel embeddings of several blocks (DLFA)
    # ------------------------------------------------------------------------------------------------
    def forward_features(
        self, pixel_values: torch.Tensor, record: VisionRecord | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Returns the global embeddings (B, D), the pixel embeddings (B, M, D) of every feature layer (in
        `config.feature_layers` order), all L2-normalised, and the grid (h, w). `record` is filled with the
        vision encoder's hidden states / attentions it asks for."""
        vision = self.clip.vision_model
        # 1-2. patches + positions resized to this grid, class token, ln_pre: (B, 3, H, W) -> (B, 1 + M, Cv)
        hidden, (height, width) = self._embed_image(pixel_values)
        # 3. blocks; keep the outputs of the feature layers
        wanted = self.config.feature_layer_indices
        layer_outputs = self._run_vision_layers(hidden, record=record)
        hidden = layer_outputs[-1]
        # 4. CLIP's post_layernorm + visual projection (per token), normalised: (B, M, Cv) -> (B, M, D)
        pixel_embeds = [
            F.normalize(self.clip.visual_projection(vision.post_layernorm(layer_outputs[i][:, 1:])), dim=-1)
            for i in wanted
        ]
        # the class token is projected with the other tokens: a (B, Cv) product alone would take another
        # matrix-product path for B = 1 than for B > 1, and an image's result would depend on its batch
        global_embeds = F.normalize(self.clip.visual_projection(vision.post_layernorm(hidden))[:, 0], dim=-1)
        return global_embeds, pixel_embeds, (height, width)

    # ------------------------------------------------------------------------------------------------
    # text: learnable prompts through the frozen text encoder
    # ------------------------------------------------------------------------------------------------
    def encode_prompts(self, token_ids: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:
        """Normalised prompt embeddings (K, N, D) of K tokenised class names; differentiable in the contexts.

        Args:
            token_ids: (K, S) ids of `[SOS] name . [EOS] pad`.
            eos_index: (K,) position of the end token in `token_ids`.
        """
        text_model = self.clip.text_model
        num_contexts = self.config.num_context_tokens
        # 1. attention is causal: tokens after the last end token never reach a pooled position
        length = int(eos_index.max()) + 1
        if length + num_contexts > text_model.config.max_position_embeddings:
            raise ValueError(
                f"class names of {length} tokens do not fit with {num_contexts} context tokens in "
                f"{text_model.config.max_position_embeddings} text positions"
            )
        token_embeds = text_model.embeddings.token_embedding(token_ids[:, :length])  # (K, S', W)
        # 2. splice the contexts: (K, N, S' + L, W) -> (K N, T, W), class-major
        prompts = self.prompt_learner(token_embeds)
        num_classes, num_prompts = prompts.shape[:2]
        hidden = text_model.embeddings(inputs_embeds=prompts.flatten(0, 1))  # + positions
        # 3. frozen encoder with CLIP's causal mask, as CLIPTextModel runs it
        # (the cache argument is positional: transformers renamed it from past_key_values to cache in 5.x)
        mask = create_causal_mask(text_model.config, hidden, None, None)
        hidden = text_model.encoder(
            inputs_embeds=hidden, attention_mask=mask, is_causal=True
        ).last_hidden_state
        # 4. pool at the true end token, shifted by the contexts; final norm (per token) and projection
        eos = (eos_index + num_contexts).repeat_interleave(num_prompts)  # (K N,)
        pooled = text_model.final_layer_norm(hidden[torch.arange(hidden.shape[0], device=hidden.device), eos])
        features = self.clip.text_projection(pooled)  # (K N, D)
        return F.normalize(features.float(), dim=-1).view(num_classes, num_prompts, -1)

    def tokenize_class_names(self, class_names: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (K, S) of `config.class_name_format` per name, right-padded to S = text positions - L,
        and the position of each end token (K,)."""
        if tokenizer is None:
            raise ValueError(
                "a tokenizer is needed to tokenize class names; load one with CLIPTokenizer.from_pretrained(...)"
            )
        texts = [self.config.class_name_format.format(name) for name in class_names]
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        ids, lengths = tokens["input_ids"], tokens["attention_mask"].sum(-1)
        num_tokens = self.class_token_ids.shape[-1]
        if ids.shape[-1] > num_tokens:
            too_long = [texts[i] for i in (lengths > num_tokens).nonzero()[:, 0].tolist()]
            raise ValueError(f"class names longer than {num_tokens} tokens: {too_long}")
        eos_index = lengths - 1
        rows = torch.arange(len(texts))
        if (tokenizer.bos_token_id is not None and bool((ids[:, 0] != tokenizer.bos_token_id).any())) or (
            tokenizer.eos_token_id is not None
            and bool((ids[rows, eos_index] != tokenizer.eos_token_id).any())
        ):
            raise ValueError(
                "the tokenizer must add a start and an end token and pad on the right (CLIPTokenizer)"
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = F.pad(ids, (0, num_tokens - ids.shape[-1]), value=pad)
        return ids.to(self.class_token_ids.device), eos_index.to(self.class_eos_index.device)

    @torch.no_grad()
    def update_class_text_embeds(self, batch_size: int = 64) -> None:
        """Recompute the cache `class_text_embeds` from the current contexts. Call it after changing the contexts
        by hand; after training forwards, eval-mode forwards, `get_class_text_embeds` and `save_pretrained` call
        it themselves.

        Args:
            batch_size: classes per text-encoder call (each gives N prompts).
        """
        self._check_class_tokens()
        chunks = [
            self.encode_prompts(
                self.class_token_ids[start : start + batch_size],
                self.class_eos_index[start : start + batch_size],
            )
            for start in range(0, self.class_token_ids.shape[0], batch_size)
        ]
        self.class_text_embeds = torch.cat(chunks).to(self.class_text_embeds.dtype)
        self._text_cache_stale = False

    @torch.no_grad()
    def set_class_names(
        self, class_names: list[str], tokenizer, seen_label_ids: list[int] | None | str = "by_name"
    ) -> None:
        """Change the vocabulary: store the tokens of `class_names` and recompute the cache.

        Args:
            class_names: the new classes, ids 0..K-1 in this order.
            tokenizer: a CLIP tokenizer matching the text encoder.
            seen_label_ids: seen ids in the new vocabulary. By default, the names that were seen in the old
                vocabulary stay seen (a fully supervised model stays fully supervised).
        """
        class_names = list(class_names)
        checked = self._vocabulary_config(class_names, seen_label_ids)
        self.class_token_ids, self.class_eos_index = self.tokenize_class_names(class_names, tokenizer)
        self.class_text_embeds = self.class_text_embeds.new_zeros(
            len(class_names), *self.class_text_embeds.shape[1:]
        )
        self._adopt_vocabulary(checked)
        self.update_class_text_embeds()

    @torch.no_grad()
    def get_text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings (K, N, D) of another vocabulary from tokenised `[SOS] name . [EOS] pad` (K, S)."""
        if input_ids.dim() != 2 or attention_mask is None or attention_mask.shape != input_ids.shape:
            raise ValueError(
                "input_ids must have shape (num_classes, sequence_length), one tokenised class name per row, "
                "with its attention_mask of the same shape"
            )
        return self.encode_prompts(input_ids, attention_mask.sum(-1) - 1)

    def get_class_text_embeds(self) -> torch.Tensor:
        """The (K, N, D) cache `class_text_embeds`, refreshed first if a training forward made it stale."""
        if self._text_cache_stale:
            self.update_class_text_embeds()
        return self.class_text_embeds

    def save_pretrained(self, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, refreshing the class-embedding cache first if training changed it
        (the saved cache is what a loaded model segments with)."""
        self.get_class_text_embeds()
        return super().save_pretrained(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------
    def forward_head(
        self,
        global_embeds: torch.Tensor,
        pixel_embeds: list[torch.Tensor],
        text_embeds: torch.Tensor,
        options: SinkhornOptions | None = None,
    ) -> list[torch.Tensor]:
        """MPOT per feature layer: (B, D), [(B, M, D)] * layers, (K, N, D) -> [(B, K, M)] * layers. `options`
        default to the config's with the batch-wide stopping rule."""
        options = SinkhornOptions.from_config(self.config) if options is None else options
        text_embeds = text_embeds.to(global_embeds.dtype)
        return [
            multi_prompt_sinkhorn_score(pixels, descriptor(global_embeds, text_embeds), options)
            for descriptor, pixels in zip(self.descriptors, pixel_embeds)
        ]

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ZegOTSemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                Normalised images; height and width multiples of the patch size.
            labels (`torch.LongTensor` of shape `(batch_size, height', width')`, *optional*):
                Class ids of the call's vocabulary (`config.ignore_index` for none). The loss follows the
                model's setting when the vocabulary is the config's; with `text_embeds` or `input_ids` every
                given class counts as seen.
            input_ids (`torch.LongTensor` of shape `(num_classes, sequence_length)`, *optional*):
                Another vocabulary: one tokenised `config.class_name_format` per class (`[SOS] name . [EOS] pad`),
                given with its `attention_mask`.
            attention_mask (`torch.LongTensor` of shape `(num_classes, sequence_length)`, *optional*):
                Mask of `input_ids`; it locates each end token.
            text_embeds (`torch.FloatTensor` of shape `(num_classes, num_prompts, projection_dim)`, *optional*):
                Precomputed L2-normalised prompt embeddings of another vocabulary.
            output_hidden_states (`bool`, *optional*): return the vision encoder's hidden states (see
                [`ZegOTSemanticSegmenterOutput`]); defaults to `config.output_hidden_states`.
            output_attentions (`bool`, *optional*): return the vision layers' attention weights (eager attention
                only); defaults to `config.output_attentions`.
            return_dict (`bool`, *optional*): return a [`ZegOTSemanticSegmenterOutput`] rather than a tuple.

        At inference (eval mode) every image's Sinkhorn problems stop on their own convergence, so an image's
        logits do not depend on the other images of the batch; training uses the reference's batch-wide rule.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        check_pixel_values(pixel_values, config.clip_config.vision_config, labels)
        if text_embeds is not None and input_ids is not None:
            raise ValueError("give either text_embeds or input_ids, not both")
        if text_embeds is not None:
            self._check_text_embeds(text_embeds)
        own_vocabulary = text_embeds is None and input_ids is None
        setting = config.setting if own_vocabulary else "fully_supervised"
        num_classes = len(config.id2label)

        # 1. labels per setting; an inductive model trains on its seen classes only
        class_ids = None  # classes of the own vocabulary to compute, None for all
        if labels is not None:
            if text_embeds is not None:
                num_classes = text_embeds.shape[0]
            elif input_ids is not None:
                num_classes = input_ids.shape[0]
            labels, class_ids = setting_labels(
                labels, num_classes, setting, config.seen_label_ids, config.ignore_index
            )

        # 2. text: (K, N, D) prompt embeddings; through the encoder in training, from the cache at inference
        if input_ids is not None:
            text_embeds = self.get_text_embeddings(input_ids, attention_mask)
        elif text_embeds is None and self.training:
            self._check_class_tokens()
            token_ids, eos_index = self.class_token_ids, self.class_eos_index
            if class_ids is not None:
                token_ids, eos_index = token_ids[class_ids], eos_index[class_ids]
            text_embeds = self.encode_prompts(token_ids, eos_index)
            self._text_cache_stale = self._text_cache_stale or text_embeds.requires_grad
        elif text_embeds is None:
            if self._text_cache_stale:
                self.update_class_text_embeds()
            self._check_text_cache()
            text_embeds = self.class_text_embeds if class_ids is None else self.class_text_embeds[class_ids]

        # 3. vision: (B, 3, H, W) -> global (B, D), pixels [(B, M, D)] per feature layer
        record = self._vision_record(output_hidden_states, output_attentions)
        global_embeds, pixel_embeds, (height, width) = self.forward_features(pixel_values, record)

        # 4. MPOT per layer (B, K, M) -> (B, K, h, w), per-image Sinkhorn stopping at inference; combined logits
        options = SinkhornOptions.from_config(config, per_image_stopping=not self.training)
        layer_logits = [
            score.unflatten(-1, (height, width))
            for score in self.forward_head(global_embeds, pixel_embeds, text_embeds, options)
        ]
        if config.layer_combination == "mean":
            logits = torch.stack(layer_logits).mean(0)
        else:  # "last"
            logits = layer_logits[-1]

        # 5. loss on every layer's map and on the combined map; transductive pseudo labels from the combined map
        loss = None
        if labels is not None:
            maps = [(config.layer_loss_weight, layer_map) for layer_map in layer_logits]
            maps.append((config.combined_loss_weight, logits))
            maps = [(weight, logit_map) for weight, logit_map in maps if weight > 0]
            pseudo_logits = logits if setting == "transductive" else None
            loss = zero_shot_loss(maps, labels, pixel_values.shape[-2:], config, pseudo_logits)

        output = ZegOTSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            layer_logits=tuple(layer_logits),
            hidden_states=None if record.hidden_states is None else tuple(record.hidden_states),
            attentions=None if record.attentions is None else tuple(record.attentions),
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------------
    # checks
    # ------------------------------------------------------------------------------------------------
    def _check_class_tokens(self) -> None:
        if not bool((self.class_eos_index > 0).all()):
            raise ValueError(
                "the class names are not tokenised: call model.set_class_names(names, tokenizer), build the "
                "model with ZegOTForSemanticSegmentation.from_clip, or pass text_embeds / input_ids"
            )


__all__ = [
    "ZegOTForSemanticSegmentation",
    "ZegOTPreTrainedModel",
    "ZegOTPromptLearner",
    "ZegOTSemanticSegmenterOutput",
]
