"""A web request's work, apart from the page: an uploaded image -> files the page shows and offers.

Kept free of gradio, so that it reads (and is tested) on its own; ``mar3d.web.app`` is the page.

Temporary files. Each generation writes into its own folder under ``RequestFolders.root``: the
preprocessed input, the mesh in each download format and the normal-map preview. The page links to
those files, so a folder outlives its request; it is removed when a later request starts and it is
older than ``keep_seconds`` or not among the ``keep_last`` newest. ``mar3d serve`` puts the root (and
gradio's own uploads) in one temporary folder that it removes at exit.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from mar3d.config import ConfigError
from mar3d.pipeline.images import ImageInputError
from mar3d.pipeline.pipeline import ConditionImage, GenerationResult, MAR3DPipeline, stage_names

DOWNLOAD_FORMATS = ("glb", "obj", "stl")
STAGE_LABELS = {"preprocess": "preprocessed", "lr": "MAR-LR sampled", "hr": "MAR-HR sampled",
                "mesh": "mesh extracted"}

Progress = Callable[[float, str], None]  # (fraction done, what was just done)


class RequestError(Exception):
    """A request that cannot be served; the message is one line for the user."""


@dataclass
class Generated:
    """One request's outputs, all inside ``folder``."""

    folder: Path
    input_image: Path  # the preprocessed input on white, as the model saw it
    preview: Path  # normal maps from 4 views
    meshes: dict[str, Path]  # format -> file
    summary: str  # one line: faces, seed, time


class RequestFolders:
    """One fresh folder per request under ``root``; older ones are removed as new ones are made."""

    def __init__(self, root: str | Path, keep_seconds: float = 1800.0, keep_last: int = 16):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root, self.keep_seconds, self.keep_last = Path(root), keep_seconds, keep_last
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def new(self) -> Path:
        """Sweep, then make a new folder (named by its creation time, for people looking in)."""
        with self._lock:
            self.sweep(keep=self.keep_last - 1)
            return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.root))

    def sweep(self, keep: int | None = None) -> list[Path]:
        """Remove the folders older than ``keep_seconds`` and all but the ``keep`` newest; return them."""
        keep = self.keep_last if keep is None else keep
        folders = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                         reverse=True)
        now = time.time()
        removed = [p for i, p in enumerate(folders) if i >= keep or now - p.stat().st_mtime > self.keep_seconds]
        for folder in removed:
            shutil.rmtree(folder, ignore_errors=True)
        return removed


def _file_stem(name: str) -> str:
    """A safe output file stem from an uploaded file's name (the downloads are named after the input)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem).strip("._")[:64]
    return stem or "mesh"


def on_white(condition: ConditionImage) -> Image.Image:
    """The framed cut-out composited on white, as the image encoders see it (at the preview's size)."""
    white = Image.new("RGBA", condition.preview.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, condition.preview).convert("RGB")


class WebGenerator:
    """The app's two actions: check an upload (and show it preprocessed), and generate from it."""

    def __init__(self, pipeline: MAR3DPipeline, folders: RequestFolders):
        self.pipeline, self.folders = pipeline, folders

    def condition(self, upload: str | Path | None) -> ConditionImage:
        """The model input from an uploaded file, or a RequestError naming the file and its problem."""
        if not upload:
            raise RequestError("upload an image first")
        path = Path(upload)
        try:
            return self.pipeline.preprocess(path, name=path.name)
        except ImageInputError as error:
            message = str(error)
            if message.startswith(f"{path}:"):  # the loader names the file by its path: the server's copy
                message = path.name + message[len(str(path)):]
            raise RequestError(message) from None

    def generate(self, upload: str | Path | None, seed: int, lr_steps: int, hr_steps: int, cfg: float,
                 resolution: int, use_hr: bool | None = None, progress: Progress | None = None) -> Generated:
        """Upload -> mesh files, preview and preprocessed input in a new request folder."""
        if seed is None or not 0 <= int(seed) < 2**63:
            raise RequestError(f"the seed must be a whole number from 0 to 2^63 - 1, got {seed}")
        options = dict(lr_steps=int(lr_steps), hr_steps=int(hr_steps), cfg=float(cfg), resolution=int(resolution),
                       use_hr=use_hr)
        try:
            chosen = self.pipeline.settings(**options)
        except ConfigError as error:
            raise RequestError(str(error)) from None
        condition = self.condition(upload)
        stages = stage_names(chosen.use_hr)
        report = progress or (lambda fraction, text: None)

        def advance(stage: str, _index: int) -> None:
            report((stages.index(stage) + 1) / (len(stages) + 1), STAGE_LABELS[stage])

        [result] = self.pipeline(condition, seed=int(seed), callback=advance, **options)
        if not result.ok:
            raise RequestError(f"{condition.name}: {result.problem}; try another seed or other settings")
        folder = self.folders.new()
        try:
            return self._write(folder, condition, result)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _write(self, folder: Path, condition: ConditionImage, result: GenerationResult) -> Generated:
        from mar3d.pipeline.preview import render_normal_views  # pyrender/OSMesa: only once a mesh exists

        stem = _file_stem(condition.name)
        input_image, preview = folder / f"{stem}.input.png", folder / f"{stem}.preview.png"
        on_white(condition).save(input_image)
        meshes = {fmt: folder / f"{stem}.{fmt}" for fmt in DOWNLOAD_FORMATS}
        for fmt, path in meshes.items():
            result.mesh.export(path, file_type=fmt)
        render_normal_views(result.mesh).save(preview)
        t = result.timings
        stages = [f"MAR-LR {t['lr']:.1f} s"]
        if result.candidate_scores:
            stages.append(f"best outline of {len(result.candidate_scores)} candidates {t['select']:.1f} s")
        stages += [f"MAR-HR {t['hr']:.1f} s"] if "hr" in t else []
        mesh_seconds = t['decode'] + t['marching_cubes'] + t['postprocess'] + t.get('carve', 0.0)
        carved = (' carved by the outline' + (' and filled' if result.filled else '')) if result.outline else ''
        stages.append(f"mesh{carved} {mesh_seconds:.1f} s")
        summary = (f"{condition.name}: {len(result.mesh.faces):,} faces"
                   f"{', watertight' if result.watertight else ''}; seed {result.seed}; "
                   f"{t['total']:.1f} s ({', '.join(stages)})")
        return Generated(folder, input_image, preview, meshes, summary)
