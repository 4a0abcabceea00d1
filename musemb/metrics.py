"""Ranking metrics for annotation and retrieval: exact, numpy, per query.

Every system in musemb is evaluated by ranking: a query (a song, a tag, a user, a sentence) ranks
items (tags, artists, songs) by a score, highest first, and the metrics below say how good the top
of that ranking is. Two kinds of input are accepted:

* full matrices `scores: [queries, items]` (float) and `relevance: [queries, items]` (bool, or 0/1
  integers) when they fit in memory;
* precomputed top-k lists `topk_idx: [queries, K]` (from `musemb.ranking.top_k_scores`) with the
  relevant item ids per query, for catalogues where the full score matrix must never exist.

Reduction. Every metric takes `reduce`:

* `"mean"` (default): the mean over the queries that have at least one relevant item (for ROC AUC:
  at least one relevant and one irrelevant item); the others are excluded, not counted as zero. A
  Python float is returned. If no query qualifies this is an error, since a mean over nothing would
  be a silent NaN in a results table.
* `"none"`: a float64 array `[queries]` with NaN for the queries that do not qualify.

Ties. Precision@k, recall@k and mAP@n score a single ranked list, so ties in `scores` are broken by
item index: the lower index ranks first (a stable sort on `-scores`, the same rule as
`musemb.ranking.top_k_scores`). Average precision and ROC AUC are defined on the scores themselves
and handle ties the way scikit-learn does, so that they match `average_precision_score` and
`roc_auc_score` applied row by row: AP steps through the distinct score values (a block of tied
items enters the ranking at once, and each of its relevant items gets the precision at the end of
the block); ROC AUC counts a tied relevant/irrelevant pair as half a correct pair (mid-ranks).

Per-label variants (`per_label_*`) rank the queries within each label column instead: the
retrieval direction ("which songs are `rock`?") used for tag-wise MAP and ROC AUC.

Definitions follow the papers musemb reproduces: precision@k as in Weston et al. (MUSLSE), the
number of relevant items among the top k divided by k; recall@k as the fraction of a query's
relevant items found in the top k (with one relevant item per query, as in Rush et al.'s
text-to-music retrieval, it is the hit rate); truncated mAP@n as in the Million Song Dataset
Challenge (McFee, Bertin-Mahieux, Ellis, Lanckriet, "The Million Song Dataset Challenge", WWW 2012
Companion), used by Platt for LFM-1b with n = 500:
AP@n = (1 / min(n, |relevant|)) * sum_{k <= n} P@k * rel_k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse
import scipy.stats

_REDUCTIONS = ("mean", "none")


# ----------------------------------------------------------------------------- validation


def _check_reduce(reduce: str) -> None:
  if reduce not in _REDUCTIONS:
    raise ValueError(f"reduce={reduce!r} is not supported; expected one of {_REDUCTIONS}.")


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
  """Returns `scores` as a 2-D float array; NaN is an error (it has no place in a ranking)."""
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(
        f"{name} must be 2-D [queries, items]; got shape {scores.shape}. Reshape a single query "
        "to [1, items].")
  if not np.issubdtype(scores.dtype, np.floating):
    # Unsigned integers would wrap under negation, so rank in float64.
    scores = scores.astype(np.float64)
  if np.isnan(scores).any():
    rows = np.unique(np.nonzero(np.isnan(scores))[0])
    raise ValueError(
        f"{name} contains NaN in {rows.size} queries (first: row {rows[0]}); NaN cannot be "
        "ranked. Fix the model output or mask those items with -inf.")
  return scores


def _as_relevance(relevance: Any, shape: tuple[int, ...], name: str = "relevance") -> np.ndarray:
  """Returns `relevance` as a bool array of `shape`; values other than 0/1 are an error."""
  relevance = np.asarray(relevance)
  if relevance.shape != shape:
    raise ValueError(f"{name} has shape {relevance.shape}; expected {shape}, the shape of scores.")
  if relevance.dtype != np.bool_:
    if not np.isin(relevance, (0, 1)).all():
      raise ValueError(
          f"{name} must be binary (bool or 0/1); got values {np.unique(relevance)[:5]}. Graded "
          "relevance is not supported: threshold it first.")
    relevance = relevance.astype(bool)
  return relevance


def _check_k(k: int, limit: int, what: str, name: str = "k") -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
    raise ValueError(f"{name}={k!r} must be an integer in [1, {limit}] ({what}).")
  return int(k)


def _reduce(values: np.ndarray, valid: np.ndarray, reduce: str, what: str) -> float | np.ndarray:
  """Applies the reduction: NaN where not `valid`, or the mean over the valid queries."""
  values = np.where(valid, values, np.nan).astype(np.float64)
  if reduce == "none":
    return values
  if not valid.any():
    raise ValueError(
        f"No query has {what}, so the mean is undefined ({valid.size} queries). Check the "
        "relevance labels, or use reduce='none' to get the per-query NaNs.")
  return float(values[valid].mean())


# ----------------------------------------------------------------------------- ranked lists


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
  """The top-k items of each row under the index tie rule, as a mask.

  Equivalent to the first k columns of a stable argsort of -scores, in O(queries * items): the
  items above the k-th largest score are in, and the tied ones at that score fill the remaining
  places in index order.

  Args:
    scores: [queries, items] float, no NaN.
    k: 1 <= k <= items.

  Returns:
    [queries, items] bool with exactly k True per row.
  """
  kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
  above = scores > kth
  tied = scores == kth
  room = k - above.sum(axis=1, keepdims=True)
  return above | (tied & (np.cumsum(tied, axis=1, dtype=np.int64) <= room))


def _top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
  """[queries, k] item indices ranked by (-score, index): the stable-sort tie rule."""
  num_queries = scores.shape[0]
  # Row-major nonzero lists each row's k items in index order; the stable sort keeps that order
  # among ties.
  idx = np.nonzero(_top_k_mask(scores, k))[1].reshape(num_queries, k)
  order = np.argsort(-np.take_along_axis(scores, idx, axis=1), axis=1, kind="stable")
  return np.take_along_axis(idx, order, axis=1)


def _ap_at_n_from_hits(hits: np.ndarray, num_relevant: np.ndarray, n: int) -> np.ndarray:
  """AP@n of ranked lists: (1 / min(n, |relevant|)) * sum_{k <= n} P@k * rel_k.

  Args:
    hits: [queries, >= n] bool, whether the item at each rank is relevant.
    num_relevant: [queries] int, |relevant| of each query (0 gives NaN).
    n: the cut-off.

  Returns:
    [queries] float64.
  """
  hits = hits[:, :n]
  precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
  total = (precision * hits).sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return total / np.minimum(n, num_relevant)


# ----------------------------------------------------------------------------- full matrices


def precision_at_k(scores: Any, relevance: Any, k: int, reduce: str = "mean") -> float | np.ndarray:
  """Precision@k: relevant items among each query's top k, divided by k.

  Ties are broken toward the lower item index (see the module docstring).

  Args:
    scores: [queries, items] scores, higher ranks first; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    k: cut-off, 1 <= k <= items.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  k = _check_k(k, scores.shape[1], "the number of items")
  found = (_top_k_mask(scores, k) & relevance).sum(axis=1)
  return _reduce(found / k, relevance.any(axis=1), reduce, "a relevant item")


