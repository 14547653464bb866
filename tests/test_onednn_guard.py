"""The strided 1x1 weight-gradient guard: the decision by oneDNN's ISA, and that the rerouted conv is the same conv."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import onednn_guard
from backbones.darts_ops import FactorizedReduce
from backbones.onednn_guard import (
    OVERRIDE_ENV,
    StridedPointwiseConv2d,
    onednn_channel_block,
    strided_1x1_weight_grad_unsafe,
)

NATIVE_BLOCK = 16 if "512" in torch.backends.cpu.get_cpu_capability() else 8


@pytest.fixture
def env(monkeypatch):
    """A clean ISA environment; the cached block is recomputed for each test and after it."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", OVERRIDE_ENV):
        monkeypatch.delenv(name, raising=False)
    onednn_channel_block.cache_clear()
    yield monkeypatch
    onednn_channel_block.cache_clear()


@pytest.mark.parametrize("cap, aten, block", [
    (None, None, NATIVE_BLOCK),          # no overrides: oneDNN follows the hardware, as ATen does
    ("AVX2", None, 8),
    ("avx2", "avx2", 8),                 # the forced-AVX2 pair the tests use
    ("AVX2_VNNI", None, 8),
    ("AVX512_CORE", None, NATIVE_BLOCK),  # a cap never raises the ISA above the hardware's
    ("AVX10_1_512_AMX", None, NATIVE_BLOCK),
    ("ALL", None, NATIVE_BLOCK),
    (None, "avx2", 16),                  # ATen lowered alone says nothing about oneDNN: the larger block
])
def test_channel_block_follows_onednn_isa(env, cap, aten, block):
    if cap:
        env.setenv("ONEDNN_MAX_CPU_ISA", cap)
    if aten:
        env.setenv("ATEN_CPU_CAPABILITY", aten)
    assert onednn_channel_block() == block


def test_old_isa_variable_name_is_read(env):
    env.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert onednn_channel_block() == 8


def test_unsafe_below_the_block_at_stride_above_one(env):
    env.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert [strided_1x1_weight_grad_unsafe(c, 2) for c in (1, 4, 7, 8, 16)] == [True, True, True, False, False]
    assert strided_1x1_weight_grad_unsafe(4, 3)
    assert not strided_1x1_weight_grad_unsafe(4, 1)  # no reduce-to-unit-stride copy at stride 1
    with torch.backends.mkldnn.flags(enabled=False):
        assert not strided_1x1_weight_grad_unsafe(4, 2)  # not oneDNN's kernel then


def test_override(env):
    env.setenv(OVERRIDE_ENV, "off")
    env.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not strided_1x1_weight_grad_unsafe(4, 2)
    env.setenv(OVERRIDE_ENV, "on")
    assert strided_1x1_weight_grad_unsafe(64, 2) and not strided_1x1_weight_grad_unsafe(64, 1)


@pytest.mark.parametrize("side", [7, 8, 9])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "contiguous"])
def test_rerouted_conv_equals_strided_conv(env, side, channels_last):
    """Subsample-then-stride-1 gives the strided conv's output and gradients (reference: NCHW, oneDNN off)."""
    env.setenv(OVERRIDE_ENV, "on")
    torch.manual_seed(0)
    conv = StridedPointwiseConv2d(4, 6, stride=2).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 4, side, side + 1).to(memory_format=fmt).requires_grad_()
    calls = []
    conv.register_forward_hook(lambda *_: calls.append(1))  # hooks still fire on the rerouted path
    y = conv(x)
    go = torch.randn_like(y)
    y.backward(go)
    assert calls == [1]
    ref_x = x.detach().contiguous().requires_grad_()
    ref_w = conv.weight.detach().contiguous().requires_grad_()
    with torch.backends.mkldnn.flags(enabled=False):
        ref = nn.functional.conv2d(ref_x, ref_w, None, 2)
        ref.backward(go.contiguous())
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.weight.grad, ref_w.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-5, rtol=1e-5)


def test_factorized_reduce_keeps_its_state_dict_and_traces_in_training(env):
    env.setenv(OVERRIDE_ENV, "on")
    fr = FactorizedReduce(2, 4)
    assert isinstance(fr.conv_1, nn.Conv2d) and set(fr.state_dict()) >= {"conv_1.weight", "conv_2.weight"}
    graph = torch.fx.symbolic_trace(fr)  # training mode: the rerouting function is one node
    assert any(n.target is onednn_guard.strided_pointwise_conv for n in graph.graph.nodes)
    x = torch.randn(2, 2, 9, 9)
    torch.manual_seed(0)
    a = graph(x)
    torch.manual_seed(0)
    assert torch.allclose(a, fr(x), atol=1e-6)
    scripted = torch.jit.script(fr.eval())  # TorchScript compiles the plain conv
    with torch.no_grad():
        assert torch.allclose(scripted(x), fr(x), atol=1e-6)
