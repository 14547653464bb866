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
``min_batch <= opt_batch <= max_batch``.  :class:`TensorRTRunner` splits larger inputs into chunks the
profile accepts and checks every ``set_input_shape`` result.

Builds can reuse a timing cache file (``timing_cache``: read when it exists, written back atomically
after the build, so later builds of similar networks skip most tactic timing), set the builder
optimization level (0-5, TensorRT's default 3), and report every layer of the built engine with its
precision (the engine inspector's JSON, built with detailed profiling verbosity).

Device buffers are PyTorch CUDA tensors, so no pycuda/cuda-python dependency.  All work of a
runner happens on its own stream, which first waits for the stream that produced the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cdarts_deploy.atomic_files import atomic_path
from cdarts_deploy.errors import UserError


class TensorRTUnavailable(UserError):
    """This machine cannot build or run TensorRT engines (no NVIDIA GPU or no ``tensorrt`` package)."""


class EngineBuildError(RuntimeError):
    """TensorRT rejected an exported ONNX file or could not build an engine (a failed export, exit 1)."""


class EngineShapeError(EngineBuildError):
    """An engine refused an input shape (outside its optimization profile)."""


def require_tensorrt() -> Any:
    """Return the ``tensorrt`` module, or raise :class:`TensorRTUnavailable` with the reason and the fix."""
    try:
        import torch

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
#: Words of the inspector's ``Format/Datatype`` strings, in the order they are looked for.
_DATATYPES = (("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("bf16", "bf16"), ("half", "fp16"), ("fp16", "fp16"),
              ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("float", "fp32"), ("fp32", "fp32"))


def _precision_of(datatype: str) -> str:
    low = datatype.lower()
    return next((label for word, label in _DATATYPES if word in low), datatype or "unknown")


def layer_table(info_json: str) -> list[dict]:
    """Layers of an engine from ``IEngineInspector.get_engine_information(JSON)``: name, type, the precision of
    its first output (its inputs' where it has no output), tactic, and the raw input/output formats."""
    import json

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


def inspect_layers(trt: Any, logger: Any, serialized: bytes) -> list[dict] | None:
    """Every layer of a serialized engine with its precision, or None where this TensorRT has no inspector."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return None
    inspector = engine.create_engine_inspector()
    return layer_table(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


class TorchCuda:
    """The CUDA pieces the runner uses (device, streams), in one place so tests can stand in for them."""

    device = "cuda"

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def new_stream(self) -> Any:
        return self._torch.cuda.Stream()

    def current_stream(self) -> Any:
        return self._torch.cuda.current_stream()

    def on(self, stream: Any) -> Any:
        """Context: make ``stream`` the current stream (allocations and copies go there)."""
        return self._torch.cuda.stream(stream)

    def handle(self, stream: Any) -> int:
        return stream.cuda_stream

    def record(self, tensor: Any, stream: Any) -> None:
        """Tell the caching allocator ``stream`` uses ``tensor`` (no reuse before that work ends)."""
        tensor.record_stream(stream)

    def event(self) -> Any:
        return self._torch.cuda.Event(enable_timing=True)

    def pinned(self, tensor: Any) -> Any:
        """Page-locked host memory, so host/device copies are real asynchronous DMA (as trtexec does)."""
        return tensor.pin_memory()

    def capture(self, step: Any, stream: Any) -> Any:
        """Capture ``step`` (launches on ``stream``) in a CUDA graph; returns a replay on ``stream``."""
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            step()

        def replay() -> None:
            with torch.cuda.stream(stream):
                graph.replay()

        return replay


class TensorRTRunner:
    """Runs a serialized engine on CUDA tensors; outputs come back as float32 numpy arrays.

    Everything (input copy, execution, output allocation and copy back) runs on the runner's own
    stream; an input made on another stream is waited for (``wait_stream``) and marked as used by
    the runner's stream (``record_stream``).
    """

    def __init__(self, engine_path: str | os.PathLike, cuda: Any = None) -> None:
        trt = require_tensorrt()
        import torch

        self._trt = trt
        self._torch = torch
        self.cuda = cuda or TorchCuda()
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{engine_path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_names[0], 0)
        self.min_batch, self.max_batch = int(tuple(lo)[0]), int(tuple(hi)[0])
        self.stream = self.cuda.new_stream()
        self._outputs: list[Any] = []

    def _torch_dtype(self, name: str):
        return self._torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def bind(self, x_cuda) -> list:
        """Set the input shape and addresses for ``x_cuda`` and allocate outputs; returns the output tensors.

        Raises :class:`EngineShapeError` when the engine refuses the shape (outside its profile).
        """
        torch, cuda = self._torch, self.cuda
        name = self.input_names[0]
        shape = tuple(x_cuda.shape)
        if not self.min_batch <= shape[0] <= self.max_batch:
            raise EngineShapeError(f"batch {shape[0]} is outside the engine's optimization profile "
                                   f"({self.min_batch}..{self.max_batch}); split the input or rebuild the engine")
        self.stream.wait_stream(cuda.current_stream())  # the input was made on the caller's stream
        with cuda.on(self.stream):
            x_cuda = x_cuda.to(self._torch_dtype(name)).contiguous()
            cuda.record(x_cuda, self.stream)
            self._input = x_cuda  # keep alive while the engine reads it
            if not self.context.set_input_shape(name, shape):
                raise EngineShapeError(f"TensorRT refused input shape {list(shape)} for {name!r}; the engine's "
                                       f"profile takes batch {self.min_batch}..{self.max_batch}")
            if not self.context.set_tensor_address(name, x_cuda.data_ptr()):
                raise EngineShapeError(f"TensorRT refused the input buffer of {name!r}")
            self._outputs = []
            for out in self.output_names:
                out_shape = tuple(self.context.get_tensor_shape(out))
                if any(d < 0 for d in out_shape):
                    raise EngineShapeError(f"output {out!r} has no concrete shape ({list(out_shape)}) for input "
                                           f"{list(shape)}")
                tensor = torch.empty(out_shape, dtype=self._torch_dtype(out), device=cuda.device)
                if not self.context.set_tensor_address(out, tensor.data_ptr()):
                    raise EngineShapeError(f"TensorRT refused the output buffer of {out!r}")
                self._outputs.append(tensor)
        return self._outputs

    def enqueue(self) -> None:
        """Launch one inference on the runner's stream (asynchronous)."""
        if not self.context.execute_async_v3(self.cuda.handle(self.stream)):
            raise RuntimeError("TensorRT execution failed")

    def chunks(self, count: int) -> list[tuple[int, int]]:
        """(start, stop) pieces of ``count`` samples, each within the profile's maximum batch."""
        return [(i, min(i + self.max_batch, count)) for i in range(0, count, self.max_batch)]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Copy ``batch`` in, run, copy every output back (for parity checks).

        A batch larger than the profile's maximum runs in chunks; a chunk below its minimum (a
        static-batch engine) is padded with copies of its last sample, whose outputs are dropped.
        """
        torch, cuda = self._torch, self.cuda
        pieces: list[list[np.ndarray]] = []
        for start, stop in self.chunks(len(batch)):
            chunk = np.ascontiguousarray(batch[start:stop])
            pad = max(0, self.min_batch - len(chunk))
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            with cuda.on(self.stream):
                x = torch.from_numpy(chunk).to(cuda.device, non_blocking=False)
            outputs = self.bind(x)
            self.enqueue()
            self.stream.synchronize()
            pieces.append([t.float().cpu().numpy()[: stop - start] for t in outputs])
        return [np.concatenate([p[i] for p in pieces]) for i in range(len(self.output_names))]


def engine_outputs(engine_path: str | os.PathLike, batches: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs of an engine for each input batch."""
    runner = TensorRTRunner(engine_path)
    return [runner.run(b) for b in batches]
