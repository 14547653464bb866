"""The remaining hostile input files through the real commands (run as subprocesses, as a user runs them): a
truncated golden file, an mm "config" that is a genotype or a classification config, an unwritable --json
folder, an earlier profile report.  Each is exit 2, one line on stderr naming the file or option, nothing new
on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _script(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else shutil.which(name) or name


def _refused(tmp_path: Path, argv: list[str], needle: str, timeout: float = 300) -> str:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    prog = Path(argv[0]).name
    lines = [line for line in proc.stderr.strip().splitlines()
             if not line.startswith(f"[{prog}]") and "warning:" not in line.lower()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing new on disk
    return lines[0]


def _golden(path: Path) -> Path:
    np.savez(path, input=np.zeros((1, 3, 8, 8), np.float32), order=np.array(["a"]), kinds=np.array(["Conv"]),
             **{"out:a": np.zeros(4096, np.float32)})
    return path


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_compare_refuses_a_truncated_golden_file(tmp_path, cut):
    data = _golden(tmp_path / "g.npz").read_bytes()
    (tmp_path / "g.npz").write_bytes(data[: int(len(data) * cut)])
    (tmp_path / "net.onnx").write_bytes(b"not checked before the golden file")
    _refused(tmp_path, [_script("cdarts-compare"), "net.onnx", "g.npz"], "g.npz")


def test_compare_refuses_an_unwritable_or_input_json(tmp_path):
    _golden(tmp_path / "g.npz")
    (tmp_path / "net.onnx").write_bytes(b"x")
    _refused(tmp_path, [_script("cdarts-compare"), "net.onnx", "g.npz", "--json", "missing/report.json"], "--json")
    _refused(tmp_path, [_script("cdarts-compare"), "net.onnx", "g.npz", "--json", "g.npz"], "g.npz")


def test_eval_refuses_a_json_folder_it_cannot_write_into(tmp_path):
    """A --json whose folder is a file cannot be written by anyone, root included (a read-only folder can)."""
    (tmp_path / "notes").write_text("a file where the folder should be")
    (tmp_path / "run.json").write_text('{"format": "cdarts-train-run/1", "genotype": "genotype.json"}')
    _refused(tmp_path, [_script("cdarts-eval"), "best.pth", "--data-root", ".", "--run", "run.json",
                        "--json", "notes/r.json"], "notes")
    assert (tmp_path / "notes").read_text() == "a file where the folder should be"


def _mm_available() -> bool:
    try:
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _mm_available(), reason="needs the mm extra (mmengine, mmdet)")
@pytest.mark.parametrize("kind", ["genotype", "classification"])
def test_export_mm_refuses_a_config_that_is_not_a_detector_or_segmentor(tmp_path, kind):
    if kind == "genotype":
        shutil.copy(ROOT / "cdarts_deploy" / "zoo" / "cdarts_cifar.json", tmp_path / "config.json")
        config = "config.json"
    else:
        (tmp_path / "cls.py").write_text("model = dict(type='ImageClassifier', backbone=dict(type='ResNet', "
                                         "depth=18), head=dict(type='LinearClsHead', num_classes=10))\n")
        config = "cls.py"
    _refused(tmp_path, [_script("cdarts-export-mm"), config, "--out", "out"], config)


def test_profile_refuses_to_replace_an_earlier_report_unless_overwrite(tmp_path):
    (tmp_path / "profile_cdarts_cifar.json").write_text("{}")
    _refused(tmp_path, [_script("cdarts-profile"), "cdarts_cifar", "--out", ".", "--peers", "none", "--no-gemm",
                        "--iters", "1", "--warmup", "0", "--backend", "onnxruntime"], "--overwrite")


@pytest.mark.parametrize("argv, needle", [
    (["--width", "100000"], "--width"),
    (["--num-classes", "100000000"], "--num-classes"),
])
def test_profile_refuses_out_of_range_options(tmp_path, argv, needle):
    _refused(tmp_path, [_script("cdarts-profile"), "cdarts_cifar", "--out", "prof", "--peers", "none", "--no-gemm",
                        *argv], needle)


def test_search_negative_seed_is_one_line(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    _refused(tmp_path, [_script("cdarts-search"), "--dataset", "imagefolder", "--data-root", "data", "--out", "run",
                        "--seed", "-5"], "--seed")
