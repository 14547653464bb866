"""Per-layer comparison of an ONNX file with PyTorch: which layer is the first to go wrong.

PyTorch side: forward hooks on every named module record its output (in execution order) for one
input; these "golden" tensors can be saved (``.npz``) and compared again with a later ONNX file.
ONNX side: every node is mapped to the module it was exported from (the tracing exporter names
nodes by module scope, ``/cells.3/ops.0/ops.0.1/Conv``; the dynamo exporter records the scopes in
the node metadata ``pkg.torch.onnx.name_scopes``), the last node of each module's scope provides the
module's output, and those tensors are added as graph outputs for one ONNX Runtime run.

Exporters fold a BatchNorm into the convolution before it, so the folded BatchNorm has no node of
its own and the convolution node computes the BatchNorm's output: such a pair is compared as one row
(``conv (+bn folded)``) against the BatchNorm's PyTorch output.

Each row is judged by the FP32 tolerance of :mod:`cdarts_deploy.deploy.parity` without the noise
term (``|ort - torch| <= atol + rtol * max|torch|``); the first failing row in execution order is
the first divergence.
"""

from __future__ import annotations

import ast
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch

from cdarts_deploy.atomic_files import write_with
from cdarts_deploy.deploy import ort, parity
from cdarts_deploy.deploy.ort import OnnxRuntimeError
from cdarts_deploy.errors import UserError

#: Metadata key in which the dynamo exporter records a node's module scopes.
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
#: Module kinds an exporter folds into the preceding layer (no node of their own).
FOLDED_KINDS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


class GoldenError(UserError):
    """A golden file that cannot be read or does not fit the ONNX file."""


@dataclass
class Golden:
    """One input and the PyTorch output of every named module on it, in execution order."""

    input: np.ndarray
    order: list[str]
    kinds: dict[str, str]
    outputs: dict[str, np.ndarray]

    def save(self, path: str | os.PathLike) -> None:
        arrays = {"input": self.input, "order": np.array(self.order), "kinds": np.array(
            [self.kinds[n] for n in self.order])}
        arrays.update({f"out:{name}": self.outputs[name] for name in self.order})
        write_with(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Golden":
        try:
            with np.load(path, allow_pickle=False) as data:
                order = [str(n) for n in data["order"]]
                kinds = dict(zip(order, (str(k) for k in data["kinds"])))
                outputs = {n: data[f"out:{n}"] for n in order}
                return cls(data["input"], order, kinds, outputs)
        # a truncated .npz is a bad zip archive, or a member whose compressed data ends early
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise GoldenError(f"cannot read golden file {path} ({exc.__class__.__name__}); write one with "
                              "cdarts-export --debug-layers") from None


def record_golden(model: Any, x: np.ndarray) -> Golden:
    """Run ``model`` on ``x`` with a forward hook on every named module; keep tensor outputs."""
    order: list[str] = []
    kinds: dict[str, str] = {}
    outputs: dict[str, np.ndarray] = {}
    handles = []

    def hook(name: str, kind: str):
        def fn(module: Any, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and name not in outputs:
                # copied now: a later in-place op (ReLU(inplace=True)) would change the tensor
                outputs[name] = out.detach().float().cpu().numpy().copy()
                order.append(name)
                kinds[name] = kind
        return fn

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name, type(module).__name__)))
    try:
        with torch.inference_mode():
            model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    return Golden(np.asarray(x, np.float32), order, kinds, outputs)


