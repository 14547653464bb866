"""The conditions of a run: library versions, CPU and GPU model, threads (the same in every report)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

TIMING_NOTE = "warm-up runs excluded; perf_counter with synchronisation on CPU, CUDA events on GPU"


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None (without touching the GPU)."""
    try:
        import tensorrt

        return tensorrt.__version__
    except ImportError:
        return None


def library_versions() -> dict[str, str | None]:
    """Python, torch, timm, onnx, onnxruntime, numpy, TensorRT (or None) and CUDA (or None)."""
    import numpy as np
    import onnx
    import onnxruntime
    import timm
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "tensorrt": tensorrt_version(),
        "cuda": getattr(torch.version, "cuda", None) if torch.cuda.is_available() else None,
    }


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux) or the platform module."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install reads the same as no GPU
        return None


def conditions(threads: int | None, device: str) -> dict[str, Any]:
    """Where and how a measurement ran."""
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model() if device.startswith("cuda") else None,
        "device": device,
        "threads": threads or torch.get_num_threads(),
        "os": platform.platform(),
        "versions": library_versions(),
        "timing": TIMING_NOTE,
    }
