"""The latency benchmarks' own logic: benchmarks/latency_model.py's shares within +-5% / +-10% and its results
file, and benchmarks/latency_vs_peers.py's cheapest child and search limit, on real tables of the tiny base."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdarts_deploy import latency_stats
from cdarts_deploy import latency_table_format as lt
from cdarts_deploy.commands.latency_table import TABLE_FILE
from cdarts_deploy.commands.latency_table import main as table_main
from cdarts_deploy.genotype import TINY_BASE, base_arch
from search.chain_cost import CostModel
from search.chain_space import ChainSupernet

REPO = Path(__file__).resolve().parents[1]
INPUT = 32
NETWORK = {"num_classes": 3, "stem_channels": 8, "head_channels": 128}


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    """A tiny-base table measured on ONNX Runtime by the command, with a correction from 4 children."""
    root = tmp_path_factory.mktemp("tables")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert table_main(["--base", "tiny", "--input-size", str(INPUT), "--num-classes", "3", "--stem-channels", "8",
                           "--head-channels", "128", "--threads", "1", "--warmup", "1", "--iters", "4", "--rounds",
                           "2", "--validate", "4", "--no-progress", "--out", str(root)]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / TABLE_FILE


def _latency_model(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "latency_model.py"), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_latency_model_reports_the_share_within_5_and_10_percent(table_path, tmp_path):
    out = tmp_path / "results" / "model"
    done = _latency_model("--table", str(table_path), "--children", "6", "--iters", "3", "--rounds", "1",
                          "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.with_suffix(".json").read_text()
    doc = json.loads(text)
    raw, measured = doc["raw_ms"], doc["measured_ms"]
    assert doc["children"] == len(raw) == len(measured) == 6
    # every prediction's shares are those of its own list against the measured latencies (the file rounds the
    # latencies: a child on a boundary may fall either side of it)
    for block, predicted in ((doc["raw"], raw), *((b, b["predicted_ms"]) for b in (
            *doc["cross_validated_corrections"].values(), doc["table_correction"]))):
        low = latency_stats.within_shares(predicted, measured, (0.05 - 1e-3, 0.10 - 1e-3))
        high = latency_stats.within_shares(predicted, measured, (0.05 + 1e-3, 0.10 + 1e-3))
        assert all(low[k] <= block[k] <= high[k] for k in ("within_5pct", "within_10pct")), (block, low, high)
        assert 0.0 <= block["within_5pct"] <= block["within_10pct"] <= 1.0
    assert "within 10%" in done.stdout and out.with_suffix(".png").stat().st_size > 0
    assert "| table sum (before) |" in out.with_suffix(".md").read_text()
    # the results file names the table by name and digest; no path of this machine
    assert doc["table"]["file"] == TABLE_FILE
    assert doc["table"]["sha256"] == hashlib.sha256(table_path.read_bytes()).hexdigest()
    assert str(tmp_path) not in text and str(table_path.parent) not in text


def test_latency_model_refuses_too_few_children_before_measuring(table_path, tmp_path):
    out = tmp_path / "model"
    done = _latency_model("--table", str(table_path), "--children", "2", "--out", str(out))
    assert done.returncode == 2 and "--children 2" in done.stderr
    assert not out.with_suffix(".json").exists()


def _peers_module():
    spec = importlib.util.spec_from_file_location("latency_vs_peers", REPO / "benchmarks" / "latency_vs_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peers_benchmark_cheapest_child_and_limit_follow_the_table(table_path):
    peers = _peers_module()
    table = lt.load(table_path)
    torch.manual_seed(0)
    supernet = ChainSupernet(TINY_BASE, input_size=INPUT, **NETWORK)
    lo, hi = CostModel(supernet, INPUT, latency=table).range()
    assert peers.cheapest_ms(table) == pytest.approx(lo) and lo < hi
    # the default margin is the table's largest error after its correction, at most 10%
    error = table.correction["after"]["max_rel_error"]
    limit, margin = peers.search_limit(10.0, table, -1.0)
    assert margin == pytest.approx(min(0.10, error)) and limit == pytest.approx(10.0 / (1 + margin))
    assert peers.search_limit(10.0, table, 0.25) == pytest.approx((8.0, 0.25))
    # a table that claims a larger error never buys a larger margin than 10%
    doc = json.loads(table_path.read_text())
    doc["correction"]["after"]["max_rel_error"] = 0.5
    assert peers.search_limit(11.0, lt.from_dict(doc), -1.0) == pytest.approx((10.0, 0.10))


def test_peers_benchmark_bases_end_with_one_without_squeeze_excite():
    peers = _peers_module()
    with_se, without = peers.base_stages("cdarts_a_base"), peers.base_stages("cdarts_a_base_no_se")
    assert peers.BASES[-1] == "cdarts_a_base_no_se" and with_se == base_arch("cdarts_a_base")
    assert [len(s) for s in without] == [len(s) for s in with_se]
    assert any("_se0.25" in a for s in with_se for a in s) and not any("_se" in a for s in without for a in s)
    # still a base of the chain space: the same searchable positions
    assert lt.searchable_positions(without) == lt.searchable_positions(with_se)


@pytest.mark.parametrize("argv, words", [(["--threads", "2"], "--clock cpu"), (["--validate", "1"], "--validate 1"),
                                         (["--input-size", "16"], "--input-size 16")])
def test_peers_benchmark_refuses_bad_options_before_any_work(tmp_path, argv, words):
    out = tmp_path / "results" / "peers"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "latency_vs_peers.py"), *argv, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and words in err[0], done.stderr
    assert not out.parent.exists()
