#!/usr/bin/env python
"""Decide how tools/install_mm.sh builds mmcv's compiled ops, and print it as shell assignments.

    python tools/mm_build_plan.py [--torch-version V] [--torch-cuda X.Y|none] [--gpus 8.0,9.0|none]
                                  [--torch-archs sm_80,sm_90]

Without options the facts come from the installed torch; the options stand in for them
(tests use them to describe a GPU host on a machine without one).  Also read: CUDA_HOME,
PATH (for nvcc), TORCH_CUDA_ARCH_LIST (kept when set) and CDARTS_MM_OPS (auto, cpu or cuda).

By default (``auto``) CUDA ops are built when a GPU is visible, a CUDA toolkit is found
(``$CUDA_HOME/bin/nvcc`` or ``nvcc`` on PATH) and torch itself is built with CUDA.  A machine with a
toolkit but no GPU (a CPU-only CI runner with a CUDA image) gets CPU ops, which build in minutes
instead of an hour; ``CDARTS_MM_OPS=cuda`` builds CUDA ops there anyway (a GPU-less build host).  The wheel
cache key is the CPU key ``torch<version>-cp<python>-<platform>`` with ``-cu<XY>-sm<archs>`` appended for CUDA builds,
so a CPU wheel and wheels for different toolkits or GPUs never replace one another.
Printed variables: MM_KEY, MM_FORCE_CUDA, MM_ARCH_LIST, MM_CUDA_HOME, MM_GPU_VISIBLE, MM_SUMMARY.
A setup that cannot work (a visible GPU but no toolkit, toolkit and torch on different CUDA
major versions) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata as md
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from typing import Mapping, Optional, Sequence

__all__ = ["TorchFacts", "Plan", "PlanError", "cpu_key", "find_nvcc", "nvcc_version", "make_plan", "main"]

OPS_CHOICES = ("auto", "cpu", "cuda")


class PlanError(Exception):
    """The host cannot give the requested build; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class TorchFacts:
    version: str  # without the local part: 2.14.1
    cuda: Optional[str]  # torch.version.cuda, None for a CPU-only torch
    gpu_archs: tuple[str, ...]  # compute capabilities of the visible GPUs, e.g. ("8.0",); empty when none
    torch_archs: tuple[str, ...]  # what torch itself is compiled for, e.g. ("sm_80", "sm_90")


@dataclasses.dataclass(frozen=True)
class Plan:
    key: str
    force_cuda: bool
    arch_list: str
    cuda_home: str
    gpu_visible: bool
    summary: str

    def as_shell(self) -> str:
        values = dict(MM_KEY=self.key, MM_FORCE_CUDA="1" if self.force_cuda else "0", MM_ARCH_LIST=self.arch_list,
                      MM_CUDA_HOME=self.cuda_home, MM_GPU_VISIBLE="1" if self.gpu_visible else "0",
                      MM_SUMMARY=self.summary)
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def cpu_key(torch_version: str) -> str:
    """The cache key of a CPU-ops wheel (unchanged from earlier releases, so cached wheels stay valid)."""
    return f"torch{torch_version}-cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}"


def find_nvcc(env: Mapping[str, str]) -> Optional[tuple[str, str]]:
    """(nvcc path, CUDA home) from CUDA_HOME, else from nvcc on PATH; None when there is no toolkit."""
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if home:
        nvcc = os.path.join(home, "bin", "nvcc")
        return (nvcc, home) if os.access(nvcc, os.X_OK) else None
    nvcc = shutil.which("nvcc", path=env.get("PATH", ""))
    if nvcc is None:
        return None
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    # /usr/local/bin/nvcc is often a wrapper script: the headers then live under /usr/local/cuda.
    if not os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")) and os.path.isdir("/usr/local/cuda/include"):
        home = "/usr/local/cuda"
    return nvcc, home


def nvcc_version(nvcc: str) -> str:
    """'X.Y' from ``nvcc --version``."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlanError(f"{nvcc} --version failed ({exc}); fix the CUDA toolkit or unset CUDA_HOME") from None
    found = re.search(r"release (\d+)\.(\d+)", out)
    if not found:
        raise PlanError(f"{nvcc} --version printed no 'release X.Y'; fix the CUDA toolkit or unset CUDA_HOME")
    return f"{found.group(1)}.{found.group(2)}"


def _default_arch_list(facts: TorchFacts) -> tuple[str, str]:
    """TORCH_CUDA_ARCH_LIST for the visible GPUs, else for every arch torch is built for; and where it came from.

    torch's own default (the visible GPUs, PTX for the newest) fails when no GPU is visible,
    so a build host without one gets torch's list instead."""
    if facts.gpu_archs:
        archs = sorted(set(facts.gpu_archs), key=lambda a: tuple(int(p) for p in a.split(".")))
        origin = "the visible GPUs"
    else:
        archs = [f"{a[3:-1]}.{a[-1]}" for a in facts.torch_archs if re.fullmatch(r"sm_\d+", a)]
        origin = "every arch torch is built for, no GPU visible"
        if not archs:
            raise PlanError("no GPU is visible and torch lists no CUDA archs; set TORCH_CUDA_ARCH_LIST, e.g. '8.0;9.0'")
    return ";".join(archs[:-1] + [archs[-1] + "+PTX"]), origin


