"""Shared fixtures and the two test layers (docs/testing.md).

Expensive work happens once per test session: preparing real meshes (``prepared``), then the chain of real
training runs ``tiny_vae_run`` -> ``tiny_latents`` -> ``tiny_mar_lr_run`` / ``tiny_mar_hr_run`` ->
``tiny_pipeline``. Every test that uses one of those (directly or through other fixtures) gets the
``trained`` marker automatically, so ``pytest -m "not trained"`` runs the fast layer.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
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


# Every shared file a test opens (ycb() / classic() below). Checked once at the start of the session.
NEEDED_YCB = sorted({*WATERTIGHT_YCB, "006_mustard_bottle", "012_strawberry", "014_lemon", "024_bowl"})
NEEDED_CLASSIC = sorted({*HOLEY_CLASSIC, "cow", "spot"})

# Session fixtures that train, or hand on what was trained. A test that uses any of them, directly or
# through other fixtures (item.fixturenames is the whole closure), is marked `trained`. Tests that train
# or generate with the bundled demo model without these fixtures carry @pytest.mark.trained themselves.
TRAINED_FIXTURES = frozenset({"tiny_vae_run", "tiny_latents", "tiny_mar_lr_run", "tiny_mar_hr_run", "tiny_pipeline"})


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "trained: trains models or generates with trained ones (the tiny_* session fixtures, the "
                   "bundled demo model); the slow layer. Run the fast layer with -m 'not trained'.")


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so that the marker counts there
def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trained)


def pytest_sessionstart(session):
    """Stop at once, with one message and exit status 4, when the shared test data is not there (instead of
    a failure for each test that opens a mesh)."""
    origin = f"MAR3D_SHARED={os.environ['MAR3D_SHARED']}" if "MAR3D_SHARED" in os.environ else \
        "MAR3D_SHARED is unset: ../shared next to the repository"
    hint = "Set MAR3D_SHARED to the folder that holds data/ycb/*.glb and data/classic/*.glb."
    if not SHARED.is_dir():
        raise pytest.UsageError(f"shared test data folder not found: {SHARED} ({origin}). {hint}")
    missing = [p for p in [YCB / f"{n}.glb" for n in NEEDED_YCB] + [CLASSIC / f"{n}.glb" for n in NEEDED_CLASSIC]
               if not p.is_file()]
    if missing:
        names = ", ".join(str(p.relative_to(SHARED)) for p in missing)
        raise pytest.UsageError(f"shared test data incomplete in {SHARED} ({origin}): missing {names}. {hint}")


def ycb(name: str) -> Path:
    path = YCB / f"{name}.glb"
    if not path.exists():
        pytest.fail(f"shared test data missing: {path} (set MAR3D_SHARED to the folder holding data/; "
                    f"add the name to NEEDED_YCB in tests/conftest.py)")
    return path


def classic(name: str) -> Path:
    path = CLASSIC / f"{name}.glb"
    if not path.exists():
        pytest.fail(f"shared test data missing: {path} (set MAR3D_SHARED to the folder holding data/; "
                    f"add the name to NEEDED_CLASSIC in tests/conftest.py)")
    return path


def mesh_in_view_frame(prepared: Path, item_id: str, view: int):
    """The prepared item's source mesh, normalized and turned into view ``view``'s frame, as prepare did."""
    import numpy as np

    from mar3d.data import layout
    from mar3d.data.mesh_io import load_mesh
    from mar3d.data.normalize import normalization_matrix

    meta = layout.read_meta(prepared, item_id)
    mesh = load_mesh(meta["source"]).geometry
    mesh.apply_transform(normalization_matrix(np.asarray(meta["center"]), meta["scale"]))
    rotation = np.eye(4)
    rotation[:3, :3] = layout.read_views(prepared, item_id)[view]["rotation"]
    return mesh.apply_transform(rotation)


def view_image(prepared: Path, item_id: str, view: int = 0):
    """The prepared item's conditioning view ``view`` as an RGBA Pillow image."""
    from PIL import Image

    from mar3d.data import layout

    return Image.open(layout.item_dir(prepared, item_id) / "views" / f"{view:03d}.png").convert("RGBA")


# ------------------------------------------------------------------------------- fixture stages
STAGE_TAIL_LINES = 15


def _stage_failed(name: str, detail: str):
    """Fail a session fixture with a short message and no traceback. pytest keeps a session fixture's
    exception and raises it again for every test that needs the fixture, or a fixture built on it, so each
    of those tests reports this one message, naming the stage that failed."""
    raise pytest.fail.Exception(f"fixture stage {name!r} failed: {detail}", pytrace=False) from None


@contextlib.contextmanager
def stage(name: str):
    """Run a session fixture's work as a named stage: an exception becomes a short stage failure."""
    try:
        yield
    except Exception as error:  # pytest.fail (a stage that already failed) is a BaseException: passes as is
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__.tb_next))  # not this frame
        _stage_failed(name, "\n".join(text.rstrip().splitlines()[-STAGE_TAIL_LINES:]))


