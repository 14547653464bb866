"""TensorRT library: one clear user error where there is no NVIDIA GPU or no tensorrt package.

Building and checking a real engine needs an NVIDIA GPU: ``python -m tools.gpu_check`` does that on such a machine.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from cdarts_deploy.deploy import trt, trt_inspect, trt_runner
from cdarts_deploy.deploy.versions import tensorrt_version
from cdarts_deploy.errors import UserError

HAS_TRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


def expected_reason() -> str:
    return "NVIDIA GPU" if not torch.cuda.is_available() else "'tensorrt' Python package"


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT; python -m tools.gpu_check checks engines there")
def test_require_tensorrt_names_what_is_missing_and_the_fix():
    with pytest.raises(trt.TensorRTUnavailable) as info:
        trt.require_tensorrt()
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert expected_reason() in message
    assert "\n" not in message
    assert "ONNX Runtime needs no GPU" in message or "pip install" in message


@pytest.mark.skipif(HAS_TRT, reason="this machine can run TensorRT")
def test_build_engine_fails_before_writing_anything(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not used")
    with pytest.raises(trt.TensorRTUnavailable):
        trt.build_engine(onnx_file, tmp_path / "m.engine", (32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_tensorrt_version_probe_never_touches_the_gpu():
    version = tensorrt_version()
    assert version is None or version[0].isdigit()


# --------------------------------------------------------------------------- a stand-in TensorRT
#
# No GPU here: a fake ``tensorrt`` module with the TensorRT 10/11 Python API the library uses.  Its
# parser reads the real ONNX file (fixed dimensions stay fixed, dynamic ones read -1), its builder
# refuses an optimization profile that disagrees with a fixed dimension (as TensorRT does), and its
# execution context runs the ONNX file in ONNX Runtime on the bound buffers (CPU tensors; data_ptr
# addresses), refusing shapes outside the profile with ``False`` like ``set_input_shape``.

import contextlib
import ctypes
import functools
import json
import sys
import types

import numpy as np


class FakeCuda:
    """Stands in for trt_runner.TorchCuda: CPU tensors, streams and events that record what was asked."""

    device = "cpu"

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.default = FakeStream("default", self)

    def new_stream(self):
        return FakeStream("runner", self)

    def current_stream(self):
        return self.default

    @contextlib.contextmanager
    def on(self, stream):
        self.log.append(("on", stream.name))
        yield

    def handle(self, stream):
        return id(stream)

    def record(self, tensor, stream):
        self.log.append(("record_stream", stream.name))

    def event(self):
        return FakeEvent()

    def pinned(self, tensor):
        return tensor

    def capture(self, step, stream):
        self.log.append(("capture", stream.name))
        return step


class FakeStream:
    def __init__(self, name, cuda):
        self.name, self.cuda = name, cuda

    def wait_stream(self, other):
        self.cuda.log.append(("wait_stream", self.name, other.name))

    def synchronize(self):
        self.cuda.log.append(("synchronize", self.name))


class FakeEvent:
    def record(self, stream):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def _address_array(address: int, shape, dtype=np.float32) -> np.ndarray:
    count = int(np.prod(shape))
    buf = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def make_fake_tensorrt(version: str = "10.9.0", corrupt=None):
    """A module object standing in for ``tensorrt``; ``corrupt(x, outputs)`` makes a wrong engine."""
    import onnx
    import onnxruntime

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.built = []  # (config flags, profile) of each build

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 0

    class BuilderFlag:
        FP16 = "FP16"
        TF32 = "TF32"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self):
            self.inputs, self.path = [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            proto = onnx.load(path)
            inits = {t.name for t in proto.graph.initializer}
            for vi in proto.graph.input:
                if vi.name not in inits:
                    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
                    self.network.inputs.append(Tensor(vi.name, tuple(dims)))
            self.network.path = str(path)
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class ProfilingVerbosity:
        LAYER_NAMES_ONLY, DETAILED = "LAYER_NAMES_ONLY", "DETAILED"

    class LayerInformationFormat:
        ONELINE, JSON = "ONELINE", "JSON"

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob

    class Config:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT's default
            self.profiles = []
            self.builder_optimization_level = 3
            self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
            self.cache = None

        def create_timing_cache(self, blob):
            if blob and not bytes(blob).startswith(b"fake-cache"):
                return None  # not a timing cache of this TensorRT
            return TimingCache(blob or b"fake-cache")

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            (profile,) = config.profiles
            for tensor in network.inputs:
                for shape in profile.shapes[tensor.name]:
                    if any(d >= 0 and d != s for d, s in zip(tensor.shape, shape)):
                        return None  # TensorRT: profile dimensions disagree with the network's fixed ones
            trt.built.append((set(config.flags), profile.shapes))
            trt.configs.append(config)
            if config.cache is not None:  # every build times (and caches) one more tactic
                config.cache.blob += b";tactic"
            return json.dumps({"onnx": network.path, "profile": profile.shapes,
                               "verbosity": config.profiling_verbosity}).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.streams = engine, {}, {}, []

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile[name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def get_tensor_shape(self, name):
            (batch,) = {s[0] for s in self.shapes.values()}
            meta = {o.name: o.shape for o in self.engine.session.get_outputs()}[name]
            return tuple([batch] + [d if isinstance(d, int) else -1 for d in meta[1:]])

        def execute_async_v3(self, stream_handle):
            self.streams.append(stream_handle)
            feed = {n: _address_array(self.addresses[n], s).copy() for n, s in self.shapes.items()}
            outputs = self.engine.session.run(None, feed)
            if corrupt is not None:
                outputs = corrupt(next(iter(feed.values())), outputs)
            for name, value in zip(self.engine.output_names, outputs):
                _address_array(self.addresses[name], value.shape)[...] = value
            return True

    class Inspector:
        def __init__(self, engine):
            self.engine = engine

        def get_engine_information(self, fmt):
            """Layers as TensorRT reports them: Q/DQ-fed convolutions in Int8, FP16 files in Half."""
            assert fmt == LayerInformationFormat.JSON
            proto = onnx.load(self.engine.onnx)
            names = [n.name or n.op_type for n in proto.graph.node]
            if self.engine.verbosity != ProfilingVerbosity.DETAILED:
                return json.dumps({"Layers": names})
            half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
            producers = {o: n.op_type for n in proto.graph.node for o in n.output}
            layers = []
            for node, name in zip(proto.graph.node, names):
                if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
                    continue
                int8 = node.op_type in ("Conv", "Gemm") and producers.get(node.input[0]) == "DequantizeLinear"
                fmt_ = "Int8 NC/32HW32" if int8 else "Half NC/8HW8" if half else "Row major linear FP32"
                layers.append({"Name": name, "LayerType": "CaskConvolution" if node.op_type == "Conv" else node.op_type,
                               "Inputs": [{"Name": node.input[0], "Format/Datatype": fmt_}],
                               "Outputs": [{"Name": node.output[0], "Format/Datatype": fmt_}],
                               "TacticName": "fake_tactic"})
            return json.dumps({"Layers": layers, "Bindings": []})

    class Engine:
        def __init__(self, blob):
            spec = json.loads(blob)
            self.onnx, self.verbosity = spec["onnx"], spec.get("verbosity")
            self.profile = spec["profile"]
            self.session = onnxruntime.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.names = [i.name for i in self.session.get_inputs()] + self.output_names
            self.contexts = []

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.OUTPUT if name in self.output_names else TensorIOMode.INPUT

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_profile_shape(self, name, index):
            return [tuple(s) for s in self.profile[name]]

        def create_execution_context(self):
            self.contexts.append(Context(self))
            return self.contexts[-1]

        def create_engine_inspector(self):
            return Inspector(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine(blob)

    trt.configs = []  # the builder config of each build
    for cls in (Logger, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, TensorIOMode, Builder, Runtime,
                OnnxParser, ProfilingVerbosity, LayerInformationFormat):
        setattr(trt, cls.__name__, cls)
    trt.nptype = lambda dtype: dtype
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake TensorRT 10 (CUDA reported present); returns a function to swap in another fake."""

    def install(**kwargs):
        module = make_fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", module)
        return module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return install


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


