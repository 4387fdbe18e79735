"""What several sub-commands share: the --help layout, and loading a model a command-line argument names,
with a clear error."""
from __future__ import annotations

import argparse
from pathlib import Path

from mar3d.cli.errors import CLIError
from mar3d.pipeline.settings import DTYPE_CHOICES


def load_vae_arg(path: str | Path, flag: str = "--vae"):
    """Load the VAE in a model folder or a training run's ``model/``, or raise a one-line CLIError."""
    from mar3d.models.io import load_vae, model_folder

    try:
        return load_vae(model_folder(path))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CLIError(f"{flag} {path}: {e}") from None


class HelpFormatter(argparse.HelpFormatter):
    """--help that shows each option's default once: appended where the help text does not already speak
    of a default, and left out where there is none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and "default" not in text.lower() and "%(default)" not in text
                and action.default is not None and action.default is not False
                and action.default not in (argparse.SUPPRESS, [])):
            text += " (default: %(default)s)"
        return text


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device and --dtype: the pipeline model a command runs (generate, serve)."""
    parser.add_argument("--model", metavar="MODEL_DIR",
                        help="a pipeline folder from `mar3d export` (default: the bundled demo model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="precision: auto picks per stage what is fastest on the device (on a CPU: fp32 MARs, "
                             "and a bf16 VAE decoder where the CPU has native bf16, AVX-512 BF16 or AMX; on CUDA: "
                             "bf16); fp32 or bf16 force one for every stage")


def load_pipeline_arg(args: argparse.Namespace):
    """The pipeline that --model / --device / --dtype name, or a one-line CLIError."""
    import torch

    from mar3d.pipeline import settings
    from mar3d.pipeline.pipeline import MAR3DPipeline

    model = Path(args.model) if args.model else settings.DEMO_MODEL_DIR
    if not args.model and not model.exists():
        raise CLIError(f"no --model given and the bundled demo model ({model}) is not installed; "
                       f"assemble a model folder from trained runs with `mar3d export --vae RUN --mar-lr RUN "
                       f"--mar-hr RUN --out MODEL_DIR` and pass --model MODEL_DIR")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    try:
        return MAR3DPipeline.from_pretrained(model, device=args.device, dtype=args.dtype)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        raise CLIError(f"--model {model}: {e}") from None
