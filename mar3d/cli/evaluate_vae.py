"""`mar3d evaluate-vae`: the VAE reconstruction metrics of docs/protocol.md §3, per token count, with the curve."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from mar3d.cli.common import HelpFormatter, load_vae_arg
from mar3d.cli.errors import CLIError
from mar3d.utils.precision import PRECISION_CHOICES, autocast_dtype


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="VAE reconstruction metrics (IoU, CD, F-score, NC) against token count",
        description=(
            "Encode prepared objects with a trained VAE at each token count, and score the posterior mean "
            "(docs/protocol.md §3): volume IoU on the stored uniform and "
            "near-surface labelled points (up to 100k each), and the marching-cubes mesh against the "
            "ground-truth mesh in the normalized frame (CD, F@0.02, F@0.01, NC on 100k points). Several "
            "--vae models (e.g. pyramid and single-level) are compared on one curve. Writes OUT/results.csv "
            "(per object), OUT/summary.json (means), OUT/curve_<metric>.svg and, with --meshes, the meshes."),
        formatter_class=HelpFormatter)
    p.add_argument("--vae", required=True, nargs="+", metavar="NAME=RUN_OR_MODEL",
                   help="models to evaluate; NAME= is optional (default: the folder name)")
    p.add_argument("--data", required=True, metavar="PREPARED_DIR", help="prepared objects to reconstruct")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results (made if missing)")
    p.add_argument("--only", nargs="+", metavar="ID", help="evaluate these prepared ids (default: all)")
    p.add_argument("--tokens", nargs="+", type=int, help="token counts (default: those each VAE was trained for)")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid resolution")
    p.add_argument("--meshes", action="store_true", help="also write OUT/meshes/<name>/<tokens>/<id>.glb")
    p.add_argument("--dtype", choices=PRECISION_CHOICES, default="auto",
                   help="precision: auto is bf16 autocast where the CPU computes bf16 natively (AVX-512 BF16 or AMX), else fp32 (emulated bf16 is many times slower)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _models(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        out.append((name or Path(path.rstrip("/")).name, path))
    if len({n for n, _ in out}) != len(out):
        raise CLIError("two --vae models have the same name; name them NAME=PATH")
    return out


def run(args) -> int:
    from tqdm import tqdm

    from mar3d.data import layout
    from mar3d.evaluation.plot import line_chart_svg
    from mar3d.evaluation.vae_reconstruction import METRICS, evaluate_item, summarize
    from mar3d.utils import atomic

    try:
        ids = layout.prepared_ids(args.data)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    if args.only:
        missing = sorted(set(args.only) - set(ids))
        if missing:
            raise CLIError(f"{args.data}: not prepared: {', '.join(missing)}")
        ids = [i for i in ids if i in set(args.only)]
    if not ids:
        raise CLIError(f"{args.data}: no prepared objects")
    models = [(name, load_vae_arg(path)) for name, path in _models(args.vae)]
    dtype = autocast_dtype(args.dtype, "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, summary, failed = [], {}, 0
    for name, vae in models:
        vae.eval()
        counts = args.tokens or sorted(vae.config.token_counts)
        if vae.config.queries == "learned" and not set(counts) <= set(vae.config.token_counts):
            raise CLIError(f"{name}: learned queries exist for {vae.config.token_counts} tokens only")
        results = []
        for item_id in tqdm(ids, desc=f"evaluate-vae {name}", unit="object", disable=args.no_progress):
            try:
                item_results = evaluate_item(vae, args.data, item_id, counts, args.resolution, dtype=dtype)
            except (OSError, ValueError) as e:
                tqdm.write(f"failed: {args.data}/{item_id}: {e}")
                failed += 1
                continue
            results.extend(item_results)
            for r in item_results:
                rows.append({"model": name, "id": r.id, "tokens": r.tokens, **r.metrics})
                if args.meshes and r.mesh is not None:
                    with atomic.atomic_path(out / "meshes" / name / str(r.tokens) / f"{r.id}.glb") as tmp:
                        r.mesh.export(tmp, file_type="glb")
        if results:
            summary[name] = {str(t): v for t, v in summarize(results).items()}
    if not rows:
        raise CLIError("no object could be evaluated")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(out / "results.csv", buffer.getvalue().encode())
    atomic.write_json(out / "summary.json", {"data": str(args.data), "objects": ids, "resolution": args.resolution,
                                             "models": summary})
    for metric in METRICS:
        series = {name: {int(t): row[metric] for t, row in table.items()} for name, table in summary.items()}
        svg = line_chart_svg(series, f"VAE reconstruction: {metric}", "latent tokens", metric)
        atomic.write_bytes(out / f"curve_{metric.replace('@', '_at_')}.svg", svg.encode())
    print(_table(summary))
    print(f"evaluated {len(ids)} objects, {failed} failed -> {out}")
    return 1 if failed else 0


def _table(summary: dict) -> str:
    from mar3d.evaluation.vae_reconstruction import METRICS

    lines = ["| model | tokens | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for name, table in summary.items():
        for tokens, row in table.items():
            lines.append(f"| {name} | {tokens} | " + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " |")
    return "\n".join(lines)
