"""``cdarts-export``: turn a genotype into a verified ONNX model plus a report.

    cdarts-export cdarts_imagenet --onnx --out out/
    cdarts-export runs/search/genotype.json --onnx --checkpoint best.pth

Writes ``<name>.onnx`` and ``<name>.json`` (genotype, parameters, multiply-adds,
input shape, opset, library versions, parity errors against PyTorch, a short
latency measurement).  Nothing is written unless every check passes.
Exit status: 0 success, 1 verification failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from cdarts_deploy import genotype as gt
from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    parse_size,
    positive_int,
    prepare_out_dir,
    run_main,
)

if TYPE_CHECKING:
    from cdarts_deploy.deploy.artifacts import ArtifactRequest

PROG = "cdarts-export"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("genotype", help="genotype JSON file (ours or the reference code's) or a zoo name, e.g. cdarts_imagenet")
    p.add_argument("--onnx", action="store_true", help="export a verified ONNX model")
    p.add_argument("--out", default=".", help="output folder (created if missing; default: current folder)")
    p.add_argument("--name", help="output file stem (default: the genotype's name)")
    p.add_argument("--layout", choices=("cifar", "imagenet"), help="cell genotypes: network layout (overrides hints)")
    p.add_argument("--width", type=positive_int, help="cell genotypes: initial channels C")
    p.add_argument("--cells", type=positive_int, help="cell genotypes: number of cells")
    p.add_argument("--num-classes", type=positive_int, help="classifier outputs")
    p.add_argument("--input-size", type=parse_size, help="N or HxW (default from the genotype or layout)")
    p.add_argument("--checkpoint", help="state_dict of the matching timm model (loaded with weights_only=True)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--batch", type=positive_int, default=2, help="example batch; parity is checked at 1 and N (default 2)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="torch ONNX exporter: dynamo (torch.export, default) or torchscript (tracing, faster)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to --batch instead of dynamic")
    p.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime threads for the latency check")
    p.add_argument("--latency-iters", type=int, default=10, help="timed runs for the report's latency (0 to skip)")
    g = p.add_argument_group("deployment")
    g.add_argument("--trt", action="store_true", help="also build a TensorRT engine (NVIDIA GPU and tensorrt needed)")
    g.add_argument("--fp16", action="store_true", help="also write an FP16 ONNX (and build the engine from it)")
    g.add_argument("--int8", action="store_true", help="also write an INT8 Q/DQ ONNX calibrated on --calib-dir")
    g.add_argument("--calib-dir", help="folder of images: INT8 calibration and the real-image inputs of --check")
    g.add_argument("--check", action="store_true", help="parity across PyTorch, ONNX Runtime and TensorRT, per tensor")
    g.add_argument("--features", action="store_true", help="also export the multi-scale features_only backbone")
    g.add_argument("--plot", action="store_true", help="draw the genotype (PNG and SVG)")
    g.add_argument("--max-batch", type=int, default=32, help="TensorRT profile's largest batch (default 32)")
    g.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MiB (default 1024)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


def _log(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def wants_onnx(args: argparse.Namespace) -> bool:
    return bool(args.onnx or args.trt or args.fp16 or args.int8 or args.check or args.features)


def run(args: argparse.Namespace) -> int:
    from cdarts_deploy.deploy import artifacts

    if not (wants_onnx(args) or args.plot):
        raise UsageError("nothing to do: pass --onnx (or --trt, --fp16, --int8, --check, --features, --plot)")
    request = artifacts.ArtifactRequest(
        fp16=args.fp16, int8=args.int8, tensorrt=args.trt, check=args.check, features=args.features,
        pictures=args.plot, calib_dir=args.calib_dir, max_batch=args.max_batch, workspace_mb=args.workspace_mb,
        threads=args.threads,
    )
    artifacts.validate(request, args.batch)
    genotype = gt.load(args.genotype)
    out_dir = prepare_out_dir(args.out)
    if not wants_onnx(args):
        for path in artifacts.pictures_only(genotype, out_dir, args.name or genotype.name or "genotype"):
            print(path)
        return 0
    return _export(args, genotype, request, out_dir)


def _export(args: argparse.Namespace, genotype: gt.Genotype, request: "ArtifactRequest", out_dir: Path) -> int:
    from backbones.complexity import count_macs, count_macs_inclusive, count_params
    from cdarts_deploy.deploy import artifacts
    from cdarts_deploy.deploy import model_spec as ms
    from cdarts_deploy.deploy import precision as pr
    from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified

    spec = ms.resolve_spec(genotype, args.layout, args.width, args.cells, args.num_classes, args.input_size)
    name = args.name or genotype.name or "model"
    _log(f"building {name} ({genotype.kind} genotype) {spec.as_dict()}")
    model = ms.build_model(genotype, spec)
    if args.checkpoint:
        ms.load_weights(model, args.checkpoint)
    else:
        # Random weights: calibrate BN statistics so that the parity check tests something.
        ms.calibrate_batchnorm(model, spec.input_size)
    sizes = {
        "params": count_params(model),
        "macs": count_macs(model, spec.input_size),
        "macs_inclusive": count_macs_inclusive(model, spec.input_size),
    }
    hw = tuple(spec.input_size)
    images = pr.load_images(args.calib_dir, hw, limit=256) if args.calib_dir else None
    if images is not None:
        request = replace(request, calibration=images)
    batches = [args.batch] if args.static_batch else sorted({1, args.batch})
    # a static graph only takes --batch images at a time, so the real-image input is left out there
    inputs = artifacts.check_inputs(batches, hw, None if args.static_batch else images)
    export = OnnxExport((args.batch, 3, *hw), args.opset, not args.static_batch, args.exporter)
    report = {
        "name": name,
        "genotype": gt.to_dict(genotype),
        "network": spec.as_dict(),
        **sizes,
        "macs_note": "multiply-adds of conv and linear layers for one image; macs_inclusive adds one op per "
        "BN/activation/pooling output element",
        "input_shape": ["batch" if not args.static_batch else args.batch, 3, *hw],
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "weights": "checkpoint" if args.checkpoint else "random init, BatchNorm statistics calibrated on random batches",
    }

    def more_files(verified, staging) -> tuple[dict, list[str]]:
        return artifacts.build(request, genotype, model, spec, export, verified, staging, out_dir, name, _log)

    wanted = any((request.fp16, request.int8, request.tensorrt, request.check, request.features, request.pictures))
    result = export_verified(model, out_dir, name, export, inputs, report, threads=args.threads,
                             latency_iters=args.latency_iters, require_input_dependence=True,
                             artifacts=more_files if wanted else None, log=_log)
    if not result.passed:
        print(f"{PROG}: error: {result.failures[0]}; no files written", file=sys.stderr)
        return 1
    _print_summary(result.report, result.written, out_dir / f"{name}.onnx", out_dir / f"{name}.json")
    return 0


def _print_summary(report: dict, written: list[Path], onnx_path: Path, report_path: Path) -> None:
    parity = report["parity"]
    batches = sorted({p["batch"] for p in parity})
    print(f"{onnx_path}  ({report['onnx_bytes'] / 1e6:.1f} MB)")
    print(f"  params          {report['params']:,}")
    print(f"  multiply-adds   {report['macs'] / 1e6:,.1f} M  (inclusive {report['macs_inclusive'] / 1e6:,.1f} M)")
    print(f"  input           {report['input_shape']}")
    print(f"  parity vs torch max abs {max(p['max_abs'] for p in parity):.2e} at batches {batches} "
          "(fp32 tolerance, see report)")
    latency = report.get("latency_onnxruntime_cpu")
    if latency:
        print(f"  latency (ORT CPU, batch {latency['batch']}) median {latency['median_ms']:.2f} ms, "
              f"p90 {latency['p90_ms']:.2f} ms over {latency['iters']} runs")
    for path in written:
        if path not in (onnx_path, report_path):
            print(f"  also            {path}")
    print(f"  report          {report_path}")


if __name__ == "__main__":
    sys.exit(main())
