"""nb201 genotypes through the retraining, export and profiling entry points: the benchmark network at its own
size, with width and cells per stage, and never treated as a chain network."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cdarts_deploy import genotype as gt
from cdarts_deploy.deploy.model_spec import ExportError, build_model, resolve_spec
from cdarts_deploy.deploy.subjects import default_peers, zoo_layout
from cdarts_deploy.training import model as training_model
from cdarts_deploy.training.presets import TrainConfig

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture()
def genotype() -> gt.Nb201Genotype:
    return gt.loads(ARCH, "arch.txt")


def test_training_builds_the_benchmark_network_at_its_own_size(genotype):
    args = training_model.network_args(genotype, TrainConfig(), 10, "imagenet")
    assert args == dict(width=16, cells=5, num_classes=10, input_size=32)
    small = training_model.network_args(genotype, dataclasses.replace(TrainConfig(), width=8, cells=1), 4, "cifar")
    net = training_model.build_model(genotype, small, TrainConfig())  # no drop_path_rate for this network
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("change, option", [(dict(drop_path=0.2), "--drop-path"), (dict(layout="cifar"), "--layout"),
                                            (dict(aux_weight=0.4), "--aux-weight")])
def test_training_options_that_do_not_apply_are_refused(genotype, change, option):
    with pytest.raises(training_model.ModelSpecError, match=f"^{option} .*nb201|^{option} .*NAS-Bench-201"):
        training_model.network_args(genotype, dataclasses.replace(TrainConfig(), **change), 10, "cifar")


def test_export_takes_width_and_cells_and_refuses_layout(genotype):
    spec = resolve_spec(genotype, width=8, cells=1, num_classes=3)
    assert (spec.layout, spec.width, spec.cells, spec.num_classes, spec.input_size) == (None, 8, 1, 3, (32, 32))
    model = build_model(genotype, spec)
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in build_model(genotype, resolve_spec(genotype)).parameters())
    with pytest.raises(ExportError, match="--layout .*nb201"):
        resolve_spec(genotype, layout="cifar")


def test_profiling_does_not_take_chain_networks_as_peers(genotype):
    assert zoo_layout(genotype) == "nb201"
    chain_zoo = [n for n in gt.zoo_names() if isinstance(gt.load(n), gt.ChainGenotype)]
    assert chain_zoo and not set(chain_zoo) & set(default_peers("nb201"))
