"""Wall time of ``cdarts-export NAME --onnx`` (export + verify) for every zoo model, step by step.

    python benchmarks/export_speed.py                       # every zoo model, default settings
    python benchmarks/export_speed.py --models cdarts_b --exporter dynamo --exporter torchscript

Runs the command in this process (as a user would, minus interpreter start-up) and reads the step
times the report records under ``seconds``: model build, BatchNorm calibration, multiply-add count,
export, graph check, ONNX Runtime parity (including PyTorch's float32/float64 reference) and the
latency sample.  ``import`` is the one-off cost of importing torch/onnx/onnxruntime and the exporter,
paid by the first model only; it is shown on its own line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ZOO = ["cdarts_cifar", "pcdarts_cifar", "darts_v1", "darts_v2", "pdarts", "cdarts_imagenet", "pcdarts_imagenet",
       "cdarts_a", "cdarts_b"]
STEPS = ["build", "bn_calibration", "count_macs", "export", "check", "parity", "latency"]


def run_once(name: str, exporter: str | None, threads: int, work: Path) -> dict:
    from cdarts_deploy.commands.export import main

    argv = [name, "--onnx", "--out", str(work / name), "--threads", str(threads)]
    if exporter:
        argv += ["--exporter", exporter]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"cdarts-export {' '.join(argv)} failed ({code}): {err.getvalue().strip()[-300:]}")
    report = json.loads((work / name / f"{name}.json").read_text())
    return {"model": name, "exporter": report["exporter"], "wall_s": wall, **report["seconds"],
            "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(ZOO))
    p.add_argument("--exporter", action="append", choices=("dynamo", "torchscript"),
                   help="exporter(s) to time (repeatable; default: the command's default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="file for the JSON rows")
    args = p.parse_args(argv)
    start = time.perf_counter()
    import onnx  # noqa: F401  -- the one-off import cost, kept out of the first model's time
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    import cdarts_deploy.commands.export  # noqa: F401
    import_s = time.perf_counter() - start
    cols = ["model", "exporter", "total s", *STEPS, "other", "load avg"]
    print(f"import {import_s:.1f} s (once)")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for exporter in args.exporter or [None]:
            for name in args.models.split(","):
                row = run_once(name, exporter, args.threads, Path(work))
                other = row["wall_s"] - sum(row.get(s, 0.0) for s in STEPS)
                print("| " + " | ".join([row["model"], row["exporter"], f"{row['wall_s']:.1f}",
                                         *(f"{row.get(s, 0.0):.1f}" for s in STEPS), f"{other:.1f}",
                                         f"{row['load_average']:.1f}"]) + " |", flush=True)
                rows.append(row)
    if args.out:
        from cdarts_deploy.atomic_files import write_text

        write_text(args.out, json.dumps({"import_s": import_s, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
