"""TensorRT library: one clear user error where there is no NVIDIA GPU or no tensorrt package; what goes into
Polygraphy's builder configuration (profiles, TF32, level, timing cache); the runners' chunking over profiles (run
here through Polygraphy's real ONNX Runtime runner) and the timing runner's binding (a stand-in engine).

Building and checking a real engine needs an NVIDIA GPU: ``python -m tools.gpu_check`` does that on such a machine.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from cdarts_deploy.deploy import trt, trt_runner
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


# --------------------------------------------------------------------------- what Polygraphy is asked to build

import contextlib
import ctypes
import sys
import types

import numpy as np
import onnx


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


@pytest.fixture(scope="module")
def static_onnx(tiny, tmp_path_factory):
    """The tiny network's ONNX with its batch dimension fixed to 2 (as ``--static-batch --batch-size 2`` exports)."""
    _, path, _ = tiny
    proto = onnx.load(str(path))
    for vi in (*proto.graph.input, *proto.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 2
    out = tmp_path_factory.mktemp("static") / "static.onnx"
    onnx.save(proto, str(out))
    return out


def test_polygraphy_trt_backend_imports_without_tensorrt():
    """Polygraphy imports TensorRT lazily: the builder configuration is made on a machine without it."""
    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "from polygraphy.backend.trt import CreateConfig, TrtRunner, NetworkFromOnnxPath\n"
            "from cdarts_deploy.deploy import trt, trt_runner, trt_compare\n"
            "trt.create_config(trt.plan_profiles([('x', (-1, 3, 8, 8))], (8, 8)))\n"
            "print('ok')")
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_static_batch_onnx_gets_the_static_profile(tiny, static_onnx):
    inputs = trt.onnx_inputs(static_onnx)
    assert inputs == [("input", (2, 3, 32, 32))]
    assert trt.plan_profiles(inputs, (32, 32), 1, 2, 32) == [{"input": [[2, 3, 32, 32]] * 3}]
    # several timed batches still give one profile: the file takes batch 2 only
    assert trt.plan_profiles(inputs, (32, 32), batches=[1, 8]) == [{"input": [[2, 3, 32, 32]] * 3}]
    dynamic = trt.onnx_inputs(tiny[1])
    assert dynamic[0][1][0] == -1
    assert trt.plan_profiles(dynamic, (32, 32), 1, 2, 8) == [{"input": [[1, 3, 32, 32], [2, 3, 32, 32],
                                                                        [8, 3, 32, 32]]}]


def test_timed_batches_get_one_exact_profile_each():
    """Tactics are chosen for a profile's opt shape: each timed batch gets its own profile, opt = that batch."""
    profiles = trt.plan_profiles([("x", (-1, 3, -1, -1))], (32, 48), batches=[8, 1, 8])
    assert profiles == [{"x": [[1, 3, 32, 48]] * 3}, {"x": [[8, 3, 32, 48]] * 3}]
    config = trt.create_config(profiles)
    assert [(p["x"].min, p["x"].opt, p["x"].max) for p in config.profiles] == [
        ([1, 3, 32, 48],) * 3, ([8, 3, 32, 48],) * 3]
    with pytest.raises(ValueError):
        trt.plan_profiles([("x", (-1, 3, 32, 32))], (32, 32), batches=[0])
    with pytest.raises(ValueError):
        trt.plan_profiles([("x", (-1, 3, 32, 32))], (32, 32), 4, 2, 8)


def test_profile_shapes_keeps_fixed_dimensions():
    assert trt.profile_shapes((-1, 3, -1, -1), (32, 48), 1, 4, 8) == ((1, 3, 32, 48), (4, 3, 32, 48), (8, 3, 32, 48))
    assert trt.profile_shapes((4, 3, 32, 32), (64, 64), 1, 1, 32) == ((4, 3, 32, 32),) * 3
    with pytest.raises(trt.EngineBuildError, match="NCHW"):
        trt.profile_shapes((-1, 10), (32, 32), 1, 1, 1)