def recall_at_k(scores: Any, relevance: Any, k: int, reduce: str = "mean") -> float | np.ndarray:
  """Recall@k: the fraction of each query's relevant items that are in its top k.

  With one relevant item per query this is the hit rate (Rush et al.'s recall@K). Ties are broken
  toward the lower item index.

  Args:
    scores: [queries, items] scores, higher ranks first; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    k: cut-off, 1 <= k <= items.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  k = _check_k(k, scores.shape[1], "the number of items")
  found = (_top_k_mask(scores, k) & relevance).sum(axis=1)
  num_relevant = relevance.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    values = found / num_relevant
  return _reduce(values, num_relevant > 0, reduce, "a relevant item")


def average_precision(scores: Any, relevance: Any, reduce: str = "mean") -> float | np.ndarray:
  """Average precision of each query's ranking over all items (no cut-off).

  Equals scikit-learn's `average_precision_score(relevance[q], scores[q])` for every query q,
  ties included: AP = sum over distinct score thresholds t of (recall(t) - recall(t_prev)) *
  precision(t), where a threshold admits all items scoring >= t.

  Args:
    scores: [queries, items] scores; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  num_items = scores.shape[1]
  order = np.argsort(-scores, axis=1, kind="stable")
  sorted_scores = np.take_along_axis(scores, order, axis=1)
  sorted_rel = np.take_along_axis(relevance, order, axis=1)
  true_pos = np.cumsum(sorted_rel, axis=1)
  # A tie block ends where the next score differs; each position looks up the end of its block,
  # because the precision a relevant item contributes is the one at the threshold that admits it.
  block_end = np.ones(scores.shape, dtype=bool)
  block_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
  positions = np.arange(num_items)
  end_index = np.where(block_end, positions, num_items)
  end_index = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
  precision = np.take_along_axis(true_pos, end_index, axis=1) / (end_index + 1)
  num_relevant = true_pos[:, -1] if num_items else np.zeros(scores.shape[0], np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    values = (precision * sorted_rel).sum(axis=1) / num_relevant
  return _reduce(values, num_relevant > 0, reduce, "a relevant item")


def mean_average_precision(scores: Any, relevance: Any) -> float:
  """MAP: the mean of `average_precision` over the queries that have a relevant item.

  Args:
    scores: [queries, items] scores; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.

  Returns:
    A float.
  """
  return average_precision(scores, relevance, reduce="mean")


def roc_auc(scores: Any, relevance: Any, reduce: str = "mean") -> float | np.ndarray:
  """Area under the ROC curve of each query's ranking.

  Equals scikit-learn's `roc_auc_score(relevance[q], scores[q])` for every query q: the fraction of
  (relevant, irrelevant) pairs ordered correctly, a tied pair counting one half (the Mann-Whitney U
  statistic with mid-ranks). Queries without a relevant or without an irrelevant item have no AUC.

  Args:
    scores: [queries, items] scores; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    reduce: "mean" over queries with both kinds of items, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  num_pos = relevance.sum(axis=1).astype(np.float64)
  num_neg = scores.shape[1] - num_pos
  if scores.size:
    ranks = scipy.stats.rankdata(scores, method="average", axis=1)
    rank_sum = (ranks * relevance).sum(axis=1)
  else:
    rank_sum = np.zeros(scores.shape[0])
  with np.errstate(invalid="ignore", divide="ignore"):
    values = (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
  return _reduce(values, (num_pos > 0) & (num_neg > 0), reduce,
                 "both a relevant and an irrelevant item")


def map_at_n(scores: Any, relevance: Any, n: int = 500, reduce: str = "mean") -> float | np.ndarray:
  """Truncated mean average precision mAP@n of the Million Song Dataset Challenge.

  AP@n = (1 / min(n, |relevant|)) * sum_{k <= n} P@k * rel_k (McFee et al. 2012), where the ranked
  list breaks ties toward the lower item index. With fewer than n items the list is the whole
  ranking, so n is taken as min(n, items) (AP@n is then the untruncated AP with index tie-break).

  Args:
    scores: [queries, items] scores; NaN is an error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    n: the cut-off, >= 1; Platt (LFM-1b) and the MSD challenge use 500.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n={n!r} must be a positive integer (the cut-off, e.g. 500).")
  num_relevant = relevance.sum(axis=1)
  cut = min(int(n), scores.shape[1])
  if cut == 0:
    values = np.full(scores.shape[0], np.nan)
  else:
    hits = np.take_along_axis(relevance, _top_k_indices(scores, cut), axis=1)
    values = _ap_at_n_from_hits(hits, num_relevant, int(n))
  return _reduce(values, num_relevant > 0, reduce, "a relevant item")


# ----------------------------------------------------------------------------- per label


def per_label_average_precision(scores: Any, relevance: Any,
                                reduce: str = "mean") -> float | np.ndarray:
  """AP per label column: each label ranks the queries (retrieval direction).

  `average_precision` of the transposed matrices; with reduce="mean" this is the tag-wise
  (macro) retrieval MAP over labels that have a relevant query. Matches scikit-learn's
  `average_precision_score(relevance, scores, average=None)` on those labels.

  Args:
    scores: [queries, labels] scores; NaN is an error.
    relevance: [queries, labels] bool (or 0/1) ground truth.
    reduce: "mean" over labels with a relevant query, or "none" ([labels], NaN for the others).

  Returns:
    A float, or a [labels] float64 array for reduce="none".
  """
  return average_precision(np.asarray(scores).T, np.asarray(relevance).T, reduce=reduce)


def per_label_roc_auc(scores: Any, relevance: Any, reduce: str = "mean") -> float | np.ndarray:
  """ROC AUC per label column: each label ranks the queries (tag-wise, macro AUC).

  `roc_auc` of the transposed matrices. Unlike scikit-learn's `roc_auc_score(average="macro")`,
  which refuses a label column without both classes, such labels are excluded (NaN).

  Args:
    scores: [queries, labels] scores; NaN is an error.
    relevance: [queries, labels] bool (or 0/1) ground truth.
    reduce: "mean" over labels with both classes, or "none" ([labels], NaN for the others).

  Returns:
    A float, or a [labels] float64 array for reduce="none".
  """
  return roc_auc(np.asarray(scores).T, np.asarray(relevance).T, reduce=reduce)


def per_label_precision_at_k(scores: Any, relevance: Any, k: int,
                             reduce: str = "mean") -> float | np.ndarray:
  """Precision@k per label column: each label retrieves its top-k queries (e.g. songs for a tag).

  `precision_at_k` of the transposed matrices; ties go to the lower query index.

  Args:
    scores: [queries, labels] scores; NaN is an error.
    relevance: [queries, labels] bool (or 0/1) ground truth.
    k: cut-off, 1 <= k <= queries.
    reduce: "mean" over labels with a relevant query, or "none" ([labels], NaN for the others).

  Returns:
    A float, or a [labels] float64 array for reduce="none".
  """
  return precision_at_k(np.asarray(scores).T, np.asarray(relevance).T, k, reduce=reduce)


# ----------------------------------------------------------------------------- top-k lists

Relevant = Any
"""Relevant item ids per query, in one of these forms (Q = number of queries):

* a bool ndarray [Q, items]: a dense lookup;
* a tuple `(indptr, indices)`: CSR rows, the ids of query q are `indices[indptr[q]:indptr[q+1]]`;
* a scipy.sparse matrix [Q, items] whose nonzeros are the relevant pairs;
* a list (or other non-tuple sequence) of Q integer arrays.

Duplicate ids within a query count once.
"""


def _csr_from_relevant(relevant: Relevant, num_queries: int) -> tuple[np.ndarray, np.ndarray]:
  """Normalises the sparse forms of `Relevant` to (indptr [Q+1], indices [nnz]) int64."""
  if scipy.sparse.issparse(relevant):
    csr = scipy.sparse.csr_array(relevant)
    csr.eliminate_zeros()
    indptr, indices = csr.indptr, csr.indices
  elif isinstance(relevant, tuple):
    if len(relevant) != 2:
      raise ValueError(
          f"relevant given as a tuple must be the CSR pair (indptr, indices); got {len(relevant)} "
          "elements. Pass per-query id arrays as a list instead.")
    indptr, indices = (np.asarray(a) for a in relevant)
    if indptr.ndim != 1 or indptr.size != num_queries + 1:
      raise ValueError(
          f"relevant indptr has shape {indptr.shape}; expected ({num_queries + 1},) for "
          f"{num_queries} queries. Pass per-query id arrays as a list, not a tuple.")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
      raise ValueError(
          "relevant indptr must start at 0, never decrease and end at len(indices) "
          f"({indices.size}); got first={indptr[0]}, last={indptr[-1]}.")
  elif isinstance(relevant, Sequence):
    if len(relevant) != num_queries:
      raise ValueError(
          f"relevant has {len(relevant)} per-query arrays; expected one per query ({num_queries}).")
    rows = [np.asarray(r).reshape(-1) for r in relevant]
    indptr = np.zeros(num_queries + 1, np.int64)
    np.cumsum([r.size for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  else:
    raise TypeError(
        f"relevant of type {type(relevant).__name__} is not supported; pass a bool [queries, "
        "items] array, an (indptr, indices) tuple, a scipy.sparse matrix or a list of id arrays.")
  if indices.size and not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"relevant item ids must be integers; got dtype {indices.dtype}.")
  indices = indices.astype(np.int64)
  if indices.size and indices.min() < 0:
    raise ValueError(f"relevant item ids must be >= 0; got {indices.min()}.")
  return indptr.astype(np.int64), indices


def _hits_and_counts(topk_idx: Any, relevant: Relevant) -> tuple[np.ndarray, np.ndarray]:
  """Returns (hits [Q, K] bool, number of distinct relevant items per query [Q] int64)."""
  topk_idx = np.asarray(topk_idx)
  if topk_idx.ndim != 2 or not np.issubdtype(topk_idx.dtype, np.integer):
    raise ValueError(
        f"topk_idx must be a 2-D integer array [queries, K]; got shape {topk_idx.shape}, dtype "
        f"{topk_idx.dtype}.")
  if topk_idx.size and topk_idx.min() < -1:
    raise ValueError(f"topk_idx holds {topk_idx.min()}; item ids are >= 0, with -1 for no item.")
  num_queries = topk_idx.shape[0]
  present = topk_idx >= 0

  if (not isinstance(relevant, (tuple, list)) and not scipy.sparse.issparse(relevant)
      and hasattr(relevant, "__array__")):
    relevant = np.asarray(relevant)
    if relevant.ndim != 2 or relevant.dtype != np.bool_:
      raise ValueError(
          f"relevant as an array must be a bool lookup [queries, items]; got shape "
          f"{relevant.shape}, dtype {relevant.dtype}. For per-query id arrays pass a list "
          "(e.g. list(ids)) or an (indptr, indices) tuple.")
    lookup = relevant
    if lookup.shape[0] != num_queries:
      raise ValueError(
          f"relevant has {lookup.shape[0]} rows; expected one per query ({num_queries}).")
    if topk_idx.size and topk_idx.max() >= lookup.shape[1]:
      raise ValueError(
          f"topk_idx holds item {topk_idx.max()} but relevant covers {lookup.shape[1]} items.")
    rows = np.arange(num_queries)[:, None]
    hits = lookup[rows, np.where(present, topk_idx, 0)] & present
    return hits, lookup.sum(axis=1)

  indptr, indices = _csr_from_relevant(relevant, num_queries)
  # One sorted key per (query, item) pair turns the membership test of every query at once into a
  # single searchsorted, with no Python loop over queries.
  width = max(int(indices.max(initial=-1)), int(topk_idx.max(initial=-1))) + 1
  query_of = np.repeat(np.arange(num_queries, dtype=np.int64), np.diff(indptr))
  keys = np.unique(query_of * width + indices)
  counts = np.bincount(keys // max(width, 1), minlength=num_queries)
  wanted = np.arange(num_queries, dtype=np.int64)[:, None] * width + topk_idx
  if keys.size == 0:
    return np.zeros(topk_idx.shape, bool), counts
  pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
  return (keys[pos] == wanted) & present, counts


def hits_from_topk(topk_idx: Any, relevant: Relevant) -> np.ndarray:
  """Whether each retrieved item is relevant to its query.

  Args:
    topk_idx: [queries, K] int item ids per query, best first; -1 marks an empty slot (never a hit).
    relevant: relevant item ids per query; see `Relevant` (bool lookup, (indptr, indices) tuple,
      scipy.sparse matrix or list of id arrays).

  Returns:
    [queries, K] bool.
  """
  return _hits_and_counts(topk_idx, relevant)[0]


def _cut(topk_idx: Any, k: int | None, name: str) -> int:
  width = np.shape(topk_idx)[1] if np.ndim(topk_idx) == 2 else 0
  if k is None:
    k = width
  return _check_k(k, width, f"at most the {width} columns of topk_idx", name=name)


def precision_at_k_from_topk(topk_idx: Any, relevant: Relevant, k: int | None = None,
                             reduce: str = "mean") -> float | np.ndarray:
  """Precision@k from top-k lists; equals `precision_at_k` on the matrix they were ranked from.

  Empty slots (-1) count as misses: the denominator is always k.

  Args:
    topk_idx: [queries, K] int item ids per query, best first; -1 for an empty slot.
    relevant: relevant item ids per query; see `Relevant`.
    k: cut-off, 1 <= k <= K; default K.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  k = _cut(topk_idx, k, "k")
  hits, counts = _hits_and_counts(topk_idx, relevant)
  return _reduce(hits[:, :k].sum(axis=1) / k, counts > 0, reduce, "a relevant item")


def recall_at_k_from_topk(topk_idx: Any, relevant: Relevant, k: int | None = None,
                          reduce: str = "mean") -> float | np.ndarray:
  """Recall@k from top-k lists; equals `recall_at_k` on the matrix they were ranked from.

  Args:
    topk_idx: [queries, K] int item ids per query, best first; -1 for an empty slot.
    relevant: relevant item ids per query; see `Relevant`. Its counts are the recall denominators,
      so it must list all relevant items, not only the retrieved ones.
    k: cut-off, 1 <= k <= K; default K.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  k = _cut(topk_idx, k, "k")
  hits, counts = _hits_and_counts(topk_idx, relevant)
  with np.errstate(invalid="ignore", divide="ignore"):
    values = hits[:, :k].sum(axis=1) / counts
  return _reduce(values, counts > 0, reduce, "a relevant item")


def map_at_n_from_topk(topk_idx: Any, relevant: Relevant, n: int | None = None,
                       reduce: str = "mean") -> float | np.ndarray:
  """Truncated mAP@n from top-n lists; equals `map_at_n` on the matrix they were ranked from.

  Args:
    topk_idx: [queries, K] int item ids per query, best first; -1 for an empty slot.
    relevant: relevant item ids per query; see `Relevant` (all of them: min(n, |relevant|) is the
      normaliser).
    n: cut-off, 1 <= n <= K; default K.
    reduce: "mean" over queries with a relevant item, or "none" (NaN for the others).

  Returns:
    A float, or a [queries] float64 array for reduce="none".
  """
  _check_reduce(reduce)
  n = _cut(topk_idx, n, "n")
  hits, counts = _hits_and_counts(topk_idx, relevant)
  return _reduce(_ap_at_n_from_hits(hits, counts, n), counts > 0, reduce, "a relevant item")


# ----------------------------------------------------------------------------- first relevant rank

_TIE_RULES = ("pessimistic", "optimistic")


def first_relevant_rank(scores: Any, relevance: Any, ties: str = "pessimistic") -> np.ndarray:
  """The 1-based rank of each query's best-ranked relevant item.

  This is the rank Rush et al.'s album retrieval reads recall@k, MRR and median rank off: for a
  review, where its album falls among all test albums; for an album, where the first of its
  reviews falls among all test reviews ("found when any of its reviews is").

  Ties are counted, not broken by index: with s the best score of a relevant item,
  "pessimistic" gives rank 1 + #{irrelevant items scoring >= s} (a tie with an irrelevant item goes
  against the query, so a model that scores everything alike gets the worst rank, not the best),
  "optimistic" 1 + #{irrelevant items scoring > s}. Relevant items never push each other down.

  Args:
    scores: [queries, items] scores, higher ranks first (pass -distance for distances); NaN is an
      error.
    relevance: [queries, items] bool (or 0/1) ground truth.
    ties: "pessimistic" or "optimistic".

  Returns:
    [queries] float64 ranks in [1, items], NaN for queries without a relevant item.
  """
  if ties not in _TIE_RULES:
    raise ValueError(f"ties={ties!r} is not supported; expected one of {_TIE_RULES}.")
  scores = _as_scores(scores)
  relevance = _as_relevance(relevance, scores.shape)
  best = np.where(relevance, scores, -np.inf).max(axis=1, initial=-np.inf)[:, None]
  ahead = (scores >= best) if ties == "pessimistic" else (scores > best)
  ranks = 1.0 + (ahead & ~relevance).sum(axis=1)
  return np.where(relevance.any(axis=1), ranks, np.nan)


def first_rank_metrics(ranks: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """recall@k (the fraction of queries whose first relevant item is within the top k), MRR and
  median rank from per-query ranks (`first_relevant_rank`); NaN ranks (no relevant item) are left
  out of every value, and "num_queries" counts the rest.

  With one relevant item per query (review -> album) recall@k is `recall_at_k`; with several
  (album -> reviews) it is the hit rate, the fraction of queries that find at least one.
  """
  ranks = np.asarray(ranks, np.float64).reshape(-1)
  ranks = ranks[np.isfinite(ranks)]
  if ranks.size == 0:
    raise ValueError("first_rank_metrics: no query has a relevant item, so the metrics are "
                     "undefined; check the relevance labels.")
  if (ranks < 1).any():
    raise ValueError(f"first_rank_metrics: ranks are 1-based; got {ranks.min()}.")
  out = {}
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"first_rank_metrics: k={k!r} must be a positive int.")
    out[f"r@{int(k)}"] = float((ranks <= k).mean())
  out["mrr"] = float((1.0 / ranks).mean())
  out["median_rank"] = float(np.median(ranks))
  out["num_queries"] = float(ranks.size)
  return out


def chance_first_rank_metrics(num_candidates: int, num_relevant: Any = 1,
                              ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """What `first_rank_metrics` expects of a uniformly random ranking: the chance levels.

  For N candidates of which n are relevant, the first relevant item's rank R of a random
  permutation has P(R = r) = C(N - r, n - 1) / C(N, n), r = 1 .. N - n + 1, so
  recall@k = 1 - C(N - n, k) / C(N, k) and MRR = E[1 / R]; for n = 1 these are k / N and H_N / N.
  With per-query counts n_q, recall@k and MRR are the means over the queries, and the median rank
  is the median of R for a query drawn at random (the pooled distribution), which is what the
  median of observed ranks estimates; a distribution function that reaches exactly 1/2 at r gives
  (r + r') / 2 with r' the next possible rank, as np.median does for an even sample (for n = 1:
  (N + 1) / 2).

  Args:
    num_candidates: N, the items each query ranks (all test albums, or all test reviews).
    num_relevant: n, an int or one int per query (e.g. each test album's number of reviews);
      each in [1, N].
    ks: the recall cut-offs.

  Returns:
    {"r@k": ..., "mrr": ..., "median_rank": ...}.
  """
  if isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer)) \
      or num_candidates < 1:
    raise ValueError(f"chance_first_rank_metrics: num_candidates={num_candidates!r} must be a "
                     "positive int.")
  n_all = np.asarray(num_relevant).reshape(-1)
  if n_all.size == 0 or not np.issubdtype(n_all.dtype, np.integer) or n_all.min() < 1 \
      or n_all.max() > num_candidates:
    raise ValueError(f"chance_first_rank_metrics: num_relevant must be ints in [1, "
                     f"{num_candidates}]; got {n_all[:5]}{'...' if n_all.size > 5 else ''}.")
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"chance_first_rank_metrics: k={k!r} must be a positive int.")
  big_n = int(num_candidates)
  values, counts = np.unique(n_all, return_counts=True)
  weights = counts / counts.sum()
  r = np.arange(1, big_n + 1, dtype=np.float64)
  pooled = np.zeros(big_n)
  out = {f"r@{int(k)}": 0.0 for k in ks}
  mrr = 0.0
  for n, w in zip(values.tolist(), weights):
    # log C(N - r, n - 1) - log C(N, n); -inf (probability 0) for ranks beyond N - n + 1.
    pmf = np.exp(_log_comb(big_n - r, n - 1) - _log_comb(big_n, n))
    pooled += w * pmf
    mrr += w * float((pmf / r).sum())
    cdf = np.cumsum(pmf)
    for k in ks:
      out[f"r@{int(k)}"] += w * float(min(cdf[min(int(k), big_n) - 1], 1.0))
  out = {key: float(v) for key, v in out.items()}
  out["mrr"] = float(mrr)
  cdf = np.cumsum(pooled)
  lo = int(np.searchsorted(cdf, 0.5 - 1e-12))
  if np.isclose(cdf[lo], 0.5, rtol=0.0, atol=1e-12):
    after = np.flatnonzero(pooled[lo + 1:] > 0)
    out["median_rank"] = float((r[lo] + r[lo + 1 + after[0]]) / 2.0 if after.size else r[lo])
  else:
    out["median_rank"] = float(r[lo])
  return out


def _log_comb(n: Any, k: Any) -> np.ndarray:
  """log C(n, k) for n >= k >= 0 (arrays broadcast); -inf where k > n."""
  from scipy.special import gammaln  # only the chance levels need it
  n, k = np.asarray(n, np.float64), np.asarray(k, np.float64)
  with np.errstate(invalid="ignore"):
    out = gammaln(n + 1) - gammaln(k + 1) - gammaln(np.maximum(n - k, 0) + 1)
  return np.where(k <= n, out, -np.inf)
