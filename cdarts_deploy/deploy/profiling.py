"""Latency profiling: timing loops, percentile statistics, the conditions of a run, and reports.

Timing rules (stated in every report):

* warm-up runs first and is not timed;
* on CPU every run is timed with ``time.perf_counter`` around one synchronous
  inference; on CUDA with CUDA events on the stream, after a synchronisation;
* the input batch is prepared before the timed region; what each backend does
  with outputs inside the timed region is recorded in ``timed_region``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")

#: Published, not measured: CDARTS paper Table 4 (NVIDIA Tesla P100, batch 32, 32x32 input, CIFAR networks).
PUBLISHED_LATENCY = (
    {"model": "CDARTS", "zoo": "cdarts_cifar", "latency_ms": 41.2, "spread_ms": 0.5},
    {"model": "P-DARTS", "zoo": "pdarts", "latency_ms": 40.9, "spread_ms": None},
    {"model": "PC-DARTS", "zoo": "pcdarts_cifar", "latency_ms": 40.7, "spread_ms": None},
)
PUBLISHED_CONDITIONS = {
    "source": "CDARTS paper (TPAMI 2022), Table 4 -- published, not measured here",
    "device": "NVIDIA Tesla P100",
    "batch": 32,
    "input_shape": [32, 3, 32, 32],
}


class ProfileError(ValueError):
    """Bad profiling input: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------
