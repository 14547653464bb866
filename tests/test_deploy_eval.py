"""``cdarts-export --eval-dir``: top-1/top-5 of PyTorch and of every exported file on the same ImageFolder images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cdarts_deploy.commands.export import main as export_main
from cdarts_deploy.deploy import artifacts, ort
from cdarts_deploy.errors import UserError
from tiny_deploy import write_calibration_images, write_tiny_genotype


@pytest.fixture(scope="module")
def tiny(tiny_network):
    return tiny_network


def labelled_by(model, images_dir: Path, out: Path, classes: int = 10) -> Path:
    """An ImageFolder whose labels are ``model``'s own predictions (through the evaluation transform), so the model
    scores 100% top-1 and a file that computes something else cannot."""
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model))
    for c in range(classes):
        (out / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for path in sorted(images_dir.iterdir()):
            with Image.open(path) as img:
                x = transform(img.convert("RGB"))[None]
            label = int(model(x).argmax(1))
            shutil.copy(path, out / f"class_{label:02d}" / path.name)
    return out


def permuted(src: Path, dst: Path, classes: int = 10) -> Path:
    """The same network with its logits rotated by one class (a wrong artifact that still runs)."""
    proto = onnx.load(str(src))
    out = proto.graph.output[0]
    raw = out.name + "_unpermuted"
    for node in proto.graph.node:
        node.output[:] = [raw if o == out.name else o for o in node.output]
    index = np.roll(np.arange(classes), 1).astype(np.int64)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(index, "rotation"))
    proto.graph.node.append(onnx.helper.make_node("Gather", [raw, "rotation"], [out.name], axis=1))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    model, _, _ = tiny
    pictures = write_calibration_images(tmp_path_factory.mktemp("pictures"), count=16, seed=3)
    return labelled_by(model, pictures, tmp_path_factory.mktemp("eval") / "set")


def test_pytorch_and_a_correct_onnx_file_score_the_same(tiny, folder):
    model, path, _ = tiny
    session = ort.session(path, 1)
    result = artifacts.evaluate_on_folder(
        model, folder, {"onnxruntime fp32": ("fp32", lambda x: ort.run(session, x)[0])})
    assert result["images"] == 16 and len(result["classes"]) == 10
    torch_row, onnx_row = result["results"]["pytorch"], result["results"]["onnxruntime fp32"]
    assert torch_row["top1"] == 1.0 and torch_row["top5"] == 1.0  # the labels are its own predictions
    assert onnx_row["top1"] == 1.0 and onnx_row["top1_agreement_with_pytorch"] == 1.0
    assert result["flagged"] == []
    # the model's own normalisation (CIFAR statistics for a CIFAR-layout network) and input size
    assert result["transform"]["mean"] == pytest.approx(list(model.pretrained_cfg["mean"]))
    assert result["transform"]["input_size"] == [3, 32, 32]


def test_a_file_with_permuted_outputs_scores_differently_and_is_flagged(tiny, folder, tmp_path):
    model, path, _ = tiny
    wrong = ort.session(permuted(path, tmp_path / "wrong.onnx"), 1)
    right = ort.session(path, 1)
    result = artifacts.evaluate_on_folder(model, folder, {
        "onnxruntime fp32": ("fp32", lambda x: ort.run(right, x)[0]),
        "onnxruntime int8": ("int8", lambda x: ort.run(wrong, x)[0]),
    })
    bad = result["results"]["onnxruntime int8"]
    assert bad["top1"] == 0.0 and bad["top1_agreement_with_pytorch"] == 0.0
    assert result["results"]["pytorch"]["top1"] == 1.0
    (flag,) = result["flagged"]
    assert flag.startswith("onnxruntime int8 agrees with PyTorch on top-1 for 0.0% of 16 images")


def test_bad_evaluation_folders_are_user_errors(tiny, tmp_path):
    model, _, _ = tiny
    with pytest.raises(UserError, match="not a folder"):
        artifacts.evaluation_set(tmp_path / "missing", model)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images|sub-folder"):
        artifacts.evaluation_set(tmp_path / "empty", model)
    many = tmp_path / "many"
    for c in range(11):
        (many / f"c{c:02d}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (c * 20, 0, 0)).save(many / f"c{c:02d}" / "x.png")
    with pytest.raises(UserError, match="11 class folders but the model has 10 outputs"):
        artifacts.evaluation_set(many, model)


def test_export_reports_pytorch_onnx_and_int8_accuracy_on_the_same_images(tmp_path, capsys, folder,
                                                                          calibration_dir):
    out = tmp_path / "out"
    code = export_main([str(write_tiny_genotype(tmp_path)), "--exporter", "torchscript", "--int8", "--calib-dir",
                        str(calibration_dir), "--eval-dir", str(folder), "--latency-iters", "0", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "tinynet.json").read_text())
    evaluation = report["eval"]
    assert evaluation["images"] == 16
    assert set(evaluation["results"]) == {"pytorch", "onnxruntime fp32", "onnxruntime int8"}
    for row in evaluation["results"].values():
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    fp32 = evaluation["results"]["onnxruntime fp32"]
    assert fp32["top1"] == evaluation["results"]["pytorch"]["top1"] and fp32["top1_agreement_with_pytorch"] == 1.0
    assert evaluation["results"]["onnxruntime int8"]["precision"] == "int8"
    assert not any(f.startswith("onnxruntime fp32") for f in evaluation["flagged"])
    assert "onnxruntime int8" in captured.out and "top-1" in captured.out


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "not a folder"),
    (lambda p: (p / "flat").mkdir() or p / "flat", "sub-folder"),
])
def test_export_with_a_bad_eval_dir_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, make, needle):
    code = export_main(["darts_v2", "--onnx", "--eval-dir", str(make(tmp_path)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()
