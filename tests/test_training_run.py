"""A whole run at tiny size: exact resume, the run's identity check, aux tower and drop path switching."""

from __future__ import annotations

import pytest
import torch

from backbones.checkpoint_io import CheckpointError, read_checkpoint
from cdarts_deploy import genotype as gt
from cdarts_deploy.data.distributed import init_distributed
from cdarts_deploy.training import checkpoints as ck
from cdarts_deploy.training.data import read_datasets
from cdarts_deploy.training.model import build_model, drop_path_at
from cdarts_deploy.training.presets import preset_config
from cdarts_deploy.training.run import RunOptions, fit, run_identity
from training_samples import SIZE, TINY_NET, make_image_folder

CFG = dict(width=4, cells=3, input_size=SIZE, batch_size=8, epochs=2, workers=0, drop_path=0.2, cutout=4)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def _fit(images, out, **opts):
    torch.set_num_threads(1)
    out.mkdir(exist_ok=True)
    cfg = preset_config("cpu-smoke", **CFG)
    return fit(gt.load("cdarts_cifar"), cfg, read_datasets(images),
               RunOptions(out=out, ctx=init_distributed("cpu"), progress=False, **opts))


def test_killed_and_resumed_run_gives_bit_identical_weights(images, tmp_path):
    whole = _fit(images, tmp_path / "whole")
    first = _fit(images, tmp_path / "split", stop_after=1)
    assert len(first.records) == 1 and (tmp_path / "split" / "resume.pth").is_file()
    resumed = _fit(images, tmp_path / "split", resume=True)
    assert [r["epoch"] for r in resumed.records] == [1, 2]
    a = read_checkpoint(tmp_path / "whole" / "last.pth")
    b = read_checkpoint(tmp_path / "split" / "last.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = read_checkpoint(tmp_path / "whole" / "resume.pth")["optimizer"]
    rb = read_checkpoint(tmp_path / "split" / "resume.pth")["optimizer"]
    assert all(torch.equal(ra["state"][k]["momentum_buffer"], rb["state"][k]["momentum_buffer"]) for k in ra["state"])
    assert [r["top1"] for r in whole.records] == [r["top1"] for r in resumed.records]
    assert [r["drop_path"] for r in whole.records] == [0.0, 0.1]  # ramped: drop_path * epoch / epochs
    # a plain state_dict of the deployed network: no auxiliary tower, loads with weights_only=True
    assert all(isinstance(v, torch.Tensor) for v in a.values())
    assert not any(k.startswith("aux_head.") for k in a)
    assert any(k.startswith("aux_head.") for k in read_checkpoint(tmp_path / "whole" / "resume.pth")["model"])
    assert (tmp_path / "whole" / "accuracy.png").stat().st_size > 0
    assert not list((tmp_path / "whole").glob(".*tmp*"))  # no temporary file left behind


def test_resume_from_another_config_is_refused(images, tmp_path):
    _fit(images, tmp_path, stop_after=1)
    data = read_datasets(images)
    cfg = preset_config("cpu-smoke", **CFG)
    geno = gt.load("cdarts_cifar")
    net = dict(TINY_NET)
    same = run_identity(geno, cfg, data, net, 1)
    assert ck.load_resume(tmp_path / "resume.pth", same)["epoch"] == 1
    with pytest.raises(CheckpointError, match="another run.*config.lr: 0.05 then, 0.1 now"):
        ck.load_resume(tmp_path / "resume.pth", run_identity(geno, cfg.replace(lr=0.1), data, net, 1))
    with pytest.raises(CheckpointError, match="another run.*genotype"):
        ck.load_resume(tmp_path / "resume.pth", run_identity(gt.load("darts_v2"), cfg, data, net, 1))
    with pytest.raises(CheckpointError, match="not written by cdarts-train"):
        ck.load_resume(tmp_path / "last.pth", same)


def test_aux_tower_only_in_training_and_drop_path_schedule():
    torch.manual_seed(0)
    cfg = preset_config("cpu-smoke", **CFG)
    model = build_model(gt.load("cdarts_cifar"), TINY_NET, cfg)
    x = torch.randn(2, 3, SIZE, SIZE)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and out[1].shape == (2, 3)
    model.eval()
    assert isinstance(model(x), torch.Tensor)
    assert [drop_path_at(cfg, e) for e in range(2)] == [0.0, 0.1]  # drop_path * epoch / epochs
    model.set_drop_path(0.5)
    y1, y2 = model(x), model(x)
    assert torch.equal(y1, y2)  # eval: drop path is off whatever the rate
    assert set(ck.deploy_state_dict(model)) == set(build_model(gt.load("cdarts_cifar"), TINY_NET).state_dict())
