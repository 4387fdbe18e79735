"""A model on disk is a folder: ``config.json`` (the architecture) + ``model.safetensors`` (the weights).

Loading needs neither the training code nor pickle, so a shared model folder cannot run code. The
``kind`` in config.json names the class: ``VAE_KIND`` (``PyramidVAE``) or ``MAR_KIND`` (``MAR``, either stage);
``save_vae`` / ``load_vae`` and ``save_mar`` / ``load_mar`` are the ways in and out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mar3d.config import from_dict, to_dict
from mar3d.utils import atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
RUN_EXPORT_DIR = "model"  # a training run exports its final (EMA) weights to RUN/model
M = TypeVar("M", bound=nn.Module)
VAE_KIND = "pyramid_vae"
MAR_KIND = "mar"


def save_pretrained(model: nn.Module, folder: str | Path, kind: str, extra: dict | None = None) -> Path:
    """Write ``model`` (which has ``.config``, a dataclass) to ``folder``; ``kind`` names the class."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic.atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic.write_json(folder / CONFIG_FILE, {"kind": kind, "config": to_dict(model.config), **(extra or {})})
    return folder


def read_model_config(folder: str | Path, kind: str | None = None) -> dict:
    """``folder/config.json``; with ``kind``, an error unless the folder holds a model of that kind."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{folder}: not a model folder (no {CONFIG_FILE})")
    document = json.loads(path.read_text())
    if kind is not None and document.get("kind") != kind:
        raise ValueError(f"{folder}: holds a '{document.get('kind')}' model, not a '{kind}'")
    return document


def load_pretrained(model_cls: type[M], config_cls, folder: str | Path, kind: str,
                    map_location: str | torch.device = "cpu") -> M:
    """Build ``model_cls(config)`` from ``folder/config.json`` and load its safetensors weights."""
    folder = Path(folder)
    document = read_model_config(folder, kind)
    model = model_cls(from_dict(config_cls, document["config"], f"{folder / CONFIG_FILE}"))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(map_location)))
    return model.eval()


def model_folder(path: str | Path) -> Path:
    """A training run folder -> its exported ``model/``; a model folder -> itself."""
    path = Path(path)
    if (path / RUN_EXPORT_DIR / CONFIG_FILE).exists():
        return path / RUN_EXPORT_DIR
    return path


def save_vae(vae, folder: str | Path, extra: dict | None = None) -> Path:
    return save_pretrained(vae, folder, VAE_KIND, extra)


def load_vae(folder: str | Path, map_location: str | torch.device = "cpu"):
    """The ``PyramidVAE`` of a model folder."""
    from mar3d.models.vae import PyramidVAE, VAEConfig

    return load_pretrained(PyramidVAE, VAEConfig, folder, VAE_KIND, map_location)


def save_mar(model, folder: str | Path, extra: dict | None = None) -> Path:
    return save_pretrained(model, folder, MAR_KIND, extra)


def load_mar(folder: str | Path, map_location: str | torch.device = "cpu"):
    """The ``MAR`` (LR or HR) of a model folder."""
    from mar3d.models.mar import MAR, MARConfig

    return load_pretrained(MAR, MARConfig, folder, MAR_KIND, map_location)
