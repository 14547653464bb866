"""Measured latency of chain-space parts and whole chain networks on one runtime (tables and their checks).

Every part is a timm module cut out of a chain network built by timm's EfficientNet builder
(:func:`backbones.chain_net.create_chain_model`): the stem (conv + BN/activation), every fixed block,
every searchable block once per candidate, and the head (pool, 1x1 conv, classifier).  Each part is
timed alone at the input shape it receives inside the network:

* ``onnxruntime-cpu``: exported with :func:`cdarts_deploy.deploy.onnx_graph.export_onnx` (static shape),
  one :func:`cdarts_deploy.deploy.ort.session` with ``threads`` intra-op threads, host timing;
* ``tensorrt-fp16``: the same ONNX converted to FP16 (:func:`cdarts_deploy.deploy.precision.to_fp16`), an engine
  from :func:`cdarts_deploy.deploy.trt.build_engine`, CUDA-event timing of the enqueue on the runner's stream;
* ``torch-cuda``: the PyTorch module on the GPU under ``no_grad``, CUDA-event timing.

A part's latency is the median of ``iters`` timed runs after ``warmup`` untimed ones
(:mod:`cdarts_deploy.deploy.timing`).  Weights are random: latency does not depend on their values.
On ``onnxruntime-cpu`` every run is timed on two clocks: wall time, and the CPU time of the calling thread
(``clock="cpu"``, for one intra-op thread only: ONNX Runtime then computes on the calling thread, so its CPU
time is the latency of an unshared core, untouched by other processes that take the core in between).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime  # noqa: F401  (a dependency; imported to fail here rather than mid-measurement)
import torch
from torch import nn
from tqdm import tqdm

from backbones.chain_net import create_chain_model
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import CHAIN_CHOICES, ChainGenotype, ChainNetwork, apply_choices
from cdarts_deploy.latency_stats import fit_correction, relative_errors, spearman
from cdarts_deploy.latency_table_format import (
    CANDIDATES,
    RUNTIMES,
    BlockEntry,
    FixedEntry,
    LatencyTable,
    genotype_candidates,
    searchable_positions,
)

from . import ort as ort_sessions
from .onnx_graph import export_onnx
from .precision import to_fp16
from .timing import summarize, time_cuda
from .trt import build_engine, require_tensorrt
from .trt_runner import TensorRTRunner
from .versions import conditions as run_conditions

__all__ = ["CLOCKS", "RuntimeUnavailable", "require_runtime", "check_clock", "PartTimer", "chain_network",
           "chain_parts", "measure_chain_table", "random_children", "measure_genotype", "measure_genotypes",
           "validate_table", "correction_from"]

PRECISION = {"onnxruntime-cpu": "fp32", "tensorrt-fp16": "fp16", "torch-cuda": "fp32"}
#: wall: perf_counter; cpu: CPU time of the calling thread (onnxruntime-cpu with one intra-op thread).
CLOCKS = ("wall", "cpu")
#: Process CPU time above the calling thread's by more than this share: work ran on other threads.
_OTHER_THREADS = 0.05


class RuntimeUnavailable(UserError):
    """The runtime a latency table names cannot run on this machine."""


def require_runtime(runtime: str) -> None:
    """Return if ``runtime`` can be timed here; otherwise one :class:`UserError` line saying why."""
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime-cpu":
        return
    if runtime == "tensorrt-fp16":
        require_tensorrt()  # TensorRTUnavailable is a UserError naming the reason and the fix
        return
    if not torch.cuda.is_available():
        raise RuntimeUnavailable("runtime torch-cuda needs an NVIDIA GPU with a working CUDA driver and none is "
                                 "visible on this machine; use --runtime onnxruntime-cpu here")


class _Head(nn.Module):
    """The classifier head of a timm MobileNetV3 (pool, 1x1 conv, norm, activation, flatten, linear)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.global_pool, self.conv_head, self.norm_head = net.global_pool, net.conv_head, net.norm_head
        self.act2, self.flatten, self.classifier = net.act2, net.flatten, net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.norm_head(self.conv_head(self.global_pool(x))))
        return self.classifier(self.flatten(x))


