"""The run's report: JSON for machines, Markdown for people, written (atomically) after every section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdarts_deploy.atomic_files import write_text

from .verdicts import FAILED, NOT_APPLICABLE, PASSED


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    res = report["sections"]
    counts = {s: sum(r["status"] == s for r in res.values()) for s in (PASSED, FAILED, NOT_APPLICABLE)}
    cond = report.get("conditions", {})
    lines = ["# GPU check", "",
             f"**{'FAILED' if counts[FAILED] else 'PASSED'}**: {counts[PASSED]} passed, {counts[FAILED]} failed, "
             f"{counts[NOT_APPLICABLE]} not applicable ({report['mode']}, device {report['device']}, "
             f"{report.get('seconds', 0):.0f} s of a {report['budget_s']:.0f} s budget).", "",
             f"GPU: {cond.get('gpu') or 'none'}; torch {cond.get('versions', {}).get('torch')}, CUDA "
             f"{report.get('torch_cuda')}, cuDNN {report.get('cudnn')}; nvidia-smi: {cond.get('nvidia_smi')}.", "",
             "| section | status | reason | s |", "|---|---|---|---:|"]
    for key, r in res.items():
        lines.append(f"| {key} | {r['status']} | {str(r['reason']).replace('|', '/')} | {r['seconds']} |")
    parity_rows = [(k, row) for k, r in res.items() for row in r.get("parity", []) + r.get("controls", [])]
    if parity_rows:
        lines += ["", "## Parity (against PyTorch FP32 on the CPU; controls must fail)", "",
                  "| section | model | runtime | precision | input | max abs | allowed by | other input | passed |",
                  "|---|---|---|---|---|---:|---|---:|---|"]
        for key, row in parity_rows:
            lines.append(f"| {key} | {row.get('model')} | {row['runtime']} | {row['precision']} | {row['input']} | "
                         f"{_fmt(row.get('max_abs'), '.3g')} | noise {_fmt(row.get('torch_fp32_noise'), '.2g')} | "
                         f"{_fmt(row.get('other_input_max_abs'), '.3g')} | {row['passed']} |")
    lat = [row for r in res.values() for row in r.get("latency", [])]
    if lat:
        lines += ["", "## Latency (ms; CUDA events on the GPU)", "",
                  "| model | mode | batch | dtype | median | mean | p90 | p99 | img/s | compile s | agrees |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in lat:
            st = row["stats"]
            p = lambda k: "-" if k in st["unsupported_percentiles"] else f"{st[k + '_ms']:.3f}"  # noqa: E731
            agrees = row.get("agrees_with_eager", {}).get("passed", "-")
            lines.append(f"| {row['model']} | {row['mode']} | {row['batch']} | {row['dtype']} | "
                         f"{st['median_ms']:.3f} | {st['mean_ms']:.3f} | {p('p90')} | {p('p99')} | "
                         f"{st['throughput_ips']:.1f} | {_fmt(row.get('compile_s'), '.1f')} | {agrees} |")
        first = lat[0]
        lines += ["", f"Conditions: warm-up {first['warmup']}, {first['iters']} timed runs, cudnn.benchmark "
                      f"{first['cudnn_benchmark']}, TF32 matmul {first['tf32_matmul']}, TF32 cuDNN "
                      f"{first['tf32_cudnn']}, {first['memory_format']}."]
    if "search_step" in res.get("search_step", {}):
        r = res["search_step"]["search_step"]["ratios"]
        lines += ["", f"Search step: CDARTS / DARTS {r['step_ratio']:.2f}x (alpha + w updates), "
                      f"{r['step_with_stage1_ratio']:.2f}x with stage 1 (floor {r['floor_with_stage1']:.2f}x), "
                      f"{r['measure']}; paper {r['paper']}."]
    if "train_throughput" in res.get("train_throughput", {}):
        t = res["train_throughput"]["train_throughput"]
        lines += ["", f"Retraining: {t['images_per_s_cdarts_train']:.0f} images/s with cdarts-train's loop, "
                      f"{t['images_per_s_bare']:.0f} bare ({t['ratio']:.3f})."]
    pub = report["published_reference"]
    lines += ["", f"Published reference (not measured): {pub['model']}, {pub['latency_ms']} ms at batch "
                  f"{pub['batch']}, {pub['input']}, {pub['device']} ({pub['source']}).", ""]
    return "\n".join(lines)


def output_paths(out: str) -> tuple[Path, Path]:
    """``--out x.json`` writes x.json and x.md; any other path is a folder for gpu_check.json / .md."""
    path = Path(out)
    if path.suffix == ".json":
        return path, path.with_suffix(".md")
    return path / "gpu_check.json", path / "gpu_check.md"


def write(report: dict, out: str) -> list[Path]:
    json_path, md_path = output_paths(out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
    write_text(md_path, markdown(report))
    return [json_path, md_path]
