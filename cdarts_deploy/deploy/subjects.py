"""What ``cdarts-profile`` times: a genotype's network, a timm or zoo peer, or a given ONNX file, and the
ONNX files and TensorRT engines made from them (exported through the one verified pipeline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import timm

from backbones.complexity import count_macs, count_params
from cdarts_deploy import genotype as gt
from cdarts_deploy.deploy import ort
from cdarts_deploy.deploy import precision as pr
from cdarts_deploy.deploy import profiling as prof
from cdarts_deploy.deploy.gemm import onnx_macs
from cdarts_deploy.deploy.model_spec import build_model, calibrate_batchnorm, random_batch, resolve_spec
from cdarts_deploy.deploy.pipeline import OnnxExport, export_verified
from cdarts_deploy.deploy.profile_report import ProfileRow
from cdarts_deploy.deploy.profiling import ProfileError
from cdarts_deploy.deploy.trt import build_engine

#: Timm models of similar cost, always among the default peers.
TIMM_PEERS = ("efficientnet_b0", "mobilenetv3_large_100", "mnasnet_100")
#: Most calibration images an INT8 file is calibrated on (the first that decode, in file-name order).
CALIBRATION_IMAGES = 256
#: What ``--peers`` understands besides names.
DEFAULT_PEERS_WORD, NO_PEERS_WORD = "default", "none"


def zoo_layout(genotype: gt.Genotype) -> str:
    """``cifar`` or ``imagenet`` (cell genotypes, from their network hints), ``nb201`` or ``chain``."""
    if isinstance(genotype, gt.Nb201Genotype):
        return "nb201"
    if not isinstance(genotype, gt.CellGenotype):
        return "chain"
    return resolve_spec(genotype).layout or "cifar"


def default_peers(layout: str | None, input_hw: tuple[int, int] | None = None,
                  exclude: Sequence[str] = ()) -> list[str]:
    """:data:`TIMM_PEERS` and the zoo models of ``layout`` (``cifar``, ``imagenet`` or ``chain``), minus ``exclude``.

    Without a layout (an ONNX file) the zoo models whose natural input size is ``input_hw`` are taken.
    """
    zoo = []
    for name in gt.zoo_names():
        genotype = gt.load(name)
        if layout is not None:
            same = zoo_layout(genotype) == layout
        else:
            same = input_hw is not None and tuple(resolve_spec(genotype).input_size) == tuple(input_hw)
        if same and name not in exclude:
            zoo.append(name)
    return [*TIMM_PEERS, *zoo]


class VerificationFailed(RuntimeError):
    """An ONNX file exported for timing failed its parity check (exit status 1)."""


@dataclass
class Subject:
    """One model to profile, as a PyTorch module and/or an ONNX file."""

    name: str
    model: Any | None
    onnx_path: Path | None
    input_hw: tuple[int, int]
    params: int | None
    macs: int | None
    peer: bool = False


def onnx_input_hw(path: Path) -> tuple[int, int] | None:
    """Fixed H and W of the ONNX file's first input, or None where they are symbolic."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ProfileError(
            f"{path} is not a valid ONNX model ({first}); pass a file written by cdarts-export") from None
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ProfileError(f"{path} has {len(inputs)} inputs; cdarts-profile times single-image-input models")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ProfileError(f"{path} input has rank {len(dims)}; expected NCHW images")
    h, w = dims[2], dims[3]
    return (h.dim_value, w.dim_value) if h.HasField("dim_value") and w.HasField("dim_value") else None


def from_onnx(path: Path, input_hw: tuple[int, int] | None) -> Subject:
    fixed = onnx_input_hw(path)
    if fixed and input_hw and fixed != tuple(input_hw):
        raise ProfileError(f"{path} has a fixed input of {fixed[0]}x{fixed[1]}; drop --input-size or match it")
    hw = fixed or input_hw
    if hw is None:
        raise ProfileError(f"{path} has a symbolic input size; pass --input-size, e.g. --input-size 224")
    return Subject(path.stem, None, path, tuple(hw), None, onnx_macs(path, 1, tuple(hw)))


