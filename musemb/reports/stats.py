"""Paired comparisons of per-query values: wins, losses, draws and Wilcoxon tests (scipy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.stats


def wins_losses_draws(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
  """Paired comparison of per-query values a (MUSLSE) and b (baseline), both `[queries]`, finite.

  Returns wins/losses/draws of a against b, the Wilcoxon signed-rank test (zero differences dropped,
  `zero_method="wilcox"`) and the Wilcoxon rank-sum test the paper names, both two-sided. A p-value
  is None when the test is undefined (no queries, or no query where the two differ).
  """
  a = np.asarray(a, dtype=np.float64)
  b = np.asarray(b, dtype=np.float64)
  wins, losses = int(np.sum(a > b)), int(np.sum(a < b))
  result = {"queries": int(a.size), "wins": wins, "losses": losses,
            "draws": int(np.sum(a == b)), "signed_rank_p": None, "rank_sum_p": None}
  if wins + losses > 0:
    result["signed_rank_p"] = float(scipy.stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
  if a.size > 0:
    result["rank_sum_p"] = float(scipy.stats.ranksums(a, b).pvalue)
  return result
