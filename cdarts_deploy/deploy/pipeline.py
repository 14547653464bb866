"""Export -> check -> compare -> report: the one path from a PyTorch model to verified files.

Every command that produces an ONNX file goes through here (``cdarts-export`` for classifiers,
feature backbones and reduced-precision files, ``cdarts-export-mm`` for detectors and segmentors,
``cdarts-profile`` when it needs an ONNX file to time):

1. export the model (:func:`cdarts_deploy.deploy.onnx_graph.export_onnx`) into a temporary file
   beside the destination;
2. check the graph (onnx's full checker, no training-only operators);
3. run it in ONNX Runtime on every named input and judge each output against PyTorch FP32 with
   the one rule of :mod:`cdarts_deploy.deploy.parity`;
4. only if everything passed, write the report and rename every file into place
   (:mod:`cdarts_deploy.atomic_files`); otherwise nothing is written.

:func:`export_verified` runs all four for a model judged output by output against PyTorch. A caller
that exports its own way or judges the file its own way (``cdarts-export-mm``: a traced graph with
NMS inside, compared by detection matching) runs the same steps itself: :func:`verify` (steps 1-3
with its export and comparison), then :func:`publish_with_report` (step 4), inside one
:class:`Staging`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from cdarts_deploy.atomic_files import publish_together, temp_beside
from cdarts_deploy.deploy import ort, parity
from cdarts_deploy.deploy.environment import environment
from cdarts_deploy.deploy.onnx_graph import DEFAULT_EXPORTER, GraphCheckError, check_onnx, export_onnx
from cdarts_deploy.deploy.timing import sample_host
from cdarts_deploy.deploy.versions import library_versions
from cdarts_deploy.errors import UserError

Log = Callable[[str], None]


class InputIndependentError(UserError):
    """The model's outputs do not depend on its input: no parity check can prove anything."""


@dataclass(frozen=True)
class OnnxExport:
    """How to export: example input shape, opset, batch dimension, exporter, output names."""

    input_shape: tuple[int, int, int, int]
    opset: int = 18
    dynamic_batch: bool = True
    exporter: str = DEFAULT_EXPORTER
    output_names: list[str] | None = None


@dataclass
class Staging:
    """Files produced into temporary paths beside their destinations, renamed into place together."""

    pending: list[tuple[Path, Path]] = field(default_factory=list)
    _folders: list[Path] = field(default_factory=list)

    def temp(self, final: str | os.PathLike) -> Path:
        """A temporary file that becomes ``final`` on :meth:`publish`."""
        tmp = temp_beside(final)
        self.pending.append((tmp, Path(final)))
        return tmp

    def folder(self, inside: str | os.PathLike) -> Path:
        """A temporary folder in ``inside`` for tools that write several files; removed by :meth:`cleanup`."""
        path = Path(tempfile.mkdtemp(prefix=".staging-", dir=inside))
        self._folders.append(path)
        return path

    def adopt(self, tmp: Path, final: Path) -> None:
        """Publish an already written temporary file (in the destination's file system) as ``final``."""
        self.pending.append((tmp, final))

    def publish(self) -> list[Path]:
        publish_together(self.pending)
        return [final for _, final in self.pending]

    def cleanup(self) -> None:
        for tmp, _ in self.pending:
            if tmp.exists():
                tmp.unlink()
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class Verified:
    """An exported, checked ONNX file (still temporary) and how it compared with PyTorch."""

    path: Path
    session: Any
    names: list[str]
    reference: parity.TorchReference | None  # None when the caller compared its own way
    rows: list[dict] | dict  # per-output parity rows, or the entries of the caller's comparison
    failures: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


#: Step 3 done the caller's way: the file's ONNX Runtime session -> (report entries, failures).
Compare = Callable[[Any], "tuple[list[dict] | dict, list[str]]"]


def verify(path: Path, export: Callable[[Path], None], compare: Compare, threads: int | None = None,
           reference: parity.TorchReference | None = None) -> Verified:
    """Steps 1-3 for one file: ``export`` writes ``path``, the graph is checked, ``compare`` judges it."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    export(path)
    seconds["export"] = _since(start)
    start = time.perf_counter()
    try:
        check_onnx(path)
    except GraphCheckError as exc:
        return Verified(path, None, [], reference, [], [str(exc)], seconds)
    seconds["check"] = _since(start)
    start = time.perf_counter()
    session = ort.session(path, threads)
    rows, failures = compare(session)
    seconds["parity"] = _since(start)
    return Verified(path, session, ort.output_names(session), reference, rows, failures, seconds)


def export_and_compare(model: torch.nn.Module, path: Path, export: OnnxExport,
                       reference: parity.TorchReference, threads: int | None = None, log: Log = lambda m: None,
                       what: str = "") -> Verified:
    """Steps 1-3 for one file: export to ``path``, check the graph, compare every input with PyTorch FP32."""
    log(f"exporting {what + ' ' if what else ''}ONNX ({export.exporter} exporter, opset {export.opset}, "
        f"{'dynamic' if export.dynamic_batch else 'static'} batch)")
    # PyTorch's side of the comparison first (part of the parity time): its outputs name the tracing
    # exporter's outputs, which would otherwise run the model once more just to count them
    start = time.perf_counter()
    names = export.output_names
    if names is None and export.exporter == "torchscript" and reference.inputs:
        names = [f"output{i}" for i in range(len(reference.outputs(next(iter(reference.inputs)))))]
    for label in reference.inputs:
        reference.noise(label)
    before = time.perf_counter() - start

    def write(dst: Path) -> None:
        export_onnx(model, dst, export.input_shape, opset=export.opset, dynamic_batch=export.dynamic_batch,
                    output_names=names, exporter=export.exporter)

    def compare(session: Any) -> tuple[list[dict], list[str]]:
        rows = parity.compare_runtime(reference, lambda x: ort.run(session, x), ort.output_names(session), "fp32")
        return rows, parity.failures(rows, what)

    verified = verify(path, write, compare, threads, reference)
    if "parity" in verified.seconds:
        verified.seconds["parity"] = round(verified.seconds["parity"] + before, 3)
    return verified


def publish_with_report(staging: Staging, report_final: Path, report: Mapping[str, Any],
                        default: Callable[[Any], Any] | None = None) -> list[Path]:
    """Step 4: the report joins the staged files (last, so it never describes a missing one); all are renamed
    into place together.  ``default`` is :func:`json.dumps`'s, for entries that are not plain JSON."""
    staging.temp(report_final).write_text(json.dumps(report, indent=2, default=default) + "\n", encoding="utf-8")
    return staging.publish()


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


