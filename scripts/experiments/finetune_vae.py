"""Experiment (docs/results.md, "Session 6 experiments"): fine-tune the bundled demo VAE on new data.

usage (repo root): python scripts/experiments/finetune_vae.py OUT OCTAVES STEPS DATA...
  OCTAVES < 8 drops the top Fourier octaves of both embeddings (their weight columns are sliced off);
  DECODER_OCTAVES=K (environment) instead freezes the encoder and zeroes the decoder's query-embedding
  columns of octaves >= K (kept zero by a gradient mask): a band-limited decoder for the same latents.
Holds out the evaluation ids. Without these two, `mar3d train vae --init-from` does the same run.
"""
import sys
from pathlib import Path

import torch

from mar3d.config import load_config
from mar3d.models.io import load_vae
from mar3d.training import vae as training_vae
from mar3d.training.config import VAERunConfig

import os
out, octaves, steps, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
DECODER_OCTAVES = int(os.environ["DECODER_OCTAVES"]) if os.environ.get("DECODER_OCTAVES") else None
holdout = [l.strip() for l in open("mar3d/configs/holdout/ycb.txt") if l.strip() and not l.startswith("#")]
source = load_vae("mar3d/assets/demo_model/vae")
state = {k: v.float() for k, v in source.state_dict().items()}
if octaves != source.config.fourier_octaves:
    old = source.config.fourier_octaves
    # embedding columns: [xyz (3), sin (3*old, per axis then octave: angles flatten(-2) is axis-major), cos, (normals)]
    def keep_cols(extra):
        idx = list(range(3))
        for block in (0, 1):  # sin, cos
            base = 3 + block * 3 * old
            for axis in range(3):
                idx += [base + axis * old + k for k in range(octaves)]
        idx += [3 + 6 * old + i for i in range(extra)]
        return torch.tensor(idx)
    state["point_embed.weight"] = state["point_embed.weight"][:, keep_cols(3)]
    state["query_embed.weight"] = state["query_embed.weight"][:, keep_cols(0)]
config = load_config("small", VAERunConfig, "vae")
config.model.fourier_octaves = octaves
config.data.supervision_points = 2048
config.data.exclude_ids = holdout
config.train.max_steps = steps
config.train.lr = 3e-4
config.train.warmup_steps = 50
config.train.checkpoint_every = 100
config.train.val_every = 10_000
config.train.log_every = 25
init = training_vae.VAEModule.__init__
def warm_init(self, run_config):
    init(self, run_config)
    self.vae.load_state_dict(state)
    if DECODER_OCTAVES is not None:  # decoder-only: freeze the encoder, drop the query embedding's top octaves
        decoder = ("from_latent", "decoder_layers", "query_embed", "query_attn", "out_norm", "to_logit")
        for name, p in self.vae.named_parameters():
            p.requires_grad_(name.startswith(decoder))
        mask = torch.ones_like(self.vae.query_embed.weight)
        old = self.vae.config.fourier_octaves
        for block in (0, 1):
            for axis in range(3):
                start = 3 + block * 3 * old + axis * old
                mask[:, start + DECODER_OCTAVES:start + old] = 0
        with torch.no_grad():
            self.vae.query_embed.weight.mul_(mask)
        self.vae.query_embed.weight.register_hook(lambda g: g * mask)
        print("trainable", sum(p.numel() for p in self.vae.parameters() if p.requires_grad), "zeroed", int((mask == 0).sum()))
    if self.ema is not None:
        self.ema.shadow.load_state_dict(self.vae.state_dict())
training_vae.VAEModule.__init__ = warm_init
print(training_vae.train_vae(config, data, out, resume=(Path(out) / "checkpoints/last.ckpt").exists(),
                             progress_bar=False))
