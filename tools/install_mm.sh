#!/usr/bin/env bash
# Install the OpenMMLab stack (mmengine, mmcv with ops, mmdet, mmsegmentation,
# pycocotools) into an existing environment without touching its torch.
#
#   bash tools/install_mm.sh [--plan] [PYTHON]        (default: .venv/bin/python)
#
# --plan prints how mmcv's ops would be built (CPU or CUDA, arch list, cache key) and exits.
#
# PyPI has no mmcv 2.x wheel for current torch, only the source release, and
# that source needs two patches to build against torch >= 2.9: C++20 instead of
# C++17 (torch's headers require it) and setuptools < 70 at build time (its
# setup.py imports pkg_resources).  The build takes ~8 minutes on 2 cores for
# CPU ops (CUDA ops take longer), so the wheel is cached outside the repository,
# keyed by mmcv, torch, Python, platform and, for CUDA builds, the CUDA toolkit
# and GPU archs; later runs install from the cache in seconds.  The old
# setuptools used by the build lives only in a throw-away directory on
# PYTHONPATH.
#
# CUDA ops are built when a CUDA toolkit is found (CUDA_HOME or nvcc on PATH) and
# torch is built with CUDA; TORCH_CUDA_ARCH_LIST defaults to the visible GPUs
# (tools/mm_build_plan.py makes these decisions).  With a GPU visible, the final
# check runs mmcv's nms and sigmoid_focal_loss on the GPU.
#
# The environment's setuptools is kept in ">=77.0.3,<80.9": torch asks for
# >= 77.0.3, mmengine resolves `mmdet::`/`mmseg::` config bases through
# pkg_resources (removed from setuptools 82), and setuptools >= 80.9 warns on
# every pkg_resources import.
#
# Environment: CDARTS_CACHE_DIR overrides the cache (default
# ~/.cache/cdarts-deploy); MAX_JOBS overrides the compile parallelism (default:
# the number of cores); CDARTS_MM_OPS=cpu builds CPU ops only even where CUDA
# ops could be built; TORCH_CUDA_ARCH_LIST is used as given.
set -euo pipefail

PLAN_ONLY=0
if [ "${1:-}" = "--plan" ]; then PLAN_ONLY=1; shift; fi
PY=${1:-.venv/bin/python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MMCV_VERSION=2.1.0
SETUPTOOLS_SPEC="setuptools>=77.0.3,<80.9"
# ftfy and regex: mmseg.models imports its CLIP tokenizer unconditionally.
MM_SPECS=("mmengine>=0.10,<1.0" "mmdet==3.3.0" "mmsegmentation==1.2.2" "pycocotools" "ftfy" "regex" "$SETUPTOOLS_SPEC")

if ! [ -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
    echo "install_mm.sh: python '$PY' not found; pass the environment's interpreter, e.g. bash tools/install_mm.sh .venv/bin/python" >&2
    exit 2
fi

say() { echo "install_mm.sh: $*" >&2; }

# MM_KEY, MM_FORCE_CUDA, MM_ARCH_LIST, MM_CUDA_HOME, MM_GPU_VISIBLE, MM_SUMMARY (its errors are one line, exit 2).
PLAN=$("$PY" "$HERE/mm_build_plan.py") || exit 2
eval "$PLAN"
if [ "$PLAN_ONLY" = 1 ]; then
    printf '%s\n' "$PLAN"
    exit 0
fi

stack_ok() {
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import mmcv, mmcv.ops, mmdet, mmseg, mmengine, pycocotools  # noqa: F401
import mmdet.models, mmseg.models  # noqa: F401  (their import-time dependencies)
import pkg_resources  # noqa: F401  (mmengine resolves mmdet::/mmseg:: config bases with it)
import torch
from mmcv.ops import nms, sigmoid_focal_loss  # the compiled extension, not just the Python side
assert md.version("mmcv") == "2.1.0"
assert md.version("mmdet") == "3.3.0" and md.version("mmsegmentation") == "1.2.2"
assert int(md.version("mmengine").split(".")[0]) < 1
# The ops that will run: on the GPU when one is visible (a CPU-only mmcv fails here).
device = "cuda" if torch.cuda.is_available() else "cpu"
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]], device=device)
kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)[1]
assert sorted(kept.tolist()) == [0, 2], kept
if device == "cuda":  # mmcv has no CPU kernel for it; on CPU mmdet's FocalLoss uses its PyTorch version
    logits = torch.zeros(4, 3, device=device, requires_grad=True)
    sigmoid_focal_loss(logits, torch.tensor([0, 1, 2, 0], device=device), 2.0, 0.25, None, "mean").backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
