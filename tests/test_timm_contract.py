"""The timm model contract for both network families: TorchScript, torch.fx, features, head API, config.

These are the properties timm's own model test suite checks (scripting, symbolic tracing forward and
backward, feature extraction, classifier reset), on a tiny cell network and on a chain network.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import set_layer_config
from timm.models._features_fx import create_feature_extractor, get_graph_node_names
from torch import nn

import backbones  # noqa: F401  (registers the timm models)

TINY_CELL = dict(width=4, cells=5, num_classes=5)
#: (timm name, extra kwargs, input side)
MODELS = {
    "cell_cifar": ("darts_v2_cifar", TINY_CELL, 33),  # odd: FactorizedReduce sees odd maps
    "cell_imagenet": ("cdarts_imagenet", TINY_CELL, 70),
    "chain": ("cdarts_a", dict(num_classes=5), 64),
}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def build(key: str, scriptable: bool = False, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    name, extra, size = MODELS[key]
    torch.manual_seed(0)
    with set_layer_config(scriptable=scriptable):
        model = timm.create_model(name, **dict(extra, **kwargs))
    return model, torch.randn(2, 3, size, size)


def traced(model: nn.Module) -> nn.Module:
    """The model as a torch.fx graph (timm's tracer: its leaf modules and wrapped functions) returning its output."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    last = (train_nodes if model.training else eval_nodes)[-1]
    return create_feature_extractor(model, [last])


@pytest.mark.parametrize("key", sorted(MODELS))
def test_torchscript_matches_eager(key):
    model, x = build(key, scriptable=True)
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_torchscript_training_forward_with_auxiliary_head():
    model, x = build("cell_cifar", scriptable=True, auxiliary=True)
    scripted = torch.jit.script(model.train())
    logits, aux = scripted(x)
    assert logits.shape == aux.shape == (2, TINY_CELL["num_classes"])


@pytest.mark.parametrize("key", sorted(MODELS))
def test_fx_forward_matches_eager(key):
    model, x = build(key)
    model.eval()
    graph = traced(model)
    with torch.no_grad():
        (out,) = graph(x).values()
        assert torch.equal(out, model(x))


@pytest.mark.parametrize("key", ["cell_cifar", "cell_imagenet"])
def test_fx_graph_scripts(key):
    model, x = build(key, scriptable=True)
    model.eval()
    scripted = torch.jit.script(traced(model))
    with torch.no_grad():
        (out,) = scripted(x).values()
        assert torch.allclose(out, model(x), atol=1e-5)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_fx_backward_matches_eager(key):
    model, x = build(key)
    model.train()
    graph = traced(model)  # shares the model's parameters
    torch.manual_seed(1)
    model(x).square().mean().backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    (out,) = graph(x).values()
    out.square().mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.allclose(p.grad, eager[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("key", ["cell_cifar", "cell_imagenet"])
def test_fx_features_match_getter_features(key):
    name, extra, size = MODELS[key]
    extra = {k: v for k, v in extra.items() if k != "num_classes"}
    outs = []
    for feature_cls in ("getter", "fx"):
        torch.manual_seed(0)
        model = timm.create_model(name, features_only=True, out_indices=(0, 2), feature_cls=feature_cls, **extra)
        with torch.no_grad():
            outs.append(model.eval()(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))))
    assert [f.shape for f in outs[0]] == [f.shape for f in outs[1]]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_features_only_with_out_indices(key):
    model, x = build(key, features_only=True, out_indices=(1, 2))
    model.eval()
    with torch.no_grad():
        feats = model(x)
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    reductions = model.feature_info.reduction()
    assert reductions == sorted(reductions) and len(feats) == 2
    for f, r in zip(feats, reductions):
        assert f.shape[-1] == -(-x.shape[-1] // r)  # ceil: every stride-2 step rounds up


@pytest.mark.parametrize("key", sorted(MODELS))
def test_forward_features_head_and_reset_classifier(key):
    model, x = build(key)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features), logits, atol=1e-6)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.num_features if key != "chain" else model.head_hidden_size)
        model.reset_classifier(0)
        assert torch.allclose(model(x), pre, atol=1e-6)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
    assert model.get_classifier().out_features == 3


@pytest.mark.parametrize("key", sorted(MODELS))
def test_pretrained_cfg_names_real_modules(key):
    model, _ = build(key)
    cfg = model.pretrained_cfg
    for k in ("url", "num_classes", "input_size", "pool_size", "crop_pct", "interpolation", "mean", "std",
              "first_conv", "classifier", "architecture"):
        assert k in cfg, k
    assert cfg["architecture"] == MODELS[key][0]
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], nn.Conv2d)
    assert modules[cfg["classifier"]] is model.get_classifier()
    assert len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0] == 3
