"""INT8 versus FP32 under ONNX Runtime on the CPU, for every zoo model, measured side by side.

    python benchmarks/int8_speed.py --threads 2 --out bench/int8     # all zoo models, batch 1 and 32
    python benchmarks/int8_speed.py --models cdarts_cifar,cdarts_b --batches 1 --variants ort,ort-per-tensor

Agreement is judged on a trained copy.  Each model starts from random weights whose BatchNorm statistics
come from real pictures (scikit-learn's handwritten digits, upsampled to the input size and normalised
with the model's own mean/std), is trained end to end on ``--train`` other digits for
``--train-seconds`` (Adam), gets BatchNorm statistics of the trained weights, and a classifier refitted
on those digits (ridge regression of the labels on the pooled features, the first ten classes; other
classes get zero weights and a bias of -1).  A random deep network is a chaotic function of its input
(a classifier on its features reads digits at chance level, and its logits are near-uniform), so
agreement measured on it means nothing: read the agreement column only where the FP32 digit accuracy
(in the table) is well above chance (10%).  On two shared CPU cores the full-size networks get only a
few training steps in a minute; ``--width``/``--cells`` give a smaller cell network that trains in
minutes, for the agreement of the quantization scheme itself.  ``--trained DIR`` keeps each trained copy (and
loads it on the next run), so a long training is paid once:

    python benchmarks/int8_speed.py --models cdarts_cifar --width 12 --cells 8 --train-seconds 150 \
        --batches 1 --variants ort,ort-no-rewrite --held-out 500

The model is exported with the tracing exporter and quantized with
:func:`cdarts_deploy.deploy.precision.quantize_int8` on ``--calib`` digits.  Top-1 agreement with the
FP32 file (and its 95% Wilson interval, and the logit cosine) is measured on ``--held-out`` other digits.

Latency: the FP32 session and every variant's INT8 session alternate in ``--rounds`` rounds of ``--iters`` runs (one
FP32 reference for all variants), so load from other processes hits them alike (each block after 0.15 s of untimed
runs: the session timed before keeps its thread pool busy for a while, which slows the next one's first batch-1 runs,
docs/results/cpu_timing_noise.md); the table shows the median wall time over all runs and the FP32/INT8 ratio, and
the same for the process CPU time of a run (with ``--threads 1`` the work done, which other processes' load hardly
changes; with more threads it includes the pool's spinning). The load average is recorded per row.

Variants: ``ort`` (what ``cdarts-export --int8`` makes: the ONNX Runtime target in the default CPU form, ``portable``,
with its average pools as 8-bit pools or as depthwise convolutions, whichever ran faster at the largest of
``--batches`` in a timing of its own before the measurement), ``ort-vnni`` / ``ort-7bit`` / ``ort-u8`` (the same in
the CPU form with full 8-bit weights, exact only on CPUs with VNNI, and the two forms exact on every x86-64 CPU: 7-bit
weights, unsigned 8-bit weights; :mod:`cdarts_deploy.deploy.int8_cpu`), ``ort-pools`` (average pools always as pools),
``ort-per-tensor`` (per-tensor weights), ``ort-float-depthwise`` (depthwise convolutions kept float),
``ort-no-rewrite`` (the graph quantized as exported: Relus on shared inputs and depthwise convolutions float),
``ort-pool-convs`` (average pools as depthwise convolutions), ``ort-plain-gates`` (squeeze-excitation gates as the
quantizer leaves them: a float HardSigmoid between 8-bit ops, multiplied per pixel), ``tensorrt`` (the symmetric Q/DQ
file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from sklearn.datasets import load_digits

from cdarts_deploy import genotype as gt  # noqa: E402
from cdarts_deploy.atomic_files import atomic_path, write_text  # noqa: E402
from cdarts_deploy.deploy import int8_cpu, ort  # noqa: E402
from cdarts_deploy.deploy import model_spec as ms  # noqa: E402
from cdarts_deploy.deploy import precision as pr  # noqa: E402
from cdarts_deploy.deploy.onnx_graph import export_onnx  # noqa: E402
from cdarts_deploy.deploy.parity import torch_outputs  # noqa: E402
from cdarts_deploy.deploy.timing import settle  # noqa: E402

ZOO = ["cdarts_cifar", "pcdarts_cifar", "darts_v1", "darts_v2", "pdarts", "cdarts_imagenet", "pcdarts_imagenet",
       "cdarts_a", "cdarts_b"]
VARIANTS = {
    # what cdarts-export --int8 makes: average pools in the form that is faster at the largest --batches
    "ort": dict(target="onnxruntime", fastest_pools=True),
    # the CPU forms (cdarts_deploy.deploy.int8_cpu), each with the faster pool form: full 8-bit weights (exact
    # only with VNNI), and the two ways of being exact on every x86-64 CPU
    "ort-vnni": dict(target="onnxruntime", fastest_pools=True, cpu="vnni"),
    "ort-7bit": dict(target="onnxruntime", fastest_pools=True, cpu="portable", portable_weights="7bit"),
    "ort-u8": dict(target="onnxruntime", fastest_pools=True, cpu="portable", portable_weights="uint8"),
    "ort-pools": dict(target="onnxruntime"),
    "ort-per-tensor": dict(target="onnxruntime", per_channel=False),
    "ort-float-depthwise": dict(target="onnxruntime", float_depthwise=True),
    "ort-no-rewrite": dict(target="onnxruntime", rewrite=False, float_depthwise=True),
    "ort-pool-convs": dict(target="onnxruntime", pools_as_convs=True),
    "ort-plain-gates": dict(target="onnxruntime", gates=False),
    "tensorrt": dict(target="tensorrt"),
}


def digits(count: int, offset: int, hw: tuple[int, int], mean, std) -> np.ndarray:
    """``count`` handwritten digits from ``offset`` on, as normalised NCHW float32 pictures of size ``hw``.

    Each 8x8 digit is upsampled bilinearly and tinted per channel (so the three channels differ).
    """
    data = load_digits().images.astype(np.float32) / 16.0
    if offset + count > len(data):
        raise SystemExit(f"only {len(data)} digits: --calib plus --held-out plus BN images must fit")
    x = torch.from_numpy(data[offset:offset + count, None])
    x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False).numpy()
    tint = np.random.default_rng(offset).uniform(0.4, 1.0, size=(count, 3, 1, 1)).astype(np.float32)
    rgb = np.clip(x * tint + 0.1 * (1 - tint), 0, 1)
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return np.ascontiguousarray((rgb - m) / s, dtype=np.float32)


def bn_from_pictures(model, pictures: np.ndarray, batch: int = 16) -> None:
    """BatchNorm statistics of a random network averaged over real pictures (activations of sane scale)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(pictures), batch):
            model(torch.from_numpy(pictures[start:start + batch]))
    model.eval()


