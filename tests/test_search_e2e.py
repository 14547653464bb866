"""End-to-end tests of ``cdarts-search`` on tiny generated data (CPU): search, export, resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cdarts_deploy import genotype as gt
from search.cli import main
from test_search_units import make_cifar, make_imagefolder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--threads", "1", "--no-progress", "--seed", "3"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _search(*args: str) -> int:
    return main([*TINY, *args])


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _alphas(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    net = state["space"]["search_net"]
    return {k: v for k, v in net.items() if k.startswith("alpha")}


def _export_and_check(genotype_path: Path, tmp: Path) -> None:
    """The genotype builds with the factory and exports to ONNX with matching outputs."""
    import onnxruntime as ort

    from backbones.factory import create_model_from_genotype

    g = gt.load(genotype_path)
    model = create_model_from_genotype(g).eval()
    size = g.network.input_size
    x = torch.randn(2, 3, size, size)
    path = tmp / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=18, input_names=["x"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (2, g.network.num_classes)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def cifar_run(cifar_dir, tmp_path_factory) -> Path:
    """One uninterrupted tiny CDARTS search: 1 warm-up epoch + 2 search epochs."""
    out = tmp_path_factory.mktemp("runs") / "cifar"
    assert _search("--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out)) == 0
    return out


def test_cifar_search_writes_genotype_log_png_checkpoint(cifar_run, tmp_path):
    g = gt.load(cifar_run / "genotype.json")
    assert isinstance(g, gt.CellGenotype) and len(g.stages) == 1
    assert g.network.layout == "cifar" and g.network.num_classes == 10 and g.network.input_size == 16
    rows = _rows(cifar_run)
    assert [r["epoch"] for r in rows] == [0, 1, 2] and [r["phase"] for r in rows] == ["warmup", "search", "search"]
    search = rows[1:]
    for key in ("val_acc_search", "val_acc_eval", "distill_loss", "alpha_entropy_normal", "skip_normal",
                "skip_mass_normal", "level_weights", "genotype"):
        assert all(key in r for r in search), key
    assert all(0.0 <= r["alpha_entropy_normal"] <= 1.0 for r in search)  # normalised by log(#operations)
    assert rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"]  # the cosine schedule steps
    assert [r["reg_coef"] for r in search] == [5.0, 0.0]  # 2 search epochs: lambda' decays over round(4/3) = 1
    assert search[1]["inherited_ops"] > 0  # the second evaluation network inherited from the first
    assert gt.from_dict(rows[-1]["genotype"]) == g
    assert (cifar_run / "cells.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(_alphas(cifar_run)) == {"alpha_normal", "alpha_reduce"}
    _export_and_check(cifar_run / "genotype.json", tmp_path)


def test_imagefolder_search_exports(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", classes=3, per_class=8)
    out = tmp_path / "run"
    assert _search("--dataset", "imagefolder", "--data-root", str(root), "--out", str(out), "--train-fraction", "0.5",
                   "--val-fraction", "0.5", "--batch-size", "4", "--input-size", "32", "--epochs", "1",
                   "--per-stage-alpha", "--learn-beta") == 0
    g = gt.load(out / "genotype.json")
    assert len(g.stages) == 3  # one cell pair per network stage
    assert g.network.layout == "imagenet" and g.network.num_classes == 3 and g.network.input_size == 32
    assert len(_rows(out)) == 2
    _export_and_check(out / "genotype.json", tmp_path)


def test_imagefolder_search_on_forced_avx2_completes_and_exports(tmp_path):
    """The same search with oneDNN capped at AVX2, where the strided 1x1 weight gradient of a narrow
    FactorizedReduce corrupted the heap (see backbones/onednn_guard.py); MALLOC_CHECK_=3 makes glibc
    abort on the corruption instead of leaving it silent."""
    root = make_imagefolder(tmp_path / "imgs", classes=3, per_class=8)
    out = tmp_path / "run"
    env = dict(_env(), ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MALLOC_CHECK_="3")
    cmd = [sys.executable, "-m", "search.cli", *TINY, "--dataset", "imagefolder", "--data-root", str(root),
           "--out", str(out), "--train-fraction", "0.5", "--val-fraction", "0.5", "--batch-size", "4",
           "--input-size", "32", "--epochs", "1", "--per-stage-alpha", "--learn-beta"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    g = gt.load(out / "genotype.json")
    assert len(g.stages) == 3 and g.network.layout == "imagenet" and g.network.input_size == 32
    assert len(_rows(out)) == 2
    _export_and_check(out / "genotype.json", tmp_path)


def test_darts_baseline_has_no_evaluation_network(cifar_dir, tmp_path):
    out = tmp_path / "darts"
    assert _search("--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out), "--method", "darts",
                   "--epochs", "1") == 0
    rows = _rows(out)
    assert all("val_acc_eval" not in r and "distill_loss" not in r and r["reg_coef"] == 0.0 for r in rows)
    assert "val_acc_search" in rows[-1]
    gt.load(out / "genotype.json")


def test_sigkill_and_resume_reproduce_the_uninterrupted_run(cifar_dir, cifar_run, tmp_path, capsys):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "search.cli", *TINY, "--dataset", "cifar10", "--data-root", str(cifar_dir),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoint.pt"  # written last in an epoch, atomically
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        # a second process pointed at the same --out is refused, naming the one writing there
        for extra in ([], ["--resume"]):
            _fails(capsys, *TINY, "--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out), *extra,
                   match=f"another cdarts-search (pid {proc.pid}) is writing there")
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # in epoch 1, after epoch 0's checkpoint
    finally:
        proc.kill()
        proc.wait()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 1 <= state["epoch"] < 3, "killed after the run had finished"
    assert main(["--out", str(out), "--resume", "--no-progress", "--threads", "1"]) == 0
    assert (out / "genotype.json").read_text() == (cifar_run / "genotype.json").read_text()
    resumed, straight = _alphas(out), _alphas(cifar_run)
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    assert [r["epoch"] for r in _rows(out)] == [0, 1, 2]
    assert _rows(out)[1:] == [dict(r, seconds=r2["seconds"]) for r, r2 in zip(_rows(cifar_run)[1:], _rows(out)[1:])]


def test_torchrun_two_process_search_on_cpu(cifar_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "search.cli",
           *TINY, "--batch-size", "4", "--warmup-epochs", "0", "--epochs", "1", "--dataset", "cifar10",
           "--data-root", str(cifar_dir), "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [0] and rows[0]["phase"] == "search"  # written once, by rank 0
    assert all(r["alpha_rank_spread"] == 0.0 for r in rows)  # averaged gradients kept the ranks in step
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2
    gt.load(out / "genotype.json")


# ----- bad input: one line, exit 2, nothing of a previous run overwritten ---------------------------------


def _fails(capsys, *args: str, match: str) -> None:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("cdarts-search: error:") and match in err, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The run's files (not the lock file, which holds the pid of whichever process last took it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "search.lock"}


def test_bad_data_directories(capsys, tmp_path, cifar_dir):
    out = str(tmp_path / "o")
    _fails(capsys, *TINY, "--dataset", "cifar10", "--data-root", str(tmp_path / "absent"), "--out", out,
           match="no such directory")
    (tmp_path / "empty").mkdir()
    _fails(capsys, *TINY, "--dataset", "cifar10", "--data-root", str(tmp_path / "empty"), "--out", out,
           match="missing data_batch_1")
    broken = tmp_path / "broken"
    shutil.copytree(cifar_dir, broken)
    with open(broken / "data_batch_4", "r+b") as fh:
        fh.truncate(1000)
    _fails(capsys, *TINY, "--dataset", "cifar10", "--data-root", str(broken), "--out", out,
           match="data_batch_4: cannot read")
    imgs = make_imagefolder(tmp_path / "imgs", classes=2, per_class=4)
    _fails(capsys, *TINY, "--dataset", "imagefolder", "--data-root", str(imgs), "--num-classes", "3", "--out", out,
           match="fewer than --num-classes 3")
    assert not (tmp_path / "o").exists()


def test_existing_run_and_corrupt_checkpoint_are_refused(capsys, cifar_run, cifar_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(cifar_run, out)
    before = _snapshot(out)
    _fails(capsys, *TINY, "--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out),
           match="already holds a search run")
    _fails(capsys, "--out", str(out), "--resume", "--width", "8", match="differ from the run's (--width 4 -> 8)")
    assert _snapshot(out) == before
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    before = _snapshot(out)
    _fails(capsys, "--out", str(out), "--resume", match="corrupt or unreadable checkpoint")
    assert _snapshot(out) == before
    _fails(capsys, "--out", str(tmp_path / "fresh"), "--resume", match="no run.json to resume")
