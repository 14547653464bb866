"""Latency sampling and its percentile summary: the one timing code of every command.

* warm-up runs first and is not timed; after switching from one session to another, :func:`settle`
  re-warms for a fixed time;
* on the host every run is timed with ``time.perf_counter`` around one synchronous call (with an
  optional device synchronisation); on CUDA with CUDA events recorded on the stream;
* a percentile needs enough samples to be more than the maximum: p90 >= 10, p95 >= 20, p99 >= 100
  timed runs (:data:`PERCENTILE_MIN_SAMPLES`).  Every percentile carries its sample size
  (``p99_samples``); those the sample cannot support are listed in ``unsupported_percentiles``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

#: Fewest timed runs for which a percentile is an estimate rather than the sample's maximum:
#: the nearest-rank p-th percentile of n values is below the maximum only when n >= 1 / (1 - p).
PERCENTILE_MIN_SAMPLES = {"p90": 10, "p95": 20, "p99": 100}

#: Default number of timed runs: enough for every percentile printed (p99 needs 100), with margin.
DEFAULT_ITERS = 200

#: Seconds of untimed runs after switching to another session in an interleaved measurement.  The session
#: timed before leaves its thread pool spinning for a while, which slows the next session's first runs.
SWITCH_SETTLE_S = 0.15


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch in milliseconds over ``iters`` timed runs."""

    batch: int
    iters: int
    warmup: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p90_samples: int
    p95_ms: float
    p95_samples: int
    p99_ms: float
    p99_samples: int
    unsupported_percentiles: list
    std_ms: float
    min_ms: float
    max_ms: float
    throughput_ips: float  # images per second at the mean latency

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: Sequence[float], batch: int, warmup: int) -> LatencyStats:
    """Percentile statistics of per-run latencies (numpy's linear interpolation)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed runs to summarize")
    mean = float(t.mean())
    p90, p95, p99 = (float(v) for v in np.percentile(t, [90, 95, 99]))
    n = int(t.size)
    return LatencyStats(
        batch=batch,
        iters=int(t.size),
        warmup=warmup,
        mean_ms=mean,
        median_ms=float(np.median(t)),
        p90_ms=p90,
        p90_samples=n,
        p95_ms=p95,
        p95_samples=n,
        p99_ms=p99,
        p99_samples=n,
        unsupported_percentiles=unsupported_percentiles(n),
        std_ms=float(t.std(ddof=1)) if t.size > 1 else 0.0,
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        throughput_ips=batch / (mean / 1e3) if mean > 0 else float("inf"),
    )


def unsupported_percentiles(samples: int) -> list[str]:
    """The percentiles ``samples`` timed runs cannot estimate (they would be the maximum)."""
    return [name for name, need in PERCENTILE_MIN_SAMPLES.items() if samples < need]


def _progress(total: int, desc: str | None) -> Any:
    return tqdm(total=total, desc=desc, leave=False, disable=desc is None, file=sys.stderr)


def time_host(
    step: Callable[[], Any],
    warmup: int,
    iters: int,
    sync: Callable[[], None] | None = None,
    desc: str | None = None,
) -> list[float]:
    """Milliseconds per call of ``step`` measured with ``perf_counter``; ``sync`` waits for the device."""
    sync = sync or (lambda: None)
    times: list[float] = []
    with _progress(warmup + iters, desc) as bar:
        for _ in range(warmup):
            step()
            bar.update()
        sync()
        for _ in range(iters):
            start = time.perf_counter()
            step()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
            bar.update()
    return times


def time_cuda(step: Callable[[], Any], warmup: int, iters: int, stream: Any = None,
              desc: str | None = None) -> list[float]:
    """Milliseconds per call of ``step`` measured with CUDA events recorded on ``stream``."""
    return time_events(step, warmup, iters, lambda: torch.cuda.Event(enable_timing=True),
                       stream or torch.cuda.current_stream(), desc=desc)


def settle(step: Callable[[], Any], seconds: float = SWITCH_SETTLE_S, min_runs: int = 1) -> int:
    """Run ``step`` untimed until ``seconds`` have passed and at least ``min_runs`` runs are done; returns the
    number of runs (see :data:`SWITCH_SETTLE_S`)."""
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs


def sample_host(step: Callable[[], Any], batch: int, warmup: int, iters: int,
                desc: str | None = None) -> LatencyStats:
    """``summarize(time_host(...))``: the latency statistics of a host-timed step."""
    return summarize(time_host(step, warmup, iters, desc=desc), batch, warmup)


def time_events(step: Callable[[], Any], warmup: int, iters: int, events: Callable[[], Any], stream: Any,
                desc: str | None = None) -> list[float]:
    """Milliseconds of device work per call of ``step``: a start and end event recorded on ``stream``
    around each call (``events()`` makes one timing event; CUDA events on a GPU)."""
    times: list[float] = []
    with _progress(warmup + iters, desc) as bar:
        for _ in range(warmup):
            step()
            bar.update()
        stream.synchronize()
        for _ in range(iters):
            start, end = events(), events()
            start.record(stream)
            step()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
            bar.update()
    return times
