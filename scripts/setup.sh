#!/usr/bin/env bash
# Set up mar3d on a fresh Debian/Ubuntu machine (CPU or GPU), then run the main job.
#   bash scripts/setup.sh            # install everything, then run the main job on the bundled default
#   bash scripts/setup.sh --no-demo  # install only (what CI does)
#
# Where things go: Debian packages system-wide (apt-get, through sudo when not root); everything Python
# into the virtual environment .venv/ in this checkout, made here without system site-packages, so
# that it holds exactly what mar3d declares. Use it with `source .venv/bin/activate` (then `mar3d ...`)
# or call .venv/bin/mar3d directly. To install into another environment instead, activate it first:
# an active virtual environment ($VIRTUAL_ENV) is used as it is. PYTHON picks the interpreter that
# makes .venv (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages: OSMesa (headless CPU rendering of the conditioning views) and GL/EGL loaders;
# chromium, the headless browser of the web app's end-to-end test (tests/test_web.py); the venv module
# where the interpreter is Debian's own (it ships ensurepip separately).
missing=()
for pkg in libosmesa6 libegl1 libgl1 chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
    missing+=("python3-venv")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${VIRTUAL_ENV:-}" ]; then
    VENV=$VIRTUAL_ENV
    echo "installing into the active virtual environment $VENV"
else
    VENV=.venv
    if [ ! -x "$VENV/bin/python" ]; then
        echo "making the virtual environment $VENV (with $("$PYTHON" --version))"
        "$PYTHON" -m venv "$VENV"
    fi
    echo "installing into $PWD/$VENV (activate it with: source $VENV/bin/activate)"
fi
PY="$VENV/bin/python"
pip_install() {
    # pip's own noise filtered out: warnings about index locations of a local mirror's configuration, and
    # the resolver's complaint about pyrender's PyOpenGL pin, which is deliberately not honoured (below).
    "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v -e "is ignored: it is neither a file nor a directory" -e "pyrender 0.1.45 requires PyOpenGL==3.1.0" \
                    -e "dependency resolver does not currently take into account" || true; }
    return "${PIPESTATUS[0]}"
}

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build onto CPU machines.
if ! "$PY" -c "import torch" 2>/dev/null; then
    pip_install "torch==2.13.0"
fi
pip_install -e ".[dev]"
# pyrender's release pins PyOpenGL==3.1.0, which cannot render headless with current Mesa; its
# real dependencies are listed in pyproject.toml, so install it alone.
pip_install --no-deps "pyrender==0.1.45"
"$PY" -c "import mar3d.data.render" && echo "mar3d installed: $VENV/bin/mar3d"

if [ "${1:-}" != "--no-demo" ]; then
    # Main job: the bundled demo model turns every bundled example image (renders of held-out YCB scans)
    # into a mesh plus a normal-map preview: outputs/<name>.glb and outputs/<name>.preview.png. Finished
    # images are kept, so an interrupted run picks up where it stopped when run again.
    "$VENV/bin/mar3d" generate examples --out outputs --preview
fi
