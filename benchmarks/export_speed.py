"""Wall time of ``cdarts-export NAME --onnx`` (export + verify) for every zoo model, as a user runs it.

    python -m benchmarks.export_speed                          # every zoo model, default settings
    python -m benchmarks.export_speed --models cdarts_b --exporter dynamo --exporter torchscript
    python -m benchmarks.export_speed --isa native --isa avx2   # also with torch's AVX2 paths forced
    python -m benchmarks.export_speed --isa avx2 --baseline /tmp/old --out docs/results/export_speed_cli_2threads.json
        # before/after: each export also run from another checkout (``git worktree add /tmp/old <commit>``),
        # the two alternating network by network so that both see the same machine load

Each export runs as its own process (``python -m cdarts_deploy.commands.export``), so the wall time
includes interpreter start-up and imports, as on the command line.  The step times come from the
report's ``seconds``: model build, BatchNorm calibration, multiply-add count, export, graph check,
ONNX Runtime parity (including PyTorch's float32/float64 reference) and the latency sample;
``start-up`` is the rest (interpreter, imports, argument and genotype parsing, writing files).
``cpu s`` is the process's user + system CPU time (less sensitive than wall time to other load on a shared
machine); the load average is read after each run.
``--isa avx2`` sets ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` for the exporting process,
which makes torch take the kernels an AVX2-only CPU runs (ONNX Runtime still uses the real CPU's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.deploy.versions import conditions

ZOO = ["cdarts_cifar", "pcdarts_cifar", "darts_v1", "darts_v2", "pdarts", "cdarts_imagenet", "pcdarts_imagenet",
       "cdarts_a", "cdarts_b"]
STEPS = ["build", "bn_calibration", "count_macs", "export", "check", "parity", "latency"]
FORCED_ISA = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def run_once(name: str, exporter: str | None, threads: int, isa: str, work: Path, tree: Path | None = None,
             code: str = "current") -> dict:
    """One ``cdarts-export`` process (run from ``tree``'s package when given); its wall and CPU time and the
    step times its report records."""
    out = work / f"{name}-{isa}-{exporter or 'default'}-{code}"
    cmd = [sys.executable, "-m", "cdarts_deploy.commands.export", name, "--onnx", "--out", str(out),
           "--threads", str(threads)]
    if exporter:
        cmd += ["--exporter", exporter]
    env = {**os.environ, **FORCED_ISA[isa]}
    if tree is not None:  # ``python -m`` puts the working folder first on sys.path: that checkout's package runs
        env["PYTHONPATH"] = str(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    report = json.loads((out / f"{name}.json").read_text())
    steps = {s: float(report["seconds"].get(s, 0.0)) for s in STEPS}
    return {"model": name, "isa": isa, "code": code, "exporter": report["exporter"], "wall_s": wall, "cpu_s": cpu,
            **steps,
            "startup_s": wall - sum(steps.values()), "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(ZOO))
    p.add_argument("--exporter", action="append", choices=("dynamo", "torchscript"),
                   help="exporter(s) to time (repeatable; default: the command's default)")
    p.add_argument("--isa", action="append", choices=tuple(FORCED_ISA),
                   help="torch kernel paths (repeatable; default: native)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                   help="also time every export from this checkout of the code (before/after, alternating)")
    p.add_argument("--out", help="file for the JSON rows and the conditions")
    args = p.parse_args(argv)
    trees: dict[str, Path | None] = {"current": None}
    if args.baseline:
        trees = {"baseline": args.baseline.resolve(), **trees}
    cols = ["model", "isa", "code", "exporter", "wall s", "cpu s", "start-up", *STEPS, "load avg"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for isa in args.isa or ["native"]:
            for exporter in args.exporter or [None]:
                for name in args.models.split(","):
                    for code, tree in trees.items():
                        row = run_once(name, exporter, args.threads, isa, Path(work), tree, code)
                        print("| " + " | ".join([row["model"], row["isa"], code, row["exporter"],
                                                 f"{row['wall_s']:.1f}", f"{row['cpu_s']:.1f}",
                                                 f"{row['startup_s']:.1f}", *(f"{row[s]:.1f}" for s in STEPS),
                                                 f"{row['load_average']:.1f}"]) + " |", flush=True)
                        rows.append(row)
    for code in trees:
        mine = [r for r in rows if r["code"] == code]
        slowest = max(mine, key=lambda r: r["wall_s"])
        print(f"{code}: slowest {slowest['model']} ({slowest['isa']}) {slowest['wall_s']:.1f} s")
    if args.out:
        command = " ".join(["python -m benchmarks.export_speed", *(argv if argv is not None else sys.argv[1:])])
        write_text(args.out, json.dumps({"command": command, "conditions": conditions(args.threads, "cpu"),
                                         "load_average_end": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
