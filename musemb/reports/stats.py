"""Paired comparisons of per-query values: wins, losses, draws and Wilcoxon tests (scipy), and
paired bootstrap intervals of a difference of means."""

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


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, chunk: int = 256) -> dict[str, Any]:
  """Percentile bootstrap of mean(a) - mean(b) and mean(a) / mean(b) - 1 over paired queries.

  a (e.g. the proposed model) and b (the baseline) are `[queries]` values of the same queries
  (songs or tags), finite. Each resample draws the queries with replacement and keeps the pairs
  together, so what varies between queries (hard tags, easy songs) cancels and the interval is
  that of the difference itself. An interval that excludes 0 says the difference is unlikely to
  be the luck of which queries were drawn; it says nothing of another training seed.

  Returns:
    {"queries", "mean_a", "mean_b", "difference", "difference_low", "difference_high",
     "relative", "relative_low", "relative_high"}; the relative entries are None when mean(b) is
    0 (or a resample's is), everything but "queries" None without queries.
  """
  a = np.asarray(a, dtype=np.float64).reshape(-1)
  b = np.asarray(b, dtype=np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f"paired_bootstrap: a has {a.size} queries and b {b.size}; pair them first.")
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    raise ValueError("paired_bootstrap: non-finite values; drop the queries without a value.")
  if not 0 < confidence < 1 or resamples < 1:
    raise ValueError(f"paired_bootstrap: confidence={confidence} must be in (0, 1) and "
                     f"resamples={resamples} >= 1.")
  n = a.size
  out: dict[str, Any] = {"queries": int(n), "mean_a": None, "mean_b": None, "difference": None,
                         "difference_low": None, "difference_high": None, "relative": None,
                         "relative_low": None, "relative_high": None}
  if n == 0:
    return out
  rng = np.random.default_rng(seed)
  means_a, means_b = [], []
  for start in range(0, resamples, chunk):
    rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
    means_a.append(a[rows].mean(axis=1))
    means_b.append(b[rows].mean(axis=1))
  means_a, means_b = np.concatenate(means_a), np.concatenate(means_b)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(means_a - means_b, [tail, 100 - tail])
  out.update(mean_a=float(a.mean()), mean_b=float(b.mean()), difference=float(a.mean() - b.mean()),
             difference_low=float(low), difference_high=float(high))
  if b.mean() != 0 and np.all(means_b != 0):
    rel_low, rel_high = np.percentile(means_a / means_b - 1, [tail, 100 - tail])
    out.update(relative=float(a.mean() / b.mean() - 1), relative_low=float(rel_low),
               relative_high=float(rel_high))
  return out
