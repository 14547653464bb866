"""Hostile inputs through the real commands: one line on stderr, exit 2, quickly, nothing written.

The library tests cover each bound; these check that every command maps the refusal to the
user-facing contract instead of a traceback or a hang.
"""

from __future__ import annotations

import pickle
import time

import pytest
import torch

from cdarts_deploy.commands import export as export_cmd
from cdarts_deploy.commands import profile as profile_cmd
from search import cli as search_cli

SECONDS = 20.0  # generous for a loaded 2-core machine; a hang or a network build would take far longer


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def _legacy_cell(nodes: int) -> str:
    edges = ", ".join(["[('skip_connect', 0), ('sep_conv_3x3', 1)]"] * nodes)
    return f"Genotype(normal=[{edges}], normal_concat=[2, 3], reduce=[{edges}], reduce_concat=[2, 3])"


def _genotype_files(tmp_path):
    files = {
        "deep_json": "[" * 100_000 + "]" * 100_000,
        "huge_legacy_cell": '{"0": "' + _legacy_cell(50_000) + '"}',
        "legacy_cell_of_many_nodes": _legacy_cell(1_000),
        "nan": '{"format": "cdarts-genotype", "version": NaN}',
        "oversized": " " * (2 << 20) + "{}",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(text)
    paths["binary"] = tmp_path / "binary.json"
    paths["binary"].write_bytes(bytes(range(256)) * 8)
    return paths


def _one_line_exit_2(capsys, call, prog):
    start = time.perf_counter()
    code = call()
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < SECONDS
    # progress lines may come first; the refusal is exactly one line, the last one
    errors = [line for line in err.strip().splitlines() if not line.startswith(f"[{prog}]")]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err and "Warning" not in err
    return errors[0]


@pytest.mark.parametrize("kind", ["deep_json", "huge_legacy_cell", "legacy_cell_of_many_nodes", "nan", "oversized",
                                  "binary"])
def test_export_refuses_hostile_genotype_files(tmp_path, capsys, kind):
    path = _genotype_files(tmp_path)[kind]
    out = tmp_path / "out"
    line = _one_line_exit_2(capsys, lambda: export_cmd.main([str(path), "--onnx", "--out", str(out)]), "cdarts-export")
    assert path.name in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["deep_json", "huge_legacy_cell", "binary"])
def test_profile_refuses_hostile_genotype_files(tmp_path, capsys, kind):
    path = _genotype_files(tmp_path)[kind]
    out = tmp_path / "prof"
    _one_line_exit_2(capsys, lambda: profile_cmd.main([str(path), "--out", str(out)]), "cdarts-profile")
    assert not out.exists()


@pytest.mark.parametrize("content", ["pickled_object", "garbage", "not_a_state_dict"])
def test_export_refuses_hostile_checkpoints(tmp_path, capsys, content):
    ckpt = tmp_path / "weights.pth"
    if content == "pickled_object":
        ckpt.write_bytes(pickle.dumps({"w": _Payload()}))
    elif content == "garbage":
        ckpt.write_bytes(b"PK\x03\x04" + bytes(range(200)))
    else:
        torch.save({"epoch": 3, "note": "no tensors here"}, ckpt)
    out = tmp_path / "out"
    line = _one_line_exit_2(
        capsys,
        lambda: export_cmd.main(["cdarts_cifar", "--onnx", "--width", "8", "--cells", "5", "--checkpoint", str(ckpt),
                                 "--out", str(out)]),
        "cdarts-export",
    )
    assert "weights_only=False" not in line
    assert "unpickled!" not in capsys.readouterr().out
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"epochs": NaN}', "\xff not json", "[1, 2]"])
def test_search_refuses_hostile_config_files(tmp_path, capsys, text):
    config = tmp_path / "options.json"
    config.write_text(text, errors="surrogateescape") if "\xff" not in text else config.write_bytes(b"\xff{")
    out = tmp_path / "run"
    _one_line_exit_2(
        capsys,
        lambda: search_cli.main(["--config", str(config), "--data-root", str(tmp_path), "--out", str(out)]),
        "cdarts-search",
    )