@pytest.fixture(scope="module")
def static_onnx(tiny, tmp_path_factory):
    """The tiny network's ONNX with its batch dimension fixed to 2 (as ``--static-batch --batch-size 2`` exports)."""
    import onnx

    _, path, _ = tiny
    proto = onnx.load(str(path))
    for vi in (*proto.graph.input, *proto.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 2
    out = tmp_path_factory.mktemp("static") / "static.onnx"
    onnx.save(proto, str(out))
    return out


def test_static_batch_onnx_gets_the_static_profile(fake_trt, tiny, static_onnx, tmp_path):
    module = fake_trt()
    info = trt.build_engine(static_onnx, tmp_path / "s.engine", (32, 32), min_batch=1, opt_batch=2, max_batch=32)
    assert (info.min_batch, info.opt_batch, info.max_batch) == (2, 2, 2)
    ((_, shapes),) = module.built
    assert list(shapes.values()) == [[[2, 3, 32, 32]] * 3]
    # a dynamic-batch ONNX keeps the requested range
    info = trt.build_engine(tiny[1], tmp_path / "d.engine", (32, 32), min_batch=1, opt_batch=2, max_batch=8)
    assert (info.min_batch, info.opt_batch, info.max_batch) == (1, 2, 8)


def test_profile_shapes_keeps_fixed_dimensions():
    assert trt.profile_shapes((-1, 3, -1, -1), (32, 48), 1, 4, 8) == ((1, 3, 32, 48), (4, 3, 32, 48), (8, 3, 32, 48))
    assert trt.profile_shapes((4, 3, 32, 32), (64, 64), 1, 1, 32) == ((4, 3, 32, 32),) * 3
    with pytest.raises(trt.EngineBuildError, match="NCHW"):
        trt.profile_shapes((-1, 10), (32, 32), 1, 1, 1)


@pytest.mark.parametrize("precision, tf32, flag_on", [("fp32", False, False), ("fp16", False, False),
                                                      ("fp32", True, True)])
def test_fp32_engines_clear_tf32(fake_trt, tiny, tmp_path, precision, tf32, flag_on):
    module = fake_trt()
    info = trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), precision, tf32=tf32)
    ((flags, _),) = module.built
    assert ("TF32" in flags) is flag_on and info.tf32 is flag_on and info.as_dict()["tf32"] is flag_on


