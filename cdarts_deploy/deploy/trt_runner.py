"""Running serialized TensorRT engines (:func:`cdarts_deploy.deploy.trt.build_engine` builds them).

:class:`TensorRTRunner` splits inputs larger than the engine's optimization profile into chunks the profile
accepts and checks every ``set_input_shape`` result.  Device buffers are PyTorch CUDA tensors, so no
pycuda/cuda-python dependency.  All work of a runner happens on its own stream, which first waits for the stream
that produced the input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .trt import EngineBuildError, EngineShapeError, require_tensorrt


class TorchCuda:
    """The CUDA pieces the runner uses (device, streams), in one place so tests can stand in for them."""

    device = "cuda"

    def __init__(self) -> None:
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
