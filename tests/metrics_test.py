"""Tests for musemb.metrics: scikit-learn references, hand-computed values, top-k equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from sklearn import metrics as skm

from musemb import metrics


def _random_case(seed: int, queries: int = 40, items: int = 30, levels: int | None = 5):
  """Scores with many ties (integer levels) or none, and relevance with some empty/full rows."""
  rng = np.random.default_rng(seed)
  if levels is None:
    scores = rng.normal(size=(queries, items))
  else:
    scores = rng.integers(0, levels, size=(queries, items)).astype(np.float64)
  relevance = rng.random((queries, items)) < rng.uniform(0.05, 0.5, size=(queries, 1))
  relevance[0] = False  # no positive
  relevance[1] = True  # no negative
  relevance[2] = False
  relevance[2, 3] = True  # a single positive
  return scores, relevance


@pytest.mark.parametrize("levels", [3, 5, None])
def test_average_precision_matches_sklearn_per_row(levels):
  scores, relevance = _random_case(0, levels=levels)
  got = metrics.average_precision(scores, relevance, reduce="none")
  assert np.isnan(got[0])
  for q in range(1, scores.shape[0]):
    if relevance[q].any():
      want = skm.average_precision_score(relevance[q], scores[q])
      np.testing.assert_allclose(got[q], want, rtol=1e-12, err_msg=f"query {q}")
  valid = relevance.any(axis=1)
  np.testing.assert_allclose(metrics.mean_average_precision(scores, relevance),
                             got[valid].mean(), rtol=1e-12)
  np.testing.assert_allclose(metrics.average_precision(scores, relevance), got[valid].mean())


@pytest.mark.parametrize("levels", [2, 5, None])
def test_roc_auc_matches_sklearn_per_row(levels):
  scores, relevance = _random_case(1, levels=levels)
  got = metrics.roc_auc(scores, relevance, reduce="none")
  for q in range(scores.shape[0]):
    if relevance[q].any() and not relevance[q].all():
      want = skm.roc_auc_score(relevance[q], scores[q])
      np.testing.assert_allclose(got[q], want, rtol=1e-12, err_msg=f"query {q}")
    else:
      assert np.isnan(got[q]), q
  assert np.isnan(got[0]) and np.isnan(got[1])
  valid = ~np.isnan(got)
  np.testing.assert_allclose(metrics.roc_auc(scores, relevance), got[valid].mean(), rtol=1e-12)


def test_per_label_metrics_match_sklearn_columns():
  # 150 label columns: past the int8 column-reordering trap in scikit-learn, which bool avoids.
  rng = np.random.default_rng(2)
  scores = rng.integers(0, 4, size=(60, 150)).astype(np.float32)
  relevance = rng.random((60, 150)) < 0.2
  relevance[:, 7] = False
  relevance[:, 9] = True
  ap = metrics.per_label_average_precision(scores, relevance, reduce="none")
  auc = metrics.per_label_roc_auc(scores, relevance, reduce="none")
  assert ap.shape == auc.shape == (150,)
  assert np.isnan(ap[7]) and np.isnan(auc[7]) and np.isnan(auc[9])
  cols = relevance.any(axis=0)
  want_ap = skm.average_precision_score(relevance[:, cols], scores[:, cols], average=None)
  np.testing.assert_allclose(ap[cols], want_ap, rtol=1e-6)
  both = cols & ~relevance.all(axis=0)
  want_auc = skm.roc_auc_score(relevance[:, both], scores[:, both], average=None)
  np.testing.assert_allclose(auc[both], want_auc, rtol=1e-6)
  np.testing.assert_allclose(metrics.per_label_roc_auc(scores, relevance), want_auc.mean(),
                             rtol=1e-6)
  # Retrieval precision@k per label is precision@k of the transposed problem.
  p5 = metrics.per_label_precision_at_k(scores, relevance, 5, reduce="none")
  np.testing.assert_array_equal(p5, metrics.precision_at_k(scores.T, relevance.T, 5, "none"))


def test_precision_and_recall_at_k_by_hand_with_index_tie_break():
  scores = np.array([
      [0.9, 0.5, 0.5, 0.5, 0.1],  # ties at 0.5: items 1, 2 rank before 3
      [0.0, 0.0, 0.0, 0.0, 0.0],  # all tied: index order
      [0.2, 0.8, 0.4, 0.6, 1.0],
      [0.3, 0.2, 0.1, 0.0, -1.0],  # no relevant item
  ])
  relevance = np.array([
      [0, 0, 0, 1, 1],
      [0, 1, 0, 0, 1],
      [1, 1, 0, 0, 1],
      [0, 0, 0, 0, 0],
  ], dtype=np.int32)
  # Top 3: row 0 -> {0, 1, 2}, row 1 -> {0, 1, 2}, row 2 -> {4, 1, 3}.
  p3 = metrics.precision_at_k(scores, relevance, 3, reduce="none")
  np.testing.assert_allclose(p3[:3], [0 / 3, 1 / 3, 2 / 3])
  assert np.isnan(p3[3])
  assert metrics.precision_at_k(scores, relevance, 3) == pytest.approx(1 / 3)
  r3 = metrics.recall_at_k(scores, relevance, 3, reduce="none")
  np.testing.assert_allclose(r3[:3], [0 / 2, 1 / 2, 2 / 3])
  # Top 4 takes item 3 of row 0 (the last of the tied block) before item 4.
  np.testing.assert_allclose(metrics.precision_at_k(scores, relevance, 4, "none")[:3],
                             [1 / 4, 1 / 4, 2 / 4])
  np.testing.assert_allclose(metrics.recall_at_k(scores, relevance, 5, "none")[:3], [1, 1, 1])


def test_map_at_n_by_hand():
  # Ranking of 6 items: relevant at ranks 1, 3 and 6, plus one relevant item the list never shows
  # is impossible in a full matrix, so a second query checks the min(n, |relevant|) normaliser.
  scores = np.array([
      [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
      [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
  ])
  relevance = np.array([
      [1, 0, 1, 0, 0, 1],
      [0, 1, 1, 1, 1, 0],
  ], dtype=bool)
  full = metrics.map_at_n(scores, relevance, n=500, reduce="none")
  np.testing.assert_allclose(full, [(1 + 2 / 3 + 3 / 6) / 3, (1 / 2 + 2 / 3 + 3 / 4 + 4 / 5) / 4])
  trunc = metrics.map_at_n(scores, relevance, n=3, reduce="none")
  # n = 3: first query sums P@1 + P@3 over min(3, 3); second P@2 + P@3 over min(3, 4).
  np.testing.assert_allclose(trunc, [(1 + 2 / 3) / 3, (1 / 2 + 2 / 3) / 3])
  assert metrics.map_at_n(scores, relevance, n=3) == pytest.approx(trunc.mean())


def test_map_at_n_without_ties_and_full_length_is_average_precision():
  scores, relevance = _random_case(3, levels=None)
  np.testing.assert_allclose(metrics.map_at_n(scores, relevance, n=500, reduce="none"),
                             metrics.average_precision(scores, relevance, reduce="none"),
                             rtol=1e-12)


def test_queries_without_positives_are_nan_and_excluded():
  scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
  relevance = np.array([[0, 1, 0], [0, 0, 0]], dtype=bool)
  for fn in (lambda s, r, red: metrics.precision_at_k(s, r, 1, red),
             lambda s, r, red: metrics.recall_at_k(s, r, 1, red),
             metrics.average_precision,
             metrics.roc_auc,
             lambda s, r, red: metrics.map_at_n(s, r, 2, red)):
    per_query = fn(scores, relevance, "none")
    assert per_query[0] == 1.0 and np.isnan(per_query[1])
    assert fn(scores, relevance, "mean") == 1.0
    with pytest.raises(ValueError, match="No query has"):
      fn(scores[1:], relevance[1:], "mean")


def _relevant_forms(relevance: np.ndarray):
  ids = [np.nonzero(row)[0] for row in relevance]
  # Duplicated ids must count once.
  dup = [np.concatenate([r, r[:1]]) for r in ids]
  csr = scipy.sparse.csr_array(relevance)
  return {
      "lookup": relevance,
      "list": ids,
      "list_with_duplicates": dup,
      "csr_pair": (csr.indptr, csr.indices),
      "scipy": scipy.sparse.csr_matrix(relevance),
  }


@pytest.mark.parametrize("form", ["lookup", "list", "list_with_duplicates", "csr_pair", "scipy"])
def test_from_topk_equals_full_matrix(form):
  scores, relevance = _random_case(4, levels=4)
  width = 12
  topk = np.argsort(-scores, axis=1, kind="stable")[:, :width]
  relevant = _relevant_forms(relevance)[form]
  np.testing.assert_array_equal(metrics.hits_from_topk(topk, relevant),
                                np.take_along_axis(relevance, topk, axis=1))
  for k in (1, 5, width):
    np.testing.assert_array_equal(
        metrics.precision_at_k_from_topk(topk, relevant, k, reduce="none"),
        metrics.precision_at_k(scores, relevance, k, reduce="none"))
    np.testing.assert_array_equal(
        metrics.recall_at_k_from_topk(topk, relevant, k, reduce="none"),
        metrics.recall_at_k(scores, relevance, k, reduce="none"))
    np.testing.assert_allclose(
        metrics.map_at_n_from_topk(topk, relevant, k, reduce="none"),
        metrics.map_at_n(scores, relevance, k, reduce="none"), rtol=1e-12)
  assert metrics.precision_at_k_from_topk(topk, relevant) == pytest.approx(
      metrics.precision_at_k(scores, relevance, width))


def test_from_topk_empty_slots_are_misses():
  topk = np.array([[4, 2, -1, -1], [0, -1, -1, -1]])
  relevant = [np.array([2, 7]), np.array([0])]
  np.testing.assert_array_equal(metrics.hits_from_topk(topk, relevant),
                                [[False, True, False, False], [True, False, False, False]])
  np.testing.assert_allclose(metrics.precision_at_k_from_topk(topk, relevant, reduce="none"),
                             [1 / 4, 1 / 4])
  np.testing.assert_allclose(metrics.recall_at_k_from_topk(topk, relevant, reduce="none"),
                             [1 / 2, 1.0])


def test_errors_are_clear():
  scores = np.zeros((2, 3))
  relevance = np.ones((2, 3), dtype=bool)
  with pytest.raises(ValueError, match=r"k=4 must be an integer in \[1, 3\]"):
    metrics.precision_at_k(scores, relevance, 4)
  with pytest.raises(ValueError, match="reduce='sum'"):
    metrics.average_precision(scores, relevance, reduce="sum")
  with pytest.raises(ValueError, match="NaN"):
    metrics.roc_auc(np.array([[0.1, np.nan, 0.2]]), np.array([[1, 0, 0]]))
  with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
    metrics.average_precision(scores, relevance[:1])
  with pytest.raises(ValueError, match="binary"):
    metrics.average_precision(scores, np.full((2, 3), 2))
  with pytest.raises(ValueError, match="must be 2-D"):
    metrics.average_precision(np.zeros(3), np.ones(3, dtype=bool))
  topk = np.zeros((2, 3), dtype=np.int32)
  with pytest.raises(ValueError, match="indptr"):
    metrics.hits_from_topk(topk, (np.array([0, 1]), np.array([0])))
  with pytest.raises(ValueError, match="bool lookup"):
    metrics.hits_from_topk(topk, np.array([[0, 1], [1, 2]]))
  with pytest.raises(ValueError, match="one per query"):
    metrics.hits_from_topk(topk, [np.array([0])])
  with pytest.raises(ValueError, match=r"k=4 must be an integer in \[1, 3\]"):
    metrics.precision_at_k_from_topk(topk, [np.array([0]), np.array([1])], k=4)
  with pytest.raises(ValueError, match="n=0 must be a positive integer"):
    metrics.map_at_n(scores, relevance, n=0)
