"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a resumed run) never sees a half-written file: either the old content or the new one.
No fsync: rename is atomic against a killed process, which is the failure we guard against; an fsync
per view image would cost more than rendering it on network file systems.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json(path: str | os.PathLike, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def png_bytes(image, **save_options) -> bytes:
    """A Pillow image or a (H, W[, C]) uint8 array as PNG bytes (``save_options``: Pillow's PNG options)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save_options)
    return buf.getvalue()


def write_png(path: str | os.PathLike, image, **save_options) -> None:
    write_bytes(path, png_bytes(image, **save_options))


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Uncompressed npz: float samples barely compress, and loading stays fast."""
    buf = io.BytesIO()
    import numpy as np

    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporaries left in ``folder`` (recursively) by a killed writer."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_MARK}*"):
            if p.is_file():
                p.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; rename it onto ``path`` if the block succeeds.

    An existing ``path`` raises FileExistsError unless ``overwrite``; then it is replaced only once the
    new folder is complete (moved aside, the new one renamed in, the old one deleted).
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    old = path.with_name(f"{path.name}{TMP_MARK}old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
