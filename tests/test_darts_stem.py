"""The DARTS stems, shared by the evaluation network and the search network."""

import pytest
import torch
from torch import nn

from backbones.darts_net import DartsNet
from backbones.darts_stem import build_darts_stem
from cdarts_deploy.genotype import load
from search.cell_supernet import SearchNetwork


def test_cifar_stem_is_one_full_resolution_conv():
    stem = build_darts_stem("cifar", 6)
    assert (stem.c_prev_prev, stem.c_prev, stem.reduction_prev, stem.feature_info) == (18, 18, False, None)
    assert isinstance(stem.stem0, nn.Identity) and isinstance(stem.stem1, nn.Identity)
    y = stem.stem(torch.randn(1, 3, 9, 9))
    assert y.shape == (1, 18, 9, 9)


def test_imagenet_stems_reach_one_eighth():
    stem = build_darts_stem("imagenet", 6, in_chans=1)
    assert (stem.c_prev_prev, stem.c_prev, stem.reduction_prev) == (6, 6, True)
    assert stem.feature_info == dict(num_chs=6, reduction=4, module="stem0")
    assert isinstance(stem.stem, nn.Identity)
    s0 = stem.stem0(torch.randn(1, 1, 33, 33))
    assert s0.shape == (1, 6, 9, 9) and stem.stem1(s0).shape == (1, 6, 5, 5)


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout"):
        build_darts_stem("mobile", 6)


@pytest.mark.parametrize("layout", ["cifar", "imagenet"])
def test_search_and_evaluation_networks_share_one_stem_layout(layout):
    search = SearchNetwork(num_classes=3, width=4, cells=5, layout=layout)
    net = DartsNet(load("darts_v2"), layout=layout, width=4, cells=5, num_classes=3)

    def stem_state(model):
        return {k: v for k, v in model.state_dict().items() if k.startswith("stem")}

    assert {k: v.shape for k, v in stem_state(search).items()} == {k: v.shape for k, v in stem_state(net).items()}
    for name, module in search.stem_modules().items():
        setattr(net, name, module)  # how the cyclic search shares the stem
    x = torch.randn(1, 3, 32, 32)
    net.eval(), search.eval()
    with torch.no_grad():
        assert torch.equal(net._stem(x)[1], search.stem1(search.stem0(search.stem(x))))
