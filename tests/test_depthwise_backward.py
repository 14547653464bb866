"""The depthwise convolution with the rewritten CPU backward gives autograd's gradients of conv2d(groups=C).

The reference is always autograd through ``torch.nn.functional.conv2d``; the rewrite must match it to
float32 rounding for every stride, dilation, padding, kernel size, odd and even size and memory format.
"""

from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.darts_ops import OPERATIONS, DilConv
from backbones.depthwise_conv import DepthwiseConv2d, depthwise_conv2d, depthwise_conv2d_backward

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TOLERANCE = 1e-4  # max abs error relative to the reference's max magnitude
Backward = Callable[..., tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]


def autograd_grads(x, w, go, stride, padding, dilation):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    F.conv2d(x, w, None, stride, padding, dilation, w.shape[0]).backward(go)
    return x.grad, w.grad


def assert_grads_match(backward: Backward, n: int, c: int, h: int, w: int, k: int, stride: int, padding: int,
                       dilation: int, channels_last: bool, seed: int = 0) -> None:
    """``backward(x, weight, grad_out, stride, padding, dilation)`` equals autograd's gradients of the conv."""
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w, generator=g).to(memory_format=fmt)
    weight = torch.randn(c, 1, k, k, generator=g)
    out = F.conv2d(x, weight, None, stride, padding, dilation, c)
    go = torch.randn(out.shape, generator=g).to(memory_format=fmt)
    expected = autograd_grads(x, weight, go, stride, padding, dilation)
    got = backward(x, weight, go, (stride, stride), (padding, padding), (dilation, dilation))
    for name, a, b in zip(("input", "weight"), got, expected):
        assert a is not None and a.shape == b.shape, f"grad {name}: shape {None if a is None else a.shape}"
        err = float((a - b).abs().max() / b.abs().max())
        assert err < TOLERANCE, f"grad {name}: relative error {err:.2e}"


# (C, H, W, k, stride, padding, dilation): the DARTS operations at search sizes, then the edges of the rewrite
SHAPES = [
    (16, 32, 32, 3, 1, 1, 1),  # sep_conv_3x3
    (16, 32, 32, 5, 1, 2, 1),  # sep_conv_5x5
    (16, 32, 32, 3, 1, 2, 2),  # dil_conv_3x3
    (16, 32, 32, 5, 1, 4, 2),  # dil_conv_5x5
    (32, 16, 16, 5, 2, 2, 1),  # reduction sep_conv_5x5
    (32, 16, 16, 3, 2, 2, 2),  # reduction dil_conv_3x3
    (32, 16, 16, 5, 2, 4, 2),  # reduction dil_conv_5x5
    (64, 8, 8, 5, 1, 4, 2),    # dilated kernel taller than the map
    (8, 9, 9, 5, 1, 4, 2),     # odd size: not divisible by the dilation
    (8, 9, 9, 5, 2, 2, 1),     # odd size at stride 2
    (8, 12, 10, 5, 1, 4, 2),   # height != width
    (8, 10, 10, 5, 1, 0, 1),   # no padding
    (8, 10, 10, 3, 1, 3, 1),   # padding beyond the kernel's reach
    (8, 12, 12, 7, 1, 3, 1),   # 7 wide: three column slices
    (8, 12, 12, 3, 3, 3, 3),   # stride = dilation = 3
    (8, 12, 12, 3, 3, 1, 2),   # stride 3, dilation 2: torch's own backward
    (4, 6, 6, 1, 1, 0, 1),     # 1x1
    (8, 2, 2, 7, 1, 3, 1),     # 7x7 on 2x2 (the chain space's last stage at small inputs): a slice reads padding only
    (8, 1, 1, 7, 1, 3, 1),     # 7x7 on 1x1
    (8, 3, 3, 7, 2, 3, 1),     # 7x7 at stride 2 on 3x3
]


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "C{}_{}x{}_k{}_s{}_p{}_d{}".format(*s))
def test_backward_equals_autograd(shape, channels_last):
    c, h, w, k, s, p, d = shape
    assert_grads_match(depthwise_conv2d_backward, 3, c, h, w, k, s, p, d, channels_last)


