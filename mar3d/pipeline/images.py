"""Input images for inference: load and validate, separate the foreground, frame it as in training.

A user's image goes through the same steps a training view went through (docs/inputs.md):

1. ``load_image``: decode, refuse anything broken or oversized, convert every colour mode to RGBA.
2. ``separate_foreground``: the object's alpha. An RGBA cut-out keeps its own alpha; an opaque photo
   is cut out by ``rembg`` when it is installed with a local model, otherwise by keying out a uniform
   background colour estimated from the image border.
3. ``frame_object``: crop to the foreground's bounding box, recentre it, rescale its longest side to
   ``FRAMING_FILL`` of a ``TRAINING_RESOLUTION`` square: the picture a training render would have been.
4. ``composite_on_white``, the training function itself, resizes that to the encoder's input size.

Every problem with an input raises ``ImageInputError`` with a one-line message naming the file.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mar3d.data import layout
from mar3d.data.datasets import composite_on_white

log = logging.getLogger(__name__)

TRAINING_RESOLUTION = 512  # `mar3d prepare` renders 512 x 512 views
# Longest side of the object's 2D bounding box (alpha >= 0.5) over the image side: the median over the
# training renders. Measured with `measure_framing` on runs/prepared/ycb (58 YCB scans x 56 views =
# 3,248 renders, `mar3d prepare` defaults): median 0.865, mean 0.835, quartiles 0.79 / 0.92, the 8 upright
# orbit views alone 0.85. It is not a constant of the renders: prepare scales the 3D bounding sphere
# (radius 0.95) to fill ~0.99 of the image, so a long object seen end-on covers far less.
FRAMING_FILL = 0.865

MAX_PIXELS = 64_000_000  # decoded RGBA at this size is 256 MB; a larger photo must be downscaled first
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "TGA", "PPM")  # raster formats only (JPEG includes MPO)
# File name endings of those formats: what a folder of inputs is searched for, what an upload may be.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".tga", ".ppm", ".mpo"}
FOREGROUND_ALPHA = 128  # a pixel belongs to the object when its alpha is at least half
OPAQUE_ALPHA = 250  # an RGBA image with no alpha below this carries no cut-out: treat it as a photo
MIN_FOREGROUND_SIDE = 16  # pixels; a smaller object cannot be rescaled into a useful input

# rembg: a local .onnx model (u2net-style) given by argument or this variable; rembg never downloads here.
REMBG_MODEL_ENV = "MAR3D_REMBG_MODEL"

# Built-in cut-out for uniform backgrounds (distances are Euclidean in RGB scaled to [0, 1]).
MASK_WORK_SIDE = 1024  # the mask is computed at most this large, then resized to the image
BORDER_SHARE = 0.02  # width of the border band that samples the background, as a share of the short side
CLUTTER_MEDIAN = 0.06  # median border distance above this: not a uniform background
CLUTTER_SHARE = 0.3  # more of the border than this differs from the background colour: not uniform either
KEY_THRESHOLD = 0.1  # a pixel farther than this from the background colour is foreground ...
KEY_NOISE_FACTOR = 4.0  # ... or farther than this many times the border's median distance, if larger
SPECK_SHARE = 0.02  # components smaller than this share of the largest one are noise
HOLE_SHARE = 0.01  # enclosed background-coloured regions smaller than this share of the object are filled


class ImageInputError(ValueError):
    """An input image that cannot be used; the message is one line naming the file and the problem."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file into RGBA, refusing empty, corrupt, non-image and oversized files.

    The EXIF orientation of camera photos is applied. Colour modes are converted as in ``to_rgba``.
    """
    path = Path(path)
    name = str(path)
    if path.is_dir():
        raise ImageInputError(f"{name}: is a folder, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageInputError(f"{name}: empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageInputError(f"{name}: no such file") from None
    except OSError as error:
        raise ImageInputError(f"{name}: cannot read the file ({_one_line(error.strerror or error)})") from None

    # Pillow warns between its own pixel limit and twice that and raises above; both are refusals here.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path, formats=FORMATS) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageInputError(
                        f"{name}: {width} x {height} pixels is more than the limit of {max_pixels:,} pixels; "
                        "downscale the image")
                opened.load()
                image = ImageOps.exif_transpose(opened)
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageInputError(f"{name}: image dimensions too large (decompression bomb guard: "
                                  f"{_one_line(error)})") from None
        except UnidentifiedImageError:
            raise ImageInputError(f"{name}: not an image file, or not one of {', '.join(FORMATS)}") from None
        except MemoryError:
            raise ImageInputError(f"{name}: out of memory while decoding the image") from None
        except Exception as error:  # decoders raise many types on malformed data (OSError, SyntaxError, ...)
            raise ImageInputError(f"{name}: corrupt or truncated image ({_one_line(error)})") from None
    return to_rgba(image, name)


def to_rgba(image: Image.Image, name: str = "image") -> Image.Image:
    """Any Pillow colour mode -> RGBA (8 bits per channel, straight alpha).

    Grayscale and palette images (with their transparency) convert as Pillow does; 16-bit grayscale
    ('I;16*', and 'I' as 16-bit PNG/TIFF decode) is scaled by 255/65535 instead of being clipped to white;
    CMYK uses Pillow's plain conversion (embedded ICC profiles are not applied).
    """
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGBA")
    if image.mode == "F":
        raise ImageInputError(f"{name}: floating-point images (mode F) are not supported; save it as 8 or 16 bits")
    try:
        return image.convert("RGBA")
    except (ValueError, OSError) as error:
        raise ImageInputError(f"{name}: cannot convert colour mode {image.mode} to RGBA "
                              f"({_one_line(error)})") from None


def foreground_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive, of the pixels with alpha >= ``FOREGROUND_ALPHA``; None if none."""
    inside = alpha >= FOREGROUND_ALPHA
    columns, rows = np.flatnonzero(inside.any(axis=0)), np.flatnonzero(inside.any(axis=1))
    if len(columns) == 0:
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def bbox_fill(alpha: np.ndarray) -> float:
    """Longest side of the foreground's bounding box over the image's longest side (0 if no foreground)."""
    box = foreground_bbox(alpha)
    if box is None:
        return 0.0
    return max(box[2] - box[0], box[3] - box[1]) / max(alpha.shape)


