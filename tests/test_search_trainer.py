"""The search loop (``search.trainer.CyclicSearch``) driven step by step in both spaces on tiny networks.

Algorithm 1 (paper Section 3.2): each of the three updates moves only its own parameter groups;
distillation reaches alpha; the Eq. 11 penalty shrinks the skip alphas; the multi-level distillation
keeps every level; the chain space's evaluation networks share w_E through a (block, candidate)
pool; a checkpoint restores the run exactly, also into an epoch without a rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from cdarts_deploy.atomic_files import default_file_mode
from cdarts_deploy.data.distributed import DistContext
from cdarts_deploy.errors import UserError
from cdarts_deploy.genotype import SEARCH_OPS
from search.cell_space import CellSpace
from search.chain_child import derive_genotype
from search.chain_space import ChainSpace
from search.checkpoint import load_checkpoint, save_checkpoint
from search.config import SearchConfig, resolved_defaults
from search.data import SearchData
from search.epoch_metrics import Meter
from search.errors import SearchInputError
from search.param_scopes import stochastic_parts
from search.trainer import CyclicSearch

SIZE, CLASSES, BATCH = 16, 4, 4
SPACES = ("cell", "chain")
BAR = type("Bar", (), {"disable": True})()


def _search(out: Path, space: str = "cell", seed: int = 0, **options) -> CyclicSearch:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the same data for every seed
    x = torch.randn(3 * BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, CLASSES, (3 * BATCH,))
    data = SearchData(TensorDataset(x, y), TensorDataset(x.clone(), y.clone()), CLASSES, "cifar", SIZE)
    values = dict(space=space, width=4, cells=3, eval_cells=5, batch_size=BATCH, epochs=2, warmup_epochs=1,
                  input_size=SIZE, max_steps=1, progress=False, out=str(out), head_mid=8, head_embed=16,
                  base="tiny", stem_channels=8, head_channels=32)
    values.update(options)
    cfg = resolved_defaults(SearchConfig(**values), "cifar")
    torch.manual_seed(seed)  # initial weights
    if space == "chain":
        sp = ChainSpace(cfg, CLASSES, SIZE, torch.device("cpu"))
    else:
        sp = CellSpace(cfg, CLASSES, "cifar", SIZE, torch.device("cpu"))
    return CyclicSearch(cfg, sp, data, DistContext(), out)


def _copy(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: a tiny network gains nothing from more, and a busy machine loses a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(search: CyclicSearch) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(search.train_loader))


def _with_branch(search: CyclicSearch) -> CyclicSearch:
    search.install_branch(search.derive(), build_id=0, lr=search.cfg.lr)
    return search


def _groups(search: CyclicSearch) -> dict[str, list[torch.nn.Parameter]]:
    shared = {id(p) for p in search.space.shared_with_eval()}
    return {
        "alpha": search.space.arch_parameters(),
        "search_only": search.search_only,
        "w_E": [p for p in search.branch.parameters() if id(p) not in shared],
        "heads": list(search.space.heads.parameters()),
    }


def _moved(search: CyclicSearch, step) -> set[str]:
    groups = _groups(search)
    before = {k: _copy(v) for k, v in groups.items()}
    step()
    assert all(p.requires_grad for ps in groups.values() for p in ps)  # the freeze is undone after the step
    return {k for k, ps in groups.items() if _changed(before[k], ps)}


@pytest.mark.parametrize("space", SPACES)
def test_each_update_moves_only_its_own_parameter_groups(tmp_path, space):
    search = _with_branch(_search(tmp_path, space))
    x, y = _batch(search)
    # Eq. 6: w_S alone (search-only weights; a stem shared with w_E also moves, it is w_S)
    assert _moved(search, lambda: search.weight_step(x, y, Meter())) == {"search_only"}
    # Stage 1: w_E alone
    assert _moved(search, lambda: search.eval_step(x, y, Meter())) == {"w_E"}
    # Stage 2 (Eq. 8): alpha and w_E; never the search-only w_S, never the embedding heads (fixed projections)
    assert _moved(search, lambda: search.joint_step(x, y, reg=search.reg_at(0), meter=Meter())) == {"alpha", "w_E"}


@pytest.mark.parametrize("space", SPACES)
def test_head_cross_entropy_is_opt_in_and_trains_the_shared_heads(tmp_path, space):
    assert SearchConfig().head_ce_weight == 0.0
    search = _with_branch(_search(tmp_path, space, head_ce_weight=1.0))
    x, y = _batch(search)
    assert _moved(search, lambda: search.eval_step(x, y, Meter())) == {"w_E", "heads"}
    assert _moved(search, lambda: search.joint_step(x, y, reg=0.0, meter=Meter())) == {"alpha", "w_E", "heads"}


@pytest.mark.parametrize("space", SPACES)
def test_distillation_never_trains_the_embedding_heads(tmp_path, space):
    """One joint step moves the heads the same with and without the distillation term (only the opt-in head
    cross-entropy trains them), and alpha differently: the distillation acts on the architecture, not on its
    own probes."""
    heads, alphas = [], []
    for lam in (0.0, 4.0):
        search = _with_branch(_search(tmp_path / f"l{lam}", space, distill_lambda=lam, head_ce_weight=1.0,
                                      grad_clip=0.0))  # a shared clipping norm would couple the groups
        search.joint_step(*_batch(search), reg=0.0, meter=Meter())
        heads.append(_copy(search.space.heads.parameters()))
        alphas.append(_copy(search.space.arch_parameters()))
    for a, b in zip(*heads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(*alphas))


@pytest.mark.parametrize("space", SPACES)
def test_distillation_loss_does_not_fall_with_alpha_frozen(tmp_path, space):
    """With alpha and w_E held still, nothing the distillation may legitimately move can move: repeated joint
    steps on one batch leave the loss where it was.  Heads trained on the loss would drive it towards 0."""
    search = _with_branch(_search(tmp_path, space, grad_clip=0.0))
    x, y = _batch(search)
    for group in search.opt_alpha.param_groups:
        group["lr"] = group["weight_decay"] = 0.0
    w_e = {id(p) for p in search.branch.parameters()}
    step = search.opt_e.step

    def step_all_but_w_e(*args, **kwargs):  # the optimizer of w_E also holds the heads: those may move
        for group in search.opt_e.param_groups:
            for p in group["params"]:
                if id(p) in w_e:
                    p.grad = None
        return step(*args, **kwargs)

    search.opt_e.step = step_all_but_w_e
    losses = []
    for _ in range(15):
        meter = Meter()
        search.joint_step(x, y, reg=0.0, meter=meter)
        losses.append(meter.means()["distill_loss"])
    assert losses[0] > 1e-3
    assert min(losses) > 0.9 * losses[0], losses


@pytest.mark.parametrize("space", SPACES)
def test_warmup_epoch_leaves_alpha_and_search_epoch_moves_it(tmp_path, space):
    search = _search(tmp_path, space)
    alpha = search.space.arch_parameters()
    before = _copy(alpha)
    warm = search.run_epoch(0, BAR)["row"]
    assert warm["phase"] == "warmup" and not _changed(before, alpha)
    assert search.branch is None  # no evaluation network before the search phase
    searched = search.run_epoch(1, BAR)["row"]
    assert searched["phase"] == "search" and _changed(before, alpha)
    assert search.branch is not None
    assert searched["level_weights"] == [round(1 / search.space.levels, 4)] * search.space.levels


@pytest.mark.parametrize("space", SPACES)
def test_distillation_reaches_alpha(tmp_path, space):
    alphas = []
    for lam in (0.0, 4.0):
        search = _with_branch(_search(tmp_path / f"l{lam}", space, distill_lambda=lam))
        search.joint_step(*_batch(search), reg=0.0, meter=Meter())
        alphas.append(_copy(search.space.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(*alphas))


@pytest.mark.parametrize("space", SPACES)
def test_level_weights_stay_fixed_and_every_level_reaches_the_student(tmp_path, space):
    search = _with_branch(_search(tmp_path, space))
    x, y = _batch(search)
    for _ in range(6):
        search.joint_step(x, y, reg=0.0, meter=Meter())
    levels = search.space.levels
    assert torch.equal(search.distiller.level_weights(), torch.full((levels,), 1.0 / levels))
    s_levels = search.space.heads.project(search.space.student(x)[1])
    e_levels = search.space.heads.project(search.branch(x)[1])
    weighted = search.distiller.level_weights() * search.distiller.level_losses(s_levels, e_levels)
    alpha = search.space.arch_parameters()
    for i in range(levels):
        grads = torch.autograd.grad(weighted[i], alpha, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"level {i} gives alpha no gradient"


def _alpha_grad_norm_at_step(search: CyclicSearch, x: torch.Tensor, y: torch.Tensor) -> float:
    """The norm of alpha's gradient as the optimizer sees it (after any clipping)."""
    seen = []
    step = search.opt_alpha.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in search.space.arch_parameters() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    search.opt_alpha.step = recording_step
    search.joint_step(x, y, reg=search.reg_at(0), meter=Meter())
    return seen[0]


