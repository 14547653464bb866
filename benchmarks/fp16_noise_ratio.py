"""How far ONNX Runtime's FP16 files stray from PyTorch FP32, in units of PyTorch's own fp16 error on the same
input, beside a 1% error of every logit: the basis of ``rules.FP16_NOISE_FACTOR``.

    python -m benchmarks.fp16_noise_ratio --out docs/results/fp16_noise_ratio

Per network (zoo cell genotypes at reduced size, random weights with BatchNorm statistics from digit pictures, the
classifier scaled so that the largest logit on the pictures is 10): PyTorch FP32 and its float16-storage copy
(``rules.fp16_outputs``) on held-out digits and on random inputs, and the FP16 files of ``precision.to_fp16``
(mixed: reductions and exponentials kept FP32; full) in ONNX Runtime on the CPU.  Reported: PyTorch's fp16 error
(largest |fp16 - fp32|), each file's largest error and its ratio to that, and what the rule allows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.int8_same_file_steps import MEAN, STD, scaled_network, sweep
from benchmarks.int8_speed import conditions_line, digits
from cdarts_deploy.deploy import ort, parity, rules
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.onnx_graph import export_onnx


def measure(name: str, width: int, cells: int, side: int, folder: Path, threads: int) -> dict:
    hw = (side, side)
    held = digits(128, 160, hw, MEAN, STD)
    model = scaled_network(name, width, cells, side, held)
    fp32 = folder / f"{width}x{cells}.onnx"
    export_onnx(model, fp32, (1, 3, *hw), exporter="torchscript")
    files = {"mixed": folder / "mixed.onnx", "full": folder / "full.onnx"}
    pr.to_fp16(fp32, files["mixed"])
    pr.to_fp16(fp32, files["full"], mixed=False)
    sessions = {k: ort.session(v, threads) for k, v in files.items()}
    inputs = {"held-out digits (128)": held,
              "random normal (32)": np.random.default_rng(7).standard_normal((32, 3, *hw)).astype(np.float32)}
    rows = {}
    for label, x in inputs.items():
        ref = parity.torch_outputs(model, x)[0]
        noise = float(np.abs(rules.fp16_outputs(model, x)[0] - ref).max())
        tol = parity.TOLERANCES["fp32"]
        allowed = rules.FP16_NOISE_FACTOR * noise + tol.atol + tol.rtol * float(np.abs(ref).max())
        row = {"largest logit": float(np.abs(ref).max()), "torch fp16 error": noise, "allowed": allowed,
               "1% error": 0.01 * float(np.abs(ref).max())}
        for kind, session in sessions.items():
            err = float(np.abs(ort.run(session, x)[0] - ref).max())
            row[f"onnxruntime fp16 {kind}"] = {"error": err, "ratio": err / noise}
        rows[label] = row
    return {"network": name, "width": width, "cells": cells, "input": side, "inputs": rows}


def markdown(results: list[dict], conditions: dict) -> str:
    lines = ["# ONNX Runtime FP16 files against PyTorch's own fp16 error", "",
             "Produced by `python -m benchmarks.fp16_noise_ratio`. " + conditions_line(conditions),
             f"The rule (`rules.py`): error at most {rules.FP16_NOISE_FACTOR:g} x PyTorch's fp16 error + 1e-4 + "
             "1e-3 x largest logit.", "",
             "| network | inputs | largest logit | PyTorch fp16 error | ORT mixed error (ratio) | ORT full error "
             "(ratio) | allowed | 1% error |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for label, row in r["inputs"].items():
            m, f = row["onnxruntime fp16 mixed"], row["onnxruntime fp16 full"]
            lines.append(f"| {r['network']} | {label} | {row['largest logit']:.1f} | {row['torch fp16 error']:.4f} | "
                         f"{m['error']:.4f} ({m['ratio']:.2f}) | {f['error']:.4f} ({f['ratio']:.2f}) | "
                         f"{row['allowed']:.4f} | {row['1% error']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return sweep(measure, markdown, "docs/results/fp16_noise_ratio", "sklearn digits 0-287", argv)

if __name__ == "__main__":
    raise SystemExit(main())