def measure_framing(root: str | Path) -> dict:
    """Statistics of ``bbox_fill`` over every rendered view of a prepared directory."""
    fills = []
    for item_id in layout.prepared_ids(root):
        for view in layout.read_views(root, item_id):
            with Image.open(layout.item_dir(root, item_id) / view["file"]) as image:
                fills.append(bbox_fill(np.asarray(image.getchannel("A"))))
    if not fills:
        raise ValueError(f"{root}: no rendered views")
    fills = np.array(fills)
    return {"views": len(fills), "median": float(np.median(fills)), "mean": float(fills.mean()),
            "p25": float(np.percentile(fills, 25)), "p75": float(np.percentile(fills, 75))}


def separate_foreground(image: Image.Image, name: str = "image", rembg_model: str | Path | None = None,
                        feather: float = 0.0) -> Image.Image:
    """RGBA image -> the same image with the object's alpha.

    An image with transparent pixels is a cut-out already and is returned as is. An opaque one is cut
    out by rembg when it is installed and a local model is given (``rembg_model`` or the
    ``MAR3D_REMBG_MODEL`` variable), otherwise by ``uniform_background_mask``. ``feather`` (pixels,
    Gaussian sigma) softens the edge of the built-in mask.
    """
    alpha = np.asarray(image.getchannel("A"))
    if alpha.max() == 0:
        raise ImageInputError(f"{name}: the image is fully transparent")
    if alpha.min() < OPAQUE_ALPHA:
        cut = image
    else:
        rgb = image.convert("RGB")
        model = rembg_model or os.environ.get(REMBG_MODEL_ENV)
        if model and importlib.util.find_spec("rembg") is not None:
            mask = _rembg_mask(rgb, str(model))
        else:
            if model:
                log.warning("%s is set but rembg is not installed; using the uniform-background cut-out", model)
            mask = uniform_background_mask(rgb, name, feather)
        cut = image.copy()
        cut.putalpha(mask)
    if bbox_fill(np.asarray(cut.getchannel("A"))) == 0.0:
        raise ImageInputError(f"{name}: no foreground: no pixel is more than half opaque")
    return cut


@functools.lru_cache(maxsize=2)
def _rembg_session(model_path: str):
    import rembg

    if not Path(model_path).is_file():
        raise FileNotFoundError(f"rembg model {model_path} not found (set by argument or {REMBG_MODEL_ENV})")
    return rembg.new_session("u2net_custom", model_path=model_path)


def _rembg_mask(rgb: Image.Image, model_path: str) -> Image.Image:
    import rembg

    return rembg.remove(rgb, session=_rembg_session(model_path), only_mask=True).convert("L")


