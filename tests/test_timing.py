"""Latency sampling and its percentile summary."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cdarts_deploy.deploy import timing


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
