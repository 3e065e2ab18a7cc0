"""OTSeg: multi-prompt Sinkhorn attention for zero-shot semantic segmentation (Kim, Oh, Ye, ECCV 2024).

The model wraps a frozen `CLIPModel`, adds deep visual prompts to its vision tower, builds class
queries with a relationship descriptor, and produces two class maps: the multi-prompt Sinkhorn
(MPS) score map and the output of a decoder whose cross-attention is a Sinkhorn transport plan
(MPSA). Section numbers refer to the project's spec (`spec/otseg.md`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_otseg import OTSegConfig
from .loss_targets import setting_labels, zero_shot_loss
from .modeling_base import (
    RelationshipDescriptor,
    SinkhornOptions,
    VisionRecord,
    ZeroShotSegmentationPreTrainedModel,
    check_pixel_values,
    multi_prompt_sinkhorn_score,
    sinkhorn_similarity_map,
)


@dataclass
class OTSegSemanticSegmenterOutput(ModelOutput):
    """Output of [`OTSegForSemanticSegmentation`].

    K is the number of classes the forward computed: the vocabulary of the call (the config's
    classes, or the classes of `text_embeds` / `input_ids`), except that an inductive model given
    `labels` computes only its seen classes, in the order of `config.seen_label_ids` (the
    reference's training).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Focal + dice loss of the decoder path plus that of the score path.
        logits (`torch.FloatTensor` of shape `(batch_size, K, height / patch, width / patch)`):
            OTSeg+ ensemble `w * decoder_logits + (1 - w) * score_logits` at feature resolution. Use the
            image processor's `post_process_semantic_segmentation` to get label maps.
        decoder_logits (`torch.FloatTensor` of shape `(batch_size, K, height / patch, width / patch)`):
            Logits of the Sinkhorn-attention decoder (MPSA path).
        score_logits (`torch.FloatTensor` of shape `(batch_size, K, height / patch, width / patch)`):
            Multi-prompt Sinkhorn score map (MPS path).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The vision encoder's hidden states: the input of each of its L layers as the layer sees it, the
            visual prompts included (`(batch_size, 1 + P + M, hidden_size)` for layers 0..depth, `(batch_size,
            1 + M, hidden_size)` after), then the last layer's output (with the prompts if that layer had them):
            L + 1 tensors. M = (height / patch) x (width / patch), P = `config.num_visual_prompts`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The attention weights of each vision layer, `(batch_size, num_heads, T, T)` with T the layer's
            sequence length; eager attention only.

    With `return_dict=False` the forward returns the fields that are set, in this order: `(loss, logits,
    decoder_logits, score_logits, hidden_states, attentions)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    decoder_logits: torch.FloatTensor | None = None
    score_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class OTSegVisualPrompts(nn.Module):
    """Deep visual prompts (VPT-deep) of the tunable image encoder (spec section 2.5-2.6)."""

    def __init__(self, config: OTSegConfig):
        super().__init__()
        width = config.clip_config.vision_config.hidden_size
        self.prompt_embeddings = nn.Parameter(torch.zeros(1, config.num_visual_prompts, width))
        self.deep_prompt_embeddings = nn.Parameter(
            torch.zeros(config.visual_prompt_depth, config.num_visual_prompts, width)
        )
        self.prompt_proj = nn.Linear(width, width)
        self.prompt_norm = nn.LayerNorm(width, eps=config.prompt_norm_eps)
        self.dropout = nn.Dropout(config.visual_prompt_dropout)

    def forward(self, layer_index: int, batch_size: int) -> torch.Tensor:
        """Prompt tokens inserted before vision layer `layer_index`: (B, P, Cv)."""
        if layer_index == 0:
            prompts = self.prompt_embeddings[0]
        else:
            prompts = self.deep_prompt_embeddings[layer_index - 1]
        return self.dropout(self.prompt_proj(prompts)).expand(batch_size, -1, -1)


class OTSegDecoderLayer(nn.Module):
    """Post-norm decoder layer with Sinkhorn cross-attention and no self-attention (spec section 5).

    The last layer of the decoder only contributes its similarity map, so it is built with
    `last=True`: query and key projections only (the reference's value/output projections, FFN and
    norms of that layer never influence an output).
    """

    def __init__(self, config: OTSegConfig, last: bool = False):
        super().__init__()
        dim = config.projection_dim
        self.config = config  # the Sinkhorn options default to the config's at every call
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.last = last
        if not last:
            self.v_proj = nn.Linear(dim, dim)
            self.out_proj = nn.Linear(dim, dim)
            self.attention_dropout = nn.Dropout(config.attention_dropout)
            self.cross_attn_norm = nn.LayerNorm(dim, eps=config.decoder_layer_norm_eps)
            self.fc1 = nn.Linear(dim, config.decoder_ffn_dim)
            self.fc2 = nn.Linear(config.decoder_ffn_dim, dim)
            self.dropout = nn.Dropout(config.decoder_dropout)
            self.ffn_norm = nn.LayerNorm(dim, eps=config.decoder_layer_norm_eps)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, options: SinkhornOptions | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, K, N, D) queries, (B, M, D) pixel memory -> (updated queries or None, map (B, K, M)). `options`
        default to the config's with the batch-wide stopping rule."""
        options = SinkhornOptions.from_config(self.config) if options is None else options
        # 1. projections; queries and keys normalised for the cosine cost
        q = F.normalize(self.q_proj(queries), dim=-1)
        k = F.normalize(self.k_proj(memory), dim=-1)
        # 2-3. transport plan (B, K, M, N) and the layer's similarity map (B, K, M)
        layer_map, plan = sinkhorn_similarity_map(k, q, options)
        if self.last:
            return None, layer_map
        # 4. the plan is the attention: out[b,k,n] = sum_m T[b,k,m,n] v[b,m] (no renormalisation)
        values = self.v_proj(memory)
        attended = torch.einsum("bkmn,bmd->bknd", self.attention_dropout(plan).to(values.dtype), values)
        attended = self.out_proj(attended)
        # 5. post-norm residual blocks
        queries = self.cross_attn_norm(queries + self.dropout(attended))
        ffn = self.fc2(self.dropout(F.relu(self.fc1(queries))))
        queries = self.ffn_norm(queries + self.dropout(ffn))
        return queries, layer_map


GATE_FLOOR = -80.0  # decoder gates: sigmoid(-80) = 1.8e-35, still a normal float32


class OTSegDecoder(nn.Module):
    """Multi-prompt Sinkhorn attention decoder (MPSA). Output: the last layer's map weighted by the
    geometric mean of the sigmoid of the earlier maps (spec section 5)."""

    def __init__(self, config: OTSegConfig):
        super().__init__()
        n = config.num_decoder_layers
        self.layers = nn.ModuleList([OTSegDecoderLayer(config, last=i == n - 1) for i in range(n)])

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, options: SinkhornOptions | None = None
    ) -> torch.Tensor:
        """(B, K, N, D), (B, M, D) -> decoder logits (B, K, M)."""
        maps = []
        for layer in self.layers:
            queries, layer_map = layer(queries, memory, options)
            maps.append(layer_map)
        logits = maps[-1]
        exponent = 1.0 / max(1, len(maps) - 1)
        for layer_map in maps[:-1]:
            # sigmoid image by image: torch's vectorised and scalar sigmoid differ in the last bit, and which
            # elements take which path depends on the tensor's size, so a batched sigmoid depends on the batch.
            # A traced graph (compile, export) takes the batch whole: a loop over it would fix the batch size.
            # The floor keeps sigmoid(map) a normal float: below about -88 it underflows to 0, where the
            # gradient of gate ** (1/2) is infinite and the step NaN. Sinkhorn maps lie in [-N, N] (N prompts),
            # so it never acts on them; softmax matching (maps up to M N) needs it
            if torch.compiler.is_compiling():
                gate = layer_map.clamp(min=GATE_FLOOR).sigmoid()
            else:
                gate = torch.stack([image_map.clamp(min=GATE_FLOOR).sigmoid() for image_map in layer_map])
            logits = logits * gate**exponent
        return logits


class OTSegHead(nn.Module):
    """Relationship descriptor + MPS score path + MPSA decoder path."""

    def __init__(self, config: OTSegConfig):
        super().__init__()
        self.config = config
        self.descriptor = RelationshipDescriptor(config.projection_dim)
        self.decoder = OTSegDecoder(config)

    def forward(
        self,
        global_embeds: torch.Tensor,
        pixel_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        options: SinkhornOptions | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D), (B, M, D), (K, N, D) -> decoder logits (B, K, M), score logits (B, K, M). `options` default
        to the config's with the batch-wide stopping rule."""
        options = SinkhornOptions.from_config(self.config) if options is None else options
        queries = self.descriptor(global_embeds, text_embeds.to(global_embeds.dtype))  # (B, K, N, D)
        score = multi_prompt_sinkhorn_score(pixel_embeds, queries, options)
        decoder = self.decoder(queries, pixel_embeds, options)
        return decoder, score


class OTSegPreTrainedModel(ZeroShotSegmentationPreTrainedModel):
    config_class = OTSegConfig
    config: OTSegConfig
    base_model_prefix = "otseg"
    class_embedding_twice = True  # the reference adds CLIP's class embedding twice to the CLS token

    @torch.no_grad()
    def _init_weights(self, module):
        # Children are initialised before their parents, so OTSegVisualPrompts overrides its prompt_proj.
        from transformers import initialization as init

        super()._init_weights(module)
        if isinstance(module, OTSegVisualPrompts):
            vision = self.config.clip_config.vision_config
            # VPT's uniform init, bound sqrt(6 / (3 * patch^2 + width))
            bound = math.sqrt(6.0 / (3 * vision.patch_size**2 + vision.hidden_size))
            init.uniform_(module.prompt_embeddings, -bound, bound)
            init.uniform_(module.deep_prompt_embeddings, -bound, bound)
            init.kaiming_normal_(module.prompt_proj.weight, a=0, mode="fan_out")


class OTSegForSemanticSegmentation(OTSegPreTrainedModel):
    """OTSeg for zero-shot semantic segmentation.

    Trainable: the visual prompts and the head. Every CLIP weight is frozen. The class text
    embeddings of `config.id2label` are cached in the persistent buffer `class_text_embeds`
    (K, N, D), so a saved model segments without a tokenizer; `set_class_names` recomputes it.
    """

    def __init__(self, config: OTSegConfig):
        super().__init__(config)
        self.clip = self._build_clip(config)
        self.visual_prompts = OTSegVisualPrompts(config)
        self.head = OTSegHead(config)
        num_classes, num_prompts = len(config.id2label), len(config.prompt_templates)
        self.register_buffer(
            "class_text_embeds", torch.zeros(num_classes, num_prompts, config.projection_dim)
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------
    # vision
    # ------------------------------------------------------------------------------------------------
    def forward_features(
        self, pixel_values: torch.Tensor, record: VisionRecord | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """CLIP ViT with deep visual prompts (spec section 2).

        Args:
            pixel_values: (B, 3, H, W) images.
            record: filled with the vision encoder's hidden states / attentions it asks for.

        Returns:
            global embeddings (B, D) and pixel embeddings (B, M, D), both L2-normalised, and the grid (h, w).
        """
        vision = self.clip.vision_model
        batch = pixel_values.shape[0]
        # 1-4. patches + positions resized to this grid, the class token (the reference adds the class
        # embedding twice), ln_pre: (B, 3, H, W) -> (B, 1 + M, Cv)
        hidden, (height, width) = self._embed_image(pixel_values)
        num_pixels = height * width
        # 5. layers with deep prompts: [cls, prompts, patches]; prompts replaced before layers 1..depth
        depth = self.config.visual_prompt_depth
        num_prompts = self.config.num_visual_prompts

        def insert_prompts(index: int, hidden: torch.Tensor) -> torch.Tensor:
            if index == 0:
                return torch.cat([hidden[:, :1], self.visual_prompts(0, batch), hidden[:, 1:]], dim=1)
            if index <= depth:
                return torch.cat(
                    [hidden[:, :1], self.visual_prompts(index, batch), hidden[:, 1 + num_prompts :]], 1
                )
            if index == depth + 1:
                return torch.cat([hidden[:, :1], hidden[:, 1 + num_prompts :]], dim=1)
            return hidden

        hidden = self._run_vision_layers(hidden, insert_prompts, record)[-1]
        # 6. prompt_norm, post_layernorm, projection; only CLS and patch tokens are needed
        hidden = torch.cat([hidden[:, :1], hidden[:, -num_pixels:]], dim=1)
        hidden = vision.post_layernorm(self.visual_prompts.prompt_norm(hidden))
        hidden = self.clip.visual_projection(hidden)  # (B, 1 + M, D)
        # 7. normalised global and pixel embeddings
        hidden = F.normalize(hidden, dim=-1)
        return hidden[:, 0], hidden[:, 1:], (height, width)

    # ------------------------------------------------------------------------------------------------
    # text
    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def get_text_embeddings(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_prompts: int | None = None,
    ) -> torch.Tensor:
        """Normalised prompt embeddings (K, N, D) from token ids (K N, L) ordered class-major."""
        num_prompts = num_prompts or len(self.config.prompt_templates)
        if input_ids.dim() != 2 or input_ids.shape[0] % num_prompts:
            raise ValueError(
                f"input_ids must have shape (num_classes * {num_prompts}, sequence_length) ordered class-major, "
                f"got {tuple(input_ids.shape)}"
            )
        positions = self.config.clip_config.text_config.max_position_embeddings
        if input_ids.shape[1] > positions:
            raise ValueError(
                f"the prompts are {input_ids.shape[1]} tokens long, more than the text encoder's {positions} "
                "positions: shorten the class names"
            )
        features = self.clip.get_text_features(
            input_ids=input_ids, attention_mask=attention_mask
        ).pooler_output
        return F.normalize(features.float(), dim=-1).view(-1, num_prompts, features.shape[-1])

    @torch.no_grad()
    def set_class_names(
        self,
        class_names: list[str],
        tokenizer,
        seen_label_ids: list[int] | None | str = "by_name",
        batch_size: int = 256,
    ) -> None:
        """Change the vocabulary: recompute the text cache for `class_names` with `tokenizer`.

        Args:
            class_names: the new classes, ids 0..K-1 in this order.
            tokenizer: a CLIP tokenizer matching the text encoder.
            seen_label_ids: seen ids in the new vocabulary. By default, the names that were seen in the old
                vocabulary stay seen (a fully supervised model stays fully supervised).
            batch_size: prompts per text-encoder call.
        """
        class_names = list(class_names)
        if tokenizer is None:
            raise ValueError(
                "a tokenizer is needed to compute text embeddings for new class names; load one with "
                "CLIPTokenizer.from_pretrained(...) or pass text_embeds to forward"
            )
        checked = self._vocabulary_config(class_names, seen_label_ids)
        templates = self.config.prompt_templates
        prompts = [template.format(name) for name in class_names for template in templates]
        device = self.class_text_embeds.device
        chunks = []
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[start : start + batch_size], padding=True, return_tensors="pt")
            positions = self.config.clip_config.text_config.max_position_embeddings
            if tokens["input_ids"].shape[1] > positions:
                lengths = tokens["attention_mask"].sum(-1).tolist()
                too_long = [p for p, n in zip(prompts[start : start + batch_size], lengths) if n > positions]
                raise ValueError(
                    f"class name prompts longer than the text encoder's {positions} tokens: {too_long[:3]}; "
                    "shorten the class names"
                )
            features = self.clip.get_text_features(
                input_ids=tokens["input_ids"].to(device),
                attention_mask=None
                if tokens.get("attention_mask") is None
                else tokens["attention_mask"].to(device),
            ).pooler_output
            chunks.append(F.normalize(features.float(), dim=-1))
        embeds = torch.cat(chunks).view(len(class_names), len(templates), -1)
        self.class_text_embeds = embeds.to(self.class_text_embeds.dtype)
        self._adopt_vocabulary(checked)

    # ------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------
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
    ) -> OTSegSemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                ImageNet-normalised images; height and width multiples of the patch size.
            labels (`torch.LongTensor` of shape `(batch_size, height', width')`, *optional*):
                Class ids of the call's vocabulary (`config.ignore_index` for none). The loss follows the
                model's setting (spec section 8) when the vocabulary is the config's; with `text_embeds` or
                `input_ids` every given class counts as seen.
            input_ids (`torch.LongTensor` of shape `(num_classes * num_templates, sequence_length)`, *optional*):
                Tokenised prompts of another vocabulary, class-major (all templates of class 0 first).
            attention_mask (`torch.LongTensor`, *optional*): mask of `input_ids`.
            text_embeds (`torch.FloatTensor` of shape `(num_classes, num_prompts, projection_dim)`, *optional*):
                Precomputed L2-normalised prompt embeddings of another vocabulary.
            output_hidden_states (`bool`, *optional*): return the vision encoder's hidden states (see
                [`OTSegSemanticSegmenterOutput`]); defaults to `config.output_hidden_states`.
            output_attentions (`bool`, *optional*): return the vision layers' attention weights (eager attention
                only); defaults to `config.output_attentions`.
            return_dict (`bool`, *optional*): return an [`OTSegSemanticSegmenterOutput`] rather than a tuple.

        At inference (eval mode) every image's Sinkhorn problems stop on their own convergence, so an image's
        logits do not depend on the other images of the batch; training uses the reference's batch-wide rule.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        config = self.config
        check_pixel_values(pixel_values, config.clip_config.vision_config, labels)

        # 1. text: (K, N, D) prompt embeddings of the call's vocabulary
        own_vocabulary = text_embeds is None and input_ids is None
        if text_embeds is not None and input_ids is not None:
            raise ValueError("give either text_embeds or input_ids, not both")
        if text_embeds is not None:
            self._check_text_embeds(text_embeds)
        elif input_ids is not None:
            text_embeds = self.get_text_embeddings(input_ids, attention_mask)
        else:
            text_embeds = self.class_text_embeds
            self._check_text_cache()

        # 2. labels per setting; an inductive model trains on its seen classes only
        setting = config.setting if own_vocabulary else "fully_supervised"
        if labels is not None:
            labels, class_ids = setting_labels(
                labels, text_embeds.shape[0], setting, config.seen_label_ids, config.ignore_index
            )
            text_embeds = text_embeds if class_ids is None else text_embeds[class_ids]

        # 3. vision: (B, 3, H, W) -> global (B, D), pixels (B, M, D)
        record = self._vision_record(output_hidden_states, output_attentions)
        global_embeds, pixel_embeds, (height, width) = self.forward_features(pixel_values, record)

        # 4. head: (B, K, M) maps -> (B, K, h, w); per-image Sinkhorn stopping at inference
        options = SinkhornOptions.from_config(config, per_image_stopping=not self.training)
        decoder_logits, score_logits = self.head(global_embeds, pixel_embeds, text_embeds, options)
        decoder_logits = decoder_logits.unflatten(-1, (height, width))
        score_logits = score_logits.unflatten(-1, (height, width))
        logits = config.ensemble_weight * decoder_logits + (1 - config.ensemble_weight) * score_logits

        # 5. loss of both paths; transductive pseudo labels from the ensemble
        loss = None
        if labels is not None:
            pseudo_logits = logits if setting == "transductive" else None
            paths = [(1.0, decoder_logits), (1.0, score_logits)]
            loss = zero_shot_loss(paths, labels, pixel_values.shape[-2:], config, pseudo_logits)

        output = OTSegSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            decoder_logits=decoder_logits,
            score_logits=score_logits,
            hidden_states=None if record.hidden_states is None else tuple(record.hidden_states),
            attentions=None if record.attentions is None else tuple(record.attentions),
        )
        return output if return_dict else output.to_tuple()


__all__ = ["OTSegForSemanticSegmentation", "OTSegPreTrainedModel", "OTSegSemanticSegmenterOutput"]
