"""INT8 ONNX files for TensorRT: explicit Q/DQ placed the way TensorRT's explicit quantization wants them.

TensorRT runs a layer in 8 bits when every data input of it comes from a DequantizeLinear (and its output
feeds a QuantizeLinear, or is fused into the next quantized layer).  Quantizing only the convolutions
leaves every residual Add, cell Concat and pool in FP32, with a reformat around each.  So the inputs of
every op TensorRT runs in INT8 get a Q/DQ pair here:

* convolutions, Gemm/MatMul: activations and weights; weights per output channel (axis 0, symmetric), the
  granularity TensorRT's INT8 convolutions use; biases stay float (TensorRT quantizes them itself);
* element-wise Add, Concat, MaxPool / AveragePool / GlobalAveragePool: their activation inputs.

BatchNorm is folded into the convolutions first (ONNX Runtime's basic graph optimisation, standard ONNX ops
only), so the weight scales describe the weights TensorRT computes with.  Activations are symmetric signed
INT8 (zero point 0), the only form TensorRT accepts.  :func:`qdq_coverage` lists the inputs of those ops that
have no DequantizeLinear producer (empty for a file this module writes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from cdarts_deploy.atomic_files import publish

#: Ops TensorRT runs in INT8 when their inputs are dequantized; each gets Q/DQ on its activation inputs.
INT8_OPS = ("Conv", "Gemm", "MatMul", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool")
#: Ops whose second input is a weight (quantized per output channel) and third a bias (kept float).
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}


class _Batches(CalibrationDataReader):
    def __init__(self, images: np.ndarray, input_name: str, batch: int = 8) -> None:
        self.images, self.input_name, self.batch = images, input_name, batch
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter([{self.input_name: self.images[i:i + self.batch]}
                         for i in range(0, len(self.images), self.batch)])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs every tensor it skips on the root logger and warns on each pre-processing step."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def quantize_for_tensorrt(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray,
                          method: str = "minmax") -> dict[str, Any]:
    """Write the Q/DQ INT8 copy of ``src`` to ``dst`` (published atomically), calibrated on ``calibration``.

    Returns the settings for the report, with the Q/DQ coverage of the written file.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as work:
        prepared, out = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        with _quiet():
            # basic optimisation folds BatchNorm into the convolution before it (standard ONNX ops only)
            quant_pre_process(str(src), str(prepared), skip_optimization=False, skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(out), _Batches(calibration.astype(np.float32), input_name),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                per_channel=True, calibrate_method=METHODS[method], op_types_to_quantize=list(INT8_OPS),
                extra_options={
                    "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                    # pools: quantize their input even where its producer is not quantized yet
                    "ForceQuantizeNoInputCheck": True,
                })
        coverage = qdq_coverage(onnx.load(str(out)))
        publish(out, dst)
    return {"target": "tensorrt", "format": "QDQ", "activations": "int8 symmetric",
            "weights": "int8 symmetric", "weight_granularity": "per-channel", "quantized_ops": list(INT8_OPS),
            "batchnorm_folded": True, "calibration_method": method, "calibration_images": int(len(calibration)),
            "unquantized_inputs": coverage["unquantized_inputs"], "per_tensor_weights": coverage["per_tensor_weights"]}


def _initializer_values(graph: Any) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # constant-folded scales may also come as Constant nodes
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def qdq_coverage(model: Any) -> dict[str, list[str]]:
    """Where a Q/DQ file falls short of TensorRT's INT8 placement.

    ``unquantized_inputs``: ``"node (op) input i"`` for each activation/weight input of an :data:`INT8_OPS` node
    with no DequantizeLinear producer; ``per_tensor_weights``: weighted nodes whose weight DequantizeLinear is not
    per channel along axis 0.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    values = _initializer_values(graph)
    missing, per_tensor = [], []
    for node in graph.node:
        if node.op_type not in INT8_OPS:
            continue
        data_inputs = node.input[:2] if node.op_type in WEIGHTED_OPS else node.input
        for i, name in enumerate(data_inputs):
            if not name:
                continue
            src = producer.get(name)
            if src is None or src.op_type != "DequantizeLinear":
                missing.append(f"{node.name or node.output[0]} ({node.op_type}) input {i}")
            elif node.op_type in WEIGHTED_OPS and i == 1:
                scale = values.get(src.input[1])
                axis = next((a.i for a in src.attribute if a.name == "axis"), 1)
                if scale is None or scale.ndim != 1 or scale.size < 2 or axis != 0:
                    per_tensor.append(node.name or node.output[0])
    return {"unquantized_inputs": missing, "per_tensor_weights": per_tensor}
