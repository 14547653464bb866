"""Operations of the DARTS cell search space.

Expected shapes and structure follow the DARTS operation definitions (written out here), never read
back from the code under test.
"""

import pytest
import torch
from torch import nn

from backbones.darts_ops import OPERATIONS, FactorizedReduce, Identity, Zero, drop_path
from cdarts_deploy.genotype import SEARCH_OPS


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


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (9, 6), (6, 11)])
def test_factorized_reduce_output_is_ceil_half_with_zero_far_border(size):
    h, w = size
    fr = FactorizedReduce(3, 4).eval()
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        y = fr(x)
        x = x.relu()  # the op starts with a ReLU
        # the shifted half samples pixels (2i+1, 2j+1); positions past the input are zero before BN
        shifted = torch.zeros(1, 3, -(-h // 2), -(-w // 2))
        shifted[:, :, : h // 2, : w // 2] = x[:, :, 1::2, 1::2]
        expected = fr.bn(torch.cat([fr.conv_1(x), nn.functional.conv2d(shifted, fr.conv_2.weight)], 1))
    assert y.shape == (1, 4, -(-h // 2), -(-w // 2))
    assert torch.allclose(y, expected, atol=1e-6)


def test_factorized_reduce_traces_once_for_every_size():
    fr = FactorizedReduce(2, 4).eval()
    graph = torch.fx.symbolic_trace(fr)  # no Python branch on the input's shape
    for side in (7, 8, 9):
        x = torch.randn(1, 2, side, side + 1)
        with torch.no_grad():
            assert torch.equal(graph(x), fr(x))
