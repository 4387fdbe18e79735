"""What several sub-commands share: loading a model a command-line argument names, with a clear error."""
from __future__ import annotations

from pathlib import Path

from mar3d.cli.errors import CLIError


def load_vae_arg(path: str | Path, flag: str = "--vae"):
    """Load the VAE in a model folder or a training run's ``model/``, or raise a one-line CLIError."""
    from mar3d.models.io import model_folder
    from mar3d.models.vae import load_vae

    try:
        return load_vae(model_folder(path))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CLIError(f"{flag} {path}: {e}") from None