@dataclass
class PipelineResult:
    """What the pipeline did: ``written`` is empty unless every check passed."""

    passed: bool
    failures: list[str]
    report: dict
    written: list[Path]


#: Produces more files from a verified model into the staging area; returns report entries and failures.
Artifacts = Callable[[Verified, Staging], "tuple[dict, list[str]]"]


def export_verified(
    model: torch.nn.Module,
    out_dir: str | os.PathLike,
    name: str,
    export: OnnxExport,
    inputs: Mapping[str, np.ndarray],
    report: Mapping[str, Any],
    *,
    threads: int | None = None,
    latency_iters: int | None = None,
    require_input_dependence: bool = False,
    artifacts: Artifacts | None = None,
    diagnose: Artifacts | None = None,
    parity_key: str = "parity",
    log: Log = lambda m: None,
) -> PipelineResult:
    """Write ``<name>.onnx`` and ``<name>.json`` (plus what ``artifacts`` adds) only if every check passes.

    ``inputs`` (label -> NCHW float32 batch) are the inputs of the comparison; ``report`` holds the
    caller's entries, to which the pipeline adds the export settings, the rule, the per-output parity
    rows (under ``parity_key``), an ONNX Runtime latency sample (when ``latency_iters`` is given) and
    the library versions.  ``diagnose`` runs on the exported file even when parity failed (a per-layer
    comparison); its report entries are printed or kept, its files are written only on success.
    ``require_input_dependence`` refuses a model whose outputs are the same for
    every sample of a batch (a user error: parity would prove nothing).
    """
    out_dir = Path(out_dir)
    onnx_final, report_final = out_dir / f"{name}.onnx", out_dir / f"{name}.json"
    with Staging() as staging:
        reference = parity.TorchReference(model, inputs)
        verified = export_and_compare(model, staging.temp(onnx_final), export, reference, threads, log)
        failures = list(verified.failures)
        if require_input_dependence and verified.session is not None:
            multi = [label for label, x in inputs.items() if x.shape[0] > 1]
            if multi and not any(parity.outputs_depend_on_input(reference.outputs(label)) for label in multi):
                raise InputIndependentError("the model's outputs do not depend on its input, so parity proves "
                                            "nothing; pass a --checkpoint with trained weights")
        extra: dict = {}
        seconds = dict(verified.seconds)
        if diagnose is not None and verified.session is not None:
            start = time.perf_counter()
            extra, _ = diagnose(verified, staging)
            seconds["diagnose"] = _since(start)
        if not failures and artifacts is not None:
            start = time.perf_counter()
            more_entries, more = artifacts(verified, staging)
            extra.update(more_entries)
            seconds["other_artifacts"] = _since(start)
            failures += more
        full = {
            **report,
            "opset": export.opset,
            "exporter": export.exporter,
            "onnx_bytes": verified.path.stat().st_size,
            "parity_tolerance": {**parity.rule(), "precision": "fp32", **vars(parity.TOLERANCES["fp32"])},
            parity_key: verified.rows,
        }
        if latency_iters is not None:
            start = time.perf_counter()
            full["latency_onnxruntime_cpu"] = _latency(verified, inputs, latency_iters)
            seconds["latency"] = _since(start)
        full["versions"] = library_versions()
        full["environment"] = environment()  # CPU flags and kernel paths: INT8 and float results depend on them
        # wall time per step, the caller's steps (model build, BN calibration, ...) first
        full["seconds"] = {**full.get("seconds", {}), **seconds}
        full.update(extra)
        if failures:
            return PipelineResult(False, failures, full, [])
        return PipelineResult(True, [], full, publish_with_report(staging, report_final, full))


def _latency(verified: Verified, inputs: Mapping[str, np.ndarray], iters: int) -> dict | None:
    """A short ONNX Runtime latency sample for the report; ``cdarts-profile`` does the careful measurement."""
    if iters <= 0 or verified.session is None:
        return None
    x = next(iter(inputs.values()))
    stats = sample_host(lambda: ort.run(verified.session, x), int(x.shape[0]), warmup=2, iters=iters)
    return stats.as_dict()