@pytest.mark.parametrize("space", SPACES)
def test_architecture_gradients_are_clipped_like_the_weights(tmp_path, space):
    clip = 1e-6  # far below any real gradient norm, so clipping must act
    unclipped = _alpha_grad_norm_at_step(_with_branch(_search(tmp_path / "off", space, grad_clip=0.0)),
                                         *_batch(_search(tmp_path / "data", space)))
    clipped = _alpha_grad_norm_at_step(_with_branch(_search(tmp_path / "on", space, grad_clip=clip)),
                                       *_batch(_search(tmp_path / "data2", space)))
    assert unclipped > 10 * clip
    assert clipped <= clip * (1 + 1e-3)


def _single_loss_gradients(search: CyclicSearch, x: torch.Tensor, y: torch.Tensor, reg: float) -> dict[str, list]:
    """Eq. 8 as one loss over both graphs at once: the reference for the joint step's two passes."""
    import torch.nn.functional as F

    search_only = {id(p) for p in search.search_only}
    for p in search.search_only:
        p.requires_grad_(False)
    e_logits, e_feats = search.branch(x)  # first: a stochastic network draws its masks before anything else
    s_logits, s_feats = search.space.student(x)
    heads = search.space.heads
    loss = (F.cross_entropy(s_logits, y) + search._eval_ce(e_logits, e_feats, y)
            + search.cfg.distill_lambda * search.distiller(heads.project(s_feats), heads.project(e_feats)))
    if reg:
        loss = loss + reg * search.space.reg_loss()
    loss.backward()
    for p in search.search_only:
        p.requires_grad_(True)
    params_e = [p for g in search.opt_e.param_groups for p in g["params"]]
    assert not search_only & {id(p) for p in params_e}
    return {"alpha": [p.grad.clone() for p in search.space.arch_parameters()],
            "w_E": [None if p.grad is None else p.grad.clone() for p in params_e],
            "buffers": [b.clone() for b in search.branch.buffers()]}


