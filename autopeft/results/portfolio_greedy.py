"""The greedy choice of a portfolio from a score table: each entry adds the most coverage.

A search tries a portfolio's entries in order on a task it has never seen, so what matters is
how good the best of its first k entries is, for every k, not how good each entry is on
average: two entries that each win on half the tasks beat two that are both second-best
everywhere. Entry k is the candidate that most raises the coverage, the weighted mean over the
table's columns (tasks, or studies sharing their task's weight) of max(score over entries
1..k); ties go to the cheaper candidate, then the earlier row. Once no candidate raises it
(every column holds its best already), a new round starts from nothing with the candidates
left, so the later entries are a second portfolio hedging the first; the choice stops before
`size` entries when nothing left scores above 0 anywhere.

Pure: a small table of scores in [0, 1] in, row labels out; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIE = 1e-12  # gains closer than this are a tie: the cheaper, then the earlier row, wins


@dataclass(frozen=True)
class Pick:
    """One chosen entry: its row label, the coverage with it, and its round (1, 2, ...)."""

    label: Hashable
    coverage: float
    round: int


def greedy_choice(scores: pd.DataFrame, size: int, weights: pd.Series | None = None,
                  cost: pd.Series | None = None) -> list[Pick]:
    """At most `size` rows of `scores` (candidates × columns, each cell in [0, 1]), in order.

    `weights`: per column (default: equal), scaled to sum to 1. `cost`: per row, what a tie
    prefers less of (default: none, so the earlier row).
    """
    values = scores.to_numpy(dtype=float)
    columns = len(scores.columns)
    weight = (np.full(columns, 1.0) if weights is None
              else weights.reindex(scores.columns).to_numpy(dtype=float))
    weight = weight / weight.sum()
    price = (np.zeros(len(scores)) if cost is None
             else cost.reindex(scores.index).to_numpy(dtype=float))
    left = list(range(len(scores)))
    best = np.zeros(columns)
    picks: list[Pick] = []
    round_number = 1
    while left and len(picks) < size:
        gains = np.array([(np.maximum(best, values[i]) - best) @ weight for i in left])
        top = gains.max()
        if top <= TIE:
            if not best.any():
                break  # a fresh round and nothing adds: every candidate left is at 0
            best, round_number = np.zeros(columns), round_number + 1
            continue
        tied = [i for i, gain in zip(left, gains, strict=True) if gain >= top - TIE]
        chosen = min(tied, key=lambda i: (price[i], i))
        best = np.maximum(best, values[chosen])
        left.remove(chosen)
        picks.append(Pick(scores.index[chosen], float(best @ weight), round_number))
    return picks
