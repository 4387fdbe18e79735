"""`mar3d generate`: images -> meshes with a pipeline model folder."""
from __future__ import annotations

import argparse
import glob
import io
from pathlib import Path

from mar3d.cli.errors import CLIError

FORMATS = ("glb", "obj", "ply", "stl")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".tga", ".ppm", ".mpo"}
PREVIEW_SUFFIX = ".preview.png"
TIMING_KEYS = (("preprocess", "preprocess"), ("encoder", "encoder"), ("lr", "MAR-LR"), ("hr", "MAR-HR"),
               ("decode", "decode"), ("marching_cubes", "marching cubes"), ("postprocess", "post-process"))


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="generate meshes from images",
        description=(
            "Generate one mesh per input image: the object is cut out and framed as in training, MAR-LR and "
            "MAR-HR sample its latent tokens, the VAE decoder and marching cubes extract the surface. INPUT is "
            "an image file, a folder (its image files) or a glob pattern. Writes OUT/<name>.<format> in the "
            "view-aligned normalized frame (the object as seen in the image, within [-1.05, 1.05]^3) and, with "
            "--preview, OUT/<name>.preview.png (normal maps from 4 views). Options left out take the model "
            "folder's defaults (its pipeline.json). A bad input gets a one-line error and the others go on; "
            "the exit status is then 1. The same seed gives the same mesh file."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="a pipeline folder from `mar3d export` (default: the bundled demo model)")
    p.add_argument("--format", nargs="+", action="extend", choices=FORMATS, metavar="FORMAT",
                   help=f"mesh file formats, one or more of {', '.join(FORMATS)} (default: glb)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr-steps", type=int, help="MAR-LR auto-regressive steps")
    p.add_argument("--hr-steps", type=int, help="MAR-HR auto-regressive steps")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--resolution", type=int, help="marching-cubes grid resolution (8 to 512)")
    p.add_argument("--faces", type=int, metavar="N", help="decimate each mesh to at most N faces")
    p.add_argument("--no-hr", action="store_true", help="skip MAR-HR: decode the MAR-LR tokens (faster, coarser)")
    p.add_argument("--preview", action="store_true", help="also write a PNG of normal-map renders from 4 views")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, faster on recent CPUs and GPUs")
    p.add_argument("--batch-size", type=int, default=4, help="images decoded together")
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


def _load_pipeline(args):
    import torch

    from mar3d.pipeline.pipeline import DEMO_MODEL_DIR, MAR3DPipeline

    model = Path(args.model) if args.model else DEMO_MODEL_DIR
    if not args.model and not model.exists():
        raise CLIError(f"no --model given and the bundled demo model ({DEMO_MODEL_DIR}) is not installed; "
                       f"assemble a model folder from trained runs with `mar3d export --vae RUN --mar-lr RUN "
                       f"--mar-hr RUN --out MODEL_DIR` and pass --model MODEL_DIR")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    try:
        return MAR3DPipeline.from_pretrained(model, device=args.device, dtype=args.dtype)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        raise CLIError(f"--model {model}: {e}") from None


def _timing_line(name: str, result) -> str:
    t = result.timings
    parts = [f"{label} {t[key]:.2f} s" for key, label in TIMING_KEYS if key in t]
    return f"  {name}: {', '.join(parts)}; total {t['total']:.2f} s; {result.queries:,} queries"


def run(args) -> int:
    from tqdm.auto import tqdm

    from mar3d.config import ConfigError
    from mar3d.pipeline.images import ImageInputError
    from mar3d.pipeline.pipeline import stage_names
    from mar3d.utils import atomic

    formats = list(dict.fromkeys(args.format or ["glb"]))
    if args.batch_size < 1:
        raise CLIError("--batch-size must be >= 1")
    pipeline = _load_pipeline(args)
    options = dict(lr_steps=args.lr_steps, hr_steps=args.hr_steps, cfg=args.cfg, temperature=args.temperature,
                   resolution=args.resolution, faces=args.faces)
    try:
        pipeline.settings(**options)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, errors = collect_inputs(args.inputs)
    stages = stage_names(not args.no_hr)
    bar = tqdm(total=len(files) * len(stages), desc="generate", unit="stage", disable=args.no_progress)
    say = bar.write if not args.no_progress else print
    failed = len(errors)
    for line in errors:
        say(f"failed: {line}")

    def targets(name: str) -> list[Path]:
        paths = [out / f"{name}.{fmt}" for fmt in formats]
        return paths + ([out / f"{name}{PREVIEW_SUFFIX}"] if args.preview else [])

    todo, skipped = [], 0
    for path, name in zip(files, output_names(files)):
        if not args.overwrite and all(p.exists() for p in targets(name)):
            say(f"skipped: {path}: {', '.join(p.name for p in targets(name))} exist (--overwrite to replace)")
            skipped += 1
            bar.update(len(stages))
            continue
        bar.set_postfix_str(f"{name}: preprocess")
        try:
            todo.append((name, pipeline.preprocess(path)))
        except ImageInputError as e:
            say(f"failed: {e}")
            failed += 1
            bar.update(len(stages))
            continue
        bar.update()

    def advance(stage: str, index: int) -> None:
        if stage != "preprocess":  # done above
            bar.set_postfix_str(f"{batch[index][0]}: {stage}")
            bar.update()

    generated = 0
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start:start + args.batch_size]
        results = pipeline([c for _, c in batch], seed=args.seed, use_hr=not args.no_hr, callback=advance,
                           progress=False, **options)
        for (name, condition), result in zip(batch, results):
            if not result.ok:
                say(f"failed: {condition.name}: {result.problem}")
                failed += 1
                continue
            written, kept = [], []
            for path in targets(name):
                if path.exists() and not args.overwrite:
                    kept.append(path.name)
                    continue
                if path.name.endswith(PREVIEW_SUFFIX):
                    from mar3d.pipeline.preview import render_normal_views

                    buffer = io.BytesIO()
                    render_normal_views(result.mesh).save(buffer, format="PNG")
                    atomic.write_bytes(path, buffer.getvalue())
                else:
                    with atomic.atomic_path(path) as tmp:
                        result.mesh.export(tmp, file_type=path.suffix[1:])
                written.append(path.name)
            generated += 1
            line = (f"generated: {condition.name} -> {', '.join(written)} ({len(result.mesh.faces):,} faces"
                    f"{', watertight' if result.watertight else ''}, {result.timings['total']:.1f} s)")
            if kept:
                line += f"; kept existing {', '.join(kept)} (--overwrite to replace)"
            say(line)
            if args.verbose:
                say(_timing_line(name, result))
    bar.close()
    print(f"generated {generated}, skipped {skipped}, failed {failed} -> {out}")
    return 1 if failed else 0
