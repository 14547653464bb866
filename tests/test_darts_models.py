"""The zoo's DARTS-space networks as registered timm models.

Expected shapes, channels and strides follow the DARTS evaluation-network definition
(written out here), never read back from the model under test.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import backbones  # noqa: F401  (registers the timm models)
from backbones.checkpoint_io import CheckpointError
from cdarts_deploy.genotype import load

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


def test_every_cell_zoo_model_is_registered():
    assert set(timm.list_models(module="darts_models")) == set(CELL_MODELS)


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


def test_local_checkpoint_is_read_safely_and_not_kept_in_the_config(tmp_path):
    torch.manual_seed(0)
    source = small("darts_v2_cifar")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    overlay = dict(file=str(path), num_classes=SMALL["num_classes"])
    loaded = small("darts_v2_cifar", pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(loaded.state_dict()["stem.0.weight"], source.state_dict()["stem.0.weight"])
    assert "state_dict" not in loaded.pretrained_cfg and loaded.pretrained_cfg["file"] == str(path)

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": source.state_dict(), "note": object()}, unsafe)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        small("darts_v2_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(unsafe)))
