"""`mar3d household`: write procedural household objects (watertight, coloured GLB) as training data."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from mar3d.cli.errors import CLIError
from mar3d.data.household import CAN_LIE, FAMILIES, make_object, to_glb
from mar3d.utils import atomic


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write procedural household objects (boxes, cans, mugs, fruit, tools, toys) as GLB files",
        description=(
            "Write N procedural household objects as DIR/<family>_<index>.glb: watertight meshes in metres, "
            "z up, with per-vertex colours. Object k is of family k mod F (in the --families order) and is a "
            "function of (--seed, k) only, so the same command writes byte-identical files. Finished files "
            "are skipped, so a killed run resumes. --lying lays a share of the objects that can lie (" + ", ".join(CAN_LIE)
            + ") on their side, named <family>_lying_<index>.glb. Prepare the result with "
            "`mar3d prepare DIR --out PREPARED --up-axis z`."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--count", required=True, type=int, metavar="N", help="number of objects to write")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    p.add_argument("--families", default=",".join(FAMILIES), metavar="A,B,...",
                   help=f"comma-separated families to cycle through (default: all: {','.join(FAMILIES)})")
    p.add_argument("--lying", type=float, default=0.0, metavar="SHARE",
                   help="share of the objects of the families that can lie (" + ", ".join(CAN_LIE) + ") laid on "
                   "their side, as a pear or a can often rests; 0 to 1 (default: 0, all upright)")
    p.add_argument("--format", choices=["glb"], default="glb", help="output format (default: glb)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def object_seed(seed: int, index: int) -> int:
    """The seed of object ``index`` of a run with base ``seed`` (a hash: runs with other seeds share none)."""
    from mar3d.data.prepare import item_seed

    return item_seed(seed, str(index)) >> 1


def lies(seed: int, index: int, family: str, share: float) -> bool:
    """Whether object ``index`` lies on its side: a hash of (seed, index) below ``share``, for families that can."""
    from mar3d.data.prepare import item_seed

    return family in CAN_LIE and item_seed(seed, f"lying:{index}") < share * 2.0**64


def parse_families(text: str) -> list[str]:
    families = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise CLIError(f"--families: unknown {', '.join(unknown) or '(none given)'}; "
                       f"choose from {', '.join(FAMILIES)}")
    return families


def run(args) -> int:
    if args.count < 1:
        raise CLIError(f"--count must be >= 1, got {args.count}")
    if not 0.0 <= args.lying <= 1.0:
        raise CLIError(f"--lying must be a share between 0 and 1, got {args.lying}")
    families = parse_families(args.families)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a directory")
    jobs = [(k, families[k % len(families)]) for k in range(args.count)]
    lying = {k: lies(args.seed, k, family, args.lying) for k, family in jobs}
    paths = {k: out / f"{family}{'_lying' if lying[k] else ''}_{k:06d}.{args.format}" for k, family in jobs}
    todo = [(k, family) for k, family in jobs if not paths[k].exists()]
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_temporaries(out)
    skipped = len(jobs) - len(todo)
    if skipped and not args.quiet:
        print(f"skipping {skipped} object(s) already written in {out}")

    start = time.perf_counter()
    for k, family in tqdm(todo, unit="obj", desc="household", dynamic_ncols=True, disable=args.quiet):
        atomic.write_bytes(paths[k], to_glb(make_object(family, object_seed(args.seed, k), lying[k])))
    seconds = time.perf_counter() - start
    rate = f", {len(todo) / seconds:.1f} objects/s" if todo and seconds > 0 else ""
    print(f"wrote {len(todo)} object(s), {skipped} already done ({seconds:.1f} s{rate}) -> {out}")
    return 0