@pytest.mark.parametrize("need_x, need_w", [(True, False), (False, True)])
def test_backward_of_one_gradient(need_x, need_w):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 16, 16, generator=g).to(memory_format=torch.channels_last)
    w = torch.randn(8, 1, 5, 5, generator=g)
    go = torch.randn(2, 8, 16, 16, generator=g).to(memory_format=torch.channels_last)
    expected = autograd_grads(x, w, go, 1, 4, 2)
    got = depthwise_conv2d_backward(x, w, go, (1, 1), (4, 4), (2, 2), need_x, need_w)
    for needed, a, b in zip((need_x, need_w), got, expected):
        if needed:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        else:
            assert a is None


def test_comparison_catches_a_wrong_gradient():
    """A backward with one plausible mistake (the kernel transposed in the weight gradient) fails the check."""

    def transposed_weight_grad(x, w, go, stride, padding, dilation):
        gx, gw = depthwise_conv2d_backward(x, w, go, stride, padding, dilation)
        return gx, gw.transpose(2, 3)

    def unflipped_input_grad(x, w, go, stride, padding, dilation):  # correlation instead of convolution
        return F.conv2d(go, w, None, 1, padding[0], dilation[0], w.shape[0]), autograd_grads(
            x, w, go, stride, padding, dilation)[1]

    for wrong in (transposed_weight_grad, unflipped_input_grad):
        with pytest.raises(AssertionError, match="relative error"):
            assert_grads_match(wrong, 2, 8, 12, 12, 5, 1, 2, 1, True)
    assert_grads_match(depthwise_conv2d_backward, 2, 8, 12, 12, 5, 1, 2, 1, True)  # the right one passes


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
@pytest.mark.parametrize("k, stride, dilation", [(3, 1, 1), (5, 2, 1), (5, 1, 2), (3, 2, 2)])
def test_module_matches_nn_conv2d(k, stride, dilation, channels_last):
    """Forward, gradients of input and weight, and state_dict keys equal those of nn.Conv2d(groups=C)."""
    torch.manual_seed(0)
    padding = dilation * (k - 1) // 2
    ours = DepthwiseConv2d(6, k, stride=stride, padding=padding, dilation=dilation)
    plain = nn.Conv2d(6, 6, k, stride=stride, padding=padding, dilation=dilation, groups=6, bias=False)
    assert list(ours.state_dict()) == list(plain.state_dict()) == ["weight"]
    plain.load_state_dict(ours.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, 12, 12).to(memory_format=fmt)
    outs, grads = [], []
    for conv in (ours, plain):
        xi = x.clone().requires_grad_()
        y = conv.train()(xi)
        y.square().sum().backward()
        outs.append(y)
        grads.append((xi.grad, conv.weight.grad))
    assert type(outs[0].grad_fn).__name__ == "_DepthwiseConv2dFunctionBackward"
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_module_is_a_plain_conv_outside_training():
    conv = DepthwiseConv2d(4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert type(conv.eval()(x).grad_fn).__name__ == "ConvolutionBackward0"
    with torch.no_grad():
        assert conv.train()(x).grad_fn is None
    frozen = torch.randn(1, 4, 8, 8)  # nothing needs a gradient: no custom node either
    conv.weight.requires_grad_(False)
    assert conv(frozen).grad_fn is None
    strided = DepthwiseConv2d(4, 3, stride=2, padding=1).train()  # torch's own backward is the fast one here
    assert type(strided(x).grad_fn).__name__ == "ConvolutionBackward0"


def test_module_scripts_traces_and_fx_traces():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(4, 5, padding=4, dilation=2)
    x = torch.randn(1, 4, 12, 12)
    expected = F.conv2d(x, conv.weight, None, 1, 4, 2, 4)
    for mode in (True, False):
        conv.train(mode)
        scripted = torch.jit.script(conv)
        traced = torch.jit.trace(conv, x)
        assert "PythonOp" not in str(traced.graph)  # the custom Function never reaches a traced graph
        graph = torch.fx.symbolic_trace(conv)
        for run in (scripted, traced, graph):
            assert torch.allclose(run(x), expected, atol=1e-5)
    graph = torch.fx.symbolic_trace(conv.train())
    assert any(node.target is depthwise_conv2d for node in graph.graph.nodes)  # one node, not the Function's inside


def test_darts_ops_are_plain_conv2d_until_an_entry_point_opts_in():
    """A DARTS model is plain torch: a user's own training loop never runs the rewritten backward unasked."""
    dil = OPERATIONS["dil_conv_5x5"](4, 1, True)
    assert isinstance(dil, DilConv) and type(dil[1]) is nn.Conv2d and dil[1].groups == 4
    keys = list(dil.state_dict())
    sep = OPERATIONS["sep_conv_3x3"](4, 2, True)
    assert not any(isinstance(m, DepthwiseConv2d) for m in sep.modules())
    from backbones.depthwise_conv import use_faster_depthwise_backward

    assert use_faster_depthwise_backward(sep) == 2 and use_faster_depthwise_backward(dil) == 1
    depthwise = [m for m in sep.modules() if isinstance(m, DepthwiseConv2d)]
    assert [(m.kernel_size, m.stride, m.groups) for m in depthwise] == [((3, 3), (2, 2), 4), ((3, 3), (1, 1), 4)]
    assert list(dil.state_dict()) == keys  # checkpoints load either way


def test_cpu_autocast_training_step_through_the_faster_backward():
    """bf16 autocast on CPU: the opted-in module falls back to torch's own backward instead of failing
    on the bf16 output gradient against the fp32 saved input."""
    from backbones.depthwise_conv import use_faster_depthwise_backward

    torch.manual_seed(0)
    net = nn.Sequential(OPERATIONS["dil_conv_5x5"](4, 1, True), OPERATIONS["sep_conv_5x5"](4, 1, True)).train()
    assert use_faster_depthwise_backward(net) == 3
    x = torch.randn(2, 4, 12, 12).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    y.float().square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_training_entry_points_opt_in_on_cpu():
    """The search network, its evaluation branch and the cdarts-train model take the faster backward on
    CPU; a model built directly does not."""
    from backbones.factory import create_model_from_genotype
    from search.cell_space import CellSpace
    from search.config import SearchConfig

    cfg = SearchConfig(width=4, cells=3, eval_width=4, eval_cells=3, head_mid=8, head_embed=8)
    space = CellSpace(cfg, num_classes=3, layout="cifar", input_size=16, device=torch.device("cpu"))
    assert any(isinstance(m, DepthwiseConv2d) for m in space.search_net.modules())
    branch = space.build_eval(space.derive(), build_id=0)
    assert any(isinstance(m, DepthwiseConv2d) for m in branch.modules())
    plain = create_model_from_genotype("darts_v2", width=4, cells=3, num_classes=3)
    assert not any(isinstance(m, DepthwiseConv2d) for m in plain.modules())


def test_gradcheck_in_double():
    """The autograd Function's backward is the derivative of its forward (finite differences, float64)."""
    from backbones.depthwise_conv import _DepthwiseConv2dFunction

    torch.manual_seed(0)
    for k, s, p, d in [(5, 1, 2, 1), (3, 1, 2, 2), (5, 2, 4, 2)]:
        x = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, 1, k, k, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: _DepthwiseConv2dFunction.apply(a, b, (s, s), (p, p), (d, d)),
                                        (x, w))


