"""The layers of a built TensorRT engine with the precision each runs in, from the engine inspector's JSON
(engines built with detailed profiling verbosity, Polygraphy's default), and the check that an engine built for
FP16 or INT8 really computes in that precision.

The inspector's JSON differs between TensorRT versions: TensorRT 10 gives each layer input/output one
``"Format/Datatype"`` string (``"Int8 NC/32HW32"``, ``"Row major linear FP32"``), TensorRT 11 two fields,
``"Datatype"`` (``"Int8"``, ``"Float"``, ``"Half"``) and ``"Format"``; both are read.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

#: Words of the inspector's datatype strings, in the order they are looked for.
_DATATYPES = (("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("bf16", "bf16"), ("half", "fp16"), ("fp16", "fp16"),
              ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("float", "fp32"), ("fp32", "fp32"))
#: Layer types that carry the multiply-adds: the ones whose precision decides what an engine computes in.
#: TensorRT 10/11 name them after the kernel family (``CaskConvolution``, ``CaskGemmConvolution``, ``gemm``,
#: ``MatrixMultiply``, ...).
_COMPUTE_WORDS = ("convolution", "gemm", "matrixmultiply", "matmul", "fullyconnected")
#: What each asked precision accepts in its compute layers.  INT8 engines may keep a few layers in higher
#: precision (TensorRT's choice for the first or last layer), but not most: see :func:`check_precision`.
ACCEPTED = {"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("int8",)}
#: Share of compute layers that must run in the asked precision (the stem and classifier may stay float).
MIN_SHARE = 0.75


class EngineBuildError(RuntimeError):
    """TensorRT rejected an exported ONNX file or could not build an engine (a failed export, exit 1)."""


class EnginePrecisionError(EngineBuildError):
    """An engine whose compute layers do not run in the precision it was built for (wrong ONNX file or flags)."""


def _precision_of(datatype: str) -> str:
    low = datatype.lower()
    return next((label for word, label in _DATATYPES if word in low), datatype or "unknown")


def _datatype(tensor: dict) -> str:
    """TensorRT 10: ``Format/Datatype``; TensorRT 11: ``Datatype`` (or ``DataType``) beside ``Format``."""
    if "Format/Datatype" in tensor:
        return str(tensor["Format/Datatype"])
    return str(tensor.get("Datatype") or tensor.get("DataType") or "")


def layer_table(info_json: str) -> list[dict]:
    """Layers of an engine from ``IEngineInspector.get_engine_information(JSON)``: name, type, the precision of
    its first output (its inputs' where it has no output), that of its first input, tactic, raw datatypes."""
    try:
        info = json.loads(info_json)
    except ValueError:
        return []
    rows: list[dict] = []
    for layer in info.get("Layers", []) if isinstance(info, dict) else []:
        if isinstance(layer, str):  # without detailed verbosity the inspector gives names only
            rows.append({"name": layer, "type": None, "precision": "unknown"})
            continue
        if not isinstance(layer, dict):
            continue
        outputs = [_datatype(o) for o in layer.get("Outputs", []) if isinstance(o, dict)]
        inputs = [_datatype(i) for i in layer.get("Inputs", []) if isinstance(i, dict)]
        formats = outputs or inputs
        rows.append({"name": layer.get("Name", "?"), "type": layer.get("LayerType"),
                     "precision": _precision_of(formats[0]) if formats else "unknown",
                     "input_precision": _precision_of(inputs[0]) if inputs else "unknown",
                     "tactic": layer.get("TacticName", layer.get("TacticValue")), "inputs": inputs, "outputs": outputs})
    return rows


def precision_counts(layers: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def is_compute(layer: dict) -> bool:
    kind = str(layer.get("type") or "").lower().replace("_", "")
    return any(word in kind for word in _COMPUTE_WORDS)


def check_precision(layers: Sequence[dict] | None, asked: str) -> dict[str, Any]:
    """Refuse an engine whose compute layers do not run in ``asked`` precision; return the evidence.

    A compute layer (convolution, GEMM) runs in the precision of its first input.  ``fp32``: none may take
    FP16/INT8 inputs; ``fp16``/``int8``: at least :data:`MIN_SHARE` of them must take that precision.  An engine
    without layer details (no inspector, names only) cannot show its precision and is refused as well.
    """
    if asked not in ACCEPTED:
        raise ValueError(f"unknown precision {asked!r}")
    compute = [layer for layer in layers or [] if is_compute(layer)]
    if not compute:
        raise EnginePrecisionError(
            f"cannot verify that the {asked} engine computes in {asked}: the engine inspector listed no convolution "
            "or GEMM layer with its datatypes (build with detailed profiling verbosity)")
    ok = [layer for layer in compute if layer.get("input_precision") in ACCEPTED[asked]]
    wrong = [layer for layer in compute if layer.get("input_precision") not in ACCEPTED[asked]]
    share = len(ok) / len(compute)
    evidence = {"asked": asked, "compute_layers": len(compute), "in_asked_precision": len(ok),
                "share": round(share, 4), "other": precision_counts(
                    [{"precision": layer.get("input_precision", "unknown")} for layer in wrong])}
    passed = not wrong if asked == "fp32" else share >= MIN_SHARE
    if not passed:
        names = ", ".join(f"{layer['name']} ({layer.get('input_precision')})" for layer in wrong[:3])
        raise EnginePrecisionError(
            f"the engine was built for {asked} but {len(wrong)} of {len(compute)} convolution/GEMM layers run in "
            f"another precision ({names}{', ...' if len(wrong) > 3 else ''}); for int8 build from the Q/DQ file "
            "(--int8-target tensorrt), for fp16 from the FP16 ONNX file")
    return {**evidence, "passed": True}


def inspect_engine(engine: Any, trt: Any) -> list[dict] | None:
    """Every layer of a deserialized engine with its precision, or None where this TensorRT has no inspector."""
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return None
    inspector = engine.create_engine_inspector()
    return layer_table(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