def node_module(node: Any, modules: set[str]) -> str | None:
    """The module ``node`` was exported from (a name in ``modules``), or None for top-level nodes."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                scopes = []
            for scope in reversed(scopes):
                if scope in modules:
                    return scope
    parts = [p for p in node.name.split("/")[:-1] if p]
    resolved: list[str] = []
    for part in parts:
        # each component is the module's name relative to one of the scopes above it (or the root)
        for base in [*reversed(resolved), ""]:
            candidate = f"{base}.{part}" if base else part
            if candidate in modules:
                resolved.append(candidate)
                break
    return resolved[-1] if resolved else None


def module_tensors(proto: Any, modules: Sequence[str]) -> dict[str, str]:
    """For each module with nodes in its scope: the ONNX tensor of its output (the scope's last node)."""
    names = set(modules)
    last: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type == "Constant" or not node.output:
            continue
        owner = node_module(node, names)
        while owner:  # the node belongs to its module and to every enclosing one
            last[owner] = node.output[0]
            owner = owner.rpartition(".")[0]
            while owner and owner not in names:
                owner = owner.rpartition(".")[0]
    return last


def expose(proto: Any, tensors: Sequence[str]) -> Any:
    """A copy of ``proto`` with ``tensors`` added as graph outputs (types from shape inference)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 -- the types are only a convenience; ONNX Runtime infers them too
        inferred = model
    infos = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name in present:
            continue
        present.add(name)
        if name in infos:
            model.graph.output.append(infos[name])
        else:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return model


@dataclass
class LayerReport:
    rows: list[dict]
    first_divergence: dict | None

    def as_dict(self) -> dict:
        return {"first_divergence": self.first_divergence, "layers": self.rows}


def compare_layers(golden: Golden, onnx_path: str | os.PathLike, threads: int | None = None) -> LayerReport:
    """Run ``onnx_path`` on the golden input with every module's tensor exposed; one row per comparable module."""
    try:
        proto = onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError, OSError, ...
        raise OnnxRuntimeError(f"{onnx_path} is not a readable ONNX file ({exc.__class__.__name__})") from None
    tensors = module_tensors(proto, golden.order)
    if not tensors:
        raise GoldenError(f"no node of {onnx_path} belongs to a module of the golden model; was it exported "
                          "from the same network?")
    rows_plan: list[tuple[str, str, str]] = []  # (label, module whose PyTorch output is compared, tensor)
    for i, name in enumerate(golden.order):
        if name not in tensors:
            continue
        target, label = name, name
        nxt = golden.order[i + 1] if i + 1 < len(golden.order) else None
        leaf = not any(m.startswith(name + ".") for m in golden.order)
        if leaf and nxt and golden.kinds.get(nxt) in FOLDED_KINDS and nxt not in tensors:
            target, label = nxt, f"{name} (+{nxt.rpartition('.')[2] or nxt} folded)"
        rows_plan.append((label, target, tensors[name]))
    exposed = expose(proto, sorted({t for _, _, t in rows_plan}))
    # no graph rewriting, so every exposed tensor is computed as exported
    session = ort.session(exposed.SerializeToString(), threads, optimize=False)
    wanted = [o.name for o in session.get_outputs()]
    values = dict(zip(wanted, session.run(wanted, {session.get_inputs()[0].name: golden.input})))
    tol = parity.TOLERANCES["fp32"]
    rows, first = [], None
    for label, target, tensor in rows_plan:
        ref, got = golden.outputs[target], values.get(tensor)
        if got is None or got.shape != ref.shape:
            continue  # e.g. a module returning a view the exporter reshaped; not comparable element by element
        result = parity.compare_tensor(label, ref, got, tol)
        row = {"layer": label, "onnx_tensor": tensor, **result.as_dict()}
        rows.append(row)
        if not result.passed and first is None:
            first = row
    return LayerReport(rows, first)


def format_table(report: LayerReport, limit: int = 40) -> str:
    """The per-layer error table (the first divergence and what follows it, or the worst layers)."""
    rows = report.rows
    if report.first_divergence is not None:
        start = rows.index(report.first_divergence)
        shown = rows[max(0, start - 3): start + limit - 3]
    else:
        shown = sorted(rows, key=lambda r: -r["max_abs"])[:limit]
    width = max([len(r["layer"]) for r in shown] + [5])
    lines = [f"{'layer':<{width}}  {'max_abs':>10}  {'cosine':>10}  ok"]
    for r in shown:
        mark = "<- first divergence" if r is report.first_divergence else ""
        lines.append(f"{r['layer']:<{width}}  {r['max_abs']:10.3e}  {r['cosine']:10.6f}  "
                     f"{'yes' if r['passed'] else 'NO'} {mark}".rstrip())
    return "\n".join(lines)


def summary(report: LayerReport) -> str:
    if report.first_divergence is None:
        return f"all {len(report.rows)} compared layers agree with PyTorch"
    r = report.first_divergence
    return (f"first divergent layer: {r['layer']} (max abs error {r['max_abs']:.3e}, cosine {r['cosine']:.6f}; "
            f"{len(report.rows)} layers compared)")


def golden_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}.golden.npz"