def from_genotype(genotype: gt.Genotype, layout: str | None = None, width: int | None = None,
                  cells: int | None = None, num_classes: int | None = None,
                  input_hw: tuple[int, int] | None = None, name: str | None = None, peer: bool = False) -> Subject:
    is_cell = isinstance(genotype, gt.CellGenotype)
    spec = resolve_spec(genotype, layout if is_cell else None, width if is_cell and not peer else None,
                        cells if is_cell and not peer else None, num_classes, input_hw)
    model = build_model(genotype, spec)
    calibrate_batchnorm(model, tuple(spec.input_size))  # else the exported file's parity check proves nothing
    return Subject(name or genotype.name or "model", model, None, tuple(spec.input_size), count_params(model),
                   count_macs(model, tuple(spec.input_size)), peer)


def from_timm(name: str, input_hw: tuple[int, int], num_classes: int | None) -> Subject:

    model = timm.create_model(name, pretrained=False, num_classes=num_classes or 1000).eval()
    calibrate_batchnorm(model, tuple(input_hw))  # random weights: real BN statistics keep outputs input-dependent
    return Subject(name, model, None, input_hw, count_params(model), count_macs(model, input_hw), True)


def resolve_peers(text: str | None, layout: str | None = None, input_hw: tuple[int, int] | None = None,
                  exclude: Sequence[str] = ()) -> list[str]:
    """Peer names from ``--peers``: ``default`` (or nothing given) for :func:`default_peers`, ``none`` for no
    peers, or a comma list of zoo and timm names; unknown names are a user error."""
    text = DEFAULT_PEERS_WORD if text is None else text.strip()
    if text == NO_PEERS_WORD:
        return []
    if text == DEFAULT_PEERS_WORD:
        return default_peers(layout, input_hw, exclude)

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ProfileError(f"--peers {text!r} names no model; give names, '{DEFAULT_PEERS_WORD}' or "
                           f"'{NO_PEERS_WORD}'")
    zoo = gt.zoo_names()
    for n in names:
        if n not in zoo and not timm.is_model(n):
            raise ProfileError(f"unknown peer {n!r}; use a zoo name ({', '.join(zoo)}), a timm model name, "
                               f"'{DEFAULT_PEERS_WORD}' or '{NO_PEERS_WORD}'")
    return names


def onnx_for(subject: Subject, precision: str, work: Path, calib_dir: str | None,
             log: Callable[[str], None] = lambda m: None, target: str = "onnxruntime", bad_images: str = "fail"
             ) -> Path:
    """The ONNX file to time: exported once per subject through the verified pipeline, converted for fp16/int8
    (INT8 for ``target``: ONNX Runtime's operator format, or Q/DQ nodes for TensorRT)."""
    if subject.onnx_path is None:
        log(f"exporting {subject.name} to ONNX")
        x = random_batch(1, subject.input_hw)
        result = export_verified(subject.model, work, subject.name, OnnxExport((1, 3, *subject.input_hw)),
                                 {"random b1": x}, {"name": subject.name}, log=log)
        if not result.passed:
            raise VerificationFailed(f"{subject.name}: {result.failures[0]}")
        subject.onnx_path = work / f"{subject.name}.onnx"
    if precision == "fp32":
        return subject.onnx_path
    converted = work / (f"{subject.name}.{precision}.onnx" if precision == "fp16" else
                        f"{subject.name}.{precision}.{target}.onnx")
    if not converted.exists():
        if precision == "fp16":
            pr.to_fp16(subject.onnx_path, converted)
        else:
            log(f"calibrating INT8 ({target}) for {subject.name} on {calib_dir}")
            images = pr.load_images(calib_dir, subject.input_hw, limit=CALIBRATION_IMAGES, bad_images=bad_images)
            pr.quantize_int8(subject.onnx_path, converted, images, target=target)
    return converted


