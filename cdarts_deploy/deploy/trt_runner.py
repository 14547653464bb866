"""Running serialized TensorRT engines (:func:`cdarts_deploy.deploy.trt.build_engine` builds them).

* :class:`EngineRunner` runs an engine for parity checks through Polygraphy's ``TrtRunner``: inputs larger than
  every optimization profile are split into chunks a profile accepts (:func:`plan_chunks`), a chunk below a
  static profile's batch is padded, and the runner switches to the profile that fits each chunk.
* :class:`TensorRTRunner` is the timing path: it binds CUDA tensors once and launches the engine without
  synchronizing (:meth:`TensorRTRunner.enqueue`), which is what GPU-compute timing and CUDA-graph capture need;
  Polygraphy's ``TrtRunner.infer`` synchronizes its stream after every inference, so it can do neither.
  Device buffers are PyTorch CUDA tensors; all work happens on the runner's own stream, which first waits for
  the stream that produced the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from .trt import EngineBuildError, EngineShapeError, require_tensorrt

if TYPE_CHECKING:  # the stubs (tensorrt-stubs) type-check this module; nothing is imported at run time
    import tensorrt as trt_types


@dataclass(frozen=True)
class Chunk:
    start: int
    stop: int
    profile: int  # index of the optimization profile that takes it
    pad: int  # copies of the last sample appended to reach the profile's minimum batch


def plan_chunks(count: int, ranges: Sequence[tuple[int, int]]) -> list[Chunk]:
    """Pieces of ``count`` samples for profiles with batch ranges ``ranges`` (min, max), in order.

    Full chunks take the largest batch any profile allows; the rest goes to the profile that takes it with the
    least padding (a static profile of a larger batch pads with copies of the last sample).
    """
    if not ranges:
        raise EngineShapeError("the engine has no optimization profile")
    largest = max(hi for _, hi in ranges)
    chunks = []
    start = 0
    while start < count:
        size = min(largest, count - start)
        fitting = [(max(lo, size) - size, i) for i, (lo, hi) in enumerate(ranges) if hi >= size]
        pad, index = min(fitting)
        chunks.append(Chunk(start, start + size, index, pad))
        start += size
    return chunks


def run_chunked(infer: Callable[[np.ndarray, int], Sequence[np.ndarray]], batch: np.ndarray,
                ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Outputs of ``infer(chunk, profile)`` over ``batch``, chunked by :func:`plan_chunks`, padding dropped."""
    pieces: list[list[np.ndarray]] = []
    for c in plan_chunks(len(batch), ranges):
        chunk = np.ascontiguousarray(batch[c.start:c.stop])
        if c.pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], c.pad, axis=0)])
        pieces.append([np.asarray(o, dtype=np.float32)[: c.stop - c.start] for o in infer(chunk, c.profile)])
    return [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))] if pieces else []


def load_engine(engine_path: str | os.PathLike) -> trt_types.ICudaEngine:
    """Deserialize an engine file with Polygraphy."""
    require_tensorrt()
    from polygraphy.backend.trt import engine_from_bytes
    from polygraphy.exception import PolygraphyException

    try:
        return engine_from_bytes(Path(engine_path).read_bytes())
    except PolygraphyException:
        raise EngineBuildError(f"{engine_path} is not a TensorRT engine for this TensorRT version and GPU") from None


def io_names(engine: trt_types.ICudaEngine, trt: Any) -> tuple[list[str], list[str]]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]


def profile_ranges(engine: trt_types.ICudaEngine, input_name: str) -> list[tuple[int, int]]:
    """(min, max) batch of each optimization profile of ``engine``."""
    ranges = []
    for index in range(engine.num_optimization_profiles):
        lo, _, hi = engine.get_tensor_profile_shape(input_name, index)
        ranges.append((int(lo[0]), int(hi[0])))
    return ranges


class EngineRunner:
    """Runs an engine file with Polygraphy's ``TrtRunner``; outputs come back as float32 numpy arrays."""

    def __init__(self, engine_path: str | os.PathLike) -> None:
        trt = require_tensorrt()
        from polygraphy.backend.trt import TrtRunner

        self.engine = load_engine(engine_path)
        self.input_names, self.output_names = io_names(self.engine, trt)
        self.ranges = profile_ranges(self.engine, self.input_names[0])
        self._dtype = trt.nptype(self.engine.get_tensor_dtype(self.input_names[0]))
        self._runner = TrtRunner(self.engine)
        self._runner.activate()
        self._profile = 0

    def _infer(self, chunk: np.ndarray, profile: int) -> list[np.ndarray]:
        if profile != self._profile:
            self._runner.set_profile(profile)
            self._profile = profile
        out = self._runner.infer({self.input_names[0]: chunk.astype(self._dtype)})
        return [np.asarray(out[name]) for name in self.output_names]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for ``batch`` (any size: chunked over the profiles)."""
        return run_chunked(self._infer, batch, self.ranges)

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()

    def __del__(self) -> None:  # the export keeps its runner for the evaluation; release the context at the end
        self.close()


def engine_outputs(engine_path: str | os.PathLike, batches: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs of an engine for each input batch."""
    runner = EngineRunner(engine_path)
    try:
        return [runner.run(b) for b in batches]
    finally:
        runner.close()


