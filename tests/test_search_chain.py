"""Chain-space CDARTS search: supernet slicing, weight inheritance, cost model, budget, end to end."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from timm.layers import make_divisible

from backbones.complexity import count_macs
from backbones.factory import create_model_from_genotype
from cdarts_deploy.genotype import CHAIN_CHOICES, TINY_BASE, ChainGenotype, load, to_dict
from search.chain_child import build_child
from search.chain_cost import CostModel, budget_penalty
from search.chain_space import ChainSupernet, MixedInvertedResidual
from search.cli import main as search_main
from training_samples import brightness_image_folder

INPUT = 32


def main(argv: list[str]) -> int:
    """``cdarts-search --space chain ARGV``."""
    return search_main(["--space", "chain", *argv])


@pytest.fixture(scope="module")
def tiny_supernet() -> ChainSupernet:
    torch.manual_seed(0)
    net = ChainSupernet(TINY_BASE, num_classes=5, input_size=INPUT, stem_channels=8, head_channels=64)
    # non-trivial BN statistics and affine parameters, so inheriting the wrong BN shows up
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def tiny_cost(tiny_supernet) -> CostModel:
    return CostModel(tiny_supernet, INPUT)


def test_supernet_has_one_choice_row_per_searchable_block(tiny_supernet):
    assert len(tiny_supernet.units) == 4
    assert tiny_supernet.alphas.shape == (4, len(CHAIN_CHOICES))
    mixed = [m for m in tiny_supernet.modules() if isinstance(m, MixedInvertedResidual)]
    assert len(mixed) == 4
    assert tiny_supernet.taps == (1, 2)


def test_repeated_base_block_is_one_choice_unit():
    net = ChainSupernet("cdarts_b_base", num_classes=10, input_size=64)
    # 4 + 4 + 4 (three r1 strings and one r2 string) + 4 + 4 arch strings are searchable
    assert len(net.units) == 20
    r2 = [u for u in net.units if len(u.modules) == 2]
    assert [(u.stage, u.arch_index, u.modules) for u in r2] == [(3, 3, (3, 4))]


@pytest.mark.parametrize("seed", [0, 1])
def test_child_inherits_the_chosen_candidates(tiny_supernet, seed):
    rng = random.Random(seed)
    choices = [rng.randrange(len(CHAIN_CHOICES)) for _ in tiny_supernet.units]
    genotype, child = build_child(tiny_supernet, choices)
    child.eval()
    # the child's blocks have the chosen kernel and expansion (read from the timm modules)
    for unit, c in zip(tiny_supernet.units, choices):
        k, e = CHAIN_CHOICES[c]
        block = child.blocks[unit.stage][unit.modules[0]]
        assert block.conv_dw.kernel_size == (k, k)
        assert block.conv_pw.out_channels == make_divisible(block.conv_pw.in_channels * e)
        mixed = tiny_supernet.net.blocks[unit.stage][unit.modules[0]]
        off = (7 - k) // 2
        mid = block.conv_pw.out_channels
        assert torch.equal(block.conv_dw.weight, mixed.conv_dw.weight[:mid, :, off : off + k, off : off + k])
        assert torch.equal(block.bn2.running_var, mixed.bn2[f"k{k}_e{e}"].running_var)
    # the whole child computes what the supernet computes on that single path
    x = torch.randn(3, 3, INPUT, INPUT)
    one_hot = torch.nn.functional.one_hot(torch.tensor(choices), len(CHAIN_CHOICES)).float()
    with torch.no_grad():
        expected, _ = tiny_supernet.forward_with_levels(x, one_hot)
        got = child(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_inherited_weights_follow_supernet_training(tiny_supernet):
    supernet = copy.deepcopy(tiny_supernet)  # the shared fixture stays untouched
    choices = [5, 0, 3, 2]
    _, before = build_child(supernet, choices)
    with torch.no_grad():
        supernet.net.blocks[1][0].conv_pw.weight.add_(1.0)  # stands in for a w_S update
    _, after = build_child(supernet, choices)
    delta = after.blocks[1][0].conv_pw.weight - before.blocks[1][0].conv_pw.weight
    assert torch.allclose(delta, torch.ones_like(delta))


def test_cost_table_matches_counted_child(tiny_supernet, tiny_cost):
    rng = random.Random(3)
    for _ in range(3):
        choices = [rng.randrange(len(CHAIN_CHOICES)) for _ in tiny_supernet.units]
        _, child = build_child(tiny_supernet, choices)
        assert tiny_cost.child_cost(choices) == count_macs(child, INPUT)
    lo, hi = tiny_cost.range()
    assert lo < hi


def test_expected_cost_is_the_mean_under_choice_weights(tiny_supernet, tiny_cost):
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2, 3, 4]), len(CHAIN_CHOICES)).double()
    assert tiny_cost.expected_cost(one_hot).item() == pytest.approx(tiny_cost.child_cost([1, 2, 3, 4]))
    uniform = torch.full((4, len(CHAIN_CHOICES)), 1 / len(CHAIN_CHOICES), dtype=torch.float64)
    mean_cost = np.mean([[tiny_cost.child_cost([c] * 4)] for c in range(len(CHAIN_CHOICES))])
    assert tiny_cost.expected_cost(uniform).item() == pytest.approx(mean_cost)


@pytest.mark.parametrize("side", ["over", "under"])
def test_budget_penalty_gradient_moves_cost_toward_budget(tiny_cost, side):
    lo, hi = tiny_cost.range()
    budget = lo + 0.1 * (hi - lo) if side == "over" else lo + 0.9 * (hi - lo)
    alphas = torch.zeros(4, len(CHAIN_CHOICES), requires_grad=True)
    before = tiny_cost.expected_cost(torch.softmax(alphas, -1))
    budget_penalty(before, budget).backward()
    grad = alphas.grad
    cheapest, dearest = tiny_cost.table.argmin(1), tiny_cost.table.argmax(1)
    rows = torch.arange(4)
    if side == "over":  # descent raises the cheapest candidate, lowers the most expensive
        assert (grad[rows, cheapest] < 0).all() and (grad[rows, dearest] > 0).all()
    else:
        assert (grad[rows, cheapest] > 0).all() and (grad[rows, dearest] < 0).all()
    with torch.no_grad():
        after = tiny_cost.expected_cost(torch.softmax(alphas - 0.5 * grad / grad.abs().max(), -1))
    assert abs(after.item() - budget) < abs(before.item() - budget)


def test_fit_to_budget_lands_within_tolerance(tiny_cost):
    lo, hi = tiny_cost.range()
    g = torch.Generator().manual_seed(0)
    for frac in (0.2, 0.5, 0.8):
        budget = lo + frac * (hi - lo)
        choices = tiny_cost.fit_to_budget(torch.randn(4, len(CHAIN_CHOICES), generator=g), budget, 0.05)
        assert abs(tiny_cost.child_cost(choices) / budget - 1) <= 0.05


def test_search_end_to_end_with_budget(tmp_path, tiny_cost):
    data = brightness_image_folder(tmp_path / "data")
    lo, hi = tiny_cost.range()
    budget = lo + 0.6 * (hi - lo)  # the tiny base at 32x32 costs between lo and hi multiply-adds
    out = tmp_path / "run"
    argv = ["--data-root", str(data), "--out", str(out), "--preset", "smoke32", "--epochs", "1",
            "--batch-size", "4", "--budget", str(budget), "--budget-weight", "5"]
    assert main(argv) == 0
    genotype = load(out / "genotype.json")
    assert isinstance(genotype, ChainGenotype)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["phase"]) for r in rows] == [(0, "warmup"), (1, "search")]  # warm-up + --epochs
    assert rows[-1]["genotype"] == to_dict(genotype)
    assert rows[-1]["budget_madds"] == budget and "arch_cost" in rows[-1] and "val_acc_eval" in rows[-1]

    model = create_model_from_genotype(out / "genotype.json").eval()
    madds = count_macs(model, INPUT)
    assert abs(madds / budget - 1) <= 0.10, (madds, budget)

    # the searched weights load into the built model, and it exports to ONNX
    state = torch.load(out / "child.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    x = torch.randn(2, 3, INPUT, INPUT)
    onnx_path = tmp_path / "child.onnx"
    torch.onnx.export(model, (x,), str(onnx_path), input_names=["input"], output_names=["logits"], dynamo=False)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)

    # a second run into the same folder refuses and leaves the first run's files alone
    before = (out / "genotype.json").read_bytes()
    assert main(argv) == 2
    assert (out / "genotype.json").read_bytes() == before


def test_resume_after_a_kill_reaches_the_same_architecture(tmp_path, monkeypatch):
    import search.trainer as trainer

    data = brightness_image_folder(tmp_path / "data", per_class=4)
    common = ["--data-root", str(data), "--preset", "smoke32", "--batch-size", "3", "--warmup-epochs", "0",
              "--eval-steps", "1", "--epochs", "2"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(common + ["--out", str(full)]) == 0

    real_save = trainer.save_checkpoint

    def save_then_die(state, path):
        real_save(state, path)
        raise KeyboardInterrupt  # the process dies right after epoch 0's checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    assert main(common + ["--out", str(part)]) == 130  # interrupted: "continue with --resume"
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert main(common + ["--out", str(part), "--resume"]) == 0

    a = torch.load(full / "checkpoint.pt", weights_only=True)["space"]
    b = torch.load(part / "checkpoint.pt", weights_only=True)["space"]
    assert torch.equal(a["search_net"]["alphas"], b["search_net"]["alphas"])
    for key, weights in a["pool"]["ops"].items():  # the evaluation networks' w_E as well
        for name, t in weights.items():
            assert torch.equal(t, b["pool"]["ops"][key][name]), (key, name)
    assert (full / "genotype.json").read_text() == (part / "genotype.json").read_text()
    assert [json.loads(r)["epoch"] for r in (part / "log.jsonl").read_text().splitlines()] == [0, 1]


def test_bad_data_root_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--preset", "smoke32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data-root" in err[0]
    assert not (tmp_path / "o").exists()


def test_torchrun_two_process_search_on_cpu(tmp_path, capsys):
    data = brightness_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "ddp"
    argv = ["--data-root", str(data), "--out", str(out), "--preset", "smoke32", "--epochs", "2", "--batch-size", "4",
            "--warmup-epochs", "0", "--device", "cpu"]
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "search",
           "--space", "chain", *argv]
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    genotype = load(out / "genotype.json")
    assert isinstance(genotype, ChainGenotype)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]  # one writer: rank 0
    # the architecture weights and the derived choices are the same on both ranks after every epoch
    assert all(r["alpha_rank_spread"] == 0.0 for r in rows)
    assert rows[-1]["genotype"] == to_dict(genotype)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "child.pth", "choices.png", "genotype.json",
                                                     "log.jsonl", "run.json", "search.lock"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2
    # resuming the 2-process run in one process is refused: the data each rank read would change
    before = (out / "checkpoint.pt").read_bytes()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nproc_per_node" in err[0]
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_with_changed_options_is_refused(tmp_path, capsys):
    data = brightness_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    argv = ["--data-root", str(data), "--out", str(out), "--preset", "smoke32", "--batch-size", "3", "--epochs", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "search.lock"}
    assert main([*argv, "--resume", "--epochs", "2", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--epochs" in err[0] and "--lr" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "search.lock"} == before
    # the same options resume (here: the run is complete, so nothing is trained)
    assert main([*argv, "--resume"]) == 0
