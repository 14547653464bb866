"""The conditions of a run: library versions, CPU and GPU model, threads (the same in every report),
and what changes the numbers: load average and CPU steal, CPU frequency, ONNX Runtime's graph
optimization level and thread spinning, PyTorch's TF32 and cuDNN autotuning, GPU clocks and driver."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import timm
import torch

from .environment import environment

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
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
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
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install reads the same as no GPU
        return None


def _cpu_times() -> list[int] | None:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(v) for v in first[1:]] if first and first[0] == "cpu" else None


def cpu_load(window_s: float = 0.2) -> dict[str, Any]:
    """Load average and the share of CPU time stolen by the hypervisor (over ``window_s`` and since boot)."""
    out: dict[str, Any] = {}
    try:
        out["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        out["loadavg"] = None
    before = _cpu_times()
    if before is None or len(before) < 8:
        out["steal_fraction"] = out["steal_fraction_since_boot"] = None
        return out
    time.sleep(window_s)
    after = _cpu_times() or before
    delta = [a - b for a, b in zip(after, before)]
    out["steal_fraction"] = round(delta[7] / sum(delta), 4) if sum(delta) > 0 else 0.0
    out["steal_fraction_since_boot"] = round(before[7] / sum(before), 4) if sum(before) > 0 else 0.0
    return out


def cpu_frequency() -> dict[str, Any]:
    """Current and maximum frequency of CPU 0 in MHz (cpufreq), else the /proc/cpuinfo figure."""
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    out: dict[str, Any] = {"governor": None, "current_mhz": None, "max_mhz": None}
    try:
        out["current_mhz"] = int(Path(base, "scaling_cur_freq").read_text()) / 1000
        out["max_mhz"] = int(Path(base, "cpuinfo_max_freq").read_text()) / 1000
        out["governor"] = Path(base, "scaling_governor").read_text().strip()
    except (OSError, ValueError):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("cpu MHz"):
                    out["current_mhz"] = float(line.split(":", 1)[1])
                    break
        except (OSError, ValueError):
            pass
    return out


def onnxruntime_settings() -> dict[str, Any]:
    """The settings :func:`cdarts_deploy.deploy.ort.session` gives every session, read back from ONNX Runtime."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # what ort.session sets
    try:
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
    except Exception:  # onnxruntime raises a plain RuntimeError for a key nobody set
        spinning = None
    return {
        "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1],
        "intra_op_allow_spinning": spinning if spinning is not None else "1 (ONNX Runtime default: threads spin)",
        "providers": ort.get_available_providers(),
    }


def torch_settings() -> dict[str, Any]:
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


NVIDIA_SMI_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "power.limit",
                     "temperature.gpu", "utilization.gpu", "persistence_mode")


def nvidia_smi() -> dict[str, str] | None:
    """GPU 0's model, driver, clocks, power limit and load from ``nvidia-smi`` (None where it is absent)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    line = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    values = [v.strip() for v in line.split(",")]
    if len(values) != len(NVIDIA_SMI_FIELDS):
        return {"error": (out.stderr or out.stdout).strip()[:200]}
    return dict(zip(NVIDIA_SMI_FIELDS, values))


def conditions(threads: int | None, device: str) -> dict[str, Any]:
    """Where and how a measurement ran, with what changes the numbers (and the ``cdarts-env`` block)."""

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_frequency": cpu_frequency(),
        "load": cpu_load(),
        "gpu": gpu_model() if device.startswith("cuda") else None,
        "nvidia_smi": nvidia_smi() if device.startswith("cuda") else None,
        "device": device,
        "threads": threads or torch.get_num_threads(),
        "os": platform.platform(),
        "versions": library_versions(),
        "onnxruntime": onnxruntime_settings(),
        "torch": torch_settings(),
        "timing": TIMING_NOTE,
        "environment": environment(),
    }
