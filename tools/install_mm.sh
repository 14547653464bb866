#!/usr/bin/env bash
# Install the OpenMMLab stack (mmengine, mmcv with ops, mmdet, mmsegmentation,
# pycocotools) into an existing environment without touching its torch.
#
#   bash tools/install_mm.sh [PYTHON]        (default: .venv/bin/python)
#
# PyPI has no mmcv 2.x wheel for current torch, only the source release, and
# that source needs two patches to build against torch >= 2.9: C++20 instead of
# C++17 (torch's headers require it) and setuptools < 70 at build time (its
# setup.py imports pkg_resources).  The build takes ~8 minutes on 2 cores, so
# the wheel is cached outside the repository, keyed by mmcv, torch, Python and
# platform; later runs install from the cache in seconds.  The old setuptools
# lives only in a throw-away directory on PYTHONPATH during the build, so the
# environment's own setuptools (which torch needs to be new) is never changed.
#
# Environment: CDARTS_CACHE_DIR overrides the cache (default
# ~/.cache/cdarts-deploy); MAX_JOBS overrides the compile parallelism (default:
# the number of cores).
set -euo pipefail

PY=${1:-.venv/bin/python}
MMCV_VERSION=2.1.0
# ftfy and regex: mmseg.models imports its CLIP tokenizer unconditionally.
MM_SPECS=("mmengine>=0.10,<1.0" "mmdet==3.3.0" "mmsegmentation==1.2.2" "pycocotools" "ftfy" "regex")

if ! [ -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
    echo "install_mm.sh: python '$PY' not found; pass the environment's interpreter, e.g. bash tools/install_mm.sh .venv/bin/python" >&2
    exit 2
fi

say() { echo "install_mm.sh: $*" >&2; }

stack_ok() {
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import mmcv, mmcv.ops, mmdet, mmseg, mmengine, pycocotools  # noqa: F401
import mmdet.models, mmseg.models  # noqa: F401  (their import-time dependencies)
from mmcv.ops import nms  # the compiled extension, not just the Python side
assert md.version("mmcv") == "2.1.0"
assert md.version("mmdet") == "3.3.0" and md.version("mmsegmentation") == "1.2.2"
assert int(md.version("mmengine").split(".")[0]) < 1
EOF
}

if stack_ok; then
    say "OpenMMLab stack already installed for $PY"
    exit 0
fi

# Pin what other code in this environment depends on, so no dependency of the
# OpenMMLab packages can up- or downgrade it.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cdarts-mm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" - >"$WORK/constraints.txt" <<'EOF'
import importlib.metadata as md
for name in ("torch", "torchvision", "numpy", "timm", "onnx", "onnxruntime", "setuptools"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF
echo "mmcv==$MMCV_VERSION" >>"$WORK/constraints.txt"

KEY=$("$PY" - <<'EOF'
import sys, sysconfig, importlib.metadata as md
torch_version = md.version("torch").split("+")[0]
print(f"torch{torch_version}-cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}")
EOF
)
CACHE=${CDARTS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cdarts-deploy}
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY"
mkdir -p "$WHEEL_DIR"

build_mmcv() {
    # The build tree lives in the cache too, so an interrupted build resumes where ninja stopped.
    local build="$CACHE/build/mmcv-$MMCV_VERSION-$KEY"
    local src="$build/mmcv-$MMCV_VERSION"
    say "building mmcv $MMCV_VERSION from source for $KEY (about 8 minutes on 2 idle cores; wheel cached in $WHEEL_DIR)"
    mkdir -p "$build"
    [ -d "$build/buildtools/setuptools" ] || "$PY" -m pip install -q --target "$build/buildtools" "setuptools<70"
    local pp="$build/buildtools${PYTHONPATH:+:$PYTHONPATH}"
    if ! [ -f "$src/.patched" ]; then
        rm -rf "$src" "$build/sdist"
        PYTHONPATH="$pp" "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$build/sdist"
        tar -xzf "$build/sdist/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
        sed -i 's/c++17/c++20/g' "$src/setup.py"
        grep -q 'c++20' "$src/setup.py" || { say "could not patch mmcv's setup.py to C++20"; exit 1; }
        touch "$src/.patched"
    fi
    # ninja lets MAX_JOBS compile in parallel; without it torch falls back to one file at a time.
    "$PY" -c 'import ninja' 2>/dev/null || "$PY" -m pip install -q ninja
    export PATH="$(dirname "$PY"):$PATH"
    # Python's own CFLAGS carry -g: -g0 (last flag wins) drops the debug information, about 80 MB of the 82 MB
    # extension, and a good part of the compile time.
    PYTHONPATH="$pp" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}" FORCE_CUDA=0 \
        CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" \
        "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WORK/dist" "$src"
    local built
    built=$(ls "$WORK"/dist/mmcv-"$MMCV_VERSION"-*.whl)
    # Rename into place so an interrupted copy never leaves a half-written wheel.
    cp "$built" "$WHEEL_DIR/.partial"
    mv "$WHEEL_DIR/.partial" "$WHEEL_DIR/$(basename "$built")"
    rm -rf "$build"
}

# One build at a time per cache, even if two make runs start together.
exec 9>"$WHEEL_DIR/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if ! ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    build_mmcv
else
    say "using cached mmcv wheel from $WHEEL_DIR"
fi
WHEEL=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)

"$PY" -m pip install -q -c "$WORK/constraints.txt" "$WHEEL" "${MM_SPECS[@]}"

if ! stack_ok; then
    say "installed, but 'import mmcv.ops, mmdet, mmseg' still fails; run: $PY -c 'import mmcv.ops, mmdet, mmseg'"
    exit 1
fi
say "OpenMMLab stack ready for $PY"
