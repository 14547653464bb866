"""Files made from a verified FP32 ONNX model, each checked by the one parity rule before it is kept.

``fp16``      FP16 ONNX (``<name>.fp16.onnx``), ONNX Runtime at the FP16 tolerance
``int8``      INT8 ONNX (``<name>.int8.onnx``) for ONNX Runtime (operator format) or TensorRT (Q/DQ),
              calibrated on half the images, judged by top-1 agreement on the other half
``tensorrt``  TensorRT engine (``<name>[.fp16|.int8].engine``) from the matching ONNX
``check``     the FP32 file's rows on every input, next to the other runtimes' rows
``features``  multi-scale ``features_only`` model (``<name>.features.onnx``), checked output by output
``pictures``  cell diagrams or chain strip (PNG + SVG)
``eval_dir``  top-1/top-5 of PyTorch and of every file made, on the same ImageFolder images

Everything goes into the pipeline's staging area and is renamed into place only after every
check passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from timm.data import create_transform, resolve_data_config

from cdarts_deploy.data.image_reader import image_folder
from cdarts_deploy.deploy import int8_cpu as ic
from cdarts_deploy.deploy import ort, parity, rules
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy.model_spec import NetworkSpec, build_model, random_batch
from cdarts_deploy.deploy.pipeline import OnnxExport, Staging, Verified, export_and_compare
from cdarts_deploy.deploy.trt import build_engine, check_opt_level, check_timing_cache_path, require_tensorrt
from cdarts_deploy.deploy.trt_runner import EngineRunner
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import Genotype

#: Real images compared in the checks (the INT8 file's agreement uses every calibration image).
CHECK_IMAGES = 64


@dataclass(frozen=True)
class ArtifactRequest:
    """Which files to make besides the FP32 ONNX, and how."""

    fp16: bool = False
    int8: bool = False
    tensorrt: bool = False
    check: bool = False
    features: bool = False
    pictures: bool = False
    calibration: np.ndarray | None = None  # NCHW float32 images (INT8 calibration, real-image checks)
    calib_dir: str | None = None
    int8_target: str = "onnxruntime"
    int8_cpu: str | None = None  # portable | vnni | auto for the ONNX Runtime target (None: portable)
    int8_passes: str | None = None  # all | none | pass names, for the ONNX Runtime target (None: all)
    max_batch: int = 32
    workspace_mb: int = 1024
    threads: int | None = None
    trt_timing_cache: str | None = None  # TensorRT timing cache file, reused across builds
    trt_opt_level: int | None = None  # TensorRT builder optimization level 0-5 (None: TensorRT's default)
    eval_dir: str | None = None  # ImageFolder: top-1/top-5 of PyTorch and of every file made
    bad_images: str = "fail"  # fail | skip: what --calib-dir and --eval-dir do with a file that does not decode

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"


def validate(request: ArtifactRequest, batch: int) -> None:
    """Reject impossible combinations before any work (one-line :class:`UserError`)."""
    if request.fp16 and request.int8:
        raise UserError("--fp16 and --int8 exclude each other; pick one precision")
    if request.int8 and not request.calib_dir:
        raise UserError("--int8 needs --calib-dir DIR with a few hundred representative images")
    if request.int8_cpu is not None:
        if request.int8_cpu not in ic.INT8_CPU_CHOICES:
            raise UserError(f"--int8-cpu {request.int8_cpu!r}: use one of {', '.join(ic.INT8_CPU_CHOICES)}")
        if not request.int8:
            raise UserError("--int8-cpu chooses the form of the INT8 file; add --int8")
        if request.int8_target != "onnxruntime":
            raise UserError("--int8-cpu applies to the ONNX Runtime INT8 file; the TensorRT Q/DQ file (--int8-target "
                            "tensorrt) runs on the GPU and has no CPU form")
    if request.int8_passes is not None:
        from cdarts_deploy.deploy.int8_passes import Int8PassError, select_passes  # onnxscript: only when chosen

        if not request.int8 or request.int8_target != "onnxruntime":
            raise UserError("--int8-passes chooses the graph passes of the ONNX Runtime INT8 file; add --int8 "
                            "(and no --int8-target tensorrt)")
        try:
            select_passes(request.int8_passes)
        except Int8PassError as exc:
            raise UserError(f"--int8-passes: {exc}") from None
    if request.calib_dir:
        pr.image_files(request.calib_dir)
    if request.max_batch < max(1, batch):
        raise UserError(f"--max-batch {request.max_batch} is below --batch-size {batch}")
    if request.eval_dir:
        _image_folder(request.eval_dir, bad_images=request.bad_images)
    if (request.trt_timing_cache is not None or request.trt_opt_level is not None) and not request.tensorrt:
        raise UserError("--trt-timing-cache and --trt-opt-level apply to TensorRT builds; add --trt")
    if request.tensorrt:
        check_timing_cache_path(request.trt_timing_cache)
        check_opt_level(request.trt_opt_level)
        require_tensorrt()


def check_inputs(batches: list[int], input_size: tuple[int, int], images: np.ndarray | None) -> dict[str, np.ndarray]:
    """The named inputs every runtime is compared on: random batches, then real images if given."""
    inputs = {f"random b{b}": random_batch(b, input_size, seed=10 + b) for b in batches}
    if images is not None:
        inputs[parity.IMAGES] = images[:CHECK_IMAGES]
    return inputs


def build(request: ArtifactRequest, genotype: Genotype, model: torch.nn.Module, spec: NetworkSpec,
          export: OnnxExport, verified: Verified, staging: Staging, out_dir: Path, name: str,
          log: Callable[[str], None]) -> tuple[dict, list[str]]:
    """Produce every requested file into ``staging`` and check it; returns report entries and failures."""
    report: dict[str, Any] = {}
    failures: list[str] = []
    reference = verified.reference
    onnx_files = {"fp32": verified.path}
    rows: list[dict] = list(verified.rows) if request.check else []

    if request.fp16:
        log("writing the FP16 ONNX")
        dst = staging.temp(out_dir / f"{name}.fp16.onnx")
        kept = pr.to_fp16(verified.path, dst)
        onnx_files["fp16"] = dst
        report["fp16"] = {"file": f"{name}.fp16.onnx", "kept_fp32_ops": kept}
        rows += _onnxruntime_rows(dst, reference, "fp16", request.threads)
    if request.int8:
        onnx_files["int8"], report["int8"], more = _int8(request, model, verified, staging, out_dir, name,
                                                         export.input_shape[0], log)
        failures += more
        rows += _onnxruntime_rows(onnx_files["int8"], reference, "int8", request.threads)

    engine_runner = None
    if request.tensorrt:
        report["tensorrt"], trt_rows, engine_runner = _engine(request, onnx_files, reference, staging, out_dir, name,
                                                              export.input_shape[0], tuple(spec.input_size), log)
        rows += trt_rows

    if request.eval_dir:
        runners: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}
        for precision, path in onnx_files.items():
            session = ort.session(path, request.threads)
            runners[f"onnxruntime {precision}"] = (precision, lambda x, s=session: ort.run(s, x)[0])
        if engine_runner is not None:
            runners[f"tensorrt {request.precision}"] = (request.precision, lambda x: engine_runner.run(x)[0])
        log(f"evaluating PyTorch and {', '.join(runners)} on {request.eval_dir}")
        report["eval"] = evaluate_on_folder(model, request.eval_dir, runners, log=log, bad_images=request.bad_images)

    if request.features:
        report["features"], more = _features(genotype, model, spec, export, reference, staging, out_dir, name,
                                             request.threads, log)
        failures += more

    if request.pictures:
        report["pictures"] = pictures(genotype, out_dir, name, staging)

    failures += parity.failures(rows)
    if rows:
        report["check"] = {"reference": "PyTorch FP32 eager", "tolerances": parity.tolerance_table(),
                           "rule": parity.rule()["rule"], "results": rows}
    return report, failures


#: Timed runs per round and rounds of the INT8/FP32 speed comparison in the report (alternating rounds,
#: so that load from other processes hits both files alike).
SPEED_ITERS, SPEED_ROUNDS = 3, 3


def _int8(request: ArtifactRequest, model: torch.nn.Module, verified: Verified, staging: Staging, out_dir: Path,
          name: str, batch: int, log: Callable[[str], None]) -> tuple[Path, dict, list[str]]:
    """Quantize on one half of the images, judge top-1 agreement with PyTorch FP32 on the other half."""
    calibration, held_out = pr.split_held_out(request.calibration)
    log(f"calibrating the INT8 ONNX ({request.int8_target}) on {len(calibration)} images from {request.calib_dir}, "
        f"judging it on {len(held_out)} others")
    dst = staging.temp(out_dir / f"{name}.int8.onnx")
    x = request.calibration[:batch] if len(request.calibration) >= batch else calibration[:1]
    options: dict[str, Any] = {"target": request.int8_target}
    choice = None
    if request.int8_target == "onnxruntime":
        choice = ic.int8_cpu_choice(request.int8_cpu or ic.DEFAULT_INT8_CPU, ic.cpu_flags())
        options.update(cpu=choice["form"], cpu_reason=choice["reason"])
        if request.int8_passes is not None:
            from cdarts_deploy.deploy.int8_passes import select_passes  # onnxscript: only when chosen

            options["passes"] = select_passes(request.int8_passes)
        log(f"INT8 CPU form: {choice['form']} ({choice['reason']})")
    if verified.session is not None:  # ONNX Runtime runs here: the pools take the form that is faster at this batch
        settings = pr.quantize_int8_fastest_pools(verified.path, dst, calibration, x, request.threads, **options)
    else:
        settings = pr.quantize_int8(verified.path, dst, calibration, **options)
    if choice is not None:
        # the file as it will be kept: its recorded form, checked against its weights (a mismatch raises)
        check = ic.verify(dst, f"the INT8 file {name}.int8.onnx")
        settings["int8_cpu"] = {**choice, "weights": settings.get("weights"), "metadata_key": ic.METADATA_KEY,
                                "metadata": ic.metadata(dst), "non_vnni_check": check.as_dict()}
        settings.pop("non_vnni_check", None)
    session = ort.session(dst, request.threads)
    measured = pr.agreement(parity.torch_outputs(model, held_out)[0], ort.run(session, held_out)[0])
    section = {"file": f"{name}.int8.onnx", **settings, "held_out": measured,
               "min_top1_agreement": parity.INT8_MIN_TOP1}
    if verified.session is not None:
        section["speed_onnxruntime_cpu"] = pr.speed_ratio(verified.session, session, x, SPEED_ITERS, SPEED_ROUNDS)
    failures = []
    if measured["top1_agreement"] < parity.INT8_MIN_TOP1:
        failures.append(f"INT8 ONNX agrees with PyTorch on top-1 for {measured['top1_agreement']:.0%} of "
                        f"{measured['images']} held-out images (need {parity.INT8_MIN_TOP1:.0%})")
    return dst, section, failures


def _onnxruntime_rows(path: Path, reference: parity.TorchReference, precision: str,
                      threads: int | None) -> list[dict]:
    session = ort.session(path, threads)
    return parity.compare_runtime(reference, lambda x: ort.run(session, x), ort.output_names(session), precision)


def _engine(request: ArtifactRequest, onnx_files: dict[str, Path], reference: parity.TorchReference,
            staging: Staging, out_dir: Path, name: str, batch: int, hw: tuple[int, int],
            log: Callable[[str], None]) -> tuple[dict, list[dict]]:
    precision = request.precision
    suffix = "" if precision == "fp32" else f".{precision}"
    engine = staging.temp(out_dir / f"{name}{suffix}.engine")
    log(f"building the TensorRT {precision} engine (TF32 off: FP32 layers compute in FP32)")
    info = build_engine(onnx_files[precision], engine, hw, precision, min_batch=1, opt_batch=batch,
                        max_batch=request.max_batch, workspace_mb=request.workspace_mb,
                        timing_cache=request.trt_timing_cache, optimization_level=request.trt_opt_level)
    if info.layer_precisions:
        log("TensorRT engine layers by precision: " +
            ", ".join(f"{k} {v}" for k, v in info.layer_precisions.items()))
    runner = EngineRunner(engine)  # Polygraphy's TrtRunner, chunked over the engine's profiles
    same_file: dict = {}
    if precision == "int8":  # judged element-wise against ONNX Runtime CPU running the same quantized file
        cpu = ort.session(onnx_files["int8"], request.threads)
        same_file = {"int8_reference": lambda x: ort.run(cpu, x), "int8_steps": rules.output_steps(onnx_files["int8"])}
    rows = parity.compare_runtime(reference, runner.run, runner.output_names, precision, "tensorrt", **same_file)
    return {**info.as_dict(), "path": f"{name}{suffix}.engine"}, rows, runner


#: Least top-1 agreement with PyTorch on the evaluation images before a file is flagged, per precision.
EVAL_MIN_AGREEMENT = {"fp32": 0.995, "fp16": 0.99, "int8": 0.95}


def _image_folder(eval_dir: str | Path, transform: Any = None, bad_images: str = "fail") -> Any:
    """The ImageFolder over ``eval_dir`` (class folders may be empty) read by the one image reader
    (:mod:`cdarts_deploy.data.image_reader`), or a one-line :class:`UserError`."""
    folder = Path(eval_dir)
    if not folder.is_dir():
        raise UserError(f"--eval-dir {folder} is not a folder; give an ImageFolder (one sub-folder of images per "
                        "class)")
    try:
        dataset = image_folder(folder, bad_images, "--eval-dir", transform=transform, allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"--eval-dir {folder}: {str(exc).splitlines()[0][:160]}; give one sub-folder of images "
                        "per class") from None
    if len(dataset) == 0:
        raise UserError(f"--eval-dir {folder} holds no images in its class folders")
    return dataset


def evaluation_set(eval_dir: str | Path, model: torch.nn.Module, bad_images: str = "fail") -> tuple[Any, dict]:
    """The ImageFolder at ``eval_dir`` with timm's evaluation transform for ``model`` (resize, centre crop,
    the model's own mean/std from its ``pretrained_cfg``), and that transform's settings.

    Classes are the sub-folders in sorted order (index i = the model's output i), as in training.
    """
    cfg = resolve_data_config({}, model=model)
    dataset = _image_folder(eval_dir, create_transform(**cfg), bad_images)
    classes = getattr(model, "num_classes", None)
    if classes and len(dataset.classes) > classes:
        raise UserError(f"--eval-dir {eval_dir} has {len(dataset.classes)} class folders but the model has {classes} "
                        "outputs; evaluate with as many classes as the model predicts")
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    return dataset, settings


def evaluate_on_folder(model: torch.nn.Module, eval_dir: str | Path,
                       runners: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]], batch: int = 32,
                       log: Callable[[str], None] = lambda m: None, bad_images: str = "fail") -> dict:
    """Top-1/top-5 of PyTorch and of each runner (``name -> (precision, logits of an NCHW batch)``) on the same
    images, and each runner's top-1 agreement with PyTorch; a runner below :data:`EVAL_MIN_AGREEMENT` for its
    precision is flagged."""
    dataset, transform = evaluation_set(eval_dir, model, bad_images)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    names = ["pytorch", *runners]
    top1 = dict.fromkeys(names, 0)
    top5 = dict.fromkeys(names, 0)
    agree = dict.fromkeys(runners, 0)
    count, k = 0, None
    with torch.no_grad():
        for images, labels in loader:
            x, y = images.numpy().astype(np.float32), labels.numpy()
            logits = {"pytorch": parity.torch_outputs(model, x)[0]}
            logits.update({n: np.asarray(fn(x)) for n, (_, fn) in runners.items()})
            k = min(5, logits["pytorch"].shape[1])
            for n, out in logits.items():
                out = out.reshape(len(x), -1)
                best = np.argsort(-out, axis=1, kind="stable")[:, :k]
                top1[n] += int((best[:, 0] == y).sum())
                top5[n] += int((best == y[:, None]).any(1).sum())
                if n != "pytorch":
                    agree[n] += int((out.argmax(1) == logits["pytorch"].reshape(len(x), -1).argmax(1)).sum())
            count += len(x)
    results = {n: {"top1": top1[n] / count, f"top{k}": top5[n] / count} for n in names}
    flagged = []
    for n, (precision, _) in runners.items():
        results[n]["top1_agreement_with_pytorch"] = agree[n] / count
        results[n]["precision"] = precision
        minimum = EVAL_MIN_AGREEMENT.get(precision, 0.0)
        if agree[n] / count < minimum:
            flagged.append(f"{n} agrees with PyTorch on top-1 for {agree[n] / count:.1%} of {count} images "
                           f"(expected at least {minimum:.1%} for {precision}): top-1 {results[n]['top1']:.1%} "
                           f"vs PyTorch {results['pytorch']['top1']:.1%}")
    for line in flagged:
        log(f"FLAGGED: {line}")
    return {"dir": str(eval_dir), "images": count, "classes": list(dataset.classes), "transform": transform,
            "results": results, "min_top1_agreement": EVAL_MIN_AGREEMENT, "flagged": flagged}


def copy_weights(full: torch.nn.Module, features: torch.nn.Module) -> None:
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


def _features(genotype: Genotype, model: torch.nn.Module, spec: NetworkSpec, export: OnnxExport,
              reference: parity.TorchReference, staging: Staging, out_dir: Path, name: str, threads: int | None,
              log: Callable[[str], None]) -> tuple[dict, list[str]]:
    feat = build_model(genotype, spec, features_only=True)
    copy_weights(model, feat)
    info = feat.feature_info
    names = [f"feature_s{r}" for r in info.reduction()]
    feat_export = OnnxExport(export.input_shape, export.opset, export.dynamic_batch, export.exporter, names)
    feat_reference = parity.TorchReference(feat, reference.inputs)
    verified = export_and_compare(feat, staging.temp(out_dir / f"{name}.features.onnx"), feat_export,
                                  feat_reference, threads, log, what="features")
    section = {"file": f"{name}.features.onnx", "outputs": names, "channels": list(info.channels()),
               "reductions": list(info.reduction()), "parity": verified.rows}
    return section, verified.failures


def pictures(genotype: Genotype, out_dir: Path, name: str, staging: Staging) -> list[str]:
    """Draw ``genotype`` into a staging folder; the files join the staging area."""
    from cdarts_deploy.drawing import plot_genotype  # matplotlib only for --plot: cdarts-export starts faster

    folder = staging.folder(out_dir)
    files = plot_genotype(genotype, folder, stem=name)
    for f in files:
        staging.adopt(f, out_dir / f.name)
    return [f.name for f in files]


def pictures_only(genotype: Genotype, out_dir: Path, name: str) -> list[Path]:
    """``cdarts-export GENOTYPE --plot`` without an export: just the pictures."""
    with Staging() as staging:
        pictures(genotype, out_dir, name, staging)
        return staging.publish()
