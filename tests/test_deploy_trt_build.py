"""build_engine's own steps around Polygraphy's (no GPU here): Polygraphy's network, build and deserialization calls
are stood in for by recorders, so what is asked of them and what happens with their results is checked: the
profiles and configuration passed, the layer-precision check before anything is written, the timing cache written
back atomically, the report."""

from __future__ import annotations

import io
import sys
import types

import pytest
import torch

from cdarts_deploy.deploy import trt
from test_deploy_trt import FakeEngine as RangedEngine
from test_deploy_trt_inspect import inspector_json


class FakeEngine:
    def __init__(self, info):
        self.info = info

    def create_engine_inspector(self):
        return types.SimpleNamespace(get_engine_information=lambda fmt: self.info)


@pytest.fixture
def polygraphy_build(monkeypatch):
    """A stand-in tensorrt (the names build_engine reads) and recorders for Polygraphy's TensorRT calls; returns a
    function that sets the engine's layer precision and TensorRT major version, and the record of calls."""
    import polygraphy.backend.trt as pbt

    calls: dict = {}
    state = {"precision": "fp32", "version": 10}

    module = types.ModuleType("tensorrt")
    module.__version__ = "10.9.0"
    module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    module.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def network(path, strongly_typed=None):
        calls["network"] = (path, strongly_typed)
        return "network"

    def build(network, config, save_timing_cache=None):
        calls["config"] = config
        if save_timing_cache is not None:
            before = config.timing_cache_path.read() if config.timing_cache_path is not None else b""
            save_timing_cache.write(before + b";tactic")
        return b"engine-bytes"

    monkeypatch.setattr(pbt, "NetworkFromOnnxPath", network)
    monkeypatch.setattr(pbt, "engine_bytes_from_network", build)
    monkeypatch.setattr(pbt, "engine_from_bytes",
                        lambda blob: FakeEngine(inspector_json(state["version"], state["precision"])))

    def set_engine(precision, version=10):
        state.update(precision=precision, version=version)
        module.__version__ = f"{version}.0.0"
    return set_engine, calls


@pytest.mark.parametrize("version", [10, 11])
def test_int8_build_with_fp32_layers_fails_and_writes_nothing(polygraphy_build, tiny_network, tmp_path, version):
    set_engine, _ = polygraphy_build
    set_engine("fp32", version)
    with pytest.raises(trt.EnginePrecisionError, match="built for int8"):
        trt.build_engine(tiny_network[1], tmp_path / "m.engine", (32, 32), "int8", timing_cache=tmp_path / "c")
    assert list(tmp_path.iterdir()) == []
    set_engine("int8", version)
    info = trt.build_engine(tiny_network[1], tmp_path / "m.engine", (32, 32), "int8", batches=[1, 8])
    assert (tmp_path / "m.engine").read_bytes() == b"engine-bytes"
    assert info.precision_check["passed"] and info.layer_precisions == {"int8": 7}
    assert [p["input"][1][0] for p in info.profiles] == [1, 8] and (info.min_batch, info.max_batch) == (1, 8)
    assert info.as_dict()["precision_check"]["in_asked_precision"] == 5


def test_config_passed_to_polygraphy_and_timing_cache_round_trip(polygraphy_build, tiny_network, tmp_path):
    set_engine, calls = polygraphy_build
    cache = tmp_path / "trt.cache"
    first = trt.build_engine(tiny_network[1], tmp_path / "a.engine", (32, 32), optimization_level=2,
                             timing_cache=cache, workspace_mb=64)
    config = calls["config"]
    assert config.tf32 is False and config.builder_optimization_level == 2
    assert config.memory_pool_limits == {"WORKSPACE": 64 << 20}
    assert calls["network"] == (str(tiny_network[1]), True)  # strongly typed on TensorRT 10
    assert first.timing_cache == {"path": str(cache), "read_bytes": 0, "reused": False, "written_bytes": 7}
    assert cache.read_bytes() == b";tactic" and config.timing_cache_path is None
    second = trt.build_engine(tiny_network[1], tmp_path / "b.engine", (32, 32), timing_cache=cache)
    assert isinstance(calls["config"].timing_cache_path, io.BytesIO)  # read from memory: no lock file left
    assert second.timing_cache["reused"] is True and cache.read_bytes() == b";tactic;tactic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.engine", "b.engine", "trt.cache"]  # no temporaries
    assert first.profile == {"input": [[1, 3, 32, 32], [1, 3, 32, 32], [32, 3, 32, 32]]}


def test_fp16_flag_route_is_tensorrt_10_only(polygraphy_build, tiny_network, tmp_path):
    set_engine, calls = polygraphy_build
    set_engine("fp16", 10)
    info = trt.build_engine(tiny_network[1], tmp_path / "h.engine", (32, 32), "fp16", fp16_flag=True)
    assert calls["config"].fp16 is True and calls["network"][1] is None and "builder flag" in info.build_route
    set_engine("fp16", 11)
    with pytest.raises(ValueError, match="TensorRT 10 route"):
        trt.build_engine(tiny_network[1], tmp_path / "x.engine", (32, 32), "fp16", fp16_flag=True)


def test_engine_runner_switches_profiles_through_polygraphys_runner(polygraphy_build, tiny_network, monkeypatch):
    """EngineRunner over a stand-in TrtRunner (ONNX Runtime inside): chunks, profile switches, float32 outputs."""
    import numpy as np
    import onnxruntime
    import polygraphy.backend.trt as pbt

    from cdarts_deploy.deploy import trt_runner
    from cdarts_deploy.deploy.parity import torch_outputs

    model, path, images = tiny_network
    module = sys.modules["tensorrt"]
    module.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    module.nptype = lambda dtype: dtype
    log: list = []

    class StandInTrtRunner:
        def __init__(self, engine):
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.is_active = False

        def activate(self):
            self.is_active = True

        def deactivate(self):
            self.is_active = False

        def set_profile(self, index):
            log.append(("profile", index))

        def infer(self, feed):
            (x,) = feed.values()
            log.append(("infer", len(x)))
            return dict(zip(["output0"], self.session.run(None, feed)))

    monkeypatch.setattr(trt_runner, "load_engine", lambda p: RangedEngine(path, [(1, 1), (8, 8)]))
    monkeypatch.setattr(pbt, "TrtRunner", StandInTrtRunner)
    runner = trt_runner.EngineRunner(path)
    (out,) = runner.run(images[:10])
    assert out.shape == (10, 10) and out.dtype == np.float32
    assert np.allclose(out, torch_outputs(model, images[:10])[0], atol=1e-4)
    assert log == [("profile", 1), ("infer", 8), ("infer", 8)]  # 8, then 2 padded to the batch-8 profile
    runner.close()
    assert not runner._runner.is_active