class TorchCuda:
    """The CUDA pieces the timing runner uses (device, streams), in one place so tests can stand in for them."""

    device = "cuda"

    def new_stream(self) -> Any:
        return torch.cuda.Stream()

    def current_stream(self) -> Any:
        return torch.cuda.current_stream()

    def on(self, stream: Any) -> Any:
        """Context: make ``stream`` the current stream (allocations and copies go there)."""
        return torch.cuda.stream(stream)

    def handle(self, stream: Any) -> int:
        return int(stream.cuda_stream)

    def record(self, tensor: Any, stream: Any) -> None:
        """Tell the caching allocator ``stream`` uses ``tensor`` (no reuse before that work ends)."""
        tensor.record_stream(stream)

    def event(self) -> Any:
        return torch.cuda.Event(enable_timing=True)

    def pinned(self, tensor: Any) -> Any:
        """Page-locked host memory, so host/device copies are real asynchronous DMA (as trtexec does)."""
        return tensor.pin_memory()

    def capture(self, step: Any, stream: Any) -> Any:
        """Capture ``step`` (launches on ``stream``) in a CUDA graph; returns a replay on ``stream``."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            step()

        def replay() -> None:
            with torch.cuda.stream(stream):
                graph.replay()

        return replay


class TensorRTRunner:
    """Binds CUDA tensors to an engine once and launches it without synchronizing (timing, CUDA graphs).

    ``engine``: an already deserialized engine (default: :func:`load_engine` of ``engine_path``).  Binding a
    batch selects the optimization profile that takes it.
    """

    def __init__(self, engine_path: str | os.PathLike, cuda: Any = None, engine: Any = None) -> None:
        trt = require_tensorrt()
        self._trt = trt
        self.cuda = cuda or TorchCuda()
        self.engine = engine if engine is not None else load_engine(engine_path)
        self.context: trt_types.IExecutionContext = self.engine.create_execution_context()
        self.input_names, self.output_names = io_names(self.engine, trt)
        self.ranges = profile_ranges(self.engine, self.input_names[0])
        self.min_batch = min(lo for lo, _ in self.ranges)
        self.max_batch = max(hi for _, hi in self.ranges)
        self.stream = self.cuda.new_stream()
        self.profile = 0
        self._outputs: list[Any] = []

    def _torch_dtype(self, name: str) -> torch.dtype:
        return torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def _select_profile(self, batch: int) -> None:
        fits = [i for i, (lo, hi) in enumerate(self.ranges) if lo <= batch <= hi]
        if not fits:
            raise EngineShapeError(f"batch {batch} is outside the engine's optimization profiles "
                                   f"({', '.join(f'{lo}..{hi}' for lo, hi in self.ranges)}); split the input or "
                                   "rebuild the engine")
        if fits[0] != self.profile:
            if not self.context.set_optimization_profile_async(fits[0], self.cuda.handle(self.stream)):
                raise EngineShapeError(f"TensorRT refused optimization profile {fits[0]}")
            self.profile = fits[0]

    def bind(self, x_cuda: Any) -> list:
        """Set the input shape and addresses for ``x_cuda`` and allocate outputs; returns the output tensors.

        Raises :class:`EngineShapeError` when no profile takes the shape or the engine refuses it.
        """
        cuda = self.cuda
        name = self.input_names[0]
        shape = tuple(x_cuda.shape)
        self.stream.wait_stream(cuda.current_stream())  # the input was made on the caller's stream
        self._select_profile(shape[0])
        with cuda.on(self.stream):
            x_cuda = x_cuda.to(self._torch_dtype(name)).contiguous()
            cuda.record(x_cuda, self.stream)
            self._input = x_cuda  # keep alive while the engine reads it
            if not self.context.set_input_shape(name, shape):
                raise EngineShapeError(f"TensorRT refused input shape {list(shape)} for {name!r}; the engine's "
                                       f"profiles take batch {self.ranges}")
            if not self.context.set_tensor_address(name, x_cuda.data_ptr()):
                raise EngineShapeError(f"TensorRT refused the input buffer of {name!r}")
            self._outputs = []
            for out in self.output_names:
                dims = self.context.get_tensor_shape(out)
                out_shape = tuple(int(dims[i]) for i in range(len(dims)))
                if any(d < 0 for d in out_shape):
                    raise EngineShapeError(f"output {out!r} has no concrete shape ({list(out_shape)}) for input "
                                           f"{list(shape)}")
                tensor = torch.empty(out_shape, dtype=self._torch_dtype(out), device=cuda.device)
                if not self.context.set_tensor_address(out, tensor.data_ptr()):
                    raise EngineShapeError(f"TensorRT refused the output buffer of {out!r}")
                self._outputs.append(tensor)
        return self._outputs

    def enqueue(self) -> None:
        """Launch one inference on the runner's stream (asynchronous: timing and CUDA-graph capture need that)."""
        if not self.context.execute_async_v3(self.cuda.handle(self.stream)):
            raise RuntimeError("TensorRT execution failed")