def train_classifier(model, pictures: np.ndarray, labels: np.ndarray, batch: int = 32, ridge: float = 1e-2) -> float:
    """Fit the classifier to ``labels`` (0-9) by ridge regression on the pooled features; returns the training
    accuracy.  Classes past the tenth get zero weights and a bias of -1."""
    with torch.no_grad():
        feats = torch.cat([model.forward_head(model.forward_features(torch.from_numpy(pictures[i:i + batch])),
                                              pre_logits=True) for i in range(0, len(pictures), batch)]).double()
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        f = torch.cat([(feats - mean) / std, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
        y = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), 10).double() * 2 - 1
        w = torch.linalg.solve(f.T @ f + ridge * len(f) * torch.eye(f.shape[1], dtype=torch.float64), f.T @ y)
        linear = model.get_classifier()
        weight = torch.zeros_like(linear.weight, dtype=torch.float64)
        bias = torch.full_like(linear.bias, -1.0, dtype=torch.float64)
        weight[:10] = (w[:-1] / std[:, None]).T
        bias[:10] = w[-1] - (w[:-1] / std[:, None] * mean[:, None]).sum(0)
        linear.weight.copy_(weight * 4)
        linear.bias.copy_(bias * 4)
        fitted = f @ w
    return float((fitted.argmax(1).numpy() == labels).mean())


