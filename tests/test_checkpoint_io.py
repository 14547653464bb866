"""The one safe checkpoint reader refuses pickled objects, damaged files and misfits with one line."""

import pickle

import pytest
import torch
from torch import nn

from backbones.checkpoint_io import CheckpointError, extract_state_dict, load_into, read_checkpoint, read_state_dict
from cdarts_deploy.errors import UserError


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_reads_bare_and_nested_state_dicts_without_ddp_prefix(tmp_path):
    net = _net()
    for i, wrap in enumerate([lambda s: s, lambda s: {"state_dict": s}, lambda s: {"model": s, "epoch": 3}]):
        state = {f"module.{k}": v for k, v in net.state_dict().items()}
        path = tmp_path / f"c{i}.pth"
        torch.save(wrap(state), path)
        got = read_state_dict(path)
        assert set(got) == set(net.state_dict())
        load_into(_net(), got, path)


def test_refuses_pickled_objects_without_running_them(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Payload()}, fh)
    with pytest.raises(CheckpointError, match="cannot be loaded safely") as info:
        read_checkpoint(path)
    assert "weights_only=False" not in str(info.value)
    assert "\n" not in str(info.value)
    assert "this must never run" not in capsys.readouterr().out
    assert isinstance(info.value, UserError)


def test_refuses_missing_damaged_and_non_state_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(damaged)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        extract_state_dict({"epoch": 3, "lr": 0.1})


def test_load_into_names_the_first_misfit(tmp_path):
    state = _net().state_dict()
    wrong = dict(state)
    wrong["0.weight"] = torch.zeros(4, 3, 5, 5)
    with pytest.raises(CheckpointError, match=r"another shape \(e.g. 0.weight"):
        load_into(_net(), wrong)
    short = {k: v for k, v in state.items() if k != "1.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. 1.bias\)"):
        load_into(_net(), short)
