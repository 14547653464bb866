"""Commands never replace what the user did not ask to replace: an input, an earlier run's results, an existing
report file.  Each refusal is one line on stderr, exit 2, and leaves the disk as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cdarts_deploy.commands import evaluate as eval_cmd
from cdarts_deploy.commands import export as export_cmd
from cdarts_deploy.commands import train as train_cmd
from training_samples import SIZE, TINY, make_image_folder, train_tiny

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--latency-iters", "0", "--exporter", "torchscript"]


def _tiny_genotype(path: Path) -> Path:
    doc = json.loads((ROOT / "cdarts_deploy" / "zoo" / "cdarts_cifar.json").read_text())
    doc.update(name=path.stem, network={"layout": "cifar", "width": 4, "cells": 3, "num_classes": 3,
                                        "input_size": SIZE})
    path.write_text(json.dumps(doc))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, code: int, prog: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith(f"[{prog}]")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# ----- cdarts-export -------------------------------------------------------------------------------------------


def test_export_default_out_is_a_folder_named_after_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    genotype = _tiny_genotype(tmp_path / "mynet.json")
    before = genotype.read_bytes()
    assert export_cmd.main(["mynet.json", "--onnx", *FAST]) == 0, capsys.readouterr().err
    assert genotype.read_bytes() == before  # the user's genotype, untouched
    assert sorted(p.name for p in (tmp_path / "mynet").iterdir()) == ["mynet.json", "mynet.onnx"]


def test_export_refuses_to_write_its_report_over_the_genotype(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    genotype = _tiny_genotype(tmp_path / "mynet.json")
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):  # --overwrite replaces earlier results, never an input
        line = _refused(capsys, export_cmd.main(["mynet.json", "--onnx", "--out", ".", *FAST, *extra]),
                        "cdarts-export")
        assert "mynet.json" in line and "input" in line
    assert _snapshot(tmp_path) == before
    assert genotype.exists()


def test_export_refuses_a_folder_with_earlier_results_unless_overwrite(tmp_path, capsys):
    _tiny_genotype(tmp_path / "net.json")
    out = tmp_path / "out"
    out.mkdir()
    (out / "net.onnx").write_bytes(b"earlier")
    line = _refused(capsys, export_cmd.main([str(tmp_path / "net.json"), "--onnx", "--out", str(out), *FAST]),
                    "cdarts-export")
    assert "net.onnx" in line and "--overwrite" in line
    assert (out / "net.onnx").read_bytes() == b"earlier"
    assert export_cmd.main([str(tmp_path / "net.json"), "--onnx", "--out", str(out), "--overwrite", *FAST]) == 0
    assert (out / "net.onnx").read_bytes() != b"earlier"


# ----- cdarts-train and cdarts-eval ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    images = make_image_folder(tmp_path_factory.mktemp("imgs"))
    out = tmp_path_factory.mktemp("run") / "r"
    assert train_tiny(images, out) == 0
    (out / "resume.pth").unlink()  # finished and tidied: no resume.pth, its results remain
    return images, out


def test_train_refuses_the_folder_of_a_finished_run(tmp_path, capsys, finished_run):
    images, done = finished_run
    out = tmp_path / "r"
    shutil.copytree(done, out)
    before = _snapshot(out)
    line = _refused(capsys, train_tiny(images, out), "cdarts-train")
    assert str(out) in line and "--overwrite" in line
    assert _snapshot(out) == before
    assert train_tiny(images, out, "--overwrite") == 0
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_train_refuses_to_write_over_its_genotype_input(tmp_path, capsys, finished_run):
    images, done = finished_run
    out = tmp_path / "r"
    shutil.copytree(done, out)
    before = _snapshot(out)
    code = train_cmd.main([str(out / "genotype.json"), "--data-root", str(images), "--out", str(out), "--overwrite",
                           *TINY, "--epochs", "1", "--no-progress"])
    assert "genotype.json" in _refused(capsys, code, "cdarts-train")
    assert _snapshot(out) == before


@pytest.mark.parametrize("target", ["run.json", "best.pth", "genotype.json", "existing.json"])
def test_eval_json_never_replaces_an_input_or_an_existing_file(tmp_path, capsys, finished_run, target):
    images, done = finished_run
    run = tmp_path / "r"
    shutil.copytree(done, run)
    (run / "existing.json").write_text("{}")
    before = _snapshot(run)
    code = eval_cmd.main([str(run / "best.pth"), "--data-root", str(images), "--json", str(run / target),
                          "--no-progress"])
    assert target in _refused(capsys, code, "cdarts-eval")
    assert _snapshot(run) == before


def test_eval_json_into_a_missing_or_unwritable_folder_is_one_line(tmp_path, capsys, finished_run):
    images, done = finished_run
    code = eval_cmd.main([str(done / "best.pth"), "--data-root", str(images), "--json",
                          str(tmp_path / "no" / "such" / "report.json"), "--no-progress"])
    assert "does not exist" in _refused(capsys, code, "cdarts-eval")
    assert not (tmp_path / "no").exists()
    assert eval_cmd.main([str(done / "best.pth"), "--data-root", str(images), "--json", str(tmp_path / "e.json"),
                          "--no-progress"]) == 0
    assert eval_cmd.main([str(done / "best.pth"), "--data-root", str(images), "--json", str(tmp_path / "e.json"),
                          "--overwrite", "--no-progress"]) == 0
