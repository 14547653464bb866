"""cdarts-train and cdarts-eval end to end at tiny size: the run folder, its checkpoints in every consumer
(cdarts-export, timm, the mm backbone), ONNX agreement, and refusals of wrong input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

from backbones.checkpoint_io import read_checkpoint
from cdarts_deploy.commands import evaluate as eval_cmd
from cdarts_deploy.commands import export as export_cmd
from cdarts_deploy.commands import train as train_cmd
from training_samples import CLASSES, SIZE, TINY, make_image_folder

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ["--onnx", "--layout", "cifar", "--width", "4", "--cells", "3", "--num-classes", str(CLASSES),
          "--input-size", str(SIZE), "--latency-iters", "0", "--exporter", "torchscript"]


def _train(images, out, *extra):
    return train_cmd.main(["cdarts_cifar", "--data-root", str(images), "--out", str(out), "--preset", "cpu-smoke",
                           *TINY, "--batch-size", "8", "--epochs", "2", "--threads", "1", "--no-progress", *extra])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, images):
    out = tmp_path_factory.mktemp("run") / "r"
    assert _train(images, out) == 0
    return out


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, run_dir):
    out = tmp_path_factory.mktemp("onnx")
    assert export_cmd.main([str(run_dir / "genotype.json"), *EXPORT, "--checkpoint", str(run_dir / "best.pth"),
                            "--out", str(out)]) == 0
    return out / "cdarts_cifar.onnx"


def test_run_folder(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"run.json", "genotype.json", "log.jsonl", "accuracy.png", "last.pth", "best.pth", "resume.pth"} <= names
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "val_loss", "top1", "top5", "lr", "images_per_s", "drop_path"} <= set(records[0])
    run = json.loads((run_dir / "run.json").read_text())
    assert run["preset"] == "cpu-smoke" and run["network"]["num_classes"] == CLASSES
    assert run["config"]["aux_weight"] == 0.4 and run["config"]["width"] == 4


def test_checkpoint_loads_in_timm_and_the_mm_backbone(run_dir):
    state = read_checkpoint(run_dir / "best.pth")
    model = timm.create_model("cdarts_cifar", pretrained=True, width=4, cells=3, num_classes=CLASSES,
                              pretrained_cfg_overlay=dict(file=str(run_dir / "best.pth"), num_classes=CLASSES))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    from downstream.mm_backbone import CDARTSBackbone

    backbone = CDARTSBackbone("cdarts_cifar", model_kwargs=dict(width=4, cells=3, num_classes=CLASSES),
                              init_cfg=dict(type="Pretrained", checkpoint=str(run_dir / "best.pth")))
    backbone.init_weights()
    model.eval()
    backbone.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():  # the deepest level is the trained classifier's pre-pool features
        torch.testing.assert_close(backbone(x)[-1], model.forward_features(x))


def test_eval_pytorch_and_onnx_agree(run_dir, images, onnx_file, capsys, tmp_path):
    report = tmp_path / "eval.json"
    assert eval_cmd.main([str(run_dir / "best.pth"), "--data-root", str(images), "--onnx", str(onnx_file),
                          "--threads", "1", "--no-progress", "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["images"] == 3 * 4 and doc["onnx"]["agreement"] == 1.0 and doc["onnx"]["top1"] == doc["top1"]
    assert "same prediction on 100.00%" in capsys.readouterr().out


def test_eval_refuses_an_onnx_of_another_model(run_dir, images, tmp_path, capsys):
    # the same network with its classifier rows rotated: every prediction moves to the next class
    state = read_checkpoint(run_dir / "best.pth")
    state["classifier.weight"] = state["classifier.weight"].roll(1, 0)
    state["classifier.bias"] = state["classifier.bias"].roll(1, 0)
    torch.save(state, tmp_path / "other.pth")
    assert export_cmd.main([str(run_dir / "genotype.json"), *EXPORT, "--checkpoint", str(tmp_path / "other.pth"),
                            "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    args = [str(run_dir / "best.pth"), "--data-root", str(images), "--threads", "1", "--no-progress", "--onnx"]
    assert eval_cmd.main(args + [str(tmp_path / "other" / "cdarts_cifar.onnx")]) == 1
    assert "same class as PyTorch on only 0.00%" in capsys.readouterr().err
    wrong_classes = [a if a != str(CLASSES) else "5" for a in EXPORT]
    assert export_cmd.main([str(run_dir / "genotype.json"), *wrong_classes, "--out", str(tmp_path / "k5")]) == 0
    capsys.readouterr()
    assert eval_cmd.main(args + [str(tmp_path / "k5" / "cdarts_cifar.onnx")]) == 1
    assert "expected (batch, 3) logits" in capsys.readouterr().err


def test_eval_refuses_a_checkpoint_of_another_network(run_dir, images, tmp_path, capsys):
    torch.save({"stem.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    assert eval_cmd.main([str(tmp_path / "bad.pth"), "--data-root", str(images), "--run",
                          str(run_dir / "run.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this network" in err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(images, tmp_path, capsys):
    out = tmp_path / "never"
    assert _train(tmp_path / "nowhere", out) == 2
    assert _train(images, out, "--batch-size", "100") == 2  # more than the 24 training images
    assert train_cmd.main(["cdarts_b", "--data-root", str(images), "--out", str(out), "--aux-weight", "0.4"]) == 2
    assert train_cmd.main(["no_such_zoo_name", "--data-root", str(images), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("cdarts-train: error: ") for line in err), err
    assert not out.exists()


def test_resume_refuses_another_config_and_an_existing_run(run_dir, images, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = (copy / "last.pth").read_bytes()
    assert _train(images, copy) == 2  # a run is already there
    assert _train(images, copy, "--resume", "--lr", "0.1") == 2
    err = capsys.readouterr().err
    assert "pass --resume" in err and "another run (config.lr: 0.05 then, 0.1 now)" in err
    assert (copy / "last.pth").read_bytes() == before


def _prepare_digits():
    spec = importlib.util.spec_from_file_location("prepare_digits", ROOT / "tools" / "prepare_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_digits_image_and_bad_input(tmp_path, capsys):
    import io

    from PIL import Image

    tool = _prepare_digits()
    img = Image.open(io.BytesIO(tool.png_bytes([16] * 32 + [0] * 32, 24)))
    assert img.size == (24, 24) and img.mode == "RGB"
    assert img.getpixel((0, 0))[0] > 200 and img.getpixel((0, 23))[0] < 50  # top half white, bottom black
    assert tool.main(["--out", str(tmp_path / "d"), "--val-fraction", "1.5"]) == 2
    assert not (tmp_path / "d").exists()


def test_digits_path_end_to_end(tmp_path, capsys):
    """Real images: digits -> cdarts-train -> cdarts-export with the checkpoint -> cdarts-eval of the ONNX file."""
    digits = tmp_path / "digits"
    assert _prepare_digits().main(["--out", str(digits), "--size", str(SIZE), "--per-class", "10"]) == 0
    assert sorted(p.name for p in (digits / "train").iterdir()) == [str(d) for d in range(10)]
    run = tmp_path / "run"
    assert train_cmd.main(["cdarts_cifar", "--data-root", str(digits), "--out", str(run), "--preset", "cpu-smoke",
                           *TINY, "--batch-size", "16", "--epochs", "2", "--threads", "1", "--no-progress",
                           "--cutout", "0", "--hflip", "0"]) == 0
    onnx_dir = tmp_path / "onnx"
    i = EXPORT.index("--num-classes")
    export = EXPORT[: i + 1] + ["10"] + EXPORT[i + 2:]
    assert export_cmd.main([str(run / "genotype.json"), *export, "--checkpoint", str(run / "best.pth"),
                            "--out", str(onnx_dir)]) == 0
    report = tmp_path / "eval.json"
    assert eval_cmd.main([str(run / "best.pth"), "--data-root", str(digits), "--onnx",
                          str(onnx_dir / "cdarts_cifar.onnx"), "--threads", "1", "--no-progress",
                          "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["images"] == 20
    assert doc["onnx"]["agreement"] >= 0.995 and doc["onnx"]["top1"] == doc["top1"]
