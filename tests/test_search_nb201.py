"""CDARTS and DARTS in the NAS-Bench-201 space: settings, discretisation, benchmark logging, end to end."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cdarts_deploy import genotype as gt
from search.cli import main
from search.config import SPACE_DEFAULTS, SearchConfig, apply_overrides, resolved_defaults
from search.nb201_space import BENCHMARK_PLOT, Nb201Space
from search.nb201_supernet import NUM_EDGES, Nb201SearchNetwork, discretize
from test_search_units import make_cifar

SUBSET = Path(__file__).parent / "data" / "nats_bench_tss_subset"
ARCH_11 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"
TINY = ["--preset", "tiny", "--threads", "1", "--no-progress", "--seed", "3", "--space", "nb201"]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(**overrides) -> SearchConfig:
    base = apply_overrides(dataclasses.asdict(SearchConfig()), SPACE_DEFAULTS["nb201"], "space defaults")
    cfg = SearchConfig(**apply_overrides(base, dict(space="nb201", **overrides), "test"))
    return resolved_defaults(cfg, "cifar")


def _alpha_for(arch: str) -> torch.Tensor:
    ops = [op for node in gt.parse_nb201_string(arch) for op in node]
    alpha = torch.zeros(NUM_EDGES, len(gt.NB201_OPS))
    for e, op in enumerate(ops):
        alpha[e, gt.NB201_OPS.index(op)] = 1.0
    return alpha


def test_table_1_settings_and_the_benchmark_network():
    cfg = _config()
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (64, 0.1, 0.9, 3e-4)
    assert (cfg.epochs, cfg.distill_lambda, cfg.reg_lambda) == (50, 4.0, 0.0)
    assert (cfg.width, cfg.cells, cfg.eval_width, cfg.eval_cells) == (16, 5, 16, 5)
    assert (cfg.export_width, cfg.export_cells) == (16, 5)


def test_discretisation_keeps_the_argmax_of_every_edge_none_included():
    assert discretize(_alpha_for(ARCH_11)) == gt.parse_nb201_string(ARCH_11)
    assert discretize(_alpha_for("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))[2] == ("none",) * 3


def test_search_network_shapes_and_taps():
    net = Nb201SearchNetwork(num_classes=10, width=4, cells=1)
    logits, feats = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and [f.shape[1] for f in feats] == net.tap_channels == [4, 8, 16]
    assert net.arch_parameters() == [net.alpha] and all(p is not net.alpha for p in net.weight_parameters())


def test_space_logs_benchmark_accuracy_and_draws_it(tmp_path):
    cfg = _config(width=4, cells=1, eval_width=4, eval_cells=1, head_mid=8, head_embed=8, benchmark=str(SUBSET))
    space = Nb201Space(cfg, num_classes=10, input_size=16, device=torch.device("cpu"))
    with torch.no_grad():
        space.search_net.alpha.copy_(_alpha_for(ARCH_11))
    g = space.derive()
    assert g.arch_string() == ARCH_11 and g.index == 11
    row = space.stats(g)
    assert row["bench_index"] == 11 and row["none_edges"] == 1
    assert row["bench_cifar10_test"] == pytest.approx(91.583, abs=1e-3)
    assert row["bench_ImageNet16-120_valid"] == pytest.approx(30.411, abs=1e-3)
    assert space.reg_loss() is None  # Table 1: no skip-connect L1 term
    branch = space.build_eval(g, 0)
    logits, feats = branch(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and len(feats) == space.levels == 3
    assert [f.shape[1] for f in feats] == space.heads.channels  # one set of heads serves both networks
    rows = [dict(epoch=e, **row) for e in range(3)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    space.finish(g, tmp_path, branch)
    assert (tmp_path / BENCHMARK_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_networks_inherit_edge_weights():
    cfg = _config(width=4, cells=1, eval_width=4, eval_cells=1, head_mid=8, head_embed=8)
    space = Nb201Space(cfg, num_classes=10, input_size=16, device=torch.device("cpu"))
    space.build_eval(gt.nb201_from_string(ARCH_11), 0)
    space.write_back(None)
    space.build_eval(gt.nb201_from_string(ARCH_11.replace("none~0", "nor_conv_1x1~0")), 1)
    assert space.inherited == 3 * 6 - 3  # every edge of the 3 cells but the changed one


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    return make_cifar(tmp_path_factory.mktemp("cifar"))


def _export_check(path: Path, tmp: Path) -> None:
    import onnxruntime as ort

    from backbones.factory import create_model_from_genotype

    g = gt.load(path)
    model = create_model_from_genotype(g).eval()
    x = torch.randn(2, 3, g.network.input_size, g.network.input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp / "m.onnx"), dynamo=False, opset_version=18, input_names=["x"])
    got = ort.InferenceSession(str(tmp / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("method", ["cdarts", "darts"])
def test_search_writes_an_nb201_genotype_that_exports(method, cifar_dir, tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, "--method", method, "--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out),
                 "--benchmark", str(SUBSET)]) == 0
    g = gt.load(out / "genotype.json")
    assert isinstance(g, gt.Nb201Genotype) and g.index is not None
    assert g.network.num_classes == 10 and g.network.input_size == 16
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all(r["reg_coef"] == 0.0 for r in rows)
    assert all(isinstance(r["bench_index"], int) for r in rows) and rows[-1]["arch"] == g.arch_string()
    assert (out / "cell.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _export_check(out / "genotype.json", tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--space", "cell", "--benchmark", str(SUBSET)], "add --space nb201"),
    (["--benchmark", "/nonexistent/bench"], "is not a folder"),
    (["--benchmark", "NAS-Bench-201-v1_0-e61699.pth"], "single-file benchmark"),
    (["--learn-beta"], "one alpha shared by all cells"),
])
def test_bad_benchmark_options_are_one_line_and_write_nothing(args, message, cifar_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--dataset", "cifar10", "--data-root", str(cifar_dir), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_interrupted_search_resumes_to_the_same_result(cifar_dir, tmp_path, monkeypatch):
    from search.trainer import CyclicSearch

    args = [*TINY, "--dataset", "cifar10", "--data-root", str(cifar_dir)]
    straight = tmp_path / "straight"
    assert main([*args, "--out", str(straight)]) == 0
    run_epoch = CyclicSearch.run_epoch

    def stop_at_epoch_2(self, epoch, bar):
        if epoch == 2:
            raise KeyboardInterrupt
        return run_epoch(self, epoch, bar)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(CyclicSearch, "run_epoch", stop_at_epoch_2)
    assert main([*args, "--out", str(out)]) == 130  # checkpoint of epochs 0 and 1
    monkeypatch.setattr(CyclicSearch, "run_epoch", run_epoch)
    assert main(["--out", str(out), "--resume", "--no-progress", "--threads", "1"]) == 0
    assert (out / "genotype.json").read_text() == (straight / "genotype.json").read_text()
    states = [torch.load(d / "checkpoint.pt", weights_only=True) for d in (out, straight)]
    assert torch.equal(*(s["space"]["search_net"]["alpha"] for s in states))
