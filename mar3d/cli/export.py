"""`mar3d export`: a model folder out of a training run, or a pipeline folder for `mar3d generate`."""
from __future__ import annotations


from mar3d.cli.common import HelpFormatter
from mar3d.cli.errors import CLIError


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="copy a run's model out, or assemble a pipeline folder for `mar3d generate`",
        description=(
            "Two forms. `mar3d export RUN_DIR --out MODEL_DIR` copies a training run's final (EMA) model, "
            "RUN_DIR/model (config.json + model.safetensors), to a model folder. "
            "`mar3d export --vae RUN --mar-lr RUN --mar-hr RUN --out MODEL_DIR` assembles the pipeline folder "
            "that `mar3d generate --model` and MAR3DPipeline.from_pretrained load: vae/, mar_lr/, mar_hr/ and "
            "pipeline.json with the default sampling settings (override them with --set key=value). The "
            "models are checked to fit together (token channels, LR token count, the VAE each MAR was trained "
            "on). RUN may be a training run or a model folder. The folder is built aside and renamed into place."),
        formatter_class=HelpFormatter)
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a training run whose model to copy")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="the model folder to write")
    p.add_argument("--vae", metavar="RUN", help="pipeline: the VAE run or model folder")
    p.add_argument("--mar-lr", metavar="RUN", help="pipeline: the MAR-LR run or model folder")
    p.add_argument("--mar-hr", metavar="RUN", help="pipeline: the MAR-HR run or model folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="pipeline: a default sampling setting (lr_steps, hr_steps, cfg, cfg_schedule, temperature, "
                        "sampler, diffusion_steps, resolution, faces, image_size); repeatable")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="store the weights in this type (bfloat16 halves the folder; loading casts back to "
                        "float32 parameters); default: as trained")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR if it exists")


def run(args) -> int:
    from mar3d.pipeline.export import assemble_pipeline, export_model, parse_settings

    parts = {"--vae": args.vae, "--mar-lr": args.mar_lr, "--mar-hr": args.mar_hr}
    try:
        if args.run is not None:
            if any(parts.values()) or args.settings:
                raise CLIError("give either RUN_DIR (copy one model) or --vae/--mar-lr/--mar-hr (a pipeline), not both")
            out = export_model(args.run, args.out, args.overwrite, args.dtype)
            print(f"exported {args.run} -> {out}")
            return 0
        missing = [flag for flag, value in parts.items() if not value]
        if missing:
            raise CLIError(f"give RUN_DIR, or all of --vae, --mar-lr and --mar-hr (missing {', '.join(missing)})")
        out, notes = assemble_pipeline(args.vae, args.mar_lr, args.mar_hr, args.out, parse_settings(args.settings),
                                       args.overwrite, args.dtype)
    except (ValueError, FileNotFoundError) as e:  # ExportError, ConfigError, unreadable weights
        raise CLIError(str(e)) from None
    for note in notes:
        print(f"note: {note}")
    print(f"assembled pipeline -> {out} (generate with `mar3d generate IMAGE --model {out} --out DIR`)")
    return 0
