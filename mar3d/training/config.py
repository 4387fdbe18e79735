"""Training-run configs: what every stage shares (``TrainConfig``), the VAE run and the MAR runs (model + data +
train each); the model sections are the models' own configs, saved with every exported model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mar3d.config import ConfigError
from mar3d.models.mar import MARConfig
from mar3d.models.vae import TRAINING_ONLY_KEYS, VAEConfig


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 1e-4
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio and stays there (no restart)
    warmup_steps: int = 100
    max_steps: int = 10_000
    weight_decay: float = 0.02
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 3.0
    ema_decay: float = 0.999  # EMA of the weights, used for validation and export (0: off)
    # auto: bf16-mixed where the training device computes bf16 natively, else 32-true (mar3d.utils.precision)
    precision: Literal["auto", "bf16-mixed", "32-true", "16-mixed"] = "auto"
    checkpoint_every: int = 1000
    val_every: int = 500
    log_every: int = 10
    num_workers: int = 2
    prefetch_batches: int = 4  # batches each worker loads ahead
    seed: int = 0
    # Fine-tuning: a model folder (or run) whose exported weights start this run instead of a random
    # initialisation; it must have this run's architecture. A resumed run takes its weights from the checkpoint.
    init_from: str = ""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"  # fsdp shards the paper-size MAR over GPUs
    devices: int | Literal["auto"] = "auto"  # per node: GPUs, or processes on CPU
    num_nodes: int = 1

    def validate(self) -> None:
        for name in ("batch_size", "max_steps", "checkpoint_every", "val_every", "log_every", "prefetch_batches",
                     "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("train.lr must be > 0 and train.min_lr_ratio in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("train.ema_decay must be in [0, 1)")
        if len(self.betas) != 2:
            raise ConfigError("train.betas must have two values")
        if self.devices != "auto" and self.devices < 1:
            raise ConfigError("train.devices must be 'auto' or >= 1")
        if self.num_workers < 0:
            raise ConfigError("train.num_workers must be >= 0")
        if not 0 <= self.seed < 2**32:  # numpy's and Lightning's range (Lightning would pick a random one instead)
            raise ConfigError("train.seed must be in [0, 2**32)")


@dataclass
class VAETrainConfig(TrainConfig):
    kl_weight: float = 0.001  # paper Eq. 3 / release
    # Share of training shapes decoded from the posterior mean instead of a sample (docs/vae.md): every later
    # stage decodes means, which a decoder trained on samples alone can misread (unused channels are pure noise
    # in training and exactly zero in the mean).
    mean_decode_share: float = 0.0
    anchor_weight: float = 1.0  # model.local_decoder only: weight of the anchors' squared error (docs/vae.md)
    # Fine-tune the decoder of a trained VAE (train.init_from) with its encoder frozen: the latents stay exactly
    # what the MARs trained on were, so those MARs work with the new decoder without retraining.
    decoder_only: bool = False
    # Gaussian noise added to every latent the decoder trains on, in units of that shape's latent std (0: none).
    latent_noise: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.mean_decode_share <= 1:
            raise ConfigError(f"train.mean_decode_share must be in [0, 1], got {self.mean_decode_share}")
        if self.latent_noise < 0:
            raise ConfigError(f"train.latent_noise must be >= 0, got {self.latent_noise}")


@dataclass
class VAEDataConfig:
    supervision_points: int = 20480  # paper
    rotate: bool = True  # rotation augmentation by the stored view rotations
    include_ids: list[str] = field(default_factory=list)  # train on these only (empty: every prepared item)
    val_ids: list[str] = field(default_factory=list)  # held out from training, used for validation IoU
    exclude_ids: list[str] = field(default_factory=list)  # held out from everything (evaluation)
    val_points: int = 100_000  # uniform + near-surface points per validation object


@dataclass
class VAERunConfig:
    model: VAEConfig = field(default_factory=VAEConfig)
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    @classmethod
    def migrate(cls, data: dict, where: str) -> dict:
        """Configs and checkpoints written when ``kl_weight`` / ``mean_decode_share`` were model settings: the
        values move to ``train``."""
        model, train = data.get("model"), data.get("train") or {}
        if not isinstance(model, dict) or not isinstance(train, dict) or not set(model) & set(TRAINING_ONLY_KEYS):
            return data
        model, train = dict(model), dict(train)
        for key in TRAINING_ONLY_KEYS:
            if key in model:
                if key in train:
                    raise ConfigError(f"{where}: {key} is given in both model and train; it belongs in train")
                train[key] = model.pop(key)
        return {**data, "model": model, "train": train}


@dataclass
class MARDataConfig:
    image_size: int = 224  # conditioning images as loaded (the image encoder resizes to its own size)
    views_per_object: int = 0  # use the first K rendered views of each object (0: all)
    include_ids: list[str] = field(default_factory=list)
    val_ids: list[str] = field(default_factory=list)  # held out from training, validation loss on them
    exclude_ids: list[str] = field(default_factory=list)  # held out from everything (evaluation)
    measure_latent_scale: bool = True  # set model.latent_scale(s) to 1/std of the training latents
    val_views: int = 2  # views per validation object
    cached_images: int = 0  # keep up to this many decoded items (image as uint8 + latents) in memory, per process
    # Reframe each render as inference frames an input (its 2D bounding box's longest side to this fill of the
    # image, mar3d.pipeline.images.frame_object) before it is composited: the image's scale then carries no shape
    # information, as at inference (docs/results.md, "Session 14"). null: the renders as they are.
    frame_fill: float | None = None
    # How many times each prepared folder's objects appear in one pass over the training set, by the folder's name
    # (e.g. {ycb: 10} weighs 48 real scans against 1700 procedural objects); folders not named appear once.
    repeats: dict[str, int] = field(default_factory=dict)


@dataclass
class MARRunConfig:
    model: MARConfig = field(default_factory=MARConfig)
    data: MARDataConfig = field(default_factory=MARDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vae: str = ""  # the frozen VAE (model folder) whose latents this MAR models
    latents: str = ""  # optional `mar3d cache-latents` folder made with that VAE

    def validate(self) -> None:
        if self.data.views_per_object < 0 or self.data.val_views < 1 or self.data.cached_images < 0:
            raise ConfigError("data.views_per_object and data.cached_images must be >= 0, data.val_views >= 1")
        if self.data.frame_fill is not None and not 0.1 <= self.data.frame_fill <= 1.0:
            raise ConfigError(f"data.frame_fill must be between 0.1 and 1 (or null), got {self.data.frame_fill}")
        bad = {name: times for name, times in self.data.repeats.items() if times < 1}
        if bad:
            raise ConfigError(f"data.repeats must be whole numbers >= 1, got {bad}")

