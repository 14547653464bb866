"""TensorRT engines from exported ONNX files, built by Polygraphy (TensorRT 10.x / 11.x; NVIDIA GPU only).

Polygraphy (NVIDIA's own TensorRT toolkit) parses the ONNX file, creates the builder configuration, builds and
serializes the engine; this module decides what goes into that configuration and checks what comes out.

Precision follows the ONNX file, not builder flags: TensorRT 11 builds strongly typed networks only and removed
the FP16/INT8 flags, so FP16 engines come from an FP16 ONNX (:func:`cdarts_deploy.deploy.precision.to_fp16`) and
INT8 engines from an ONNX with explicit Q/DQ nodes (:mod:`cdarts_deploy.deploy.trt_qdq`).  On TensorRT 10 the
FP16 builder flag on the FP32 ONNX is available as ``fp16_flag=True``.  Every build is checked afterwards: the
engine inspector's layer list must show the convolution/GEMM layers in the precision asked for
(:func:`cdarts_deploy.deploy.trt_inspect.check_precision`), otherwise nothing is written and the build fails.

FP32 means FP32: TensorRT lets FP32 layers use TF32 tensor cores by default (inputs rounded to a 10-bit
mantissa); TF32 stays off unless ``tf32=True`` is asked for, and the engine report says which.

Optimization profiles: TensorRT picks its tactics for a profile's *opt* shape, so an engine that is timed at
several batches gets one profile per timed batch (``batches``; min = opt = max = that batch) and the runner
selects the profile that fits each input.  Without ``batches`` one profile spans ``min_batch..max_batch`` with
its tactics chosen for ``opt_batch``.  A fixed (static) batch or image size in the ONNX file is kept as it is
(TensorRT rejects a profile that disagrees with a fixed dimension).

Builds can reuse a timing cache file (read where it exists, written back atomically after the build), set the
builder optimization level (0-5, TensorRT's default 3), and report every layer of the built engine with its
precision.  Engines run in :class:`cdarts_deploy.deploy.trt_runner.EngineRunner`.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import onnx
import torch

from cdarts_deploy.atomic_files import atomic_path
from cdarts_deploy.errors import UserError

from .trt_inspect import EngineBuildError, EnginePrecisionError, check_precision, inspect_engine, precision_counts

__all__ = ["EngineBuildError", "EnginePrecisionError", "EngineShapeError", "EngineInfo", "TensorRTUnavailable",
           "build_engine", "require_tensorrt", "profile_shapes", "plan_profiles", "create_config"]

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTUnavailable(UserError):
    """This machine cannot build or run TensorRT engines (no NVIDIA GPU, no ``tensorrt`` or no ``polygraphy``)."""


class EngineShapeError(EngineBuildError):
    """An engine refused an input shape (outside its optimization profiles)."""


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
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(
            f"TensorRT {tensorrt.__version__} is too old; install TensorRT 10 or newer (pip install -U tensorrt)"
        )
    try:
        import polygraphy  # noqa: F401 -- builds and runs the engines
    except ImportError:
        raise TensorRTUnavailable("the 'polygraphy' package is not installed; install it with 'pip install "
                                  "polygraphy' (or the extra: pip install cdarts-deploy[trt])") from None
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
    profile: dict | None = None  # input name -> [min, opt, max] shapes of the first profile
    optimization_level: int | None = None  # None: TensorRT's default
    timing_cache: dict | None = None  # path, whether it was read, bytes written
    layers: list | None = None  # one {name, type, precision, ...} per engine layer (engine inspector)
    layer_precisions: dict | None = None  # precision -> number of layers
    profiles: list = field(default_factory=list)  # every profile: input name -> [min, opt, max]
    precision_check: dict | None = None  # what check_precision found

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
        raise UserError(f"--trt-timing-cache {path} is a folder; name a file, e.g. {path / 'trt.cache'}")
    if not path.parent.is_dir():
        raise UserError(f"--trt-timing-cache {path}: folder {path.parent} does not exist")


def check_opt_level(level: int | None) -> None:
    if level is not None and level not in OPT_LEVELS:
        raise UserError(f"TensorRT optimization level {level} is outside 0-5")


def profile_shapes(network_shape: Sequence[int], input_hw: tuple[int, int], min_batch: int, opt_batch: int,
                   max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of one NCHW input for its optimization profile.

    Fixed dimensions of the ONNX input (``network_shape``, -1 where dynamic) are kept as they are: a
    static-batch ONNX gets ``min = opt = max = its batch``.  Dynamic H/W take ``input_hw``.
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


def onnx_inputs(onnx_path: str | os.PathLike) -> list[tuple[str, tuple[int, ...]]]:
    """(name, dims) of each graph input of an ONNX file that is not an initializer; -1 for a dynamic dimension."""
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError, OSError, ...
        raise EngineBuildError(f"{onnx_path} is not a readable ONNX file ({exc.__class__.__name__})") from None
    inits = {t.name for t in graph.initializer}
    return [(vi.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim))
            for vi in graph.input if vi.name not in inits]


def plan_profiles(inputs: Sequence[tuple[str, Sequence[int]]], input_hw: tuple[int, int], min_batch: int = 1,
                  opt_batch: int = 1, max_batch: int = 32, batches: Sequence[int] | None = None
                  ) -> list[dict[str, list[list[int]]]]:
    """The optimization profiles of an engine: input name -> [min, opt, max] shape, one dict per profile.

    ``batches``: one exact profile per batch (tactics chosen for each timed batch); otherwise one profile
    ``min_batch <= opt_batch <= max_batch``.  A static-batch input allows one profile only, of its batch.
    """
    if batches is not None:
        wanted = sorted({int(b) for b in batches})
        if not wanted or wanted[0] < 1:
            raise ValueError(f"profile batches must be positive, got {list(batches)}")
        ranges = [(b, b, b) for b in wanted]
    else:
        if not 1 <= min_batch <= opt_batch <= max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, "
                             f"{max_batch}")
        ranges = [(min_batch, opt_batch, max_batch)]
    if inputs and all(dims and dims[0] > 0 for _, dims in inputs):
        ranges = ranges[:1]  # a fixed batch: every range gives the same profile
    profiles = []
    for lo, opt, hi in ranges:
        profiles.append({name: [list(s) for s in profile_shapes(dims, input_hw, lo, opt, hi)]
                         for name, dims in inputs})
    return profiles


@contextlib.contextmanager
def polygraphy_log(level: str = "WARNING") -> Iterator[None]:
    """Polygraphy logs every loader and inference at INFO; keep ``level`` and above while it works."""
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(getattr(G_LOGGER, level)):
        yield


def create_config(profiles: Sequence[dict[str, list[list[int]]]], tf32: bool = False, fp16_flag: bool = False,
                  optimization_level: int | None = None, timing_cache: bytes | None = None,
                  memory_pool_limits: dict | None = None) -> Any:
    """Polygraphy's ``CreateConfig`` for these profiles: TF32 only if asked, FP16 flag only on request (the
    TensorRT 10 route), the optimization level, a timing cache read from ``timing_cache`` bytes.  Profiling
    verbosity stays Polygraphy's default, DETAILED, so the engine inspector lists each layer's datatypes."""
    from polygraphy.backend.trt import CreateConfig, Profile

    trt_profiles = []
    for shapes in profiles:
        profile = Profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.add(name, min=lo, opt=opt, max=hi)
        trt_profiles.append(profile)
    with polygraphy_log():
        return CreateConfig(tf32=tf32, fp16=fp16_flag or None, profiles=trt_profiles,
                            builder_optimization_level=optimization_level,
                            load_timing_cache=io.BytesIO(timing_cache) if timing_cache else None,
                            memory_pool_limits=memory_pool_limits)


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
    batches: Sequence[int] | None = None,
) -> EngineInfo:
    """Build an engine of ``onnx_path`` with Polygraphy, check its layer precisions, write it to ``engine_path``.

    ``precision`` picks the build route and is checked against the built engine (:class:`EnginePrecisionError`
    and nothing written when its convolution/GEMM layers run in another precision).  The ONNX must already carry
    FP16 tensors or Q/DQ nodes for ``fp16``/``int8``, except with ``fp16_flag`` on TensorRT 10.  Profiles:
    :func:`plan_profiles` (``batches`` for one exact profile per timed batch).  ``timing_cache``: a file read
    before the build where it exists and written back (atomically) after it; ``optimization_level``: 0-5.
    """
    check_timing_cache_path(timing_cache)
    check_opt_level(optimization_level)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    trt = require_tensorrt()
    from polygraphy.backend.trt import NetworkFromOnnxPath, engine_bytes_from_network, engine_from_bytes
    from polygraphy.exception import PolygraphyException

    major = int(str(trt.__version__).split(".")[0])
    route = "strongly typed from the ONNX tensor types"
    if fp16_flag:
        if major >= 11 or precision != "fp16":
            raise ValueError("fp16_flag is the TensorRT 10 route for precision 'fp16' only")
        route = "TensorRT 10 FP16 builder flag on the FP32 ONNX"
    profiles = plan_profiles(onnx_inputs(onnx_path), input_hw, min_batch, opt_batch, max_batch, batches)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    config = create_config(profiles, tf32, fp16_flag, optimization_level, blob or None,
                           {trt.MemoryPoolType.WORKSPACE: workspace_mb << 20})
    # TensorRT 10: opt in to strong typing; TensorRT 11: always strongly typed, the flag may be gone
    strongly_typed = not fp16_flag and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed or None)
    saved_cache = io.BytesIO() if cache_path is not None else None
    try:
        with polygraphy_log():
            serialized = bytes(engine_bytes_from_network(network, config, save_timing_cache=saved_cache))
            engine = engine_from_bytes(serialized)
    except PolygraphyException as exc:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path}: "
                               f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else 'see the log above'}"
                               ) from None
    layers = inspect_engine(engine, trt)
    verdict = check_precision(layers, precision)  # raises before anything is written
    cache_info = None
    if cache_path is not None and saved_cache is not None:
        written = saved_cache.getvalue()
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(written)
        cache_info = {"path": str(cache_path), "read_bytes": len(blob), "reused": bool(blob),
                      "written_bytes": len(written)}
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(serialized)
    first = next(iter(profiles[0].values()))
    return EngineInfo(str(engine_path), precision, str(trt.__version__),
                      min(next(iter(p.values()))[0][0] for p in profiles), first[1][0],
                      max(next(iter(p.values()))[2][0] for p in profiles), workspace_mb, route, tf32, profiles[0],
                      optimization_level, cache_info, layers, precision_counts(layers) if layers else None,
                      profiles, verdict)
