"""CDARTS search (paper Section 3.2, Algorithm 1) -- the ``cdarts-search`` command.

Space-agnostic machinery (shared by the DARTS cell space and the chain-structured space):

* ``config``        -- :class:`SearchConfig`: every option with Table 1's defaults, presets, JSON config files.
* ``data``          -- CIFAR python batches (safe unpickling) and ImageFolder with class-balanced sampling;
                       train/val parts; loaders with a ``DistributedSampler`` (order depends on seed + epoch).
* ``distributed``   -- torchrun process group (gloo on CPU, nccl on GPU), gradient averaging, broadcasts.
* ``errors``        -- :class:`SearchInputError`, the search's one-line user error.
* ``checkpoint``    -- atomic ``torch.save`` / ``weights_only`` loading, RNG state capture.
* ``runlog``        -- the per-epoch JSON-lines log (``log.jsonl``), truncated safely on resume.
* ``distill``       -- embedding heads and the multi-level soft-target distillation loss (KL, T=2, x T^2).
* ``regularization``-- Eq. 11's L1 penalty and the linearly decaying lambda'.
* ``trainer``       -- :class:`CyclicSearch`: Algorithm 1's step order, warm-up, schedules, checkpoints;
                       it drives a *space* object whose protocol is documented at the top of that module.
* ``cli``           -- argument parsing, output-folder ownership (``run.json``), ``--resume``, exit codes.
                       ``--space chain`` selects the chain space, which has its own options.

DARTS cell space:

* ``cell_supernet`` -- mixed operations, search cells, the search network with alpha (and optional beta).
* ``cell_discretize`` -- top-2 discretization into a :class:`cdarts_deploy.genotype.CellGenotype`.
* ``cell_eval``     -- the evaluation network (``backbones.darts_net.DartsNet``) and its weight pool.
* ``cell_space``    -- the cell space object the trainer drives.

Chain-structured MBConv space (paper Section 4.6.1):

* ``chain_space``   -- the supernet with mixed inverted-residual blocks and their architecture weights.
* ``chain_child``   -- the derived child network (timm) with inherited weights.
* ``chain_cost``    -- multiply-add table of the candidates, budget fitting and penalty.
* ``chain_search``  -- :class:`ChainSearch` and ``run_search``: the search loop of the chain space.
"""
