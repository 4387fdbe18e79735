#!/usr/bin/env python
"""Extract the 1000 procedurally generated objects that ship inside the pybullet wheel (no install).

    python scripts/fetch_pybullet_objects.py OUT_DIR

Downloads the pybullet wheel with pip (about 100 MB, kept in OUT_DIR/.wheel for re-runs) and writes
OUT_DIR/<NNN>.obj for every pybullet_data/random_urdfs/NNN/NNN.obj (untextured meshes, 14 MB in all).
Prepare them with `mar3d prepare OUT_DIR --plain-colour random` (issue 8: a random plain colour each).
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PYBULLET = "pybullet==3.2.7"
PREFIX = "pybullet_data/random_urdfs/"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    wheels = out / ".wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("pybullet-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", PYBULLET, "--no-deps", "--only-binary", ":all:",
                        "-q", "-d", str(wheels)], check=True)
    wheel = sorted(wheels.glob("pybullet-*.whl"))[-1]
    written = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(PREFIX) and name.endswith(".obj"):
                target = out / Path(name).name
                if not target.exists():
                    tmp = target.with_suffix(".obj.tmp")
                    tmp.write_bytes(z.read(name))
                    tmp.replace(target)
                written += 1
    print(f"{written} objects in {out}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
