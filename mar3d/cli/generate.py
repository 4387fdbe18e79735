"""`mar3d generate`: images -> meshes with a pipeline model folder."""
from __future__ import annotations

import argparse
import functools
import glob
from pathlib import Path

from mar3d.cli.common import HelpFormatter, add_model_options, load_pipeline_arg
from mar3d.cli.errors import CLIError
from mar3d.pipeline.images import IMAGE_SUFFIXES

FORMATS = ("glb", "obj", "ply", "stl")
PREVIEW_SUFFIX = ".preview.png"
TIMING_KEYS = (("preprocess", "preprocess"), ("encoder", "encoder"), ("lr", "MAR-LR"),
               ("select", "candidate selection"), ("hr", "MAR-HR"), ("carve", "outline fit"), ("decode", "decode"),
               ("marching_cubes", "marching cubes"), ("postprocess", "post-process"))
STAGE_LABELS = {"preprocess": "MAR-LR", "lr": "MAR-HR", "hr": "mesh"}  # the stage that follows each one
SETTINGS = ("lr_steps", "hr_steps", "cfg", "temperature", "diffusion_steps", "resolution", "faces", "use_hr",
            "candidates", "carve", "fill")


def _model_default(name: str) -> str:
    """A setting's default, as --help says it: the model folder's, with the bundled demo model's value."""
    from mar3d.pipeline.settings import bundled_defaults

    value = bundled_defaults().get(name)
    return "default: the model's pipeline.json" + ("" if value is None else f"; bundled demo model: {value}")