def _mar3d(args, all_threads: bool) -> subprocess.CompletedProcess:
    # No timeout: every command the tests run does bounded work (a fixed number of training steps, of
    # objects, of views), and a wall-clock limit only fails them on a busy machine.
    env = {k: v for k, v in os.environ.items() if not (all_threads and k == "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-m", "mar3d", *map(str, args)], capture_output=True, text=True, env=env)


def run_mar3d(*args, check: int = 0, all_threads: bool = False):
    """Run the `mar3d` command line in a subprocess; assert its exit status.

    ``all_threads``: ignore a test module's OMP_NUM_THREADS=1 (``one_torch_thread``), for the session's
    training fixtures, which may be built first inside such a module and gain from both cores.
    """
    result = _mar3d(args, all_threads)
    assert result.returncode == check, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run_stage(name: str, log: Path, *args) -> None:
    """A session fixture's `mar3d` command (on all threads): its whole output goes to ``log``; a non-zero
    exit fails the fixture as stage ``name`` with the last lines of the output."""
    result = _mar3d(args, all_threads=True)
    log.write_text(f"$ mar3d {' '.join(map(str, args))}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        tail = [line for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()] or ["(none)"]
        _stage_failed(name, f"`mar3d {args[0]}` exited with {result.returncode}: {tail[-1].strip()}\n"
                            f"last lines of its output ({log} has all of it):\n" + "\n".join(tail[-STAGE_TAIL_LINES:]))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepared directory of real watertight YCB scans and classic meshes with holes."""
    from mar3d.data.batch import run_batch
    from mar3d.data.prepare import PrepareSettings

    out = tmp_path_factory.mktemp("prepared")
    with stage("prepare meshes"):
        inputs = [str(ycb(n)) for n in WATERTIGHT_YCB] + [str(classic(n)) for n in HOLEY_CLASSIC]
        result = run_batch(inputs, out, PrepareSettings(**TEST_SETTINGS))
    if result.failed:
        _stage_failed("prepare meshes", f"{result.failed} of {len(inputs)} failed: {result.records}")
    return out


VAE_STEPS = 1500  # the tiny config's schedule: what it needs to fit the four scans (docs/vae.md)
MAR_STEPS = 300


@pytest.fixture(scope="session")
def tiny_vae_run(prepared, tmp_path_factory) -> Path:
    """`mar3d train vae --config tiny` on the four watertight scans of the shared prepared fixture."""
    folder = tmp_path_factory.mktemp("vae")
    run = folder / "run"
    run_stage("train vae", folder / "train.log", "train", "vae", "--config", "tiny", "--data", prepared, "--out",
              run, "--no-progress", "--max-steps", VAE_STEPS, "--only", *WATERTIGHT_YCB)
    return run


@pytest.fixture(scope="session")
def tiny_latents(prepared, tiny_vae_run, tmp_path_factory) -> Path:
    """`mar3d cache-latents` of the four scans' views with the tiny VAE."""
    folder = tmp_path_factory.mktemp("latents")
    cache = folder / "cache"
    run_stage("cache latents", folder / "cache-latents.log", "cache-latents", prepared, "--vae", tiny_vae_run,
              "--out", cache, "--only", *WATERTIGHT_YCB, "--no-progress")
    return cache


def _train_mar(stage: str, prepared: Path, vae_run: Path, cache: Path, folder: Path) -> Path:
    out = folder / "run"
    run_stage(f"train {stage}", folder / "train.log", "train", stage, "--config", "tiny", "--data", prepared,
              "--vae", vae_run, "--latents", cache, "--out", out, "--no-progress", "--max-steps", MAR_STEPS,
              "--only", *WATERTIGHT_YCB)
    return out


@pytest.fixture(scope="session")
def tiny_mar_lr_run(prepared, tiny_vae_run, tiny_latents, tmp_path_factory) -> Path:
    return _train_mar("mar-lr", prepared, tiny_vae_run, tiny_latents, tmp_path_factory.mktemp("mar_lr"))


@pytest.fixture(scope="session")
def tiny_mar_hr_run(prepared, tiny_vae_run, tiny_latents, tmp_path_factory) -> Path:
    return _train_mar("mar-hr", prepared, tiny_vae_run, tiny_latents, tmp_path_factory.mktemp("mar_hr"))


# Sampling settings that keep a generation to about a second with the tiny models.
FAST_PIPELINE_SETTINGS = dict(lr_steps=4, hr_steps=8, diffusion_steps=10, resolution=32)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_vae_run, tiny_mar_lr_run, tiny_mar_hr_run, tmp_path_factory) -> Path:
    """`mar3d export` of the tiny runs into a pipeline folder, with fast default settings."""
    folder = tmp_path_factory.mktemp("pipeline")
    out = folder / "model"
    settings = [f"--set={k}={v}" for k, v in FAST_PIPELINE_SETTINGS.items()]
    run_stage("export pipeline", folder / "export.log", "export", "--vae", tiny_vae_run, "--mar-lr",
              tiny_mar_lr_run, "--mar-hr", tiny_mar_hr_run, "--out", out, *settings)
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
