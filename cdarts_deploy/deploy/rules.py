"""The reduced-precision parts of the parity rule (:mod:`cdarts_deploy.deploy.parity` applies them).

FP16: an output passes when

    |candidate - reference| <= FP16_NOISE_FACTOR * fp16_noise + atol + rtol * max|reference|   (fp32's atol, rtol)

where ``fp16_noise`` is PyTorch's own half-precision error on the same input: the largest
``|model_fp16 - model_fp32|``, the fp16 model having its weights, input and every module's output rounded to
float16 (float32 arithmetic in between, as half-precision kernels accumulate: :func:`fp16_outputs`).  A
logits output (N x classes) must besides keep the top-1 class of the reference on all but
``FP16_NOISE_FACTOR`` times as many samples as PyTorch's fp16 loses, plus one, and a cosine similarity of at
least ``1 - FP16_NOISE_FACTOR**2 * (1 - PyTorch fp16's cosine)``.  A tolerance proportional to the output's
scale alone would let a 1% error of every logit pass at fp16's usual 5%.

INT8: a runtime running a quantized file (TensorRT on a Q/DQ file) is compared element by element with ONNX
Runtime on the CPU running the same file, per output in units of its quantization step (:func:`output_steps`):
the root mean square difference at most ``INT8_RMS_STEPS``, the largest at most ``INT8_MAX_STEPS``.  Against
PyTorch FP32 an INT8 file is judged by top-1 agreement on real images.  Both comparisons must be able to fail:
the reference's outputs on the batch rolled by one sample must fail the element-wise rule, and the reference's
top-1 agreement with its own rolled outputs must be at most ``MAX_ROLLED_TOP1`` (:func:`rolled_top1`); else the
check proves nothing and fails.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

#: How many times PyTorch's own fp16 error a runtime's fp16 output may differ by (ONNX Runtime's FP16 files
#: against it: docs/results/fp16_noise_ratio.md).
FP16_NOISE_FACTOR = 1.5
#: How many output quantization steps an INT8 runtime may differ from ONNX Runtime CPU on the same file: the root
#: mean square over every output element, and the largest element.  Two correct runs of one Q/DQ file differ by
#: whole steps where a rounding inside the network went the other way, more in deeper networks (ONNX Runtime's
#: integer kernels against its float emulation of the file: docs/results/int8_same_file_steps.md); another input
#: or another class order moves the outputs by more, most clearly in the mean square.
INT8_RMS_STEPS = 8.0
INT8_MAX_STEPS = 32.0
#: The reference's top-1 agreement with its own rolled batch must be at most this for top-1 to prove anything.
MAX_ROLLED_TOP1 = 0.4

#: Ops that move values without computing: an output's step is that of the tensor behind them.
_PASS_THROUGH = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Cast")


def fp16_outputs(model: Any, batch: np.ndarray) -> list[np.ndarray]:
    """The model's outputs with float16 storage: weights, buffers, the input and every leaf module's output
    rounded to float16, the arithmetic in float32 (a copy; ``model`` is left as it is)."""
    half = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for t in list(half.parameters()) + list(half.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())

    def round_output(module: Any, inputs: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            return output.half().float()
        return output

    for module in half.modules():
        if not list(module.children()):
            module.register_forward_hook(round_output)
    with torch.inference_mode():
        out = half(torch.from_numpy(batch).half().float())
    return [o.float().numpy() for o in ([out] if isinstance(out, torch.Tensor) else out)]


def top1(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits).reshape(len(logits), -1).argmax(1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def judge_fp16(reference: np.ndarray, candidate: np.ndarray, half: np.ndarray, atol: float, rtol: float) -> dict:
    """One output of an fp16 runtime against PyTorch FP32 (``half``: :func:`fp16_outputs`' on the same input)."""
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if ref.shape != cand.shape:
        return {"fp16_noise": None, "passed": False, "why": f"shape {cand.shape} instead of {ref.shape}"}
    noise = float(np.abs(np.asarray(half, np.float64) - ref).max()) if ref.size else 0.0
    allowed = FP16_NOISE_FACTOR * noise + atol + rtol * (float(np.abs(ref).max()) if ref.size else 0.0)
    max_abs = float(np.abs(cand - ref).max()) if ref.size else 0.0
    row: dict[str, Any] = {"fp16_noise": noise, "fp16_allowed": allowed}
    why = [] if max_abs <= allowed else [f"max abs {max_abs:.3g} > {allowed:.3g}"]
    if ref.ndim == 2 and ref.shape[1] > 1:  # logits: the class and the direction must hold too
        lost = int((top1(cand) != top1(ref)).sum())
        lost_half = int((top1(half) != top1(ref)).sum())
        need_cos = 1 - FP16_NOISE_FACTOR ** 2 * (1 - cosine(half, ref)) - 1e-9
        row.update(top1_lost=lost, torch_fp16_top1_lost=lost_half, cosine_needed=need_cos)
        if lost > FP16_NOISE_FACTOR * lost_half + 1:
            why.append(f"top-1 differs on {lost} of {len(ref)} samples (PyTorch fp16: {lost_half})")
        if cosine(cand, ref) < need_cos:
            why.append(f"cosine {cosine(cand, ref):.6f} < {need_cos:.6f}")
    return {**row, "passed": not why, "why": "; ".join(why)}


def _constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _dequantized(name: str, producers: dict, values: dict) -> tuple[np.ndarray | None, float | None]:
    """A tensor's constant value (dequantized weights) and its quantization step (largest scale), if known."""
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        name, node = node.input[0], producers.get(node.input[0])
    if node is None:
        return values.get(name), None
    if node.op_type == "DequantizeLinear":
        scale = values.get(node.input[1])
        step = float(np.max(scale)) if scale is not None else None
        q = values.get(node.input[0])
        if q is None or scale is None:
            return None, step
        zero = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if np.ndim(scale):
            shape[axis] = -1
        return (q.astype(np.float64) - np.reshape(zero, shape)) * np.reshape(scale, shape), step
    return None, None


def output_steps(onnx_path: str | os.PathLike) -> dict[str, float | None]:
    """Per graph output of a quantized file, its quantization step: the scale of the DequantizeLinear that
    gives it, or for a float Conv/Gemm/MatMul on dequantized inputs, the input's step times the largest
    L2 norm of a weight row (how far one output moves when each input moves by about one step); None when
    the output has neither."""
    proto = onnx.load(str(onnx_path))
    producers = {o: n for n in proto.graph.node for o in n.output}
    values = _constants(proto)
    steps: dict[str, float | None] = {}
    for out in proto.graph.output:
        name, node = out.name, producers.get(out.name)
        while node is not None and node.op_type in _PASS_THROUGH:
            name, node = node.input[0], producers.get(node.input[0])
        steps[out.name] = None
        if node is None:
            continue
        if node.op_type == "DequantizeLinear":
            steps[out.name] = _dequantized(name, producers, values)[1]
        elif node.op_type in ("Gemm", "MatMul", "Conv"):
            step = _dequantized(node.input[0], producers, values)[1]
            weight = _dequantized(node.input[1], producers, values)[0]
            if step is None or weight is None:
                continue
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            rows = weight if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else weight.T
            steps[out.name] = step * float(np.linalg.norm(rows.reshape(len(rows), -1), axis=1).max())
    return steps


def judge_int8(reference: np.ndarray, candidate: np.ndarray, step: float | None) -> dict:
    """One output of an INT8 runtime against ONNX Runtime CPU on the same file, in output steps."""
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if step is None or not step > 0:
        return {"output_step": step, "passed": False, "why": "the file gives this output no quantization step"}
    if ref.shape != cand.shape:
        return {"output_step": step, "passed": False, "why": f"shape {cand.shape} instead of {ref.shape}"}
    steps = np.abs(cand - ref) / step
    rms = float(np.sqrt((steps ** 2).mean())) if steps.size else 0.0
    most = float(steps.max()) if steps.size else 0.0
    why = []
    if rms > INT8_RMS_STEPS:
        why.append(f"RMS difference {rms:.1f} output steps > {INT8_RMS_STEPS:g}")
    if most > INT8_MAX_STEPS:
        why.append(f"largest difference {most:.1f} output steps > {INT8_MAX_STEPS:g}")
    return {"output_step": step, "max_abs": most * step, "max_steps": most, "rms_steps": rms,
            "passed": not why, "why": "; ".join(why)}


def rolled(outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The outputs of the batch rolled by one sample (a batch of one has no other sample)."""
    return [np.roll(o, 1, axis=0) for o in outputs]


def rolled_top1(logits: np.ndarray) -> float | None:
    """The top-1 agreement of the logits with their own rolled batch (None for a batch of one)."""
    if len(logits) < 2:
        return None
    return float((top1(logits) == top1(np.roll(logits, 1, axis=0))).mean())