def test_runner_chunks_inputs_larger_than_the_profile(fake_trt, tiny, tmp_path):
    from cdarts_deploy.deploy.parity import torch_outputs

    fake_trt()
    model, path, images = tiny
    trt.build_engine(path, tmp_path / "m.engine", (32, 32), max_batch=4)
    runner = trt_runner.TensorRTRunner(tmp_path / "m.engine", cuda=FakeCuda())
    batch = images[:11]
    (out,) = runner.run(batch)
    assert out.shape == (11, 10)
    assert np.allclose(out, torch_outputs(model, batch)[0], atol=1e-4)
    shapes = [c for c in runner.context.streams]
    assert len(shapes) == 3  # 4 + 4 + 3 samples


def test_runner_pads_the_last_chunk_of_a_static_engine(fake_trt, tiny, static_onnx, tmp_path):
    from cdarts_deploy.deploy.parity import torch_outputs

    fake_trt()
    model, _, images = tiny
    trt.build_engine(static_onnx, tmp_path / "s.engine", (32, 32), opt_batch=2, max_batch=32)
    runner = trt_runner.TensorRTRunner(tmp_path / "s.engine", cuda=FakeCuda())
    (out,) = runner.run(images[:5])
    assert out.shape == (5, 10) and np.allclose(out, torch_outputs(model, images[:5])[0], atol=1e-4)


def test_a_refused_input_shape_is_a_clear_error(fake_trt, tiny, tmp_path):
    fake_trt()
    trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), max_batch=4)
    runner = trt_runner.TensorRTRunner(tmp_path / "m.engine", cuda=FakeCuda())
    with pytest.raises(trt.EngineShapeError, match="outside the engine's optimization profile"):
        runner.bind(torch.zeros(5, 3, 32, 32))
    runner.max_batch = 8  # as if the profile were misread: TensorRT's False must still stop it
    with pytest.raises(trt.EngineShapeError, match=r"TensorRT refused input shape \[5, 3, 32, 32\]"):
        runner.bind(torch.zeros(5, 3, 32, 32))