@pytest.mark.parametrize("tf32, fp16_flag", [(False, False), (True, False), (False, True)])
def test_builder_config_tf32_off_unless_asked(tf32, fp16_flag):
    config = trt.create_config(trt.plan_profiles([("x", (-1, 3, 8, 8))], (8, 8)), tf32=tf32, fp16_flag=fp16_flag)
    assert config.tf32 is tf32 and config.fp16 is fp16_flag and config.int8 is False
    # Polygraphy's default verbosity (None -> DETAILED) is what the engine inspector needs for datatypes
    assert config.profiling_verbosity is None


@pytest.mark.parametrize("level", [None, 0, 5])
def test_builder_config_optimization_level_and_timing_cache(level):
    profiles = trt.plan_profiles([("x", (-1, 3, 8, 8))], (8, 8))
    config = trt.create_config(profiles, optimization_level=level, timing_cache=b"cache-bytes")
    assert config.builder_optimization_level == level
    assert config.timing_cache_path.read() == b"cache-bytes"  # read from memory: no lock file beside the cache
    assert trt.create_config(profiles).timing_cache_path is None


def test_unreadable_onnx_is_a_build_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(trt.EngineBuildError, match="not a readable ONNX file"):
        trt.onnx_inputs(bad)


@pytest.mark.parametrize("bad", [dict(optimization_level=6), dict(optimization_level=-1),
                                 dict(timing_cache="no/such/folder/trt.cache")])
def test_bad_level_or_cache_path_is_a_user_error_before_any_build(tiny, tmp_path, bad):
    if "timing_cache" in bad:
        bad = dict(timing_cache=tmp_path / bad["timing_cache"])
    with pytest.raises(UserError):
        trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), **bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="folder"):
        trt.build_engine(tiny[1], tmp_path / "m.engine", (32, 32), timing_cache=tmp_path)


# --------------------------------------------------------------------------- running over several profiles


def test_chunks_cover_the_batch_with_the_least_padding():
    plan = trt_runner.plan_chunks(11, [(1, 4)])
    assert [(c.start, c.stop, c.profile, c.pad) for c in plan] == [(0, 4, 0, 0), (4, 8, 0, 0), (8, 11, 0, 0)]
    # exact profiles of batches 1 and 8: full chunks of 8, the rest one by one... or padded to 8 where that is
    # the only profile that takes it
    plan = trt_runner.plan_chunks(11, [(1, 1), (8, 8)])
    assert [(c.stop - c.start, c.profile, c.pad) for c in plan] == [(8, 1, 0), (3, 1, 5)]
    plan = trt_runner.plan_chunks(9, [(1, 1), (8, 8)])
    assert [(c.stop - c.start, c.profile, c.pad) for c in plan] == [(8, 1, 0), (1, 0, 0)]
    assert [(c.stop - c.start, c.pad) for c in trt_runner.plan_chunks(5, [(2, 2)])] == [(2, 0), (2, 0), (1, 1)]
    with pytest.raises(trt.EngineShapeError):
        trt_runner.plan_chunks(3, [])