def _arch_tag(arch_list: str) -> str:
    parts = [a.strip() for a in re.split(r"[;\s]+", arch_list) if a.strip()]
    return "sm" + "_".join(p.replace(".", "").replace("+PTX", "ptx").lower() for p in parts)


def make_plan(facts: TorchFacts, env: Mapping[str, str]) -> Plan:
    """The build decision for ``facts`` (what torch reports) on a host with environment ``env``."""
    ops = env.get("CDARTS_MM_OPS", "auto") or "auto"
    if ops not in OPS_CHOICES:
        raise PlanError(f"CDARTS_MM_OPS={ops!r}: use one of {', '.join(OPS_CHOICES)}")
    key = cpu_key(facts.version)
    gpu = bool(facts.gpu_archs)
    found = find_nvcc(env)
    if ops == "cpu":
        return Plan(key, False, "", "", gpu, "CPU ops only: CDARTS_MM_OPS=cpu")
    if facts.cuda is None or found is None:
        why = ("torch is a CPU-only build" if facts.cuda is None
               else "no CUDA toolkit found (no nvcc under CUDA_HOME or on PATH)")
        if ops == "cuda" or (gpu and facts.cuda is not None):
            raise PlanError(
                f"CUDA ops are needed ({'CDARTS_MM_OPS=cuda' if ops == 'cuda' else 'a GPU is visible'}) but {why}; "
                f"install the CUDA {facts.cuda or ''} toolkit and set CUDA_HOME, "
                "or set CDARTS_MM_OPS=cpu for CPU ops only"
            )
        return Plan(key, False, "", "", gpu, f"CPU ops only: {why}")
    if ops == "auto" and not gpu:
        return Plan(key, False, "", "", gpu, "CPU ops only: no GPU visible (CDARTS_MM_OPS=cuda builds CUDA ops anyway)")
    nvcc, home = found
    toolkit = nvcc_version(nvcc)
    if toolkit.split(".")[0] != facts.cuda.split(".")[0]:
        raise PlanError(
            f"nvcc {nvcc} is CUDA {toolkit} but torch is built with CUDA {facts.cuda}; point CUDA_HOME at a "
            f"CUDA {facts.cuda.split('.')[0]}.x toolkit, or set CDARTS_MM_OPS=cpu for CPU ops only"
        )
    if env.get("TORCH_CUDA_ARCH_LIST"):
        arch_list, origin = env["TORCH_CUDA_ARCH_LIST"], "TORCH_CUDA_ARCH_LIST"
    else:
        arch_list, origin = _default_arch_list(facts)
    key += f"-cu{toolkit.replace('.', '')}-{_arch_tag(arch_list)}"
    return Plan(key, True, arch_list, home, gpu,
                f"CUDA ops for CUDA {toolkit}, arch {arch_list} (from {origin}; nvcc {nvcc})")


def _torch_facts(args: argparse.Namespace) -> TorchFacts:
    version = args.torch_version or md.version("torch").split("+")[0]
    need_torch = args.torch_cuda is None or args.gpus is None or args.torch_archs is None
    torch = __import__("torch") if need_torch else None
    if args.torch_cuda is None:
        cuda = torch.version.cuda
    else:
        cuda = None if args.torch_cuda in ("", "none") else args.torch_cuda
    if args.gpus is None:
        gpus = tuple(
            "{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())
        ) if torch.cuda.is_available() else ()
    else:
        gpus = tuple(g for g in re.split(r"[,;\s]+", args.gpus) if g and g != "none")
    if args.torch_archs is None:
        archs = tuple(torch.cuda.get_arch_list()) if cuda else ()
        if cuda and not archs and hasattr(torch._C, "_cuda_getArchFlags"):
            # torch 2.10 (not 2.14) lists nothing while no GPU is visible; the compiled list it
            # reads is this private call, which newer torch's get_arch_list() returns regardless.
            archs = tuple((torch._C._cuda_getArchFlags() or "").split())
    else:
        archs = tuple(a for a in re.split(r"[,;\s]+", args.torch_archs) if a)
    return TorchFacts(version, cuda, gpus, archs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mm_build_plan.py", description="How install_mm.sh builds mmcv's ops")
    parser.add_argument("--torch-version", help="instead of the installed torch's version")
    parser.add_argument("--torch-cuda", help="instead of torch.version.cuda ('none' for a CPU-only torch)")
    parser.add_argument("--gpus", help="compute capabilities of the visible GPUs, e.g. 8.0,9.0 ('none' for no GPU)")
    parser.add_argument("--torch-archs", help="instead of torch.cuda.get_arch_list(), e.g. sm_80,sm_90")
    args = parser.parse_args(argv)
    try:
        plan = make_plan(_torch_facts(args), os.environ)
    except PlanError as exc:
        print(f"install_mm.sh: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(plan.as_shell())
    return 0


if __name__ == "__main__":
    sys.exit(main())
