"""The cell-space search trainer (``search.trainer.CyclicSearch``) driven step by step on a tiny network.

Algorithm 1 (paper Section 3.2): the w_S update leaves alpha alone, the joint update moves alpha
and w_E but not the search-only weights, and a checkpoint restores the run exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from cdarts_deploy.atomic_files import default_file_mode
from cdarts_deploy.errors import UserError
from search.cell_space import CellSpace
from search.checkpoint import load_checkpoint, save_checkpoint
from search.config import SearchConfig, resolved_defaults
from search.data import SearchData
from search.distributed import DistContext
from search.errors import SearchInputError
from search.trainer import CyclicSearch, Meter

SIZE, CLASSES, BATCH = 16, 4, 4


def _search(out: Path, seed: int = 0) -> CyclicSearch:
    torch.manual_seed(seed)
    x = torch.randn(3 * BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (3 * BATCH,))
    data = SearchData(TensorDataset(x, y), TensorDataset(x.clone(), y.clone()), CLASSES, "cifar", SIZE)
    cfg = resolved_defaults(SearchConfig(width=4, cells=3, eval_cells=3, batch_size=BATCH, epochs=2,
                                         warmup_epochs=1, input_size=SIZE, max_steps=1, progress=False,
                                         out=str(out)), "cifar")
    space = CellSpace(cfg, CLASSES, "cifar", SIZE, torch.device("cpu"))
    return CyclicSearch(cfg, space, data, DistContext(), out)


def _copy(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params: list[torch.nn.Parameter]) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: a tiny network gains nothing from more, and a busy machine loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def search(tmp_path) -> CyclicSearch:
    return _search(tmp_path)


def _batch(search: CyclicSearch) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(search.train_loader))


def test_weight_step_moves_w_s_and_not_alpha(search):
    alpha, weights = search.space.arch_parameters(), search.space.weight_parameters()
    alpha_before, weights_before = _copy(alpha), _copy(weights)
    meter = Meter()
    search.weight_step(*_batch(search), meter)
    assert _changed(weights_before, weights)
    assert not _changed(alpha_before, alpha)
    assert all(p.requires_grad for p in alpha)  # the freeze is undone after the step
    assert set(meter.means()) == {"train_loss", "train_acc"}


def test_joint_step_moves_alpha_and_w_e_but_not_the_search_only_weights(search):
    search.install_branch(search.derive(), build_id=0, lr=search.cfg.lr)
    alpha = search.space.arch_parameters()
    eval_params = [p for g in search.opt_e.param_groups for p in g["params"]]
    alpha_before, eval_before = _copy(alpha), _copy(eval_params)
    search_only_before = _copy(search.search_only)
    search.joint_step(*_batch(search), reg=search.reg_at(0), meter=Meter())
    assert _changed(alpha_before, alpha)
    assert _changed(eval_before, eval_params)
    assert not _changed(search_only_before, search.search_only)
    assert all(p.requires_grad for p in search.search_only)


def test_warmup_epoch_leaves_alpha_and_search_epoch_moves_it(search):
    alpha = search.space.arch_parameters()
    before = _copy(alpha)
    bar = type("Bar", (), {"disable": True})()
    warm = search.run_epoch(0, bar)["row"]
    assert warm["phase"] == "warmup" and not _changed(before, alpha)
    assert search.branch is None  # no evaluation network before the search phase
    searched = search.run_epoch(1, bar)["row"]
    assert searched["phase"] == "search" and _changed(before, alpha)
    assert search.branch is not None


def test_checkpoint_round_trip_restores_the_run(tmp_path):
    first = _search(tmp_path / "a")
    first.weight_step(*_batch(first), Meter())
    state = first.checkpoint_state(next_epoch=1)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state, path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]  # no temporary file left beside it
    assert path.stat().st_mode & 0o777 == default_file_mode()  # not mkstemp's 0600

    second = _search(tmp_path / "b", seed=1)
    second.load_state(load_checkpoint(path))
    assert second.start_epoch == 1
    for a, b in zip(first.space.arch_parameters() + first.space.weight_parameters(),
                    second.space.arch_parameters() + second.space.weight_parameters()):
        torch.testing.assert_close(a, b)
    assert second.opt_w.state_dict()["state"].keys() == first.opt_w.state_dict()["state"].keys()


@pytest.mark.parametrize("content,match", [
    (b"PK\x03\x04 not really a checkpoint", "corrupt or unreadable checkpoint"),
    (None, "not a cdarts-search checkpoint"),
    (False, "no checkpoint to resume from"),
])
def test_bad_checkpoint_is_a_one_line_user_error(tmp_path, content, match):
    path = tmp_path / "checkpoint.pt"
    if content is None:
        save_checkpoint({"weights": torch.zeros(1)}, path)  # a torch file, but not a search checkpoint
    elif content:
        path.write_bytes(content)
    with pytest.raises(SearchInputError, match=match) as info:
        load_checkpoint(path)
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value)
    assert "torch.save(model.state_dict())" not in str(info.value)  # a resume file is not re-saved by hand