@contextlib.contextmanager
def polygraphy_onnxrt(path):
    """Polygraphy's real ONNX Runtime runner (CPU): the stand-in for TrtRunner that runs here."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    with trt.polygraphy_log("ERROR"), OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"])) as runner:
        yield runner


def chunk_infer(runner, seen, corrupt=None):
    def infer(chunk, profile):
        seen.append((len(chunk), profile))
        out = runner.infer({"input": chunk})
        values = [out[name] for name in out]
        return corrupt(chunk, values) if corrupt else values
    return infer


@pytest.mark.parametrize("ranges, calls", [([(1, 4)], [(4, 0), (4, 0), (3, 0)]),
                                           ([(1, 1), (8, 8)], [(8, 1), (8, 1)])])
def test_run_chunked_through_polygraphy_matches_pytorch(tiny, ranges, calls):
    from cdarts_deploy.deploy.parity import torch_outputs

    model, path, images = tiny
    seen = []
    with polygraphy_onnxrt(path) as runner:
        (out,) = trt_runner.run_chunked(chunk_infer(runner, seen), images[:11], ranges)
    assert out.shape == (11, 10) and out.dtype == np.float32
    assert np.allclose(out, torch_outputs(model, images[:11])[0], atol=1e-4)
    assert seen == calls


def test_static_profile_pads_the_last_chunk_and_drops_the_padding(tiny, static_onnx):
    from cdarts_deploy.deploy.parity import torch_outputs

    model, _, images = tiny
    seen = []
    with polygraphy_onnxrt(static_onnx) as runner:
        (out,) = trt_runner.run_chunked(chunk_infer(runner, seen), images[:5], [(2, 2)])
    assert out.shape == (5, 10) and np.allclose(out, torch_outputs(model, images[:5])[0], atol=1e-4)
    assert seen == [(2, 0)] * 3


@pytest.fixture(scope="module")
def tiny_reference(tiny):
    from cdarts_deploy.deploy import parity
    from cdarts_deploy.deploy.model_spec import random_batch

    model, _, images = tiny
    return parity.TorchReference(model, {"random b1": random_batch(1, (32, 32), seed=5), parity.IMAGES: images[:6]})


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_parity_rows_fail_on_a_wrong_engine(tiny, tiny_reference, precision):
    """The export's TensorRT parity path (run_chunked + compare_runtime) refuses wrong outputs."""
    from cdarts_deploy.deploy import parity

    path = tiny[1]
    with polygraphy_onnxrt(path) as runner:
        run = lambda x: trt_runner.run_chunked(chunk_infer(runner, []), x, [(1, 4)])  # noqa: E731
        rows = parity.compare_runtime(tiny_reference, run, ["output0"], precision, "tensorrt")
        assert all(r["passed"] for r in rows)
        wrong = {"zeros": lambda x, outs: list(runner.infer({"input": np.zeros_like(x)}).values()),
                 "scaled": lambda x, outs: [o * 2.0 for o in outs]}
        for what, corrupt in wrong.items():
            run = lambda x: trt_runner.run_chunked(chunk_infer(runner, [], corrupt), x, [(1, 4)])  # noqa: E731
            rows = parity.compare_runtime(tiny_reference, run, ["output0"], precision, "tensorrt")
            assert not any(r["passed"] for r in rows), what
            assert "tensorrt" in parity.failures(rows)[0]


# --------------------------------------------------------------------------- the timing runner (a stand-in engine)
#
# No GPU here: FakeCuda gives CPU tensors and streams that log what was asked; FakeEngine has the ICudaEngine /
# IExecutionContext calls the timing runner makes and runs the ONNX file in ONNX Runtime on the bound buffers
# (data_ptr addresses), refusing shapes outside the active profile with False like ``set_input_shape``.


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


class FakeEngine:
    def __init__(self, onnx_path, ranges):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ranges = ranges
        self.contexts = []

    num_io_tensors = property(lambda self: len(self.inputs) + len(self.outputs))
    num_optimization_profiles = property(lambda self: len(self.ranges))

    def get_tensor_name(self, i):
        return (self.inputs + self.outputs)[i]

    def get_tensor_mode(self, name):
        return "OUTPUT" if name in self.outputs else "INPUT"

    def get_tensor_dtype(self, name):
        return np.float32

    def get_tensor_profile_shape(self, name, index):
        lo, hi = self.ranges[index]
        return (lo, 3, 32, 32), (hi, 3, 32, 32), (hi, 3, 32, 32)

    def create_execution_context(self):
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.streams, self.profile = engine, {}, {}, [], 0
        self.profiles_set = []

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        self.profiles_set.append(index)
        return True

    def set_input_shape(self, name, shape):
        lo, hi = self.engine.ranges[self.profile]
        if not lo <= shape[0] <= hi:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name):
        (batch,) = {s[0] for s in self.shapes.values()}
        return (batch, 10)

    def execute_async_v3(self, stream_handle):
        self.streams.append(stream_handle)
        feed = {n: _address_array(self.addresses[n], s).copy() for n, s in self.shapes.items()}
        for name, value in zip(self.engine.outputs, self.engine.session.run(None, feed)):
            _address_array(self.addresses[name], value.shape)[...] = value
        return True


