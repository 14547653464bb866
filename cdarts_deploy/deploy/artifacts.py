"""The deployment options of ``cdarts-export`` beyond the FP32 ONNX file (issue 3).

``--fp16``      FP16 ONNX (``<name>.fp16.onnx``), checked under ONNX Runtime at the FP16 tolerance
``--int8``      INT8 Q/DQ ONNX (``<name>.int8.onnx``) calibrated on ``--calib-dir``, judged by top-1 agreement
``--trt``       TensorRT engine (``<name>[.fp16|.int8].engine``) from the matching ONNX, checked against PyTorch
``--check``     parity across PyTorch / ONNX Runtime / TensorRT on random and real-image inputs
``--features``  multi-scale ``features_only`` model (``<name>.features.onnx``), checked output by output
``--plot``      cell diagrams or chain strip (PNG + SVG)

Everything is produced into temporary files first; :meth:`Extras.publish` renames
them into place only after every check passed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cdarts_deploy.atomic_files import publish, temp_beside


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("deployment (issue 3)")
    g.add_argument("--trt", action="store_true", help="also build a TensorRT engine (NVIDIA GPU and tensorrt needed)")
    g.add_argument("--fp16", action="store_true", help="also write an FP16 ONNX (and build the engine from it)")
    g.add_argument("--int8", action="store_true", help="also write an INT8 Q/DQ ONNX calibrated on --calib-dir")
    g.add_argument("--calib-dir", help="folder of images: INT8 calibration and the real-image inputs of --check")
    g.add_argument("--check", action="store_true", help="parity across PyTorch, ONNX Runtime and TensorRT, per tensor")
    g.add_argument("--features", action="store_true", help="also export the multi-scale features_only backbone")
    g.add_argument("--plot", action="store_true", help="draw the genotype (PNG and SVG)")
    g.add_argument("--max-batch", type=int, default=32, help="TensorRT profile's largest batch (default 32)")
    g.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MiB (default 1024)")


def wants_onnx(args: argparse.Namespace) -> bool:
    return bool(args.onnx or args.trt or args.fp16 or args.int8 or args.check or args.features)


def validate(args: argparse.Namespace) -> None:
    """Reject impossible option combinations before any work (raises ValueError, PrecisionError or TensorRTUnavailable)."""
    from cdarts_deploy.precision import image_files

    if args.fp16 and args.int8:
        raise ValueError("--fp16 and --int8 exclude each other; pick one precision")
    if args.int8 and not args.calib_dir:
        raise ValueError("--int8 needs --calib-dir DIR with a few hundred representative images")
    if args.calib_dir:
        image_files(args.calib_dir)
    if args.max_batch < max(1, args.batch):
        raise ValueError(f"--max-batch {args.max_batch} is below --batch {args.batch}")
    if args.trt:
        from cdarts_deploy.trt import require_tensorrt

        require_tensorrt()


@dataclass
class Extras:
    """Files waiting to be published and the report section describing them."""

    pending: list[tuple[Path, Path]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _dirs: list[Path] = field(default_factory=list)

    def temp(self, final: Path) -> Path:
        tmp = temp_beside(final)
        self.pending.append((tmp, final))
        return tmp

    def publish(self) -> list[Path]:
        for tmp, final in self.pending:
            publish(tmp, final)
        return [final for _, final in self.pending]

    def cleanup(self) -> None:
        for tmp, _ in self.pending:
            if tmp.exists():
                tmp.unlink()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def _parity_rows(label: str, precision: str, names, ref, out) -> list[dict]:
    from cdarts_deploy.parity import compare_outputs

    return [{"input": label, "precision": precision, **r.as_dict()} for r in compare_outputs(names, ref, out, precision)]


def build_extras(
    args: argparse.Namespace,
    genotype,
    model,
    spec,
    onnx_fp32: Path,
    out_dir: Path,
    name: str,
    log: Callable[[str], None],
) -> Extras:
    """Produce every requested artifact next to ``out_dir`` (unpublished) and check it."""
    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy import parity
    from cdarts_deploy import precision as pr

    ex = Extras()
    hw = tuple(spec.input_size)
    images = pr.load_images(args.calib_dir, hw, limit=256) if args.calib_dir else None
    inputs = {f"random b{b}": ox.random_batch(b, hw, seed=10 + b) for b in sorted({1, args.batch})}
    if images is not None:
        inputs["images"] = images[:64]
    refs = {label: parity.torch_outputs(model, x) for label, x in inputs.items()}
    onnx_files = {"fp32": onnx_fp32}

    if args.fp16:
        log("writing the FP16 ONNX")
        dst = ex.temp(out_dir / f"{name}.fp16.onnx")
        kept = pr.to_fp16(onnx_fp32, dst)
        onnx_files["fp16"] = dst
        ex.report["fp16"] = {"file": f"{name}.fp16.onnx", "kept_fp32_ops": kept}
    if args.int8:
        log(f"calibrating the INT8 Q/DQ ONNX on {len(images)} images from {args.calib_dir}")
        dst = ex.temp(out_dir / f"{name}.int8.onnx")
        pr.quantize_int8(onnx_fp32, dst, images)
        onnx_files["int8"] = dst
        session = parity.onnxruntime_session(str(dst), threads=args.threads)
        agreement = pr.top1_agreement(parity.torch_outputs(model, images)[0], parity.onnxruntime_outputs(session, images)[0])
        ex.report["int8"] = {"file": f"{name}.int8.onnx", "calibration_images": len(images),
                             "top1_agreement_onnxruntime": agreement, "min_top1_agreement": parity.INT8_MIN_TOP1}
        if agreement < parity.INT8_MIN_TOP1:
            ex.failures.append(f"INT8 ONNX agrees with PyTorch on top-1 for {agreement:.0%} of the calibration images "
                               f"(need {parity.INT8_MIN_TOP1:.0%})")

    # ONNX Runtime parity of every reduced-precision file (the FP32 file is checked by the caller)
    check_rows: list[dict] = []
    for precision, path in onnx_files.items():
        if precision == "fp32" and not args.check:
            continue
        session = parity.onnxruntime_session(str(path), threads=args.threads)
        names = [o.name for o in session.get_outputs()]
        for label, x in inputs.items():
            out = parity.onnxruntime_outputs(session, x)
            if precision == "int8":
                check_rows.append({"runtime": "onnxruntime", "input": label, "precision": "int8",
                                   "top1_agreement": pr.top1_agreement(refs[label][0], out[0])})
                continue
            check_rows += [{"runtime": "onnxruntime", **r} for r in _parity_rows(label, precision, names, refs[label], out)]

    if args.trt:
        from cdarts_deploy.trt import TensorRTRunner, build_engine

        precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
        suffix = "" if precision == "fp32" else f".{precision}"
        engine = ex.temp(out_dir / f"{name}{suffix}.engine")
        log(f"building the TensorRT {precision} engine")
        info = build_engine(onnx_files[precision], engine, hw, precision, min_batch=1, opt_batch=args.batch,
                            max_batch=args.max_batch, workspace_mb=args.workspace_mb)
        ex.report["tensorrt"] = {**info.as_dict(), "path": f"{name}{suffix}.engine"}
        runner = TensorRTRunner(engine)
        for label, x in inputs.items():
            out = runner.run(x)
            if precision == "int8":
                check_rows.append({"runtime": "tensorrt", "input": label, "precision": "int8",
                                   "top1_agreement": pr.top1_agreement(refs[label][0], out[0])})
            else:
                check_rows += [{"runtime": "tensorrt", **r}
                               for r in _parity_rows(label, precision, runner.output_names, refs[label], out)]

    if args.features:
        ex.report["features"] = _export_features(args, genotype, model, spec, out_dir, name, inputs, ex, log)

    if args.plot:
        ex.report["pictures"] = _plots(genotype, out_dir, name, ex)

    failed = [r for r in check_rows if r.get("passed") is False]
    for r in failed:
        ex.failures.append(f"{r['runtime']} {r['precision']} output {r['name']} on {r['input']} differs from PyTorch "
                           f"(max abs {r['max_abs']:.3g}, cosine {r['cosine']:.6f})")
    for r in check_rows:
        if "top1_agreement" in r and r["input"] == "images" and r["top1_agreement"] < parity.INT8_MIN_TOP1:
            ex.failures.append(f"{r['runtime']} INT8 top-1 agreement {r['top1_agreement']:.0%} on the images")
    if check_rows:
        ex.report["check"] = {"reference": "PyTorch FP32 eager", "tolerances": parity.tolerance_table(),
                              "results": check_rows}
    return ex


def _copy_weights(full, features) -> None:
    """Give the features_only model the (possibly checkpoint) weights of the full model."""
    source = full.state_dict()
    state = {}
    for key in features.state_dict():
        for candidate in (key, key.removeprefix("model.")):
            if candidate in source:
                state[key] = source[candidate]
                break
        else:
            raise RuntimeError(f"features model weight {key} has no counterpart in the full model")
    features.load_state_dict(state, strict=True)


def _export_features(args, genotype, model, spec, out_dir: Path, name: str, inputs: dict, ex: Extras, log) -> dict:
    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy import parity

    log("exporting the multi-scale features model")
    feat = ox.build_model(genotype, spec, features_only=True)
    _copy_weights(model, feat)
    info = feat.feature_info
    names = [f"feature_s{r}" for r in info.reduction()]
    dst = ex.temp(out_dir / f"{name}.features.onnx")
    ox.export_onnx(feat, dst, (args.batch, 3, *spec.input_size), opset=args.opset, output_names=names,
                   dynamic_batch=not args.static_batch, exporter=args.exporter)
    ox.check_onnx(dst)
    session = parity.onnxruntime_session(str(dst), threads=args.threads)
    rows = []
    for label, x in inputs.items():
        if args.static_batch and x.shape[0] != args.batch:
            continue
        ref = parity.torch_outputs(feat, x)
        rows += _parity_rows(label, "fp32", [o.name for o in session.get_outputs()], ref,
                             parity.onnxruntime_outputs(session, x))
    for r in rows:
        if not r["passed"]:
            ex.failures.append(f"features output {r['name']} on {r['input']} differs from PyTorch "
                               f"(max abs {r['max_abs']:.3g})")
    return {"file": f"{name}.features.onnx", "outputs": names, "channels": list(info.channels()),
            "reductions": list(info.reduction()), "parity": rows}


def _plots(genotype, out_dir: Path, name: str, ex: Extras) -> list[str]:
    from cdarts_deploy.plot import plot_genotype

    staging = Path(tempfile.mkdtemp(prefix=".plots-", dir=out_dir))
    ex._dirs.append(staging)
    files = plot_genotype(genotype, staging, stem=name)
    for f in files:
        ex.pending.append((f, out_dir / f.name))
    return [f.name for f in files]


def plot_only(genotype, out_dir: Path, name: str) -> list[Path]:
    """``cdarts-export GENOTYPE --plot`` without an export: just the pictures."""
    ex = Extras()
    try:
        _plots(genotype, out_dir, name, ex)
        return ex.publish()
    finally:
        ex.cleanup()
