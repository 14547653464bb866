"""Data-parallel search on CPU (gloo): what two processes must agree on after an epoch.

Runs a small script under ``torch.distributed.run`` with two processes, so the real
process group, the real all-reduce and timm's ``distribute_bn`` are exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import torch
    from torch.utils.data import TensorDataset

    from search.cell_space import CellSpace
    from search.chain_space import ChainSpace
    from search.config import SearchConfig, resolved_defaults
    from search.data import SearchData
    from cdarts_deploy.data.distributed import init_distributed, shutdown
    from search.trainer import CyclicSearch

    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)
    result = {}
    for space in ("cell", "chain"):
        torch.manual_seed(0)
        x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
        data = SearchData(TensorDataset(x, y), TensorDataset(x.clone(), y.clone()), 4, "cifar", 16)
        cfg = resolved_defaults(SearchConfig(space=space, width=4, cells=3, eval_cells=5, batch_size=4, epochs=1,
                                             warmup_epochs=0, input_size=16, max_steps=1, progress=False,
                                             out=str(out / space), head_mid=8, head_embed=16, base="tiny",
                                             stem_channels=8, head_channels=32), "cifar")
        sp = (ChainSpace(cfg, 4, 16, ctx.device) if space == "chain"
              else CellSpace(cfg, 4, "cifar", 16, ctx.device))
        search = CyclicSearch(cfg, sp, data, ctx, out / space)
        search.install_branch(search.derive(), build_id=0, lr=cfg.lr)
        norms = [m for module in list(sp.bn_modules()) + [search.branch] for m in module.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:  # each process saw different batches: give each its own statistics
            m.running_mean.fill_(float(ctx.rank))
            m.running_var.fill_(1.0 + 2.0 * ctx.rank)
        search.sync_batchnorm()
        means = torch.cat([m.running_mean.reshape(-1) for m in norms])
        varis = torch.cat([m.running_var.reshape(-1) for m in norms])
        result[space] = {"layers": len(norms), "mean_min": means.min().item(), "mean_max": means.max().item(),
                         "var_min": varis.min().item(), "var_max": varis.max().item()}
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    shutdown()
""")


def test_batchnorm_statistics_are_averaged_over_processes(tmp_path):
    script = tmp_path / "sync_bn.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for space in ("cell", "chain"):
        for stats in ranks:
            s = stats[space]
            assert s["layers"] > 5  # the search network's and the evaluation network's norms
            # rank 0 held mean 0 / var 1, rank 1 mean 1 / var 3: every layer must now hold the average
            assert s["mean_min"] == s["mean_max"] == 0.5
            assert s["var_min"] == s["var_max"] == 2.0