def test_timm_chain_model_takes_the_faster_backward_with_unchanged_weights_and_results():
    """Every depthwise conv of a timm-built chain network is turned, sharing its Parameter; same outputs and
    gradients as the untouched network; other convolutions are left alone."""
    from backbones.chain_net import create_chain_model
    from backbones.depthwise_conv import use_faster_depthwise_backward
    from cdarts_deploy.genotype import TINY_BASE, ChainGenotype

    torch.manual_seed(0)
    genotype = ChainGenotype.from_arch_strings(TINY_BASE, name="tiny")
    plain = create_chain_model(genotype, num_classes=4).train()
    fast = create_chain_model(genotype, num_classes=4).train()
    fast.load_state_dict(plain.state_dict())
    weights = {n: p for n, p in fast.named_parameters()}
    depthwise = [n for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1
                 and m.groups == m.in_channels == m.out_channels]
    assert use_faster_depthwise_backward(fast) == len(depthwise) > 0
    assert all(isinstance(fast.get_submodule(n), DepthwiseConv2d) for n in depthwise)
    assert all(p is weights[n] for n, p in fast.named_parameters())  # the same Parameters, same names
    others = [m for n, m in fast.named_modules() if type(m) is nn.Conv2d]
    assert others and not any(isinstance(m, DepthwiseConv2d) for m in others)
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for net in (plain, fast):
        xi = x.clone().requires_grad_()
        y = net(xi)
        y.square().sum().backward()
        outputs.append((y, xi.grad, {n: p.grad for n, p in net.named_parameters()}))
    (y0, gx0, g0), (y1, gx1, g1) = outputs
    assert torch.allclose(y0, y1, atol=1e-5) and torch.allclose(gx0, gx1, rtol=1e-4, atol=1e-5)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], rtol=1e-3, atol=1e-5), n


