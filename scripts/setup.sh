#!/usr/bin/env bash
# Set up mar3d on a fresh Debian/Ubuntu machine (CPU or GPU), then run the main job.
#   bash scripts/setup.sh            # install everything, then run the main job on the bundled default
#   bash scripts/setup.sh --no-demo  # install only (what CI does)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages: OSMesa (headless CPU rendering of the conditioning views) and GL/EGL loaders;
# chromium, the headless browser of the web app's end-to-end test (tests/test_web.py).
missing=()
for pkg in libosmesa6 libegl1 libgl1 chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build onto CPU machines.
if ! $PYTHON -c "import torch" 2>/dev/null; then
    $PYTHON -m pip install -q "torch==2.13.0"
fi
$PYTHON -m pip install -q -e ".[dev]"
# pyrender's release pins PyOpenGL==3.1.0, which cannot render headless with current Mesa; its
# real dependencies are listed in pyproject.toml, so install it alone.
$PYTHON -m pip install -q --no-deps "pyrender==0.1.45"
$PYTHON -c "import mar3d.data.render" && echo "mar3d installed: $(command -v mar3d)"

if [ "${1:-}" != "--no-demo" ]; then
    # Main job: the bundled demo model turns every bundled example image (renders of held-out YCB scans)
    # into a mesh plus a normal-map preview: outputs/<name>.glb and outputs/<name>.preview.png.
    mar3d generate examples --out outputs --preview --overwrite
fi
