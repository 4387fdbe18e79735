"""Training the Pyramid VAE: the Lightning module, its data, and ``train_vae`` used by the CLI."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from mar3d.config import ConfigError, from_dict, to_dict
from mar3d.data.datasets import VAEDataset, draw_pyramid, stack_pyramids
from mar3d.data import layout
from mar3d.mesh.occupancy import volume_iou
from mar3d.models.io import RUN_EXPORT_DIR, load_vae, save_vae
from mar3d.models.vae import PyramidVAE, legacy_order
from mar3d.training.common import AveragedModule, averaged_model, configure_adamw, fit, training_seconds
from mar3d.training.config import VAERunConfig
from mar3d.training.loader import train_loader
from mar3d.training.selection import select_objects


class VAEModule(AveragedModule):
    def __init__(self, run_config: dict):
        super().__init__()
        self.save_hyperparameters()
        self.run_config = from_dict(VAERunConfig, run_config, "run config")
        self.vae = PyramidVAE(self.run_config.model)
        if self.run_config.train.decoder_only:  # no gradient, no optimizer state, no weight decay for the encoder
            for p in self.vae.encoder_parameters():
                p.requires_grad_(False)
        self.keep_average(self.run_config.train.ema_decay)

    @property
    def live(self) -> PyramidVAE:
        return self.vae

    def load_model(self, folder: Path) -> PyramidVAE:
        return load_vae(folder)

    @property
    def unused_parameters(self) -> bool:
        """Whether some parameters get no gradient in a step: learned queries train one token count at a time."""
        model = self.run_config.model
        return model.queries == "learned" and len(model.token_counts) > 1

    def tokens_for_step(self, step: int) -> int:
        """Alternate the token counts step by step, so one VAE learns every count it must emit."""
        counts = self.run_config.model.token_counts
        return counts[step % len(counts)]

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        tokens = self.tokens_for_step(self.global_step)
        train = self.run_config.train
        output = self.vae(batch["pyramid"], batch["points"], tokens, seeds=batch["seed"],
                          mean_share=train.mean_decode_share, extra_noise=train.latent_noise)
        losses = self.vae.loss(output, batch["labels"], train.kl_weight, train.anchor_weight)
        batch_size = len(output.logits)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=batch_size)
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=batch_size)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_index: int) -> None:
        vae = self.averaged
        for tokens in self.run_config.model.token_counts:
            posterior = vae.encode(batch["pyramid"], tokens)
            cache = vae.prepare_decoder(posterior.mean)
            for part in ("uniform", "near"):
                logits = vae.query(cache, batch[f"{part}_points"])
                iou = volume_iou(logits, batch[f"{part}_labels"]).mean()
                self.log(f"val/iou_{part}_{tokens}", iou, batch_size=len(logits))

    def configure_optimizers(self):
        # The parameters in the order the VAE registered them before its per-level cross-attention became one
        # module per level (legacy_order): gradient clipping sums their norms in that order, so training is
        # bit for bit what it was, and the optimizer state of checkpoints saved before fits as it is.
        return configure_adamw(self.vae, self.run_config.train, order=legacy_order)


def validation_items(root: Path, ids: list[str], config: VAERunConfig, seed: int = 1234) -> list[dict]:
    """Fixed validation items: a pyramid and separate uniform / near-surface labelled points per object."""
    rng = torch.Generator().manual_seed(seed)
    items = []
    for item_id in ids:
        s = layout.read_samples(root, item_id)
        near = layout.read_meta(root, item_id)["counts"]["occupancy_near_surface"]
        numpy_rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=rng)))
        n = min(config.data.val_points, near, len(s["occ_points"]) - near)
        near_pick = numpy_rng.choice(near, n, replace=False)
        uniform_pick = near + numpy_rng.choice(len(s["occ_points"]) - near, n, replace=False)
        items.append({
            "pyramid": draw_pyramid(s["surface_points"], s["surface_normals"], config.model.pyramid_sizes(), numpy_rng),
            "near_points": torch.from_numpy(s["occ_points"][near_pick]),
            "near_labels": torch.from_numpy(s["occ_labels"][near_pick].astype("float32")),
            "uniform_points": torch.from_numpy(s["occ_points"][uniform_pick]),
            "uniform_labels": torch.from_numpy(s["occ_labels"][uniform_pick].astype("float32")),
        })
    return items


def train_vae(config: VAERunConfig, data_dirs: list[str | Path], run_dir: str | Path, resume: bool = False,
              progress_bar: bool = True, **trainer_overrides) -> Path:
    """Train (or resume) a VAE run; returns the exported model folder ``run_dir/model``."""
    run_dir = Path(run_dir)
    roots = [Path(d) for d in data_dirs]
    if config.train.decoder_only and not config.train.init_from:
        raise ConfigError("train.decoder_only fine-tunes a trained VAE's decoder: give the VAE with --init-from")
    if config.train.decoder_only and config.train.strategy == "fsdp":  # FSDP's root unit would mix frozen weights in
        raise ConfigError("train.decoder_only does not work with --strategy fsdp; use ddp (or one device)")
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    selection = select_objects(roots, config.data.include_ids, config.data.val_ids, config.data.exclude_ids)
    parts = [VAEDataset(root, ids=ids, pyramid=config.model.pyramid_sizes(), supervision=config.data.supervision_points,
                        rotate=config.data.rotate) for root, ids in selection.train.items()]
    train_set = ConcatDataset(parts)
    train_ids = selection.train_ids
    val_items = [item for root, ids in selection.val.items() for item in validation_items(root, ids, config)]
    val_loader = DataLoader(val_items, batch_size=1, collate_fn=_stack)

    module = VAEModule(to_dict(config))
    trainer = fit(module, train_loader(train_set, config.train), val_loader, run_dir, config, resume, progress_bar,
                  **trainer_overrides)
    model = averaged_model(trainer, module)
    if model is None:  # not global rank 0
        return run_dir / RUN_EXPORT_DIR
    return save_vae(model, run_dir / RUN_EXPORT_DIR,
                    extra={"trained_steps": trainer.global_step, "train_ids": train_ids,
                           "seconds": training_seconds(trainer)})


def _stack(items: list[dict]) -> dict:
    out = {}
    for key in items[0]:
        if key == "pyramid":
            out[key] = stack_pyramids([i[key] for i in items])
        else:
            out[key] = torch.stack([i[key] for i in items])
    return out
