"""Pyramid VAE (paper §3.2): multi-resolution surface points -> latent tokens -> occupancy field.

    encode:  queries (FPS points of the densest level, or learned)           (B, N, D)
             + sum over levels k of CrossAttn_k(queries, embed(level_k))     one LevelCrossAttention per level
             -> self-attention x encoder_layers -> LayerNorm -> Linear -> mean, log-variance (B, N, C)
    decode:  Linear(C -> D) -> self-attention x decoder_layers               once per shape
             (local_decoder: + LayerNorm -> Linear -> an anchor point (B, N, 3) per token)
             query points: embed -> CrossAttn(latents) -> LayerNorm -> Linear -> logit   per chunk
             (local_decoder: each head's attention logits get -c_h * |query - anchor|^2)

One trained VAE emits both token counts the MARs need: N = 1024 from levels (16384, 4096, 1024) and
N = 256 from (4096, 1024, 256) (docs/method.md §4). See docs/vae.md for the choice of FPS queries.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mar3d.config import ConfigError
from mar3d.models.fps import farthest_point_sample
from mar3d.models.layers import Attention, CrossAttentionBlock, FourierEmbedder, MLP, SelfAttentionBlock
from mar3d.models.token_order import TOKEN_ORDERS, TokenOrder, band_order

LOGVAR_RANGE = (-30.0, 20.0)  # release
INITIAL_LOGVAR = -6.0
TRAINING_ONLY_KEYS = ("kl_weight", "mean_decode_share")  # once in VAEConfig, now in the VAE run's train section


@dataclass
class VAEConfig:
    width: int = 256
    heads: int = 4
    latent_channels: int = 64
    encoder_layers: int = 1
    decoder_layers: int = 4
    fourier_octaves: int = 8
    queries: Literal["fps", "learned"] = "fps"
    pyramid: bool = True  # False: the single-level ablation (densest level only)
    pyramid_levels: int = 3
    pyramid_ratio: int = 4  # each level has 1/ratio of the points of the one above
    points_per_token: int = 16  # densest level size / token count (paper: 16384 points -> 1024 tokens)
    token_counts: list[int] = field(default_factory=lambda: [256, 1024])  # counts it is trained to emit
    # Locality prior for the decoder (ours, not the paper's; docs/vae.md): the decoder predicts each token's
    # anchor, trained towards the FPS point the token was queried at, and each query attends more to tokens
    # anchored near it (a Gaussian bias per head, widths learned). The latents stay C channels per token, so
    # the MARs do not change. Needs FPS queries.
    local_decoder: bool = False
    # The order the FPS tokens come out in (mar3d/models/token_order.py): "bands" gives every token index a
    # place (height band, azimuth) the MARs can learn; the VAE itself is indifferent to it. "fps" (farthest-point
    # order) is what models saved before this setting existed were trained with, hence the default.
    token_order: TokenOrder = "fps"

    @classmethod
    def migrate(cls, data: dict, where: str) -> dict:
        """Model folders exported before the training-only settings moved to the run's ``train`` section
        (``mar3d.training.config.VAETrainConfig``) carry them here: ignored, a model does not use them."""
        return {k: v for k, v in data.items() if k not in TRAINING_ONLY_KEYS}

    def validate(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"model.width {self.width} must be divisible by model.heads {self.heads}")
        if not self.token_counts or min(self.token_counts) < 1:
            raise ConfigError(f"model.token_counts must be positive, got {self.token_counts}")
        for n in self.token_counts:
            if self.level_sizes(n)[-1] < 1 or (self.pyramid and n * self.points_per_token % self.pyramid_ratio ** (self.pyramid_levels - 1)):
                raise ConfigError(f"model: {n} tokens do not give whole pyramid levels")
        if self.queries == "fps" and self.points_per_token < 1:
            raise ConfigError("model.points_per_token must be >= 1")
        if self.local_decoder and self.queries != "fps":
            raise ConfigError("model.local_decoder needs queries: fps (its anchors are the FPS points)")
        if self.token_order not in TOKEN_ORDERS:
            raise ConfigError(f"model.token_order must be one of {list(TOKEN_ORDERS)}, got {self.token_order!r}")
        if self.token_order != "fps" and self.queries != "fps":
            raise ConfigError("model.token_order orders FPS tokens by their points: it needs queries: fps")

    @property
    def num_levels(self) -> int:
        return self.pyramid_levels if self.pyramid else 1

    def level_sizes(self, tokens: int) -> list[int]:
        """Input point counts (densest first) used to encode ``tokens`` latent tokens."""
        top = tokens * self.points_per_token
        return [top // self.pyramid_ratio**k for k in range(self.num_levels)]

    def pyramid_sizes(self) -> tuple[int, ...]:
        """Every level size any trained token count needs: what the dataset must draw (nested)."""
        return tuple(sorted({s for n in self.token_counts for s in self.level_sizes(n)}, reverse=True))


@dataclass
class Posterior:
    mean: torch.Tensor  # (B, N, C)
    logvar: torch.Tensor  # (B, N, C)
    positions: torch.Tensor | None = None  # (B, N, 3): the FPS points the tokens were queried at (None: learned)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + (0.5 * self.logvar).exp() * noise

    def sample_per_shape(self, seeds: torch.Tensor, mean_share: float = 0.0, extra_noise: float = 0.0) -> torch.Tensor:
        """A sample (B, N, C) whose noise for each shape comes from that shape's seed (B,) (training's sampler's).

        So a training step is a function of its samples alone: W ranks with batch B train exactly as one
        process with batch W * B. The generator is seeded with seed + 1, not the stream the shape's points were
        drawn from. With ``mean_share`` > 0 that generator first decides whether the shape gets its mean instead.
        ``extra_noise`` > 0 then adds Gaussian noise of that many times the shape's latent standard deviation
        (train.latent_noise: a decoder that reads generated latents, which stray further than a posterior's).
        """
        device = self.mean.device
        latents = []
        for mean, logvar, seed in zip(self.mean, self.logvar, seeds.tolist()):
            generator = torch.Generator(device).manual_seed(seed + 1)
            if mean_share > 0 and torch.rand((), generator=generator, device=device).item() < mean_share:
                latents.append(mean[None])
            else:
                latents.append(Posterior(mean[None], logvar[None]).sample(generator))
            if extra_noise > 0:
                noise = torch.randn(mean[None].shape, generator=generator, device=device, dtype=mean.dtype)
                latents[-1] = latents[-1] + extra_noise * mean.detach().std() * noise
        return torch.cat(latents)

    def kl(self) -> torch.Tensor:
        """(B,) KL to the unit Gaussian, averaged over tokens and channels."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).mean(dim=(1, 2))


@dataclass
class DecoderCache:
    """What decoding a shape costs once: keys/values of the final cross-attention, (B, heads, N, D/heads), and
    for a local decoder each token's predicted anchor (B, N, 3)."""

    keys: torch.Tensor
    values: torch.Tensor
    anchors: torch.Tensor | None = None


@dataclass
class ForwardOutput:
    """What a training forward pass gives: logits (B, Q), KL (B,) and, for a local decoder, the mean squared
    distance (B,) of the predicted anchors from the FPS points (zeros otherwise)."""

    logits: torch.Tensor
    kl: torch.Tensor
    anchor_error: torch.Tensor


class LevelCrossAttention(nn.Module):
    """The encoder's attention to one pyramid level: normalized queries attend to the level's normalized points.

    ``CrossAttentionBlock`` without its residual and MLP: the encoder adds every level's output to the same
    queries and runs one MLP on the sum, so per-level blocks (each with its own MLP) would be another model.
    (B, N, D), (B, n_k, D) -> (B, N, D).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm_q(queries), self.norm_context(context))


# Before LevelCrossAttention, the per-level parts were three parallel lists: level_norm_q.K, level_norm_x.K and
# level_attn.K (the former demo model, older runs and checkpoints). Loading renames them.
_LEGACY_PARTS = {"level_norm_q": "norm_q", "level_norm_x": "norm_context", "level_attn": "attn"}
_CURRENT_PARTS = {part: legacy for legacy, part in _LEGACY_PARTS.items()}
_LEGACY_NAME = re.compile(r"(^|\.)(level_norm_q|level_norm_x|level_attn)\.(\d+)\.")
_CURRENT_NAME = re.compile(r"(^|\.)level_attention\.(\d+)\.(norm_q|norm_context|attn)\.")


def current_name(name: str) -> str:
    """A parameter name of the older layout (``level_attn.1.to_q.weight``) -> today's
    (``level_attention.1.attn.to_q.weight``); other names, with any prefix, unchanged."""
    return _LEGACY_NAME.sub(lambda m: f"{m[1]}level_attention.{m[3]}.{_LEGACY_PARTS[m[2]]}.", name)


def legacy_name(name: str) -> str:
    """The inverse of ``current_name``."""
    return _CURRENT_NAME.sub(lambda m: f"{m[1]}{_CURRENT_PARTS[m[3]]}.{m[2]}.", name)


def is_legacy_name(name: str) -> bool:
    return _LEGACY_NAME.search(name) is not None


def legacy_order(names: list[str]) -> list[str]:
    """Today's parameter names (in today's registration order) in the order the older layout registered them:
    its three lists held every level's query norms, then every level's point norms, then the attentions."""
    part_rank = {"norm_q": 0, "norm_context": 1, "attn": 2}
    matches = [_CURRENT_NAME.search(n) for n in names]
    first = next((i for i, m in enumerate(matches) if m), 0)
    return [names[i] for i in sorted(range(len(names)), key=lambda i: (
        (first, part_rank[matches[i][3]], int(matches[i][2]), i) if matches[i] else (i, 0, 0, 0)))]


def _rename_legacy_keys(module, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and is_legacy_name(k[len(prefix):])]:
        state_dict[prefix + current_name(key[len(prefix):])] = state_dict.pop(key)


class PyramidVAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.width
        self.fourier = FourierEmbedder(config.fourier_octaves)
        # Encoder: surface points (xyz + normal) and, for FPS queries, the queries themselves.
        self.point_embed = nn.Linear(self.fourier.out_dim + 3, d)
        if config.queries == "learned":
            self.learned_queries = nn.ParameterDict(
                {str(n): nn.Parameter(torch.randn(n, d) * 0.02) for n in config.token_counts})
        self.level_attention = nn.ModuleList(LevelCrossAttention(d, config.heads) for _ in range(config.num_levels))
        self.encoder_norm_mlp, self.encoder_mlp = nn.LayerNorm(d), MLP(d)
        self.encoder_layers = nn.ModuleList(SelfAttentionBlock(d, config.heads) for _ in range(config.encoder_layers))
        self.encoder_out_norm = nn.LayerNorm(d)
        self.to_posterior = nn.Linear(d, 2 * config.latent_channels)
        # Start with a small posterior variance: at log-variance 0 the noise swamps the mean early on, the
        # decoder learns to read noisy latents only, and decoding the posterior mean fails for hundreds of
        # steps. The KL term still pulls the variance up as far as reconstruction allows.
        nn.init.constant_(self.to_posterior.bias[config.latent_channels:], INITIAL_LOGVAR)
        # Decoder: latents once per shape, then query points in chunks.
        self.from_latent = nn.Linear(config.latent_channels, d)
        self.decoder_layers = nn.ModuleList(SelfAttentionBlock(d, config.heads) for _ in range(config.decoder_layers))
        self.query_embed = nn.Linear(self.fourier.out_dim, d)
        self.query_attn = CrossAttentionBlock(d, config.heads)
        self.out_norm, self.to_logit = nn.LayerNorm(d), nn.Linear(d, 1)
        if config.local_decoder:
            self.anchor_norm, self.to_anchor = nn.LayerNorm(d), nn.Linear(d, 3)
            # Per-head Gaussian widths from 0.1 (local) to 1.0 (about global) in the [-1, 1] frame: log(1 / 2w^2).
            widths = torch.logspace(-1, 0, config.heads) if config.heads > 1 else torch.tensor([0.3])
            self.locality_log_scale = nn.Parameter(-torch.log(2 * widths**2))
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)  # older weights load (legacy_name)

    # The modules that map surface points to the posterior; the rest decodes latents (decoder_parameters).
    ENCODER_MODULES = ("point_embed", "learned_queries", "level_attention", "encoder_norm_mlp", "encoder_mlp",
                       "encoder_layers", "encoder_out_norm", "to_posterior")

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.ENCODER_MODULES if hasattr(self, name) for p in getattr(self, name).parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        encoder = {id(p) for p in self.encoder_parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]

    # ----------------------------------------------------------------- encoder
    def select_levels(self, pyramid: list[torch.Tensor], tokens: int) -> list[torch.Tensor]:
        """Pick the levels (each (B, n_k, 6)) that encode ``tokens`` tokens from a drawn pyramid."""
        by_size = {level.shape[1]: level for level in pyramid}
        sizes = self.config.level_sizes(tokens)
        missing = [s for s in sizes if s not in by_size]
        if missing:
            raise ValueError(f"{tokens} tokens need levels of {sizes} points; the pyramid lacks {missing}")
        return [by_size[s] for s in sizes]

    def embed_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 6) xyz + normal -> (B, P, D)."""
        return self.point_embed(torch.cat([self.fourier(points[..., :3]), points[..., 3:]], dim=-1))

    def initial_queries(self, densest: torch.Tensor, tokens: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries (B, N, D) and the points they stand for (B, N, 3), None for learned queries."""
        if self.config.queries == "learned":
            if str(tokens) not in self.learned_queries:
                raise ValueError(f"learned queries exist for {self.config.token_counts} tokens, not {tokens}")
            return self.learned_queries[str(tokens)].expand(densest.shape[0], -1, -1), None
        index = farthest_point_sample(densest[..., :3], tokens)
        picked = torch.gather(densest, 1, index[..., None].expand(-1, -1, densest.shape[-1]))
        if self.config.token_order == "bands":
            order = band_order(picked[..., :3]).to(picked.device)
            picked = torch.gather(picked, 1, order[..., None].expand(-1, -1, picked.shape[-1]))
        return self.embed_points(picked), picked[..., :3]

    def encode(self, pyramid: list[torch.Tensor], tokens: int) -> Posterior:
        """Surface pyramid (levels (B, n_k, 6), any superset of the needed ones) -> posterior over (B, N, C)."""
        levels = self.select_levels(pyramid, tokens)
        queries, positions = self.initial_queries(levels[0], tokens)
        h = queries
        for level, attention in zip(levels, self.level_attention):
            h = h + attention(queries, self.embed_points(level))
        h = h + self.encoder_mlp(self.encoder_norm_mlp(h))
        for block in self.encoder_layers:
            h = block(h)
        mean, logvar = self.to_posterior(self.encoder_out_norm(h)).chunk(2, dim=-1)
        return Posterior(mean, logvar.clamp(*LOGVAR_RANGE), positions)

    # ----------------------------------------------------------------- decoder
    def prepare_decoder(self, latents: torch.Tensor) -> DecoderCache:
        """(B, N, C) latents -> the per-shape cache; the self-attention stack runs here, once."""
        h = self.from_latent(latents)
        for block in self.decoder_layers:
            h = block(h)
        anchors = self.to_anchor(self.anchor_norm(h)) if self.config.local_decoder else None
        return DecoderCache(*self.query_attn.keys_values(h), anchors)

    def locality_bias(self, anchors: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Additive attention bias (B, heads, Q, N): -c_h |point - anchor|^2, c_h = exp(locality_log_scale_h)."""
        distance2 = torch.cdist(points.float(), anchors.float()).square()  # (B, Q, N)
        scale = self.locality_log_scale.float().exp()[None, :, None, None]
        return (-scale * distance2[:, None]).to(points.dtype)

    def query(self, cache: DecoderCache, points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits (B, Q) at points (B, Q, 3); positive inside."""
        x = self.query_embed(self.fourier(points))
        bias = None if cache.anchors is None else self.locality_bias(cache.anchors, points).to(x.dtype)
        x = self.query_attn.attend(x, cache.keys, cache.values, bias)
        return self.to_logit(self.out_norm(x)).squeeze(-1)

    def decode(self, latents: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.query(self.prepare_decoder(latents), points)

    # ----------------------------------------------------------------- training
    def forward(self, pyramid: list[torch.Tensor], points: torch.Tensor, tokens: int,
                seeds: torch.Tensor | None = None, mean_share: float = 0.0,
                generator: torch.Generator | None = None, extra_noise: float = 0.0) -> ForwardOutput:
        """Paper §3.2, reconstruction: encode, sample the posterior, decode: logits (B, Q) at ``points``, the
        KL (B,) of the posterior and, for a local decoder, how far its anchors are from the FPS points (B,).

        With ``seeds`` (B,) each shape's noise comes from its own seed and a ``mean_share`` of the shapes decode
        their mean (``Posterior.sample_per_shape``, what training does); otherwise ``generator`` draws it.
        """
        posterior = self.encode(pyramid, tokens)
        latents = (posterior.sample(generator) if seeds is None
                   else posterior.sample_per_shape(seeds, mean_share, extra_noise))
        cache = self.prepare_decoder(latents)
        if cache.anchors is None:
            anchor_error = torch.zeros(len(latents), device=latents.device)
        else:
            anchor_error = (cache.anchors.float() - posterior.positions.float()).square().sum(-1).mean(-1)
        return ForwardOutput(self.query(cache, points), posterior.kl(), anchor_error)

    def loss(self, output: ForwardOutput, labels: torch.Tensor, kl_weight: float,
             anchor_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """Paper Eq. 3: BCE on occupancy + kl_weight * KL (the weight is a training setting, train.kl_weight),
        plus anchor_weight * the anchors' mean squared error for a local decoder (ours)."""
        bce = F.binary_cross_entropy_with_logits(output.logits.float(), labels.float())
        kl = output.kl.float().mean()
        losses = {"loss": bce + kl_weight * kl, "bce": bce, "kl": kl}
        if self.config.local_decoder:
            losses["anchor"] = output.anchor_error.float().mean()
            losses["loss"] = losses["loss"] + anchor_weight * losses["anchor"]
        return losses
