"""`mar3d prepare`: meshes -> training samples and conditioning views."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from mar3d.cli.common import HelpFormatter
from mar3d.cli.errors import CLIError
from mar3d.data.batch import parse_shard, run_batch
from mar3d.data.prepare import PrepareSettings

DEFAULTS = PrepareSettings()


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="turn mesh files into surface/occupancy samples and rendered views",
        description=(
            "Prepare meshes for training. For each input mesh: normalize it (bounding-box centre to the "
            "origin, max vertex radius 0.95), sample its surface (points + outward normals) and its "
            "occupancy (inside/outside by generalized winding number), and render RGBA conditioning "
            "views with their cameras. Writes DIR/<id>/{samples.npz,meta.json,views.json,views/} and "
            "DIR/manifest.jsonl. Re-running the same command skips finished meshes; failed inputs are "
            "reported and retried. Exit status is 1 if any input failed."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="mesh files (obj glb gltf ply stl off), folders (searched recursively) or globs")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="process only inputs with index %% N == K (0-based), for cluster array jobs")
    p.add_argument("--views", type=int, default=DEFAULTS.views,
                   help="rendered views per mesh (8 azimuths x mesh rotations; 0 = no renders)")
    p.add_argument("--resolution", type=int, default=DEFAULTS.resolution, help="view image size in pixels")
    p.add_argument("--surface-samples", type=int, default=DEFAULTS.surface_samples,
                   help="surface points (with normals) per mesh")
    p.add_argument("--occupancy-samples", type=int, default=DEFAULTS.occupancy_samples,
                   help="occupancy points per mesh (1/4 near-surface, 3/4 uniform in [-1.05, 1.05]^3)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed (per mesh: seed + id)")
    p.add_argument("--up-axis", choices=["y", "z"], default=DEFAULTS.up_axis,
                   help="the files' up axis; the upright views orbit around it")
    p.add_argument("--plain-colour", choices=["grey", "random"], default=DEFAULTS.plain_colour,
                   help="colour of meshes without texture or vertex colours")
    p.add_argument("--antialias", action="store_true",
                   help="4x multisampled renders with coverage alpha (smoother edges, ~4x slower views)")
    p.add_argument("--max-faces", type=int, default=DEFAULTS.max_faces,
                   help="inputs with more faces are rejected")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-failure lines")


def run(args) -> int:
    try:
        shard = parse_shard(args.shard)
        settings = PrepareSettings(
            surface_samples=args.surface_samples, occupancy_samples=args.occupancy_samples,
            views=args.views, resolution=args.resolution, seed=args.seed, up_axis=args.up_axis,
            plain_colour=args.plain_colour, antialias=args.antialias, max_faces=args.max_faces,
        )
        settings.validate()
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")

    bar = None
    start = time.perf_counter()

    def on_progress(result, total):
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=total, unit="mesh", desc="prepare", dynamic_ncols=True)
            if result.skipped:
                tqdm.write(f"skipping {result.skipped} mesh(es) already prepared in {args.out}")
        done = result.ok + result.failed
        bar.update(done - bar.n)
        bar.set_postfix(ok=result.ok, failed=result.failed)

    def on_record(record):
        if record["status"] != "ok" and not args.quiet:
            tqdm.write(f"failed: {record['source']}: {record['reason']}", file=sys.stderr)

    try:
        result = run_batch(args.inputs, args.out, settings, workers=args.workers, shard=shard,
                           on_progress=on_progress, on_record=on_record)
    finally:
        if bar is not None:
            bar.close()
    minutes = (time.perf_counter() - start) / 60
    print(f"prepared {result.ok} ok, {result.failed} failed, {result.skipped} already done "
          f"({minutes:.1f} min) -> {args.out}")
    return 1 if result.failed else 0
