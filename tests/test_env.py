"""`cdarts-env`: the CPU flags, the kernel paths they imply, versions, devices, threads; embedded in the reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cdarts_deploy.commands import env as env_command
from cdarts_deploy.deploy import environment as env

# Two CPUs of a real /proc/cpuinfo, abridged: an AVX-512 server without VNNI (Skylake-SP) and its model line.
SKYLAKE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
cpu cores\t: 20
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 1
cpu cores\t: 20
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl
"""
SAPPHIRE = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: sse4_1 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni "
            "avx512_fp16 amx_bf16 amx_tile amx_int8\n")
ALDER = ("processor\t: 0\nmodel name\t: 12th Gen Intel(R) Core(TM) i7-12700\n"
         "flags\t\t: sse4_1 avx avx2 fma avx_vnni\n")
ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: sse4_1 avx avx2 fma f16c\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


def test_cpuinfo_text_is_parsed():
    info = env.parse_cpuinfo(SKYLAKE)
    assert info["model"] == "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz" and info["vendor"] == "GenuineIntel"
    assert info["logical_cpus"] == 2 and info["physical_cores"] == 40  # two packages of 20 cores
    flags = env.isa(info["flags"])
    assert flags["avx2"] and flags["avx512f"] and flags["avx512bw"]
    assert not flags["avx512_vnni"] and not flags["avx_vnni"] and not flags["amx_int8"]
    sapphire = env.isa(env.parse_cpuinfo(SAPPHIRE)["flags"])
    assert sapphire["avx512_vnni"] and sapphire["avx_vnni"] and sapphire["amx_int8"] and sapphire["avx512_fp16"]
    arm = env.parse_cpuinfo(ARM)
    assert "asimd" in arm["flags"] and not any(env.isa(arm["flags"]).values())
    assert env.parse_cpuinfo("")["flags"] == [] and env.parse_cpuinfo("")["model"] is None


@pytest.mark.parametrize("text, kernel, vnni, saturates", [
    (SAPPHIRE, "amx", True, False),
    (ALDER, "avx_vnni", True, False),
    (SKYLAKE, "avx512bw (vpmaddubsw)", False, True),
    (ZEN2, "avx2 (vpmaddubsw)", False, True),
    (ARM, "not x86 (flags do not name an x86 int8 kernel)", False, False),
])
def test_onnxruntime_int8_kernel_follows_the_vnni_flags(text, kernel, vnni, saturates):
    flags = env.parse_cpuinfo(text)["flags"]
    got = env.mlas_int8(flags)
    assert (got["kernel"], got["vnni"], got["eight_bit_weights_saturate"]) == (kernel, vnni, saturates)
    if saturates:
        assert "saturate here" in got["int8_files"] and "portable" in got["int8_files"]
    # VNNI without AMX: the AVX-512 VNNI kernel
    assert env.mlas_int8([*flags, "avx512f", "avx512bw", "avx512_vnni"])["kernel"] in ("amx", "avx512_vnni")
    assert env.mlas_int8([f for f in flags if f != "avx512_vnni" and not f.startswith("amx")])["vnni"] == (
        "avx_vnni" in flags)


def test_onednn_isa_is_capped_by_the_environment():
    flags = env.parse_cpuinfo(SAPPHIRE)["flags"]
    assert env.onednn_isa(flags, {})["effective"] == "AVX512_CORE_AMX"
    assert env.onednn_isa(flags, {"ONEDNN_MAX_CPU_ISA": "avx2"})["effective"] == "AVX2"
    assert env.onednn_isa(flags, {"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"})["effective"] == "AVX512_CORE_VNNI"
    assert env.onednn_isa(flags, {"ONEDNN_MAX_CPU_ISA": "ALL"})["effective"] == "AVX512_CORE_AMX"
    skylake = env.parse_cpuinfo(SKYLAKE)["flags"]
    assert env.onednn_isa(skylake, {})["cpu_max"] == "AVX512_CORE"
    # a cap above what the CPU has changes nothing
    assert env.onednn_isa(skylake, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})["effective"] == "AVX512_CORE"
    assert "not recognised" in env.onednn_isa(skylake, {"ONEDNN_MAX_CPU_ISA": "AVX9"})["effective"]


