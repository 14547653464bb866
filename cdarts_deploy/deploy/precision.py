"""Reduced-precision ONNX files: FP16 (optionally mixed) and INT8 with explicit Q/DQ nodes.

Both are what TensorRT 10/11 builds strongly typed engines from, and both run
under ONNX Runtime on the CPU, which is how they are checked without a GPU.

* FP16: ONNX Runtime's float16 converter; graph inputs and outputs stay float32
  so callers feed the same arrays, and reductions/exponentials can stay FP32.
* INT8: ONNX Runtime's static QDQ quantization of convolutions and linear
  layers, calibrated on images from a folder.  Weights and activations are
  symmetric signed INT8 (zero point 0), the form TensorRT accepts; biases stay
  float.  Weights are per tensor by default: on the random-weight test networks
  ONNX Runtime's per-channel mode agreed far less with FP32 (see tests).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cdarts_deploy.atomic_files import atomic_path, publish
from cdarts_deploy.errors import UserError

#: Image file endings read from a calibration folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
#: Normalization of the timm ImageNet models (mean and std per RGB channel).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Ops kept in FP32 by ``to_fp16(mixed=True)``: long reductions and exponentials lose most in half precision.
SENSITIVE_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt")


class PrecisionError(UserError):
    """Bad input for a precision conversion (missing calibration images, unreadable files)."""


def _save_atomic(model, dst: str | os.PathLike) -> None:
    import onnx

    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike, mixed: bool = True) -> list[str]:
    """Write an FP16 copy of ``src`` to ``dst``; returns the op types kept in FP32.

    Inputs and outputs stay float32.  ``mixed`` keeps :data:`SENSITIVE_OPS` in
    FP32 (with casts around them); otherwise every float op is converted.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    kept = sorted(set(SENSITIVE_OPS) & {n.op_type for n in model.graph.node}) if mixed else []
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + kept
    )
    _save_atomic(converted, dst)
    return kept


# ---------------------------------------------------------------------------
# Calibration images
# ---------------------------------------------------------------------------


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted), or :class:`PrecisionError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrecisionError(f"calibration folder {folder} does not exist; pass --calib-dir with a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PrecisionError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add a few hundred "
            "representative images"
        )
    return files


def load_image(
    path: str | os.PathLike,
    input_hw: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """One RGB image as a normalized CHW float32 array: shorter side resized, then centre-cropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            h, w = input_hw
            scale = max(h / img.height, w / img.width)
            resized = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), Image.BILINEAR)
            left, top = (resized.width - w) // 2, (resized.height - h) // 2
            arr = np.asarray(resized.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise PrecisionError(f"cannot read image {path} ({exc.__class__.__name__}); remove it or replace it") from None
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_images(folder: str | os.PathLike, input_hw: tuple[int, int], limit: int | None = None) -> np.ndarray:
    """Up to ``limit`` images of ``folder`` as one NCHW float32 batch."""
    files = image_files(folder)[:limit]
    return np.stack([load_image(f, input_hw) for f in files])


class ImageBatchReader:
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


def quantize_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: np.ndarray,
    per_channel: bool = False,
    method: str = "minmax",
) -> None:
    """Write an INT8 Q/DQ copy of ``src`` to ``dst``, calibrated on ``calibration`` (NCHW float32).

    The model is first prepared with ONNX Runtime's pre-processing (shape
    inference, BatchNorm folded into the convolutions) so that the scales
    apply to the tensors the runtimes actually compute.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise PrecisionError(f"unknown calibration method {method!r}; use one of {', '.join(methods)}")
    if calibration.ndim != 4 or len(calibration) == 0:
        raise PrecisionError(f"calibration data has shape {calibration.shape}; expected a non-empty NCHW batch")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class _Reader(ImageBatchReader, CalibrationDataReader):
        pass

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        out_tmp = Path(work) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(out_tmp),
            _Reader(calibration.astype(np.float32), input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            # the layers TensorRT runs in INT8; biases stay float (TensorRT has no INT32 dequantization)
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        publish(out_tmp, dst)
