# READY-FOR-EXTENSION (engineer E may extend this module for issue 3)
"""Build a model from a genotype, export it to ONNX and verify the file.

The steps are plain functions so that the command line (``export_cli``), the
profiler and tests can reuse them.  Every failure a user can cause raises
:class:`ExportError` with a one-line message that names the problem and the fix.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdarts_deploy.genotype import CellGenotype, Genotype

#: Operators that only make sense while training; an inference graph must not contain them.
TRAINING_ONLY_OPS = frozenset({"Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli"})


class ExportError(RuntimeError):
    """A problem the user can fix (bad checkpoint, bad option, unwritable folder)."""


@dataclass(frozen=True)
class NetworkSpec:
    """The concrete network a genotype is exported as, after hints and overrides."""

    layout: str | None
    width: int | None
    cells: int | None
    num_classes: int
    input_size: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "width": self.width,
            "cells": self.cells,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
        }


def resolve_spec(
    genotype: Genotype,
    layout: str | None = None,
    width: int | None = None,
    cells: int | None = None,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> NetworkSpec:
    """Combine command-line overrides, genotype hints and layout defaults (in that order)."""
    if isinstance(genotype, CellGenotype):
        from backbones.factory import resolve_cell_network

        net = resolve_cell_network(genotype, layout, width, cells, num_classes)
        size = input_size or (net["input_size"], net["input_size"])
        return NetworkSpec(net["layout"], net["width"], net["cells"], net["num_classes"], tuple(size))
    if layout or width or cells:
        raise ExportError("--layout, --width and --cells apply to cell genotypes only; drop them for a chain genotype")
    hints = genotype.network
    num_classes = num_classes or hints.num_classes or 1000
    size = input_size or ((hints.input_size,) * 2 if hints.input_size else (224, 224))
    return NetworkSpec(None, None, None, num_classes, tuple(size))


def build_model(genotype: Genotype, spec: NetworkSpec, **kwargs: Any) -> torch.nn.Module:
    """The timm-style model for ``genotype`` at ``spec``, in eval mode."""
    from backbones.factory import create_model_from_genotype

    if isinstance(genotype, CellGenotype):
        model = create_model_from_genotype(
            genotype, layout=spec.layout, width=spec.width, cells=spec.cells, num_classes=spec.num_classes, **kwargs
        )
    else:
        model = create_model_from_genotype(genotype, num_classes=spec.num_classes, **kwargs)
    return model.eval()


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict (bare, or under ``state_dict`` / ``model``) saved from the same timm model."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} not found; pass the path of a file saved with torch.save")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for corrupt or unsafe files
        # torch's own message advises weights_only=False, which is exactly what must not be done here
        raise ExportError(
            f"checkpoint {path} cannot be loaded safely: it is not a torch file of tensors only "
            "(torch.load with weights_only=True refused it); save it with torch.save(model.state_dict())"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError(
            f"checkpoint {path} holds no state_dict; expected a tensor dict, or one under 'state_dict' or 'model'"
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        detail = (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else
            f"{len(mismatched)} with another shape (e.g. {mismatched[0]}: "
            f"{tuple(state[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)})"
        )
        raise ExportError(
            f"checkpoint {path} does not fit this network: {detail} keys; "
            "check --layout/--width/--cells/--num-classes against the run that saved it"
        )
    model.load_state_dict(state, strict=True)


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, input_size: tuple[int, int], batches: int = 3, batch: int = 8) -> None:
    """Give a randomly initialised network real BatchNorm statistics.

    A deep random network in eval mode (running mean 0, variance 1) shrinks its activations layer by
    layer until the logits no longer depend on the input; a parity check on such a model proves
    nothing.  Averaging BN statistics over a few random batches keeps activations at unit scale.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    generator = torch.Generator().manual_seed(0)
    try:
        for _ in range(batches):
            model(torch.randn(batch, 3, *input_size, generator=generator))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()


def outputs_depend_on_input(outputs: list[np.ndarray]) -> bool:
    """Whether two different samples of a batch give different outputs (parity is meaningless otherwise)."""
    return any(o.shape[0] > 1 and not np.allclose(o[0], o[1], rtol=1e-4, atol=1e-6) for o in outputs)


EXPORTERS = ("dynamo", "torchscript")


def export_onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, int, int, int],
    opset: int = 18,
    dynamic_batch: bool = True,
    output_names: list[str] | None = None,
    exporter: str = "dynamo",
) -> None:
    """Export ``model`` to one self-contained ONNX file.

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


def check_onnx(path: str | os.PathLike) -> "Any":
    """Run onnx's full checker and reject training-only operators; returns the ModelProto."""
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    found = sorted({node.op_type for node in _all_nodes(proto.graph)} & TRAINING_ONLY_OPS)
    if found:
        raise ExportError(f"exported graph contains training-only operators {found}; export the model in eval mode")
    for node in _all_nodes(proto.graph):
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "training_mode" and attr.i:
                    raise ExportError("exported graph has BatchNormalization in training mode; export in eval mode")
    return proto


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)


def random_batch(batch: int, input_size: tuple[int, int], seed: int = 0, in_chans: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, in_chans, *input_size)).astype(np.float32)


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import timm

    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