@pytest.fixture
def fake_trt(monkeypatch):
    """A stand-in ``tensorrt`` module (the few names the timing runner reads) with CUDA reported present."""
    module = types.ModuleType("tensorrt")
    module.__version__ = "10.9.0"
    module.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    module.nptype = lambda dtype: dtype
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return module


def test_timing_runner_selects_the_profile_of_each_batch(fake_trt, tiny):
    from cdarts_deploy.deploy.parity import torch_outputs

    model, path, images = tiny
    runner = trt_runner.TensorRTRunner(path, cuda=FakeCuda(), engine=FakeEngine(path, [(1, 1), (8, 8)]))
    for batch, profile in ((8, 1), (1, 0), (8, 1)):
        (out,) = runner.bind(torch.from_numpy(images[:batch]))
        runner.enqueue()
        assert runner.profile == profile
        assert np.allclose(out.numpy(), torch_outputs(model, images[:batch])[0], atol=1e-4)
    assert runner.context.profiles_set == [1, 0, 1]


def test_a_refused_input_shape_is_a_clear_error(fake_trt, tiny):
    path = tiny[1]
    runner = trt_runner.TensorRTRunner(path, cuda=FakeCuda(), engine=FakeEngine(path, [(1, 4)]))
    with pytest.raises(trt.EngineShapeError, match="outside the engine's optimization profiles"):
        runner.bind(torch.zeros(5, 3, 32, 32))
    runner.ranges = [(1, 8)]  # as if the profile were misread: TensorRT's False must still stop it
    with pytest.raises(trt.EngineShapeError, match=r"TensorRT refused input shape \[5, 3, 32, 32\]"):
        runner.bind(torch.zeros(5, 3, 32, 32))


def test_runner_waits_for_the_input_stream_and_runs_on_its_own(fake_trt, tiny):
    path = tiny[1]
    cuda = FakeCuda()
    runner = trt_runner.TensorRTRunner(path, cuda=cuda, engine=FakeEngine(path, [(1, 4)]))
    runner.bind(torch.zeros(2, 3, 32, 32))
    runner.enqueue()
    assert ("wait_stream", "runner", "default") in cuda.log and ("record_stream", "runner") in cuda.log
    assert runner.context.streams == [id(runner.stream)]  # executed on the stream it waited with


def test_tensorrt_timing_reports_compute_host_latency_enqueue_and_pipelined_throughput(fake_trt, tiny, monkeypatch):
    from cdarts_deploy.deploy import profiling

    path = tiny[1]
    engine = FakeEngine(path, [(2, 2)])
    monkeypatch.setattr(trt_runner, "load_engine", lambda p: engine)
    cuda = FakeCuda()
    m = profiling.measure_tensorrt(path, (2, 3, 32, 32), 1, 3, "fp32", cuda_graph=True, cuda=cuda)
    d = m.details
    for key in ("gpu_compute", "host_latency", "enqueue"):
        s = d[key]
        assert s["iters"] == 3 and s["batch"] == 2 and s["min_ms"] <= s["median_ms"] <= s["max_ms"], key
        assert {"mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms"} <= set(s)
    assert d["throughput_ips_pipelined"] > 0 and d["cuda_graph"] is True
    assert ("capture", "runner") in cuda.log
    assert m.stats.as_dict() == d["gpu_compute"] and "GPU compute" in m.timed_region


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
