"""Model parts shared by OTSeg and ZegOT: the relationship descriptor and the multi-prompt Sinkhorn
(MPS / MPOT) score map (spec sections 3, 4 and 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sinkhorn import log_sinkhorn


class RelationshipDescriptor(nn.Module):
    """Class queries from text and image: `Linear(2D -> D)([g * t, t])` (spec section 3).

    Args:
        dim (`int`): joint embedding size D.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, global_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) image embeddings, (K, N, D) prompt embeddings -> (B, K, N, D) queries."""
        text = text_embeds.unsqueeze(0).expand(global_embeds.shape[0], -1, -1, -1)  # (B, K, N, D)
        image_text = global_embeds[:, None, None, :] * text
        return self.proj(torch.cat([image_text, text], dim=-1))


def sinkhorn_similarity_map(
    pixel_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    epsilon: float,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal-transport matching of pixels to each class's prompts (spec sections 4 and 5.2-5.3).

    For every image b and class k, the cosine similarities S (M pixels x N prompts) define the cost
    1 - S of an entropic OT problem with uniform marginals 1/M and 1/N; the class map is
    `M * N * sum_n T * S`.

    Args:
        pixel_embeds: (B, M, D) L2-normalised pixel embeddings.
        prompt_embeds: (B, K, N, D) L2-normalised prompt embeddings.

    Returns:
        The map (B, K, M) and the plan (B, K, M, N).
    """
    batch, num_classes, num_prompts, _ = prompt_embeds.shape
    num_pixels = pixel_embeds.shape[1]
    similarity = torch.einsum("bmd,bknd->bkmn", pixel_embeds, prompt_embeds)
    plan = log_sinkhorn((1 - similarity).flatten(0, 1), epsilon, max_iter=max_iter, tol=tol)  # (B K, M, N)
    plan = plan.view(batch, num_classes, num_pixels, num_prompts)
    score = (plan * similarity).sum(-1) * (num_pixels * num_prompts)  # (B, K, M)
    return score.to(pixel_embeds.dtype), plan


def multi_prompt_sinkhorn_score(
    pixel_embeds: torch.Tensor, queries: torch.Tensor, epsilon: float, max_iter: int = 100, tol: float = 1e-6
) -> torch.Tensor:
    """The MPS score map (spec section 4): (B, M, D) pixels, (B, K, N, D) queries -> (B, K, M)."""
    score, _ = sinkhorn_similarity_map(pixel_embeds, F.normalize(queries, dim=-1), epsilon, max_iter, tol)
    return score


__all__ = ["RelationshipDescriptor", "multi_prompt_sinkhorn_score", "sinkhorn_similarity_map"]
