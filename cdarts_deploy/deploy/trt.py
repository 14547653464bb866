"""TensorRT engines from exported ONNX files (TensorRT 10.x / 11.x Python API; NVIDIA GPU only).

Precision follows the ONNX file, not builder flags: TensorRT 11 builds strongly
typed networks only and removed the FP16/INT8 flags, so FP16 engines come from
an FP16 ONNX (:func:`cdarts_deploy.deploy.precision.to_fp16`) and INT8 engines from an
ONNX with explicit Q/DQ nodes (:func:`cdarts_deploy.deploy.precision.quantize_int8`).
On TensorRT 10 the FP16 builder flag on the FP32 ONNX is available as
``fp16_flag=True``.

FP32 means FP32: TensorRT lets FP32 layers use TF32 tensor cores by default (inputs rounded to a
10-bit mantissa); :func:`build_engine` clears ``BuilderFlag.TF32`` unless ``tf32=True`` is asked for,
and the engine report says which.

The optimization profile follows the ONNX input: a fixed (static) batch or image size gets exactly
that shape (TensorRT rejects a profile that disagrees with a fixed dimension), a dynamic batch gets
``min_batch <= opt_batch <= max_batch``.

Builds can reuse a timing cache file (``timing_cache``: read when it exists, written back atomically
after the build, so later builds of similar networks skip most tactic timing), set the builder
optimization level (0-5, TensorRT's default 3), and report every layer of the built engine with its
precision (:mod:`cdarts_deploy.deploy.trt_inspect`).  Engines run in
:class:`cdarts_deploy.deploy.trt_runner.TensorRTRunner`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from cdarts_deploy.atomic_files import atomic_path
from cdarts_deploy.errors import UserError

from .trt_inspect import inspect_layers, precision_counts


class TensorRTUnavailable(UserError):
    """This machine cannot build or run TensorRT engines (no NVIDIA GPU or no ``tensorrt`` package)."""


class EngineBuildError(RuntimeError):
    """TensorRT rejected an exported ONNX file or could not build an engine (a failed export, exit 1)."""


class EngineShapeError(EngineBuildError):
    """An engine refused an input shape (outside its optimization profile)."""


def require_tensorrt() -> Any:
    """Return the ``tensorrt`` module, or raise :class:`TensorRTUnavailable` with the reason and the fix."""
    try:
        has_gpu = torch.cuda.is_available()
    except Exception:  # a broken CUDA install reads the same as no GPU
        has_gpu = False
    if not has_gpu:
        raise TensorRTUnavailable(
            "TensorRT needs an NVIDIA GPU with a working CUDA driver and none is visible on this machine; "
            "run on a machine with one (ONNX Runtime needs no GPU)"
        )
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(
            "the 'tensorrt' Python package is not installed; install it with "
            "'pip install tensorrt' (or the extra: pip install cdarts-deploy[trt])"
        ) from None
    major = int(tensorrt.__version__.split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(
            f"TensorRT {tensorrt.__version__} is too old; install TensorRT 10 or newer (pip install -U tensorrt)"
        )
    return tensorrt


@dataclass(frozen=True)
class EngineInfo:
    path: str
    precision: str
    tensorrt: str
    min_batch: int
    opt_batch: int
    max_batch: int
    workspace_mb: int
    build_route: str
    tf32: bool = False
    profile: dict | None = None  # input name -> [min, opt, max] shapes
    optimization_level: int | None = None  # None: TensorRT's default
    timing_cache: dict | None = None  # path, whether it was read, bytes written
    layers: list | None = None  # one {name, type, precision, ...} per engine layer (engine inspector)
    layer_precisions: dict | None = None  # precision -> number of layers

    def as_dict(self) -> dict:
        return dict(self.__dict__)


#: Builder optimization levels TensorRT accepts (higher: longer builds, possibly faster engines).
OPT_LEVELS = range(0, 6)


def check_timing_cache_path(path: str | os.PathLike | None) -> None:
    """A timing cache path must be a file in an existing folder (it is created on the first build)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--trt-timing-cache {path} is a folder; name a file, e.g. "
                                           f"{path / 'trt.cache'}")
    if not path.parent.is_dir():
        raise UserError(f"--trt-timing-cache {path}: folder {path.parent} does not exist")


def check_opt_level(level: int | None) -> None:
    if level is not None and level not in OPT_LEVELS:
        raise UserError(f"TensorRT optimization level {level} is outside 0-5")


