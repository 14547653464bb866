"""TensorRT engines from exported ONNX files (TensorRT 10.x / 11.x Python API; NVIDIA GPU only).

Precision follows the ONNX file, not builder flags: TensorRT 11 builds strongly
typed networks only and removed the FP16/INT8 flags, so FP16 engines come from
an FP16 ONNX (:func:`cdarts_deploy.deploy.precision.to_fp16`) and INT8 engines from an
ONNX with explicit Q/DQ nodes (:func:`cdarts_deploy.deploy.precision.quantize_int8`).
On TensorRT 10 the FP16 builder flag on the FP32 ONNX is available as
``fp16_flag=True``.

Device buffers are PyTorch CUDA tensors, so no pycuda/cuda-python dependency.
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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
) -> EngineInfo:
    """Parse ``onnx_path`` and write a serialized engine to ``engine_path`` (atomically).

    ``precision`` only labels the result and picks the build route: the ONNX
    must already carry FP16 tensors or Q/DQ nodes for ``fp16``/``int8``, except
    with ``fp16_flag`` on TensorRT 10, where the FP16 builder flag is set on an
    FP32 ONNX.  The batch dimension gets one optimization profile
    ``min_batch <= opt_batch <= max_batch``.
    """
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
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        chans = tuple(tensor.shape)[1]
        shape = lambda b: (b, chans, *input_hw)  # noqa: E731
        profile.set_shape(tensor.name, shape(min_batch), shape(opt_batch), shape(max_batch))
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return EngineInfo(str(engine_path), precision, trt.__version__, min_batch, opt_batch, max_batch, workspace_mb, route)


class TensorRTRunner:
    """Runs a serialized engine on CUDA tensors; outputs come back as float32 numpy arrays."""

    def __init__(self, engine_path: str | os.PathLike) -> None:
        trt = require_tensorrt()
        import torch

        self._trt = trt
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"{engine_path} is not a TensorRT engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()
        self._outputs: list[Any] = []

    def _torch_dtype(self, name: str):
        return self._torch.from_numpy(np.empty(0, dtype=self._trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def bind(self, x_cuda) -> list:
        """Set the input shape and addresses for ``x_cuda`` and allocate outputs; returns the output tensors."""
        name = self.input_names[0]
        x_cuda = x_cuda.to(self._torch_dtype(name)).contiguous()
        self._input = x_cuda  # keep alive while the engine reads it
        self.context.set_input_shape(name, tuple(x_cuda.shape))
        self.context.set_tensor_address(name, x_cuda.data_ptr())
        self._outputs = []
        for out in self.output_names:
            shape = tuple(self.context.get_tensor_shape(out))
            tensor = self._torch.empty(shape, dtype=self._torch_dtype(out), device="cuda")
            self.context.set_tensor_address(out, tensor.data_ptr())
            self._outputs.append(tensor)
        return self._outputs

    def enqueue(self) -> None:
        """Launch one inference on the runner's stream (asynchronous)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Copy ``batch`` in, run once, copy every output back (for parity checks)."""
        torch = self._torch
        outputs = self.bind(torch.from_numpy(np.ascontiguousarray(batch)).cuda())
        self.enqueue()
        self.stream.synchronize()
        return [t.float().cpu().numpy() for t in outputs]


def engine_outputs(engine_path: str | os.PathLike, batches: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs of an engine for each input batch."""
    runner = TensorRTRunner(engine_path)
    return [runner.run(b) for b in batches]