def check_clock(clock: str, runtime: str, threads: int) -> None:
    """Return if ``clock`` can time ``runtime`` with ``threads`` intra-op threads; otherwise one UserError line."""
    if clock not in CLOCKS:
        raise UserError(f"clock {clock!r}: use one of {', '.join(CLOCKS)}")
    if clock == "cpu" and (runtime != "onnxruntime-cpu" or threads != 1):
        raise UserError("--clock cpu times the calling thread: it needs --runtime onnxruntime-cpu and --threads 1 "
                        f"(got {runtime}, {threads or 'default'} threads); use --clock wall otherwise")


class PartTimer:
    """Median latency (ms) of modules at their input shapes on one runtime; files go to a temporary folder.

    :meth:`time_all` prepares every part first (export, session or engine), then times them in
    ``rounds`` interleaved rounds of ``iters / rounds`` runs each (``warmup`` untimed runs before a part's
    first round, ``warmup / rounds`` before each later one), and keeps the median of each part's runs: load
    from other processes that comes and goes then falls on every part alike instead of on whichever
    part was being timed.  ``clock`` picks the medians returned (see the module docstring); on ONNX Runtime
    :attr:`medians` holds both clocks' medians of the last :meth:`time_all`.
    """

    def __init__(self, runtime: str, threads: int = 0, warmup: int = 10, iters: int = 50,
                 exporter: str = "torchscript", rounds: int = 5, clock: str = "wall") -> None:
        require_runtime(runtime)
        check_clock(clock, runtime, threads)
        self.runtime, self.threads, self.warmup, self.iters, self.exporter = runtime, threads, warmup, iters, exporter
        self.clock = clock
        self.medians: dict[str, list[float]] = {}
        self.rounds = max(1, min(rounds, iters))
        self._dir = tempfile.TemporaryDirectory(prefix="cdarts-latency-")
        self._count = 0

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> "PartTimer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def settings(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": PRECISION[self.runtime], "threads": self.threads or None,
                "warmup": self.warmup, "iters": self.iters, "rounds": self.rounds, "statistic": "median",
                "clock": self.clock,
                "exporter": self.exporter if self.runtime != "torch-cuda" else None}

    def _onnx(self, module: nn.Module, shape: Sequence[int]) -> Path:
        self._count += 1
        path = Path(self._dir.name) / f"part{self._count}.onnx"
        export_onnx(module, path, tuple(shape), dynamic_batch=False, exporter=self.exporter)
        return path

    def prepare(self, module: nn.Module, shape: Sequence[int]) -> Callable[[int, int], list[float]]:
        """Export / load ``module`` for the runtime; returns ``times(warmup, iters)`` in milliseconds."""
        module = module.eval()
        if self.runtime == "onnxruntime-cpu":
            path = self._onnx(module, shape)
            sess = ort_sessions.session(path, threads=self.threads or None)
            path.unlink()
            x = np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)
            return lambda warmup, iters: _time_ort(sess, x, warmup, iters)
        if self.runtime == "tensorrt-fp16":
            return self._prepare_tensorrt(module, shape)
        return self._prepare_torch_cuda(module, shape)

    def time_all(self, parts: Sequence[tuple[nn.Module, Sequence[int]]],
                 progress: Callable[[], None] | None = None) -> list[float]:
        """Median milliseconds of every ``(module, input shape)``, timed in interleaved rounds."""
        runs = []
        for module, shape in parts:
            runs.append(self.prepare(module, shape))
        times: list[list[Any]] = [[] for _ in runs]
        per_round = -(-self.iters // self.rounds)
        for r in range(self.rounds):
            for k, run in enumerate(runs):
                warmup = self.warmup if r == 0 else max(1, self.warmup // self.rounds)
                times[k] += run(warmup, min(per_round, self.iters - len(times[k])))
                if progress and r == self.rounds - 1:
                    progress()
        if times and times[0] and isinstance(times[0][0], tuple):  # ONNX Runtime: (wall, thread, process) ms
            if self.clock == "cpu":
                _check_one_thread(times)
            self.medians = {clock: [summarize([run[c] for run in t], int(shape[0]), self.warmup).median_ms
                                    for t, (_, shape) in zip(times, parts)] for c, clock in enumerate(CLOCKS)}
            return self.medians[self.clock]
        return [summarize(t, int(shape[0]), self.warmup).median_ms for t, (_, shape) in zip(times, parts)]

    def __call__(self, module: nn.Module, shape: Sequence[int]) -> float:
        return self.time_all([(module, shape)])[0]

    def _prepare_tensorrt(self, module: nn.Module, shape: Sequence[int]) -> Callable[[int, int], list[float]]:
        path = self._onnx(module, shape)
        half = path.with_suffix(".fp16.onnx")
        to_fp16(path, half)
        engine = path.with_suffix(".engine")
        build_engine(half, engine, (int(shape[2]), int(shape[3])), precision="fp16", min_batch=int(shape[0]),
                     opt_batch=int(shape[0]), max_batch=int(shape[0]))
        runner = TensorRTRunner(engine)
        runner.bind(torch.randn(*shape, device="cuda"))
        return lambda warmup, iters: time_cuda(runner.enqueue, warmup, iters, stream=runner.stream)

    def _prepare_torch_cuda(self, module: nn.Module, shape: Sequence[int]) -> Callable[[int, int], list[float]]:
        module = module.cuda()
        x = torch.randn(*shape, device="cuda")

        def step() -> None:
            with torch.no_grad():
                module(x)

        return lambda warmup, iters: time_cuda(step, warmup, iters)


def _time_ort(sess: Any, x: np.ndarray, warmup: int, iters: int) -> list[tuple[float, float, float]]:
    """(wall, calling thread's CPU, process CPU) milliseconds of ``iters`` runs after ``warmup``."""
    for _ in range(warmup):
        ort_sessions.run(sess, x)
    runs = []
    for _ in range(iters):
        wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
        ort_sessions.run(sess, x)
        runs.append(((time.perf_counter() - wall) * 1e3, (time.thread_time() - thread) * 1e3,
                     (time.process_time() - process) * 1e3))
    return runs


def _check_one_thread(times: Sequence[Sequence[tuple[float, float, float]]]) -> None:
    """Refuse CPU-clock timings when the process spent CPU time beyond the calling thread (work elsewhere)."""
    thread = math.fsum(run[1] for t in times for run in t)
    process = math.fsum(run[2] for t in times for run in t)
    if process > thread * (1 + _OTHER_THREADS) + 1.0:
        raise UserError(f"--clock cpu: the process used {process:.0f} ms of CPU time while the timing thread used "
                        f"{thread:.0f} ms, so ONNX Runtime computed on other threads too; use --clock wall")


# -- the chain network's parts ------------------------------------------------------------------------------

def chain_network(base: Sequence[Sequence[str]], network: dict[str, int], candidates: Sequence[int],
                  name: str = "latency_child") -> tuple[ChainGenotype, nn.Module]:
    """The (genotype, timm model) of the child of ``base`` with one candidate index per searchable arch string."""
    base = [list(s) for s in base]
    positions = searchable_positions(base)
    if len(candidates) != len(positions):
        raise ValueError(f"got {len(candidates)} candidates, the base has {len(positions)} searchable blocks")
    per_stage = [[0] * len(stage) for stage in base]
    for ((stage, j), _), c in zip(positions, candidates):
        per_stage[stage][j] = int(c)
    arch = apply_choices(base, per_stage, source="<latency>")
    net = ChainNetwork(num_classes=network["num_classes"], stem_channels=network["stem_channels"],
                       head_channels=network["head_channels"])
    genotype = ChainGenotype.from_arch_strings(arch, name=name, network=net)
    torch.manual_seed(0)
    return genotype, create_chain_model(genotype, num_classes=network["num_classes"]).eval()


def _input_shapes(net: nn.Module, input_size: int, batch: int) -> tuple[dict[tuple[int, int], list[int]], list[int]]:
    """Input shape of every block and of the head, from one forward pass."""
    shapes: dict[tuple[int, int], list[int]] = {}
    handles = []
    for i, stage in enumerate(net.blocks):
        for m, block in enumerate(stage):
            def hook(_mod, args, key=(i, m)):
                shapes[key] = list(args[0].shape)
            handles.append(block.register_forward_pre_hook(hook))
    head: list[int] = []
    handles.append(net.blocks.register_forward_hook(lambda _m, _a, out: head.extend(out.shape)))
    try:
        with torch.no_grad():
            net.forward_features(torch.zeros(batch, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return shapes, head


def chain_parts(base: Sequence[Sequence[str]], network: dict[str, int], input_size: int, batch: int):
    """``(fixed, blocks)``: fixed = [(name, module, input_shape)] (stem, fixed blocks, head);
    blocks = {(stage, index): (input_shape, {candidate name: module})} for every searchable block."""
    positions = searchable_positions(base)
    searchable = {p for _, mods in positions for p in mods}
    nets = [chain_network(base, network, [c] * len(positions))[1] for c in range(len(CHAIN_CHOICES))]
    shapes, head_shape = _input_shapes(nets[0], input_size, batch)
    first = nets[0]
    fixed: list[tuple[str, nn.Module, list[int]]] = [
        ("stem", nn.Sequential(first.conv_stem, first.bn1), [batch, 3, input_size, input_size])]
    for (i, m), shape in sorted(shapes.items()):
        if (i, m) not in searchable:
            fixed.append((f"blocks.{i}.{m}", first.blocks[i][m], shape))
    fixed.append(("head", _Head(first), head_shape))
    blocks = {(i, m): (shapes[(i, m)], {name: nets[c].blocks[i][m] for c, name in enumerate(CANDIDATES)})
              for (i, m) in sorted(searchable)}
    return fixed, blocks


def measure_chain_table(base: Sequence[Sequence[str]], network: dict[str, int], input_size: int, batch: int,
                        timer: PartTimer, progress: bool = True) -> LatencyTable:
    """Time every part of the chain space (see the module docstring) into a :class:`LatencyTable`."""
    fixed_parts, block_parts = chain_parts(base, network, input_size, batch)
    total = len(fixed_parts) + len(block_parts) * len(CANDIDATES)
    bar = tqdm(total=total, desc=f"latency table ({timer.runtime})", unit="part", disable=not progress,
               dynamic_ncols=True)
    parts = [(module, shape) for _, module, shape in fixed_parts]
    parts += [(module, shape) for shape, candidates in block_parts.values() for module in candidates.values()]
    try:
        ms = timer.time_all(parts, progress=bar.update)
    finally:
        bar.close()
    fixed = [FixedEntry(name, tuple(shape), round(v, 5)) for (name, _, shape), v in zip(fixed_parts, ms)]
    blocks, k = [], len(fixed_parts)
    for (i, m), (shape, candidates) in block_parts.items():
        blocks.append(BlockEntry(i, m, tuple(shape), {name: round(v, 5) for name, v in
                                                       zip(candidates, ms[k: k + len(candidates)])}))
        k += len(candidates)
    device = "cuda" if timer.runtime != "onnxruntime-cpu" else "cpu"
    cond = run_conditions(timer.threads or None, device)
    cond["measurement"] = timer.settings()
    return LatencyTable(timer.runtime, "chain", input_size, batch, [list(s) for s in base], dict(network), blocks,
                        fixed, cond, None)


def random_children(table: LatencyTable, count: int, seed: int, spread: bool = False) -> list[ChainGenotype]:
    """``count`` random children of the table's base (seeded).

    Uniform (the default): every searchable arch string takes a uniformly random candidate; such
    children's latencies cluster around the space's mean.  ``spread``: each child first draws a
    preference ``t`` uniform in [-1, 1] and then picks candidate ``c`` of every arch string with
    probability proportional to ``exp(3 t z_c)``, ``z_c`` the candidate's standardized table latency in
    that block: children then span the space from its cheapest to its dearest corner.
    """
    rng = random.Random(seed)
    positions = searchable_positions(table.base)
    z_rows = []
    for _, mods in positions:
        row = [sum(table.block_ms(s, m, name) for s, m in mods) for name in CANDIDATES]
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / len(row)) or 1.0
        z_rows.append([(v - mean) / std for v in row])
    children = []
    for k in range(count):
        if spread:
            t = rng.uniform(-1.0, 1.0)
            picks = [rng.choices(range(len(CANDIDATES)), weights=[math.exp(3 * t * z) for z in z])[0]
                     for z in z_rows]
        else:
            picks = [rng.randrange(len(CHAIN_CHOICES)) for _ in positions]
        children.append(chain_network(table.base, table.network, picks, name=f"random_child_{k}")[0])
    return children


def _child_model(genotype: ChainGenotype, table: LatencyTable) -> nn.Module:
    torch.manual_seed(0)
    return create_chain_model(genotype, num_classes=table.network["num_classes"]).eval()


def measure_genotype(genotype: ChainGenotype, table: LatencyTable, timer: PartTimer) -> float:
    """End-to-end median latency (ms) of a chain genotype at the table's input shape, on the timer's runtime."""
    return timer(_child_model(genotype, table), (table.batch, 3, table.input_size, table.input_size))


def measure_genotypes(genotypes: Sequence[ChainGenotype], table: LatencyTable, timer: PartTimer,
                      progress: Callable[[], None] | None = None) -> list[float]:
    """End-to-end median latency (ms) of several chain genotypes, timed in interleaved rounds."""
    shape = (table.batch, 3, table.input_size, table.input_size)
    return timer.time_all([(_child_model(g, table), shape) for g in genotypes], progress=progress)


def validate_table(table: LatencyTable, timer: PartTimer, children: Sequence[ChainGenotype],
                   progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Predicted (raw table sum, and corrected when the table has a correction) against measured latency."""
    raw = [table.raw_ms(genotype_candidates(g)) for g in children]
    measured = measure_genotypes(children, table, timer, progress=progress)
    corrected = [table.corrected(r) for r in raw]
    return {"children": len(children), "raw_ms": raw, "corrected_ms": corrected, "measured_ms": measured,
            "spearman": spearman(raw, measured) if len(raw) > 1 else None,
            "raw": relative_errors(raw, measured), "corrected": relative_errors(corrected, measured)}


def correction_from(validation: dict[str, Any], mode: str = "scale") -> dict[str, Any]:
    """The correction (:func:`cdarts_deploy.latency_stats.fit_correction` ``mode``) fitted on a validation's
    table sums and measured latencies, with both lists and the errors before and after it."""
    scale, offset = fit_correction(validation["raw_ms"], validation["measured_ms"], mode)
    after = [scale * r + offset for r in validation["raw_ms"]]
    return {"mode": mode, "scale": round(scale, 6), "offset_ms": round(offset, 5), "children": validation["children"],
            "method": {"scale": "ratio of the mean measured to the mean table sum",
                       "offset": "mean of measured - table sum",
                       "affine": "least squares measured ~ scale * table sum + offset"}[mode]
                      + " over random children measured end to end",
            "spearman": validation["spearman"],
            "raw_ms": [round(v, 5) for v in validation["raw_ms"]],
            "measured_ms": [round(v, 5) for v in validation["measured_ms"]],
            "before": validation["raw"], "after": relative_errors(after, validation["measured_ms"])}
