"""Minimal PyTorch-only reproduction: oneDNN's strided 1x1 convolution weight gradient writes out of bounds.

    python tools/repro_onednn_avx2.py            # the AVX2 cases (ONEDNN_MAX_CPU_ISA=AVX2 on AVX-512 CPUs)
    python tools/repro_onednn_avx2.py --avx512   # also the AVX-512 kernel at a larger input (AVX-512 CPUs)

The op: ``torch.nn.functional.conv2d(x, w, stride=2)`` with a 1x1 ``w``, ``x`` channels-last float32,
fewer input channels than oneDNN's channel block (8 for ``jit_1x1:avx2``, 16 for
``jit_1x1:avx512_core``), then the weight gradient (``aten.convolution_backward`` with
output_mask [False, True, False]).  Each case runs in a fresh process with ``MALLOC_CHECK_=3`` (glibc
then aborts on the first corrupted chunk it meets) and ``ONEDNN_VERBOSE=1`` (to print the ISA and the
kernel oneDNN ran); the weight gradient is compared with a float64 reference.  Exit status 1 when a
case that should pass fails (the bug is present), 0 when all pass.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys

import torch

# (label, ONEDNN_MAX_CPU_ISA, threads, N, C_in, C_out, H=W, stride, channels_last, subsample_first)
AVX2_CASES = [
    ("bug: AVX2, 1 thread", "AVX2", 1, 4, 4, 2, 8, 2, True, False),
    ("bug: AVX2, 2 threads", "AVX2", 2, 4, 4, 2, 8, 2, True, False),
    ("control: C_in = 8 (= block)", "AVX2", 1, 4, 8, 2, 8, 2, True, False),
    ("control: stride 1", "AVX2", 1, 4, 4, 2, 8, 1, True, False),
    ("control: NCHW", "AVX2", 1, 4, 4, 2, 8, 2, False, False),
    ("workaround: x[:, :, ::2, ::2] at stride 1", "AVX2", 1, 4, 4, 2, 8, 2, True, True),
]
AVX512_CASES = [
    ("bug: AVX-512, 128x128, batch 32", "", 1, 32, 4, 8, 128, 2, True, False),
    ("control: AVX-512, C_in = 16 (= block)", "", 1, 32, 16, 8, 128, 2, True, False),
]
ITERATIONS = 5


def child(threads: int, n: int, c_in: int, c_out: int, size: int, stride: int, channels_last: bool,
          subsample: bool) -> int:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    w = torch.randn(c_out, c_in, 1, 1).to(memory_format=fmt)
    worst = 0.0
    for _ in range(ITERATIONS):
        x = torch.randn(n, c_in, size, size).to(memory_format=fmt)
        xs, s = (x[:, :, ::stride, ::stride].contiguous(memory_format=fmt), 1) if subsample else (x, stride)
        y = torch.nn.functional.conv2d(xs, w, None, s)
        go = torch.randn_like(y)
        gw = torch.ops.aten.convolution_backward(go, xs, w, None, [s, s], [0, 0], [1, 1], False, [0, 0], 1,
                                                 [False, True, False])[1]
        ref = torch.einsum("nohw,nihw->oi", go.double(), x[:, :, ::stride, ::stride].double())
        worst = max(worst, (gw.double().view(c_out, c_in) - ref).abs().max().item() / ref.abs().max().item())
    print(f"max relative error of the weight gradient: {worst:.2e}", flush=True)
    return 3 if worst > 1e-4 else 0


def run_case(case: tuple) -> bool:
    label, isa, threads, n, c_in, c_out, size, stride, cl, sub = case
    env = dict(os.environ, MALLOC_CHECK_="3", ONEDNN_VERBOSE="1", OMP_NUM_THREADS=str(threads))
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    args = [str(v) for v in (threads, n, c_in, c_out, size, stride, int(cl), int(sub))]
    try:
        r = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True,
                           timeout=60)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "hang", ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")
    isa_line = re.search(r"onednn_verbose,.*?isa:([^\n]*)", out)
    convs = [l.split(",") for l in out.splitlines() if ",primitive,exec,cpu,convolution," in l]
    bwd_w = next((f"{f[6]} {f[-2]}" for f in convs if f[7] == "backward_weights"), None)
    err = re.search(r"max relative error[^\n]*", out)
    glibc = [l for l in out.splitlines() if not l.startswith("onednn_verbose") and l.strip()
             and "max relative error" not in l]
    if rc == 0:
        verdict = "ok"
    elif rc == 3:
        verdict = "WRONG weight gradient"
    elif rc == "hang":
        verdict = "HANG (killed after 60 s)"
    elif isinstance(rc, int) and rc < 0:
        verdict = f"CRASH {signal.Signals(-rc).name}" + (f" ({glibc[-1]})" if glibc else "")
    else:
        verdict = f"exit {rc}" + (f" ({glibc[-1]})" if glibc else "")
    fmt = "channels_last" if cl else "NCHW"
    print(f"{label:44s} -> {verdict}")
    print(f"    conv2d 1x1 float32 {fmt}: x ({n}, {c_in}, {size}, {size}), w ({c_out}, {c_in}, 1, 1), "
          f"stride {1 if sub else stride}{' on x[:, :, ::2, ::2]' if sub else ''}, padding 0, dilation 1, "
          f"{threads} thread(s), weight gradient x{ITERATIONS}")
    if not isa_line:
        print("    no oneDNN primitive ran (ATen took another convolution backend)")
    else:
        # verbose lines are printed after a primitive finishes: a crash inside it leaves none
        ran = bwd_w or ("(none logged: the process died inside it)" if rc != 0 else "(none: another backend)")
        print(f"    oneDNN ISA: {isa_line.group(1)}; backward_weights primitive: {ran}")
    if err:
        print(f"    {err.group(0)}")
    return rc == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--avx512", action="store_true", help="also the AVX-512 kernel (needs an AVX-512 CPU)")
    p.add_argument("--child", nargs=8, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        t, n, ci, co, size, s, cl, sub = args.child
        return child(t, n, ci, co, size, s, bool(cl), bool(sub))

    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            cpu = fh.read()
        model = re.search(r"model name\s*:\s*(.*)", cpu)
        have = set(re.search(r"flags\s*:\s*(.*)", cpu).group(1).split())
        flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile")
                         if f in have)
        print(f"CPU: {model.group(1) if model else '?'} [{flags}], {os.cpu_count()} logical CPUs")
    onednn = re.search(r"MKL-DNN (v[^\n]*)", torch.__config__.show())
    print(f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"oneDNN {onednn.group(1) if onednn else '?'}, Python {sys.version.split()[0]}")
    cases = AVX2_CASES + (AVX512_CASES if args.avx512 else [])
    if args.avx512 and "avx512f" not in flags:
        print("no AVX-512 on this CPU: the AVX-512 cases would run the AVX2 kernel", file=sys.stderr)
    results = [run_case(c) for c in cases]
    expected_to_pass = all(results)
    failed = [c[0] for c, ok in zip(cases, results) if not ok]
    print("bug present: " + ", ".join(failed) if failed else "all cases passed: bug not present")
    return 0 if expected_to_pass else 1


if __name__ == "__main__":
    sys.exit(main())
