"""CDARTS search (paper Section 3.2, Algorithm 1) -- the ``cdarts-search`` command.

Space-agnostic machinery (shared by the DARTS cell space and the chain-structured space):

* ``config``        -- :class:`SearchConfig`: every option with Table 1's defaults, presets, JSON config files.
* ``data``          -- CIFAR python batches (safe unpickling) and ImageFolder with class-balanced sampling;
                       train/val parts; loaders with a ``DistributedSampler`` (order depends on seed + epoch).
* ``distributed``   -- gradient averaging, broadcasts and metric means over the ranks (the process group:
                       ``cdarts_deploy.data.distributed``).
* ``errors``        -- :class:`SearchInputError`, the search's one-line user error.
* ``checkpoint``    -- atomic ``torch.save`` / ``weights_only`` loading, RNG state capture.
* ``runlog``        -- the per-epoch JSON-lines log (``log.jsonl``), truncated safely on resume.
* ``distill``       -- embedding heads and the multi-level soft-target distillation loss (KL, T=2, x T^2).
* ``regularization``-- Eq. 11's L1 penalty and the linearly decaying lambda'.
* ``space``         -- :class:`SearchSpace`: what the loop needs from a space (student with levels, derive,
                       build/inherit the evaluation network, write back, optional cost term).
* ``eval_pool``     -- :class:`WeightPool`: w_E weights and momentum of every part any evaluation network used.
* ``trainer``       -- :class:`CyclicSearch`: Algorithm 1 for any space: step order, warm-up, schedules,
                       BN averaging across processes, checkpoints, the log.
* ``param_scopes``  -- what one update touches: frozen parameters, kept buffers, an optimizer's parameters and lr.
* ``epoch_metrics`` -- :class:`Meter` (per-sample means of an epoch's losses and accuracies) and its summary line.
* ``run_lock``      -- one writer per ``--out`` (an flock that dies with its process).
* ``cli``           -- ``cdarts-search --space cell|chain``: one set of options, output-folder ownership
                       (``run.json``), ``--resume``, exit codes.

DARTS cell space:

* ``cell_supernet`` -- mixed operations, search cells, the search network with alpha (and optional beta).
* ``cell_discretize`` -- top-2 discretization into a :class:`cdarts_deploy.genotype.CellGenotype`.
* ``cell_eval``     -- the evaluation network (``backbones.darts_net.DartsNet``) and its weight pool.
* ``cell_space``    -- the cell space adapter.

Chain-structured MBConv space (paper Section 4.6.1):

* ``chain_supernet`` -- the supernet with mixed inverted-residual blocks and their architecture weights.
* ``chain_child``   -- the derived child network (timm) with weights inherited from the supernet.
* ``chain_cost``    -- multiply-add table of the candidates, budget fitting and penalty.
* ``chain_space``   -- the chain space adapter and its (block, candidate) weight pool.
"""
