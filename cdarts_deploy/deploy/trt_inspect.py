"""The layers of a built TensorRT engine with the precision each runs in, from the engine inspector's JSON
(built with detailed profiling verbosity; TensorRT versions without an inspector give None)."""

from __future__ import annotations

import json
from typing import Any, Sequence

#: Words of the inspector's ``Format/Datatype`` strings, in the order they are looked for.
_DATATYPES = (("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("bf16", "bf16"), ("half", "fp16"), ("fp16", "fp16"),
              ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("float", "fp32"), ("fp32", "fp32"))


def _precision_of(datatype: str) -> str:
    low = datatype.lower()
    return next((label for word, label in _DATATYPES if word in low), datatype or "unknown")


def layer_table(info_json: str) -> list[dict]:
    """Layers of an engine from ``IEngineInspector.get_engine_information(JSON)``: name, type, the precision of
    its first output (its inputs' where it has no output), tactic, and the raw input/output formats."""
    try:
        info = json.loads(info_json)
    except ValueError:
        return []
    rows = []
    for layer in info.get("Layers", []) if isinstance(info, dict) else []:
        if isinstance(layer, str):  # without detailed verbosity the inspector gives names only
            rows.append({"name": layer, "type": None, "precision": "unknown"})
            continue
        outputs = [o.get("Format/Datatype", "") for o in layer.get("Outputs", []) if isinstance(o, dict)]
        inputs = [i.get("Format/Datatype", "") for i in layer.get("Inputs", []) if isinstance(i, dict)]
        formats = outputs or inputs
        rows.append({"name": layer.get("Name", "?"), "type": layer.get("LayerType"),
                     "precision": _precision_of(formats[0]) if formats else "unknown",
                     "tactic": layer.get("TacticName"), "inputs": inputs, "outputs": outputs})
    return rows


def precision_counts(layers: Sequence[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))



def inspect_layers(trt: Any, logger: Any, serialized: bytes) -> list[dict] | None:
    """Every layer of a serialized engine with its precision, or None where this TensorRT has no inspector."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return None
    inspector = engine.create_engine_inspector()
    return layer_table(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
