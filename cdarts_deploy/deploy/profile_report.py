"""The latency report of ``cdarts-profile``: rows with derived compute figures, JSON, Markdown and a PNG.

The published reference rows (CDARTS paper Table 4) are carried as published, never as measurements.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt

from cdarts_deploy.atomic_files import atomic_path
from cdarts_deploy.deploy.gemm import achieved_gflops, compute_floor_ms
from cdarts_deploy.deploy.pipeline import Staging
from cdarts_deploy.deploy.timing import LatencyStats

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


def _cpu_paths(env: dict | None) -> str:
    """The CPU kernel paths of the run (from the cdarts-env block), for the line under the title."""
    if not env:
        return ""
    paths = env["paths"]
    int8 = paths["onnxruntime_int8"]
    return (f" CPU paths: ATen {paths['aten']['capability']}, oneDNN {paths['onednn']['effective']}, ONNX Runtime "
            f"INT8 {int8['kernel']}{'' if int8['vnni'] else ' (8-bit weights can saturate)'}.")


def markdown(report: dict) -> str:
    """The report as Markdown: measured rows, published reference rows, conditions."""
    cond = report["conditions"]
    lines = [
        "# Latency profile",
        "",
        f"Measured on {cond['gpu'] or cond['cpu']} ({cond['device']}, {cond['threads']} threads); "
        f"torch {cond['versions']['torch']}, onnxruntime {cond['versions']['onnxruntime']}"
        + (f", TensorRT {cond['versions']['tensorrt']}" if cond["versions"].get("tensorrt") else "")
        + "." + _cpu_paths(cond.get("environment")),
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
            f"| {s['throughput_ips']:.1f} | {_fmt(d.get('compute_floor_ms'))} "
            f"| {_fmt(d.get('achieved_gflops'), '.1f')} "
            f"| {'-' if frac is None else f'{frac:.0%}'} |"
        )
    gemm = report.get("gemm_rate")
    if gemm:
        lines += [
            "",
            f"Measured GEMM rate: {gemm['gflops']:.1f} GFLOP/s ({gemm['dtype']}, {gemm['size']}x{gemm['size']}, "
            f"{gemm['device']}, {gemm['threads'] or 'GPU'} threads). {report['compute_floor_note']}.",
        ]
    against = [r for r in report["rows"] if "vs_fp32" in r["derived"]]
    if against:
        lines += ["", "## Against fp32, interleaved in this run", "",
                  "Both files timed in alternating rounds in one process: medians of separate runs can move more "
                  "from one process to the next than the gain itself.", "",
                  "| model | backend | precision | input | fp32 median ms | median ms | speed-up | timed runs each |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for r in against:
            v = r["derived"]["vs_fp32"]
            lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {'x'.join(map(str, r['input_shape']))} "
                         f"| {v['fp32_median_ms']:.2f} | {v['median_ms']:.2f} | {v['speedup']:.2f}x "
                         f"| {v['timed_runs_each']} |")
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


def published_comparable(report: dict, rows: Sequence[dict], batch: int) -> bool:
    """Whether the published figures belong beside these measurements: same batch, a GPU, CIFAR-size input."""
    cond = report["published"]["conditions"]
    return (batch == cond["batch"] and bool(report["conditions"].get("gpu"))
            and any(list(r["input_shape"][-2:]) == cond["input_shape"][-2:] for r in rows))


#: Offsets (points) tried in turn for a label, nearest first; the first that overlaps nothing is kept.
LABEL_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4, 6, 8)
                 for dx, dy in ((4, 3), (4, -9), (-4, 3), (-4, -9), (0, 8), (0, -13))]


def place_labels(ax, labels: Sequence[tuple[str, float, float]], fontsize: float = 7) -> list:
    """Annotate each ``(text, x, y)`` at the first offset whose text box overlaps no label placed before it.

    Text boxes are measured with the figure's renderer (``get_window_extent``); a label that finds no
    free place within :data:`LABEL_OFFSETS` is left out, since an unreadable one is no better.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed, boxes = [], []
    for text, x, y in labels:
        for dx, dy in LABEL_OFFSETS:
            ha = "right" if dx < 0 else "left"
            art = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, ha=ha,
                              color="grey" if text.startswith("published") else "black")
            box = art.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in boxes) and fig.bbox.contains(box.x0, box.y0) \
                    and fig.bbox.contains(box.x1, box.y1):
                placed.append(art)
                boxes.append(box)
                break
            art.remove()
    return placed


def plot_latency_vs_macs(report: dict, path: str | os.PathLike, batch: int | None = None) -> list[dict]:
    """PNG of median latency against multiply-adds per image, one marker per model and backend; returns the
    points drawn (model, backend, peer, multiply-adds, median ms).

    Published rows are drawn as labelled dashed lines: they were measured on
    another machine and are references, not data points of this run.
    """
    matplotlib.use("Agg")

    rows = [r for r in report["rows"] if r["macs"]]
    batches = sorted({r["stats"]["batch"] for r in rows})
    batch = batch if batch is not None else (max(batches) if batches else 1)
    rows = [r for r in rows if r["stats"]["batch"] == batch]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    markers = {"torch": "o", "torch-compile": "D", "onnxruntime": "s", "tensorrt": "^"}
    labels: list[tuple[str, float, float]] = []
    points: list[dict] = []
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
            labels += [(r["model"], r["macs"] / 1e6, r["stats"]["median_ms"]) for r in sel]
            points += [{"model": r["model"], "backend": backend, "peer": peer, "macs": r["macs"],
                        "median_ms": r["stats"]["median_ms"]} for r in sel]
    pub = report["published"]
    cond = report["conditions"]
    if published_comparable(report, rows, batch):
        for p in pub["rows"]:
            ax.axhline(p["latency_ms"], color="grey", linestyle="--", linewidth=0.8)
            labels.append((f"published {p['model']} {p['latency_ms']} ms ({pub['conditions']['device']}, 32x32) - "
                           "not measured", ax.get_xlim()[0], p["latency_ms"]))
    ax.set_xlabel("multiply-adds per image (M)")
    ax.set_ylabel(f"median latency at batch {batch} (ms)")
    ax.set_title(f"Latency vs multiply-adds - {cond['gpu'] or cond['cpu']}, {cond['threads']} threads", fontsize=9)
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, labels)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return points


def write_reports(report: dict, out_dir: str | os.PathLike, stem: str = "profile") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png``; all are rendered before any is renamed into place."""
    out_dir = Path(out_dir)
    with Staging() as staging:
        json_tmp, md_tmp, png_tmp = (staging.temp(out_dir / f"{stem}{suffix}") for suffix in (".json", ".md", ".png"))
        json_tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        md_tmp.write_text(markdown(report), encoding="utf-8")
        plot_latency_vs_macs(report, png_tmp)
        return staging.publish()
