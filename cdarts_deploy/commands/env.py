"""``cdarts-env``: what a bug report needs to know about this machine.

    cdarts-env            # human-readable
    cdarts-env --json     # one JSON object (the same block the export and profile reports embed)

The block is :func:`cdarts_deploy.deploy.environment.environment`; this command adds ``nvidia-smi``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Sequence

from cdarts_deploy.deploy.environment import ISA_FLAGS, environment
from cdarts_deploy.deploy.versions import nvidia_smi


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def format_text(env: Mapping[str, Any]) -> str:
    """The block as aligned ``key: value`` lines, grouped like ``torch.utils.collect_env``."""
    cpu, paths, acc, th = env["cpu"], env["paths"], env["accelerators"], env["threads"]
    isa_on = [f for f, on in cpu["isa"].items() if on]
    rows: list[tuple[str, Any]] = [
        ("OS", env["os"]),
        ("CPU", f"{cpu['model']} ({cpu['logical_cpus']} logical, {cpu['physical_cores']} physical cores)"),
        ("ISA flags", " ".join(isa_on) or "none of " + ", ".join(ISA_FLAGS)),
        ("AVX2 / AVX-512 / VNNI / AMX",
         f"{_yes(cpu['isa']['avx2'])} / {_yes(cpu['isa']['avx512f'])} / "
         f"{_yes(cpu['isa']['avx512_vnni'] or cpu['isa']['avx_vnni'])} / {_yes(cpu['isa']['amx_int8'])}"),
        ("", ""),
        ("ATen CPU capability", paths["aten"]["capability"]
         + (f" (ATEN_CPU_CAPABILITY={paths['aten']['ATEN_CPU_CAPABILITY']})"
            if paths["aten"]["ATEN_CPU_CAPABILITY"] else "")),
        ("oneDNN max ISA", f"{paths['onednn']['effective']} (CPU allows {paths['onednn']['cpu_max']}"
         + (f", ONEDNN_MAX_CPU_ISA={paths['onednn']['ONEDNN_MAX_CPU_ISA']}"
            if paths["onednn"]["ONEDNN_MAX_CPU_ISA"] else "") + f"; {paths['onednn']['build'] or 'version unknown'})"),
        ("ORT INT8 kernels", f"{paths['onnxruntime_int8']['kernel']} "
         f"(VNNI: {_yes(paths['onnxruntime_int8']['vnni'])})"),
        ("INT8 files", paths["onnxruntime_int8"]["int8_files"]),
        ("", ""),
        *[(f"{k}", v if v is not None else "None") for k, v in env["versions"].items()],
        ("", ""),
        ("CUDA available", f"{_yes(acc['cuda_available'])} (torch built with CUDA {acc['torch_cuda_build']})"),
        ("GPUs", ", ".join(acc["gpus"]) or "None"),
        ("cuDNN", acc.get("cudnn")),
        ("ORT providers", ", ".join(acc["onnxruntime_providers"] or []) or "None"),
        ("TensorRT installed", _yes(acc["tensorrt_installed"])),
    ]
    if "nvidia_smi" in acc:
        smi = acc["nvidia_smi"]
        rows.append(("nvidia-smi", "not found" if smi is None else ", ".join(f"{k}={v}" for k, v in smi.items())))
    rows += [("", ""),
             ("torch threads", f"{th['torch_intra_op']} intra-op, {th['torch_inter_op']} inter-op"),
             ("OMP_NUM_THREADS", th["OMP_NUM_THREADS"]), ("MKL_NUM_THREADS", th["MKL_NUM_THREADS"]),
             ("CPUs", f"{th['os_cpu_count']} ({th['usable_cpus']} usable by this process)")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" if k else "" for k, v in rows) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cdarts-env", description="Print what a bug report needs: CPU flags, the kernel "
                                "paths torch / oneDNN / ONNX Runtime take here, library versions, GPU, threads.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = environment()
    env["accelerators"]["nvidia_smi"] = nvidia_smi()  # a subprocess: the command's, not the reports'
    sys.stdout.write(json.dumps(env, indent=2) + "\n" if args.json else format_text(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