def _joint_step_gradients(search: CyclicSearch, x: torch.Tensor, y: torch.Tensor, reg: float) -> dict[str, list]:
    seen = {}
    step_alpha, step_e = search.opt_alpha.step, search.opt_e.step

    def record_alpha(*a, **k):
        seen["alpha"] = [p.grad.clone() for p in search.space.arch_parameters()]
        return step_alpha(*a, **k)

    def record_e(*a, **k):
        seen["w_E"] = [None if p.grad is None else p.grad.clone()
                       for g in search.opt_e.param_groups for p in g["params"]]
        return step_e(*a, **k)

    search.opt_alpha.step, search.opt_e.step = record_alpha, record_e
    search.joint_step(x, y, reg=reg, meter=Meter())
    seen["buffers"] = [b.clone() for b in search.branch.buffers()]
    return seen


@pytest.mark.parametrize("space", SPACES)
def test_joint_step_in_two_passes_gives_the_gradients_of_the_single_loss(tmp_path, space):
    reference = _with_branch(_search(tmp_path / "one", space, grad_clip=0.0))
    x, y = _batch(reference)
    reg = 2.0 if space == "cell" else 0.0
    want = _single_loss_gradients(reference, x, y, reg)
    got = _joint_step_gradients(_with_branch(_search(tmp_path / "two", space, grad_clip=0.0)), x, y, reg)
    for group in ("alpha", "w_E"):
        assert len(got[group]) == len(want[group])
        for g, w in zip(got[group], want[group]):
            assert (g is None) == (w is None)
            if g is not None:
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    # BatchNorm statistics moved once per forward of the loss, not once more for the teacher's replay
    for g, w in zip(got["buffers"], want["buffers"]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _make_stochastic(search: CyclicSearch, space: str) -> None:
    if space == "cell":
        search.branch.net.set_drop_path(0.3)
    else:
        search.branch.net.drop_rate = 0.3  # timm's dropout before the classifier


@pytest.mark.parametrize("space", SPACES)
def test_joint_step_with_a_stochastic_evaluation_network_gives_the_single_loss_gradients(tmp_path, space):
    """A replayed teacher forward would draw other drop-path/dropout masks than the differentiated one; the
    joint step sees the randomness and differentiates Eq. 8 in one pass, with the masks of one forward."""
    reference = _with_branch(_search(tmp_path / "one", space, grad_clip=0.0))
    _make_stochastic(reference, space)
    x, y = _batch(reference)
    torch.manual_seed(7)
    want = _single_loss_gradients(reference, x, y, 0.0)
    search = _with_branch(_search(tmp_path / "two", space, grad_clip=0.0))
    _make_stochastic(search, space)
    assert stochastic_parts(search.branch)
    torch.manual_seed(7)
    got = _joint_step_gradients(search, x, y, 0.0)
    for group in ("alpha", "w_E", "buffers"):
        assert len(got[group]) == len(want[group])
        for g, w in zip(got[group], want[group]):
            assert (g is None) == (w is None)
            if g is not None:
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_stochastic_parts_names_random_training_modules_only(tmp_path):
    search = _with_branch(_search(tmp_path))
    assert stochastic_parts(search.branch) == []  # the default evaluation network: the two-pass step applies
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0), torch.nn.Dropout(0.1))
    assert stochastic_parts(net) == ["2"]
    net.eval()
    assert stochastic_parts(net) == []  # evaluation mode draws nothing
    search.branch.net.set_drop_path(0.2)
    assert stochastic_parts(search.branch)


