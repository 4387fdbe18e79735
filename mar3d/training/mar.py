"""Training MAR-LR and MAR-HR: the run config, the Lightning module, ``train_mar``.

Each training sample is one (object, rendered view) pair: the view composited on white is the condition,
the VAE latents of the object rotated into that view's frame are the target (256 tokens for MAR-LR, 1024
for MAR-HR, which also gets the 256-token latents of the same view as its LR condition). Latents come from
a ``mar3d cache-latents`` folder when one is given, otherwise the frozen VAE encodes each batch. The items
are ``mar3d.data.datasets.MARDataset``'s.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from mar3d.config import ConfigError, from_dict, to_dict
from mar3d.data import latent_cache, layout
from mar3d.data.datasets import LR_LATENTS_KEY, MARDataset, draw_pyramid, stack_pyramids
from mar3d.models.io import MAR_KIND, RUN_EXPORT_DIR, load_mar, load_vae, model_folder, read_model_config, save_mar
from mar3d.models.mar import MAR
from mar3d.models.vae import PyramidVAE
from mar3d.training.cache_latents import vae_fingerprint
from mar3d.training.common import AveragedModule, averaged_model, configure_adamw, fit, training_seconds
from mar3d.training.config import MARRunConfig
from mar3d.training.loader import train_loader
from mar3d.training.selection import select_objects


class MARModule(AveragedModule):
    def __init__(self, run_config: dict):
        super().__init__()
        self.save_hyperparameters()
        self.run_config = from_dict(MARRunConfig, run_config, "run config")
        self.mar = MAR(self.run_config.model)
        self.keep_average(self.run_config.train.ema_decay)
        self._vae: list[PyramidVAE] = []  # frozen; a list keeps it out of the checkpoint

    @property
    def live(self) -> MAR:
        return self.mar

    def load_model(self, folder: Path) -> MAR:
        return load_mar(folder)

    def attach_vae(self, vae: PyramidVAE) -> None:
        self._vae = [vae.eval().requires_grad_(False)]

    def on_fit_start(self) -> None:
        if self._vae:
            self._vae[0].to(self.device)

    @torch.no_grad()
    def batch_latents(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target latents (B, N, C) and, for MAR-HR, LR latents (B, N_lr, C): cached, or encoded now."""
        model = self.run_config.model
        if "latents" in batch:
            return batch["latents"].float(), batch.get(LR_LATENTS_KEY)
        vae = self._vae[0]
        latents = vae.encode(batch["pyramid"], model.num_tokens).mean.float()
        lr = vae.encode(batch["pyramid"], model.lr_tokens).mean.float() if model.stage == "hr" else None
        return latents, lr

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        latents, lr = self.batch_latents(batch)
        losses = self.mar.forward_loss(latents, batch["image"], lr)
        self.log("train/loss", losses["loss"], batch_size=len(latents))
        self.log("train/mask_ratio", losses["mask_ratio"], batch_size=len(latents))
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=len(latents))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_index: int) -> None:
        latents, lr = self.batch_latents(batch)
        generator = torch.Generator(latents.device).manual_seed(batch_index)  # the same draws every time
        losses = self.averaged.forward_loss(latents, batch["image"], lr, generator=generator)
        self.log("val/loss", losses["loss"], batch_size=len(latents))

    def configure_optimizers(self):
        # docs/method.md §5 (LTH14): no weight decay on the diffusion head, biases and norms.
        return configure_adamw(self.mar, self.run_config.train, no_decay_modules=(self.mar.diffusion_head,))


def _collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([i["image"] for i in items]), "id": [i["id"] for i in items],
           "view": torch.tensor([i["view"] for i in items])}
    for key in ("latents", LR_LATENTS_KEY):
        if key in items[0]:
            out[key] = torch.stack([i[key] for i in items])
    if "pyramid" in items[0]:
        out["pyramid"] = stack_pyramids([i["pyramid"] for i in items])
    return out


def mar_dataset(config: MARRunConfig, root: Path, ids: list[str], views: int = 0,
                pyramid_sizes: tuple[int, ...] = ()) -> MARDataset:
    """The run's (object, view) pairs of one prepared directory: cached latents when the run has a cache,
    else surface pyramids of the VAE's ``pyramid_sizes`` for it to encode."""
    model = config.model
    return MARDataset(root, ids, pyramid=pyramid_sizes, image_size=config.data.image_size, views=views,
                      latents=config.latents or None, tokens=model.num_tokens,
                      lr_tokens=model.lr_tokens if model.stage == "hr" else None,
                      cached_images=config.data.cached_images, frame_fill=config.data.frame_fill)


