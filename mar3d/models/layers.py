"""Building blocks shared by every model: Fourier point embedding, attention, pre-norm blocks.

All attention goes through ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused
kernel (flash / memory-efficient on GPU, a fused CPU kernel in bf16) without custom extensions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FourierEmbedder(nn.Module):
    """xyz -> [xyz, sin(2^k pi xyz), cos(2^k pi xyz)] for k < octaves (release: 8 octaves, 51 dims)."""

    def __init__(self, octaves: int = 8):
        super().__init__()
        self.register_buffer("frequencies", (2.0 ** torch.arange(octaves)) * math.pi, persistent=False)
        self.out_dim = 3 * (1 + 2 * octaves)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """(..., 3) -> (..., 3 + 6 * octaves)."""
        angles = (xyz[..., None] * self.frequencies).flatten(-2)  # (..., 3 * octaves)
        return torch.cat([xyz, angles.sin(), angles.cos()], dim=-1)


class Attention(nn.Module):
    """Multi-head attention of queries x over a context (itself for self-attention)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, Dc) -> keys and values, each (B, heads, M, D / heads). Cacheable per shape."""
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) queries against precomputed keys/values -> (B, N, D); ``bias`` (B, heads, N, M) is added to
        the attention logits."""
        out = F.scaled_dot_product_attention(self._split(self.to_q(x)), keys, values, attn_mask=bias)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, *self.keys_values(x if context is None else context))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN x), then x + mlp(LN x). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Queries attend to a (normalized) context, then an MLP: (B, N, D), (B, M, Dc) -> (B, N, D).

    ``keys_values`` / ``attend`` split the work so a fixed context's keys and values are computed once
    and reused for many query chunks (grid decoding).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.norm_q, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(context_dim or dim)
        self.attn = Attention(dim, heads, context_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn.keys_values(self.norm_context(context))

    def attend(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn.attend(self.norm_q(x), keys, values, bias)
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attend(x, *self.keys_values(context))
