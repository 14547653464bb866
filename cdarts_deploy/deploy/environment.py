"""What a bug report needs to know about this machine: the CPU and the kernels each library will pick on it.

``cdarts-env`` prints it (``cdarts_deploy.commands.env``).

The block holds the CPU model and the ISA flags that decide which kernels run (AVX2, AVX-512, VNNI, AMX),
the paths taken on this machine (PyTorch's ATen CPU capability, oneDNN's highest ISA, ONNX Runtime's
INT8 GEMM kernel family and what it means for 8-bit weights), library versions, CUDA / GPU / TensorRT
availability and the thread settings.  :func:`environment` is cheap (no subprocess, no GPU work, no
import of an optional package), so every export report can carry it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import onnxruntime
import torch

FORMAT = "cdarts-env"
VERSION = 1

#: The flags of /proc/cpuinfo that decide which CPU kernels run, reported one by one.
ISA_FLAGS = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")

#: oneDNN's CPU ISAs from lowest to highest (ONEDNN_MAX_CPU_ISA values), each with the flags it needs.
ONEDNN_ISAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SSE41", ("sse4_1",)),
    ("AVX", ("avx",)),
    ("AVX2", ("avx2", "fma")),
    ("AVX2_VNNI", ("avx2", "fma", "avx_vnni")),
    ("AVX512_CORE", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX512_CORE_VNNI", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")),
    ("AVX512_CORE_BF16", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16")),
    ("AVX512_CORE_FP16", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                          "avx512_fp16")),
    ("AVX512_CORE_AMX", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx512_bf16",
                         "amx_tile", "amx_int8", "amx_bf16")),
)
#: Newer oneDNN spellings of the same levels.
ONEDNN_ALIASES = {"AVX10_1_512": "AVX512_CORE_FP16", "AVX10_1_512_AMX": "AVX512_CORE_AMX"}

#: Distributions reported (module imported only if it already is; else the installed metadata is read).
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch", ("torch",)),
    ("torchvision", ("torchvision",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")),
    ("onnx", ("onnx",)),
    ("onnxscript", ("onnxscript",)),
    ("timm", ("timm",)),
    ("numpy", ("numpy",)),
    ("mmengine", ("mmengine", "mmengine-lite")),
    ("mmcv", ("mmcv", "mmcv-lite", "mmcv-full")),
    ("mmdet", ("mmdet",)),
    ("mmseg", ("mmsegmentation",)),
    ("tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13", "tensorrt_cu12")),
)

PORTABLE_HINT = "cdarts-export --int8-cpu portable (7-bit weights) or --int8-cpu auto"


# --------------------------------------------------------------------------- the CPU


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model, vendor, flags and core counts from the text of /proc/cpuinfo (x86 ``flags`` or Arm ``Features``)."""
    model = vendor = None
    flags: set[str] = set()
    logical = 0
    cores_per_package: dict[str, int] = {}
    package = "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            logical += 1
        elif key == "model name" and model is None:
            model = value
        elif key == "vendor_id" and vendor is None:
            vendor = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            package = value
        elif key == "cpu cores" and value.isdigit():
            cores_per_package[package] = int(value)
    return {"model": model, "vendor": vendor, "flags": sorted(flags), "logical_cpus": logical or None,
            "physical_cores": sum(cores_per_package.values()) or None}


@lru_cache(maxsize=1)
def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def isa(flags: Iterable[str]) -> dict[str, bool]:
    """Each flag of :data:`ISA_FLAGS`: present or not."""
    have = set(flags)
    return {f: f in have for f in ISA_FLAGS}