def profile_shapes(network_shape: Sequence[int], input_hw: tuple[int, int], min_batch: int, opt_batch: int,
                   max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of one NCHW input for its optimization profile.

    Fixed dimensions of the parsed network (``network_shape``, -1 where dynamic) are kept as they
    are: a static-batch ONNX gets ``min = opt = max = its batch``.  Dynamic H/W take ``input_hw``.
    """
    dims = [int(d) for d in network_shape]
    if len(dims) != 4:
        raise EngineBuildError(f"expected an NCHW image input, the ONNX input has shape {dims}")
    n, c, h, w = dims
    if c < 0:
        raise EngineBuildError("the ONNX input has a dynamic channel dimension; export with a fixed channel count")
    hw = (h if h > 0 else input_hw[0], w if w > 0 else input_hw[1])
    if n > 0:  # static batch: the only shape the engine can take
        return (n, c, *hw), (n, c, *hw), (n, c, *hw)
    return (min_batch, c, *hw), (opt_batch, c, *hw), (max_batch, c, *hw)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    input_hw: tuple[int, int],
    precision: str = "fp32",
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 32,
    workspace_mb: int = 1024,
    fp16_flag: bool = False,
    tf32: bool = False,
    timing_cache: str | os.PathLike | None = None,
    optimization_level: int | None = None,
) -> EngineInfo:
    """Parse ``onnx_path`` and write a serialized engine to ``engine_path`` (atomically).

    ``precision`` only labels the result and picks the build route: the ONNX
    must already carry FP16 tensors or Q/DQ nodes for ``fp16``/``int8``, except
    with ``fp16_flag`` on TensorRT 10, where the FP16 builder flag is set on an
    FP32 ONNX.  The batch dimension gets one optimization profile
    ``min_batch <= opt_batch <= max_batch``, or exactly the ONNX file's batch where it is fixed
    (:func:`profile_shapes`; the returned info holds the profile actually used).  TF32 stays off
    unless ``tf32`` is set.  ``timing_cache``: a file read before the build where it exists and written
    back (atomically) after it; ``optimization_level``: 0-5 (None keeps TensorRT's default).  The info
    lists every layer of the engine with its precision (:func:`layer_table`).
    """
    check_timing_cache_path(timing_cache)
    check_opt_level(optimization_level)
    trt = require_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if not min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)

    flags = 0
    route = "strongly typed from the ONNX tensor types"
    if fp16_flag:
        if major >= 11 or precision != "fp16":
            raise ValueError("fp16_flag is the TensorRT 10 route for precision 'fp16' only")
        route = "TensorRT 10 FP16 builder flag on the FP32 ONNX"
    elif hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        # TensorRT 10: opt in; TensorRT 11: always on, the flag is accepted and ignored
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if hasattr(trt.BuilderFlag, "TF32"):  # on by default: FP32 layers would round inputs to TF32
        (config.set_flag if tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    if hasattr(trt, "ProfilingVerbosity"):  # layer precisions and tactics in the engine inspector
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache_info = None
    if timing_cache is not None:
        cache_path = Path(timing_cache)
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, False):
            raise EngineBuildError(f"TensorRT refused the timing cache {cache_path}; delete it and build again")
        cache_info = {"path": str(cache_path), "read_bytes": len(blob), "reused": bool(blob)}
    profile = builder.create_optimization_profile()
    shapes: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        lo, opt, hi = profile_shapes(tuple(tensor.shape), input_hw, min_batch, opt_batch, max_batch)
        profile.set_shape(tensor.name, lo, opt, hi)
        shapes[tensor.name] = [list(lo), list(opt), list(hi)]
    config.add_optimization_profile(profile)
    first = next(iter(shapes.values()))
    min_batch, opt_batch, max_batch = first[0][0], first[1][0], first[2][0]

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    if cache_info is not None:
        written = bytes(config.get_timing_cache().serialize())
        with atomic_path(cache_info["path"]) as tmp:
            tmp.write_bytes(written)
        cache_info["written_bytes"] = len(written)
    layers = inspect_layers(trt, logger, bytes(serialized))
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return EngineInfo(str(engine_path), precision, trt.__version__, min_batch, opt_batch, max_batch, workspace_mb,
                      route, tf32, shapes, optimization_level, cache_info, layers,
                      precision_counts(layers) if layers is not None else None)