def test_skip_penalty_shrinks_the_skip_alphas(tmp_path):
    skip = SEARCH_OPS.index("skip_connect")
    norms = []
    for reg in (0.0, 5.0):
        search = _with_branch(_search(tmp_path / f"r{reg}", "cell"))
        x, y = _batch(search)
        for _ in range(3):
            search.joint_step(x, y, reg=reg, meter=Meter())
        net = search.space.search_net
        norms.append(float((net.alpha_normal[:, skip].abs().sum() + net.alpha_reduce[:, skip].abs().sum()).detach()))
    assert norms[1] < norms[0]


def test_chain_rebuild_keeps_the_w_e_of_unchanged_blocks(tmp_path):
    search = _search(tmp_path, "chain")
    space = search.space
    units = space.supernet.units
    first = [0] * len(units)
    second = [0] * (len(units) - 1) + [5]  # only the last block changes its candidate
    def genotype(choices):
        return derive_genotype(space.supernet, choices)

    branch = space.build_eval(genotype(first), build_id=0)
    opt = space.eval_optimizer(torch.nn.Identity(), lr=0.1)
    with torch.no_grad():  # stand-in for training: recognisable values in every block
        for n, p in branch.net.blocks.named_parameters():
            p.fill_(0.5 + 0.01 * len(n))
    trained = {n: t.clone() for n, t in branch.net.state_dict().items()}
    space.write_back(opt)
    rebuilt = space.build_eval(genotype(second), build_id=1)
    last = units[-1]
    changed = tuple(f"blocks.{last.stage}.{m}." for m in last.modules)
    kept = 0
    for name, tensor in rebuilt.net.state_dict().items():
        if name.startswith(changed):
            continue
        torch.testing.assert_close(tensor, trained[name], rtol=0, atol=0, msg=name)
        kept += 1
    assert kept > 0
    # the changed block starts from the supernet's slice of its new candidate, not from stamped values
    m = last.modules[0]
    want = space.supernet.net.blocks[last.stage][m].candidate_weights(5)["conv_pw.weight"]
    assert torch.equal(rebuilt.net.blocks[last.stage][m].conv_pw.weight, want)
    space.write_back(space.eval_optimizer(torch.nn.Identity(), lr=0.1))
    back = space.build_eval(genotype(first), build_id=2)  # and the first candidate comes back trained
    torch.testing.assert_close(back.net.state_dict(), trained, rtol=0, atol=0)


