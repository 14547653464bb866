"""How well a latency table predicts measured children: Spearman rank correlation, relative errors, and
the linear correction ``scale * sum + offset`` fitted on children measured end to end.

Pure Python (``math`` only), so that the table format, the measuring library and the benchmarks share it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["CORRECTIONS", "WITHIN", "fit_correction", "relative_errors", "spearman", "within_shares"]


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their mean rank
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties at their mean rank)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("need two equally long sequences of at least two values")
    return _pearson(_ranks(x), _ranks(y))


CORRECTIONS = ("scale", "offset", "affine")


def fit_correction(predicted: Sequence[float], measured: Sequence[float], mode: str = "scale") -> tuple[float, float]:
    """``(scale, offset)`` of ``measured ~ scale * predicted + offset``, one constant per network or both.

    ``scale``: the ratio of the means (offset 0) -- what slows every part alike (cache state, contention);
    ``offset``: the mean difference (scale 1) -- what costs the same in every child (a call overhead per part);
    ``affine``: least squares of both (needs 3 children and a positive fitted scale, else ``offset``); with
    few or noisy children over a narrow range it extrapolates badly.
    """
    if mode not in CORRECTIONS:
        raise ValueError(f"unknown correction {mode!r}; use one of {', '.join(CORRECTIONS)}")
    n = len(predicted)
    if n == 0 or n != len(measured):
        raise ValueError("need as many measured as predicted latencies, at least one")
    mp, mm = math.fsum(predicted) / n, math.fsum(measured) / n
    if mode == "scale" and mp > 0:
        return mm / mp, 0.0
    spp = math.fsum((p - mp) ** 2 for p in predicted)
    if mode == "affine" and n >= 3 and spp > 0:
        scale = math.fsum((p - mp) * (m - mm) for p, m in zip(predicted, measured)) / spp
        if scale > 0:
            return scale, mm - scale * mp
    return 1.0, mm - mp


#: Relative tolerances of :func:`within_shares`: the +-5% and +-10% accuracy that latency predictors report.
WITHIN = (0.05, 0.10)


def within_shares(predicted: Iterable[float], measured: Iterable[float],
                  tolerances: Sequence[float] = WITHIN) -> dict[str, float]:
    """Share of predictions with ``|predicted - measured| <= t * measured``, per tolerance ``t``
    (keys ``within_5pct``, ``within_10pct``)."""
    rel = [abs(p - m) / m for p, m in zip(predicted, measured)]
    if not rel:
        raise ValueError("no latencies to compare")
    # a hair of slack so that a prediction exactly on the boundary counts despite float rounding
    return {f"within_{round(t * 100):d}pct": sum(r <= t + 1e-12 for r in rel) / len(rel) for t in tolerances}


def relative_errors(predicted: Iterable[float], measured: Iterable[float]) -> dict[str, float]:
    """Mean and max of ``|predicted - measured| / measured``, the mean signed error (bias), and the share of
    predictions within +-5% and +-10% (:func:`within_shares`)."""
    predicted, measured = list(predicted), list(measured)
    rel = [(p - m) / m for p, m in zip(predicted, measured)]
    if not rel:
        raise ValueError("no latencies to compare")
    return {"mean_rel_error": math.fsum(abs(r) for r in rel) / len(rel), "max_rel_error": max(abs(r) for r in rel),
            "mean_signed_rel_error": math.fsum(rel) / len(rel), **within_shares(predicted, measured)}