def onednn_isa(flags: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """oneDNN's highest ISA on these flags, capped by ONEDNN_MAX_CPU_ISA (or the older DNNL_MAX_CPU_ISA).

    Inferred: oneDNN reads the same CPUID bits and the cap once, when it first runs a primitive."""
    env = os.environ if env is None else env
    have = set(flags)
    names = [name for name, _ in ONEDNN_ISAS]
    supported = [name for name, need in ONEDNN_ISAS if set(need) <= have]
    cpu_max = supported[-1] if supported else None
    cap_raw = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    cap = ONEDNN_ALIASES.get(cap_raw.upper(), cap_raw.upper()) if cap_raw else None
    effective = cpu_max
    if cap and cap not in ("ALL", "DEFAULT") and cpu_max:
        if cap in names:  # the highest level the CPU has at or below the cap
            effective = ([s for s in supported if names.index(s) <= names.index(cap)] or [None])[-1]
        else:
            effective = f"{cpu_max} (ONEDNN_MAX_CPU_ISA={cap_raw} not recognised)"
    return {"cpu_max": cpu_max, "ONEDNN_MAX_CPU_ISA": cap_raw, "effective": effective,
            "how": "inferred from the CPU flags and the environment variable"}


def mlas_int8(flags: Iterable[str]) -> dict[str, Any]:
    """Which family of ONNX Runtime's x86 INT8 GEMM kernels (MLAS, u8 activations x s8 weights) runs here.

    VNNI (vpdpbusd) and AMX accumulate u8 x s8 products in 32 bits.  Without them MLAS multiplies with
    vpmaddubsw, which sums each pair of products into a saturating 16-bit lane: with full 8-bit weights
    (255 x 127 x 2 > 32767) results clip.  Weights limited to 7 bits (the "portable" form) cannot overflow.
    """
    have = set(flags)
    if {"amx_tile", "amx_int8"} <= have:
        kernel = "amx"
    elif "avx512_vnni" in have:
        kernel = "avx512_vnni"
    elif "avx_vnni" in have:
        kernel = "avx_vnni"
    elif {"avx512f", "avx512bw"} <= have:
        kernel = "avx512bw (vpmaddubsw)"
    elif "avx2" in have:
        kernel = "avx2 (vpmaddubsw)"
    elif have & {"sse4_1", "ssse3"}:
        kernel = "sse (no wide int8 kernel)"
    else:
        kernel = "not x86 (flags do not name an x86 int8 kernel)"
    vnni = kernel in ("amx", "avx512_vnni", "avx_vnni")
    x86_saturating = kernel.endswith("(vpmaddubsw)")
    if vnni:
        meaning = ("8-bit-weight INT8 files run exactly here (32-bit accumulation); they may saturate on a CPU "
                   f"without VNNI: ship the portable form for unknown CPUs ({PORTABLE_HINT})")
    elif x86_saturating:
        meaning = ("8-bit-weight INT8 files can saturate here (16-bit pair sums): their outputs differ from the "
                   f"VNNI machines that checked them; use the portable 7-bit form ({PORTABLE_HINT})")
    else:
        meaning = "no x86 vpmaddubsw path: the saturation issue of 8-bit weights does not apply as such"
    return {"kernel": kernel, "vnni": vnni, "eight_bit_weights_saturate": x86_saturating,
            "how": "inferred from the CPU flags (MLAS picks its kernels from CPUID)", "int8_files": meaning}


def aten_capability(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """PyTorch's ATen CPU capability (what its vectorised kernels use) and the ATEN_CPU_CAPABILITY override."""
    env = os.environ if env is None else env
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception as exc:  # an old or unusual build
        capability = f"unknown ({type(exc).__name__})"
    return {"capability": capability, "ATEN_CPU_CAPABILITY": env.get("ATEN_CPU_CAPABILITY")}


def onednn_build_version() -> str | None:
    """The oneDNN (MKL-DNN) version PyTorch was built with, from its build configuration string."""
    try:
        for line in torch.__config__.show().splitlines():
            if "MKL-DNN" in line or "oneDNN" in line:
                text = line.split("-", 1)[-1].strip().removeprefix("Intel(R) ")
                return text.split(" (")[0].replace("MKL-DNN", "oneDNN")  # without the git hash
    except Exception:
        pass
    return None


# --------------------------------------------------------------------------- libraries and devices


def package_versions() -> dict[str, str | None]:
    """Version of each package of :data:`PACKAGES`, None when absent; nothing is imported."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dists in PACKAGES:
        module = sys.modules.get(key)
        version = getattr(module, "__version__", None) if module is not None else None
        for dist in dists if version is None else ():
            try:
                version = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
        out[key] = str(version) if version is not None else None
    return out


def accelerators() -> dict[str, Any]:
    """CUDA (as PyTorch sees it), the GPUs, ONNX Runtime's providers, TensorRT."""
    out: dict[str, Any] = {"torch_cuda_build": getattr(torch.version, "cuda", None)}
    try:
        cuda = torch.cuda.is_available()
        out["cuda_available"] = cuda
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
        out["cudnn"] = torch.backends.cudnn.version() if cuda else None
    except Exception as exc:  # a broken driver reads as no GPU, with the reason
        out.update(cuda_available=False, gpus=[], cudnn=None, cuda_error=f"{type(exc).__name__}: {exc}")
    out["onnxruntime_providers"] = onnxruntime.get_available_providers()

    out["tensorrt_installed"] = importlib.util.find_spec("tensorrt") is not None
    return out


def threads(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": env.get("MKL_NUM_THREADS"),
            "os_cpu_count": os.cpu_count(), "usable_cpus": usable}


def environment(cpuinfo: str | None = None) -> dict[str, Any]:
    """The whole block (JSON-ready).  Cheap: no subprocess, no GPU work, no optional import."""
    info = parse_cpuinfo(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    flags = info["flags"]
    return {
        "format": FORMAT,
        "version": VERSION,
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": {"model": info["model"] or platform.processor() or platform.machine(), "vendor": info["vendor"],
                "logical_cpus": info["logical_cpus"], "physical_cores": info["physical_cores"],
                "isa": isa(flags)},
        "paths": {"aten": aten_capability(), "onednn": {**onednn_isa(flags), "build": onednn_build_version()},
                  "onnxruntime_int8": mlas_int8(flags)},
        "versions": package_versions(),
        "accelerators": accelerators(),
        "threads": threads(),
    }


# --------------------------------------------------------------------------- text
