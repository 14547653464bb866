"""``cdarts-profile``: latency percentiles of a genotype or an ONNX file across runtimes.

    cdarts-profile cdarts_cifar --backend torch,onnxruntime --batch 1,32 --threads 2
    cdarts-profile model.onnx --backend onnxruntime --input-size 224 --iters 200
    cdarts-profile cdarts_b --peers default --batch 32 --out reports/

Writes ``<name>.json``, ``<name>.md`` and ``<name>.png`` (latency against
multiply-adds) into ``--out`` only when every measurement finished.
Exit status: 0 success, 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cdarts_deploy import genotype as gt
from cdarts_deploy.commands.args import OneLineParser, UsageError, non_negative_int, parse_size, positive_int, prepare_out_dir
from cdarts_deploy.profiling import BACKENDS, ProfileError

#: The peers of the issue: timm models of similar cost, and the DARTS-family zoo.
DEFAULT_PEERS = ("efficientnet_b0", "mobilenetv3_large_100", "mnasnet_100", "darts_v2", "pdarts", "pcdarts_cifar",
                 "cdarts_cifar")
PRECISIONS = ("fp32", "fp16", "int8")


def parse_batches(text: str) -> list[int]:
    """``1,8,32`` -> [1, 8, 32]."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes {text!r} do not parse; give positive integers like 1,8,32") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes {text!r} must be positive integers like 1,8,32")
    return sorted(set(values))


def parse_backends(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend {unknown[0] if unknown else text!r}; use one or more of "
                                         f"{', '.join(BACKENDS)} separated by commas")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="cdarts-profile", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="genotype JSON, zoo name (e.g. cdarts_cifar) or an .onnx file")
    p.add_argument("--backend", type=parse_backends, action="extend", help=f"comma list of {', '.join(BACKENDS)} "
                   "(repeatable; default torch,onnxruntime for a genotype, onnxruntime for an ONNX file)")
    p.add_argument("--batch", type=parse_batches, default=[1], help="batch sizes, e.g. 1,8,32 (default 1)")
    p.add_argument("--input-size", type=parse_size, help="N or HxW (default: the genotype's or the ONNX file's)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch and ONNX Runtime (default: all cores)")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--iters", type=positive_int, default=50, help="timed runs per measurement (default 50)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda for tensorrt, else cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16: FP16 ONNX / half PyTorch on CUDA; int8: Q/DQ ONNX (needs --calib-dir)")
    p.add_argument("--calib-dir", help="folder of images for INT8 calibration")
    p.add_argument("--peers", help="comma list of timm or zoo model names profiled the same way, or 'default' ("
                   + ", ".join(DEFAULT_PEERS) + ")")
    p.add_argument("--layout", choices=("cifar", "imagenet"), help="cell genotypes: network layout")
    p.add_argument("--width", type=positive_int, help="cell genotypes: initial channels C")
    p.add_argument("--cells", type=positive_int, help="cell genotypes: number of cells")
    p.add_argument("--num-classes", type=positive_int, help="classifier outputs")
    p.add_argument("--no-gemm", action="store_true", help="skip measuring the GEMM rate (no compute floor)")
    p.add_argument("--gemm-sizes", type=parse_batches, default=[1024, 2048],
                   help="square matrix sizes tried for the GEMM rate; the best counts (default 1024,2048)")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--name", help="report file stem (default: profile_<target>)")
    return p


@dataclass
class Subject:
    """One model to profile, as a PyTorch module and/or an ONNX file."""

    name: str
    model: Any | None
    onnx_path: Path | None
    input_hw: tuple[int, int]
    params: int | None
    macs: int | None
    peer: bool = False


def _log(message: str) -> None:
    print(f"[cdarts-profile] {message}", file=sys.stderr)