EOF
}

installed_ops() {
    "$PY" -c 'from mmcv.ops import get_compiling_cuda_version as v; s = v(); print("CPU ops only" if s == "not available" else "CUDA ops for CUDA " + s)' 2>/dev/null || echo "unknown ops"
}

if stack_ok; then
    say "OpenMMLab stack already installed for $PY (mmcv: $(installed_ops))"
    exit 0
fi

# Pin what other code in this environment depends on, so no dependency of the
# OpenMMLab packages can up- or downgrade it (setuptools is set by MM_SPECS).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cdarts-mm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$PY" - >"$WORK/constraints.txt" <<'EOF'
import importlib.metadata as md
for name in ("torch", "torchvision", "numpy", "timm", "onnx", "onnxruntime"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF
echo "mmcv==$MMCV_VERSION" >>"$WORK/constraints.txt"

KEY=$MM_KEY
CACHE=${CDARTS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cdarts-deploy}
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY"
mkdir -p "$WHEEL_DIR"

build_mmcv() {
    # The build tree lives in the cache too, so an interrupted build resumes where ninja stopped.
    local build="$CACHE/build/mmcv-$MMCV_VERSION-$KEY"
    local src="$build/mmcv-$MMCV_VERSION"
    say "building mmcv $MMCV_VERSION from source for $KEY: $MM_SUMMARY (CPU ops: about 8 minutes on 2 idle cores, CUDA ops longer; wheel cached in $WHEEL_DIR)"
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
    local cuda_env=(FORCE_CUDA=0)
    if [ "$MM_FORCE_CUDA" = 1 ]; then
        cuda_env=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$MM_ARCH_LIST" "CUDA_HOME=$MM_CUDA_HOME")
    fi
    # Python's own CFLAGS carry -g: -g0 (last flag wins) drops the debug information, about 80 MB of the 82 MB
    # extension, and a good part of the compile time.
    env PYTHONPATH="$pp" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}" "${cuda_env[@]}" \
        CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" \
        "$PY" -m pip wheel --no-deps --no-build-isolation -w "$WORK/dist" "$src"
    local built
    built=$(ls "$WORK"/dist/mmcv-"$MMCV_VERSION"-*.whl)
    # Rename into place so an interrupted copy never leaves a half-written wheel.
    cp "$built" "$WHEEL_DIR/.partial"
    mv "$WHEEL_DIR/.partial" "$WHEEL_DIR/$(basename "$built")"
    rm -rf "$build"
    say "built mmcv $MMCV_VERSION: $MM_SUMMARY"
}

# One build at a time per cache, even if two make runs start together.
exec 9>"$WHEEL_DIR/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if ! ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    build_mmcv
else
    say "using cached mmcv wheel from $WHEEL_DIR ($MM_SUMMARY)"
fi
WHEEL=$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)

"$PY" -m pip install -q -c "$WORK/constraints.txt" "$WHEEL" "${MM_SPECS[@]}"

if ! stack_ok; then
    if [ "$MM_GPU_VISIBLE" = 1 ]; then
        say "installed, but mmcv's ops fail on the GPU (mmcv: $(installed_ops)); run: $PY -c 'import torch, mmcv.ops; print(mmcv.ops.nms(torch.rand(3, 4).cuda() * 10, torch.rand(3).cuda(), 0.5))'"
    else
        say "installed, but 'import mmcv.ops, mmdet, mmseg, pkg_resources' still fails; run: $PY -c 'import mmcv.ops, mmdet, mmseg, pkg_resources'"
    fi
    exit 1
fi
say "OpenMMLab stack ready for $PY (mmcv: $(installed_ops))"
