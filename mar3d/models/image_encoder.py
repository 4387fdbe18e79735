"""Image encoders that turn a conditioning view into condition tokens (docs/method.md §6), chosen by config.

- ``clip_dinov2`` (the paper / release): one 224×224 view, CLIP-normalised, into a frozen CLIP ViT-L/14
  and a frozen DINOv2 ViT-L/14 (``transformers``: CLIPVisionModel, Dinov2Model, from a local folder or a
  hub id). Tokens = [CLIP CLS] + DINOv2 patch tokens, joined along the sequence as in the release:
  1 + 16 × 16 = 257 tokens of width 1024. Where the two widths differ (small test models), a trainable
  Linear maps the DINOv2 tokens to the CLIP width.
- ``small``: a ViT trained from scratch together with the MAR (the CPU-sized demo model). Its stem cuts the
  image into patches with one strided convolution (``stem: patch``) or, with ``stem: conv``, reaches the same
  patch grid through log2(patch_size) stride-2 3×3 convolutions ("Early Convolutions Help Transformers See
  Better", Xiao et al. 2021): overlapping receptive fields, a local prior. It lowers the demo's training loss
  but not its meshes' scores (docs/results.md, "Session 19 experiments"), so the demo keeps ``patch``.

Input to both: (B, 3, H, W) floats in [0, 1], composited on white (``datasets.composite_on_white``);
images of another size are resized to ``image_size``. Output: (B, num_tokens, width).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mar3d.config import ConfigError
from mar3d.models.layers import SelfAttentionBlock

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageEncoderConfig:
    kind: Literal["small", "clip_dinov2"] = "small"
    image_size: int = 224  # the resolution the encoder sees
    patch_size: int = 16  # small: its patches; clip_dinov2: DINOv2's (14)
    width: int = 256  # token width given out (clip_dinov2: the CLIP hidden size)
    # small only
    depth: int = 4
    heads: int = 4
    stem: Literal["patch", "conv"] = "patch"
    # clip_dinov2 only: local folders or hub ids, and DINOv2's hidden size (None: the same as width)
    clip_path: str = ""
    dinov2_path: str = ""
    dinov2_width: int | None = None

    def validate(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_encoder.image_size {self.image_size} must be a multiple of "
                              f"image_encoder.patch_size {self.patch_size}")
        if self.kind == "small" and self.width % self.heads:
            raise ConfigError(f"image_encoder.width {self.width} must be divisible by image_encoder.heads {self.heads}")
        if self.stem not in ("patch", "conv"):
            raise ConfigError(f"image_encoder.stem must be patch or conv, not {self.stem!r}")
        if self.kind == "small" and self.stem == "conv" and (self.patch_size & (self.patch_size - 1) or
                                                             self.patch_size < 2):
            raise ConfigError(f"image_encoder.stem conv needs a power-of-two patch_size, not {self.patch_size}")
        if self.kind == "clip_dinov2" and not (self.clip_path and self.dinov2_path):
            raise ConfigError("image_encoder: clip_dinov2 needs clip_path and dinov2_path")

    @property
    def num_tokens(self) -> int:
        patches = (self.image_size // self.patch_size) ** 2
        return patches + 1 if self.kind == "clip_dinov2" else patches


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), bicubic with antialiasing, kept in [0, 1]."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def conv_stem(width: int, patch_size: int) -> nn.Sequential:
    """(B, 3, H, W) -> (B, width, H / patch_size, W / patch_size) through log2(patch_size) stride-2 3×3
    convolutions of width / 4, width / 2, then width channels (GroupNorm + GELU after each), then a 1×1."""
    layers: list[nn.Module] = []
    stages = patch_size.bit_length() - 1
    channels_in = 3
    for i in range(stages):
        channels = min(width, max(16, width * 2**i // 4))
        layers += [nn.Conv2d(channels_in, channels, 3, stride=2, padding=1),
                   nn.GroupNorm(math.gcd(8, channels), channels), nn.GELU()]
        channels_in = channels
    layers.append(nn.Conv2d(channels_in, width, 1))
    return nn.Sequential(*layers)


class SmallImageEncoder(nn.Module):
    """ViT from scratch: (B, 3, H, W) -> (B, (image_size / patch_size)², width)."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        self.patch_embed = (conv_stem(config.width, config.patch_size) if config.stem == "conv" else
                            nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size))
        self.pos_embed = nn.Parameter(torch.randn(1, config.num_tokens, config.width) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(config.width, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize(images, self.config.image_size) * 2 - 1
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class _Frozen:
    """Holds frozen backbones outside the owner's parameters and state dict (their weights stay in their
    own folders); a deep copy (an EMA model) shares them instead of duplicating them."""

    def __init__(self, clip: nn.Module, dinov2: nn.Module):
        self.clip, self.dinov2 = clip, dinov2

    def __deepcopy__(self, memo) -> "_Frozen":
        return self


class ClipDinov2Encoder(nn.Module):
    """Frozen CLIP + DINOv2: (B, 3, H, W) -> (B, 1 + (image_size / 14)², width).

    The backbones load on first use (or ``load_backbones()``), so building a MAR around this encoder, on
    the meta device to count its parameters or to load its weights, needs no backbone files. ``.to()``
    moves them along with the module.
    """

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        dinov2_width = config.dinov2_width or config.width
        self.dinov2_proj = nn.Linear(dinov2_width, config.width) if dinov2_width != config.width else nn.Identity()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._backbones: _Frozen | None = None

    def load_backbones(self) -> None:
        from transformers import CLIPVisionModel, Dinov2Model

        c = self.config
        clip = CLIPVisionModel.from_pretrained(c.clip_path)
        dinov2 = Dinov2Model.from_pretrained(c.dinov2_path)
        expected = {"CLIP hidden size": (clip.config.hidden_size, c.width),
                    "CLIP image size": (clip.config.image_size, c.image_size),
                    "DINOv2 hidden size": (dinov2.config.hidden_size, c.dinov2_width or c.width),
                    "DINOv2 patch size": (dinov2.config.patch_size, c.patch_size)}
        wrong = [f"{name} {got} (config: {want})" for name, (got, want) in expected.items() if got != want]
        if wrong:
            raise ValueError(f"{c.clip_path} / {c.dinov2_path} do not match the image encoder config: {'; '.join(wrong)}")
        like = self.mean
        self._backbones = _Frozen(*(m.requires_grad_(False).eval().to(device=like.device, dtype=like.dtype)
                                    for m in (clip, dinov2)))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._backbones is not None:
            self._backbones.clip._apply(fn)
            self._backbones.dinov2._apply(fn)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._backbones is None:
            self.load_backbones()
        x = (resize(images, self.config.image_size) - self.mean) / self.std
        with torch.no_grad():
            clip_cls = self._backbones.clip(pixel_values=x).last_hidden_state[:, :1]
            dinov2_patches = self._backbones.dinov2(pixel_values=x).last_hidden_state[:, 1:]
        return torch.cat([clip_cls, self.dinov2_proj(dinov2_patches)], dim=1)


def build_image_encoder(config: ImageEncoderConfig) -> nn.Module:
    return SmallImageEncoder(config) if config.kind == "small" else ClipDinov2Encoder(config)
