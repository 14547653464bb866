"""``cdarts-profile``: latency percentiles of a genotype or an ONNX file across runtimes.

    cdarts-profile cdarts_cifar --backend torch,onnxruntime --batch-sizes 1,32 --threads 2
    cdarts-profile model.onnx --backend onnxruntime --input-size 224 --iters 200
    cdarts-profile cdarts_b --batch-sizes 32 --out reports/            # with the default peers, same run
    cdarts-profile cdarts_b --peers none --batch-sizes 32 --out reports/

Writes ``<name>.json``, ``<name>.md`` and ``<name>.png`` (latency against
multiply-adds) into ``--out`` only when every measurement finished.
Exit status: 0 success, 1 an exported file failed its check or an engine failed to build,
2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from cdarts_deploy import genotype as gt
from cdarts_deploy.commands import bounds
from cdarts_deploy.commands.args import (
    OneLineParser,
    add_bad_images_option,
    add_batch_sizes_option,
    add_deprecated_option,
    add_device_option,
    add_out_dir_option,
    add_overwrite_option,
    add_threads_option,
    batch_sizes,
    non_negative_int,
    parse_size,
    positive_int,
    prepare_out_dir,
    run_main,
)
from cdarts_deploy.commands.bounds import check_bounds
from cdarts_deploy.commands.outputs import refuse_replacing
from cdarts_deploy.data.image_reader import screen
from cdarts_deploy.deploy import profile_report as rep
from cdarts_deploy.deploy import subjects as sj
from cdarts_deploy.deploy.gemm import measure_gemm_rate, torch_threads
from cdarts_deploy.deploy.parity import PRECISIONS
from cdarts_deploy.deploy.precision import image_files
from cdarts_deploy.deploy.profiling import BACKENDS, ProfileError
from cdarts_deploy.deploy.subjects import CALIBRATION_IMAGES, DEFAULT_PEERS_WORD, NO_PEERS_WORD, TIMM_PEERS
from cdarts_deploy.deploy.timing import DEFAULT_ITERS, PERCENTILE_MIN_SAMPLES, unsupported_percentiles
from cdarts_deploy.deploy.trt import EngineBuildError, require_tensorrt
from cdarts_deploy.deploy.versions import conditions

PROG = "cdarts-profile"


def parse_backends(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend {unknown[0] if unknown else text!r}; use one or more of "
                                         f"{', '.join(BACKENDS)} separated by commas")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="genotype JSON, zoo name (e.g. cdarts_cifar) or an .onnx file")
    p.add_argument("--backend", type=parse_backends, action="extend", help=f"comma list of {', '.join(BACKENDS)} "
                   "(repeatable; default torch,onnxruntime for a genotype, onnxruntime for an ONNX file)")
    add_batch_sizes_option(p)
    add_deprecated_option(p, "--batch", "--batch-sizes", dest="batch_sizes", type=batch_sizes)
    p.add_argument("--input-size", type=parse_size, help="N or HxW (default: the genotype's or the ONNX file's)")
    add_threads_option(p)
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--iters", type=positive_int, default=DEFAULT_ITERS,
                   help=f"timed runs per measurement (default {DEFAULT_ITERS}; p99 needs at least 100, p95 20, p90 10)")
    add_device_option(p)  # auto: cuda for the tensorrt backend, else cpu
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16: FP16 ONNX / half PyTorch on CUDA; int8: Q/DQ ONNX (needs --calib-dir)")
    p.add_argument("--calib-dir", help="folder of images for INT8 calibration")
    add_bad_images_option(p)
    p.add_argument("--peers", default=DEFAULT_PEERS_WORD,
                   help="models profiled the same way in the same run and plotted beside the target: a comma list of "
                   f"timm or zoo names, '{NO_PEERS_WORD}', or '{DEFAULT_PEERS_WORD}' (the default: "
                   + ", ".join(TIMM_PEERS) + " and the zoo models of the target's layout)")
    p.add_argument("--layout", choices=("cifar", "imagenet"), help="cell genotypes: network layout")
    p.add_argument("--width", type=positive_int, help="cell genotypes: initial channels C")
    p.add_argument("--cells", type=positive_int, help="cell genotypes: number of cells")
    p.add_argument("--num-classes", type=positive_int, help="classifier outputs")
    p.add_argument("--cuda-graph", action="store_true",
                   help="tensorrt: time the GPU compute as a CUDA graph replay (host latency and enqueue time are "
                   "always plain launches)")
    p.add_argument("--no-gemm", action="store_true", help="skip measuring the GEMM rate (no compute floor)")
    p.add_argument("--gemm-sizes", type=batch_sizes, default=[1024, 2048],
                   help="square matrix sizes tried for the GEMM rate, measured before and after the models; the "
                   "highest median counts (default 1024,2048)")
    add_out_dir_option(p, default=".")
    add_overwrite_option(p)
    p.add_argument("--name", help="report file stem (default: profile_<target>)")
    return p


def _log(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def check_args(args: argparse.Namespace, backends: list[str], is_onnx: bool) -> str:
    """Reject impossible combinations before any work; returns the device."""
    device = args.device if args.device != "auto" else ("cuda" if "tensorrt" in backends else "cpu")
    if "tensorrt" in backends:
        require_tensorrt()
        if device != "cuda":
            raise ProfileError("the tensorrt backend runs on the GPU; drop --device cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ProfileError("--device cuda needs an NVIDIA GPU with CUDA and none is visible; use --device cpu")
    torch_backends = [b for b in backends if b.startswith("torch")]
    if is_onnx and torch_backends:
        raise ProfileError(f"backend {torch_backends[0]} needs a genotype, not an ONNX file; use --backend onnxruntime")
    if args.precision == "int8":
        if torch_backends:
            raise ProfileError("int8 applies to onnxruntime and tensorrt only; drop the torch backends or use fp32")
        if not args.calib_dir:
            raise ProfileError("--precision int8 needs --calib-dir DIR with calibration images")
        # every calibration file is decoded now, so a bad one stops the run before any model is built
        if not screen(image_files(args.calib_dir), args.bad_images, "--calib-dir", limit=CALIBRATION_IMAGES):
            raise ProfileError(f"no image in --calib-dir {args.calib_dir} decodes; add representative images")
    if args.calib_dir and args.precision != "int8":
        raise ProfileError("--calib-dir is only used with --precision int8")
    if args.precision == "fp16" and torch_backends and device != "cuda":
        raise ProfileError(
            "fp16 PyTorch timing needs --device cuda; on the CPU profile fp16 with --backend onnxruntime")
    return device


def _looks_like_onnx(target: Path) -> bool:
    """An ``.onnx`` file, or an existing non-JSON file whose first bytes are not genotype text."""
    if target.suffix.lower() == ".onnx":
        return True
    if target.suffix.lower() == ".json" or not target.is_file():
        return False
    with open(target, "rb") as fh:
        head = fh.read(64).lstrip()
    return head[:1] not in (b"{", b"[", b"G", b"")


def run(args: argparse.Namespace) -> int:

    target = Path(args.target)
    is_onnx = _looks_like_onnx(target)
    if is_onnx and not target.is_file():
        raise ProfileError(f"ONNX file {target} not found; pass an existing .onnx file or a genotype")
    backends = list(dict.fromkeys(args.backend or (["onnxruntime"] if is_onnx else ["torch", "onnxruntime"])))
    device = check_args(args, backends, is_onnx)
    check_bounds(vars(args), {"width": bounds.WIDTH, "cells": bounds.CELLS, "num_classes": bounds.CLASSES})
    threads = args.threads or torch.get_num_threads()
    # Everything the user named is resolved before the output folder exists: bad input leaves nothing behind.
    genotype = None if is_onnx else gt.load(args.target)
    if genotype is None:
        layout = None
    elif isinstance(genotype, gt.CellGenotype):
        layout = args.layout or sj.zoo_layout(genotype)
    else:
        layout = "chain"
    if genotype is not None:  # names checked before any network is built
        peers = sj.resolve_peers(args.peers, layout, exclude=[genotype.name or ""])
    with torch_threads(threads):
        if is_onnx:
            main_subject = sj.from_onnx(target, args.input_size)
            peers = sj.resolve_peers(args.peers, None, main_subject.input_hw, exclude=[main_subject.name])
        else:
            main_subject = sj.from_genotype(genotype, args.layout, args.width, args.cells,
                                            args.num_classes, args.input_size)
        if peers:
            _log(f"peers, measured in this run: {', '.join(peers)} (--peers none to skip)")
        subjects = [main_subject]
        for peer in peers:
            if peer in gt.zoo_names():
                subjects.append(sj.from_genotype(gt.load(peer), args.layout, num_classes=args.num_classes,
                                                 input_hw=main_subject.input_hw, name=peer, peer=True))
            else:
                subjects.append(sj.from_timm(peer, main_subject.input_hw, args.num_classes))
    stem = args.name or f"profile_{main_subject.name}"
    refuse_replacing(args.out, stem, [args.target, args.calib_dir], args.overwrite)  # never over the target
    out_dir = prepare_out_dir(args.out)

    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="cdarts-profile-") as tmp:
        work = Path(tmp)
        missing = unsupported_percentiles(args.iters)
        if missing:
            _log(f"--iters {args.iters} is too few for {', '.join(missing)} (each would be the maximum); those "
                 f"columns are marked unsupported in the report")
        gemm_before = None
        if not args.no_gemm:
            _log("measuring the GEMM rate (before the models)")
            gemm_before = measure_gemm_rate(threads=threads, sizes=tuple(args.gemm_sizes), device=device)
        rows = []
        try:
            for subject in subjects:
                rows += sj.measure_subject(subject, backends, args.batch_sizes, warmup=args.warmup, iters=args.iters,
                                           device=device, precision=args.precision, threads=threads, work=work,
                                           calib_dir=args.calib_dir, log=_log, cuda_graph=args.cuda_graph,
                                           bad_images=args.bad_images)
        except (sj.VerificationFailed, EngineBuildError) as exc:
            print(f"{PROG}: error: {exc}; no report written", file=sys.stderr)
            return 1
        gemm = None
        if gemm_before is not None:
            _log("measuring the GEMM rate (after the models)")
            gemm_after = measure_gemm_rate(threads=threads, sizes=tuple(args.gemm_sizes), device=device)
            best = max(gemm_before, gemm_after, key=lambda g: g.gflops)
            gemm = {**best.as_dict(), "measured": "before and after the models, in this process; the higher counts",
                    "before": gemm_before.as_dict(), "after": gemm_after.as_dict()}
        cond = conditions(threads, device)
        cond["samples"] = {"timed_runs_per_row": args.iters, "warmup_runs": args.warmup,
                           "percentile_min_runs": dict(PERCENTILE_MIN_SAMPLES),
                           "unsupported_percentiles": missing or "none"}
        report = rep.make_report(rows, cond, gemm)
        report["target"] = str(args.target)
        report["precision"] = args.precision
    files = rep.write_reports(report, out_dir, stem)
    print(rep.markdown(report).split("\n## Published")[0])
    for f in files:
        print(f"wrote {f}")
    return 0




def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, interrupted="interrupted; no report written")


if __name__ == "__main__":
    sys.exit(main())
