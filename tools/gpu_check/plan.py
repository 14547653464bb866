"""The plan: every section in the order it runs, with what it needs and what it runs, and ``--dry-run``'s
account of it on the GPU image and on this machine."""

from __future__ import annotations

from typing import Mapping, Sequence

from .benchmark_sections import gemm_section, search_step_section, train_section
from .capabilities import GPU_IMAGE, Capability
from .device_parity import GROSS_PERTURBATION, STEM_PERTURBATION, parity_section
from .gpu_runtimes import onnxruntime_cuda_section, tensorrt_section
from .latency import latency_section
from .settings import Net, settings_for
from .verdicts import Section, applicability


def _nets(nets: Sequence[Net]) -> str:
    return ", ".join(n.label() for n in nets)


def sections() -> list[Section]:
    """Every section in the order it runs (cheap and decisive first, torch.compile late)."""
    gpu = ("cuda",)
    return [
        Section("parity", "PyTorch on the device (FP32 TF32 off, FP16 and BF16 autocast) against CPU FP32, with "
                "negative controls", {"cuda": gpu, "cpu": ()}, parity_section,
                lambda s, d: f"{_nets(s.parity_nets)}; batches {list(s.parity_batches)}; controls: stem x(1+"
                             f"{STEM_PERTURBATION:g}N) under fp32, all weights x(1+{GROSS_PERTURBATION:g}N) "
                             "under bf16"),
        Section("latency_eager", "eager latency", {"cuda": gpu, "cpu": ()},
                lambda c: latency_section(c, "eager"),
                lambda s, d: f"{_nets(s.latency_nets)}; batches {list(s.latency_batches)}; {s.dtype}; "
                             f"{s.warmup} warm-up + {s.iters} timed"),
        Section("latency_cuda_graph", "CUDA-graph replay latency (must match eager)", {"cuda": gpu, "cpu": gpu},
                lambda c: latency_section(c, "cuda_graph"),
                lambda s, d: f"{_nets(s.latency_nets)}; batches {list(s.latency_batches)}; manual capture"),
        Section("search_step", "CDARTS / DARTS search-step ratio", {"cuda": gpu, "cpu": ()}, search_step_section,
                lambda s, d: "C={width}, {cells} cells, evaluation network {eval_cells} cells, batch {batch}, "
                             "{input_size} px, {steps} steps after {warmup}".format(**s.search)),
        Section("train_throughput", "retraining images/s, cdarts-train against a bare loop",
                {"cuda": gpu, "cpu": ()}, train_section,
                lambda s, d: "{genotype} C={width}, {cells} cells, batch {batch}, {size} px, amp {amp}, "
                             "channels-last {channels_last}, {rounds} x {steps} steps".format(**s.train)),
        Section("gemm", "GEMM ceiling", {"cuda": gpu, "cpu": ()}, gemm_section,
                lambda s, d: f"sizes {list(s.gemm_sizes)}; fp32 (TF32 off)" + (", fp16" if d == "cuda" else "")),
        Section("latency_compile", "torch.compile latency (must agree with eager)",
                {"cuda": ("cuda", "triton"), "cpu": ("cxx",)}, lambda c: latency_section(c, "compile"),
                lambda s, d: f"{', '.join(s.compile_nets)}; batches {list(s.compile_batches)} "
                             f"({'two compilations' if len(s.compile_batches) > 1 else 'one compilation'} per model)"),
        Section("tensorrt", "TensorRT FP32/FP16/INT8 engines: parity against PyTorch FP32 on the GPU, timing",
                {"cuda": ("cuda", "tensorrt"), "cpu": ("cuda", "tensorrt")}, tensorrt_section,
                lambda s, d: f"{_nets(s.trt_nets)}; batches {list(s.latency_batches)}, with and without CUDA graph"),
        Section("onnxruntime_cuda", "ONNX Runtime CUDA provider: parity and timing",
                {"cuda": ("cuda", "onnxruntime_cuda"), "cpu": ("cuda", "onnxruntime_cuda")}, onnxruntime_cuda_section,
                lambda s, d: f"{_nets(s.trt_nets)}; batches {list(s.latency_batches)}"),
    ]


def dry_run(device: str, quick: bool, dtype: str, caps: Mapping[str, Capability]) -> str:
    """Each section, what it would run, and whether it would run on the GPU image and on this machine."""
    image_caps = {k: Capability(v is None, v or "") for k, v in GPU_IMAGE["capabilities"].items()}
    gpu_settings = settings_for("cuda", quick, dtype)
    here = settings_for(device, quick, dtype)
    lines = [f"gpu_check --dry-run ({'quick' if quick else 'full'}; nothing is run)", "",
             f"A = {GPU_IMAGE['name']}, --device cuda, budget {gpu_settings.budget_s:.0f} s",
             f"B = this machine, --device {device} "
             f"(CUDA: {caps['cuda'].reason}; TensorRT: {caps['tensorrt'].reason}; "
             f"ONNX Runtime: {caps['onnxruntime_cuda'].reason}), budget {here.budget_s:.0f} s", ""]
    for section in sections():
        a_state, a_why = applicability(section, "cuda", image_caps)
        b_state, b_why = applicability(section, device, caps)
        lines += [f"{section.key}: {section.title}",
                  f"  A: {'runs' if a_state == 'run' else a_state + ': ' + a_why} - "
                  f"{section.scope(gpu_settings, 'cuda')}",
                  f"  B: {'runs' if b_state == 'run' else b_state + ': ' + b_why}"
                  + (f" - {section.scope(here, device)}" if b_state == "run" else "")]
    lines += ["", "A section that can run and does not (budget spent, exception) fails the run (exit 1); "
                  "'not applicable' is only for what the machine lacks."]
    return "\n".join(lines) + "\n"
