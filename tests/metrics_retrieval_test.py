"""Tests for musemb/metrics.py's first-relevant-rank metrics (Rush et al.'s album retrieval)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from musemb import metrics


def test_first_relevant_rank_by_hand_with_both_tie_rules():
  scores = np.array([
      [0.9, 0.5, 0.5, 0.1],  # relevant item 1 ties with irrelevant item 2
      [0.2, 0.2, 0.2, 0.2],  # everything tied
      [0.1, 0.8, 0.3, 0.9],  # relevant items 1 and 3: the first is item 3, at the top
      [0.4, 0.3, 0.2, 0.1],  # no relevant item
  ])
  relevance = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0]], bool)
  pess = metrics.first_relevant_rank(scores, relevance)
  opt = metrics.first_relevant_rank(scores, relevance, ties="optimistic")
  np.testing.assert_array_equal(pess, [3.0, 4.0, 1.0, np.nan])
  np.testing.assert_array_equal(opt, [2.0, 1.0, 1.0, np.nan])
  with pytest.raises(ValueError, match="ties="):
    metrics.first_relevant_rank(scores, relevance, ties="index")


def test_first_rank_metrics_by_hand():
  ranks = np.array([1.0, 3.0, 12.0, 6.0, np.nan, 2.0])
  out = metrics.first_rank_metrics(ranks, ks=(1, 5, 10))
  assert out["num_queries"] == 5.0  # the query without a relevant item is left out
  assert out["r@1"] == pytest.approx(1 / 5)
  assert out["r@5"] == pytest.approx(3 / 5)
  assert out["r@10"] == pytest.approx(4 / 5)
  assert out["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 6 + 1 / 2) / 5)
  assert out["median_rank"] == 3.0
  assert metrics.first_rank_metrics([4.0, 1.0])["median_rank"] == 2.5
  with pytest.raises(ValueError, match="no query has a relevant item"):
    metrics.first_rank_metrics([np.nan])


def test_review_to_album_and_album_to_review_directions():
  # 3 albums, 5 reviews (album of each review below); scores are -distances in a 1-d space.
  album_pos = np.array([0.0, 1.0, 2.0])
  review_pos = np.array([0.5, 1.625, 0.875, 2.25, 0.375])
  review_album = np.array([0, 1, 1, 2, 2])
  scores = -np.abs(review_pos[:, None] - album_pos[None, :])  # [reviews, albums]
  relevance = review_album[:, None] == np.arange(3)[None, :]
  ranks = metrics.first_relevant_rank(scores, relevance)
  # Review 0 (0.5) is as near album 1 as its own album 0: the tie counts against it, rank 2.
  # Review 1 (1.625): album 2 (0.375) before its album 1 (0.625): rank 2. Reviews 2 and 3 find
  # theirs first. Review 4 (0.375): albums 0, 1, then its album 2: rank 3.
  np.testing.assert_array_equal(ranks, [2, 2, 1, 1, 3])
  out = metrics.first_rank_metrics(ranks, ks=(1, 2))
  assert out["r@1"] == pytest.approx(2 / 5) and out["r@2"] == pytest.approx(4 / 5)
  assert out["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1 + 1 + 1 / 3) / 5)
  assert out["median_rank"] == 2.0
  # recall_at_k breaks the tie by index (album 0 first), so it counts review 0 as a hit; the
  # optimistic rule agrees here, the pessimistic one does not.
  assert metrics.recall_at_k(scores, relevance, 1) == pytest.approx(3 / 5)
  optimistic = metrics.first_relevant_rank(scores, relevance, ties="optimistic")
  assert metrics.first_rank_metrics(optimistic, ks=(1,))["r@1"] == pytest.approx(3 / 5)
  # Album -> reviews, found at the best-ranked of its reviews. Album 0 (0.0): review 4 (0.375,
  # album 2) comes before its review 0 (0.5): rank 2. Album 1 (1.0): review 2 (0.125) first.
  # Album 2 (2.0): review 3 (0.25) first.
  album_ranks = metrics.first_relevant_rank(scores.T, relevance.T)
  np.testing.assert_array_equal(album_ranks, [2, 1, 1])


def _enumerated_chance(num_candidates, num_relevant, ks):
  """Averages over every placement of the relevant items: the exact expectation."""
  ranks = []
  for relevant in itertools.combinations(range(num_candidates), num_relevant):
    ranks.append(min(relevant) + 1)
  ranks = np.array(ranks, float)
  out = {f"r@{k}": float((ranks <= k).mean()) for k in ks}
  out["mrr"] = float((1 / ranks).mean())
  return out, ranks


@pytest.mark.parametrize("num_candidates, num_relevant", [(4, 1), (4, 2), (7, 3), (6, 6)])
def test_chance_levels_match_exhaustive_enumeration(num_candidates, num_relevant):
  ks = (1, 2, 5)
  out = metrics.chance_first_rank_metrics(num_candidates, num_relevant, ks=ks)
  expected, ranks = _enumerated_chance(num_candidates, num_relevant, ks)
  for key, value in expected.items():
    assert out[key] == pytest.approx(value, rel=1e-9), key
  # The median of a uniformly chosen placement's rank, as np.median of all placements gives it
  # (each placement equally likely, so the enumeration is the distribution).
  assert out["median_rank"] == pytest.approx(np.median(ranks))


def test_chance_levels_by_hand_and_for_mixed_counts():
  out = metrics.chance_first_rank_metrics(4, 1, ks=(1, 2))
  assert out["r@1"] == pytest.approx(0.25) and out["r@2"] == pytest.approx(0.5)
  assert out["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
  assert out["median_rank"] == 2.5
  # N = 4, n = 2: P(R = 1, 2, 3) = 3/6, 2/6, 1/6.
  out = metrics.chance_first_rank_metrics(4, 2, ks=(1, 2))
  assert out["r@1"] == pytest.approx(1 / 2) and out["r@2"] == pytest.approx(5 / 6)
  assert out["mrr"] == pytest.approx(1 / 2 + 1 / 3 / 2 + 1 / 6 / 3)
  assert out["median_rank"] == 1.5
  # Per-query counts: recall and MRR are means over the queries.
  mixed = metrics.chance_first_rank_metrics(4, np.array([1, 2, 2]), ks=(1,))
  assert mixed["r@1"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
  # The review -> album setting at MARD's scale: k / N and H_N / N.
  big = metrics.chance_first_rank_metrics(868, 1)
  assert big["r@10"] == pytest.approx(10 / 868)
  assert big["mrr"] == pytest.approx(sum(1 / r for r in range(1, 869)) / 868)
  assert big["median_rank"] == pytest.approx(434.5)
  # A large album -> review setting stays finite (log-space binomials).
  huge = metrics.chance_first_rank_metrics(20_000, np.array([1, 50, 400]), ks=(10,))
  assert all(math.isfinite(v) for v in huge.values())
  with pytest.raises(ValueError, match="num_relevant"):
    metrics.chance_first_rank_metrics(4, 5)