def _state_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _state_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _state_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("space", SPACES)
def test_resume_into_an_epoch_without_rebuild_is_bit_exact(tmp_path, space):
    options = dict(warmup_epochs=0, epochs=2, update_epochs=2)  # epoch 0 rebuilds, epoch 1 continues
    straight = _search(tmp_path / "a", space, **options)
    straight.run()
    part = _search(tmp_path / "b", space, **options)
    part.run_epoch(0, BAR)
    save_checkpoint(part.checkpoint_state(next_epoch=1), tmp_path / "epoch0.pt")
    resumed = _search(tmp_path / "c", space, seed=1, **options)
    resumed.load_state(load_checkpoint(tmp_path / "epoch0.pt"))
    assert not resumed.rebuilds_at(1) and resumed.branch is not None
    resumed.run()
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    for key in ("space", "opt_w", "opt_alpha", "branch_genotype"):
        _state_equal(a[key], c[key], key)


def test_resume_after_the_last_checkpoint_writes_the_final_files_of_the_trained_network(tmp_path):
    """Killed after the last epoch's checkpoint, before the final files: the resumed run rebuilds the live
    evaluation network, so child.pth holds the trained w_E, as in the uninterrupted run."""
    straight = _search(tmp_path / "a", "chain")
    straight.run()
    part = _search(tmp_path / "b", "chain")
    for epoch in range(part.total_epochs):  # run() up to the last checkpoint, then the kill
        part.run_epoch(epoch, BAR)
        save_checkpoint(part.checkpoint_state(next_epoch=epoch + 1), tmp_path / "b" / "checkpoint.pt")
    assert not (tmp_path / "b" / "child.pth").exists()
    resumed = _search(tmp_path / "c", "chain", seed=1)
    resumed.load_state(load_checkpoint(tmp_path / "b" / "checkpoint.pt"))
    assert resumed.rebuilds_at(resumed.start_epoch) and resumed.start_epoch == resumed.total_epochs
    resumed.run()
    want = torch.load(tmp_path / "a" / "child.pth", map_location="cpu", weights_only=True)
    got = torch.load(tmp_path / "c" / "child.pth", map_location="cpu", weights_only=True)
    _state_equal(want, got, "child.pth")
    assert (tmp_path / "a" / "genotype.json").read_text() == (tmp_path / "c" / "genotype.json").read_text()


def test_checkpoint_with_per_network_heads_is_refused_in_one_line(tmp_path):
    search = _search(tmp_path)
    state = search.checkpoint_state(next_epoch=1)
    state["space"]["student_heads"] = state["space"].pop("heads")  # the layout before the heads were shared
    with pytest.raises(SearchInputError, match="earlier version; start a new --out"):
        _search(tmp_path / "b").load_state(state)


def test_checkpoint_round_trip_restores_the_run(tmp_path):
    first = _search(tmp_path / "a")
    first.weight_step(*_batch(first), Meter())
    state = first.checkpoint_state(next_epoch=1)
    (tmp_path / "ckpt").mkdir()
    path = tmp_path / "ckpt" / "checkpoint.pt"
    save_checkpoint(state, path)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["checkpoint.pt"]  # no temporary file left beside it
    assert path.stat().st_mode & 0o777 == default_file_mode()  # not mkstemp's 0600

    second = _search(tmp_path / "b", seed=1)
    torch.manual_seed(5)
    second.space.search_net.alpha_normal.data.normal_()
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


@pytest.mark.parametrize("space", SPACES)
def test_darts_baseline_moves_alpha_without_an_evaluation_network(tmp_path, space):
    search = _search(tmp_path, space, method="darts", warmup_epochs=0)
    before = _copy(search.space.arch_parameters())
    row = search.run_epoch(0, BAR)["row"]
    assert search.branch is None and "val_acc_eval" not in row and "distill_loss" not in row
    assert _changed(before, search.space.arch_parameters())


def test_level_weights_option_is_checked_and_used(tmp_path):
    search = _search(tmp_path, "cell", level_weights="0,1,1")
    assert search.distiller.level_weights().tolist() == [0.0, 0.5, 0.5]
    with pytest.raises(SearchInputError, match="expected 3 non-negative numbers"):
        _search(tmp_path / "bad", "cell", level_weights="1,1")
