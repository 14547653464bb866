"""DARTS-cell operations and evaluation networks as timm models.

Expected shapes, channels and strides are derived from implementation-notes
section 1 (written out here), never read back from the model under test.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import backbones  # noqa: F401  (registers the timm models)
from backbones.darts_net import DartsCell, DartsNet, stage_of_cell
from backbones.darts_ops import OPERATIONS, FactorizedReduce, Identity, Zero, drop_path
from cdarts_deploy.genotype import SEARCH_OPS, Cell, CellGenotype, CellStage, GenotypeError, load

CELL_MODELS = {
    # timm name: (zoo genotype, layout, classes of the full-size model)
    "cdarts_cifar": ("cdarts_cifar", "cifar", 10),
    "cdarts_imagenet": ("cdarts_imagenet", "imagenet", 1000),
    "pcdarts_cifar": ("pcdarts_cifar", "cifar", 10),
    "pcdarts_imagenet": ("pcdarts_imagenet", "imagenet", 1000),
    "darts_v1_cifar": ("darts_v1", "cifar", 10),
    "darts_v1_imagenet": ("darts_v1", "imagenet", 1000),
    "darts_v2_cifar": ("darts_v2", "cifar", 10),
    "darts_v2_imagenet": ("darts_v2", "imagenet", 1000),
    "pdarts_cifar": ("pdarts", "cifar", 10),
    "pdarts_imagenet": ("pdarts", "imagenet", 1000),
}
SMALL = dict(width=4, cells=5, num_classes=7)
SIZE = {"cifar": 16, "imagenet": 32}
C = SMALL["width"]


def small(name: str, **kwargs) -> nn.Module:
    return timm.create_model(name, **dict(SMALL, **kwargs))


def batch(layout: str, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIZE[layout], SIZE[layout])


# ----- operations -------------------------------------------------------------------------------


def test_operations_follow_search_vocabulary_order():
    assert tuple(OPERATIONS) == SEARCH_OPS


@pytest.mark.parametrize("name", SEARCH_OPS)
@pytest.mark.parametrize("stride", [1, 2])
def test_operation_shapes(name, stride):
    op = OPERATIONS[name](6, stride, True)
    y = op(torch.randn(2, 6, 10, 10))
    assert y.shape == (2, 6, 10 // stride, 10 // stride)


def test_operation_structure():
    sep = OPERATIONS["sep_conv_5x5"](4, 2, True)
    convs = [m for m in sep.modules() if isinstance(m, nn.Conv2d)]
    # two units of (depthwise KxK, pointwise 1x1); only the first depthwise conv strides
    assert [(c.kernel_size, c.stride, c.groups) for c in convs] == [
        ((5, 5), (2, 2), 4), ((1, 1), (1, 1), 1), ((5, 5), (1, 1), 4), ((1, 1), (1, 1), 1)
    ]
    dil = OPERATIONS["dil_conv_5x5"](4, 1, True)
    depthwise = [m for m in dil.modules() if isinstance(m, nn.Conv2d)][0]
    assert depthwise.dilation == (2, 2) and depthwise.padding == (4, 4)
    assert isinstance(OPERATIONS["skip_connect"](4, 1, True), Identity)
    assert isinstance(OPERATIONS["skip_connect"](4, 2, True), FactorizedReduce)
    for pool in ("max_pool_3x3", "avg_pool_3x3"):  # no BN after pools
        assert not any(isinstance(m, nn.BatchNorm2d) for m in OPERATIONS[pool](4, 2, True).modules())
    assert not OPERATIONS["sep_conv_3x3"](4, 1, False)[0][3].affine


def test_avg_pool_excludes_padding():
    y = OPERATIONS["avg_pool_3x3"](1, 1, True)(torch.ones(1, 1, 4, 4))
    assert torch.allclose(y, torch.ones_like(y))  # corners would be 4/9 if padding were counted


def test_none_is_zero_and_honours_stride():
    y = OPERATIONS["none"](3, 2, True)(torch.randn(1, 3, 8, 8))
    assert isinstance(OPERATIONS["none"](3, 1, True), Zero)
    assert y.shape == (1, 3, 4, 4) and not y.any()


def test_factorized_reduce_uses_shifted_pixels_and_odd_sizes():
    fr = FactorizedReduce(2, 4).eval()
    assert fr(torch.randn(1, 2, 7, 7)).shape == (1, 4, 4, 4)
    with torch.no_grad():
        fr.conv_1.weight.fill_(1.0)
        fr.conv_2.weight.fill_(1.0)
    x = torch.zeros(1, 2, 4, 4)
    x[:, :, 1, 1] = 1.0  # odd pixel: only the branch shifted by one pixel samples it
    with torch.no_grad():
        y = fr(x)  # fresh BN in eval is (nearly) the identity
    assert y[:, :2].abs().sum() == 0 and y[:, 2:].abs().sum() > 0


def test_drop_path_training_only_and_whole_samples():
    x = torch.ones(64, 3, 4, 4)
    assert drop_path(x, 0.5, training=False) is x
    torch.manual_seed(0)
    y = drop_path(x, 0.5, training=True)
    per_sample = y.flatten(1)
    # each sample is either dropped entirely or kept and scaled by 1 / keep
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


# ----- networks ---------------------------------------------------------------------------------


def test_every_cell_zoo_model_is_registered():
    assert set(CELL_MODELS) <= set(timm.list_models("*darts*"))


@pytest.mark.parametrize("name", sorted(CELL_MODELS))
def test_forward_backward_small(name):
    layout = CELL_MODELS[name][1]
    torch.manual_seed(0)
    model = small(name, drop_path_rate=0.2, auxiliary=True)
    model.train()
    logits, aux = model(batch(layout))
    assert logits.shape == (2, SMALL["num_classes"]) and aux.shape == (2, SMALL["num_classes"])
    (logits.sum() + 0.4 * aux.sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.eval()
    assert model(batch(layout)).shape == (2, SMALL["num_classes"])


@pytest.mark.parametrize("name", sorted(CELL_MODELS))
def test_registered_model_uses_zoo_genotype_and_hints(name):
    zoo, layout, classes = CELL_MODELS[name]
    model = small(name)
    assert model.genotype == load(zoo)
    assert model.layout == layout
    cfg = model.pretrained_cfg
    assert cfg["num_classes"] == classes
    assert cfg["input_size"] == ((3, 32, 32) if layout == "cifar" else (3, 224, 224))


def test_layouts_channels_and_reductions():
    c = 4
    cifar = DartsNet(load("darts_v2"), layout="cifar", width=c, cells=8, num_classes=3)
    # reductions at 8 // 3 = 2 and 2 * 8 // 3 = 5; channels double at each
    assert [cell.reduction for cell in cifar.cells] == [False, False, True, False, False, True, False, False]
    assert [cell.channels for cell in cifar.cells] == [c, c, 2 * c, 2 * c, 2 * c, 4 * c, 4 * c, 4 * c]
    assert cifar.stem[0].out_channels == 3 * c
    assert cifar.num_features == 16 * c
    # a cell after a reduction cell reduces its input 0 with FactorizedReduce
    assert [isinstance(cell.preprocess0, FactorizedReduce) for cell in cifar.cells] == [
        False, False, False, True, False, False, True, False
    ]
    imagenet = DartsNet(load("darts_v2"), layout="imagenet", width=c, cells=8, num_classes=3)
    assert isinstance(imagenet.cells[0].preprocess0, FactorizedReduce)  # fed by stem0 at 1/4
    assert imagenet.stem0[0].out_channels == c // 2 and imagenet.stem1[1].stride == (2, 2)
    assert imagenet.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 16 * c, 2, 2)
    assert cifar.forward_features(torch.randn(1, 3, 16, 16)).shape == (1, 16 * c, 4, 4)


def test_stage_split():
    assert [sum(stage_of_cell(i, 20) == s for i in range(20)) for s in range(3)] == [7, 7, 6]
    assert [sum(stage_of_cell(i, 14) == s for i in range(14)) for s in range(3)] == [5, 5, 4]


def _uniform_cell(op: str) -> Cell:
    return Cell(nodes=(((op, 0), (op, 1)), ((op, 1), (op, 2)), ((op, 0), (op, 3)), ((op, 2), (op, 4))), concat=(2, 3, 4, 5))


def test_different_cell_per_stage():
    ops = ("sep_conv_3x3", "dil_conv_5x5", "avg_pool_3x3")
    reduce_ops = ("max_pool_3x3", "sep_conv_5x5", "dil_conv_3x3")
    g = CellGenotype(
        stages=tuple(CellStage(normal=_uniform_cell(n), reduce=_uniform_cell(r)) for n, r in zip(ops, reduce_ops))
    )
    model = DartsNet(g, layout="cifar", width=4, cells=8, num_classes=3)
    # stage 0 = cells 0..2 (cell 2 reduces), stage 1 = cells 3..5 (cell 5 reduces), stage 2 = cells 6..7
    expected = ["sep_conv_3x3", "sep_conv_3x3", "max_pool_3x3", "dil_conv_5x5", "dil_conv_5x5", "sep_conv_5x5",
                "avg_pool_3x3", "avg_pool_3x3"]
    assert [{op for _, _, op in cell.edges} for cell in model.cells] == [{e} for e in expected]
    model(torch.randn(2, 3, 8, 8)).sum().backward()

    two_stages = CellGenotype(stages=g.stages[:2])
    with pytest.raises(GenotypeError, match="2 stages"):
        DartsNet(two_stages, width=4, cells=8)


def test_cell_edges_address_ops():
    cell_def = load("cdarts_cifar").stages[0].reduce
    cell = DartsCell(cell_def, 24, 24, 8, reduction=True, reduction_prev=False)
    expected = [(i + 2, src, op) for i, node in enumerate(cell_def.nodes) for op, src in node]
    assert cell.edges == expected
    for (node, src, op_name), op in zip(cell.edges, cell.ops):
        stride = 2 if src < 2 else 1
        # same structure as a fresh operation, so search code can copy state_dicts in and out
        fresh = OPERATIONS[op_name](8, stride, True)
        assert type(op) is type(fresh)
        assert {k: v.shape for k, v in op.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
        op.load_state_dict(fresh.state_dict())
    assert cell(torch.randn(1, 24, 8, 8), torch.randn(1, 24, 8, 8)).shape == (1, 32, 4, 4)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    model = small("darts_v2_cifar", drop_path_rate=0.5)
    x = batch("cifar", 4)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
    assert not torch.allclose(a, b)  # random paths dropped
    model.eval()
    with torch.no_grad():
        e1, e2 = model(x), model(x)
        model.set_drop_path(0.0)
        e3 = model(x)
    assert torch.equal(e1, e2) and torch.allclose(e1, e3)


def test_identity_edges_are_never_dropped():
    skip = Cell(nodes=((("skip_connect", 0), ("skip_connect", 1)),), concat=(2,))
    cell = DartsCell(skip, 4, 4, 4, reduction=False, reduction_prev=False).train()
    cell.drop_prob = 0.9
    s0, s1 = torch.randn(8, 4, 5, 5), torch.randn(8, 4, 5, 5)
    torch.manual_seed(0)
    dropped = cell(s0, s1)
    cell.drop_prob = 0.0
    assert torch.allclose(dropped, cell(s0, s1))


def test_auxiliary_head_only_in_training():
    model = small("cdarts_cifar", auxiliary=True)
    x = batch("cifar")
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, SMALL["num_classes"])
    assert isinstance(small("cdarts_cifar").train()(x), torch.Tensor)  # no aux head unless asked for


# ----- timm conventions -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["darts_v2_cifar", "cdarts_imagenet"])
def test_default_cfg_and_named_modules(name):
    model = small(name)
    cfg = model.pretrained_cfg
    for key in ("input_size", "mean", "std", "num_classes", "first_conv", "classifier", "pool_size", "crop_pct",
                "interpolation"):
        assert key in cfg
    modules = dict(model.named_modules())
    first = modules[cfg["first_conv"]]
    assert isinstance(first, nn.Conv2d) and first.in_channels == 3
    classifier = modules[cfg["classifier"]]
    assert isinstance(classifier, nn.Linear) and classifier is model.get_classifier()
    assert classifier.out_features == SMALL["num_classes"]


@pytest.mark.parametrize("name", ["darts_v2_cifar", "pcdarts_imagenet"])
def test_reset_classifier_and_pre_logits(name):
    layout = CELL_MODELS[name][1]
    model = small(name).eval()
    x = batch(layout)
    with torch.no_grad():
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        final, intermediates = model.forward_intermediates(x)
        assert torch.allclose(final, features)
        assert len(intermediates) == len(model.feature_info)
        model.reset_classifier(0)
        assert torch.allclose(model(x), pre)
        assert pre.shape == (2, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize(
    "name,channels,reductions",
    [
        # CIFAR: last cell before each reduction and the last cell: 4C, 8C, 16C at 1, 2, 4
        ("cdarts_cifar", [4 * C, 8 * C, 16 * C], [1, 2, 4]),
        # ImageNet: stem0 (C at 1/4) and the same cells: 4C, 8C, 16C at 8, 16, 32
        ("darts_v2_imagenet", [C, 4 * C, 8 * C, 16 * C], [4, 8, 16, 32]),
    ],
)
@pytest.mark.parametrize("feature_cls", [None, "hook"])
def test_features_only(name, channels, reductions, feature_cls):
    layout = CELL_MODELS[name][1]
    extra = {} if feature_cls is None else dict(feature_cls=feature_cls)
    torch.manual_seed(0)
    model = small(name, features_only=True, **extra).eval()
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    x = batch(layout)
    with torch.no_grad():
        feats = model(x)
    assert [f.shape[1] for f in feats] == channels
    assert [SIZE[layout] // f.shape[-1] for f in feats] == reductions

    subset = small(name, features_only=True, out_indices=(1, 2), **extra).eval()
    assert subset.feature_info.channels() == channels[1:3]
    with torch.no_grad():
        assert [f.shape[1] for f in subset(x)] == channels[1:3]


def test_hook_and_getter_features_agree():
    outs = []
    for extra in ({}, dict(feature_cls="hook")):
        torch.manual_seed(0)
        model = small("darts_v2_imagenet", features_only=True, **extra).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            outs.append(model(batch("imagenet")))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)


def test_local_checkpoint_via_pretrained_cfg_overlay(tmp_path):
    torch.manual_seed(0)
    source = small("cdarts_cifar")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    fresh = small("cdarts_cifar")
    torch.manual_seed(1)
    # the overlay also says the checkpoint has 7 classes, else timm drops its classifier as for any model
    overlay = dict(file=str(path), num_classes=SMALL["num_classes"])
    loaded = small("cdarts_cifar", pretrained=True, pretrained_cfg_overlay=overlay)
    key = "cells.0.ops.0.0.1.weight"
    assert not torch.equal(fresh.state_dict()[key], source.state_dict()[key])
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    feats = small("cdarts_cifar", features_only=True, pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(feats.state_dict()["model.stem.0.weight"], source.state_dict()["stem.0.weight"])


def test_pretrained_without_weights_is_refused():
    with pytest.raises(ValueError, match="no published weights"):
        small("cdarts_cifar", pretrained=True)


def test_eval_mode_exports_without_training_nodes():
    model = small("darts_v2_imagenet", drop_path_rate=0.3, auxiliary=True).eval()
    program = torch.export.export(model, (batch("imagenet"),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not [t for t in targets if "bernoulli" in t or "rand" in t]  # no drop path
    assert sum("linear" in t or "addmm" in t for t in targets) == 1  # the classifier; no auxiliary head
