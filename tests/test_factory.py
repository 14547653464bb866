"""create_model_from_genotype: dispatch, network-size resolution and keyword pass-through."""

from __future__ import annotations

from dataclasses import replace

import pytest
import timm
import torch

import backbones
from backbones import create_model_from_genotype
from backbones.complexity import count_params
from backbones.darts_net import DartsNet
from backbones.factory import resolve_cell_network
from cdarts_deploy.genotype import CellNetwork, GenotypeError, load, save


def test_import_registers_all_models():
    for name in ("cdarts_cifar", "cdarts_imagenet", "darts_v2_cifar", "darts_v2_imagenet", "cdarts_a", "cdarts_b"):
        assert timm.is_model(name), name
    assert backbones.create_model_from_genotype is create_model_from_genotype


def test_network_resolution_order():
    cifar = load("cdarts_cifar")  # hints: cifar, C=36, 20 cells, 10 classes, 32 px
    assert resolve_cell_network(cifar) == dict(layout="cifar", width=36, cells=20, num_classes=10, input_size=32)
    assert resolve_cell_network(cifar, width=50, num_classes=100) == dict(
        layout="cifar", width=50, cells=20, num_classes=100, input_size=32
    )
    # hints describe the CIFAR network only; an ImageNet build falls back to the ImageNet defaults
    assert resolve_cell_network(cifar, layout="imagenet") == dict(
        layout="imagenet", width=48, cells=14, num_classes=1000, input_size=224
    )
    bare = replace(cifar, network=CellNetwork())
    assert resolve_cell_network(bare) == dict(layout="cifar", width=36, cells=20, num_classes=10, input_size=32)
    assert resolve_cell_network(bare, layout="imagenet", cells=8)["cells"] == 8
    with pytest.raises(ValueError, match="layout"):
        resolve_cell_network(bare, layout="mobile")


def test_zoo_name_path_and_object_build_the_same_network(tmp_path):
    g = load("darts_v2")
    path = tmp_path / "mine.json"
    save(g, path)
    models = [create_model_from_genotype(src, width=4, cells=5) for src in ("darts_v2", path, g)]
    for m in models:
        assert isinstance(m, DartsNet) and m.genotype.stages == g.stages
        assert (m.layout, m.width, m.num_cells, m.num_classes) == ("cifar", 4, 5, 10)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in models]
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize("name", ["cdarts_cifar", "darts_v2_imagenet"])
def test_factory_matches_registered_timm_model(name):
    genotype, layout = {"cdarts_cifar": ("cdarts_cifar", None), "darts_v2_imagenet": ("darts_v2", "imagenet")}[name]
    ours = create_model_from_genotype(genotype, layout=layout)
    theirs = timm.create_model(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    for key in ("input_size", "mean", "std", "num_classes", "first_conv", "classifier"):
        assert ours.pretrained_cfg[key] == theirs.pretrained_cfg[key], key


def test_kwargs_pass_through():
    m = create_model_from_genotype("cdarts_imagenet", width=4, cells=5, num_classes=3, drop_path_rate=0.2,
                                   auxiliary=True)
    assert m.drop_path_rate == 0.2 and all(c.drop_prob == 0.2 for c in m.cells)
    assert m.aux_head is not None and m.num_classes == 3
    feats = create_model_from_genotype("cdarts_imagenet", width=4, cells=5, features_only=True,
                                       out_indices=(0, 3)).eval()
    assert feats.feature_info.reduction() == [4, 32]
    out = feats(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in out] == [4, 64]


def test_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = create_model_from_genotype("pdarts", width=4, cells=5, num_classes=3)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model_from_genotype(
        "pdarts", width=4, cells=5, num_classes=3, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_chain_dispatch():
    ours = create_model_from_genotype("cdarts_a", num_classes=10)
    theirs = timm.create_model("cdarts_a", num_classes=10)
    assert type(ours) is type(theirs)
    assert count_params(ours) == count_params(theirs)
    assert ours.get_classifier().out_features == 10
    with pytest.raises(ValueError, match="chain genotype"):
        create_model_from_genotype("cdarts_b", width=16)


def test_bad_genotype_is_a_genotype_error(tmp_path):
    with pytest.raises(GenotypeError):
        create_model_from_genotype("no_such_zoo_model")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "cdarts-genotype", "version": 1, "kind": "cell", "stages": []}')
    with pytest.raises(GenotypeError):
        create_model_from_genotype(bad)