def uniform_background_mask(rgb: Image.Image, name: str = "image", feather: float = 0.0) -> Image.Image:
    """Foreground mask ('L', the image's size) of a photo of one object on a uniform background.

    The background colour is the median of a border band (``BORDER_SHARE`` of the short side). The border
    must be uniform: its median distance to that colour at most ``CLUTTER_MEDIAN`` and at most
    ``CLUTTER_SHARE`` of it farther than the key threshold (an object may touch the edge). Foreground is
    every pixel farther from the background colour than the threshold, keeping the large connected
    components and filling small enclosed holes (large ones, like a mug handle's, stay background, as in
    the renders). Computed at most ``MASK_WORK_SIDE`` pixels across and resized (bilinear) to the image.
    """
    work = rgb
    if max(rgb.size) > MASK_WORK_SIDE:
        scale = MASK_WORK_SIDE / max(rgb.size)
        work = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                          Image.Resampling.BOX)
    pixels = np.asarray(work, dtype=np.float32) / 255.0
    height, width = pixels.shape[:2]
    band = max(2, round(BORDER_SHARE * min(height, width)))
    on_border = np.zeros((height, width), dtype=bool)
    on_border[:band], on_border[-band:], on_border[:, :band], on_border[:, -band:] = True, True, True, True

    background = np.median(pixels[on_border], axis=0)
    distance = np.linalg.norm(pixels - background, axis=2)
    border_median = float(np.median(distance[on_border]))
    threshold = max(KEY_THRESHOLD, KEY_NOISE_FACTOR * border_median)
    border_foreground = float((distance[on_border] > threshold).mean())
    if border_median > CLUTTER_MEDIAN or border_foreground > CLUTTER_SHARE:
        raise ImageInputError(
            f"{name}: the background is cluttered, not one uniform colour; give an RGBA cut-out (transparent "
            f"background) or install rembg with a local model ({REMBG_MODEL_ENV})")

    mask = _clean_mask(distance > threshold)
    if not mask.any():
        raise ImageInputError(f"{name}: no foreground: nothing differs from the uniform background colour")
    soft = mask.astype(np.float32)
    if feather > 0:
        soft = ndimage.gaussian_filter(soft, feather * width / rgb.width)
    result = Image.fromarray(np.rint(soft * 255).astype(np.uint8), "L")
    return result if result.size == rgb.size else result.resize(rgb.size, Image.Resampling.BILINEAR)


def _clean_mask(mask: np.ndarray) -> np.ndarray:
    """Drop specks (components under ``SPECK_SHARE`` of the largest), fill holes under ``HOLE_SHARE``."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    areas = np.bincount(labels.ravel())[1:]
    mask = np.isin(labels, 1 + np.flatnonzero(areas >= SPECK_SHARE * areas.max()))
    holes, count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if count:
        hole_areas = np.bincount(holes.ravel())[1:]
        mask |= np.isin(holes, 1 + np.flatnonzero(hole_areas < HOLE_SHARE * mask.sum()))
    return mask


def frame_object(image: Image.Image, resolution: int = TRAINING_RESOLUTION, fill: float = FRAMING_FILL,
                 name: str = "image") -> Image.Image:
    """Cut-out RGBA -> a ``resolution``-square RGBA with the object framed like a training render.

    The foreground's bounding box is centred and scaled so that its longest side spans ``fill`` of the
    image; everything is resampled once (bicubic, premultiplied alpha), outside the input is transparent.
    """
    box = foreground_bbox(np.asarray(image.getchannel("A")))
    if box is None:
        raise ImageInputError(f"{name}: no foreground: no pixel is more than half opaque")
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    if side < MIN_FOREGROUND_SIDE:
        raise ImageInputError(f"{name}: the object is only {side} pixels across (at least "
                              f"{MIN_FOREGROUND_SIDE} needed)")
    span = side / fill  # input pixels that the output square covers
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(np.floor(cx - span / 2)) - 2, int(np.floor(cy - span / 2)) - 2
    patch = image.crop((left, top, int(np.ceil(cx + span / 2)) + 2, int(np.ceil(cy + span / 2)) + 2))
    source = (cx - span / 2 - left, cy - span / 2 - top, cx + span / 2 - left, cy + span / 2 - top)
    return patch.resize((resolution, resolution), Image.Resampling.BICUBIC, box=source)


def preprocess(image: str | Path | Image.Image, size: int = 224, name: str | None = None,
               rembg_model: str | Path | None = None, fill: float = FRAMING_FILL,
               resolution: int = TRAINING_RESOLUTION, feather: float = 0.0) -> tuple[torch.Tensor, Image.Image]:
    """An image file or Pillow image -> the model's input and a preview of it.

    Returns:
        image: (3, size, size) float32 in [0, 1], the object on white, framed as in training.
        preview: the framed RGBA cut-out, ``resolution`` square; ``composite_on_white(preview, size)``
            is exactly ``image``.
    """
    if isinstance(image, Image.Image):
        name = name or getattr(image, "filename", "") or "image"
        rgba = to_rgba(image, name)
    else:
        name = name or str(image)
        rgba = load_image(image)
    cut = separate_foreground(rgba, name, rembg_model, feather)
    framed = frame_object(cut, resolution, fill, name)
    return composite_on_white(framed, size), framed