def test_runner_waits_for_the_input_stream_and_runs_on_its_own(fake_trt, tiny, tmp_path):
    fake_trt()
    trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), max_batch=4)
    cuda = FakeCuda()
    runner = trt_runner.TensorRTRunner(tmp_path / "m.engine", cuda=cuda)
    runner.run(np.zeros((2, 3, 32, 32), np.float32))
    log = cuda.log
    assert ("wait_stream", "runner", "default") in log and ("record_stream", "runner") in log
    assert log.index(("wait_stream", "runner", "default")) < log.index(("synchronize", "runner"))
    assert runner.context.streams == [id(runner.stream)]  # executed on the stream it waited with


@pytest.fixture(scope="module")
def tiny_reference(tiny):
    from cdarts_deploy.deploy import parity
    from cdarts_deploy.deploy.model_spec import random_batch

    model, _, images = tiny
    return parity.TorchReference(model, {"random b1": random_batch(1, (32, 32), seed=5), parity.IMAGES: images[:6]})


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_check_fails_on_a_wrong_engine(fake_trt, tiny, tiny_reference, tmp_path, precision):
    from cdarts_deploy.deploy import parity

    path = tiny[1]
    fake_trt()
    trt.build_engine(path, tmp_path / "ok.engine", (32, 32), precision, max_batch=4)
    runner = trt_runner.TensorRTRunner(tmp_path / "ok.engine", cuda=FakeCuda())
    rows = parity.compare_runtime(tiny_reference, runner.run, runner.output_names, precision, "tensorrt")
    assert all(r["passed"] for r in rows)
    wrong = {"zeros": lambda x, outs: trt_session_zeros(path, x),
             "scaled": lambda x, outs: [o * 2.0 for o in outs]}
    for what, corrupt in wrong.items():
        fake_trt(corrupt=corrupt)
        trt.build_engine(path, tmp_path / f"{what}.engine", (32, 32), precision, max_batch=4)
        runner = trt_runner.TensorRTRunner(tmp_path / f"{what}.engine", cuda=FakeCuda())
        rows = parity.compare_runtime(tiny_reference, runner.run, runner.output_names, precision, "tensorrt")
        assert not any(r["passed"] for r in rows), what
        assert "tensorrt" in parity.failures(rows)[0]


def trt_session_zeros(path, x):
    """The right network's outputs on zeros: an engine that lost its input."""
    session = _session(str(path))
    return session.run(None, {session.get_inputs()[0].name: np.zeros_like(x)})


@functools.lru_cache(maxsize=2)
def _session(path: str):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_tensorrt_timing_reports_compute_host_latency_enqueue_and_pipelined_throughput(fake_trt, tiny, tmp_path):
    from cdarts_deploy.deploy import profiling

    fake_trt()
    trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), max_batch=4)
    cuda = FakeCuda()
    m = profiling.measure_tensorrt(tmp_path / "m.engine", (2, 3, 32, 32), 1, 3, "fp32", cuda_graph=True, cuda=cuda)
    d = m.details
    for key in ("gpu_compute", "host_latency", "enqueue"):
        s = d[key]
        assert s["iters"] == 3 and s["batch"] == 2 and s["min_ms"] <= s["median_ms"] <= s["max_ms"], key
        assert {"mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms"} <= set(s)
    assert d["throughput_ips_pipelined"] > 0 and d["cuda_graph"] is True
    assert ("capture", "runner") in cuda.log
    assert m.stats.as_dict() == d["gpu_compute"] and "GPU compute" in m.timed_region


# --------------------------------------------------------------------------- timing cache, level, layer report


def test_timing_cache_file_is_created_then_reused_by_the_next_build(fake_trt, tiny, tmp_path):
    module = fake_trt()
    cache = tmp_path / "trt.cache"
    first = trt.build_engine(tiny[1], tmp_path / "a.engine", (32, 32), timing_cache=cache)
    assert first.timing_cache["reused"] is False and first.timing_cache["read_bytes"] == 0
    assert cache.read_bytes() == b"fake-cache;tactic" and first.timing_cache["written_bytes"] == len(cache.read_bytes())
    second = trt.build_engine(tiny[1], tmp_path / "b.engine", (32, 32), timing_cache=cache)
    assert second.timing_cache["reused"] is True and second.timing_cache["read_bytes"] == len(b"fake-cache;tactic")
    assert module.configs[1].cache.blob.startswith(b"fake-cache;tactic")  # the second build started from the first's
    assert cache.read_bytes() == b"fake-cache;tactic;tactic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.engine", "b.engine", "trt.cache"]  # no temporaries
    # no cache asked for: none read or written
    third = trt.build_engine(tiny[1], tmp_path / "c.engine", (32, 32))
    assert third.timing_cache is None and module.configs[2].cache is None


