#!/usr/bin/env python
"""Depthwise convolution backward on CPU: torch's own kernel vs alternatives with the same maths, side by side.

    .venv/bin/python benchmarks/depthwise_backward.py                 # search shapes, 1 thread
    .venv/bin/python benchmarks/depthwise_backward.py --quick         # fewer shapes and runs

Shapes are the depthwise convolutions of a CDARTS CIFAR search at width 16 and
batch 64 (C=16 at 32x32, the reduction cells' C=32 at 32x32 stride 2, C=32 at
16x16, C=64 at 16x16 stride 2, C=64 at 8x8), kernels 3x3 / 5x5, dilation 1 / 2,
in channels-last and contiguous memory order.  For every shape the reference is
``aten.convolution_backward`` (what autograd calls for ``conv2d(groups=C)``);
alternatives compute grad input and grad weight separately:

* grad input: ``conv_transpose2d(groups=C)``; ``conv2d`` with the flipped kernel
  (for stride 2 on the zero-interleaved gradient);
* grad weight: ``unfold`` + ``einsum``; a loop over the k*k kernel offsets of
  multiply-and-sum; one grouped ``conv2d`` whose reduction runs over the batch;
  ``torch.nn.grad.conv2d_weight``;
* both: "rewrite", ``backbones.depthwise_conv.depthwise_conv2d_backward`` (the
  convolution rewritten as undilated ones of width <= 3 that oneDNN's depthwise
  kernels take; grad input at stride 1 as a flipped-kernel forward conv); the
  ``bwd:rewrite`` column is its combined grad input + grad weight call.

Every alternative's result is checked against the reference (max abs error
relative to the reference's max magnitude < 1e-4) and timed interleaved with it
in the same process (median of --repeats rounds; an alternative over 5x torch's
whole backward in round 1 is timed once).  Ratios are reference time /
alternative time (> 1: the alternative is faster).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from backbones.depthwise_conv import depthwise_conv2d_backward  # noqa: E402

Tensor = torch.Tensor
TOLERANCE = 1e-4


def out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ---- grad input -----------------------------------------------------------------------------------------------------

def gi_reference(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    return torch.ops.aten.convolution_backward(go, x, w, None, [s, s], [p, p], [d, d], False, [0, 0], w.shape[0],
                                               [True, False, False])[0]


def gi_transpose(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    k = w.shape[-1]
    extra = x.shape[-1] - ((go.shape[-1] - 1) * s - 2 * p + d * (k - 1) + 1)  # output_padding (square shapes)
    return F.conv_transpose2d(go, w, stride=s, padding=p, output_padding=extra, groups=w.shape[0], dilation=d)


def gi_flip(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    k, h = w.shape[-1], x.shape[-1]
    if s > 1:  # interleave zeros so that the transposed conv becomes a stride-1 conv
        size = (go.shape[-1] - 1) * s + 1
        extra = h - (size + d * (k - 1) - 2 * p)
        z = go.new_zeros(go.shape[0], go.shape[1], size + extra, size + extra).to(memory_format=_format(go))
        z[:, :, :size:s, :size:s] = go
        go = z
    return F.conv2d(go, w.flip(2, 3), padding=d * (k - 1) - p, dilation=d, groups=w.shape[0])


# ---- grad weight ----------------------------------------------------------------------------------------------------

def gw_reference(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    return torch.ops.aten.convolution_backward(go, x, w, None, [s, s], [p, p], [d, d], False, [0, 0], w.shape[0],
                                               [False, True, False])[1]


def gw_nn_grad(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    return torch.nn.grad.conv2d_weight(x, w.shape, go, stride=s, padding=p, dilation=d, groups=w.shape[0])


def gw_unfold(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    n, c, k = x.shape[0], w.shape[0], w.shape[-1]
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s).view(n, c, k * k, -1)
    return torch.einsum("nckl,ncl->ck", cols, go.reshape(n, c, -1)).view_as(w)


def gw_offsets(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    k, ho = w.shape[-1], go.shape[-1]
    xp = F.pad(x, (p, p, p, p))
    span = (ho - 1) * s + 1
    gw = w.new_empty(w.shape[0], k * k)
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i * d:i * d + span:s, j * d:j * d + span:s]
            gw[:, i * k + j] = (window * go).sum((0, 2, 3))
    return gw.view_as(w)


def gw_grouped(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    # grad_w[c, i, j] = sum_{n,h,w} x_pad[n, c, i*d + h*s, j*d + w*s] * go[n, c, h, w]: a grouped conv whose
    # input channels are (c, n), whose weight is go, with stride d and dilation s.
    n, c, h = x.shape[0], w.shape[0], x.shape[-1]
    k = w.shape[-1]
    xin = x.transpose(0, 1).reshape(1, c * n, h, h)
    wt = go.transpose(0, 1).contiguous()
    out = F.conv2d(xin, wt, stride=d, padding=p, dilation=s, groups=c)
    return out[0, :, :k, :k].reshape_as(w)


# ---- the rewrite built into backbones.depthwise_conv (undilated convs of width <= 3, flipped-kernel grad input) -----

def gi_rewrite(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    return depthwise_conv2d_backward(x, w, go, (s, s), (p, p), (d, d), True, False)[0]


def gw_rewrite(x: Tensor, w: Tensor, go: Tensor, s: int, p: int, d: int) -> Tensor:
    return depthwise_conv2d_backward(x, w, go, (s, s), (p, p), (d, d), False, True)[1]


GRAD_INPUT: dict[str, Callable[..., Tensor]] = {"transpose": gi_transpose, "flip": gi_flip, "rewrite": gi_rewrite}
GRAD_WEIGHT: dict[str, Callable[..., Tensor]] = {"nn.grad": gw_nn_grad, "unfold": gw_unfold, "offsets": gw_offsets,
                                                 "grouped": gw_grouped, "rewrite": gw_rewrite}


def _format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() \
        else torch.contiguous_format


def rel_err(a: Tensor, ref: Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def timed(fn: Callable[[], object], inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def shapes(quick: bool) -> list[tuple[int, int, int, int, int]]:
    """(C, H, k, stride, dilation) of the search's depthwise convs."""
    sites = [(16, 32, 1), (32, 32, 2), (32, 16, 1), (64, 16, 2), (64, 8, 1)]
    if quick:
        sites = [(16, 32, 1), (32, 32, 2), (64, 8, 1)]
    return [(c, h, k, s, d) for c, h, s in sites for k in (3, 5) for d in (1, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the median is reported")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--formats", default="channels_last,contiguous")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 3 if args.quick else args.repeats
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, float32, "
          f"median of {repeats} interleaved rounds; ratio = torch time / alternative time")
    names = (["fwd", "bwd", "gi", "gw"] + [f"gi:{n}" for n in GRAD_INPUT] + [f"gw:{n}" for n in GRAD_WEIGHT]
             + ["bwd:rewrite"])
    header = f"{'format':>6} {'C':>3} {'HxW':>5} {'k':>2} {'s':>2} {'d':>2} |" + "".join(f"{n:>12}" for n in names)
    summary: dict[str, dict[str, list[float]]] = {}
    for fmt_name in args.formats.split(","):
        fmt = formats[fmt_name]
        print(f"\n{fmt_name}: milliseconds per call (fwd, bwd = grad input + grad weight, gi, gw: torch); "
              f"alternatives: ms and ratio to torch's gi / gw")
        print(header)
        totals = {n: [] for n in names}
        for c, h, k, s, d in shapes(args.quick):
            p = d * (k - 1) // 2
            x = torch.randn(args.batch, c, h, h).to(memory_format=fmt)
            w = torch.randn(c, 1, k, k).to(memory_format=fmt)
            ho = out_size(h, k, s, p, d)
            go = torch.randn(args.batch, c, ho, ho).to(memory_format=fmt)
            ref_gi, ref_gw = gi_reference(x, w, go, s, p, d), gw_reference(x, w, go, s, p, d)
            calls: dict[str, Callable[[], object]] = {
                "fwd": lambda: F.conv2d(x, w, stride=s, padding=p, dilation=d, groups=c),
                "bwd": lambda: torch.ops.aten.convolution_backward(go, x, w, None, [s, s], [p, p], [d, d], False,
                                                                   [0, 0], c, [True, True, False]),
                "gi": lambda: gi_reference(x, w, go, s, p, d),
                "gw": lambda: gw_reference(x, w, go, s, p, d),
            }
            for n, fn in GRAD_INPUT.items():
                err = rel_err(fn(x, w, go, s, p, d), ref_gi)
                assert err < TOLERANCE, f"gi:{n} wrong for C={c} H={h} k={k} s={s} d={d}: {err:.2e}"
                calls[f"gi:{n}"] = (lambda fn=fn: fn(x, w, go, s, p, d))
            for n, fn in GRAD_WEIGHT.items():
                err = rel_err(fn(x, w, go, s, p, d), ref_gw)
                assert err < TOLERANCE, f"gw:{n} wrong for C={c} H={h} k={k} s={s} d={d}: {err:.2e}"
                calls[f"gw:{n}"] = (lambda fn=fn: fn(x, w, go, s, p, d))
            calls["bwd:rewrite"] = lambda: depthwise_conv2d_backward(x, w, go, (s, s), (p, p), (d, d))
            inner = max(1, int(0.02 / max(timed(calls["bwd"], 1), 1e-4)))
            runs: dict[str, list[float]] = {n: [] for n in names}
            for r in range(repeats):
                for n in names:
                    # an alternative 5x slower than torch's whole backward in round 1 is not timed again
                    if r == 0 or runs[n][0] < 5 * runs["bwd"][0]:
                        runs[n].append(timed(calls[n], inner))
            med = {n: statistics.median(v) for n, v in runs.items()}
            cells = []
            for n in names:
                totals[n].append(med[n])
                ms = f"{med[n] * 1e3:.2f}"
                ref = {"gi": med["gi"], "gw": med["gw"], "bw": med["bwd"]}.get(n[:2]) if ":" in n else None
                if ref is not None:
                    ms += f"/{ref / med[n]:.1f}x"
                cells.append(f"{ms:>12}")
            print(f"{fmt_name[:6]:>6} {c:3d} {h:2d}x{h:<2d} {k:2d} {s:2d} {d:2d} |" + "".join(cells))
        summary[fmt_name] = totals
    print("\nsummary over the shapes (sum of medians, ms; ratio = torch / alternative):")
    for fmt_name, totals in summary.items():
        tot = {n: sum(v) * 1e3 for n, v in totals.items()}
        print(f"  {fmt_name}: fwd {tot['fwd']:.1f}, bwd {tot['bwd']:.1f} (bwd/fwd {tot['bwd'] / tot['fwd']:.1f}x), "
              f"gi {tot['gi']:.1f}, gw {tot['gw']:.1f}")
        for n in names[4:]:
            base = {"gi": "gi", "gw": "gw", "bw": "bwd"}[n[:2]]
            ref = tot[base]
            geo = math.exp(statistics.mean(math.log(totals[base][i] / t) for i, t in enumerate(totals[n])))
            print(f"    {n:12} {tot[n]:8.1f} ms   total ratio {ref / tot[n]:5.2f}x   geometric mean {geo:5.2f}x")
        torch_total, rewrite_total = tot["fwd"] + tot["bwd"], tot["fwd"] + tot["bwd:rewrite"]
        print(f"    forward + backward: torch {torch_total:.1f} ms, with the rewrite {rewrite_total:.1f} ms "
              f"= {torch_total / rewrite_total:.2f}x")
        best_gi = min((n for n in names if n.startswith("gi:")), key=lambda n: tot[n])
        best_gw = min((n for n in names if n.startswith("gw:")), key=lambda n: tot[n])
        per_shape = [min(totals[a][i] for a in names if a.startswith("gi:"))
                     + min(totals[a][i] for a in names if a.startswith("gw:")) for i in range(len(totals["bwd"]))]
        print(f"    backward with {best_gi} + {best_gw}: {tot[best_gi] + tot[best_gw]:.1f} ms vs torch "
              f"{tot['bwd']:.1f} ms = {tot['bwd'] / (tot[best_gi] + tot[best_gw]):.2f}x; "
              f"best per shape: {sum(per_shape) * 1e3:.1f} ms = {tot['bwd'] / (sum(per_shape) * 1e3):.2f}x")


if __name__ == "__main__":
    main()
