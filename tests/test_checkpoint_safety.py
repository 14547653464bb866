"""Checkpoints the commands must not trust: NaN/inf weights (refused at load, naming the tensor), safetensors files
(read, not called pickled), and resume files of an older layout (one line, nothing changed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backbones.checkpoint_io import CheckpointError, read_state_dict
from cdarts_deploy.commands import evaluate as eval_cmd
from cdarts_deploy.commands import export as export_cmd
from training_samples import CLASSES, SIZE, make_image_folder, one_line_error, train_tiny

EXPORT = ["--onnx", "--layout", "cifar", "--width", "4", "--cells", "3", "--num-classes", str(CLASSES),
          "--input-size", str(SIZE), "--latency-iters", "0", "--exporter", "torchscript"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    images = make_image_folder(tmp_path_factory.mktemp("imgs"))
    out = tmp_path_factory.mktemp("run") / "r"
    assert train_tiny(images, out) == 0
    return images, out


def _poisoned(run_dir: Path, tmp_path: Path, value: float) -> tuple[Path, str]:
    state = read_state_dict(run_dir / "best.pth")
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    shutil.copytree(run_dir, tmp_path / "r")
    torch.save(state, tmp_path / "r" / "best.pth")
    return tmp_path / "r" / "best.pth", name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_eval_refuses_non_finite_weights_naming_the_tensor(tmp_path, capsys, run, value):
    images, run_dir = run
    ckpt, name = _poisoned(run_dir, tmp_path, value)
    code = eval_cmd.main([str(ckpt), "--data-root", str(images), "--no-progress"])
    line = one_line_error(capsys, code, "cdarts-eval")
    assert name in line and "NaN or infinite" in line and "top-1" not in capsys.readouterr().out


def test_export_refuses_nan_weights_as_a_bad_checkpoint_not_a_parity_failure(tmp_path, capsys, run):
    _, run_dir = run
    ckpt, name = _poisoned(run_dir, tmp_path, float("nan"))
    out = tmp_path / "out"
    code = export_cmd.main([str(run_dir / "genotype.json"), *EXPORT, "--checkpoint", str(ckpt), "--out", str(out)])
    line = one_line_error(capsys, code, "cdarts-export")
    assert name in line and "parity" not in line.lower()
    assert not out.exists()


def test_safetensors_checkpoints_are_read(tmp_path, capsys, run):
    _, run_dir = run
    state = read_state_dict(run_dir / "best.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "best.safetensors")
    loaded = read_state_dict(tmp_path / "best.safetensors")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    out = tmp_path / "out"
    assert export_cmd.main([str(run_dir / "genotype.json"), *EXPORT, "--checkpoint",
                            str(tmp_path / "best.safetensors"), "--out", str(out)]) == 0, capsys.readouterr().err


def test_a_damaged_safetensors_file_is_named_as_such(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.ones(4)}, path)
    path.write_bytes(path.read_bytes()[:-6])
    with pytest.raises(CheckpointError, match="damaged safetensors") as info:
        read_state_dict(path)
    assert "pickled" not in str(info.value)


@pytest.mark.parametrize("layout", ["missing_keys", "wrong_types", "other_network"])
def test_resume_from_an_older_layout_is_one_line_and_changes_nothing(tmp_path, capsys, run, layout):
    images, run_dir = run
    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    doc = torch.load(out / "resume.pth", weights_only=True)
    if layout == "missing_keys":
        del doc["optimizer"], doc["best"]
    elif layout == "wrong_types":
        doc["records"] = [1, 2]
    else:
        doc["model"] = {"conv.weight": torch.zeros(1)}
    torch.save(doc, out / "resume.pth")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = one_line_error(capsys, train_tiny(images, out, "--resume"), "cdarts-train")
    assert "resume.pth" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