def add_parser(sub, name: str) -> None:
    from mar3d.pipeline.settings import QUALITY_PRESETS

    p = sub.add_parser(
        name, help="generate meshes from images",
        description=(
            "Generate one mesh per input image: the object is cut out and framed as in training, MAR-LR and "
            "MAR-HR sample its latent tokens, the VAE decoder and marching cubes extract the surface. INPUT is "
            "an image file, a folder (its image files) or a glob pattern. Writes OUT/<name>.<format> in the "
            "view-aligned normalized frame (the object as seen in the image, within [-1.05, 1.05]^3) and, with "
            "--preview, OUT/<name>.preview.png (normal maps from 4 views), each image's files as soon as it is "
            "done. Existing files are kept, so running the same command again after an interruption goes on "
            "where it stopped (--overwrite redoes them). Settings left out take the model folder's defaults "
            "(its pipeline.json), chosen for speed; --quality high trades time for detail. A bad input gets a "
            "one-line error and the others go on; the exit status is then 1. The same seed gives the same "
            "mesh file."),
        formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the meshes (made if missing)")
    add_model_options(p)
    p.add_argument("--format", nargs="+", action="extend", choices=FORMATS, metavar="FORMAT",
                   help=f"mesh file formats, one or more of {', '.join(FORMATS)} (default: glb)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; the same seed gives the same mesh")
    p.add_argument("--quality", choices=list(QUALITY_PRESETS), default="fast",
                   help="fast: the model's defaults; " + "; ".join(
                       f"{k}: " + ", ".join(f"{n}={v}" for n, v in preset.items())
                       for k, preset in QUALITY_PRESETS.items() if preset)
                   + " (slower); options given below override either")
    p.add_argument("--lr-steps", type=int, help=f"MAR-LR auto-regressive steps ({_model_default('lr_steps')})")
    p.add_argument("--hr-steps", type=int, help=f"MAR-HR auto-regressive steps ({_model_default('hr_steps')})")
    p.add_argument("--cfg", type=float, help=f"classifier-free guidance scale ({_model_default('cfg')})")
    p.add_argument("--temperature", type=float, help=f"sampling temperature ({_model_default('temperature')})")
    p.add_argument("--diffusion-steps", type=int,
                   help=f"denoising steps of the diffusion head per token ({_model_default('diffusion_steps')})")
    p.add_argument("--resolution", type=int,
                   help=f"marching-cubes grid resolution, 8 to 512 ({_model_default('resolution')})")
    p.add_argument("--faces", type=int, metavar="N",
                   help=f"decimate each mesh to at most N faces; 0 keeps every face ({_model_default('faces')})")
    p.add_argument("--hr", action=argparse.BooleanOptionalAction, dest="use_hr",
                   help="run MAR-HR on the MAR-LR tokens (--hr: the whole cascade) or decode the MAR-LR tokens "
                        f"(--no-hr: faster, coarser) ({_model_default('use_hr')})")
    p.add_argument("--candidates", type=int, metavar="K",
                   help="MAR-LR samples K token sets and keeps the one whose outline, seen by the training camera, "
                        f"best matches the image's; 1 samples one ({_model_default('candidates')})")
    p.add_argument("--carve", action=argparse.BooleanOptionalAction,
                   help="cut away whatever the mesh has outside the image's outline (the object's outline laid over "
                        "the mesh's silhouette seen by the training camera; --no-carve keeps the decoded field as it "
                        f"is) ({_model_default('carve')})")
    p.add_argument("--fill", action=argparse.BooleanOptionalAction,
                   help="with carving, also fill the image's outline where the mesh leaves it uncovered, between the "
                        "front and back depths of the nearest part the mesh has (--no-fill: carve only) "
                        f"({_model_default('fill')})")
    p.add_argument("--preview", action="store_true", help="also write a PNG of normal-map renders from 4 views")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (otherwise they are kept)")
    p.add_argument("--verbose", action="store_true", help="print each image's timing breakdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files to generate from, in order (folders: their image files, sorted; globs expanded), and errors."""
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path}: a folder with no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif not path.exists() and any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                errors.append(f"{item}: no files match")
            files.extend(found)
        else:
            files.append(path)  # a missing or unreadable file is reported when it is loaded
    return files, errors


def output_names(files: list[Path]) -> list[str]:
    """File stems as output names; a repeated stem gets -2, -3, ... in input order."""
    names, seen = [], {}
    for f in files:
        count = seen[f.stem] = seen.get(f.stem, 0) + 1
        names.append(f.stem if count == 1 else f"{f.stem}-{count}")
    return names


def _timing_line(name: str, result) -> str:
    t = result.timings
    parts = [f"{label} {t[key]:.2f} s" for key, label in TIMING_KEYS if key in t]
    line = f"  {name}: {', '.join(parts)}; total {t['total']:.2f} s; {result.queries:,} queries"
    if result.candidate_scores:
        scores = ", ".join(f"{s:.3f}" for s in result.candidate_scores)
        line += f"; candidate {result.candidate + 1} of {len(result.candidate_scores)} kept (silhouette IoU {scores})"
    if result.outline is not None:
        line += f"; carved by the outline (IoU {result.outline.iou:.3f} before, scaled {result.outline.scale:.2f})"
        if result.filled:
            line += f", {result.filled:.0%} of it filled"
    return line


def _write(result, targets: list[Path], overwrite: bool) -> tuple[list[str], list[str]]:
    """Write one image's files (atomically): the names written, and the existing ones kept."""
    from mar3d.pipeline.preview import render_normal_views
    from mar3d.utils import atomic

    written, kept = [], []
    for path in targets:
        if path.exists() and not overwrite:
            kept.append(path.name)
        elif path.name.endswith(PREVIEW_SUFFIX):
            atomic.write_png(path, render_normal_views(result.mesh))
            written.append(path.name)
        else:
            with atomic.atomic_path(path) as tmp:
                result.mesh.export(tmp, file_type=path.suffix[1:])
            written.append(path.name)
    return written, kept


def run(args) -> int:
    from tqdm.auto import tqdm

    from mar3d.config import ConfigError
    from mar3d.pipeline.images import ImageInputError
    formats = list(dict.fromkeys(args.format or ["glb"]))
    pipeline = load_pipeline_arg(args)
    options = pipeline.preset(args.quality)
    options.update({k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    try:
        pipeline.settings(**options)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, errors = collect_inputs(args.inputs)
    bar = tqdm(total=len(files), desc="generate", unit="image", disable=args.no_progress)
    say = bar.write if not args.no_progress else functools.partial(print, flush=True)  # lines as they come
    failed, skipped, generated = len(errors), 0, 0
    for line in errors:
        say(f"failed: {line}")

    def targets(name: str) -> list[Path]:
        paths = [out / f"{name}.{fmt}" for fmt in formats]
        return paths + ([out / f"{name}{PREVIEW_SUFFIX}"] if args.preview else [])

    for path, name in zip(files, output_names(files)):
        if not args.overwrite and all(p.exists() for p in targets(name)):
            say(f"skipped: {path}: {', '.join(p.name for p in targets(name))} exist (--overwrite to replace)")
            skipped += 1
            bar.update()
            continue
        bar.set_postfix_str(f"{name}: preprocess")
        try:
            condition = pipeline.preprocess(path)
        except ImageInputError as e:
            say(f"failed: {e}")
            failed += 1
            bar.update()
            continue

        def advance(stage: str, _index: int, name=name) -> None:
            if stage in STAGE_LABELS:
                bar.set_postfix_str(f"{name}: {STAGE_LABELS[stage]}")

        [result] = pipeline(condition, seed=args.seed, callback=advance, **options)
        if not result.ok:
            say(f"failed: {condition.name}: {result.problem}")
            failed += 1
            bar.update()
            continue
        bar.set_postfix_str(f"{name}: writing")
        written, kept = _write(result, targets(name), args.overwrite)
        generated += 1
        line = (f"generated: {condition.name} -> {', '.join(written)} ({len(result.mesh.faces):,} faces"
                f"{', watertight' if result.watertight else ''}, {result.timings['total']:.1f} s)")
        if kept:
            line += f"; kept existing {', '.join(kept)} (--overwrite to replace)"
        say(line)
        if args.verbose:
            say(_timing_line(name, result))
        bar.update()
    bar.close()
    print(f"generated {generated}, skipped {skipped}, failed {failed} -> {out}")
    return 1 if failed else 0
