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