def train_briefly(model, pictures: np.ndarray, labels: np.ndarray, seconds: float, batch: int = 16,
                  lr: float = 2e-3, seed: int = 0, steps: int | None = None) -> dict:
    """Train the whole network on ``pictures`` (digit ``labels``) with Adam for about ``seconds`` (or for
    ``steps`` steps); returns the steps done and the last steps' mean loss.  A random deep network is a chaotic
    function of its input (a linear classifier on its features reads digits at chance level); training gives it
    real features."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)

    model.train()
    losses, done, start = [], 0, time.perf_counter()
    while (done < steps) if steps else (time.perf_counter() - start < seconds):
        idx = rng.choice(len(pictures), size=batch, replace=False)
        out = model(torch.from_numpy(pictures[idx]))
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels[idx]).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        done += 1
    model.eval()
    return {"train_steps": done, "train_seconds": round(time.perf_counter() - start, 1),
            "final_loss": float(np.mean(losses[-10:])) if losses else None}


def digit_labels(count: int, offset: int) -> np.ndarray:
    return load_digits().target[offset:offset + count]


def batch_of(images: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` images, repeated from the start when there are fewer."""
    return images[:size] if size <= len(images) else np.resize(images, (size, *images.shape[1:]))


def side_by_side(sessions: dict, x: np.ndarray, iters: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU milliseconds per run of each session, timed in rounds of alternating order;
    each block of ``iters`` timed runs follows untimed runs for a fixed time (``timing.settle``), so that the
    session timed before no longer competes for the cores."""
    wall: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        for k, s in (sessions.items() if r % 2 == 0 else reversed(sessions.items())):
            settle(lambda: ort.run(s, x))
            for _ in range(iters):
                start, start_cpu = time.perf_counter(), time.process_time()
                ort.run(s, x)
                wall[k].append((time.perf_counter() - start) * 1e3)
                cpu[k].append((time.process_time() - start_cpu) * 1e3)
    return {k: {"wall": float(np.median(wall[k])), "cpu": float(np.median(cpu[k]))} for k in sessions}


def _stage(name: str, what: str, since: float) -> float:
    print(f"  [{name}] {what}: {time.perf_counter() - since:.0f} s", file=sys.stderr, flush=True)
    return time.perf_counter()


def measure(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    genotype = gt.load(name)
    is_cell = isinstance(genotype, gt.CellGenotype)
    spec = ms.resolve_spec(genotype, None, args.width if is_cell else None, args.cells if is_cell else None)
    if args.small_input and max(spec.input_size) > args.small_input:
        spec = ms.resolve_spec(genotype, None, args.width if is_cell else None, args.cells if is_cell else None,
                               input_size=(args.small_input, args.small_input))
    hw = tuple(spec.input_size)
    torch.manual_seed(0)
    model = ms.build_model(genotype, spec)
    mean, std = pr.normalization(model)
    bn_from_pictures(model, digits(64, 0, hw, mean, std))
    calibration = digits(args.calib, 64, hw, mean, std)
    held_out = digits(args.held_out, 64 + args.calib, hw, mean, std)
    held_labels = digit_labels(args.held_out, 64 + args.calib)
    first_train = 64 + args.calib + args.held_out
    train_pictures, train_labels = digits(args.train, first_train, hw, mean, std), digit_labels(args.train, first_train)
    clock = time.perf_counter()
    reduced = ((is_cell and (args.width, args.cells) != (None, None))
               or hw != tuple(ms.resolve_spec(genotype).input_size))
    saved = Path(args.trained) / f"{name}{f'_{spec.width}_{spec.cells}_{hw[0]}' if reduced else ''}.pt" \
        if args.trained else None
    if saved is not None and saved.exists():
        state = torch.load(saved, weights_only=True)
        model.load_state_dict(state["model"])
        training = json.loads(state["training"])
        training["loaded_from"] = str(saved)
    else:
        training = train_briefly(model, train_pictures, train_labels, args.train_seconds, steps=args.train_steps) \
            if args.train_seconds > 0 or args.train_steps else {}
        bn_from_pictures(model, train_pictures[:128])
        training["classifier_train_accuracy"] = train_classifier(model, train_pictures, train_labels)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(saved) as tmp:
                torch.save({"model": model.state_dict(), "training": json.dumps(training)}, tmp)
    clock = _stage(name, "training", clock)
    fp32_path = work / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(model, fp32_path, (2, 3, *hw), exporter="torchscript")
    export_s = time.perf_counter() - start
    reference = torch_outputs(model, held_out)[0]
    fp32 = ort.session(fp32_path, args.threads)
    clock = _stage(name, "export and PyTorch reference", clock)
    rows = []
    big = name in ("cdarts_imagenet", "pcdarts_imagenet", "cdarts_a", "cdarts_b")
    batches = [b for b in args.batches if not (big and b > 1 and args.skip_large_batch_224)]
    sessions = {}
    for variant in args.variants:
        path = work / f"{name}.{variant}.int8.onnx"
        start = time.perf_counter()
        options = dict(VARIANTS[variant])
        if options.pop("fastest_pools", False):
            x = batch_of(held_out, max(batches))
            settings = pr.quantize_int8_fastest_pools(fp32_path, path, calibration, x, args.threads, **options)
        else:
            settings = pr.quantize_int8(fp32_path, path, calibration, **options)
        quant_s = time.perf_counter() - start
        int8 = sessions[variant] = ort.session(path, args.threads)
        int8_logits = np.concatenate([ort.run(int8, held_out[i:i + 32])[0] for i in range(0, len(held_out), 32)])
        held = pr.agreement(reference, int8_logits)
        clock = _stage(name, f"{variant}: quantization and agreement", clock)
        label = name if not reduced else \
            f"{name} ({f'C={spec.width}, {spec.cells} cells, ' if is_cell else ''}{hw[0]}x{hw[1]})"
        rows.append({"model": label, "network": spec.as_dict(), "variant": variant, "input": [3, *hw],
                     "export_s": round(export_s, 1), "quantize_s": round(quant_s, 1),
                     "weights": settings["weight_granularity"], "settings": settings, "training": training,
                     "fp32_digit_accuracy": float((reference.argmax(1) == held_labels).mean()),
                     "int8_digit_accuracy": float((int8_logits.argmax(1) == held_labels).mean()), **held,
                     # per image, so that two variants can be compared image by image (paired)
                     "fp32_top1": reference.argmax(1).tolist(), "int8_top1": int8_logits.argmax(1).tolist()})
    # every variant's file and the fp32 file in the same alternating rounds: one fp32 reference for all of them
    for b in batches:
        x = batch_of(held_out, b)
        med = side_by_side({"fp32": fp32, **sessions}, x, args.iters if b > 1 else args.iters * 3, args.rounds)
        for row in rows:
            q = med[row["variant"]]
            row[f"b{b}"] = {"fp32_ms": med["fp32"]["wall"], "int8_ms": q["wall"],
                            "speedup": med["fp32"]["wall"] / q["wall"], "fp32_cpu_ms": med["fp32"]["cpu"],
                            "int8_cpu_ms": q["cpu"], "cpu_speedup": med["fp32"]["cpu"] / q["cpu"]}
    clock = _stage(name, "timing", clock)
    for row in rows:
        row["load_average"] = os.getloadavg()[0]
        print(format_row(row, args.batches), flush=True)
    return rows


def format_row(row: dict, batches: list[int]) -> str:
    cells = [row["model"], row["variant"], "x".join(map(str, row["input"][1:])), row["weights"]]
    for b in batches:
        r = row.get(f"b{b}")
        cells += [f"{r['fp32_ms']:.1f} / {r['int8_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['cpu_speedup']:.2f}x"] \
            if r else ["-", "-", "-"]
    low, high = row["wilson95"]
    cells += [f"{row['agree']}/{row['images']} ({row['top1_agreement']:.1%}, 95% CI {low:.1%}-{high:.1%})",
              f"{row['logit_cosine']:.4f}", f"{row['fp32_digit_accuracy']:.1%} / {row['int8_digit_accuracy']:.1%}",
              f"{row['load_average']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def header(batches: list[int]) -> str:
    cols = ["model", "variant", "input", "weights"]
    for b in batches:
        cols += [f"b{b} fp32 / int8 ms", f"b{b} speed-up", f"b{b} CPU-time speed-up"]
    cols += ["top-1 agreement (held-out)", "logit cosine", "digit accuracy fp32 / int8", "load avg"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def machine_conditions(args: argparse.Namespace) -> dict:
    """What the numbers depend on: CPU model and its dot-product flags, library versions, threads, load, settings."""

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    flags = int8_cpu.cpu_flags()
    return {"cpu_model": model, "logical_cpus": os.cpu_count(),
            "vnni_flags": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"}),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "threads": args.threads,
            "torch_threads": torch.get_num_threads(), "load_average_start": list(os.getloadavg()),
            "settings": {k: v for k, v in vars(args).items() if k != "trained"}}


def conditions_line(c: dict) -> str:
    return (f"CPU {c['cpu_model']} ({c['logical_cpus']} logical CPUs; "
            f"VNNI flags: {', '.join(c['vnni_flags']) or 'none'}), "
            f"ONNX Runtime {c['onnxruntime']}, {c['threads']} threads, load average (1/5/15 min) "
            f"{'/'.join(f'{x:.1f}' for x in c['load_average_start'])} at the start, "
            f"{'/'.join(f'{x:.1f}' for x in c.get('load_average_end', []))} at the end.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(ZOO))
    p.add_argument("--variants", default="ort", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3, help="timed runs per round at batch > 1 (3x that at batch 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calib", type=int, default=32, help="calibration digits")
    p.add_argument("--held-out", type=int, default=400, help="held-out digits for the agreement")
    p.add_argument("--train", type=int, default=1000, help="digits the network is trained on")
    p.add_argument("--train-seconds", type=float, default=60.0,
                   help="seconds of whole-network training on the digits before the classifier is fitted (0: none)")
    p.add_argument("--train-steps", type=int, help="train for this many steps instead of --train-seconds")
    p.add_argument("--torch-threads", type=int, help="PyTorch threads for training and reference outputs (default: "
                   "PyTorch's; 1 on a busy machine, where two threads wait on each other)")
    p.add_argument("--trained", help="folder of trained copies: a model found there (<name>.pt) is loaded instead of "
                   "trained, one trained here is saved there")
    p.add_argument("--width", type=int, help="cell genotypes: initial channels instead of the genotype's")
    p.add_argument("--cells", type=int, help="cell genotypes: number of cells instead of the genotype's")
    p.add_argument("--small-input", type=int, help="networks with a larger input run at this size instead (agreement "
                   "of trained networks where two cores cannot train the 224x224 ones long enough)")
    p.add_argument("--skip-large-batch-224", action="store_true", help="224x224 models at batch 1 only")
    p.add_argument("--out", help="folder for int8_speed.json and int8_speed.md")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; use {', '.join(VARIANTS)}")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    conditions = machine_conditions(args)
    print(f"threads {args.threads}, load average at start {os.getloadavg()[0]:.1f}, CPU {conditions['cpu_model']}, "
          f"VNNI flags {conditions['vnni_flags'] or 'none'}")
    print(header(args.batches), flush=True)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            rows += measure(name, args, Path(work))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        conditions["load_average_end"] = list(os.getloadavg())
        conditions["wall_seconds"] = round(time.perf_counter() - started, 1)
        write_text(out / "int8_speed.json",
                   json.dumps({"threads": args.threads, "conditions": conditions, "rows": rows}, indent=2) + "\n")
        write_text(out / "int8_speed.md", conditions_line(conditions) + "\n\n" + header(args.batches) + "\n" +
                   "\n".join(format_row(r, args.batches) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
