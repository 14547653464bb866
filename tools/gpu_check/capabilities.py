"""What this machine has for the sections (CUDA, triton, a C++ compiler, TensorRT, ONNX Runtime's CUDA provider),
and what the GPU image the check is written for has."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
import torch

from cdarts_deploy.deploy.trt import require_tensorrt

#: The fixed image of the GPU machines this check is written for, as ``--dry-run`` describes it.
GPU_IMAGE = {
    "name": "GPU image: torch 2.11 + CUDA 13, timm, onnx, onnxruntime (CPU build), no TensorRT",
    "capabilities": {
        "cuda": None,
        "triton": None,  # ships with the Linux CUDA wheels of torch
        "cxx": None,
        "tensorrt": "TensorRT not installed",
        "onnxruntime_cuda": "onnxruntime is the CPU build (no CUDAExecutionProvider)",
    },
}


@dataclass(frozen=True)
class Capability:
    available: bool
    reason: str = ""  # why not, or what was found
    broken: bool = False  # present but unusable: sections that need it fail instead of being not applicable


def _gpu_hardware() -> str | None:
    """Evidence of an NVIDIA GPU independent of torch (device nodes, nvidia-smi), or None."""
    if Path("/dev/nvidia0").exists():
        return "/dev/nvidia0 exists"
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        if "GPU" in out:
            return f"nvidia-smi lists {out.strip().splitlines()[0]}"
    return None


def probe(require_gpu: bool = False) -> dict[str, Capability]:
    """The capabilities sections ask for: cuda, triton, cxx, tensorrt, onnxruntime_cuda."""
    caps: dict[str, Capability] = {}
    try:
        cuda = torch.cuda.is_available()
        error = ""
    except Exception as exc:  # a broken driver
        cuda, error = False, f"{type(exc).__name__}: {exc}"
    if cuda:
        caps["cuda"] = Capability(True, torch.cuda.get_device_name(0))
    else:
        hardware = _gpu_hardware()
        if hardware:
            caps["cuda"] = Capability(False, f"a GPU is present ({hardware}) but torch cannot use it "
                                             f"(torch.cuda.is_available() is False{'; ' + error if error else ''})",
                                      broken=True)
        elif require_gpu:
            caps["cuda"] = Capability(False, "no CUDA device visible to torch, and --require-gpu was given",
                                      broken=True)
        else:
            caps["cuda"] = Capability(False, "no CUDA device (torch sees none, no /dev/nvidia0, no nvidia-smi GPU)")
    caps["triton"] = (Capability(True, "triton importable") if importlib.util.find_spec("triton") else
                      Capability(False, "triton is not installed (torch.compile's CUDA backend needs it)"))
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    caps["cxx"] = (Capability(True, cxx) if cxx else
                   Capability(False, "no C++ compiler (torch.compile's CPU backend needs one)"))
    if importlib.util.find_spec("tensorrt") is None:
        caps["tensorrt"] = Capability(False, "TensorRT not installed")
    else:
        try:
            require_tensorrt()
            caps["tensorrt"] = Capability(True, "tensorrt importable")
        except Exception as exc:  # installed, but no GPU or a broken install
            caps["tensorrt"] = Capability(False, f"TensorRT installed but unusable: {exc}", broken=bool(cuda))
    has_provider = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    caps["onnxruntime_cuda"] = (Capability(True, "CUDAExecutionProvider") if has_provider else
                                Capability(False, "onnxruntime has no CUDAExecutionProvider (CPU build)"))
    return caps
