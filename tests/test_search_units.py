"""Unit tests of the search machinery: data formats, distillation, regularization, discretization, inheritance."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdarts_deploy import genotype as gt
from cdarts_deploy.genotype import SEARCH_OPS
from search.cell_discretize import discretize, discretize_cell
from search.cell_eval import EvalPool, edge_key
from search.cell_supernet import NUM_EDGES, MixedOp, SearchNetwork
from search.data import balanced_split, build_search_data, load_cifar
from search.distill import MultiLevelDistillation, distill_loss, soft_target_kl
from search.errors import SearchInputError
from search.regularization import default_decay_epochs, l1_penalty, reg_coefficient

torch.set_num_threads(1)


# ----- generated data in the real on-disk formats ------------------------------------------------------


def make_cifar(root: Path, per_batch: int = 60, seed: int = 0) -> Path:
    """A CIFAR-10 python batch directory (5 training batches + test + meta) with a learnable colour cue."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        img = rng.integers(0, 80, (per_batch, 3, 32, 32)).astype(np.uint8)
        img[np.arange(per_batch), labels % 3] += 150
        with open(d / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                         b"data": img.reshape(per_batch, -1)}, fh, protocol=2)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)
    return d


def make_imagefolder(root: Path, classes: int = 3, per_class: int = 8, size: int = 20) -> Path:
    rng = np.random.default_rng(1)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
            arr[..., c % 3] += 150
            Image.fromarray(arr).save(folder / f"img_{i}.png")
    return root


# ----- data ----------------------------------------------------------------------------------------------


def test_cifar_batches_load_and_split(tmp_path):
    d = make_cifar(tmp_path)
    images, labels = load_cifar(tmp_path, "cifar10")  # the parent folder works as well as the batch folder
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (300,)
    data = build_search_data("cifar10", d, train_portion=0.5)
    assert len(data.train) == len(data.val) == 150 and data.layout == "cifar" and data.num_classes == 10
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10