def test_a_foreign_timing_cache_is_refused_and_nothing_is_written(fake_trt, tiny, tmp_path):
    fake_trt()
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"something else")
    with pytest.raises(trt.EngineBuildError, match="timing cache"):
        trt.build_engine(tiny[1], tmp_path / "a.engine", (32, 32), timing_cache=cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trt.cache"] and cache.read_bytes() == b"something else"


@pytest.mark.parametrize("level", [0, 5])
def test_builder_optimization_level_is_set(fake_trt, tiny, tmp_path, level):
    module = fake_trt()
    info = trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), optimization_level=level)
    assert module.configs[0].builder_optimization_level == level and info.optimization_level == level
    trt.build_engine(tiny[1], tmp_path / "d.engine", (32, 32))
    assert module.configs[1].builder_optimization_level == 3  # TensorRT's default left alone


@pytest.mark.parametrize("bad", [dict(optimization_level=6), dict(optimization_level=-1),
                                 dict(timing_cache="no/such/folder/trt.cache")])
def test_bad_level_or_cache_path_is_a_user_error_before_any_build(fake_trt, tiny, tmp_path, bad):
    module = fake_trt()
    if "timing_cache" in bad:
        bad = dict(timing_cache=tmp_path / bad["timing_cache"])
    with pytest.raises(UserError):
        trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), **bad)
    assert module.built == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="folder"):
        trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), timing_cache=tmp_path)


def test_engine_info_lists_every_layer_with_its_precision(fake_trt, tiny, tmp_path):
    from cdarts_deploy.deploy import precision as pr

    module = fake_trt()
    model, path, images = tiny
    fp32 = trt.build_engine(path, tmp_path / "f.engine", (32, 32))
    assert module.configs[0].profiling_verbosity == "DETAILED"
    assert fp32.layers and {layer["precision"] for layer in fp32.layers} == {"fp32"}
    assert fp32.layer_precisions == {"fp32": len(fp32.layers)}
    assert all(layer["name"] and layer["type"] for layer in fp32.layers)
    qdq = tmp_path / "q.onnx"
    pr.quantize_int8(path, qdq, images[:8], target="tensorrt")
    int8 = trt.build_engine(qdq, tmp_path / "q.engine", (32, 32), "int8")
    counts = int8.layer_precisions
    assert counts["int8"] > 5 and sum(counts.values()) == len(int8.layers)
    convs = [layer for layer in int8.layers if layer["type"] == "CaskConvolution"]
    assert convs and all(layer["precision"] == "int8" for layer in convs)
    assert int8.as_dict()["layer_precisions"] == counts  # it reaches the export report


def test_layer_table_reads_names_only_and_broken_information():
    assert trt_inspect.layer_table('{"Layers": ["conv1", "relu1"]}') == [
        {"name": "conv1", "type": None, "precision": "unknown"},
        {"name": "relu1", "type": None, "precision": "unknown"}]
    assert trt_inspect.layer_table("not json") == []
    rows = trt_inspect.layer_table(json.dumps({"Layers": [{"Name": "c", "LayerType": "Conv",
                                                    "Outputs": [{"Format/Datatype": "Half NC/8HW8"}]}]}))
    assert rows[0]["precision"] == "fp16"
    assert trt_inspect.precision_counts(rows + rows + [{"precision": "int8"}]) == {"fp16": 2, "int8": 1}


@pytest.mark.parametrize("args, needle", [
    (["--trt-opt-level", "9"], "0 to 5"),
    (["--trt-opt-level", "x"], "0 to 5"),
    (["--onnx", "--trt-timing-cache", "c.cache"], "add --trt"),
    (["--onnx", "--trt-opt-level", "2"], "add --trt"),
])
def test_export_tensorrt_options_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    from cdarts_deploy.commands import export as export_cmd

    try:
        code = export_cmd.main(["darts_v2", *args, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()
