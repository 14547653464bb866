"""The INT8 passes: rewrites of a float ONNX graph that let ONNX Runtime's CPU kernels run more of it in 8 bits.

Each pass leaves the results unchanged (up to float rounding).  The float passes run on the graph ONNX
Runtime has already optimised (BatchNorm folded), just before static quantization; the gate tiling runs on
the quantized graph.  :data:`PASSES` is the one declared order; :func:`select_passes` reads a selection such
as ``all``, ``none`` or ``private_relu_inputs,pad_depthwise_channels``.  Which passes ran and how many
rewrites each made is returned by :func:`run_float_passes` / :func:`run_quantized_passes` for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cdarts_deploy.deploy.int8_passes.depthwise_padding import DEPTHWISE_CHANNEL_ALIGN, pad_depthwise_channels
from cdarts_deploy.deploy.int8_passes.factorized_reduction import factorized_reductions_as_single_convs
from cdarts_deploy.deploy.int8_passes.gates import (
    QUANTIZED_NODE_SUFFIX,
    broadcast_gates,
    hard_sigmoids_into_convs,
    tile_gates_along_width,
)
from cdarts_deploy.deploy.int8_passes.graph import RELU_COPY_SUFFIX, depthwise_convs, shared_input_relus
from cdarts_deploy.deploy.int8_passes.pools import (
    average_pools_as_depthwise_convs,
    exact_uint8_scale,
    pools_as_depthwise,
    spatial_means_to_global_pools,
)
from cdarts_deploy.deploy.int8_passes.relu_copies import private_relu_inputs
from cdarts_deploy.errors import UserError

__all__ = [
    "DEPTHWISE_CHANNEL_ALIGN", "Int8PassError", "METADATA_KEY", "PASSES", "PASS_NAMES", "QUANTIZED_NODE_SUFFIX",
    "RELU_COPY_SUFFIX", "Pass", "PassState", "average_pools_as_depthwise_convs", "broadcast_gates", "depthwise_convs",
    "enabled_passes", "exact_uint8_scale", "factorized_reductions_as_single_convs", "hard_sigmoids_into_convs",
    "pad_depthwise_channels", "pools_as_depthwise", "private_relu_inputs", "rewrites_made", "run_float_passes",
    "run_quantized_passes", "select_passes", "shared_input_relus", "spatial_means_to_global_pools", "stamp",
    "tile_gates_along_width",
]


@dataclass
class PassState:
    """What passes hand on: the gates found in the float graph, the pools' border factors with their scales."""

    gates: dict[str, tuple[int, int]] = field(default_factory=dict)
    corrections: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Pass:
    """One rewrite: ``run(model, state)`` edits the ModelProto in place and returns how many rewrites it made."""

    name: str
    purpose: str
    run: Callable[[Any, PassState], int]
    stage: str = "float"  # float: before quantization; quantized: on the 8-bit graph
    prepare: Callable[[Any, PassState], None] | None = None  # reads the float graph before any pass edits it


def _average_pools(model: Any, state: PassState) -> int:
    count, found = pools_as_depthwise(model)
    state.corrections.update(found)
    return count


def _find_gates(model: Any, state: PassState) -> None:
    state.gates = broadcast_gates(model)


#: The passes, in the order they run.  Order constraints: the average pools read input shapes that the
#: factorized-reduction and depthwise-padding passes drop (so do the gates, read by ``prepare`` before any
#: pass); the depthwise padding replaces the private Relu copies that ``private_relu_inputs`` made.
PASSES: tuple[Pass, ...] = (
    Pass("average_pools_as_depthwise_convs", "2-D average pools as depthwise convolutions (the pool form that "
         "uses convolution kernels; chosen per network)", _average_pools),
    Pass("factorized_reductions_as_single_convs", "a factorized reduction (two shifted 1x1 stride-2 convs, "
         "Concat, BatchNorm) as one 2x2 convolution", lambda m, s: factorized_reductions_as_single_convs(m)),
    Pass("private_relu_inputs", "a Relu of a shared tensor reads a private copy, so the quantizer may fold it",
         lambda m, s: private_relu_inputs(m)),
    Pass("pad_depthwise_channels", "depthwise convolutions padded with zero channels to a multiple of 16",
         lambda m, s: pad_depthwise_channels(m)),
    Pass("spatial_means_to_global_pools", "ReduceMean over height and width as GlobalAveragePool",
         lambda m, s: spatial_means_to_global_pools(m)),
    Pass("hard_sigmoids_into_convs", "a gate's HardSigmoid folded into the convolution before it, leaving a Clip",
         lambda m, s: hard_sigmoids_into_convs(m)),
    Pass("tile_gates_along_width", "a squeeze-excitation gate repeated along the width before its 8-bit multiply",
         lambda m, s: tile_gates_along_width(m, s.gates), stage="quantized", prepare=_find_gates),
)
PASS_NAMES: tuple[str, ...] = tuple(p.name for p in PASSES)


