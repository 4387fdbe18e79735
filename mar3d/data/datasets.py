"""Torch datasets over a prepared directory (the output of ``mar3d prepare``).

Every item is a fresh random draw from the stored pools, so an epoch never repeats the same points.
The draw uses a numpy generator seeded from torch's RNG, so ``torch.manual_seed`` (and the DataLoader's
per-worker seeding) makes a run reproducible.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from torch.utils.data import Dataset

from mar3d.data import latent_cache, layout

PAPER_PYRAMID = (16384, 4096, 1024)  # paper: HR encoding levels, nested
LR_EXTRA_LEVEL = 256  # one level below, for encoding the 256-token LR latents from (4096, 1024, 256)
DEFAULT_PYRAMID = PAPER_PYRAMID + (LR_EXTRA_LEVEL,)
DEFAULT_SUPERVISION = 20480  # paper
NEAR_SURFACE_SHARE = 0.25  # release: 1/4 near-surface, 3/4 uniform
LR_LATENTS_KEY = "lr_latents"  # MAR-HR items: the LR latents of the same view, its condition


def torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global RNG, so that DataLoader worker seeding and training
    resumes (which restore torch's state) also decide the numpy draws."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def draw_pyramid(points: np.ndarray, normals: np.ndarray, sizes: Sequence[int],
                 rng: np.random.Generator) -> list[torch.Tensor]:
    """Nested random subsets of the surface pool: level k+1 is a subset of level k.

    Args:
        points, normals: (P, 3) surface pool.
        sizes: decreasing level sizes, e.g. (16384, 4096, 1024, 256).
    Returns:
        one (n_k, 6) float32 tensor per level: xyz then unit normal.
    """
    if list(sizes) != sorted(sizes, reverse=True):
        raise ValueError(f"pyramid sizes must be decreasing, got {tuple(sizes)}")
    if sizes[0] > len(points):
        raise ValueError(f"pyramid level of {sizes[0]} points, but the surface pool has only {len(points)}")
    index = rng.choice(len(points), size=sizes[0], replace=False)
    both = np.concatenate([points[index], normals[index]], axis=1).astype(np.float32)
    # A random subset's first n entries are themselves a uniform random subset: nesting for free.
    return [torch.from_numpy(both[:n].copy()) for n in sizes]


def stack_pyramids(pyramids: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Per-shape pyramids (each a list of (n_k, 6) levels, the same sizes) -> one batch: (B, n_k, 6) per level."""
    return [torch.stack(levels) for levels in zip(*pyramids)]


