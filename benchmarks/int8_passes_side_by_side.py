"""The INT8 passes against the rewrites they replaced, on the same networks and calibration, in one process.

    python -m benchmarks.int8_passes_side_by_side --out docs/results/int8_passes_side_by_side

The replaced implementation (``cdarts_deploy/deploy/int8_rewrites.py`` and the ``precision.py`` that drove it) is
read from git at ``--old`` and imported from a temporary folder; the new one is
:func:`cdarts_deploy.deploy.precision.quantize_int8` with every pass.  Each network (zoo genotypes at reduced
size, random weights with BatchNorm statistics from digit pictures) is exported once, and both implementations
quantize that file on the same digits, once with the average pools as 8-bit pools and, where a network has
pools, once as depthwise convolutions.  Per file pair: node count and op histogram, whether the files are
byte-identical (apart from the new file's pass-list metadata entry), the largest logit difference on held-out
digits, and ONNX Runtime latency at batch 1 and 32 with the old and new sessions timed back to back in each
round (order alternating), as the median of the per-round new/old ratios and their range, with the load average
before and after.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from benchmarks.int8_speed import bn_from_pictures, digits
from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import write_text
from cdarts_deploy.deploy import int8_cpu, ort
from cdarts_deploy.deploy import int8_passes as ip
from cdarts_deploy.deploy import model_spec as ms
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.onnx_graph import export_onnx
from cdarts_deploy.deploy.timing import sample_host, settle

ROOT = Path(__file__).resolve().parents[1]
#: name -> (width, cells) for cell networks (None for chain networks), input side.
NETWORKS = {"cdarts_cifar": ((16, 8), 32), "pcdarts_cifar": ((16, 8), 32), "cdarts_imagenet": ((16, 8), 64),
            "cdarts_b": (None, 96)}


def old_precision(commit: str, folder: Path):
    """``precision`` as of ``commit``, importing its rewrites from ``int8_rewrites`` as of ``commit``."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout

    def load(name: str, source: str):
        (folder / f"{name}.py").write_text(source)
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    load("old_int8_rewrites", show("cdarts_deploy/deploy/int8_rewrites.py"))
    source = show("cdarts_deploy/deploy/precision.py")
    marker = "from cdarts_deploy.deploy.int8_rewrites import ("
    assert marker in source, f"{commit}'s precision.py does not import int8_rewrites"
    return load("old_precision", source.replace(marker, "from old_int8_rewrites import ("))


def network(name: str, hw_side: int, size):
    genotype = gt.load(name)
    width, cells = size if size else (None, None)
    spec = ms.resolve_spec(genotype, None, width, cells, input_size=(hw_side, hw_side))
    torch.manual_seed(0)
    model = ms.build_model(genotype, spec)
    return model, tuple(spec.input_size)


def without_pass_metadata(path: Path) -> bytes:
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != ip.METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    return proto.SerializeToString()


def compare(old: Path, new: Path, held_out: np.ndarray, threads: int, rounds: int) -> dict:
    old_proto, new_proto = onnx.load(str(old)), onnx.load(str(new))
    histogram = [dict(collections.Counter(n.op_type for n in p.graph.node)) for p in (old_proto, new_proto)]
    sessions = {"old": ort.session(old, threads), "new": ort.session(new, threads)}
    logits = {k: ort.run(s, held_out)[0] for k, s in sessions.items()}
    row = {"nodes_old": len(old_proto.graph.node), "nodes_new": len(new_proto.graph.node),
           "op_histogram_equal": histogram[0] == histogram[1],
           "same_ops_in_order": [n.op_type for n in old_proto.graph.node] == [n.op_type for n in new_proto.graph.node],
           "same_node_names": [n.name for n in old_proto.graph.node] == [n.name for n in new_proto.graph.node],
           "op_histogram_difference": {op: [histogram[0].get(op, 0), histogram[1].get(op, 0)]
                                       for op in sorted(set(histogram[0]) | set(histogram[1]))
                                       if histogram[0].get(op, 0) != histogram[1].get(op, 0)},
           "byte_identical_apart_from_pass_metadata": old.read_bytes() == without_pass_metadata(new),
           "max_abs_logit_difference": float(np.abs(logits["old"] - logits["new"]).max()),
           "held_out_images": len(held_out), "timing": {}}
    for batch in (1, 32):
        load = os.getloadavg()[0]
        row["timing"][f"batch{batch}"] = {**paired_rounds(sessions, held_out[:batch], 20 if batch == 1 else 3, rounds),
                                          "load_before": load, "load_after": os.getloadavg()[0]}
    return row


