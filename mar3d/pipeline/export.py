"""Model folders from training runs: one model copied out of a run, or a pipeline folder assembled.

Both are written atomically: built in a temporary folder beside the target, checked by loading, renamed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from mar3d.config import ConfigError, from_dict
from mar3d.models.io import (CONFIG_FILE, MAR_KIND, RUN_EXPORT_DIR, VAE_KIND, WEIGHTS_FILE, load_mar, load_vae,
                             model_folder, read_model_config)
from mar3d.models.mar import MARConfig
from mar3d.models.vae import PyramidVAE, VAEConfig, current_name
from mar3d.pipeline.pipeline import (FORMAT, MAR_HR_DIR, MAR_LR_DIR, PIPELINE_FILE, VAE_DIR, VERSION,
                                     MAR3DPipeline, SamplingDefaults, check_compatible)
from mar3d.utils import atomic

LOADERS = {VAE_KIND: load_vae, MAR_KIND: load_mar}
RUN_CONFIG = "config.yaml"  # the resolved config a training run writes beside model/
DEFAULT_STEPS = 64  # auto-regressive steps, where the MAR makes at least this many tokens


class ExportError(ValueError):
    """A run or model that cannot be exported; the message is one line naming it."""


def source_model(path: str | Path, label: str) -> Path:
    """A training run (-> RUN/model) or a model folder, checked to hold config.json and weights."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{label} {path}: no such run or model folder")
    folder = model_folder(path)
    if not (folder / CONFIG_FILE).exists():
        if (path / "checkpoints").is_dir():
            raise ExportError(f"{label} {path}: the run has no exported model ({RUN_EXPORT_DIR}/) yet; let its "
                              f"training finish (`mar3d train ... --resume`)")
        raise ExportError(f"{label} {path}: not a training run or model folder (no {CONFIG_FILE})")
    if not (folder / WEIGHTS_FILE).exists():
        raise ExportError(f"{label} {folder}: no {WEIGHTS_FILE}")
    return folder


def _document(folder: Path, label: str, kind: str) -> dict:
    document = read_model_config(folder)
    if document.get("kind") != kind:
        raise ExportError(f"{label} {folder}: holds a '{document.get('kind')}' model, not a '{kind}'")
    return document


WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _copy_model(source: Path, target: Path, dtype: str | None = None, vae_record: str | None = None) -> None:
    """Copy a model folder; with ``dtype``, store its floating-point weights in that type (loading casts
    them back to the model's float32 parameters, so only the precision changes). ``vae_record`` replaces
    the VAE path a MAR's config records (in a pipeline folder: its sibling, so that no path of the
    machine it was made on travels with it)."""
    target.mkdir(exist_ok=True)
    if vae_record is None:
        shutil.copyfile(source / CONFIG_FILE, target / CONFIG_FILE)
    else:
        document = json.loads((source / CONFIG_FILE).read_text())
        document["vae"] = vae_record
        atomic.write_json(target / CONFIG_FILE, document)
    if dtype is None:
        shutil.copyfile(source / WEIGHTS_FILE, target / WEIGHTS_FILE)
        return
    if dtype not in WEIGHT_DTYPES:
        raise ExportError(f"unknown weight dtype '{dtype}' (known: {', '.join(WEIGHT_DTYPES)})")
    state = {k: v.to(WEIGHT_DTYPES[dtype]) if v.is_floating_point() else v
             for k, v in load_file(str(source / WEIGHTS_FILE)).items()}
    save_file(state, str(target / WEIGHTS_FILE))


