"""`mar3d train <stage>`: train a stage from a config on prepared data."""
from __future__ import annotations

import argparse
from pathlib import Path

from mar3d.cli.errors import CLIError
from mar3d.config import ConfigError, load_config

STAGES = ("vae",)


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="train a stage (vae) from a config on prepared data",
        description=(
            "Train one stage of MAR-3D with PyTorch Lightning (bf16 autocast, AdamW, warm-up then cosine "
            "decay, periodic atomic checkpoints, TensorBoard logs in RUN_DIR/logs). The resolved config is "
            "written to RUN_DIR/config.yaml and the final weights to RUN_DIR/model (config.json + "
            "model.safetensors). CONFIG is a YAML file or a bundled name: tiny, small, paper."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("stage", choices=STAGES, help="which stage to train")
    p.add_argument("--config", required=True, help="YAML config file or bundled name (tiny, small, paper)")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR", help="prepared directories (mar3d prepare)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, logs, model)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--only", nargs="+", metavar="ID", help="train on these prepared ids only (data.include_ids)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for batch jobs)")


def run(args) -> int:
    from mar3d.training.config import VAERunConfig
    from mar3d.training.vae import train_vae

    try:
        config = load_config(args.config, VAERunConfig, args.stage)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if args.max_steps is not None:
        config.train.max_steps = args.max_steps
    if args.only:
        config.data.include_ids = list(args.only)
    for d in args.data:
        if not Path(d).is_dir():
            raise CLIError(f"{d}: no such prepared directory (run `mar3d prepare ... --out {d}` first)")
    run_dir = Path(args.out)
    if not args.resume and (run_dir / "checkpoints").exists():
        raise CLIError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    try:
        model_dir = train_vae(config, args.data, run_dir, resume=args.resume, progress_bar=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    print(f"trained {args.stage}: model -> {model_dir}")
    return 0