def draw_supervision(occ_points: np.ndarray, occ_labels: np.ndarray, near_count: int, count: int,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` occupancy points, 1/4 from the near-surface pool and 3/4 from the uniform pool.

    Returns:
        points (count, 3) float32 and labels (count,) float32 (1 = inside).
    """
    n_near = int(round(count * NEAR_SURFACE_SHARE))
    near = rng.choice(near_count, size=n_near, replace=n_near > near_count)
    far = near_count + rng.choice(len(occ_points) - near_count, size=count - n_near,
                                  replace=count - n_near > len(occ_points) - near_count)
    index = np.concatenate([near, far])
    return (torch.from_numpy(occ_points[index].astype(np.float32)),
            torch.from_numpy(occ_labels[index].astype(np.float32)))


def rotate_pyramid(rotation: np.ndarray, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each level (P_k, 6) of points and normals rotated by ``rotation`` (3, 3): into a view's frame."""
    r = torch.from_numpy(rotation.astype(np.float32))
    return [torch.cat([level[:, :3] @ r.T, level[:, 3:] @ r.T], dim=1) for level in pyramid]


def composite_on_white(rgba: Image.Image, size: int) -> torch.Tensor:
    """RGBA image -> (3, size, size) float32 in [0, 1], composited on white (release convention)."""
    rgba = rgba.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(rgba, dtype=np.float32) / 255.0
    rgb = array[..., :3] * array[..., 3:] + (1.0 - array[..., 3:])
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class _PreparedItems(Dataset):
    def __init__(self, root: str | Path, ids: Sequence[str] | None = None, exclude: Sequence[str] = ()):
        self.root = Path(root)
        available = layout.prepared_ids(self.root)
        if ids is not None:
            missing = sorted(set(ids) - set(available))
            if missing:
                raise ValueError(f"{self.root}: not prepared (or failed): {', '.join(missing[:10])}")
            available = list(dict.fromkeys(ids))  # in the order given (a run's validation ids)
        excluded = set(exclude)
        self.ids = [i for i in available if i not in excluded]
        if not self.ids:
            raise ValueError(f"{self.root}: no prepared items to use")
        self._near_count = {}

    def _samples(self, item_id: str) -> dict[str, np.ndarray]:
        samples = layout.read_samples(self.root, item_id)
        if item_id not in self._near_count:
            self._near_count[item_id] = layout.read_meta(self.root, item_id)["counts"]["occupancy_near_surface"]
        samples["near_count"] = self._near_count[item_id]
        return samples


class VAEDataset(_PreparedItems):
    """Per item: a surface pyramid and occupancy supervision, optionally rotated by a stored view.

    Item keys: ``pyramid`` (list of (n_k, 6)), ``points`` (S, 3), ``labels`` (S,), ``rotation`` (3, 3), ``id``.
    """

    def __init__(self, root, ids=None, exclude=(), pyramid: Sequence[int] = DEFAULT_PYRAMID,
                 supervision: int = DEFAULT_SUPERVISION, rotate: bool = False):
        super().__init__(root, ids, exclude)
        self.pyramid, self.supervision, self.rotate = tuple(pyramid), supervision, rotate
        self._rotations: dict[str, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        item_id = self.ids[index]
        rng = torch_seeded_rng()
        s = self._samples(item_id)
        pyramid = draw_pyramid(s["surface_points"], s["surface_normals"], self.pyramid, rng)
        points, labels = draw_supervision(s["occ_points"], s["occ_labels"], s["near_count"], self.supervision, rng)
        rotation = np.eye(3)
        if self.rotate:
            if item_id not in self._rotations:
                self._rotations[item_id] = [v["rotation"] for v in layout.read_views(self.root, item_id)]
            rotation = self._rotations[item_id][rng.integers(len(self._rotations[item_id]))]
            pyramid = rotate_pyramid(rotation, pyramid)
            points = points @ torch.from_numpy(rotation.astype(np.float32)).T
        return {"pyramid": pyramid, "points": points, "labels": labels,
                "rotation": torch.from_numpy(rotation.astype(np.float32)), "id": item_id}


class MARDataset(_PreparedItems):
    """(object, view) pairs of one prepared directory: the MAR's training items.

    Item keys: ``image`` (3, S, S) in [0, 1], composited on white and quantized to 8-bit values; then either the
    cached ``latents`` (N, C) of ``tokens`` tokens (and ``lr_latents`` (N_lr, C) when ``lr_tokens`` is given)
    read from a ``latents`` cache folder (``mar3d.data.latent_cache``), or without one the surface ``pyramid``
    (list of (n_k, 6)) rotated into the view frame, for a VAE to encode. Plus ``rotation`` (3, 3), ``id`` and
    ``view``. ``views`` > 0 takes the first that many rendered views of each object (0: all).
    """

    def __init__(self, root, ids=None, exclude=(), pyramid: Sequence[int] = DEFAULT_PYRAMID, image_size: int = 224,
                 views: int = 0, latents: str | Path | None = None, tokens: int | None = None,
                 lr_tokens: int | None = None, cached_images: int = 0, frame_fill: float | None = None):
        super().__init__(root, ids, exclude)
        self.pyramid, self.image_size, self.frame_fill = tuple(pyramid), image_size, frame_fill
        self.items: list[tuple[str, int, dict]] = []
        for item_id in self.ids:
            item_views = layout.read_views(self.root, item_id)
            count = min(views, len(item_views)) if views else len(item_views)
            self.items.extend((item_id, j, item_views[j]) for j in range(count))
        if not self.items:
            raise ValueError(f"{self.root}: the objects have no rendered views")
        self.latents = Path(latents) if latents else None
        if self.latents is not None and tokens is None:
            raise ValueError("reading cached latents needs their token count")
        self.tokens, self.lr_tokens = tokens, lr_tokens
        # index -> its image (uint8) and cached latents: decoding a 512² PNG costs more than a tiny MAR step,
        # so small datasets keep up to ``cached_images`` decoded items in memory (per process)
        self.cached_images = cached_images
        self._memory: dict[int, dict] = {}

    def _framed(self, image: Image.Image, name: str) -> Image.Image:
        """The render reframed as inference frames an input (``frame_fill``), at the render's resolution."""
        from mar3d.pipeline.images import frame_object  # here: the pipeline's images module imports this one

        return frame_object(image.convert("RGBA"), image.size[0], self.frame_fill, name)

    def _load(self, index: int) -> dict:
        """The deterministic part of an item: the image (8-bit values) and, with a cache, its latents."""
        item_id, j, view = self.items[index]
        with Image.open(layout.item_dir(self.root, item_id) / view["file"]) as im:
            # Quantized to 8 bits always, so an image is the same whether it came from memory or not
            # (and a resumed run, whose memory fills in another order, sees the same values).
            rgba = im if self.frame_fill is None else self._framed(im, f"{item_id} {view['file']}")
            out = {"image": (composite_on_white(rgba, self.image_size) * 255).round().to(torch.uint8)}
        if self.latents is not None:
            path = self.latents / f"{item_id}{latent_cache.SUFFIX}"
            if not path.exists():
                raise FileNotFoundError(f"{path}: no cached latents for {item_id} (run `mar3d cache-latents`)")
            with safe_open(str(path), framework="pt") as f:
                target = f.get_slice(latent_cache.tokens_key(self.tokens))
                if j >= target.get_shape()[0]:
                    raise ValueError(f"{path}: holds {target.get_shape()[0]} views, view {j} is needed; set "
                                     "data.views_per_object to at most that or re-run `mar3d cache-latents`")
                out["latents"] = target[j]
                if self.lr_tokens is not None:
                    out[LR_LATENTS_KEY] = f.get_slice(latent_cache.tokens_key(self.lr_tokens))[j]
        return out

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item_id, j, view = self.items[index]
        loaded = self._memory.get(index)
        if loaded is None:
            loaded = self._load(index)
            if len(self._memory) < self.cached_images:
                self._memory[index] = loaded
        out = dict(loaded, image=loaded["image"].float() / 255, id=item_id, view=j,
                   rotation=torch.from_numpy(view["rotation"].astype(np.float32)))
        if self.latents is None:
            s = layout.read_samples(self.root, item_id)
            pyramid = draw_pyramid(s["surface_points"], s["surface_normals"], self.pyramid, torch_seeded_rng())
            out["pyramid"] = rotate_pyramid(view["rotation"], pyramid)
        return out
