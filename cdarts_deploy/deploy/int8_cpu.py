"""Which x86-64 CPUs an INT8 ONNX Runtime file computes exactly on, and the check that says so.

ONNX Runtime's 8-bit convolutions and matrix products (MLAS) multiply unsigned 8-bit activations by signed
8-bit weights.  With VNNI (``avx512_vnni``/``avx_vnni``) the products are summed in 32 bits.  Without it (AVX2,
AVX-512 without VNNI) the kernels use ``vpmaddubsw``, which adds two neighbouring u8*s8 products into a
*saturating* signed 16-bit sum: 255*127 + 255*127 = 64770 does not fit in 32767, so a file with full 8-bit
weights gives different (wrong) sums on those CPUs, silently.  Two forms:

* ``portable``: exact on every x86-64 CPU.  Either 7-bit weights (ONNX Runtime's ``reduce_range``: every
  weight in [-64, 64], so 255*64*2 = 32640 fits in 16 bits) or unsigned 8-bit weights (u8*u8 products go
  through a widening, non-saturating kernel); :data:`PORTABLE_WEIGHTS` says which one the exporter writes.
* ``vnni``: full 8-bit signed weights, for files that only ever run on VNNI CPUs.

``auto`` picks from the CPU flags of the machine that makes the file (:func:`int8_cpu_form`).  The form is
recorded in the file's metadata (:data:`METADATA_KEY`), and :func:`verify` refuses a file that claims to be
portable while one of its weights could saturate the 16-bit sum (:func:`non_vnni_check`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from cdarts_deploy.deploy.environment import parse_cpuinfo
from cdarts_deploy.errors import UserError

#: What ``--int8-cpu`` accepts; ``auto`` resolves to one of :data:`INT8_CPU_FORMS`.
INT8_CPU_CHOICES = ("portable", "vnni", "auto")
INT8_CPU_FORMS = ("portable", "vnni")
DEFAULT_INT8_CPU = "portable"
#: How the portable form keeps the 16-bit sums exact: ``7bit`` (int8 weights in [-64, 64]) or ``uint8``
#: (weights shifted by 128, zero point 128).  Chosen by measurement (agreement and speed, docs/results).
PORTABLE_WEIGHTS = "7bit"
PORTABLE_WEIGHT_CHOICES = ("7bit", "uint8")
#: /proc/cpuinfo flags of the dot-product instructions that sum u8*s8 products in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
#: ONNX metadata_props keys written into every ONNX Runtime INT8 file.
METADATA_KEY = "cdarts.int8_cpu"
METADATA_WEIGHTS_KEY = "cdarts.int8_weights"
METADATA_REASON_KEY = "cdarts.int8_cpu_reason"
#: Largest |weight| for which no two u8*s8 products can leave int16: 255 * (64 + 64) = 32640 <= 32767.
SAFE_WEIGHT_MAGNITUDE = 64
#: Integer ops that run MLAS's u8*s8 kernels, with the input indices of (activation zero point, weight).
#: The activation type is read from its zero point where the op has one.
INTEGER_OPS = {
    "QLinearConv": (2, 3),
    "QLinearMatMul": (2, 3),
    "QGemm": (2, 3),
    "ConvInteger": (2, 1),
    "MatMulInteger": (2, 1),
    "MatMulIntegerToFloat": (4, 1),
    "DynamicQuantizeMatMul": (None, 1),
}


class Int8CpuError(UserError):
    """An INT8 file whose recorded CPU form its weights do not honour, or an unknown form."""


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    return frozenset(parse_cpuinfo(text)["flags"])


def int8_cpu_choice(requested: str, flags: Iterable[str]) -> dict[str, str]:
    """The form for ``requested`` (``portable``, ``vnni`` or ``auto``) and a sentence why; ``flags`` are the
    building machine's CPU flags, read only for ``auto``."""
    if requested not in INT8_CPU_CHOICES:
        raise Int8CpuError(f"unknown INT8 CPU form {requested!r}; use one of {', '.join(INT8_CPU_CHOICES)}")
    if requested == "portable":
        return {"requested": requested, "form": "portable",
                "reason": "asked for: exact on every x86-64 CPU, with or without VNNI"}
    if requested == "vnni":
        return {"requested": requested, "form": "vnni",
                "reason": "asked for: full 8-bit weights, exact only on CPUs with VNNI (avx512_vnni or avx_vnni)"}
    found = sorted(set(flags) & set(VNNI_FLAGS))
    if found:
        return {"requested": requested, "form": "vnni",
                "reason": f"auto, picked for the machine that made the file (it has {', '.join(found)}); "
                "wrong results on CPUs without VNNI"}
    return {"requested": requested, "form": "portable",
            "reason": "auto, picked for the machine that made the file (no avx512_vnni or avx_vnni flag)"}


def int8_cpu_form(requested: str, flags: Iterable[str]) -> str:
    """``portable`` or ``vnni`` for ``requested`` on a building machine with CPU ``flags`` (see
    :func:`int8_cpu_choice`)."""
    return int8_cpu_choice(requested, flags)["form"]


# ---------------------------------------------------------------------------
# The static check
# ---------------------------------------------------------------------------


