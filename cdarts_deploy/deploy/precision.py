"""Reduced-precision ONNX files: FP16 (optionally mixed) and INT8 (for ONNX Runtime or for TensorRT).

Every file runs under ONNX Runtime on the CPU, which is how it is checked without a GPU; the FP16
and the TensorRT-target INT8 files are what TensorRT 10/11 builds strongly typed engines from.

* FP16: ONNX Runtime's float16 converter; graph inputs and outputs stay float32
  so callers feed the same arrays, and reductions/exponentials can stay FP32.
* INT8, two targets (:data:`INT8_TARGETS`), both calibrated on images from a folder:

  - ``onnxruntime`` (the default, for ONNX Runtime on the CPU): operator format (QLinearConv,
    QLinearAdd, QLinearConcat, QGemm, ...) with unsigned 8-bit activations and signed per-channel
    weights, the pairing ONNX Runtime's x86 kernels run fastest; by default the weights take 7 bits so
    that CPUs without VNNI, whose kernels add two products in a saturating 16-bit sum, compute the same
    results (the ``portable`` form; ``vnni`` keeps 8 bits: :mod:`cdarts_deploy.deploy.int8_cpu`), quantized after
    ONNX Runtime's own graph optimisation (BatchNorm folded, so the scales describe the tensors that
    are really computed).  The passes of :mod:`cdarts_deploy.deploy.int8_passes` first rewrite the float
    graph so that whole cells stay in 8 bits, each leaving the float results unchanged.
    The stem convolution and the classifier stay float (a tiny share of the work).
  - ``tensorrt``: explicit Q/DQ on the inputs of every op TensorRT runs in INT8 (convolutions, Gemm, Add,
    Concat, pools), symmetric signed INT8, per-channel weights, BatchNorm folded first
    (:mod:`cdarts_deploy.deploy.trt_qdq`).  ONNX Runtime runs this file too, but slowly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from cdarts_deploy.atomic_files import atomic_path, publish
from cdarts_deploy.data.image_files import IMAGE_SUFFIXES
from cdarts_deploy.data.image_reader import is_image_file, screen
from cdarts_deploy.deploy import int8_cpu as ic
from cdarts_deploy.deploy import ort, trt_qdq
from cdarts_deploy.deploy.timing import sample_host, settle
from cdarts_deploy.errors import UserError

#: Where an INT8 file is meant to run; decides its format (see the module docstring).
INT8_TARGETS = ("onnxruntime", "tensorrt")
#: Op types the ONNX Runtime target quantizes.  A quantized Relu (or Clip) is dropped by the quantizer, which
#: gives its input tensor its output range so that saturation does the Relu: exact only when it is that
#: tensor's sole consumer, so the ``private_relu_inputs`` pass gives such Relus a private input copy and any
#: left over stay float.  AveragePool is not in the list, but ONNX Runtime fuses the DequantizeLinear ->
#: AveragePool -> QuantizeLinear around it into its QLinearAveragePool when it creates a session.
ORT_INT8_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "Sigmoid", "Relu", "Clip",
                     "GlobalAveragePool", "MaxPool", "Pad")
#: Ops kept in FP32 by ``to_fp16(mixed=True)``: long reductions and exponentials lose most in half precision.
SENSITIVE_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt")


class PrecisionError(UserError):
    """Bad input for a precision conversion (missing calibration images, unreadable files)."""


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike, mixed: bool = True) -> list[str]:
    """Write an FP16 copy of ``src`` to ``dst``; returns the op types kept in FP32.

    Inputs and outputs stay float32.  ``mixed`` keeps :data:`SENSITIVE_OPS` in
    FP32 (with casts around them); otherwise every float op is converted.
    """
    model = onnx.load(str(src))
    kept = sorted(set(SENSITIVE_OPS) & {n.op_type for n in model.graph.node}) if mixed else []
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + kept)
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    return kept


# Calibration images


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted), or :class:`PrecisionError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrecisionError(f"calibration folder {folder} does not exist; pass --calib-dir with a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))  # no hidden or ._ files
    if not files:
        raise PrecisionError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add a few hundred "
            "representative images"
        )
    return files


def load_image(
    path: str | os.PathLike,
    input_hw: tuple[int, int],
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> np.ndarray:
    """One RGB image as a normalized CHW float32 array: shorter side resized, then centre-cropped."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            h, w = input_hw
            scale = max(h / img.height, w / img.width)
            resized = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.BILINEAR)
            left, top = (resized.width - w) // 2, (resized.height - h) // 2
            arr = np.asarray(resized.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise PrecisionError(f"cannot read image {path} ({exc.__class__.__name__}); remove it or replace it") from None
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_images(
    folder: str | os.PathLike,
    input_hw: tuple[int, int],
    limit: int | None = None,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    bad_images: str = "fail",
) -> np.ndarray:
    """Up to ``limit`` images of ``folder`` as one NCHW float32 batch, normalized with ``mean``/``std``; a file that
    does not decode stops the load (``bad_images="fail"``) or is left out (``"skip"``)."""
    files = screen(image_files(folder), bad_images, "--calib-dir", limit=limit)
    if not files:
        raise PrecisionError(f"no image in {folder} decodes; add a few hundred representative images")
    return np.stack([load_image(f, input_hw, mean, std) for f in files])


def normalization(model: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std a timm model was trained with (its ``pretrained_cfg``).

    CIFAR-layout networks use the CIFAR statistics, ImageNet-layout and chain networks ImageNet's;
    a model without a ``pretrained_cfg`` gets ImageNet's.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_DEFAULT_MEAN)), tuple(cfg.get("std", IMAGENET_DEFAULT_STD))


def split_held_out(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint calibration and held-out halves (alternate images, so both see every kind of picture)."""
    if len(images) < 2:
        raise PrecisionError(f"INT8 needs at least 2 images (calibration and held-out), found {len(images)}")
    return images[0::2], images[1::2]


class ImageBatchReader(CalibrationDataReader):
    """ONNX Runtime calibration data reader over an NCHW array, ``batch`` images at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int = 8) -> None:
        self.images, self.input_name, self.batch = images, input_name, batch
        self._iter: Iterator[dict] | None = None

    def _batches(self) -> Iterator[dict]:
        for start in range(0, len(self.images), self.batch):
            yield {self.input_name: self.images[start : start + self.batch]}

    def get_next(self) -> dict | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def float_ends(model: Any) -> list[str]:
    """The first convolution (on the 3-channel image) and the last linear layer (the classifier) of a ModelProto."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    linear = [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    return convs[:1] + linear[-1:]


def quantize_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: np.ndarray,
    per_channel: bool | None = None,
    method: str = "minmax",
    target: str = "onnxruntime",
    float_depthwise: bool = False,
    keep_ends_float: bool = True,
    rewrite: bool = True,
    pools_as_convs: bool = False,
    gates: bool = True,
    cpu: str | None = None,
    portable_weights: str | None = None,
    cpu_reason: str | None = None,
    passes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write an INT8 copy of ``src`` to ``dst`` for ``target``, calibrated on ``calibration`` (NCHW float32).

    Returns the settings used (for the report).  ONNX Runtime target: the passes of
    :data:`~cdarts_deploy.deploy.int8_passes.PASSES` named by ``passes`` (None: all) rewrite the float graph
    first, and the quantized one after; the list of passes with the rewrites each made goes into the settings
    and the file's metadata_props.  ``rewrite`` off turns every pass off (shared-input Relus stay float);
    ``float_depthwise`` keeps depthwise convolutions in float (no channel padding); ``pools_as_convs`` turns
    average pools into depthwise convolutions (which form runs faster depends on the network and the
    batch, so off here; :func:`quantize_int8_fastest_pools` times both forms and keeps the faster); ``gates`` keeps
    squeeze-excitation gates in 8 bits and tiles them;
    ``cpu`` (ONNX Runtime target only; default ``portable``) is the x86-64 CPU form of
    :mod:`cdarts_deploy.deploy.int8_cpu`: ``portable`` stores the weights so that CPUs without VNNI sum them
    exactly (``portable_weights``: ``7bit`` or ``uint8``, default
    :data:`~cdarts_deploy.deploy.int8_cpu.PORTABLE_WEIGHTS`), ``vnni`` full 8-bit weights; the form (and
    ``cpu_reason``) is written into the file's metadata_props and the file is refused before it is published if
    its weights do not honour it;
    ``keep_ends_float`` keeps the stem convolution and the classifier in float (a tiny share of the
    multiply-adds; results in ``docs/results/int8_*``).  ``per_channel``
    None picks the target's default (per-channel; the TensorRT target is always per-channel).  The model is first
    prepared with ONNX Runtime's pre-processing (shape inference; for the ONNX Runtime target also its graph
    optimisation, which folds BatchNorm into the convolutions) so that the scales apply to the
    tensors the runtime actually computes.
    """
    # the passes bring onnxscript: loaded for INT8 files only, not on every export's start-up
    import cdarts_deploy.deploy.int8_passes as passes_

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise PrecisionError(f"unknown calibration method {method!r}; use one of {', '.join(methods)}")
    if target not in INT8_TARGETS:
        raise PrecisionError(f"unknown INT8 target {target!r}; use one of {', '.join(INT8_TARGETS)}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PrecisionError(f"calibration data has shape {calibration.shape}; expected a non-empty NCHW batch")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    for_ort = target == "onnxruntime"
    if not for_ort and (cpu is not None or portable_weights is not None):
        raise PrecisionError("the INT8 CPU form applies to the ONNX Runtime target only; the TensorRT Q/DQ file is "
                             "symmetric int8 for the GPU")
    form = ic.DEFAULT_INT8_CPU if cpu is None else cpu
    if form not in ic.INT8_CPU_FORMS:
        raise PrecisionError(f"unknown INT8 CPU form {form!r}; use one of {', '.join(ic.INT8_CPU_FORMS)}")
    portable_weights = ic.PORTABLE_WEIGHTS if portable_weights is None else portable_weights
    if portable_weights not in ic.PORTABLE_WEIGHT_CHOICES:
        raise PrecisionError(f"unknown portable weight storage {portable_weights!r}; use one of "
                             f"{', '.join(ic.PORTABLE_WEIGHT_CHOICES)}")
    weights = ("int8 symmetric" if form == "vnni" else
               "int8 symmetric 7-bit (reduce_range)" if portable_weights == "7bit" else "uint8 (zero point 128)")
    if not for_ort:  # TensorRT's placement: trt_qdq (per-channel weights, BatchNorm folded)
        return trt_qdq.quantize_for_tensorrt(src, dst, calibration, method)
    per_channel = True if per_channel is None else per_channel

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_optimization=not for_ort, skip_symbolic_shape=True)
        out_tmp = Path(work) / "int8.onnx"
        state, records = passes_.PassState(), []
        if for_ort:
            graph = onnx.load(str(prepared))
            enabled = passes_.enabled_passes(passes, rewrite, pools_as_convs, float_depthwise, gates)
            state, records = passes_.run_float_passes(graph, enabled)
            if any(r["rewrites"] for r in records):
                onnx.save(graph, str(prepared))
            excluded = [*(passes_.depthwise_convs(graph) if float_depthwise else []),
                        *(float_ends(graph) if keep_ends_float else []), *passes_.shared_input_relus(graph)]
            options: dict[str, Any] = dict(
                quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                # 7-bit weights: no pair of u8*s8 products leaves the 16-bit sum of CPUs without VNNI
                reduce_range=form == "portable" and portable_weights == "7bit",
                nodes_to_exclude=excluded, op_types_to_quantize=list(ORT_INT8_OP_TYPES),
                # the pools' border factors at scales that hold them exactly
                extra_options={"TensorQuantOverrides": {
                    name: [{"scale": np.float32(scale), "zero_point": np.uint8(0)}]
                    for name, scale in state.corrections.items()}},
            )
            settings = {"format": "QOperator", "activations": "uint8 asymmetric", "weights": weights, "int8_cpu": form,
                        "float_depthwise_convs": len(passes_.depthwise_convs(graph)) if float_depthwise else 0,
                        "float_stem_and_classifier": keep_ends_float}
        with warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            quantize_static(str(prepared), str(out_tmp), ImageBatchReader(calibration.astype(np.float32), input_name),
                            per_channel=per_channel, calibrate_method=methods[method], **options)
        if for_ort:
            quantized = onnx.load(str(out_tmp))
            records += passes_.run_quantized_passes(quantized, enabled, state)
            settings["passes"] = records
            passes_.stamp(quantized, records)
            if form == "portable" and portable_weights == "uint8":
                settings["uint8_weights"] = ic.weights_to_uint8(quantized)
            ic.stamp(quantized, form, weights, cpu_reason)
            # a file that claims to be portable but could saturate is never published
            settings["non_vnni_check"] = ic.verify(quantized, "the quantized INT8 file").as_dict()
            onnx.save(quantized, str(out_tmp))
        publish(out_tmp, dst)
    return {"target": target, **settings, "weight_granularity": "per-channel" if per_channel else "per-tensor",
            "calibration_method": method, "calibration_images": int(len(calibration))}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs harmless per-tensor warnings on the root logger (e.g. a 1-D BatchNorm
    weight it cannot quantize per channel); keep them off the command's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% for z=1.96); stays inside [0, 1] even at 0 or n successes."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def agreement(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement of ``candidate`` with ``reference`` (with its 95% Wilson interval) and the logit cosine."""
    ref = np.asarray(reference_logits, np.float64).reshape(len(reference_logits), -1)
    cand = np.asarray(candidate_logits, np.float64).reshape(len(candidate_logits), -1)
    agree = int((ref.argmax(1) == cand.argmax(1)).sum())
    low, high = wilson_interval(agree, len(ref))
    cosine = float((ref * cand).sum() / max(np.linalg.norm(ref) * np.linalg.norm(cand), 1e-30))
    return {"images": len(ref), "agree": agree, "top1_agreement": agree / len(ref),
            "wilson95": [round(low, 4), round(high, 4)], "logit_cosine": cosine}


def interleaved_medians(sessions: dict[str, Any], batch: np.ndarray, iters: int = 3,
                        rounds: int = 3) -> dict[str, float]:
    """Median ONNX Runtime latency (ms) of each session on ``batch``, timed in alternating rounds.

    Alternating rounds share out the load of other processes on a busy machine between the files; each
    block of timed runs follows :func:`~cdarts_deploy.deploy.timing.settle`, so that the session timed
    before it no longer competes for the cores.
    """
    def run(sess: Any) -> Any:
        return lambda: sess.run(None, {sess.get_inputs()[0].name: batch})

    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(rounds):
        for name, sess in (sessions.items() if i % 2 == 0 else reversed(sessions.items())):
            settle(run(sess))
            times[name].append(sample_host(run(sess), len(batch), warmup=0, iters=iters).median_ms)
    return {name: float(np.median(t)) for name, t in times.items()}


def speed_ratio(fp32_session: Any, int8_session: Any, batch: np.ndarray, iters: int = 3, rounds: int = 3) -> dict:
    """Median ONNX Runtime latency of both sessions on ``batch`` (:func:`interleaved_medians`) and fp32/int8."""
    medians = interleaved_medians({"fp32": fp32_session, "int8": int8_session}, batch, iters, rounds)
    f, q = medians["fp32"], medians["int8"]
    return {"batch": int(len(batch)), "fp32_median_ms": f, "int8_median_ms": q, "int8_speedup": f / q,
            "timed_runs_each": iters * rounds}


def average_pool_count(src: str | os.PathLike) -> int:
    """How many AveragePool nodes an ONNX file has."""

    return sum(n.op_type == "AveragePool" for n in onnx.load(str(src), load_external_data=False).graph.node)


def quantize_int8_fastest_pools(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: np.ndarray,
    batch: np.ndarray,
    threads: int | None = None,
    timer: Callable[[dict[str, Path], np.ndarray], dict[str, float]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`quantize_int8` for ONNX Runtime, with the average pools in whichever form runs faster on ``batch``.

    ONNX Runtime runs an 8-bit average pool with a generic kernel; as depthwise convolutions
    (``pools_as_convs``) the pools take its convolution kernels but add a factor multiply, and which is faster
    depends on the model and the batch (``docs/results/int8_speed_*``).  So, like a TensorRT builder choosing
    tactics, both files are made and timed here (``timer``: file paths and
    batch -> median ms; by default :func:`interleaved_medians` on ONNX Runtime sessions) and the faster one is
    kept at ``dst``.  Graphs without average pools, and other targets, get :func:`quantize_int8` as is.
    """
    if options.get("target", "onnxruntime") != "onnxruntime" or average_pool_count(src) == 0:
        return quantize_int8(src, dst, calibration, **options)
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as work:
        files = {"average_pools": Path(work) / "pools.onnx", "depthwise_convs": Path(work) / "convs.onnx"}
        made = {form: quantize_int8(src, path, calibration, **{**options, "pools_as_convs": form == "depthwise_convs"})
                for form, path in files.items()}
        if timer is None:
            def timer(paths: dict[str, Path], x: np.ndarray) -> dict[str, float]:
                sessions = {form: ort.session(path, threads) for form, path in paths.items()}
                return interleaved_medians(sessions, x, iters=10 if len(x) == 1 else 3, rounds=3)
        medians = timer(files, batch)
        chosen = min(medians, key=medians.get)
        publish(files[chosen], dst)
    return {**made[chosen], "pool_form": {"chosen": chosen, "batch": int(len(batch)),
                                          **{f"{form}_ms": round(ms, 3) for form, ms in medians.items()}}}
