"""Runner against runner through Polygraphy's ``Comparator``, judged by this project's parity rule.

Polygraphy runs every runner on the same inputs (``Comparator.run``) and pairs their outputs by name
(``Comparator.compare_accuracy``); the judgement of each pair is :func:`cdarts_deploy.deploy.parity.compare_tensor`
with the tolerance of the candidate's precision, so a TensorRT engine, an ONNX Runtime session or any other
Polygraphy runner is held to the same rule as everywhere else, and the rows have the parity report's fields.

* :func:`compare_runners`: the graph outputs of a candidate against a reference, per output and input batch.
* :func:`compare_all_tensors`: every intermediate tensor too ("mark all" outputs), in graph order, with the first
  tensor that leaves the tolerance: where a candidate starts to go wrong.

ONNX Runtime runners (:func:`onnxrt_runner`) run on the CPU; :func:`tensorrt_runner` builds an engine on the
GPU with Polygraphy's loaders (TensorRT marks every layer output with ``mark_all``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from cdarts_deploy.deploy import parity
from cdarts_deploy.deploy.layer_compare import expose
from cdarts_deploy.deploy.trt import polygraphy_log, require_tensorrt

#: Tensor dtypes that are compared (integer shape tensors and masks are not activations).
_FLOATS = (np.float16, np.float32, np.float64)


def quiet() -> Any:
    """Polygraphy logs every activation, inference and verdict; the report here is ours (failures still raise)."""
    return polygraphy_log("CRITICAL")


def onnxrt_runner(model: str | os.PathLike | bytes | Any, name: str, mark_all: bool = False) -> Any:
    """Polygraphy's ONNX Runtime runner on the CPU for an ONNX path, bytes or ModelProto.

    ``mark_all``: every node output becomes a graph output (the file's own outputs stay first).
    """
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    proto = model if isinstance(model, onnx.ModelProto) else (
        onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model)))
    if mark_all:
        proto = mark_all_outputs(proto)
    return OnnxrtRunner(SessionFromOnnx(proto.SerializeToString(), providers=["cpu"]), name=name)


def tensorrt_runner(onnx_path: str | os.PathLike, name: str, mark_all: bool = False, tf32: bool = False) -> Any:
    """Polygraphy's TensorRT runner for an engine built from ``onnx_path`` (strongly typed; GPU only)."""
    trt = require_tensorrt()
    from polygraphy import constants
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        ModifyNetworkOutputs,
        NetworkFromOnnxPath,
        TrtRunner,
    )

    strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") or None
    network: Any = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed)
    if mark_all:
        network = ModifyNetworkOutputs(network, outputs=constants.MARK_ALL)
    return TrtRunner(EngineFromNetwork(network, CreateConfig(tf32=tf32)), name=name)


def mark_all_outputs(proto: Any) -> Any:
    """A copy of ``proto`` whose graph outputs are its own followed by every other node output."""
    tensors = [out for node in proto.graph.node if node.op_type != "Constant" for out in node.output if out]
    return expose(proto, tensors)


@dataclass
class Comparison:
    rows: list[dict]  # one per (input batch, tensor), parity report fields
    passed: bool  # Polygraphy's verdict over every pair, each judged by our rule

    @property
    def first_divergence(self) -> dict | None:
        return next((r for r in self.rows if not r["passed"]), None)


def _judge(precision: str, runtime: str, rows: list[dict], labels: Sequence[str],
           only: Sequence[str] | None, skip_missing: bool) -> Any:
    """A Polygraphy ``compare_func`` that applies the parity rule and keeps a row per compared tensor."""
    tol = parity.TOLERANCES[precision]
    count = {"n": 0}

    def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> OrderedDict:
        label = labels[count["n"]] if count["n"] < len(labels) else f"batch {count['n']}"
        count["n"] += 1
        verdicts: OrderedDict = OrderedDict()
        names = [n for n in (only if only is not None else reference.keys())]
        for name in names:
            if name not in reference or name not in candidate:
                if skip_missing:
                    continue
                rows.append({"runtime": runtime, "input": label, "name": name, "precision": precision,
                             "passed": False, "missing": True})
                verdicts[name] = False
                continue
            ref, got = np.asarray(reference[name]), np.asarray(candidate[name])
            if ref.dtype.type not in _FLOATS:
                continue
            result = parity.compare_tensor(name, ref, got, tol)
            rows.append({"runtime": runtime, "input": label, "precision": precision, **result.as_dict()})
            verdicts[name] = result.passed
        return verdicts

    return compare


def compare_runners(reference: Any, candidate: Any, feeds: Mapping[str, np.ndarray], precision: str = "fp32",
                    runtime: str | None = None, tensors: Sequence[str] | None = None,
                    skip_missing: bool = False) -> Comparison:
    """Run ``reference`` and ``candidate`` (Polygraphy runners) on each batch of ``feeds`` (label -> NCHW batch)
    and judge every output pair (or the ``tensors`` named, in that order) by the parity rule for ``precision``.

    An output one runner lacks fails, unless ``skip_missing`` (tensors a runtime fused away)."""
    from polygraphy.comparator import Comparator

    if precision not in parity.TOLERANCES:
        raise ValueError(f"unknown precision {precision!r}")
    labels = list(feeds)
    rows: list[dict] = []
    with quiet():
        with reference:
            input_name = next(iter(reference.get_input_metadata(use_numpy_dtypes=False)))
        loader = [OrderedDict([(input_name, np.ascontiguousarray(feeds[label], dtype=np.float32))])
                  for label in labels]
        results = Comparator.run([reference, candidate], data_loader=loader)
        verdict = Comparator.compare_accuracy(
            results, compare_func=_judge(precision, runtime or candidate.name, rows, labels, tensors, skip_missing))
    return Comparison(rows, bool(verdict) and bool(rows))


def compare_all_tensors(reference_onnx: str | os.PathLike, candidate: Any, batch: np.ndarray,
                        precision: str = "fp32", runtime: str | None = None) -> Comparison:
    """Every tensor of ``reference_onnx`` (ONNX Runtime, all outputs marked) against the same tensors of
    ``candidate`` (a runner with all outputs marked), in graph order; ``first_divergence`` is where it goes wrong.

    Tensors the candidate does not produce (fused away by its runtime) are skipped, not failed.
    """
    proto = onnx.load(str(reference_onnx))
    order = [out for node in proto.graph.node if node.op_type != "Constant" for out in node.output if out]
    reference = onnxrt_runner(proto, "reference", mark_all=True)
    return compare_runners(reference, candidate, {"batch": batch}, precision, runtime, tensors=order,
                           skip_missing=True)
