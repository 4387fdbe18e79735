"""`mar3d train <stage>`: train a stage from a config on prepared data."""
from __future__ import annotations

from pathlib import Path

from mar3d.cli.common import HelpFormatter
from mar3d.cli.errors import CLIError
from mar3d.config import ConfigError, load_config

STAGES = ("vae", "mar-lr", "mar-hr")


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="train a stage (vae, mar-lr, mar-hr) from a config on prepared data",
        description=(
            "Train one stage of MAR-3D with PyTorch Lightning (bf16 autocast where the hardware computes bf16 "
            "natively, else fp32: train.precision auto; AdamW, warm-up then cosine "
            "decay, periodic atomic checkpoints, TensorBoard logs in RUN_DIR/logs). The resolved config is "
            "written to RUN_DIR/config.yaml and the final weights to RUN_DIR/model (config.json + "
            "model.safetensors; EMA weights). CONFIG is a YAML file or a bundled name: tiny, small, paper (the vae "
            "configs for vae, the mar configs for mar-lr and mar-hr; for mar-lr also small_framed, the bundled "
            "demo's fine-tune on renders framed as inference frames an input, used with --init-from; for vae also "
            "small_decoder, a fine-tune of a small VAE's decoder with its encoder frozen, so the latents MARs "
            "learnt stay valid, used with --init-from). The MAR "
            "stages model the latents of a trained VAE (--vae), read from a `mar3d cache-latents` folder (--latents) or encoded on the fly. "
            "One device, or DDP / FSDP over GPUs and nodes (--strategy, --devices, --num-nodes; launch one "
            "process per GPU with srun or torchrun, see docs/training.md). --resume continues exactly where the "
            "run stopped: same data order, same random draws. --init-from fine-tunes a trained model (e.g. the "
            "bundled demo's mar3d/assets/demo_model/mar_lr) on new data."),
        formatter_class=HelpFormatter)
    p.add_argument("stage", choices=STAGES, help="which stage to train")
    p.add_argument("--config", required=True,
                   help="YAML config file or bundled name (tiny, small, paper; small_framed for mar-lr, "
                   "small_decoder for vae)")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR", help="prepared directories (mar3d prepare)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, logs, model)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in RUN_DIR/checkpoints")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--strategy", choices=("auto", "ddp", "fsdp"), help="override train.strategy")
    p.add_argument("--devices", type=int, help="override train.devices (GPUs per node; processes on CPU)")
    p.add_argument("--num-nodes", type=int, help="override train.num_nodes")
    p.add_argument("--seed", type=int,
                   help="override train.seed (initialisation, data order, masks and noise; the same seed repeats a "
                        "run, and several seeds measure how much a recipe's result owes to chance)")
    p.add_argument("--only", nargs="+", metavar="ID", help="train on these prepared ids only (data.include_ids)")
    p.add_argument("--exclude", nargs="+", metavar="ID",
                   help="hold these prepared ids out of training and validation (data.exclude_ids, e.g. an evaluation set)")
    p.add_argument("--vae", metavar="RUN_OR_MODEL_DIR", help="mar-lr / mar-hr: the trained VAE")
    p.add_argument("--latents", metavar="CACHE_DIR", help="mar-lr / mar-hr: latents from `mar3d cache-latents`")
    p.add_argument("--init-from", metavar="RUN_OR_MODEL_DIR",
                   help="fine-tune: start from this trained model of the same stage and architecture instead of a "
                        "random initialisation (train.init_from; a MAR keeps its latent scales)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for batch jobs)")


def _load(args):
    """The run config of the stage, with the command line's overrides applied."""
    from mar3d.training.config import MARRunConfig, VAERunConfig

    is_vae = args.stage == "vae"
    try:
        config = load_config(args.config, VAERunConfig if is_vae else MARRunConfig, "vae" if is_vae else "mar")
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if args.init_from:
        from mar3d.models.io import model_folder

        config.train.init_from = str(model_folder(args.init_from).resolve())
    for key in ("max_steps", "strategy", "devices", "num_nodes", "seed"):
        if getattr(args, key) is not None:
            setattr(config.train, key, getattr(args, key))
    try:
        config.train.validate()
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if args.only:
        config.data.include_ids = list(args.only)
    if args.exclude:
        config.data.exclude_ids = sorted(set(config.data.exclude_ids) | set(args.exclude))
    if is_vae:
        if args.vae or args.latents:
            raise CLIError("--vae and --latents belong to the mar-lr / mar-hr stages")
        return config
    from mar3d.models.io import model_folder

    if not args.vae:
        raise CLIError(f"{args.stage} needs --vae: the trained VAE whose latents it models")
    config.vae = str(model_folder(args.vae).resolve())
    if args.latents:
        config.latents = str(Path(args.latents).resolve())
    config.model.stage = args.stage.removeprefix("mar-")
    return config


def run(args) -> int:
    config = _load(args)
    for d in args.data:
        if not Path(d).is_dir():
            raise CLIError(f"{d}: no such prepared directory (run `mar3d prepare ... --out {d}` first)")
    run_dir = Path(args.out)
    if not args.resume and (run_dir / "checkpoints").exists():
        raise CLIError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if args.stage == "vae":
        from mar3d.training.vae import train_vae as train
    else:
        from mar3d.training.mar import train_mar as train
    try:
        model_dir = train(config, args.data, run_dir, resume=args.resume, progress_bar=not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CLIError(str(e)) from None
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:  # with DDP / FSDP every rank runs this command
        print(f"trained {args.stage}: model -> {model_dir}")
    return 0
