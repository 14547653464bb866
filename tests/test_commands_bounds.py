"""Every numeric option and config field has a range, checked before anything is allocated or created on disk:
an absurd value is one line on stderr, exit 2, no folder."""

from __future__ import annotations

import json

import pytest

from cdarts_deploy import latency_table_format as lt
from cdarts_deploy.commands import export as export_cmd
from cdarts_deploy.commands import train as train_cmd
from cdarts_deploy.genotype import TINY_BASE
from fake_latency import FakeTimer
from search import cli as search_cli
from training_samples import brightness_image_folder, make_image_folder, one_line_error

INPUT = 32
NETWORK = {"num_classes": 3, "stem_channels": 8, "head_channels": 128}  # the smoke32 preset's network, 3 classes


def _run(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own one-line refusals
        return int(exc.code)


@pytest.fixture(scope="module")
def search_data(tmp_path_factory):
    return brightness_image_folder(tmp_path_factory.mktemp("search") / "data", per_class=6, size=36)


@pytest.mark.parametrize("flag, value", [("--width", "100000"), ("--cells", "5000"), ("--seed", "-1"),
                                         ("--batch-size", "1000000000"), ("--epochs", "0"), ("--lr", "nan")])
def test_search_refuses_out_of_range_options(tmp_path, capsys, search_data, flag, value):
    out = tmp_path / "run"
    code = _run(search_cli.main, ["--dataset", "imagefolder", "--data-root", str(search_data), "--out", str(out),
                            "--no-progress", flag, value])
    assert flag in one_line_error(capsys, code, "cdarts-search")
    assert not out.exists()


def test_search_refuses_an_absurd_width_from_a_config_file(tmp_path, capsys, search_data):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"width": 10**6, "cells": 20}))
    out = tmp_path / "run"
    code = _run(search_cli.main, ["--config", str(config), "--dataset", "imagefolder", "--data-root", str(search_data),
                            "--out", str(out), "--no-progress"])
    assert "--width" in one_line_error(capsys, code, "cdarts-search")
    assert not out.exists()


@pytest.mark.parametrize("budget", [["--budget", "1"], ["--latency-budget", "0.0001ms"]])
def test_a_budget_too_small_leaves_no_folder_and_no_lock(tmp_path, capsys, search_data, budget):
    table = tmp_path / "table.json"
    from cdarts_deploy.deploy.latency_measure import measure_chain_table

    lt.save(measure_chain_table(TINY_BASE, NETWORK, INPUT, 1, FakeTimer(), progress=False), table)
    out = tmp_path / "run"
    extra = ["--latency-table", str(table), "--no-measure-latency"] if budget[0] == "--latency-budget" else []
    code = _run(search_cli.main, ["--space", "chain", "--preset", "smoke32", "--data-root", str(search_data), "--out",
                            str(out), "--epochs", "1", "--batch-size", "4", "--no-progress", *budget, *extra])
    assert budget[0] in one_line_error(capsys, code, "cdarts-search")
    assert not out.exists()


@pytest.mark.parametrize("value", [1e300, 1e7])
def test_a_latency_table_of_huge_finite_numbers_is_refused(tmp_path, capsys, search_data, value):
    from cdarts_deploy.deploy.latency_measure import measure_chain_table

    doc = measure_chain_table(TINY_BASE, NETWORK, INPUT, 1, FakeTimer(), progress=False).to_dict()
    def huge(node):  # every latency entry (a key ending in ms) becomes ``value``
        if isinstance(node, dict):
            return {k: (value if k.endswith("ms") and isinstance(v, float) else huge(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [huge(v) for v in node]
        return node

    (tmp_path / "t.json").write_text(json.dumps(huge(doc)))
    out = tmp_path / "run"
    code = _run(search_cli.main, ["--space", "chain", "--preset", "smoke32", "--data-root", str(search_data), "--out",
                            str(out), "--latency-table", str(tmp_path / "t.json"), "--latency-budget", "1ms",
                            "--no-progress"])
    line = one_line_error(capsys, code, "cdarts-search")
    assert "t.json" in line and "milliseconds" in line
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--width", "100000"), ("--cells", "5000"), ("--seed", "-1"),
                                         ("--epochs", "1000000000"), ("--drop-path", "2")])
def test_train_refuses_out_of_range_options(tmp_path, capsys, flag, value):
    data = make_image_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    code = _run(train_cmd.main, ["cdarts_cifar", "--data-root", str(data), "--out", str(out), "--preset", "cpu-smoke",
                           "--no-progress", flag, value])
    assert flag in one_line_error(capsys, code, "cdarts-train")
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--width", "100000"), ("--cells", "5000"), ("--num-classes", "10000000"),
                                         ("--latency-iters", "-1"), ("--input-size", "100000")])
def test_export_refuses_out_of_range_options(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    code = _run(export_cmd.main, ["cdarts_cifar", "--onnx", "--out", str(out), flag, value])
    assert flag in one_line_error(capsys, code, "cdarts-export")
    assert not out.exists()