def test_every_field_is_present_and_survives_json():
    block = env.environment(cpuinfo=SKYLAKE)
    assert {"cpu", "paths", "versions", "accelerators", "threads", "os"} <= set(block)
    assert set(block["cpu"]["isa"]) == set(env.ISA_FLAGS)
    assert block["paths"]["aten"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert block["paths"]["onnxruntime_int8"]["kernel"] == "avx512bw (vpmaddubsw)"
    assert {"onnxruntime", "onnx", "onnxscript", "timm", "numpy", "torchvision", "mmengine", "mmcv", "mmdet",
            "mmseg", "tensorrt"} <= set(block["versions"])
    assert block["versions"]["torch"] == torch.__version__
    acc = block["accelerators"]
    assert acc["cuda_available"] == torch.cuda.is_available() and "CPUExecutionProvider" in acc[
        "onnxruntime_providers"]
    assert "nvidia_smi" not in acc  # the cheap block runs no subprocess
    assert block["threads"]["torch_intra_op"] == torch.get_num_threads()
    assert json.loads(json.dumps(block)) == block
    text = env_command.format_text(block)
    assert "Intel(R) Xeon(R) Gold 6148" in text and "avx512bw (vpmaddubsw)" in text and "timm:" in text


def test_the_cheap_block_is_cheap():
    env.environment()  # first call reads /proc/cpuinfo and torch's build string
    start = time.perf_counter()
    for _ in range(5):
        env.environment()
    assert (time.perf_counter() - start) / 5 < 0.1


def test_command_prints_text_and_json():
    script = shutil.which("cdarts-env", path=str(Path(sys.executable).parent))
    assert script, "cdarts-env is not installed in the venv (pip install -e .)"
    text = subprocess.run([script], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "ATen CPU capability:" in text.stdout and "ORT INT8 kernels:" in text.stdout
    as_json = subprocess.run([sys.executable, "-m", "cdarts_deploy.commands.env", "--json"], capture_output=True,
                             text=True, env={"ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    block = json.loads(as_json.stdout)
    assert block["format"] == "cdarts-env" and "nvidia_smi" in block["accelerators"]
    assert block["paths"]["onednn"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert block["paths"]["onednn"]["effective"] in ("AVX2", "AVX", "SSE41", None)


def test_export_and_profile_reports_embed_the_block(tmp_path, capsys):
    from cdarts_deploy.commands.export import main as export_main
    from cdarts_deploy.deploy.versions import conditions

    code = export_main(["darts_v2", "--onnx", "--out", str(tmp_path), "--width", "8", "--cells", "5",
                        "--input-size", "32", "--latency-iters", "0", "--exporter", "torchscript"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "darts_v2.json").read_text())
    block = report["environment"]
    assert block["format"] == "cdarts-env" and block["paths"]["onnxruntime_int8"]["kernel"]
    assert block["versions"]["torch"] == torch.__version__
    assert conditions(1, "cpu")["environment"]["format"] == "cdarts-env"  # profile and latency-table reports


def test_profile_markdown_names_the_cpu_paths(monkeypatch):
    from cdarts_deploy.deploy.profile_report import make_report, markdown
    from cdarts_deploy.deploy.versions import conditions

    for cap in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # the sample CPU's own ISA, not a forced one
        monkeypatch.delenv(cap, raising=False)

    cond = conditions(1, "cpu")
    cond["environment"] = env.environment(cpuinfo=SKYLAKE)  # a CPU without VNNI
    md = markdown(make_report([], cond, None))
    assert f"CPU paths: ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN AVX512_CORE" in md
    assert "INT8 avx512bw (vpmaddubsw) (8-bit weights can saturate)" in md
    old = conditions(1, "cpu")
    del old["environment"]  # a report written before the block existed still renders
    assert "CPU paths" not in markdown(make_report([], old, None))
