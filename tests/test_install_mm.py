"""How tools/install_mm.sh builds mmcv's ops: CPU vs CUDA, arch list, wheel cache key, and its checks.

GPU hosts are described with a fake nvcc script and fake torch facts; nothing is built here.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "install_mm.sh"


def _load_helper():
    spec = importlib.util.spec_from_file_location("mm_build_plan", REPO / "tools" / "mm_build_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mm_build_plan", module)
    spec.loader.exec_module(module)
    return module


plan_mod = _load_helper()
TorchFacts, make_plan, PlanError = plan_mod.TorchFacts, plan_mod.make_plan, plan_mod.PlanError
# The key every earlier release used for the CPU wheel (so a cached CPU wheel stays valid).
OLD_CPU_KEY = f"torch2.14.1-cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}"


def _fake_toolkit(root: Path, release: str = "12.4") -> Path:
    """A CUDA 'toolkit': bin/nvcc printing nvcc's version banner, and the runtime header."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.99'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return root


def _facts(cuda="12.4", gpus=("8.0", "9.0"), archs=("sm_80", "sm_90")):
    return TorchFacts("2.14.1", cuda, tuple(gpus), tuple(archs))


def test_cpu_key_is_unchanged():
    assert plan_mod.cpu_key("2.14.1") == OLD_CPU_KEY
    if sys.version_info[:2] == (3, 11) and sysconfig.get_platform() == "linux-x86_64":
        assert OLD_CPU_KEY == "torch2.14.1-cp311-linux-x86_64"  # the wheel cached by earlier runs


def test_cuda_build_when_nvcc_on_path_and_torch_has_cuda(tmp_path):
    home = _fake_toolkit(tmp_path / "cuda")
    plan = make_plan(_facts(gpus=("9.0", "8.0", "9.0")), {"PATH": f"{home}/bin:/usr/bin:/bin"})
    assert plan.force_cuda and plan.gpu_visible
    assert plan.arch_list == "8.0;9.0+PTX"  # the visible GPUs, PTX for the newest (torch's own default)
    assert plan.key == OLD_CPU_KEY + "-cu124-sm80_90ptx"
    assert plan.cuda_home == str(home)
    assert plan.summary.startswith("CUDA ops for CUDA 12.4, arch 8.0;9.0+PTX (from the visible GPUs")
    shell = dict(line.split("=", 1) for line in plan.as_shell().splitlines())
    assert shell["MM_FORCE_CUDA"] == "1" and shlex.split(shell["MM_ARCH_LIST"]) == ["8.0;9.0+PTX"]


def test_cuda_home_and_arch_list_from_the_environment(tmp_path):
    home = _fake_toolkit(tmp_path / "toolkit", release="12.8")
    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(home), "TORCH_CUDA_ARCH_LIST": "8.6", "CDARTS_MM_OPS": "cuda"}
    plan = make_plan(_facts(cuda="12.6", gpus=()), env)
    assert plan.force_cuda and not plan.gpu_visible and plan.arch_list == "8.6"
    assert plan.key == OLD_CPU_KEY + "-cu128-sm86" and "from TORCH_CUDA_ARCH_LIST" in plan.summary
    # No GPU and no list: every arch torch is built for (torch's default would fail without a GPU).
    plan = make_plan(_facts(cuda="12.6", gpus=(), archs=("sm_75", "sm_90")),
                     {"CUDA_HOME": str(home), "CDARTS_MM_OPS": "cuda"})
    assert plan.arch_list == "7.5;9.0+PTX" and "no GPU visible" in plan.summary


@pytest.mark.parametrize("cuda,with_nvcc,env,reason", [
    (None, True, {}, "torch is a CPU-only build"),
    ("12.4", False, {}, "no CUDA toolkit found"),
    ("12.4", True, {"CDARTS_MM_OPS": "cpu"}, "CDARTS_MM_OPS=cpu"),
    ("12.4", True, {"GPU": "none"}, "no GPU visible"),  # a CPU machine with a CUDA image: minutes, not an hour
])
def test_cpu_ops_only(tmp_path, cuda, with_nvcc, env, reason):
    path = f"{_fake_toolkit(tmp_path / 'cuda')}/bin:/usr/bin:/bin" if with_nvcc else "/usr/bin:/bin"
    gpus = () if env.pop("GPU", None) == "none" or not env else ("8.0",)
    plan = make_plan(_facts(cuda=cuda, gpus=gpus), dict(env, PATH=path))
    assert not plan.force_cuda and plan.arch_list == ""
    assert plan.key == OLD_CPU_KEY  # the cached CPU wheel is found again
    assert plan.summary.startswith(f"CPU ops only: {reason}")
    assert "MM_FORCE_CUDA=0" in plan.as_shell()


