"""Latency sampling and its percentile summary."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cdarts_deploy.deploy import profiling, timing


def test_summarize_matches_hand_computed_percentiles():
    times = [float(v) for v in range(1, 101)]  # 1..100 ms
    s = timing.summarize(times, batch=4, warmup=3)
    assert s.mean_ms == 50.5 and s.median_ms == 50.5
    # numpy's linear interpolation: position q*(n-1) in the sorted list
    assert s.p90_ms == pytest.approx(1 + 0.90 * 99)
    assert s.p95_ms == pytest.approx(1 + 0.95 * 99)
    assert s.p99_ms == pytest.approx(1 + 0.99 * 99)
    assert s.std_ms == pytest.approx(np.sqrt(sum((t - 50.5) ** 2 for t in times) / 99))
    assert (s.min_ms, s.max_ms, s.iters, s.warmup) == (1.0, 100.0, 100, 3)
    assert s.throughput_ips == pytest.approx(4 / 0.0505)


def test_time_host_runs_warmup_untimed_and_times_each_call():
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)

    times = timing.time_host(step, warmup=3, iters=5)
    assert len(calls) == 8 and len(times) == 5
    assert all(t >= 2.0 for t in times)


def test_summarize_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="no timed runs"):
        timing.summarize([], batch=1, warmup=0)


def test_sample_host_summarizes_host_timing():
    stats = timing.sample_host(lambda: time.sleep(0.001), batch=2, warmup=1, iters=3)
    assert stats.iters == 3 and stats.batch == 2 and stats.warmup == 1
    assert stats.min_ms >= 1.0 and stats.min_ms <= stats.median_ms <= stats.max_ms


def test_percentiles_carry_their_sample_size_and_say_what_the_sample_supports():
    small = timing.summarize([float(v) for v in range(50)], batch=1, warmup=0)
    assert (small.p90_samples, small.p95_samples, small.p99_samples) == (50, 50, 50)
    assert small.unsupported_percentiles == ["p99"]  # 50 runs: p99 would be the maximum
    assert timing.summarize([1.0] * 5, 1, 0).unsupported_percentiles == ["p90", "p95", "p99"]
    assert timing.summarize([1.0] * 100, 1, 0).unsupported_percentiles == []
    assert timing.DEFAULT_ITERS >= timing.PERCENTILE_MIN_SAMPLES["p99"]
    d = small.as_dict()
    assert list(d)[list(d).index("p99_ms") + 1] == "p99_samples"  # next to its percentile in the JSON


def test_time_events_times_each_call_between_events_on_the_stream():
    log = []

    class Stream:
        def synchronize(self):
            log.append("sync")

    class Event:
        def record(self, stream):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    times = timing.time_events(lambda: time.sleep(0.002), 2, 3, Event, Stream())
    assert len(times) == 3 and all(t >= 2.0 for t in times) and log == ["sync"]


# --------------------------------------------------------------------------- PyTorch timing


SEEN: list = []  # which module objects ran forward (a global: a deepcopy of the model shares it)


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        SEEN.append(self)
        return self.linear(x.to(self.linear.weight.dtype))


def test_measure_torch_times_a_copy_and_leaves_the_callers_model_alone():
    SEEN.clear()
    model = _Recorder().eval()
    weight = model.linear.weight.detach().clone()
    m = profiling.measure_torch(model, (2, 8), 1, 3)
    assert m.stats.iters == 3 and SEEN
    assert all(s is not model for s in SEEN)  # another backend may export `model` next
    assert model.linear.weight.device.type == "cpu" and model.linear.weight.dtype == torch.float32
    assert torch.equal(model.linear.weight, weight)


def test_torch_compile_compiles_once_per_shape_with_static_shapes_and_warms_up(monkeypatch):
    calls = []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    m = profiling.measure_torch(_Recorder().eval(), (2, 8), 0, 2, compile=True)
    assert calls == [{"dynamic": False}]
    assert m.stats.warmup >= profiling.COMPILE_MIN_WARMUP  # never timed cold, even with --warmup 0
    assert m.details["dynamic_shapes"] is False and m.details["compile_s"] >= 0
    assert "dynamic=False" in m.timed_region and "untimed" in m.timed_region


def test_fp32_on_cuda_turns_tf32_off_and_restores_it():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with profiling.fp32_math("cuda", "fp32") as math:
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert math["tf32_matmul"] is False and math["tf32_cudnn"] is False
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with profiling.fp32_math("cuda", "fp16"):
            assert torch.backends.cuda.matmul.allow_tf32  # half precision: not FP32 math, left alone
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_settle_runs_for_the_given_time_and_at_least_the_given_runs():
    calls = []
    start = time.perf_counter()
    runs = timing.settle(lambda: (calls.append(1), time.sleep(0.005)), seconds=0.05)
    assert time.perf_counter() - start >= 0.05 and runs == len(calls) >= 5
    calls.clear()
    assert timing.settle(lambda: calls.append(1), seconds=0.0, min_runs=3) == 3 == len(calls)


def test_interleaved_medians_settle_before_every_block_and_alternate_the_order(monkeypatch):
    from cdarts_deploy.deploy import precision as pr

    order = []

    class Session:
        def __init__(self, name):
            self.name = name

        def get_inputs(self):
            return [type("Input", (), {"name": "x"})()]

        def run(self, outputs, feeds):
            order.append(self.name)

    settled = []
    monkeypatch.setattr(pr, "settle", lambda step, *a, **k: (settled.append(len(order)), step()))
    pr.interleaved_medians({"a": Session("a"), "b": Session("b")}, np.zeros((1, 3, 2, 2), np.float32),
                           iters=2, rounds=2)
    # each block: one settling run, then the timed ones; the second round runs b first
    assert order == ["a", "a", "a", "b", "b", "b", "b", "b", "b", "a", "a", "a"]
    assert settled == [0, 3, 6, 9]
