# READY-FOR-EXTENSION (engineer E may extend this module for issue 3)
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
import json
import sys
import time
from typing import Sequence

from cdarts_deploy import genotype as gt
from cdarts_deploy.atomic_files import publish, temp_beside
from cdarts_deploy.commands.args import OneLineParser, UsageError, parse_size, positive_int, prepare_out_dir


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="cdarts-export", description=__doc__.split("\n\n")[0])
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
    from cdarts_deploy import deploy_extras

    deploy_extras.add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, gt.GenotypeError) as exc:
        print(f"cdarts-export: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from cdarts_deploy.precision import PrecisionError
        from cdarts_deploy.trt import TensorRTUnavailable

        if not isinstance(exc, (PrecisionError, TensorRTUnavailable)):
            raise
        print(f"cdarts-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cdarts-export: interrupted; no files written", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    from cdarts_deploy import deploy_extras

    if not (deploy_extras.wants_onnx(args) or args.plot):
        raise UsageError("nothing to do: pass --onnx (or --trt, --fp16, --int8, --check, --features, --plot)")
    try:
        deploy_extras.validate(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    genotype = gt.load(args.genotype)
    out_dir = prepare_out_dir(args.out)
    if not deploy_extras.wants_onnx(args):
        for path in deploy_extras.plot_only(genotype, out_dir, args.name or genotype.name or "genotype"):
            print(path)
        return 0

    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy.parity import (
        compare_outputs,
        float32_noise,
        onnxruntime_outputs,
        onnxruntime_session,
        torch_outputs,
    )

    try:
        spec = ox.resolve_spec(genotype, args.layout, args.width, args.cells, args.num_classes, args.input_size)
    except ox.ExportError as exc:
        raise UsageError(str(exc)) from None
    name = args.name or genotype.name or "model"
    log = lambda msg: print(f"[cdarts-export] {msg}", file=sys.stderr)  # noqa: E731

    log(f"building {name} ({genotype.kind} genotype) {spec.as_dict()}")
    model = ox.build_model(genotype, spec)
    if args.checkpoint:
        try:
            ox.load_checkpoint(model, args.checkpoint)
        except ox.ExportError as exc:
            raise UsageError(str(exc)) from None
    else:
        # Random weights: calibrate BN statistics so that the parity check below tests something.
        ox.calibrate_batchnorm(model, spec.input_size)

    from backbones.complexity import count_macs, count_macs_inclusive, count_params

    sizes = {
        "params": count_params(model),
        "macs": count_macs(model, spec.input_size),
        "macs_inclusive": count_macs_inclusive(model, spec.input_size),
    }

    extras = deploy_extras.Extras()
    onnx_path, report_path = out_dir / f"{name}.onnx", out_dir / f"{name}.json"
    onnx_tmp, report_tmp = temp_beside(onnx_path), temp_beside(report_path)
    try:
        input_shape = (args.batch, 3, *spec.input_size)
        log(f"exporting ONNX ({args.exporter} exporter, opset {args.opset}, "
            f"{'static' if args.static_batch else 'dynamic'} batch)")
        ox.export_onnx(
            model, onnx_tmp, input_shape, opset=args.opset, dynamic_batch=not args.static_batch, exporter=args.exporter
        )
        ox.check_onnx(onnx_tmp)

        session = onnxruntime_session(str(onnx_tmp), threads=args.threads)
        output_names = [o.name for o in session.get_outputs()]
        parity = []
        batches = [args.batch] if args.static_batch else sorted({1, args.batch})
        for seed, batch in enumerate(batches):
            x = ox.random_batch(batch, spec.input_size, seed=seed)
            reference = torch_outputs(model, x)
            noise = float32_noise(model, x, reference)
            results = compare_outputs(output_names, reference, onnxruntime_outputs(session, x), noise=noise)
            parity += [{"batch": batch, **r.as_dict(), "torch_fp32_noise": e} for r, e in zip(results, noise)]
            if batch > 1 and not ox.outputs_depend_on_input(reference):
                raise UsageError("the model's outputs do not depend on its input, so parity proves nothing; "
                                 "pass a --checkpoint with trained weights")
        failed = [p for p in parity if not p["passed"]]
        if not failed:
            extras = deploy_extras.build_extras(args, genotype, model, spec, onnx_tmp, out_dir, name, log)

        latency = _quick_latency(session, ox.random_batch(batches[0], spec.input_size), args.latency_iters)
        report = {
            "name": name,
            "genotype": gt.to_dict(genotype),
            "network": spec.as_dict(),
            **sizes,
            "macs_note": "multiply-adds of conv and linear layers for one image; macs_inclusive adds one op per "
            "BN/activation/pooling output element",
            "input_shape": ["batch" if not args.static_batch else args.batch, 3, *spec.input_size],
            "opset": args.opset,
            "exporter": args.exporter,
            "onnx_bytes": onnx_tmp.stat().st_size,
            "parity_tolerance": {"atol": 1e-4, "rtol": 1e-3, "precision": "fp32",
                                 "rule": "max|ort - torch| <= max(atol, 4 x torch_fp32_noise) + rtol * max|torch| per output "
                                 "tensor; torch_fp32_noise = max|torch float32 - torch float64| on the same input"},
            "parity": parity,
            "latency_onnxruntime_cpu": latency,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "weights": "checkpoint" if args.checkpoint else "random init, BatchNorm statistics calibrated on random batches",
            "versions": ox.library_versions(),
            **extras.report,
        }
        if extras.failures:
            print(f"cdarts-export: error: {extras.failures[0]}; no files written", file=sys.stderr)
            return 1
        if failed:
            worst = max(failed, key=lambda p: p["max_abs"])
            print(
                f"cdarts-export: error: ONNX Runtime output {worst['name']} differs from PyTorch "
                f"(max abs {worst['max_abs']:.3g}, max rel {worst['max_rel']:.3g}) beyond the fp32 tolerance (see cdarts_deploy/parity.py); "
                "no files written",
                file=sys.stderr,
            )
            return 1
        report_tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        extra_files = extras.publish()
        publish(onnx_tmp, onnx_path)
        publish(report_tmp, report_path)
    finally:
        for tmp in (onnx_tmp, report_tmp):
            if tmp.exists():
                tmp.unlink()
        extras.cleanup()

    worst_abs = max(p["max_abs"] for p in parity)
    print(f"{onnx_path}  ({report['onnx_bytes'] / 1e6:.1f} MB)")
    print(f"  params          {sizes['params']:,}")
    print(f"  multiply-adds   {sizes['macs'] / 1e6:,.1f} M  (inclusive {sizes['macs_inclusive'] / 1e6:,.1f} M)")
    print(f"  input           {report['input_shape']}")
    print(f"  parity vs torch max abs {worst_abs:.2e} at batches {batches} (fp32 tolerance, see report)")
    if latency:
        print(
            f"  latency (ORT CPU, batch {latency['batch']}) median {latency['median_ms']:.2f} ms, "
            f"p90 {latency['p90_ms']:.2f} ms over {latency['iters']} runs"
        )
    for path in extra_files:
        print(f"  also            {path}")
    print(f"  report          {report_path}")
    return 0


def _quick_latency(session, batch, iters: int) -> dict | None:
    """A short latency sample for the report; `cdarts-profile` does the careful measurement."""
    import numpy as np

    if iters <= 0:
        return None
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: batch})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {
        "batch": int(batch.shape[0]),
        "iters": iters,
        "mean_ms": float(t.mean()),
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
    }


if __name__ == "__main__":
    sys.exit(main())
