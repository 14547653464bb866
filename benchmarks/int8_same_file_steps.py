"""How far two correct runs of one INT8 Q/DQ file part, in output quantization steps, beside what a wrong
artifact gives: the basis of ``rules.INT8_RMS_STEPS`` and ``INT8_MAX_STEPS``.

    python -m benchmarks.int8_same_file_steps --out docs/results/int8_same_file_steps

Per network (zoo cell genotypes at reduced size, random weights with BatchNorm statistics from digit pictures, the
classifier scaled so that the largest logit on the pictures is 10), the FP32 file is quantized for TensorRT
(explicit Q/DQ, calibrated on 32 digits) and run in ONNX Runtime on the CPU twice on held-out digits and random
inputs: with full graph optimization (integer kernels) and with none (the file's float emulation).  Reported per
input set: the output step (``rules.output_steps``), the largest and the 99th-percentile per-sample difference in
steps, and the same for the batch rolled by one sample and for the logits rotated by one class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.int8_speed import bn_from_pictures, conditions_line, digits, machine_conditions
from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.deploy import model_spec as ms
from cdarts_deploy.deploy import ort, rules
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.onnx_graph import export_onnx

#: name -> (width, cells, input side)
NETWORKS = {"cdarts_cifar": (8, 5, 32), "cdarts_cifar (16x8)": (16, 8, 32), "pcdarts_cifar": (16, 8, 32)}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _steps(a: np.ndarray, b: np.ndarray, step: float) -> dict:
    diff = np.abs(a - b).reshape(len(a), -1) / step
    per = diff.max(1)
    return {"max": float(per.max()), "p99": float(np.percentile(per, 99)), "median": float(np.median(per)),
            "mean_element": float(diff.mean()), "rms_element": float(np.sqrt((diff ** 2).mean()))}


def scaled_network(name: str, width: int, cells: int, side: int, held: np.ndarray) -> torch.nn.Module:
    """A zoo cell genotype at reduced size with random weights (seed 0), BatchNorm statistics from 128 digit
    pictures, and the classifier scaled so that the largest logit on ``held[:64]`` is 10."""
    genotype = gt.load(name.split(" ")[0])
    spec = ms.resolve_spec(genotype, "cifar", width, cells, 10, (side, side))
    torch.manual_seed(0)
    model = ms.build_model(genotype, spec)
    bn_from_pictures(model, digits(128, 0, (side, side), MEAN, STD))
    with torch.no_grad():
        scale = 10.0 / float(model(torch.from_numpy(held[:64])).abs().max())
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        classifier.weight.mul_(scale)
        classifier.bias.mul_(scale)
    return model


def measure(name: str, width: int, cells: int, side: int, folder: Path, threads: int) -> dict:
    hw = (side, side)
    calib, held = digits(32, 128, hw, MEAN, STD), digits(256, 160, hw, MEAN, STD)
    model = scaled_network(name, width, cells, side, held)
    fp32, qdq = folder / f"{width}x{cells}.onnx", folder / f"{width}x{cells}.qdq.onnx"
    export_onnx(model, fp32, (1, 3, *hw), exporter="torchscript")
    pr.quantize_int8(fp32, qdq, calib, target="tensorrt")
    (out_name, step), = rules.output_steps(qdq).items()
    integer, emulated = ort.session(qdq, threads), ort.session(qdq, threads, optimize=False)
    inputs = {"held-out digits (256)": held,
              "random normal (64)": np.random.default_rng(7).standard_normal((64, 3, *hw)).astype(np.float32)}
    rows = {}
    for label, x in inputs.items():
        a, b = ort.run(integer, x)[0], ort.run(emulated, x)[0]
        rows[label] = {"same file, integer vs float-emulated kernels": _steps(a, b, step),
                       "batch rolled by one sample": _steps(a, np.roll(a, 1, axis=0), step),
                       "logits rotated by one class": _steps(a, np.roll(a, 1, axis=1), step),
                       "largest output in steps": float(np.abs(a).max() / step)}
    return {"network": name, "width": width, "cells": cells, "input": side, "output": out_name,
            "output_step": step, "inputs": rows}


def markdown(results: list[dict], conditions: dict) -> str:
    lines = ["# Two correct runs of one INT8 Q/DQ file, in output quantization steps",
             "", "Produced by `python -m benchmarks.int8_same_file_steps`. " + conditions_line(conditions),
             f"The rule (`rules.py`): RMS at most {rules.INT8_RMS_STEPS:g} steps and largest at most "
             f"{rules.INT8_MAX_STEPS:g}.", "",
             "Per cell: the largest per-sample difference / the 99th percentile of the per-sample largest "
             "differences / the RMS over every output element, in output steps.", "",
             "| network | inputs | step | same file | rolled batch | rotated logits | largest output (steps) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for label, row in r["inputs"].items():
            cells = [row[k] for k in ("same file, integer vs float-emulated kernels", "batch rolled by one sample",
                                      "logits rotated by one class")]
            lines.append(f"| {r['network']} | {label} | {r['output_step']:.4f} | "
                         + " | ".join(f"{c['max']:.0f} / {c['p99']:.0f} / {c['rms_element']:.1f}" for c in cells)
                         + f" | {row['largest output in steps']:.0f} |")
    return "\n".join(lines) + "\n"


def sweep(measure: Callable[..., dict], markdown: Callable[[list[dict], dict], str], default_out: str,
          digits_used: str, argv: list[str] | None) -> int:
    """The command line of a benchmark that runs ``measure`` on every network of :data:`NETWORKS` and writes
    ``<out>.json`` and ``<out>.md``."""
    p = argparse.ArgumentParser(description=sys.modules[measure.__module__].__doc__.split("\n\n")[0])
    p.add_argument("--out", default=default_out, help="path stem of the .json and .md")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    conditions = machine_conditions(args)
    conditions["seeds"] = {"torch": 0, "random inputs": 7, "digits": digits_used}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (width, cells, side) in tqdm(NETWORKS.items(), desc="networks"):
            results.append(measure(name, width, cells, side, Path(tmp), args.threads))
    conditions["load_average_end"] = list(os.getloadavg())
    out = Path(args.out)
    write_text(out.with_suffix(".json"), json.dumps({"conditions": conditions, "results": results}, indent=2) + "\n")
    write_text(out.with_suffix(".md"), markdown(results, conditions))
    print(markdown(results, conditions))
    return 0


def main(argv: list[str] | None = None) -> int:
    return sweep(measure, markdown, "docs/results/int8_same_file_steps", "sklearn digits 0-415", argv)

if __name__ == "__main__":
    raise SystemExit(main())
