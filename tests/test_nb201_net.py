"""NAS-Bench-201 networks: the benchmark's parameter counts, timm registration, features, scripting."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import backbones  # noqa: F401  (registers the timm models)
from backbones import create_model_from_genotype
from backbones.factory import resolve_network
from backbones.nb201_net import NB201_RESNET, Nb201Net, create_nb201_model
from cdarts_deploy import genotype as gt
from cdarts_deploy.nats_bench import open_benchmark

SUBSET = Path(__file__).parent / "data" / "nats_bench_tss_subset"
CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("index", [0, 11, 284])
def test_parameter_count_matches_the_benchmark_record(index):
    bench = open_benchmark(SUBSET)
    accuracies = bench.accuracies(index)
    for dataset, classes in CLASSES.items():
        model = create_nb201_model(bench.arch(index), num_classes=classes)
        count = sum(p.numel() for p in model.parameters())
        assert count / 1e6 == pytest.approx(accuracies[dataset].params_m, abs=5e-7), dataset


def test_registered_models_and_factory_agree():
    assert timm.is_model("nb201") and timm.is_model("nb201_resnet")
    torch.manual_seed(0)
    a = timm.create_model("nb201_resnet")
    torch.manual_seed(0)
    b = create_model_from_genotype(gt.nb201_from_string(NB201_RESNET))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))
    assert isinstance(timm.create_model("nb201", arch=gt.load("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
                                        .arch_string(), num_classes=3), Nb201Net)


def test_network_resolution():
    g = gt.Nb201Genotype(nodes=gt.loads(NB201_RESNET).nodes, network=gt.Nb201Network(num_classes=100, width=8))
    assert resolve_network(g) == dict(width=8, cells=5, num_classes=100, input_size=32)
    assert resolve_network(g, cells=1, num_classes=7)["cells"] == 1
    with pytest.raises(ValueError, match="layout"):
        resolve_network(g, layout="cifar")
    model = create_model_from_genotype(g, cells=1)
    assert len(model.cells) == 3 + 2 and model.get_classifier().out_features == 100


def test_structure_of_the_benchmark_network():
    model = create_nb201_model(NB201_RESNET)
    assert len(model.cells) == 17  # 3 stages of 5 cells and 2 reduction blocks
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 64]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_torchscript_and_features():
    model = create_nb201_model(NB201_RESNET, width=4, cells=1, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.script(model)(x), model(x), atol=1e-5)
        features = model.forward_features(x)
        assert torch.allclose(model.forward_head(features), model(x), atol=1e-6)
    feats = create_nb201_model(NB201_RESNET, width=4, cells=1, features_only=True, out_indices=(1, 2)).eval()
    with torch.no_grad():
        out = feats(x)
    assert [f.shape[1:] for f in out] == [(8, 16, 16), (16, 8, 8)]
    assert feats.feature_info.reduction() == [2, 4]


def test_none_edges_contribute_zeros():
    all_none = gt.loads("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    model = create_model_from_genotype(all_none, width=4, cells=1).eval()
    cell = model.cells[0]
    with torch.no_grad():
        assert torch.count_nonzero(cell(torch.randn(1, 4, 8, 8))) == 0


def test_cell_picture(tmp_path):
    from cdarts_deploy.drawing import plot_genotype

    files = plot_genotype(gt.nb201_from_string(NB201_RESNET, name="resnet"), tmp_path)
    assert [f.name for f in files] == ["resnet_cell.png", "resnet_cell.svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