def _portable(path: Path) -> str:
    """A source folder as a pipeline.json records it: relative to the working directory when inside it,
    else its name, never an absolute path of this machine."""
    path = path.resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_latents(a: Path, b: Path) -> bool:
    """Whether VAE folders ``a`` and ``b`` encode alike: the same weights, or equal encoder weights compared as
    float32 (a decoder fine-tuned with train.decoder_only keeps the latents a MAR was trained on, and a bf16 copy
    of weights that were bf16 values matches)."""
    if a.resolve() == b.resolve() or _sha256(a / WEIGHTS_FILE) == _sha256(b / WEIGHTS_FILE):
        return True

    def encoder(folder: Path) -> dict[str, torch.Tensor]:
        weights = {current_name(k): v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
        return {k: v.float() for k, v in weights.items() if k.split(".")[0] in PyramidVAE.ENCODER_MODULES}

    mine, theirs = encoder(a), encoder(b)
    return mine.keys() == theirs.keys() and all(torch.equal(v, theirs[k]) for k, v in mine.items())


def _trained_image_size(folder: Path) -> int | None:
    """``data.image_size`` from the run config beside a run's model/, if there is one."""
    path = folder.parent / RUN_CONFIG
    if folder.name != RUN_EXPORT_DIR or not path.exists():
        return None
    data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
    return data.get("image_size")


def _check_target(out: str | Path, overwrite: bool) -> None:
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")


def export_model(run: str | Path, out: str | Path, overwrite: bool = False, dtype: str | None = None) -> Path:
    """Copy a run's final (EMA) model, RUN/model, to the model folder ``out`` (weights stored as ``dtype``)."""
    folder = source_model(run, "RUN_DIR")
    kind = read_model_config(folder).get("kind")
    if kind not in LOADERS:
        raise ExportError(f"{folder}: unknown model kind '{kind}' (known: {', '.join(LOADERS)})")
    _check_target(out, overwrite)
    with atomic.atomic_folder(out, overwrite) as tmp:
        _copy_model(folder, tmp, dtype)
        LOADERS[kind](tmp)  # the copy loads
    return Path(out)


def parse_settings(pairs: list[str]) -> dict:
    """``key=value`` strings -> a dict of pipeline defaults; values are JSON (3, 1.5, null) or plain text."""
    known = set(asdict(SamplingDefaults()))
    settings = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ExportError(f"--set {pair!r}: expected key=value")
        if key not in known:
            raise ExportError(f"--set {key}: unknown setting (known: {', '.join(sorted(known))})")
        try:
            settings[key] = json.loads(text)
        except json.JSONDecodeError:
            settings[key] = text
    return settings


def assemble_pipeline(vae: str | Path, mar_lr: str | Path, mar_hr: str | Path, out: str | Path,
                      settings: dict | None = None, overwrite: bool = False,
                      dtype: str | None = None) -> tuple[Path, list[str]]:
    """Build a pipeline model folder (``mar3d.pipeline.pipeline``) from three runs or model folders
    (weights stored as ``dtype``, e.g. "bfloat16" to halve the folder; None keeps them as they are).

    The defaults are ``SamplingDefaults`` with the steps capped at each MAR's token count and the image
    size the MARs were trained with (from their run config, when given runs), then ``settings``.
    Returns the folder and notes about what could not be checked.
    """
    folders = {"--vae": source_model(vae, "--vae"), "--mar-lr": source_model(mar_lr, "--mar-lr"),
               "--mar-hr": source_model(mar_hr, "--mar-hr")}
    documents = {flag: _document(folder, flag, VAE_KIND if flag == "--vae" else MAR_KIND)
                 for flag, folder in folders.items()}
    configs = {flag: from_dict(VAEConfig if flag == "--vae" else MARConfig, documents[flag]["config"],
                               f"{folders[flag] / CONFIG_FILE}") for flag in folders}
    try:
        check_compatible(configs["--vae"], configs["--mar-lr"], configs["--mar-hr"])
    except ValueError as e:
        raise ExportError(f"--vae / --mar-lr / --mar-hr do not fit together: {e}") from None
    notes = []
    for flag in ("--mar-lr", "--mar-hr"):
        recorded = documents[flag].get("vae")
        if not recorded:
            continue
        recorded = Path(recorded) if Path(recorded).is_absolute() else folders[flag] / recorded
        if not (recorded / CONFIG_FILE).exists():
            notes.append(f"{flag} was trained on the latents of {recorded}, which no longer exists: "
                         f"not checked that --vae is that VAE")
        elif not _same_latents(Path(recorded), folders["--vae"]):
            raise ExportError(f"{flag} {folders[flag]} was trained on the latents of the VAE {recorded}, "
                              f"and --vae {folders['--vae']} has other encoder weights")
    sizes = {flag: _trained_image_size(folders[flag]) for flag in ("--mar-lr", "--mar-hr")}
    if None not in sizes.values() and len(set(sizes.values())) > 1:
        raise ExportError(f"MAR-LR was trained on {sizes['--mar-lr']}-pixel images, MAR-HR on {sizes['--mar-hr']}")
    lr_config, hr_config = configs["--mar-lr"], configs["--mar-hr"]
    defaults = {"lr_steps": min(DEFAULT_STEPS, lr_config.num_tokens),
                "hr_steps": min(DEFAULT_STEPS, hr_config.num_tokens)}
    image_size = sizes["--mar-lr"] or sizes["--mar-hr"]
    if image_size:
        defaults["image_size"] = image_size
    defaults.update(settings or {})
    try:
        defaults = asdict(from_dict(SamplingDefaults, defaults, "pipeline defaults"))
    except ConfigError as e:
        raise ExportError(str(e)) from None
    sources = {name: {"path": _portable(folders[flag]), "trained_steps": documents[flag].get("trained_steps")}
               for name, flag in ((VAE_DIR, "--vae"), (MAR_LR_DIR, "--mar-lr"), (MAR_HR_DIR, "--mar-hr"))}
    _check_target(out, overwrite)
    with atomic.atomic_folder(out, overwrite) as tmp:
        for name, flag in ((VAE_DIR, "--vae"), (MAR_LR_DIR, "--mar-lr"), (MAR_HR_DIR, "--mar-hr")):
            _copy_model(folders[flag], tmp / name, dtype, None if flag == "--vae" else f"../{VAE_DIR}")
        atomic.write_json(tmp / PIPELINE_FILE, {"format": FORMAT, "version": VERSION, "defaults": defaults,
                                                "sources": sources})
        pipeline = MAR3DPipeline.from_pretrained(tmp)  # it loads, and the steps fit the models
        try:
            pipeline.settings()
        except ConfigError as e:
            raise ExportError(str(e)) from None
    return Path(out), notes