@dataclass
class NonVnniCheck:
    """Whether every 8-bit matrix product of a file sums exactly on CPUs without VNNI."""

    safe: bool
    integer_ops: int = 0
    uint8_weight_ops: int = 0
    max_abs_int8_weight: int | None = None
    saturating_ops: list[str] = field(default_factory=list)  # int8 weights outside [-64, 64]
    unknown_ops: list[str] = field(default_factory=list)  # weights that are not initializers

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["saturating_ops"], d["unknown_ops"] = self.saturating_ops[:10], self.unknown_ops[:10]
        d["saturating_op_count"], d["unknown_op_count"] = len(self.saturating_ops), len(self.unknown_ops)
        d["rule"] = ("u8 activations x s8 weights sum pairs of products in 16 bits without VNNI: safe when every "
                     f"int8 weight is within [-{SAFE_WEIGHT_MAGNITUDE}, {SAFE_WEIGHT_MAGNITUDE}]; "
                     "uint8 weights are safe")
        return d


def _load(model: Any) -> Any:
    return onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else model


def non_vnni_check(model: Any) -> NonVnniCheck:
    """Inspect the weights of every integer convolution and matrix product of ``model`` (a path or a
    ModelProto)."""
    proto = _load(model)
    inits = {i.name: i for i in proto.graph.initializer}
    check = NonVnniCheck(safe=True)
    largest = -1
    for node in proto.graph.node:
        if node.op_type not in INTEGER_OPS:
            continue
        _, w_index = INTEGER_OPS[node.op_type]
        check.integer_ops += 1
        name = node.name or node.output[0]
        weight = inits.get(node.input[w_index]) if len(node.input) > w_index else None
        if weight is None:  # computed at run time: nothing can be promised
            check.unknown_ops.append(name)
            continue
        if weight.data_type == TensorProto.UINT8:
            check.uint8_weight_ops += 1
            continue
        values = numpy_helper.to_array(weight).astype(np.int32)
        magnitude = int(np.abs(values).max()) if values.size else 0
        largest = max(largest, magnitude)
        if magnitude > SAFE_WEIGHT_MAGNITUDE:
            check.saturating_ops.append(name)
    check.max_abs_int8_weight = largest if largest >= 0 else None
    check.safe = not check.saturating_ops and not check.unknown_ops
    return check


def metadata(model: Any) -> dict[str, str]:
    """The file's ``cdarts.int8_*`` metadata_props."""
    return {p.key: p.value for p in _load(model).metadata_props if p.key.startswith("cdarts.int8")}


def stamp(proto: Any, form: str, weights: str, reason: str | None = None) -> None:
    """Record the CPU form (and how its weights are stored, and why) in ``proto``'s metadata_props."""
    if form not in INT8_CPU_FORMS:
        raise Int8CpuError(f"unknown INT8 CPU form {form!r}; use one of {', '.join(INT8_CPU_FORMS)}")
    values = {METADATA_KEY: form, METADATA_WEIGHTS_KEY: weights}
    if reason:
        values[METADATA_REASON_KEY] = reason
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def verify(model: Any, label: str = "INT8 file") -> NonVnniCheck:
    """:func:`non_vnni_check`, refusing (:class:`Int8CpuError`) a file whose metadata says ``portable`` while a
    weight could saturate on a CPU without VNNI."""
    proto = _load(model)
    check = non_vnni_check(proto)
    claimed = metadata(proto).get(METADATA_KEY)
    if claimed is not None and claimed not in INT8_CPU_FORMS:
        raise Int8CpuError(f"{label} records an unknown INT8 CPU form {claimed!r}")
    if claimed == "portable" and not check.safe:
        bad = check.saturating_ops or check.unknown_ops
        why = (f"int8 weights up to |{check.max_abs_int8_weight}| (safe: {SAFE_WEIGHT_MAGNITUDE})"
               if check.saturating_ops else "weights computed at run time")
        raise Int8CpuError(f"{label} claims {METADATA_KEY}=portable but {len(bad)} of {check.integer_ops} integer ops "
                           f"({bad[0]}, ...) have {why}, which saturate on CPUs without VNNI; refused")
    return check


def weights_to_uint8(proto: Any) -> int:
    """Store every symmetric int8 weight of the integer ops as uint8 (value + 128, zero point 128): the same
    products, but ONNX Runtime then runs its u8*u8 kernels, which widen to 16 bits before multiplying and do
    not saturate.  Returns the number of weights converted."""
    inits = {i.name: i for i in proto.graph.initializer}
    done: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in ("QLinearConv", "QLinearMatMul", "QGemm"):
            continue
        w_name, zp_name = node.input[3], node.input[5]
        if w_name in done or w_name not in inits or zp_name not in inits:
            continue
        weight, zero = inits[w_name], inits[zp_name]
        if weight.data_type != TensorProto.INT8:
            continue
        zeros = numpy_helper.to_array(zero)
        if np.any(zeros != 0):  # only the symmetric weights the quantizer writes
            continue
        shifted = numpy_helper.to_array(weight).astype(np.int16) + 128
        weight.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), w_name))
        zero.CopyFrom(numpy_helper.from_array(np.full(zeros.shape, 128, np.uint8), zp_name))
        done.add(w_name)
    return len(done)


def saturating_u8s8_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w`` (uint8 [M, K] by int8 [K, N]) as a kernel without VNNI computes it: neighbouring products along
    K are added in pairs into a saturating int16 (``vpmaddubsw``), the pairs then summed in int32."""
    a32, w32 = np.asarray(a, np.int32), np.asarray(w, np.int32)
    if a32.shape[1] % 2:
        a32, w32 = np.pad(a32, ((0, 0), (0, 1))), np.pad(w32, ((0, 1), (0, 0)))
    pairs = a32[:, 0::2, None] * w32[None, 0::2, :] + a32[:, 1::2, None] * w32[None, 1::2, :]
    return np.clip(pairs, -32768, 32767).sum(1)