def onnx_input_hw(path: Path) -> tuple[int, int] | None:
    """Fixed H and W of the ONNX file's first input, or None where they are symbolic."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"{path} is not a valid ONNX model ({first}); pass a file written by cdarts-export") from None
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ProfileError(f"{path} has {len(inputs)} inputs; cdarts-profile times single-image-input models")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ProfileError(f"{path} input has rank {len(dims)}; expected NCHW images")
    h, w = dims[2], dims[3]
    return (h.dim_value, w.dim_value) if h.HasField("dim_value") and w.HasField("dim_value") else None


def subject_from_onnx(path: Path, input_hw: tuple[int, int] | None) -> Subject:
    from cdarts_deploy.gemm import onnx_macs

    fixed = onnx_input_hw(path)
    if fixed and input_hw and fixed != tuple(input_hw):
        raise ProfileError(f"{path} has a fixed input of {fixed[0]}x{fixed[1]}; drop --input-size or match it")
    hw = fixed or input_hw
    if hw is None:
        raise ProfileError(f"{path} has a symbolic input size; pass --input-size, e.g. --input-size 224")
    return Subject(path.stem, None, path, tuple(hw), None, onnx_macs(path, 1, tuple(hw)))


def subject_from_genotype(genotype: gt.Genotype, args: argparse.Namespace, name: str | None = None,
                          peer: bool = False, input_hw: tuple[int, int] | None = None) -> Subject:
    from backbones.complexity import count_macs, count_params

    from cdarts_deploy import onnx_export as ox

    is_cell = isinstance(genotype, gt.CellGenotype)
    try:
        spec = ox.resolve_spec(
            genotype,
            args.layout if is_cell else None,
            args.width if is_cell and not peer else None,
            args.cells if is_cell and not peer else None,
            args.num_classes,
            input_hw or args.input_size,
        )
    except ox.ExportError as exc:
        raise ProfileError(str(exc)) from None
    model = ox.build_model(genotype, spec)
    return Subject(name or genotype.name or "model", model, None, tuple(spec.input_size), count_params(model),
                   count_macs(model, tuple(spec.input_size)), peer)


def subject_from_timm(name: str, input_hw: tuple[int, int], num_classes: int | None) -> Subject:
    import timm

    from backbones.complexity import count_macs, count_params

    model = timm.create_model(name, pretrained=False, num_classes=num_classes or 1000).eval()
    return Subject(name, model, None, input_hw, count_params(model), count_macs(model, input_hw), True)


def resolve_peers(text: str | None) -> list[str]:
    if not text:
        return []
    import timm

    names = list(DEFAULT_PEERS) if text.strip() == "default" else [n.strip() for n in text.split(",") if n.strip()]
    zoo = gt.zoo_names()
    for n in names:
        if n not in zoo and not timm.is_model(n):
            raise ProfileError(f"unknown peer {n!r}; use a zoo name ({', '.join(zoo)}) or a timm model name")
    return names


def onnx_for(subject: Subject, precision: str, work: Path, args: argparse.Namespace) -> Path:
    """The ONNX file to time: exported once per subject, converted for fp16/int8."""
    from cdarts_deploy import onnx_export as ox
    from cdarts_deploy import precision as pr

    if subject.onnx_path is None:
        path = work / f"{subject.name}.onnx"
        _log(f"exporting {subject.name} to ONNX")
        ox.export_onnx(subject.model, path, (1, 3, *subject.input_hw), dynamic_batch=True)
        subject.onnx_path = path
    if precision == "fp32":
        return subject.onnx_path
    converted = work / f"{subject.name}.{precision}.onnx"
    if not converted.exists():
        if precision == "fp16":
            pr.to_fp16(subject.onnx_path, converted)
        else:
            _log(f"calibrating INT8 Q/DQ for {subject.name} on {args.calib_dir}")
            pr.quantize_int8(subject.onnx_path, converted, pr.load_images(args.calib_dir, subject.input_hw, limit=256))
    return converted


def engine_for(subject: Subject, precision: str, batches: Sequence[int], work: Path, args: argparse.Namespace) -> Path:
    from cdarts_deploy.trt import build_engine

    path = work / f"{subject.name}.{precision}.engine"
    if not path.exists():
        _log(f"building TensorRT {precision} engine for {subject.name}")
        build_engine(onnx_for(subject, precision, work, args), path, subject.input_hw, precision,
                     min_batch=1, opt_batch=max(batches), max_batch=max(batches))
    return path


def profile_subject(subject: Subject, args: argparse.Namespace, backends: Sequence[str], device: str,
                    threads: int, work: Path) -> list:
    from cdarts_deploy import profiling as prof

    rows = []
    for backend in backends:
        for batch in args.batch:
            shape = (batch, 3, *subject.input_hw)
            desc = f"{subject.name} {backend} b{batch}"
            if backend in ("torch", "torch-compile"):
                m = prof.measure_torch(subject.model, shape, args.warmup, args.iters, device, args.precision,
                                       compile=backend == "torch-compile", desc=desc)
            elif backend == "onnxruntime":
                m = prof.measure_onnxruntime(onnx_for(subject, args.precision, work, args), shape, args.warmup,
                                             args.iters, threads, device, args.precision, desc=desc)
            else:
                m = prof.measure_tensorrt(engine_for(subject, args.precision, args.batch, work, args), shape,
                                          args.warmup, args.iters, args.precision, desc=desc)
            _log(f"{desc}: median {m.stats.median_ms:.2f} ms, p99 {m.stats.p99_ms:.2f} ms")
            rows.append(prof.ProfileRow(subject.name, m.backend, m.device, m.precision, list(shape), subject.params,
                                        subject.macs, m.stats, m.timed_region, subject.peer))
    return rows


def check_args(args: argparse.Namespace, backends: list[str], is_onnx: bool) -> str:
    """Reject impossible combinations before any work; returns the device."""
    device = args.device or ("cuda" if "tensorrt" in backends else "cpu")
    if "tensorrt" in backends:
        from cdarts_deploy.trt import require_tensorrt

        require_tensorrt()
        if device != "cuda":
            raise ProfileError("the tensorrt backend runs on the GPU; drop --device cpu")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ProfileError("--device cuda needs an NVIDIA GPU with CUDA and none is visible; use --device cpu")
    torch_backends = [b for b in backends if b.startswith("torch")]
    if is_onnx and torch_backends:
        raise ProfileError(f"backend {torch_backends[0]} needs a genotype, not an ONNX file; use --backend onnxruntime")
    if args.precision == "int8":
        if torch_backends:
            raise ProfileError("int8 applies to onnxruntime and tensorrt only; drop the torch backends or use fp32")
        if not args.calib_dir:
            raise ProfileError("--precision int8 needs --calib-dir DIR with calibration images")
        from cdarts_deploy.precision import image_files

        image_files(args.calib_dir)
    if args.calib_dir and args.precision != "int8":
        raise ProfileError("--calib-dir is only used with --precision int8")
    if args.precision == "fp16" and torch_backends and device != "cuda":
        raise ProfileError("fp16 PyTorch timing needs --device cuda; on the CPU profile fp16 with --backend onnxruntime")
    return device


def run(args: argparse.Namespace) -> int:
    import torch

    from cdarts_deploy import profiling as prof
    from cdarts_deploy.gemm import measure_gemm_rate, torch_threads

    target = Path(args.target)
    is_onnx = target.suffix.lower() == ".onnx" or (target.is_file() and not target.suffix.lower() == ".json"
                                                   and target.read_bytes()[:1] not in (b"{", b"G"))
    if is_onnx and not target.is_file():
        raise ProfileError(f"ONNX file {target} not found; pass an existing .onnx file or a genotype")
    backends = list(dict.fromkeys(args.backend or (["onnxruntime"] if is_onnx else ["torch", "onnxruntime"])))
    device = check_args(args, backends, is_onnx)
    threads = args.threads or torch.get_num_threads()
    peers = resolve_peers(args.peers)

    out_dir = prepare_out_dir(args.out)

    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="cdarts-profile-") as tmp:
        work = Path(tmp)
        if is_onnx:
            main_subject = subject_from_onnx(target, args.input_size)
        else:
            genotype = gt.load(args.target)
            main_subject = subject_from_genotype(genotype, args)
        subjects = [main_subject]
        for peer in peers:
            if peer in gt.zoo_names():
                peer_g = gt.load(peer)
                subjects.append(subject_from_genotype(peer_g, args, peer, True, main_subject.input_hw))
            else:
                subjects.append(subject_from_timm(peer, main_subject.input_hw, args.num_classes))
        rows = []
        for subject in subjects:
            rows += profile_subject(subject, args, backends, device, threads, work)
        gemm = None
        if not args.no_gemm:
            _log("measuring the GEMM rate")
            gemm = measure_gemm_rate(threads=threads, sizes=tuple(args.gemm_sizes), device=device).as_dict()
        report = prof.make_report(rows, prof.conditions(threads, device), gemm)
        report["target"] = str(args.target)
        report["precision"] = args.precision
    stem = args.name or f"profile_{main_subject.name}"
    files = prof.write_reports(report, out_dir, stem)
    print(prof.markdown(report).split("\n## Published")[0])
    for f in files:
        print(f"wrote {f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cdarts_deploy.precision import PrecisionError
    from cdarts_deploy.trt import EngineBuildError, TensorRTUnavailable

    try:
        return run(args)
    except (ProfileError, UsageError, gt.GenotypeError, TensorRTUnavailable, PrecisionError) as exc:
        print(f"cdarts-profile: error: {exc}", file=sys.stderr)
        return 2
    except EngineBuildError as exc:
        print(f"cdarts-profile: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cdarts-profile: interrupted; no report written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