class Int8PassError(UserError):
    """A pass name that is not one of :data:`PASS_NAMES`."""


def select_passes(spec: str) -> frozenset[str]:
    """The pass names a selection names: ``all``, ``none`` or comma-separated names (:class:`Int8PassError`
    otherwise)."""
    text = spec.strip()
    if text == "all":
        return frozenset(PASS_NAMES)
    if text == "none":
        return frozenset()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PASS_NAMES]
    if unknown or not names:
        raise Int8PassError(f"unknown INT8 pass {', '.join(unknown) or repr(spec)}; use all, none or a "
                            f"comma-separated list of {', '.join(PASS_NAMES)}")
    return frozenset(names)


def _record(chosen: Pass, enabled: bool, count: int) -> dict[str, Any]:
    return {"name": chosen.name, "stage": chosen.stage, "enabled": enabled, "rewrites": count}


def run_float_passes(model: Any, enabled: Iterable[str]) -> tuple[PassState, list[dict[str, Any]]]:
    """Run the enabled float passes of :data:`PASSES` on ``model`` in order; returns the state for the quantizer
    and the quantized passes, and one record per float pass (name, stage, enabled, rewrites)."""
    enabled = frozenset(enabled)
    state = PassState()
    for chosen in PASSES:
        if chosen.prepare is not None and chosen.name in enabled:
            chosen.prepare(model, state)
    return state, [_record(p, p.name in enabled, p.run(model, state) if p.name in enabled else 0)
                   for p in PASSES if p.stage == "float"]


def run_quantized_passes(model: Any, enabled: Iterable[str], state: PassState) -> list[dict[str, Any]]:
    """Run the enabled passes on the quantized graph, in order; one record per such pass."""
    enabled = frozenset(enabled)
    return [_record(p, p.name in enabled, p.run(model, state) if p.name in enabled else 0)
            for p in PASSES if p.stage == "quantized"]


def enabled_passes(selected: Iterable[str] | None, rewrite: bool = True, pools_as_convs: bool = False,
                   float_depthwise: bool = False, gates: bool = True) -> frozenset[str]:
    """The passes that run: those ``selected`` (None: all), less those the quantizer's other options turn off
    (``rewrite`` off: every pass; the average pools only with ``pools_as_convs``; no depthwise padding with
    ``float_depthwise``; no gate passes without ``gates``)."""
    enabled = set(PASS_NAMES if selected is None else selected)
    unknown = enabled - set(PASS_NAMES)
    if unknown:
        raise Int8PassError(f"unknown INT8 pass {', '.join(sorted(unknown))}; use {', '.join(PASS_NAMES)}")
    off = {"average_pools_as_depthwise_convs"} if not pools_as_convs else set()
    off |= {"pad_depthwise_channels"} if float_depthwise else set()
    off |= {"hard_sigmoids_into_convs", "tile_gates_along_width"} if not gates else set()
    return frozenset(enabled - off) if rewrite else frozenset()


#: Metadata key of the passes applied to an INT8 file: ``name=rewrites`` per pass in order (``name=off``).
METADATA_KEY = "cdarts.int8_passes"


def stamp(proto: Any, records: list[dict[str, Any]]) -> None:
    """Record the pass list (:func:`run_float_passes` and :func:`run_quantized_passes` records) in ``proto``'s
    metadata_props."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = ",".join(f"{r['name']}={r['rewrites'] if r['enabled'] else 'off'}" for r in records)


def rewrites_made(settings: dict[str, Any]) -> dict[str, int]:
    """Pass name -> rewrites it made, from the settings :func:`~cdarts_deploy.deploy.precision.quantize_int8`
    returns (empty for a file without passes)."""
    return {r["name"]: r["rewrites"] for r in settings.get("passes", [])}
