"""Shared fixtures. Expensive work (preparing real meshes) happens once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAR3D_SHARED", REPO.parent / "shared")) / "data"
YCB = SHARED / "ycb"
CLASSIC = SHARED / "classic"

# Watertight after merging vertices (shared/data/ycb/manifest.json), of varied shapes.
WATERTIGHT_YCB = ["003_cracker_box", "011_banana", "013_apple", "019_pitcher_base"]
HOLEY_CLASSIC = ["stanford-bunny", "teapot"]

# Small but real: enough points for the statistics the tests check, few views to keep it fast.
TEST_SETTINGS = dict(surface_samples=40_000, occupancy_samples=100_000, views=16, resolution=512, up_axis="z")


def ycb(name: str) -> Path:
    path = YCB / f"{name}.glb"
    if not path.exists():
        pytest.fail(f"shared test data missing: {path} (set MAR3D_SHARED to the folder holding data/)")
    return path


def classic(name: str) -> Path:
    return CLASSIC / f"{name}.glb"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared directory of real watertight YCB scans and classic meshes with holes."""
    from mar3d.data.batch import run_batch
    from mar3d.data.prepare import PrepareSettings

    out = tmp_path_factory.mktemp("prepared")
    inputs = [str(ycb(n)) for n in WATERTIGHT_YCB] + [str(classic(n)) for n in HOLEY_CLASSIC]
    result = run_batch(inputs, out, PrepareSettings(**TEST_SETTINGS))
    assert result.failed == 0, result.records
    return out


def run_mar3d(*args, check: int = 0, all_threads: bool = False):
    """Run the `mar3d` command line in a subprocess; assert its exit status.

    ``all_threads``: ignore a test module's OMP_NUM_THREADS=1 (``one_torch_thread``), for the session's
    training fixtures, which may be built first inside such a module and gain from both cores.
    """
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not (all_threads and k == "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-m", "mar3d", *map(str, args)], capture_output=True, text=True,
                            timeout=1800, env=env)
    assert result.returncode == check, result.stdout[-3000:] + result.stderr[-3000:]
    return result


VAE_STEPS = 2500  # the tiny config's schedule: what it needs to fit the four scans (docs/vae.md)
MAR_STEPS = 300


@pytest.fixture(scope="session")
def tiny_vae_run(prepared, tmp_path_factory) -> Path:
    """`mar3d train vae --config tiny` on the four watertight scans of the shared prepared fixture."""
    run = tmp_path_factory.mktemp("vae") / "run"
    run_mar3d("train", "vae", "--config", "tiny", "--data", prepared, "--out", run, "--no-progress",
              "--max-steps", VAE_STEPS, "--only", *WATERTIGHT_YCB, all_threads=True)
    return run


@pytest.fixture(scope="session")
def tiny_latents(prepared, tiny_vae_run, tmp_path_factory) -> Path:
    """`mar3d cache-latents` of the four scans' views with the tiny VAE."""
    cache = tmp_path_factory.mktemp("latents") / "cache"
    run_mar3d("cache-latents", prepared, "--vae", tiny_vae_run, "--out", cache, "--only", *WATERTIGHT_YCB,
              "--no-progress", all_threads=True)
    return cache


def _train_mar(stage: str, prepared: Path, vae_run: Path, cache: Path, out: Path) -> Path:
    run_mar3d("train", stage, "--config", "tiny", "--data", prepared, "--vae", vae_run, "--latents", cache,
              "--out", out, "--no-progress", "--max-steps", MAR_STEPS, "--only", *WATERTIGHT_YCB, all_threads=True)
    return out


@pytest.fixture(scope="session")
def tiny_mar_lr_run(prepared, tiny_vae_run, tiny_latents, tmp_path_factory) -> Path:
    return _train_mar("mar-lr", prepared, tiny_vae_run, tiny_latents, tmp_path_factory.mktemp("mar_lr") / "run")


@pytest.fixture(scope="session")
def tiny_mar_hr_run(prepared, tiny_vae_run, tiny_latents, tmp_path_factory) -> Path:
    return _train_mar("mar-hr", prepared, tiny_vae_run, tiny_latents, tmp_path_factory.mktemp("mar_hr") / "run")


# Sampling settings that keep a generation to about a second with the tiny models.
FAST_PIPELINE_SETTINGS = dict(lr_steps=4, hr_steps=8, diffusion_steps=10, resolution=32)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run, tmp_path_factory) -> Path:
    """`mar3d export` of the tiny runs into a pipeline folder, with fast default settings."""
    out = tmp_path_factory.mktemp("pipeline") / "model"
    settings = [f"--set={k}={v}" for k, v in FAST_PIPELINE_SETTINGS.items()]
    run_mar3d("export", "--vae", tiny_vae_run, "--mar-lr", tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run,
              "--out", out, *settings)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread, here and in the commands a test starts. Tiny models' ops are too small to gain
    from threads, and where the 2 cores are shared with other work, 2 threads made inference tests 4x slower
    (OpenMP threads waiting for each other)."""
    import torch

    threads, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if variable is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = variable