def engine_for(subject: Subject, precision: str, batches: Sequence[int], work: Path, calib_dir: str | None,
               log: Callable[[str], None] = lambda m: None, bad_images: str = "fail") -> Path:
    """A TensorRT engine of the subject for ``precision``, built once per subject."""
    path = work / f"{subject.name}.{precision}.engine"
    if not path.exists():
        log(f"building TensorRT {precision} engine for {subject.name}")
        low = onnx_for(subject, precision, work, calib_dir, log, target="tensorrt", bad_images=bad_images)
        build_engine(low, path, subject.input_hw, precision, batches=batches)  # a profile per timed batch
    return path


def against_fp32(sessions: dict[str, Any], shape: tuple[int, ...], iters: int) -> dict:
    """The ``fp32`` and ``low`` (lower-precision) sessions timed in alternating rounds in one process (about
    ``iters`` runs in all): medians of separate runs move more from one process to the next than an INT8 gain
    at batch 1."""

    rounds = max(1, min(5, iters))
    per_round = max(1, iters // (2 * rounds))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    medians = pr.interleaved_medians(sessions, x, per_round, rounds)
    return {"fp32_median_ms": medians["fp32"], "median_ms": medians["low"],
            "speedup": medians["fp32"] / medians["low"], "timed_runs_each": per_round * rounds}


def measure_subject(subject: Subject, backends: Sequence[str], batches: Sequence[int], *, warmup: int, iters: int,
                    device: str, precision: str, threads: int, work: Path, calib_dir: str | None = None,
                    log: Callable[[str], None] = lambda m: None, cuda_graph: bool = False,
                    bad_images: str = "fail") -> list:
    """One report row per backend and batch size."""
    rows = []
    for backend in backends:
        pair: dict[str, Any] | None = None  # fp32 and lower-precision sessions, opened once for all batches
        for batch in batches:
            shape = (batch, 3, *subject.input_hw)
            desc = f"{subject.name} {backend} b{batch}"
            vs_fp32 = None
            if backend in ("torch", "torch-compile"):
                m = prof.measure_torch(subject.model, shape, warmup, iters, device, precision,
                                       compile=backend == "torch-compile", desc=desc)
            elif backend == "onnxruntime":
                low = onnx_for(subject, precision, work, calib_dir, log, bad_images=bad_images)
                m = prof.measure_onnxruntime(low, shape, warmup, iters, threads, device, precision, desc=desc)
                if precision != "fp32":
                    if pair is None:
                        pair = {"fp32": ort.session(onnx_for(subject, "fp32", work, None, log), threads, device),
                                "low": ort.session(low, threads, device)}
                    vs_fp32 = against_fp32(pair, shape, iters)
            else:
                engine = engine_for(subject, precision, batches, work, calib_dir, log, bad_images)
                m = prof.measure_tensorrt(engine, shape, warmup, iters, precision, desc=desc, cuda_graph=cuda_graph)
            p99 = ("p99 needs >= 100 runs" if "p99" in m.stats.unsupported_percentiles
                   else f"p99 {m.stats.p99_ms:.2f} ms")
            log(f"{desc}: median {m.stats.median_ms:.2f} ms, {p99} (n={m.stats.iters})")
            derived = {m.backend: m.details} if m.details else {}
            if vs_fp32:
                log(f"{desc}: {precision} {vs_fp32['speedup']:.2f}x against fp32 ({vs_fp32['fp32_median_ms']:.2f} vs "
                    f"{vs_fp32['median_ms']:.2f} ms, interleaved in this run)")
                derived["vs_fp32"] = vs_fp32
            rows.append(ProfileRow(subject.name, m.backend, m.device, m.precision, list(shape), subject.params,
                                   subject.macs, m.stats, m.timed_region, subject.peer, derived=derived))
    return rows
