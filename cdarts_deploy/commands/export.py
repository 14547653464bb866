"""``cdarts-export``: turn a genotype into a verified ONNX model plus a report.

    cdarts-export cdarts_imagenet --onnx --out out/
    cdarts-export runs/search/genotype.json --onnx --checkpoint best.pth

Writes ``<name>.onnx`` and ``<name>.json`` (genotype, parameters, multiply-adds,
input shape, opset, library versions, parity errors against PyTorch, a short
latency measurement) into ``--out`` (default: a folder ``<name>``).  Nothing is written
unless every check passes; a folder already holding ``<name>.*`` files is refused
unless ``--overwrite``, and an output that would replace an input always is.
Exit status: 0 success, 1 verification failed, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from backbones.complexity import count_macs, count_macs_inclusive, count_params
from cdarts_deploy import genotype as gt
from cdarts_deploy.commands import bounds
from cdarts_deploy.commands.args import (
    OneLineParser,
    UsageError,
    add_bad_images_option,
    add_deprecated_option,
    add_exporter_option,
    add_out_dir_option,
    add_overwrite_option,
    add_threads_option,
    library_threads,
    parse_size,
    positive_int,
    prepare_out_dir,
    run_main,
)
from cdarts_deploy.commands.bounds import check_bounds
from cdarts_deploy.commands.outputs import refuse_replacing
from cdarts_deploy.data.image_reader import folder_files, screen
from cdarts_deploy.deploy import artifacts, parity
from cdarts_deploy.deploy import layer_compare as lc
from cdarts_deploy.deploy import model_spec as ms
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified

if TYPE_CHECKING:
    from cdarts_deploy.deploy.artifacts import ArtifactRequest

PROG = "cdarts-export"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("genotype",
                   help="genotype JSON file (ours or the reference code's) or a zoo name, e.g. cdarts_imagenet")
    p.add_argument("--onnx", action="store_true", help="export a verified ONNX model")
    add_out_dir_option(p)  # default: a folder named after the model, never "." (reports there replaced inputs)
    add_overwrite_option(p)
    p.add_argument("--name", help="output file stem (default: the genotype's name)")
    p.add_argument("--layout", choices=("cifar", "imagenet"), help="cell genotypes: network layout (overrides hints)")
    p.add_argument("--width", type=positive_int, help="cell genotypes: initial channels C")
    p.add_argument("--cells", type=positive_int, help="cell genotypes: number of cells")
    p.add_argument("--num-classes", type=positive_int, help="classifier outputs")
    p.add_argument("--input-size", type=parse_size, help="N or HxW (default from the genotype or layout)")
    p.add_argument("--checkpoint", help="state_dict of the matching timm model (loaded with weights_only=True)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--batch-size", type=positive_int, default=2, metavar="N",
                   help="example batch the graph is exported with; parity is checked at 1 and N (default 2)")
    add_deprecated_option(p, "--batch", "--batch-size", dest="batch_size", type=positive_int)
    add_exporter_option(p)
    p.add_argument("--static-batch", action="store_true",
                   help="fix the batch dimension to --batch-size instead of dynamic")
    add_threads_option(p)
    p.add_argument("--latency-iters", type=int, default=10, help="timed runs for the report's latency (0 to skip)")
    g = p.add_argument_group("deployment")
    g.add_argument("--trt", action="store_true", help="also build a TensorRT engine (NVIDIA GPU and tensorrt needed)")
    g.add_argument("--fp16", action="store_true", help="also write an FP16 ONNX (and build the engine from it)")
    g.add_argument("--int8", action="store_true",
                   help="also write an INT8 ONNX calibrated on half of --calib-dir and judged on the other half")
    g.add_argument("--int8-target", choices=("onnxruntime", "tensorrt"),
                   help="INT8 file format: onnxruntime (operator format, fast on ONNX Runtime CPU; the default) or "
                   "tensorrt (symmetric Q/DQ; the default with --trt, which builds its engine from it)")
    g.add_argument("--int8-cpu", choices=("portable", "vnni", "auto"),
                   help="CPUs the ONNX Runtime INT8 file must be exact on: portable (the default; 7-bit weights, exact "
                   "on every x86-64 CPU), vnni (full 8-bit weights; CPUs without avx512_vnni/avx_vnni saturate and "
                   "give wrong results), auto (vnni if this machine has VNNI, else portable)")
    g.add_argument("--int8-passes", metavar="all|none|NAME[,NAME...]",
                   help="graph passes applied around ONNX Runtime INT8 quantization, always in their declared order: "
                   "all (the default), none, or the names to apply; the report and the file's metadata list each "
                   "pass with the rewrites it made, and an unknown name's error lists the names")
    g.add_argument("--calib-dir", help="folder of images: INT8 calibration and the real-image inputs of --check")
    g.add_argument("--check", action="store_true", help="parity across PyTorch, ONNX Runtime and TensorRT, per tensor")
    g.add_argument("--debug-layers", action="store_true",
                   help="compare every layer's output in ONNX Runtime with PyTorch, print the first divergent layer "
                   "and a per-layer table, and save <name>.golden.npz for cdarts-compare")
    add_bad_images_option(g)
    g.add_argument("--eval-dir", help="ImageFolder (a sub-folder of images per class): report top-1/top-5 of "
                   "PyTorch and of every file made (ONNX Runtime fp32, fp16/int8, TensorRT) on the same images")
    g.add_argument("--features", action="store_true", help="also export the multi-scale features_only backbone")
    g.add_argument("--plot", action="store_true", help="draw the genotype (PNG and SVG)")
    g.add_argument("--max-batch", type=int, default=32, help="TensorRT profile's largest batch (default 32)")
    g.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MiB (default 1024)")
    g.add_argument("--trt-timing-cache", metavar="PATH",
                   help="TensorRT timing cache file: read if it exists, updated after the build (faster rebuilds)")
    g.add_argument("--trt-opt-level", type=_opt_level, metavar="0-5",
                   help="TensorRT builder optimization level (default: TensorRT's, 3)")
    return p


def _opt_level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"optimization level {text!r} must be an integer from 0 to 5")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv)


def _log(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def wants_onnx(args: argparse.Namespace) -> bool:
    return bool(args.onnx or args.trt or args.fp16 or args.int8 or args.check or args.features or args.debug_layers
                or args.eval_dir)


def _int8_target(args: argparse.Namespace) -> str:
    """TensorRT builds its INT8 engine from the Q/DQ file, so --trt --int8 asks for that format."""
    if args.int8_target is None:
        return "tensorrt" if args.trt else "onnxruntime"
    if args.trt and args.int8 and args.int8_target != "tensorrt":
        raise UsageError("--trt --int8 builds the engine from the Q/DQ file; use --int8-target tensorrt")
    return args.int8_target


def run(args: argparse.Namespace) -> int:
    if not (wants_onnx(args) or args.plot):
        raise UsageError("nothing to do: pass --onnx (or --trt, --fp16, --int8, --check, --features, --debug-layers, "
                         "--plot)")
    check_bounds({**vars(args), "input_size": max(args.input_size) if args.input_size else None},
                 {**bounds.EXPORT, "input_size": bounds.INPUT_SIDE})
    request = artifacts.ArtifactRequest(
        fp16=args.fp16, int8=args.int8, tensorrt=args.trt, check=args.check, features=args.features,
        pictures=args.plot, calib_dir=args.calib_dir, int8_target=_int8_target(args), int8_cpu=args.int8_cpu,
        int8_passes=args.int8_passes,
        max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
        threads=library_threads(args.threads), trt_timing_cache=args.trt_timing_cache,
        trt_opt_level=args.trt_opt_level,
        eval_dir=args.eval_dir, bad_images=args.bad_images,
    )
    artifacts.validate(request, args.batch_size)
    genotype = gt.load(args.genotype)
    stem = args.name or genotype.name or ("model" if wants_onnx(args) else "genotype")
    out_dir = _out_dir(args, stem)
    if args.calib_dir:  # every input is checked before the output folder exists
        args.calib_files = screen(folder_files(args.calib_dir), args.bad_images, "--calib-dir", _log, limit=256)
        if not args.calib_files:
            raise UsageError(f"--calib-dir {args.calib_dir} holds no usable images; add representative images")
    if not wants_onnx(args):
        for path in artifacts.pictures_only(genotype, prepare_out_dir(out_dir), stem):
            print(path)
        return 0
    return _export(args, genotype, request, out_dir)


def _out_dir(args: argparse.Namespace, stem: str) -> Path:
    """The output folder, checked (created later, once every input passed): outputs are ``<stem>.*`` /
    ``<stem>_*`` files inside it."""
    out = Path(args.out) if args.out is not None else Path(stem)
    refuse_replacing(out, stem, [args.genotype, args.checkpoint], args.overwrite)
    return out


def _export(args: argparse.Namespace, genotype: gt.Genotype, request: "ArtifactRequest", out_dir: Path) -> int:
    spec = ms.resolve_spec(genotype, args.layout, args.width, args.cells, args.num_classes, args.input_size)
    name = args.name or genotype.name or "model"
    _log(f"building {name} ({genotype.kind} genotype) {spec.as_dict()}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    model = ms.build_model(genotype, spec)
    seconds["build"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    if args.checkpoint:
        ms.load_weights(model, args.checkpoint)
        seconds["load_weights"] = round(time.perf_counter() - start, 3)
    else:
        # Random weights: calibrate BN statistics so that the parity check tests something.
        ms.calibrate_batchnorm(model, spec.input_size)
        seconds["bn_calibration"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    sizes = {
        "params": count_params(model),
        "macs": count_macs(model, spec.input_size),
        "macs_inclusive": count_macs_inclusive(model, spec.input_size),
    }
    seconds["count_macs"] = round(time.perf_counter() - start, 3)
    hw = tuple(spec.input_size)
    if args.eval_dir:  # a bad folder is refused before anything is exported
        artifacts.evaluation_set(args.eval_dir, model, args.bad_images)
    mean, std = pr.normalization(model)  # the statistics the network was trained with (CIFAR or ImageNet)
    images = _calibration_images(args, lambda f: pr.load_image(f, hw, mean, std)) if args.calib_dir else None
    if images is not None:
        request = replace(request, calibration=images)
    batches = [args.batch_size] if args.static_batch else sorted({1, args.batch_size})
    # a static graph only takes --batch-size images at a time, so the real-image input is left out there
    inputs = artifacts.check_inputs(batches, hw, None if args.static_batch else images)
    export = OnnxExport((args.batch_size, 3, *hw), args.opset, not args.static_batch, args.exporter)
    report = {
        "name": name,
        "genotype": gt.to_dict(genotype),
        "network": spec.as_dict(),
        **sizes,
        "macs_note": "multiply-adds of conv and linear layers for one image; macs_inclusive adds one op per "
        "BN/activation/pooling output element",
        "input_shape": ["batch" if not args.static_batch else args.batch_size, 3, *hw],
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "weights": ("checkpoint" if args.checkpoint
                    else "random init, BatchNorm statistics calibrated on random batches"),
        "seconds": seconds,
    }

    def more_files(verified, staging) -> tuple[dict, list[str]]:
        return artifacts.build(request, genotype, model, spec, export, verified, staging, out_dir, name, _log)

    def debug_layers(verified, staging) -> tuple[dict, list[str]]:
        # a real picture where there is one (a dynamic graph takes any batch), else the first random batch
        x = inputs[parity.IMAGES][:1] if parity.IMAGES in inputs else next(iter(inputs.values()))
        _log(f"comparing every layer with PyTorch on {len(x)} input(s)")
        golden = lc.record_golden(model, x)
        layers = lc.compare_layers(golden, verified.path, library_threads(args.threads))
        print(lc.format_table(layers), file=sys.stderr)
        _log(lc.summary(layers))
        golden.save(staging.temp(lc.golden_path(out_dir, name)))
        return {"layers": {**layers.as_dict(), "golden": lc.golden_path(out_dir, name).name}}, []

    wanted = any((request.fp16, request.int8, request.tensorrt, request.check, request.features, request.pictures,
                  request.eval_dir))
    prepare_out_dir(out_dir)
    result = export_verified(model, out_dir, name, export, inputs, report, threads=library_threads(args.threads),
                             latency_iters=args.latency_iters, require_input_dependence=True,
                             artifacts=more_files if wanted else None,
                             diagnose=debug_layers if args.debug_layers else None, log=_log)
    if not result.passed:
        print(f"{PROG}: error: {result.failures[0]}; no files written", file=sys.stderr)
        return 1
    _print_summary(result.report, result.written, out_dir / f"{name}.onnx", out_dir / f"{name}.json")
    return 0


def _calibration_images(args: argparse.Namespace, load: Callable[[Path], np.ndarray]) -> np.ndarray:
    """Up to 256 images of --calib-dir through the one image reader (hidden files ignored, bad ones by policy)."""
    return np.stack([load(f) for f in args.calib_files])


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
    int8 = report.get("int8")
    if int8:
        held = int8["held_out"]
        low, high = held["wilson95"]
        cpu = int8.get("int8_cpu")
        if isinstance(cpu, dict):
            print(f"  int8 cpu form   {cpu['form']} ({cpu['weights']}): {cpu['reason']}")
        if "passes" in int8:
            applied = [f"{p['name']} ({p['rewrites']})" for p in int8["passes"] if p["enabled"]]
            print(f"  int8 passes     {', '.join(applied) or 'none'}")
        print(f"  int8 ({int8['target']})  top-1 agreement {held['top1_agreement']:.1%} on {held['images']} held-out "
              f"images (95% CI {low:.1%}-{high:.1%}), logit cosine {held['logit_cosine']:.4f}")
        speed = int8.get("speed_onnxruntime_cpu")
        if speed:
            slower = ("; slower than fp32: on this CPU at this batch the fp32 file is the faster one"
                      if speed["int8_speedup"] < 1 else "")
            print(f"  int8 speed-up   {speed['int8_speedup']:.2f}x (fp32 time / int8 time) at batch {speed['batch']} "
                  f"(ORT CPU, {speed['fp32_median_ms']:.2f} -> {speed['int8_median_ms']:.2f} ms){slower}")
    evaluation = report.get("eval")
    if evaluation:
        print(f"  evaluation      {evaluation['images']} images in {len(evaluation['classes'])} classes "
              f"({evaluation['dir']})")
        for what, r in evaluation["results"].items():
            topk = next(k for k in r if k.startswith("top") and k != "top1" and "agreement" not in k)
            same = r.get("top1_agreement_with_pytorch")
            print(f"    {what:<22} top-1 {r['top1']:.2%}  {topk} {r[topk]:.2%}"
                  + (f"  same top-1 as PyTorch {same:.2%}" if same is not None else ""))
        for line in evaluation["flagged"]:
            print(f"  FLAGGED         {line}")
    engine = report.get("tensorrt")
    if engine and engine.get("layer_precisions"):
        print("  tensorrt layers " + ", ".join(f"{k} {v}" for k, v in engine["layer_precisions"].items())
              + f"  (optimization level {engine.get('optimization_level', 'default')})")
    for path in written:
        if path not in (onnx_path, report_path):
            print(f"  also            {path}")
    print(f"  report          {report_path}")


if __name__ == "__main__":
    sys.exit(main())
