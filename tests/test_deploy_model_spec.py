"""The network a genotype is exported as: sizes from hints and overrides, weights, BN calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones.checkpoint_io import CheckpointError
from backbones.factory import create_model_from_genotype
from cdarts_deploy import genotype as gt
from cdarts_deploy.deploy.model_spec import (
    ExportError,
    build_model,
    calibrate_batchnorm,
    load_weights,
    random_batch,
    resolve_spec,
)
from cdarts_deploy.errors import UserError


def _small_darts(num_classes=10):
    torch.manual_seed(0)
    return create_model_from_genotype("darts_v2", layout="cifar", width=8, cells=5, num_classes=num_classes).eval()


def test_zoo_hints_give_the_timm_model():
    import timm

    import backbones  # noqa: F401  (registers the timm models)

    g = gt.load("cdarts_cifar")
    spec = resolve_spec(g)
    assert (spec.layout, spec.width, spec.cells, spec.num_classes, spec.input_size) == ("cifar", 36, 20, 10, (32, 32))
    ours = build_model(g, spec)
    theirs = timm.create_model("cdarts_cifar")
    shapes = [tuple(t.shape) for t in ours.state_dict().values()]
    assert shapes == [tuple(t.shape) for t in theirs.state_dict().values()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    spec_in = resolve_spec(gt.load("cdarts_imagenet"))
    assert (spec_in.layout, spec_in.width, spec_in.cells, spec_in.num_classes, spec_in.input_size) == (
        "imagenet", 48, 14, 1000, (224, 224))


def test_chain_spec_uses_the_chain_defaults_and_refuses_cell_options():
    spec = resolve_spec(gt.load("cdarts_a"), num_classes=7, input_size=(64, 64))
    assert (spec.layout, spec.width, spec.cells, spec.num_classes, spec.input_size) == (None, None, None, 7, (64, 64))
    with pytest.raises(ExportError, match="cell genotypes only"):
        resolve_spec(gt.load("cdarts_a"), width=8)
    assert issubclass(ExportError, UserError)


def test_checkpoint_layouts_all_load(tmp_path):
    model = _small_darts()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    # a bare state_dict, one under "state_dict", and one under "model" (with a DDP "module." prefix)
    layouts = [model.state_dict(), {"state_dict": model.state_dict(), "epoch": 3},
               {"model": {f"module.{k}": v for k, v in model.state_dict().items()}}]
    for i, obj in enumerate(layouts):
        torch.save(obj, tmp_path / f"c{i}.pth")
        fresh = _small_darts()
        load_weights(fresh, tmp_path / f"c{i}.pth")
        with torch.no_grad():
            np.testing.assert_allclose(fresh(torch.from_numpy(x)).numpy(), expected, atol=1e-6)


def test_checkpoint_refusals_are_one_line_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(_small_darts(), tmp_path / "missing.pth")
    wide = create_model_from_genotype("darts_v2", layout="cifar", width=12, cells=5, num_classes=10)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="does not fit this network") as info:
        load_weights(_small_darts(), tmp_path / "wide.pth")
    assert "--layout/--width" in str(info.value) and "\n" not in str(info.value)


def test_bn_calibration_makes_outputs_depend_on_the_input():
    model = _small_darts()
    calibrate_batchnorm(model, (32, 32))
    assert not model.training
    x = torch.from_numpy(random_batch(2, (32, 32), seed=1))
    with torch.no_grad():
        logits = model(x).numpy()
    assert np.abs(logits[0] - logits[1]).max() > 1e-3 * np.abs(logits).max()


def test_random_batch_is_reproducible():
    a, b = random_batch(3, (8, 10), seed=4), random_batch(3, (8, 10), seed=4)
    assert a.shape == (3, 3, 8, 10) and a.dtype == np.float32 and np.array_equal(a, b)