# Statistics and timing loops
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch in milliseconds over ``iters`` timed runs."""

    batch: int
    iters: int
    warmup: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float  # images per second at the mean latency

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: Sequence[float], batch: int, warmup: int) -> LatencyStats:
    """Percentile statistics of per-run latencies (numpy's linear interpolation)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ProfileError("no timed runs; pass --iters 1 or more")
    mean = float(t.mean())
    p90, p95, p99 = (float(v) for v in np.percentile(t, [90, 95, 99]))
    return LatencyStats(
        batch=batch,
        iters=int(t.size),
        warmup=warmup,
        mean_ms=mean,
        median_ms=float(np.median(t)),
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        throughput_ips=batch / (mean / 1e3) if mean > 0 else float("inf"),
    )


def _progress(total: int, desc: str | None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=desc is None, file=sys.stderr)


def time_host(
    step: Callable[[], Any],
    warmup: int,
    iters: int,
    sync: Callable[[], None] | None = None,
    desc: str | None = None,
) -> list[float]:
    """Milliseconds per call of ``step`` measured with ``perf_counter``; ``sync`` waits for the device."""
    sync = sync or (lambda: None)
    times: list[float] = []
    with _progress(warmup + iters, desc) as bar:
        for _ in range(warmup):
            step()
            bar.update()
        sync()
        for _ in range(iters):
            start = time.perf_counter()
            step()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
            bar.update()
    return times


def time_cuda(step: Callable[[], Any], warmup: int, iters: int, stream=None, desc: str | None = None) -> list[float]:
    """Milliseconds per call of ``step`` measured with CUDA events recorded on ``stream``."""
    import torch

    stream = stream or torch.cuda.current_stream()
    times: list[float] = []
    with _progress(warmup + iters, desc) as bar:
        for _ in range(warmup):
            step()
            bar.update()
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            step()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
            bar.update()
    return times


# ---------------------------------------------------------------------------
# Backends: each prepares a step function for one batch and says what it times
# ---------------------------------------------------------------------------


@dataclass
class Measurement:
    backend: str
    device: str
    precision: str
    timed_region: str
    stats: LatencyStats


def measure_torch(
    model,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    desc: str | None = None,
) -> Measurement:
    """PyTorch eager (or ``torch.compile``) latency of ``model`` on one batch of ``input_shape``."""
    import torch

    if precision not in ("fp32", "fp16"):
        raise ProfileError(f"precision {precision!r} is not available for PyTorch; use fp32 or fp16")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ProfileError("fp16 PyTorch timing needs a CUDA device; use --precision fp32 on the CPU")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    runner = torch.compile(model) if compile else model
    x = torch.randn(*input_shape, device=device, dtype=dtype)

    def step() -> None:
        with torch.inference_mode():
            runner(x)

    name = "torch-compile" if compile else "torch"
    if device.startswith("cuda"):
        times = time_cuda(step, warmup, iters, desc=desc)
        region = "forward only: input resident on the GPU before timing, outputs left on the GPU (CUDA events)"
    else:
        times = time_host(step, warmup, iters, desc=desc)
        region = "forward only: input tensor created before timing, outputs not copied (perf_counter)"
    if compile:
        region += "; compilation happens during warm-up"
    return Measurement(name, device, precision, region, summarize(times, input_shape[0], warmup))


def onnxruntime_session(onnx_path: str | os.PathLike, threads: int | None, device: str = "cpu"):
    """An ONNX Runtime session with ``threads`` intra-op threads and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ProfileError(
                "ONNX Runtime has no CUDAExecutionProvider here; install onnxruntime-gpu or profile on the CPU"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"{onnx_path} is not a usable ONNX model ({first[:200]}); pass a file written by cdarts-export") from None


def measure_onnxruntime(
    onnx_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    threads: int | None,
    device: str = "cpu",
    precision: str = "fp32",
    desc: str | None = None,
) -> Measurement:
    """ONNX Runtime latency of one batch; inputs are float32 (FP16 files keep float32 inputs)."""
    session = onnxruntime_session(onnx_path, threads, device)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    feed = {name: x}
    times = time_host(lambda: session.run(None, feed), warmup, iters, desc=desc)
    if device.startswith("cuda"):
        region = "session.run: host-to-device copy of the input and device-to-host copy of outputs included"
    else:
        region = "session.run on a host batch made before timing; allocation of the output arrays included"
    return Measurement("onnxruntime", device, precision, region + " (perf_counter)", summarize(times, input_shape[0], warmup))


def measure_tensorrt(
    engine_path: str | os.PathLike,
    input_shape: tuple[int, ...],
    warmup: int,
    iters: int,
    precision: str,
    desc: str | None = None,
) -> Measurement:
    """TensorRT engine latency; input and outputs stay on the GPU."""
    import torch

    from cdarts_deploy.trt import TensorRTRunner

    runner = TensorRTRunner(engine_path)
    runner.bind(torch.randn(*input_shape, device="cuda"))
    times = time_cuda(runner.enqueue, warmup, iters, stream=runner.stream, desc=desc)
    region = "execute_async_v3 only: input and outputs resident on the GPU, no host copies (CUDA events)"
    return Measurement("tensorrt", "cuda", precision, region, summarize(times, input_shape[0], warmup))


# ---------------------------------------------------------------------------
# Conditions of a run
# ---------------------------------------------------------------------------


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
    except Exception:
        return None


def library_versions() -> dict[str, str | None]:
    import onnx
    import onnxruntime
    import timm
    import torch

    from cdarts_deploy.trt import tensorrt_version

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


def conditions(threads: int | None, device: str) -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model() if device.startswith("cuda") else None,
        "device": device,
        "threads": threads or torch.get_num_threads(),
        "os": platform.platform(),
        "versions": library_versions(),
        "timing": "warm-up runs excluded; perf_counter with synchronisation on CPU, CUDA events on GPU",
    }


# ---------------------------------------------------------------------------
# Report rows
# ---------------------------------------------------------------------------


@dataclass
class ProfileRow:
    model: str
    backend: str
    device: str
    precision: str
    input_shape: list[int]
    params: int | None
    macs: int | None  # per image
    stats: LatencyStats
    timed_region: str
    peer: bool = False
    derived: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stats"] = self.stats.as_dict()
        return d


def derive(row: ProfileRow, gemm_gflops: float | None) -> None:
    """Fill the compute floor, achieved GFLOP/s and fraction of the GEMM rate (batch multiply-adds)."""
    from cdarts_deploy.gemm import achieved_gflops, compute_floor_ms

    if not row.macs:
        return
    batch_macs = row.macs * row.stats.batch
    row.derived["achieved_gflops"] = achieved_gflops(batch_macs, row.stats.median_ms)
    if gemm_gflops:
        row.derived["compute_floor_ms"] = compute_floor_ms(batch_macs, gemm_gflops)
        row.derived["gemm_fraction"] = row.derived["achieved_gflops"] / gemm_gflops


def make_report(rows: Sequence[ProfileRow], cond: dict, gemm: dict | None) -> dict:
    gflops = gemm["gflops"] if gemm else None
    for row in rows:
        derive(row, gflops)
    return {
        "format": "cdarts-profile",
        "version": 1,
        "conditions": cond,
        "gemm_rate": gemm,
        "compute_floor_note": "floor = 2 x multiply-adds x batch / measured GEMM rate; achieved = 2 x multiply-adds x "
        "batch / median latency; multiply-adds count conv and linear layers only",
        "rows": [r.as_dict() for r in rows],
        "published": {"conditions": PUBLISHED_CONDITIONS, "rows": [dict(r) for r in PUBLISHED_LATENCY]},
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """The report as Markdown: measured rows, published reference rows, conditions."""
    cond = report["conditions"]
    lines = [
        "# Latency profile",
        "",
        f"Measured on {cond['gpu'] or cond['cpu']} ({cond['device']}, {cond['threads']} threads); "
        f"torch {cond['versions']['torch']}, onnxruntime {cond['versions']['onnxruntime']}"
        + (f", TensorRT {cond['versions']['tensorrt']}" if cond["versions"].get("tensorrt") else "")
        + ".",
        "",
        "| model | backend | precision | input | params (M) | MACs/img (M) | mean ms | median ms | p90 | p95 | p99 "
        "| std | img/s | floor ms | GFLOP/s | of GEMM |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        s, d = r["stats"], r["derived"]
        frac = d.get("gemm_fraction")
        lines.append(
            f"| {r['model']}{' (peer)' if r['peer'] else ''} | {r['backend']} | {r['precision']} "
            f"| {'x'.join(map(str, r['input_shape']))} | {_fmt(r['params'] and r['params'] / 1e6)} "
            f"| {_fmt(r['macs'] and r['macs'] / 1e6, '.1f')} | {s['mean_ms']:.2f} | {s['median_ms']:.2f} "
            f"| {s['p90_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['std_ms']:.2f} "
            f"| {s['throughput_ips']:.1f} | {_fmt(d.get('compute_floor_ms'))} | {_fmt(d.get('achieved_gflops'), '.1f')} "
            f"| {'-' if frac is None else f'{frac:.0%}'} |"
        )
    gemm = report.get("gemm_rate")
    if gemm:
        lines += [
            "",
            f"Measured GEMM rate: {gemm['gflops']:.1f} GFLOP/s ({gemm['dtype']}, {gemm['size']}x{gemm['size']}, "
            f"{gemm['device']}, {gemm['threads'] or 'GPU'} threads). {report['compute_floor_note']}.",
        ]
    pub = report["published"]
    lines += [
        "",
        f"## Published reference (not measured): {pub['conditions']['source']}",
        "",
        f"{pub['conditions']['device']}, batch {pub['conditions']['batch']}, input "
        f"{'x'.join(map(str, pub['conditions']['input_shape']))}.",
        "",
        "| model | published latency ms |",
        "|---|---:|",
    ]
    for p in pub["rows"]:
        spread = f" +- {p['spread_ms']}" if p["spread_ms"] else ""
        lines.append(f"| {p['model']} | {p['latency_ms']}{spread} |")
    lines += ["", "## Timed regions", ""]
    for region in sorted({(r["backend"], r["timed_region"]) for r in report["rows"]}):
        lines.append(f"- {region[0]}: {region[1]}")
    lines += ["", "## Conditions", "", "```", *_flat(cond), "```", ""]
    return "\n".join(lines)


def _flat(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: {v}")
    return out


def plot_latency_vs_macs(report: dict, path: str | os.PathLike, batch: int | None = None) -> None:
    """PNG of median latency against multiply-adds per image, one marker per model and backend.

    Published rows are drawn as labelled dashed lines: they were measured on
    another machine and are references, not data points of this run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["macs"]]
    batches = sorted({r["stats"]["batch"] for r in rows})
    batch = batch if batch is not None else (max(batches) if batches else 1)
    rows = [r for r in rows if r["stats"]["batch"] == batch]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = {"torch": "o", "torch-compile": "D", "onnxruntime": "s", "tensorrt": "^"}
    for backend in sorted({r["backend"] for r in rows}):
        pts = [r for r in rows if r["backend"] == backend]
        for peer in (False, True):
            sel = [r for r in pts if r["peer"] == peer]
            if not sel:
                continue
            ax.scatter(
                [r["macs"] / 1e6 for r in sel],
                [r["stats"]["median_ms"] for r in sel],
                marker=markers.get(backend, "x"),
                facecolors="none" if peer else None,
                edgecolors="C1" if peer else None,
                color=None if peer else "C0",
                s=55,
                label=f"{backend}{' (peers)' if peer else ''}",
            )
            for r in sel:
                ax.annotate(r["model"], (r["macs"] / 1e6, r["stats"]["median_ms"]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points")
    pub = report["published"]
    if batch == pub["conditions"]["batch"]:
        for p in pub["rows"]:
            ax.axhline(p["latency_ms"], color="grey", linestyle="--", linewidth=0.8)
            ax.text(ax.get_xlim()[0], p["latency_ms"], f" published {p['model']} {p['latency_ms']} ms "
                    f"({pub['conditions']['device']}, 32x32) - not measured", fontsize=7, color="grey", va="bottom")
    cond = report["conditions"]
    ax.set_xlabel("multiply-adds per image (M)")
    ax.set_ylabel(f"median latency at batch {batch} (ms)")
    ax.set_title(f"Latency vs multiply-adds - {cond['gpu'] or cond['cpu']}, {cond['threads']} threads", fontsize=9)
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    from cdarts_deploy.plot import save_figure_atomic

    save_figure_atomic(fig, path)
    plt.close(fig)


def write_reports(report: dict, out_dir: str | os.PathLike, stem: str = "profile") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``; all are rendered before any is renamed into place."""
    import json

    from cdarts_deploy.atomic_files import publish, temp_beside

    out_dir = Path(out_dir)
    finals = [out_dir / f"{stem}{suffix}" for suffix in (".json", ".md", ".png")]
    temps: list[Path] = []
    try:
        for final in finals:
            temps.append(temp_beside(final))
        temps[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        temps[1].write_text(markdown(report), encoding="utf-8")
        plot_latency_vs_macs(report, temps[2])
        for tmp, final in zip(temps, finals):
            publish(tmp, final)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()
    return finals
