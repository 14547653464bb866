"""Export a PyTorch model to one self-contained ONNX file and check the graph.

The check is onnx's full checker plus a scan for operators that only make sense while training:
an inference graph holding them was exported in the wrong mode.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from typing import Any, Iterator

import onnx
import torch

from cdarts_deploy.deploy.model_spec import ExportError

#: Operators that only make sense while training; an inference graph must not contain them.
TRAINING_ONLY_OPS = frozenset({"Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike",
                               "Bernoulli"})

EXPORTERS = ("dynamo", "torchscript")
#: The tracing exporter: several times faster to run and the graph ONNX Runtime quantizes best; the commands'
#: ``--exporter`` default too.
DEFAULT_EXPORTER = "torchscript"


class GraphCheckError(RuntimeError):
    """The exported graph failed the checker or holds training-only operators (a failed verification)."""


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, int, int, int],
    opset: int = 18,
    dynamic_batch: bool = True,
    output_names: list[str] | None = None,
    exporter: str = DEFAULT_EXPORTER,
) -> None:
    """Export ``model`` to one self-contained ONNX file with one input named ``input``.

    ``dynamo`` is torch's current exporter (torch.export + onnxscript); ``torchscript`` is the older
    tracing exporter, several times faster to run and still what many deployment stacks expect.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    example = torch.randn(*input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the result is verified afterwards
        if exporter == "torchscript":
            names = output_names or [f"output{i}" for i in range(_count_outputs(model, example))]
            axes = {n: {0: "batch"} for n in ["input", *names]} if dynamic_batch else None
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, input_names=["input"], output_names=names,
                dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
            )
            return
        dynamic_shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines to stdout
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["input"], output_names=output_names,
                opset_version=opset, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
            )
            program.save(str(path), external_data=False)


def _count_outputs(model: torch.nn.Module, example: torch.Tensor) -> int:
    out = model(example)
    return 1 if isinstance(out, torch.Tensor) else len(out)


def check_onnx(path: str | os.PathLike) -> Any:
    """Run onnx's full checker and reject training-only operators; returns the ModelProto."""
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GraphCheckError(f"the exported graph fails onnx's checker ({first[:200]})") from None
    found = sorted({node.op_type for node in _all_nodes(proto.graph)} & TRAINING_ONLY_OPS)
    if found:
        raise GraphCheckError(f"exported graph contains training-only operators {found}; export the model in eval mode")
    for node in _all_nodes(proto.graph):
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "training_mode" and attr.i:
                    raise GraphCheckError("exported graph has BatchNormalization in training mode; export in eval mode")
    return proto


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