def run_datasets(config: MARRunConfig, roots: list[str | Path], selection,
                 pyramid_sizes: tuple[int, ...] = ()) -> dict[str, ConcatDataset]:
    """The "train" and "val" sets of a run: the selected objects' views, each training folder's
    ``data.repeats[<its name>]`` times over (the same dataset object, so one image cache)."""
    names = [Path(root).name for root in roots]
    unknown = set(config.data.repeats) - set(names)
    if unknown:
        raise ConfigError(f"data.repeats names {sorted(unknown)}, not among the --data folders ({', '.join(names)})")
    sets = {}
    for name, chosen, views in (("train", selection.train, config.data.views_per_object),
                                ("val", selection.val, config.data.val_views)):
        parts = []
        for root, ids in chosen.items():
            dataset = mar_dataset(config, root, ids, views, pyramid_sizes)
            parts += [dataset] * (config.data.repeats.get(Path(root).name, 1) if name == "train" else 1)
        sets[name] = ConcatDataset(parts)
    return sets


def measure_latent_std(config: MARRunConfig, vae: PyramidVAE, selection, tokens: int, objects: int = 16) -> float:
    """Std of the training latents of one token count: from the cache's record, else encoded now."""
    if config.latents:
        info = latent_cache.read_info(config.latents)
        if str(tokens) in info.get("latent_std", {}):
            return float(info["latent_std"][str(tokens)])
    values = []
    for root, ids in selection.train.items():
        for item_id in ids[:max(0, objects - len(values))]:
            s = layout.read_samples(root, item_id)
            rng = np.random.default_rng(0)
            pyramid = [p[None] for p in draw_pyramid(s["surface_points"], s["surface_normals"],
                                                     vae.config.pyramid_sizes(), rng)]
            with torch.no_grad():
                values.append(vae.encode(pyramid, tokens).mean.flatten())
    return float(torch.cat(values).std())


def measure_latent_scales(config: MARRunConfig, vae: PyramidVAE, selection) -> dict[str, float]:
    """``latent_scale`` (and, for MAR-HR, ``lr_latent_scale``): 1 / std of the training latents.

    Deterministic, so a resumed run measures the same values. Empty when ``data.measure_latent_scale`` is off.
    """
    model = config.model
    if not config.data.measure_latent_scale:
        return {}
    scales = {"latent_scale": 1.0 / measure_latent_std(config, vae, selection, model.num_tokens)}
    if model.stage == "hr":
        scales["lr_latent_scale"] = 1.0 / measure_latent_std(config, vae, selection, model.lr_tokens)
    return scales


def source_latent_scales(folder: str | Path) -> dict[str, float]:
    """``latent_scale`` and ``lr_latent_scale`` of the exported MAR that a fine-tuning run starts from."""
    model = read_model_config(model_folder(folder), MAR_KIND)["config"]
    return {"latent_scale": model["latent_scale"], "lr_latent_scale": model["lr_latent_scale"]}


def train_mar(config: MARRunConfig, data_dirs: list[str | Path], run_dir: str | Path, resume: bool = False,
              progress_bar: bool = True, **trainer_overrides) -> Path:
    """Train (or resume) MAR-LR or MAR-HR (``config.model.stage``); returns ``run_dir/model``."""
    run_dir = Path(run_dir)
    roots = [Path(d) for d in data_dirs]
    config.validate()
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    vae = load_vae(config.vae).eval()
    if vae.config.latent_channels != config.model.token_channels:
        raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels, model.token_channels is "
                         f"{config.model.token_channels}")
    needed = {config.model.num_tokens} | ({config.model.lr_tokens} if config.model.stage == "hr" else set())
    if vae.config.queries == "learned" and not needed <= set(vae.config.token_counts):
        raise ValueError(f"the VAE encodes {vae.config.token_counts} tokens, this MAR needs {sorted(needed)}")
    if config.latents:
        info = latent_cache.read_info(config.latents)
        if not latent_cache.matches_vae(info, vae_fingerprint(vae)):
            raise ValueError(f"{config.latents} was cached with another VAE ({info.get('vae')}), not {config.vae}")
    selection = select_objects(roots, config.data.include_ids, config.data.val_ids, config.data.exclude_ids)
    # The run's config with the measured scales (the caller's config is left as given). A fine-tuned MAR keeps
    # its source's scales: its weights expect latents normalized as they were when it was trained.
    scales = (source_latent_scales(config.train.init_from) if config.train.init_from
              else measure_latent_scales(config, vae, selection))
    config = replace(config, model=replace(config.model, **scales))
    sets = run_datasets(config, roots, selection, vae.config.pyramid_sizes())
    val_loader = DataLoader(sets["val"], batch_size=config.train.batch_size, collate_fn=_collate)
    module = MARModule(to_dict(config))
    module.attach_vae(vae)
    trainer = fit(module, train_loader(sets["train"], config.train, _collate), val_loader, run_dir, config, resume,
                  progress_bar, **trainer_overrides)
    model = averaged_model(trainer, module)
    if model is None:  # not global rank 0
        return run_dir / RUN_EXPORT_DIR
    return save_mar(model, run_dir / RUN_EXPORT_DIR,
                    extra={"trained_steps": trainer.global_step, "train_ids": selection.train_ids,
                           "vae": config.vae, "seconds": training_seconds(trainer)})
