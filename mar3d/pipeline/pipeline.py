"""Image -> mesh inference (docs/method.md §1): ``MAR3DPipeline`` and the model folder it loads.

A pipeline model folder holds the three trained models and the default sampling settings::

    MODEL/pipeline.json   {"format": "mar3d-pipeline", "version": 1, "defaults": {...}, "sources": {...}}
    MODEL/vae/            config.json + model.safetensors   Pyramid VAE (its decoder is used)
    MODEL/mar_lr/         config.json + model.safetensors   MAR-LR, with its own image encoder
    MODEL/mar_hr/         config.json + model.safetensors   MAR-HR, with its own image encoder

``mar3d export --vae RUN --mar-lr RUN --mar-hr RUN --out MODEL`` assembles one (``mar3d.pipeline.export``).

Stages, per image: preprocess (``images.preprocess``) -> image encoder + MAR-LR (N_lr tokens; with
``candidates`` > 1 that many token sets in one batch, each decoded coarsely and the one whose silhouette best
matches the input kept: ``silhouette``) -> MAR-HR
(N_hr tokens; the LR tokens are condition-augmented at t = 0.5 inside MAR-HR) -> hierarchical extraction
(VAE decoder + marching cubes; with ``carve``, the field clipped to the input's outline laid over the mesh's
coarse silhouette: ``carve``, and with ``fill`` first filled where the mesh leaves that outline uncovered:
``fill``) -> post-processing. With ``use_hr=False`` (a call's, or the model's default)
the LR tokens are decoded.

Images go through the stages one at a time, and each image's result is ready (``generate`` yields it) as
soon as its mesh is: a caller writes files as they come.

Determinism: every image samples with its own ``torch.Generator`` seeded with its seed, so an image's mesh
depends on the image, its seed and the settings only, not on the other images in the call.

Precision (``dtype``): "auto" picks per stage what is fastest on the device, measured in
docs/benchmarks.md: on CUDA bf16 autocast everywhere; on a CPU the MARs in fp32 (their matrices are small,
and bf16 autocast only adds casts) and the VAE decoder in bf16 where the CPU computes bf16 natively
(AVX-512 BF16 or AMX), else fp32 (bf16 without hardware support is emulated and slower).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import trimesh
from PIL import Image
from tqdm.auto import tqdm

from mar3d.config import ConfigError, from_dict
from mar3d.mesh import PostprocessOptions
from mar3d.mesh.latents import latents_to_meshes
from mar3d.models.image_encoder import ClipDinov2Encoder
from mar3d.models.io import load_mar, load_vae
from mar3d.models.mar import MAR, MARConfig
from mar3d.models.vae import PyramidVAE, VAEConfig
from mar3d.pipeline.carve import FieldCarver, chain, outline_carver
from mar3d.pipeline.fill import outline_filler
from mar3d.pipeline.images import preprocess
from mar3d.pipeline.silhouette import SELECTION_RESOLUTION, OutlineFit, fit_outline, foreground_mask, silhouette
# Re-exported: what callers of the pipeline module have always found here.
from mar3d.pipeline.settings import (DEMO_MODEL_DIR, DTYPE_CHOICES, FORMAT, MAX_RESOLUTION, PIPELINE_FILE,  # noqa: F401
                                     QUALITY_PRESETS, VERSION, SamplingDefaults)
from mar3d.utils.precision import autocast_dtype, autocast_for

VAE_DIR, MAR_LR_DIR, MAR_HR_DIR = "vae", "mar_lr", "mar_hr"


def read_pipeline_file(folder: str | Path) -> dict:
    """``pipeline.json`` of a model folder, checked for format and version (one-line errors)."""
    folder = Path(folder)
    path = folder / PIPELINE_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    if not path.exists():
        raise FileNotFoundError(f"{folder}: not a pipeline model folder (no {PIPELINE_FILE}; assemble one "
                                f"with `mar3d export --vae RUN --mar-lr RUN --mar-hr RUN --out DIR`)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} file")
    if document.get("version") != VERSION:
        raise ConfigError(f"{path}: format version {document.get('version')}; this mar3d reads version {VERSION}")
    return document


@dataclass
class ConditionImage:
    """A preprocessed input: what the image encoders get, and the framed cut-out to show."""

    name: str
    image: torch.Tensor  # (3, S, S) float32 in [0, 1], on white
    preview: Image.Image  # framed RGBA, 512 x 512
    seconds: float = 0.0  # preprocessing time


# The stages ``GenerationResult.timings`` may hold, in pipeline order (each present when its stage ran), then "total".
TIMING_STAGES = ("preprocess", "encoder", "lr", "select", "hr", "carve", "decode", "marching_cubes", "postprocess")


@dataclass
class GenerationResult:
    """One image's mesh, in the view-aligned normalized frame (the object as seen in the image).

    ``status`` is "ok", or "empty" / "full" / "nonfinite" when the decoded occupancy has no surface
    (then ``mesh`` has no faces). ``timings`` in seconds: preprocess, encoder (both MARs' image
    encoders), lr, hr (sampling without the encoder), select (decoding and comparing MAR-LR candidates,
    when there are several), carve (laying the input's outline over the mesh, with ``carve``), decode (the VAE
    decoder's occupancy queries, carving included), marching_cubes, postprocess, total.
    """

    name: str
    mesh: trimesh.Trimesh
    preview: Image.Image
    status: str
    seed: int
    timings: dict[str, float]
    queries: int = 0  # occupancy evaluations
    watertight: bool = False
    latents: torch.Tensor | None = None  # (N, C) the decoded tokens (HR, or LR with use_hr=False)
    lr_latents: torch.Tensor | None = None  # (N_lr, C)
    candidate_scores: list[float] | None = None  # each MAR-LR candidate's silhouette IoU (candidates > 1)
    candidate: int = 0  # the index of the candidate kept
    outline: OutlineFit | None = None  # with carve: how the input's outline lay over the uncarved mesh
    filled: float = 0.0  # with fill: the share of that outline the mesh left uncovered and the filling filled

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def problem(self) -> str:
        """Why there is no mesh, in a few words ("" when there is one)."""
        return {"ok": "", "empty": "no surface: the decoded occupancy is empty everywhere",
                "full": "no surface: the decoded occupancy is full everywhere",
                "nonfinite": "no surface: the decoder returned non-finite values"}.get(self.status, self.status)


ProgressCallback = Callable[[str, int], None]  # (stage finished, image index)


def stage_dtypes(dtype: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(MAR dtype, VAE decoder dtype) for a ``dtype`` choice: "fp32", "bf16" or "auto" (module docstring)."""
    decoder = autocast_dtype(dtype, device)  # raises for an unknown choice
    if dtype == "auto" and device.type == "cpu":
        return torch.float32, decoder  # small MARs: bf16 autocast on a CPU only adds casts
    return decoder, decoder


def stage_names(use_hr: bool = True) -> tuple[str, ...]:
    """The stages a call reports to its callback for each image, in order."""
    return ("preprocess", "lr", "hr", "mesh") if use_hr else ("preprocess", "lr", "mesh")


def check_compatible(vae: VAEConfig, mar_lr: MARConfig, mar_hr: MARConfig) -> None:
    """Raise ValueError unless the three models fit together (configs only, no weights needed)."""
    for label, config, stage in (("MAR-LR", mar_lr, "lr"), ("MAR-HR", mar_hr, "hr")):
        if config.stage != stage:
            raise ValueError(f"the {label} model is a MAR-{config.stage.upper()} (stage '{config.stage}')")
        if config.token_channels != vae.latent_channels:
            raise ValueError(f"{label} makes tokens of {config.token_channels} channels, the VAE decodes "
                             f"{vae.latent_channels}")
    if mar_hr.lr_tokens != mar_lr.num_tokens:
        raise ValueError(f"MAR-HR is conditioned on {mar_hr.lr_tokens} LR tokens, MAR-LR makes {mar_lr.num_tokens}")


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ModuleTimer:
    """Accumulates the wall time of a module's forward calls (forward hooks)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.seconds, self.device, self._start = 0.0, device, 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, *_) -> None:
        _synchronize(self.device)
        self._start = time.perf_counter()

    def _after(self, *_) -> None:
        _synchronize(self.device)
        self.seconds += time.perf_counter() - self._start

    def take(self) -> float:
        """The time accumulated since the last ``take``."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


class MAR3DPipeline:
    """Single image -> mesh. Inference only; build it with ``from_pretrained(MODEL_DIR)``."""

    def __init__(self, vae: PyramidVAE, mar_lr: MAR, mar_hr: MAR, defaults: SamplingDefaults | None = None,
                 device: str | torch.device = "cpu", dtype: str = "auto"):
        self.device = torch.device(device)
        self.mar_dtype, self.decoder_dtype = stage_dtypes(dtype, self.device)
        self.vae, self.mar_lr, self.mar_hr = (m.eval().requires_grad_(False).to(self.device)
                                              for m in (vae, mar_lr, mar_hr))
        check_compatible(self.vae.config, self.mar_lr.config, self.mar_hr.config)
        for mar in (self.mar_lr, self.mar_hr):
            if isinstance(mar.image_encoder, ClipDinov2Encoder):
                mar.image_encoder.load_backbones()  # now: a missing backbone fails here, not on the first image
        self.defaults = defaults or SamplingDefaults()
        self._encoder_timers = {"lr": _ModuleTimer(self.mar_lr.image_encoder, self.device),
                                "hr": _ModuleTimer(self.mar_hr.image_encoder, self.device)}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", dtype: str = "auto"
                        ) -> "MAR3DPipeline":
        """Load a pipeline model folder (see the module docstring)."""
        folder = Path(path)
        document = read_pipeline_file(folder)
        defaults = from_dict(SamplingDefaults, document.get("defaults", {}), f"{folder / PIPELINE_FILE} defaults")
        vae = load_vae(folder / VAE_DIR)
        mar_lr, mar_hr = load_mar(folder / MAR_LR_DIR), load_mar(folder / MAR_HR_DIR)
        return cls(vae, mar_lr, mar_hr, defaults, device, dtype)

    # ----------------------------------------------------------------- inputs
    def preprocess(self, image: str | Path | Image.Image | ConditionImage, name: str | None = None,
                   **options) -> ConditionImage:
        """A file or Pillow image -> the conditioning input (``images.preprocess``; raises ImageInputError)."""
        if isinstance(image, ConditionImage):
            return image
        if name is None:
            name = (getattr(image, "filename", "") or "image") if isinstance(image, Image.Image) else str(image)
        start = time.perf_counter()
        tensor, preview = preprocess(image, size=self.defaults.image_size, name=name, **options)
        return ConditionImage(name, tensor, preview, time.perf_counter() - start)

    def settings(self, **overrides) -> SamplingDefaults:
        """The defaults with the given (non-None) overrides, validated against these models."""
        chosen = replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        chosen.validate()
        for stage, mar in (("lr_steps", self.mar_lr), ("hr_steps", self.mar_hr)):
            tokens = mar.config.num_tokens
            if getattr(chosen, stage) > tokens:
                raise ConfigError(f"{stage} must be at most {tokens} (this MAR makes {tokens} tokens, "
                                  f"at least one per step), got {getattr(chosen, stage)}")
        return chosen

    def preset(self, quality: str) -> dict:
        """The settings of a named preset (``QUALITY_PRESETS``) for these models: steps capped at each MAR's
        token count."""
        if quality not in QUALITY_PRESETS:
            raise ValueError(f"quality must be one of {', '.join(QUALITY_PRESETS)}, got {quality!r}")
        chosen = dict(QUALITY_PRESETS[quality])
        for key, mar in (("lr_steps", self.mar_lr), ("hr_steps", self.mar_hr)):
            if key in chosen:
                chosen[key] = min(chosen[key], mar.config.num_tokens)
        return chosen

    # ----------------------------------------------------------------- stages
    @contextlib.contextmanager
    def _timed(self, timings: dict, key: str):
        _synchronize(self.device)
        start = time.perf_counter()
        yield
        _synchronize(self.device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start

    def sample_stage(self, stage: str, condition: ConditionImage, generator: torch.Generator,
                     settings: SamplingDefaults, timings: dict, lr_latents: torch.Tensor | None = None,
                     progress: bool = False, copies: int = 1) -> torch.Tensor:
        """One image's latents from MAR-LR (``stage`` "lr", (copies, N_lr, C): ``copies`` samples in one
        batch) or MAR-HR ("hr", (1, N_hr, C), given the LR latents (1, N_lr, C)). Adds the sampling time to
        ``timings[stage]`` and the image encoder's to ``timings["encoder"]``."""
        mar, steps = (self.mar_lr, settings.lr_steps) if stage == "lr" else (self.mar_hr, settings.hr_steps)
        timer = self._encoder_timers[stage]
        timer.take()
        images = condition.image[None].expand(copies, -1, -1, -1).to(self.device)
        with self._timed(timings, stage), autocast_for(self.device, self.mar_dtype):
            latents = mar.sample(images, lr_latents=lr_latents, steps=steps,
                                 cfg=settings.cfg, cfg_schedule=settings.cfg_schedule,
                                 temperature=settings.temperature, sampler=settings.sampler,
                                 diffusion_steps=settings.diffusion_steps, generator=generator, progress=progress)
        encoder = timer.take()
        timings[stage] -= encoder
        timings["encoder"] = timings.get("encoder", 0.0) + encoder
        return latents

    def coarse_meshes(self, latents: torch.Tensor) -> list[trimesh.Trimesh]:
        """Latent sets (B, N, C) -> their meshes on the coarse ``SELECTION_RESOLUTION`` grid: enough for an outline
        and for the depths the filling borrows (docs/results.md, "Session 17")."""
        results = latents_to_meshes(self.vae, latents, resolution=SELECTION_RESOLUTION, dtype=self.decoder_dtype)
        return [r.mesh for r in results]

    @staticmethod
    def outline_fits(meshes: list[trimesh.Trimesh], condition: ConditionImage) -> list[OutlineFit]:
        """How the input's foreground lies, at best, over each mesh's silhouette seen by the training camera
        (``silhouette.fit_outline``)."""
        target = foreground_mask(condition.preview)
        return [fit_outline(silhouette(mesh), target) for mesh in meshes]

    def select_candidate(self, candidates: torch.Tensor, condition: ConditionImage, timings: dict
                         ) -> tuple[int, list[float], OutlineFit, trimesh.Trimesh]:
        """MAR-LR candidates (K, N_lr, C) -> the index of the one whose silhouette the input's outline fits best
        (``silhouette.fit_outline``; the first of equals), every candidate's score (the fit's IoU), and the kept
        one's fit and coarse mesh. Adds the time to ``timings["select"]``."""
        with self._timed(timings, "select"):
            meshes = self.coarse_meshes(candidates)
            fits = self.outline_fits(meshes, condition)
        scores = [fit.iou for fit in fits]
        kept = max(range(len(scores)), key=scores.__getitem__)
        return kept, scores, fits[kept], meshes[kept]

    def carver(self, latents: torch.Tensor, condition: ConditionImage, timings: dict,
               kept: tuple[OutlineFit, trimesh.Trimesh] | None = None, fill: bool = False
               ) -> tuple[FieldCarver | None, OutlineFit, float]:
        """The carving of one image's latents (1, N, C) by its input's outline laid over their silhouette, that
        placement, and the share of the outline filled: with ``fill`` the outline is first filled where the coarse
        mesh leaves it uncovered (``fill.outline_filler``). ``kept``: the placement and coarse mesh selection
        already made of these latents (else one coarse decode here). Adds the time to ``timings["carve"]``."""
        with self._timed(timings, "carve"):
            if kept is None:
                [mesh] = self.coarse_meshes(latents)
                [fit] = self.outline_fits([mesh], condition)
                kept = fit, mesh
            fit, mesh = kept
            carve, filled = outline_carver(condition.preview, fit), 0.0
            if fill and carve is not None:
                filler, filled = outline_filler(mesh, condition.preview, fit)
                carve = carve if filler is None else chain(filler, carve)
            return carve, fit, filled

    def __call__(self, images, seed: int | Sequence[int] = 0, **options) -> list[GenerationResult]:
        """Generate one mesh per image (see ``generate``); returns the results in order."""
        return list(self.generate(images, seed, **options))

    def generate(
        self,
        images: str | Path | Image.Image | ConditionImage | Sequence[str | Path | Image.Image | ConditionImage],
        seed: int | Sequence[int] = 0,
        lr_steps: int | None = None,
        hr_steps: int | None = None,
        cfg: float | None = None,
        temperature: float | None = None,
        resolution: int | None = None,
        use_hr: bool | None = None,
        faces: int | None = None,
        return_latents: bool = False,
        progress: bool = False,
        callback: ProgressCallback | None = None,
        **settings,
    ) -> Iterator[GenerationResult]:
        """Generate one mesh per image, yielding each result as soon as it is done; arguments left None
        take the model folder's defaults.

        Args:
            images: files, Pillow images or ``preprocess`` results (one or a list). A bad file raises
                ``ImageInputError`` when its turn comes; preprocess first (``self.preprocess``) to handle
                inputs one by one.
            seed: one seed for every image, or one per image.
            use_hr: False stops after MAR-LR and decodes its tokens (faster, coarser); True runs MAR-HR too.
            faces: decimate each mesh to at most this many faces (0: keep all).
            progress: show a progress bar over images, with the stage under way (and the MARs' steps).
            callback: called as ``callback(stage, image_index)`` after each stage of each image.
            settings: further defaults to override: cfg_schedule, sampler, diffusion_steps.
        Yields:
            one ``GenerationResult`` per image, in order.
        """
        single = isinstance(images, (str, Path, Image.Image, ConditionImage))
        items = [images] if single else list(images)
        seeds = [int(seed)] * len(items) if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(items):
            raise ValueError(f"{len(seeds)} seeds for {len(items)} images")
        chosen = self.settings(lr_steps=lr_steps, hr_steps=hr_steps, cfg=cfg, temperature=temperature,
                               resolution=resolution, faces=faces, use_hr=use_hr, **settings)
        stages = stage_names(chosen.use_hr)
        bar = tqdm(total=len(items), desc="generate", unit="image", disable=not progress)

        def done(stage: str, i: int) -> None:
            following = stages[stages.index(stage) + 1:]
            if following:
                bar.set_postfix_str(f"image {i + 1}/{len(items)}: {following[0]}")
            if callback is not None:
                callback(stage, i)

        try:
            for i, item in enumerate(items):
                bar.set_postfix_str(f"image {i + 1}/{len(items)}: preprocess")
                condition = self.preprocess(item)
                timings = dict(preprocess=condition.seconds, encoder=0.0)
                done("preprocess", i)
                generator = torch.Generator(self.device).manual_seed(seeds[i])  # one per image: see the top
                lr = self.sample_stage("lr", condition, generator, chosen, timings, progress=progress,
                                       copies=chosen.candidates)
                kept, scores, coarse = 0, None, None
                if chosen.candidates > 1:
                    kept, scores, fit, mesh = self.select_candidate(lr, condition, timings)
                    coarse = fit, mesh
                    lr = lr[kept:kept + 1]
                done("lr", i)
                latents = lr
                if chosen.use_hr:
                    latents = self.sample_stage("hr", condition, generator, chosen, timings, lr, progress)
                    coarse = None  # MAR-HR's mesh has its own silhouette
                    done("hr", i)
                carve, fit, filled = (self.carver(latents, condition, timings, coarse, chosen.fill) if chosen.carve
                                      else (None, None, 0.0))
                mesh, status, queries, watertight = self.extract(latents, chosen, timings, carve)
                done("mesh", i)
                bar.update()
                timings["total"] = sum(timings.values())
                yield GenerationResult(
                    condition.name, mesh, condition.preview, status, seeds[i], timings, queries, watertight,
                    latents[0].cpu() if return_latents else None, lr[0].cpu() if return_latents else None,
                    scores, kept, fit, filled)
        finally:
            bar.close()

    def extract(self, latents: torch.Tensor, settings: SamplingDefaults, timings: dict,
                carve: FieldCarver | None = None) -> tuple[trimesh.Trimesh, str, int, bool]:
        """One image's latents (1, N, C) -> (mesh, status, queries, watertight), the field clipped by ``carve``
        if given; adds the meshing stages' times (decode, marching_cubes, postprocess) to ``timings``."""
        options = PostprocessOptions(max_faces=settings.faces or None)
        [result] = latents_to_meshes(self.vae, latents, resolution=settings.resolution, postprocess=options,
                                     dtype=self.decoder_dtype, carve=carve)
        timings.update(decode=result.decode_seconds, marching_cubes=result.marching_seconds,
                       postprocess=result.postprocess_seconds)
        return result.mesh, result.status, result.queries, result.watertight
