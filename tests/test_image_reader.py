"""The one image reader: which files count, what is bad, the fail/skip rule, through every command that reads
image folders (one line on stderr, exit 2, the bad file named, nothing created)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cdarts_deploy.commands import evaluate as eval_cmd
from cdarts_deploy.commands import export as export_cmd
from cdarts_deploy.commands import train as train_cmd
from cdarts_deploy.data import image_reader as ir
from cdarts_deploy.errors import UserError
from search import cli as search_cli
from training_samples import SIZE, TINY, make_image_folder, one_line_error

ROOT = Path(__file__).resolve().parents[1]


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims ``width`` x ``height`` pixels (a decompression bomb as far as the header goes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


BAD = {
    "truncated_jpeg": ("broken.jpg", _jpeg()[:200]),
    "not_an_image": ("notes.png", b"these are my notes, not a picture\n" * 4),
    "bomb_png": ("huge.png", _png_header_only(20_000, 20_000)),
}


def test_what_is_bad_and_why(tmp_path):
    for kind, (name, data) in BAD.items():
        (tmp_path / name).write_bytes(data)
        assert ir.problem(tmp_path / name), kind
    (tmp_path / "good.jpg").write_bytes(_jpeg())
    assert ir.problem(tmp_path / "good.jpg") is None
    assert "pixel" in ir.problem(tmp_path / "huge.png")


def test_hidden_and_resource_files_do_not_count(tmp_path):
    (tmp_path / "._photo.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS AppleDouble
    (tmp_path / ".hidden.jpg").write_bytes(_jpeg())
    (tmp_path / "photo.JPG").write_bytes(_jpeg())
    assert [p.name for p in ir.folder_files(tmp_path)] == ["photo.JPG"]


def test_fail_names_the_file_and_skip_leaves_it_out(tmp_path):
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    name, data = BAD["truncated_jpeg"]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match="broken.jpg.*--bad-images skip"):
        ir.screen(ir.folder_files(tmp_path), "fail", "--calib-dir")
    lines: list[str] = []
    assert [p.name for p in ir.screen(ir.folder_files(tmp_path), "skip", "--calib-dir", lines.append)] == ["a.jpg"]
    assert len(lines) == 1 and "skipped 1" in lines[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.tuples(st.sampled_from(["a.png", "b.jpg", "._c.png", "d.jpeg", ".e.bmp", "f.webp",
                                                 "g.tiff", "h.txt"]),
                                st.binary(max_size=300)), max_size=6))
def test_folders_of_random_bytes_are_read_or_refused_in_one_line(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("random")
    for name, data in files:
        (folder / name).write_bytes(data)
    listed = ir.folder_files(folder)
    assert all(not p.name.startswith(".") and p.suffix != ".txt" for p in listed)
    kept = ir.screen(listed, "skip", "--calib-dir", lambda m: None)
    for p in kept:  # what is kept decodes
        assert ir.read_rgb(p).mode == "RGB"
    try:
        assert ir.screen(listed, "fail", "--calib-dir") == kept
    except UserError as exc:
        assert "\n" not in str(exc) and any(p.name in str(exc) for p in listed)


# ----- through the commands ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def _with_bad(root: Path, tmp_path: Path, kind: str, part: str = "train") -> tuple[Path, str]:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    name, data = BAD[kind]
    (copy / part / "c1" / name).write_bytes(data)
    (copy / part / "c0" / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # ignored everywhere
    return copy, name


def _train(data: Path, out: Path, *extra: str) -> int:
    return train_cmd.main(["cdarts_cifar", "--data-root", str(data), "--out", str(out), "--preset", "cpu-smoke",
                           *TINY, "--batch-size", "8", "--epochs", "1", "--threads", "1", "--no-progress", *extra])


@pytest.mark.parametrize("kind", sorted(BAD))
def test_train_refuses_a_bad_image_before_creating_the_run_folder(tmp_path, capsys, good_images, kind):
    data, name = _with_bad(good_images, tmp_path, kind)
    out = tmp_path / "run"
    line = one_line_error(capsys, _train(data, out), "cdarts-train")
    assert name in line and "--bad-images skip" in line
    assert not out.exists()


def test_train_skips_bad_images_when_asked(tmp_path, capsys, good_images):
    data, name = _with_bad(good_images, tmp_path, "truncated_jpeg")
    assert _train(data, tmp_path / "run", "--bad-images", "skip") == 0
    assert "skipped 1 bad image" in capsys.readouterr().err


def test_train_refuses_a_single_class(tmp_path, capsys, good_images):
    import shutil

    data = tmp_path / "one"
    for part in ("train", "val"):
        shutil.copytree(good_images / part / "c0", data / part / "c0")
    line = one_line_error(capsys, _train(data, tmp_path / "run"), "cdarts-train")
    assert "2 classes" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", sorted(BAD))
def test_search_refuses_a_bad_image(tmp_path, capsys, good_images, kind):
    data, name = _with_bad(good_images, tmp_path, kind)
    out = tmp_path / "search"
    code = search_cli.main(["--dataset", "imagefolder", "--data-root", str(data / "train"), "--out", str(out),
                            "--epochs", "1", "--no-progress"])
    assert name in one_line_error(capsys, code, "cdarts-search")
    assert not out.exists()


def _export_args(tmp_path: Path) -> list[str]:
    doc = json.loads((ROOT / "cdarts_deploy" / "zoo" / "cdarts_cifar.json").read_text())
    doc.update(name="tiny", network={"layout": "cifar", "width": 4, "cells": 3, "num_classes": 3,
                                     "input_size": SIZE})
    (tmp_path / "tiny.json").write_text(json.dumps(doc))
    return [str(tmp_path / "tiny.json"), "--latency-iters", "0", "--exporter", "torchscript",
            "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("option", ["--calib-dir", "--eval-dir"])
def test_export_refuses_a_bad_image(tmp_path, capsys, good_images, kind, option):
    data, name = _with_bad(good_images, tmp_path, kind, part="val")
    folder = data / "val" / "c1" if option == "--calib-dir" else data / "val"
    extra = ["--int8"] if option == "--calib-dir" else []
    code = export_cmd.main([*_export_args(tmp_path), *extra, option, str(folder)])
    assert name in one_line_error(capsys, code, "cdarts-export")
    assert not (tmp_path / "out").exists()


def test_eval_refuses_a_bad_image(tmp_path, capsys, good_images):
    run = tmp_path / "run"
    assert _train(good_images, run) == 0
    data, name = _with_bad(good_images, tmp_path, "bomb_png", part="val")
    code = eval_cmd.main([str(run / "best.pth"), "--data-root", str(data), "--no-progress"])
    assert name in one_line_error(capsys, code, "cdarts-eval")


def test_search_data_skips_bad_images_when_asked(tmp_path, good_images):
    from search.data import build_search_data

    data, _ = _with_bad(good_images, tmp_path, "not_an_image")
    split = build_search_data("imagefolder", data / "train", train_fraction=0.5, val_fraction=0.5, input_size=16,
                              bad_images="skip")
    folder = split.train.dataset
    assert len(folder.samples) == sum(1 for p in (good_images / "train").rglob("*.png"))