def test_cifar_errors_name_the_file(tmp_path):
    with pytest.raises(SearchInputError, match="no such directory"):
        load_cifar(tmp_path / "nowhere", "cifar10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchInputError, match="missing data_batch_1"):
        load_cifar(tmp_path / "empty", "cifar10")
    d = make_cifar(tmp_path / "c")
    with open(d / "data_batch_3", "r+b") as fh:
        fh.truncate(2000)
    with pytest.raises(SearchInputError, match="data_batch_3: cannot read"):
        load_cifar(d, "cifar10")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_cifar_reader_refuses_arbitrary_pickles(tmp_path):
    d = make_cifar(tmp_path)
    with open(d / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": _Exploit(), b"labels": []}, fh)
    with pytest.raises(SearchInputError, match="refusing to load posix.system|refusing to load"):
        load_cifar(d, "cifar10")


def test_imagefolder_sampling_is_class_balanced_and_disjoint(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", classes=4, per_class=10)
    data = build_search_data("imagefolder", root, train_fraction=0.3, val_fraction=0.2, input_size=16)
    folder = data.train.dataset
    train_classes = [folder.targets[i] for i in data.train.indices]
    val_classes = [folder.targets[i] for i in data.val.indices]
    assert sorted(set(train_classes)) == sorted(set(val_classes)) == [0, 1, 2, 3]
    assert all(train_classes.count(c) == 3 for c in range(4)) and all(val_classes.count(c) == 2 for c in range(4))
    assert not set(data.train.indices) & set(data.val.indices)
    assert data.train[0][0].shape == (3, 16, 16) and data.layout == "imagenet"
    # the reference's class-disjoint split would fail the first assertion; check the helper directly too
    tr, va = balanced_split([0] * 10 + [1] * 10, 0.1, 0.1, seed=0)
    assert len(tr) == len(va) == 2 and {i // 10 for i in tr} == {i // 10 for i in va} == {0, 1}


def test_imagefolder_with_fewer_classes_than_requested(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", classes=2, per_class=4)
    with pytest.raises(SearchInputError, match="found 2 class folders, fewer than --num-classes 5"):
        build_search_data("imagefolder", root, num_classes=5)


# ----- distillation and regularization -------------------------------------------------------------------


def test_soft_target_kl_matches_a_hand_computed_value():
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, -2.0]])
    T = 2.0

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    expected = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p, q = softmax(t), softmax(s)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * T * T
    assert soft_target_kl(student, teacher, T).item() == pytest.approx(expected, rel=1e-5)
    assert distill_loss(student, student, "kl").item() == pytest.approx(0.0, abs=1e-7)
    # the feature variants
    assert distill_loss(student, teacher, "mse").item() == pytest.approx(((student - teacher) ** 2).mean().item())
    assert distill_loss(student[:1], 2 * student[:1], "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(student[:1], -student[:1], "cosine").item() == pytest.approx(2.0, abs=1e-6)
    assert distill_loss(teacher, teacher, "smooth_l1").item() == 0.0


def test_multi_level_distillation_sums_levels_with_fixed_weights():
    levels = MultiLevelDistillation(3, "kl", 2.0)
    s = [torch.randn(4, 5) for _ in range(3)]
    t = [torch.randn(4, 5) for _ in range(3)]
    per_level = [soft_target_kl(a, b).item() for a, b in zip(s, t)]
    assert levels(s, t).item() == pytest.approx(sum(per_level) / 3, rel=1e-5)
    assert list(levels.parameters()) == []  # nothing an optimizer could move towards one level
    weighted = MultiLevelDistillation(3, "kl", 2.0, weights=[0.0, 1.0, 3.0])
    assert weighted(s, t).item() == pytest.approx((per_level[1] + 3 * per_level[2]) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="expected 3 non-negative"):
        MultiLevelDistillation(3, weights=[1.0, -1.0, 1.0])


def test_regularization_schedule_decays_linearly_then_stays_off():
    assert default_decay_epochs(30) == 20
    values = [reg_coefficient(e, 5.0, 20) for e in range(30)]
    assert values[0] == 5.0 and values[10] == pytest.approx(2.5) and values[19] == pytest.approx(0.25)
    assert all(v == 0.0 for v in values[20:])
    assert all(a > b for a, b in zip(values[:20], values[1:21]))
    a = torch.zeros(1, NUM_EDGES, 8)
    a[0, :, SEARCH_OPS.index("skip_connect")] = -0.5
    a[0, :, SEARCH_OPS.index("sep_conv_3x3")] = 7.0  # not penalised
    assert l1_penalty([a, a], [SEARCH_OPS.index("skip_connect")]).item() == pytest.approx(2 * NUM_EDGES * 0.5)


# ----- search space ---------------------------------------------------------------------------------------


def test_mixed_op_is_the_weighted_sum_of_all_operations():
    torch.manual_seed(0)
    op = MixedOp(4, 1)
    x = torch.randn(2, 4, 6, 6)
    w = torch.softmax(torch.randn(8), 0)
    expected = sum(w[i] * m(x) for i, m in enumerate(op.ops))  # includes 'none' explicitly
    assert torch.allclose(op(x, w), expected, atol=1e-6)


def test_search_network_gives_alpha_gradients_and_stage_taps():
    torch.manual_seed(0)
    net = SearchNetwork(num_classes=5, width=4, cells=3)
    logits, feats = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5) and len(feats) == len(net.tap_cells) == 3
    logits.sum().backward()
    assert net.alpha_normal.grad.abs().sum() > 0 and net.alpha_reduce.grad.abs().sum() > 0
    assert net.alpha_normal.shape == (1, 14, 8)
    assert all(id(p) not in {id(a) for a in net.arch_parameters()} for p in net.weight_parameters())


def test_discretization_keeps_top2_edges_and_never_none():
    alpha = torch.zeros(NUM_EDGES, 8)
    none = SEARCH_OPS.index("none")
    alpha[:, none] = 10.0  # 'none' dominates every edge but must be ignored
    # node 2 (rows 0, 1): input 1 strongly sep_conv_5x5, input 0 weakly max_pool
    alpha[1, SEARCH_OPS.index("sep_conv_5x5")] = 5.0
    alpha[0, SEARCH_OPS.index("max_pool_3x3")] = 3.0
    # node 3 (rows 2, 3, 4): inputs 2 and 0 win
    alpha[4, SEARCH_OPS.index("dil_conv_3x3")] = 6.0
    alpha[2, SEARCH_OPS.index("skip_connect")] = 4.0
    cell = discretize_cell(alpha)
    assert cell.nodes[0] == (("sep_conv_5x5", 1), ("max_pool_3x3", 0))
    assert cell.nodes[1] == (("dil_conv_3x3", 2), ("skip_connect", 0))
    assert all(op != "none" for node in cell.nodes for op, _ in node)
    # edge weights beta re-rank the edges of a node
    beta = torch.zeros(NUM_EDGES)
    beta[2], beta[3] = -20.0, 20.0
    cell_b = discretize_cell(alpha, beta)
    assert {src for _, src in cell_b.nodes[1]} == {1, 2}  # rows 2, 3, 4 are inputs 0, 1, 2
    g = discretize(alpha[None], alpha[None])
    assert gt.loads(gt.dumps(g)) == g  # a valid, round-tripping genotype


def _cell_genotype(first_op: str, second_op: str) -> gt.CellGenotype:
    doc = gt.to_dict(gt.load("darts_v2"))
    node = [[first_op, 0], [second_op, 1]]
    doc["stages"][0]["normal"][0] = node
    doc.pop("network")
    return gt.from_dict(doc)


def test_weight_inheritance_survives_a_genotype_change_and_returns():
    torch.manual_seed(0)
    pool = EvalPool("cifar", width=4, cells=3, num_classes=5, seed=0)
    a = _cell_genotype("sep_conv_3x3", "dil_conv_5x5")
    b = _cell_genotype("avg_pool_3x3", "skip_connect")
    branch = pool.build(a, torch.device("cpu"), build_id=0)
    opt = pool.make_optimizer(torch.nn.Identity(), lr=0.1, momentum=0.9, weight_decay=0.0)
    # train one step so momentum exists, then stamp recognisable values on BOTH ops of node 2 of cell 0
    logits, levels = branch(torch.randn(2, 3, 16, 16))
    sum(l.sum() for l in levels).backward()
    opt.step()
    cell0 = branch.net.cells[0]
    k_first = cell0.edges.index((2, 0, "sep_conv_3x3"))
    k_second = cell0.edges.index((2, 1, "dil_conv_5x5"))
    with torch.no_grad():
        for k, v in ((k_first, 0.25), (k_second, -0.75)):
            for p in cell0.ops[k].parameters():
                p.fill_(v)
    pre_w = cell0.preprocess0[1].weight.detach().clone()
    momentum = opt.state[next(cell0.ops[k_first].parameters())]["momentum_buffer"].clone()

    pool.write_back(opt)
    branch_b = pool.build(b, torch.device("cpu"), build_id=1)
    opt_b = pool.make_optimizer(torch.nn.Identity(), lr=0.1, momentum=0.9, weight_decay=0.0)
    assert torch.equal(branch_b.net.cells[0].preprocess0[1].weight, pre_w)  # genotype-independent part carried
    assert (2, 0, "avg_pool_3x3") in branch_b.net.cells[0].edges
    pool.write_back(opt_b)

    branch_a = pool.build(a, torch.device("cpu"), build_id=2)
    opt_a = pool.make_optimizer(torch.nn.Identity(), lr=0.1, momentum=0.9, weight_decay=0.0)
    cell0 = branch_a.net.cells[0]
    for k, v in ((k_first, 0.25), (k_second, -0.75)):
        assert all(torch.all(p == v) for p in cell0.ops[k].parameters()), "an op lost its weights"
    first_param = next(cell0.ops[k_first].parameters())
    assert torch.equal(opt_a.state[first_param]["momentum_buffer"], momentum)
    assert pool.last_inherited == sum(len(c.edges) for c in branch_a.net.cells)
    assert edge_key(0, 2, 1, "dil_conv_5x5") in pool.ops


# ----- options -------------------------------------------------------------------------------------------


def test_option_precedence_defaults_preset_config_flags(tmp_path):
    import json

    from search.cli import build_parser, resolve_config

    cfg_file = tmp_path / "opts.json"
    cfg_file.write_text(json.dumps({"width": 10, "epochs": 5, "reg-ops": "skip_connect,max_pool_3x3"}))
    args = build_parser().parse_args(["--preset", "tiny", "--config", str(cfg_file), "--width", "6", "--out", "o"])
    cfg, explicit = resolve_config(args)
    assert cfg.width == 6 and cfg.epochs == 5 and cfg.batch_size == 8  # flag > config file > preset
    assert cfg.reg_ops == "skip_connect,max_pool_3x3" and cfg.distill_lambda == 4.0  # Table 1 default kept
    assert "width" in explicit and "distill_lambda" not in explicit
    cfg_file.write_text(json.dumps({"widht": 3}))
    with pytest.raises(SearchInputError, match="unknown option 'widht'"):
        resolve_config(build_parser().parse_args(["--config", str(cfg_file)]))