def test_only_plain_depthwise_convs_are_turned():
    from timm.layers import create_conv2d

    from backbones.depthwise_conv import use_faster_depthwise_backward

    keep = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=True),      # has a bias
        nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False),     # grouped, not depthwise
        nn.Conv2d(4, 4, (3, 5), padding=(1, 2), groups=4, bias=False),  # not square
        create_conv2d(4, 4, 3, stride=2, padding="same", depthwise=True),  # timm's dynamic same padding
    )
    assert use_faster_depthwise_backward(keep) == 0
    assert not any(isinstance(m, DepthwiseConv2d) for m in keep.modules())
    turn = nn.Sequential(nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False))
    assert use_faster_depthwise_backward(turn) == 1 and isinstance(turn[0], DepthwiseConv2d)


def test_chain_supernet_gradients_equal_those_of_plain_conv2d(monkeypatch):
    """The mixed block's sliced depthwise kernels take the faster backward; every gradient is unchanged."""
    import search.chain_supernet as cs

    torch.manual_seed(0)
    block = cs.MixedInvertedResidual(8, 8, 1, 0.25).train()
    x = torch.randn(2, 8, 10, 10).to(memory_format=torch.channels_last)
    weights = torch.softmax(torch.randn(6), 0)
    calls = []
    monkeypatch.setattr(cs, "depthwise_conv2d", lambda *a: calls.append(a[1].shape) or depthwise_conv2d(*a))

    def grads():
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = block(xi, weights)
        y.square().sum().backward()
        return y, xi.grad, {n: p.grad.clone() for n, p in block.named_parameters()}

    fast = grads()
    assert sorted(shape[-1] for shape in calls) == [3, 3, 5, 5, 7, 7]  # every candidate took it
    monkeypatch.setattr(cs, "takes_faster_backward", lambda *a: False)
    plain = grads()
    assert len(calls) == 6  # and the reference did not
    assert torch.equal(fast[0], plain[0]) and torch.allclose(fast[1], plain[1], rtol=1e-4, atol=1e-5)
    for n in plain[2]:
        assert torch.allclose(fast[2][n], plain[2][n], rtol=1e-3, atol=1e-5), n