def paired_rounds(sessions: dict, x: np.ndarray, iters: int, rounds: int) -> dict:
    """Old and new timed back to back in each round (order alternating, each block after untimed runs): the
    median of each file's round medians, and the median and range of the per-round new/old ratios, which
    compare the two files under the same load."""
    def step(sess):
        return lambda: sess.run(None, {sess.get_inputs()[0].name: x})

    times: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(rounds):
        for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
            settle(step(sessions[name]))
            times[name].append(sample_host(step(sessions[name]), len(x), warmup=0, iters=iters).median_ms)
    ratios = [n / o for n, o in zip(times["new"], times["old"])]
    return {"old_ms": float(np.median(times["old"])), "new_ms": float(np.median(times["new"])),
            "new_over_old": float(np.median(ratios)), "ratio_range": [min(ratios), max(ratios)],
            "rounds_ms": times}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", default="f46fac0", help="commit holding the replaced int8_rewrites.py")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds per batch size")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    rows = []
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].strip(" :").split()
    conditions = {"cpu_flags": flags, "vnni": sorted(int8_cpu.cpu_flags() & {"avx512_vnni", "avx_vnni"}),
                  "logical_cpus": os.cpu_count(), "threads": args.threads, "rounds": args.rounds,
                  "onnxruntime": onnxruntime.__version__, "old": args.old, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        old_pr = old_precision(args.old, work)
        for name in args.networks.split(","):
            size, side = NETWORKS[name]
            model, hw = network(name, side, size)
            mean, std = pr.normalization(model)
            bn_from_pictures(model, digits(64, 0, hw, mean, std))
            calibration, held_out = digits(64, 64, hw, mean, std), digits(64, 128, hw, mean, std)
            fp32 = work / f"{name}.onnx"
            export_onnx(model, fp32, (2, 3, *hw), exporter="torchscript")
            forms = [False, True] if pr.average_pool_count(fp32) else [False]
            for pools_as_convs in forms:
                files, seconds = {}, {}
                for which, module in (("old", old_pr), ("new", pr)):
                    files[which] = work / f"{name}.{which}.{int(pools_as_convs)}.int8.onnx"
                    start = time.perf_counter()
                    module.quantize_int8(fp32, files[which], calibration, pools_as_convs=pools_as_convs)
                    seconds[which] = time.perf_counter() - start
                row = {"network": name, "input": list(hw), "pools_as_convs": pools_as_convs, "quantize_s": seconds,
                       **compare(files["old"], files["new"], held_out, args.threads, args.rounds)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    conditions["load_average_end"] = os.getloadavg()
    if args.out:
        write_text(f"{args.out}.json", json.dumps({"conditions": conditions, "rows": rows}, indent=1) + "\n")
        write_text(f"{args.out}.md", markdown(conditions, rows))
    return 0


def _ratio(timing: dict) -> str:
    low, high = timing.get("ratio_range", [timing["new_over_old"]] * 2)
    return f"{timing['new_over_old']:.2f}, {low:.2f}-{high:.2f}"


def markdown(conditions: dict, rows: list[dict]) -> str:
    lines = [
        "# INT8 passes against the rewrites they replaced (same run)", "",
        f"`python -m benchmarks.int8_passes_side_by_side` (old: `{conditions['old']}`'s `int8_rewrites.py` and "
        "`precision.py`, read from git; new: `cdarts_deploy/deploy/int8_passes`, every pass).  Zoo networks at "
        "reduced size, random weights with BatchNorm statistics from digit pictures, both quantized from one "
        "exported file on the same 64 digits; logits compared on 64 other digits.  Latency: ONNX Runtime, "
        f"{conditions['threads']} thread(s), old and new sessions timed back to back in each of "
        f"{conditions['rounds']} rounds (order alternating); new/old is the median of the per-round ratios, "
        "with their range.", "",
        f"Machine: {conditions['logical_cpus']} logical CPUs, shared with other work (load average 1/5/15 min "
        f"{'/'.join(f'{x:.1f}' for x in conditions['load_average_start'])} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in conditions['load_average_end'])} at the end), so single timings are noisy; "
        f"VNNI flags: {', '.join(conditions['vnni']) or 'none'}; ONNX Runtime {conditions['onnxruntime']}.  "
        "Full CPU flags in the JSON file.", "",
        "| network | pools as convs | nodes old/new | op histogram equal | ops in same order | same node names "
        "| bytes equal* | max abs logit diff | b1 old/new ms (new/old, range) | b32 old/new ms (new/old, range) "
        "| load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t1, t32 = r["timing"]["batch1"], r["timing"]["batch32"]
        lines.append(
            f"| {r['network']} {r['input'][0]}px | {'yes' if r['pools_as_convs'] else 'no'} | "
            f"{r['nodes_old']}/{r['nodes_new']} | {'yes' if r['op_histogram_equal'] else 'no'} | "
            f"{'yes' if r['same_ops_in_order'] else 'no'} | {'yes' if r['same_node_names'] else 'no'} | "
            f"{'yes' if r['byte_identical_apart_from_pass_metadata'] else 'no'} | "
            f"{r['max_abs_logit_difference']:.3g} | "
            f"{t1['old_ms']:.2f}/{t1['new_ms']:.2f} ({_ratio(t1)}) | "
            f"{t32['old_ms']:.1f}/{t32['new_ms']:.1f} ({_ratio(t32)}) | "
            f"{t1['load_before']:.1f}-{t32['load_after']:.1f} |")
    same = [t["new_over_old"] for r in rows if r["byte_identical_apart_from_pass_metadata"]
            for t in r["timing"].values()]
    other = [t["new_over_old"] for r in rows if not r["byte_identical_apart_from_pass_metadata"]
             for t in r["timing"].values()]
    if same and other:
        lines += ["", f"Noise of this run: on the byte-identical pairs (one network timed twice) the median "
                      f"new/old ranged {min(same):.2f}-{max(same):.2f}; on the pairs that differ in names, "
                      f"{min(other):.2f}-{max(other):.2f}."]
    lines += ["", "*byte-identical apart from the new file's `cdarts.int8_passes` metadata entry (the pass list).", "",
              "Where an onnxscript rewrite rule fired (average pools as depthwise convolutions; a chain network's "
              "spatial means and HardSigmoid gates) the files differ in node and tensor names, which the rewriter "
              "chooses; the ops, their order and the outputs are the same.  On a loaded machine a ratio away from 1 "
              "is noise unless it repeats across networks and batch sizes; the byte-identical pairs show its size."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
