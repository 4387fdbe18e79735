"""What a pipeline model folder's ``pipeline.json`` holds and how a call picks its settings.

Kept free of torch, so that the command line can show the defaults in --help without loading it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mar3d.config import ConfigError
from mar3d.utils.precision import PRECISION_CHOICES

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo_model"  # bundled, when it exists
PIPELINE_FILE = "pipeline.json"
FORMAT = "mar3d-pipeline"
VERSION = 1
DTYPE_CHOICES = PRECISION_CHOICES  # per stage: mar3d.pipeline.pipeline.stage_dtypes
MAX_CANDIDATES = 32  # MAR-LR candidates per image (sampled as one batch)
MAX_RESOLUTION = 512  # the extraction keeps a dense (R+1)^3 grid per shape: 0.7 GB at 512

# Named presets a command line offers over the model's defaults (which are chosen for speed: the bundled
# demo model's make a mesh in a few seconds on 2 CPU cores, docs/benchmarks.md). "high" is the release's
# sampling (the whole cascade, 64 auto-regressive steps, 100 diffusion steps; steps capped at a MAR's token
# count) on a 256^3 grid with every face kept: about 5x the time of the fast cascade (`--hr`).
QUALITY_PRESETS: dict[str, dict] = {
    "fast": {},
    "high": {"lr_steps": 64, "hr_steps": 64, "diffusion_steps": 100, "resolution": 256, "faces": 0, "use_hr": True},
}


@dataclass
class SamplingDefaults:
    """The settings a call uses unless it passes its own (``pipeline.json`` "defaults")."""

    lr_steps: int = 64  # auto-regressive steps of MAR-LR (release validation: 64)
    hr_steps: int = 64
    cfg: float = 3.0  # classifier-free guidance scale λ (1: no guidance)
    cfg_schedule: Literal["linear", "constant"] = "linear"
    temperature: float = 1.0
    sampler: Literal["ddim", "ddpm"] = "ddpm"
    diffusion_steps: int = 100  # respaced steps of the diffusion head per token
    resolution: int = 256  # marching-cubes grid cells per axis
    faces: int | None = 50_000  # decimate to at most this many faces; 0 (or None) keeps all
    image_size: int = 224  # the conditioning image as the MARs were trained on it (data.image_size)
    # Run MAR-HR on MAR-LR's tokens. False decodes the LR tokens: for a model whose MAR-HR does not help
    # (the bundled demo's scores lower with it, docs/results.md).
    use_hr: bool = True
    # MAR-LR samples this many token sets per image in one batch and keeps the one whose silhouette best matches
    # the input's foreground (mar3d.pipeline.silhouette); 1 samples one and compares nothing.
    candidates: int = 1
    # Clip the decoded field to the input's outline laid over the mesh's silhouette (mar3d.pipeline.carve): nothing
    # of the mesh outside the cone of rays through the object's pixels. Needs no training; costs a coarse decode.
    carve: bool = True
    # With carve: first fill the outline where the mesh leaves it uncovered, between the front and back depths of the
    # nearest part the mesh has (mar3d.pipeline.fill): the parts a sample lacks, at a guessed depth. Needs no
    # training; borrows its depths from the coarse mesh carving is placed over (no decode of its own).
    fill: bool = True

    def validate(self) -> None:
        for name in ("lr_steps", "hr_steps", "diffusion_steps", "image_size", "candidates"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.candidates > MAX_CANDIDATES:
            raise ConfigError(f"candidates must be at most {MAX_CANDIDATES}, got {self.candidates}")
        if self.diffusion_steps > 1000:
            raise ConfigError(f"diffusion_steps must be <= 1000 (the trained schedule), got {self.diffusion_steps}")
        for name in ("use_hr", "carve", "fill"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.cfg <= 0 or self.temperature <= 0:
            raise ConfigError(f"cfg and temperature must be > 0, got {self.cfg} and {self.temperature}")
        if not 8 <= self.resolution <= MAX_RESOLUTION:
            raise ConfigError(f"resolution must be between 8 and {MAX_RESOLUTION}, got {self.resolution}")
        if self.faces is not None and (self.faces < 0 or 0 < self.faces < 4):
            raise ConfigError(f"faces must be at least 4 (or 0 for no decimation), got {self.faces}")
        from mar3d.models.diffusion import SAMPLERS  # here: this module stays free of torch for --help
        from mar3d.models.mar import CFG_SCHEDULES

        if self.sampler not in SAMPLERS or self.cfg_schedule not in CFG_SCHEDULES:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)} and cfg_schedule one of "
                              f"{', '.join(CFG_SCHEDULES)}, got {self.sampler!r} and {self.cfg_schedule!r}")


@functools.lru_cache(maxsize=1)
def bundled_defaults() -> dict:
    """The bundled demo model's ``pipeline.json`` defaults ({} when it is not installed or unreadable)."""
    try:
        return dict(json.loads((DEMO_MODEL_DIR / PIPELINE_FILE).read_text()).get("defaults", {}))
    except (OSError, ValueError, AttributeError):
        return {}