def test_impossible_cuda_setups_are_one_line_errors(tmp_path, monkeypatch, capsys):
    # A GPU is visible and torch uses CUDA, but there is no toolkit: CPU ops would fail on the GPU.
    with pytest.raises(PlanError, match="install the CUDA 12.4 toolkit and set CUDA_HOME"):
        make_plan(_facts(), {"PATH": "/usr/bin:/bin"})
    home = _fake_toolkit(tmp_path / "cuda", release="11.8")
    with pytest.raises(PlanError, match="CUDA 11.8 but torch is built with CUDA 12.4"):
        make_plan(_facts(), {"CUDA_HOME": str(home)})
    with pytest.raises(PlanError, match="CDARTS_MM_OPS"):
        make_plan(_facts(), {"CDARTS_MM_OPS": "gpu"})
    # The command line: exit 2, one line on stderr, nothing for the shell to evaluate.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert plan_mod.main(["--torch-version", "2.14.1", "--torch-cuda", "12.4", "--gpus", "8.0",
                          "--torch-archs", "sm_80"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("install_mm.sh: ")


def _plan_from_script(path: str, ops: str = "auto") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST",
                                                            "CDARTS_MM_OPS")}
    env["PATH"] = path
    env["CDARTS_MM_OPS"] = ops
    proc = subprocess.run(["bash", str(SCRIPT), "--plan", sys.executable], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return {k: shlex.split(v)[0] if v else "" for k, v in (line.split("=", 1) for line in proc.stdout.splitlines())}


def test_install_script_plan_with_the_real_torch(tmp_path):
    import torch

    plan = _plan_from_script("/usr/bin:/bin")  # no toolkit: the CPU wheel, under its old key
    assert plan["MM_KEY"] == OLD_CPU_KEY.replace("2.14.1", torch.__version__.split("+")[0])
    assert plan["MM_FORCE_CUDA"] == "0" and plan["MM_SUMMARY"].startswith("CPU ops only")
    if torch.version.cuda and not torch.cuda.is_available():
        major = torch.version.cuda.split(".")[0]
        home = _fake_toolkit(tmp_path / "cuda", release=f"{major}.0")
        # a toolkit but no GPU: CPU ops unless asked for CUDA ops
        assert _plan_from_script(f"{home}/bin:/usr/bin:/bin")["MM_FORCE_CUDA"] == "0"
        plan = _plan_from_script(f"{home}/bin:/usr/bin:/bin", ops="cuda")
        cpu_key = OLD_CPU_KEY.replace("2.14.1", torch.__version__.split("+")[0])
        assert plan["MM_FORCE_CUDA"] == "1" and plan["MM_KEY"].startswith(cpu_key + f"-cu{major}0-sm")
        assert plan["MM_SUMMARY"].startswith(f"CUDA ops for CUDA {major}.0, arch ")


def test_install_script_checks_and_build_settings():
    text = SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    stack_ok = text.split("stack_ok() {", 1)[1].split("\n}\n", 1)[0]
    # The final check runs the ops that will run: on the GPU when one is visible.
    assert 'device = "cuda" if torch.cuda.is_available() else "cpu"' in stack_ok
    assert "nms(boxes" in stack_ok and "sigmoid_focal_loss(logits" in stack_ok
    assert "import pkg_resources" in stack_ok  # mmengine's mmdet::/mmseg:: config bases
    assert 'FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$MM_ARCH_LIST"' in text and "FORCE_CUDA=0" in text
    assert 'WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY"' in text and "KEY=$MM_KEY" in text
    assert '-g0' in text and "import ninja" in text  # debug info dropped, parallel compile kept
    assert '"setuptools>=77.0.3,<80.9"' in text
