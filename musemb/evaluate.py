"""Task evaluators shared by the systems: rank items for queries in chunks and score precision@k.

A system turns a task into `(queries [Q, d], items [N, d], relevant: list of item-id arrays)`;
`retrieval_metrics` ranks with `musemb.ranking.top_k_scores` (jitted fixed-size chunks with
`lax.top_k`, so a queries x items matrix never exists whole) and turns the top-k lists into
per-query precision@k and recall@k. Queries without any relevant item are left out of the means
(and are NaN in the per-query arrays), as is usual for p@k.

`masked_retrieval_metrics` is for small label sets whose queries each exclude a set of items (e.g.
the similar artists seen in training): it scores a chunk of queries against all items at once.

`recommendation_metrics` is Table 6.1 of Platt's thesis (users ranking held-out songs), and the
proxy task (`fit_and_score`, `tag_prediction_from_factors`) is its chapter 5: how much of the tags
a linear model reads off latent factors. The factors are l2-normalised first, as the thesis'
factor-regression target is, so that the task sees their directions, the part a dot-product
recommender uses. Departures from the thesis: one seeded random split of the items instead of
Choi's MSD tagging split, and full-batch Adam for a fixed number of steps instead of 20 epochs
with early stopping (a convex problem, so the fit is fully determined by the data, the split and
these settings). Next to the factors' AUC the same procedure runs on Gaussian random factors of
the same shape: the chance level (about 0.5) that says how much of the score the factors earn.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from musemb import metrics as metrics_lib
from musemb import ranking
from musemb import utils


def _per_query(topk: np.ndarray, relevant: list[np.ndarray], ks: Sequence[int]
               ) -> dict[str, np.ndarray]:
  """Per-query p@k and r@k (NaN for queries without relevant items) from top-k lists [Q, K].

  The hits are looked up once (`metrics.hits_from_topk`) and every k reads their running sum; p@k
  divides by k even when fewer than k items could be ranked (the usual definition)."""
  hits = np.cumsum(metrics_lib.hits_from_topk(topk, relevant), axis=1)
  num_relevant = np.array([len(np.unique(r)) for r in relevant])
  has = num_relevant > 0
  out = {}
  for k in ks:
    found = hits[:, min(k, hits.shape[1]) - 1] if hits.shape[1] else np.zeros(len(topk))
    out[f"p@{k}"] = np.where(has, found / k, np.nan)
    out[f"r@{k}"] = np.where(has, found / np.maximum(num_relevant, 1), np.nan)
  return out


def summarise(per_query: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over the queries that have a relevant item, plus their count."""
  out = {}
  for name, values in per_query.items():
    ok = np.isfinite(values)
    out[name] = float(values[ok].mean()) if ok.any() else float("nan")
  first = next(iter(per_query.values()))
  out["num_queries"] = float(np.isfinite(first).sum())
  return out


def retrieval_metrics(queries: np.ndarray, items: np.ndarray, relevant: list[np.ndarray],
                      ks: Sequence[int], *, exclude: np.ndarray | None = None,
                      query_chunk: int = 256, item_chunk: int | None = None
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Precision@k and recall@k of ranking `items` by dot product with each query.

  queries: [Q, d]; items: [N, d]; relevant: Q arrays of relevant item ids; exclude: [Q] item id to
  leave out of each query's ranking (e.g. the query song itself), -1 for none.
  Returns (means, per-query arrays) keyed "p@k" / "r@k".
  """
  if len(queries) != len(relevant):
    raise ValueError(f"{len(queries)} queries but {len(relevant)} relevance lists.")
  k = min(max(ks), items.shape[0] - (0 if exclude is None else 1))
  if k < 1:
    # Nothing to rank (a split of one song asked for its similar songs): every query is excluded
    # from the means, as a query without relevant items is, instead of an error mid-training.
    per_query = _per_query(np.full((len(queries), 0), -1, np.int64),
                           [np.zeros(0, np.int64)] * len(queries), ks)
    return summarise(per_query), per_query
  _, top = ranking.top_k_scores(np.asarray(queries, np.float32), np.asarray(items, np.float32), k,
                                query_chunk=query_chunk, item_chunk=item_chunk or None,
                                exclude=exclude)
  per_query = _per_query(top, relevant, ks)
  return summarise(per_query), per_query


def scored_retrieval_metrics(score_chunk: Callable[[int, int], np.ndarray], num_queries: int,
                             relevant: list[np.ndarray], ks: Sequence[int], *, chunk: int = 1024
                             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Precision@k and recall@k when the scores come from elsewhere (a classifier, a masked ranking).

  `score_chunk(lo, hi)` returns the scores [hi - lo, N] of queries lo..hi-1 over all N items, with
  -inf for items a query must not rank; only one chunk of scores exists at a time. Ties go to the
  lower item index, as in `musemb.ranking`.
  """
  tops = []
  for lo in range(0, num_queries, chunk):
    hi = min(lo + chunk, num_queries)
    scores = np.asarray(score_chunk(lo, hi), np.float64)
    k = min(max(ks), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    tops.append(np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1))
  top = np.concatenate(tops) if tops else np.zeros((0, max(ks)), np.int64)
  per_query = _per_query(top, relevant, ks)
  return summarise(per_query), per_query


def masked_retrieval_metrics(queries: np.ndarray, items: np.ndarray, relevant: list[np.ndarray],
                             excluded: list[np.ndarray], ks: Sequence[int], *, chunk: int = 1024
                             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Like `retrieval_metrics`, but query q never ranks the items in `excluded[q]`."""
  items = np.asarray(items, np.float64)

  def score_chunk(lo, hi):
    scores = np.asarray(queries[lo:hi], np.float64) @ items.T
    for row in range(hi - lo):
      scores[row, excluded[lo + row]] = -np.inf
    return scores

  return scored_retrieval_metrics(score_chunk, len(queries), relevant, ks, chunk=chunk)


def relevant_by_group(groups: np.ndarray, exclude_self: bool) -> list[np.ndarray]:
  """For items with group labels [n] (e.g. artists), each item's same-group items (-1 = no group)."""
  order = np.argsort(groups, kind="stable")
  out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(groups)
  bounds = np.flatnonzero(np.diff(groups[order])) + 1
  for members in np.split(order, bounds):
    if len(members) == 0 or groups[members[0]] < 0:
      continue
    members = np.sort(members)
    for m in members:
      out[m] = members[members != m] if exclude_self else members
  return out


def timing_split(data) -> str:
  """The split per-song prediction time is measured on (test if the data has one)."""
  return "test" if "test" in data.splits else "train"


def seconds_per_song(top1: Callable, split, repeats: int = 200) -> float:
  """Table 7: mean seconds for `top1(idx [1, P], val [1, P])` over songs one at a time, compiled."""
  top1(split.idx[:1], split.val[:1]).block_until_ready()
  n = min(repeats, len(split))
  start = time.perf_counter()
  for r in range(n):
    top1(split.idx[r:r + 1], split.val[r:r + 1]).block_until_ready()
  return (time.perf_counter() - start) / max(n, 1)


def pk_table(metrics: dict[str, float], ks: Sequence[int] = (1, 3, 6, 9, 12, 15)) -> str:
  """A plain-text precision@k table from flat "<system>/<task>/p@k" keys, one row per system/task."""
  rows = sorted({k.rsplit("/", 1)[0] for k in metrics if k.rsplit("/", 1)[-1].startswith("p@")})
  if not rows:
    return "(no precision@k metrics)"
  width = max(len(r) for r in rows)
  lines = [f"{'system/task':<{width}}  " + "  ".join(f"{'p@' + str(k):>6}" for k in ks)]
  for r in rows:
    cells = [metrics.get(f"{r}/p@{k}") for k in ks]
    lines.append(f"{r:<{width}}  " + "  ".join(f"{c:6.3f}" if c is not None else f"{'-':>6}"
                                              for c in cells))
  return "\n".join(lines)


def user_vectors(train_plays, train_vectors: np.ndarray) -> np.ndarray:
  """[users, f] Platt §6.2.1's user vectors: play counts over the training songs times the songs'
  l2-normalised vectors, l2-normalised.

  The thesis multiplies by the predicted song factors, which its network l2-normalises; the
  normalisation here makes the upper bound (the WMF factors, whose norms grow with popularity) a
  weighted average of directions too, built exactly as the predicted row is, instead of one that
  weighs a song by its factors' norm. Predictions that are unit vectors already are unchanged.

  Args:
    train_plays: [users, train songs] play counts (scipy sparse or dense).
    train_vectors: [train songs, f] song vectors.
  """
  unit = utils.normalize_rows(np.asarray(train_vectors, np.float32))
  return utils.normalize_rows(np.asarray(train_plays @ unit, np.float32))


def recommendation_metrics(counts, train_cols: np.ndarray, test_cols: np.ndarray,
                           train_vectors: np.ndarray | None, test_vectors: np.ndarray | None, *,
                           n: int = 500, user_chunk: int = 2048, seed: int = 0
                           ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Recommendation from song vectors as in Platt §6.2.1 (after van den Oord et al. 2013).

  Each user's vector is their row of play counts over the training songs times the training songs'
  l2-normalised vectors, l2-normalised (`user_vectors`: "effectively a weighted average of the
  factors of the training songs that user listened to"); predicted and WMF factors go through the
  same function. Every test song (vector l2-normalised) is scored by its dot product with it,
  and a test song is relevant when the user played it. Per user: ROC AUC over the test songs and
  the MSD challenge's AP@n (`metrics.map_at_n`); both are averaged over the users who played at
  least one training song and at least one test song (AUC also needs an unplayed test song).

  Args:
    counts: scipy sparse [users, items] play counts.
    train_cols, test_cols: the item columns of the training and the test songs.
    train_vectors, test_vectors: [len(train_cols), f] and [len(test_cols), f] song vectors
      (predicted or ground-truth factors); both None scores test songs at random (seeded), the
      chance row of Table 6.1.
    n: the AP cut-off (500 in the thesis and the MSD challenge).
    user_chunk: users scored at once ([chunk, test songs] scores in memory).
    seed: of the random scores.

  Returns:
    ({"roc_auc", f"map@{n}", "num_users"}, per-user {"roc_auc", f"map@{n}"} arrays (NaN where
    undefined) over the evaluated users, plus their row indices under "users").
  """
  import scipy.sparse  # pylint: disable=g-import-not-at-top
  counts = scipy.sparse.csr_matrix(counts)
  if (train_vectors is None) != (test_vectors is None):
    raise ValueError("pass both train_vectors and test_vectors, or neither (random scores).")
  if train_vectors is not None:
    if len(train_vectors) != len(train_cols) or len(test_vectors) != len(test_cols):
      raise ValueError(f"{len(train_vectors)} / {len(test_vectors)} song vectors for "
                       f"{len(train_cols)} train / {len(test_cols)} test songs.")
  train_plays = counts[:, np.asarray(train_cols)].tocsr()
  test_played = (counts[:, np.asarray(test_cols)] > 0).tocsr()
  users = np.flatnonzero((np.diff(train_plays.indptr) > 0) & (np.diff(test_played.indptr) > 0))
  test_unit = None if test_vectors is None else utils.normalize_rows(test_vectors)
  rng = np.random.default_rng(seed)
  aucs, aps = [], []
  for start in range(0, len(users), user_chunk):
    rows = users[start:start + user_chunk]
    relevance = test_played[rows].toarray()
    if test_unit is None:
      scores = rng.random(relevance.shape)
    else:
      scores = user_vectors(train_plays[rows], train_vectors) @ test_unit.T
    aucs.append(metrics_lib.roc_auc(scores, relevance, reduce="none"))
    aps.append(metrics_lib.map_at_n(scores, relevance, n=n, reduce="none"))
  auc = np.concatenate(aucs) if aucs else np.zeros(0)
  ap = np.concatenate(aps) if aps else np.zeros(0)
  means = {"roc_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
           f"map@{n}": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
           "num_users": float(len(users))}
  return means, {"roc_auc": auc, f"map@{n}": ap, "users": users}


# ----------------------------------------------------------------------------- proxy task

def split_items(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) sorted item indices: a seeded permutation, round(test_fraction * n) tested.

  At least one item lands on each side, so n must be 2 or more.
  """
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1).")
  if n < 2:
    raise ValueError(f"the proxy task needs at least 2 items (one to train, one to test); got {n}.")
  n_test = int(np.clip(round(test_fraction * n), 1, n - 1))
  order = np.random.default_rng(seed).permutation(n)
  return np.sort(order[n_test:]), np.sort(order[:n_test])


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_logistic(x: jax.Array, y: jax.Array, l2: jax.Array, learning_rate: jax.Array,
                  steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Full-batch Adam on the mean binary cross-entropy + l2 * ||W||^2 (the bias is not penalised).

  Args:
    x: [n, f] float32 inputs.
    y: [n, T] float32 0/1 targets.
    l2: scalar weight decay.
    learning_rate: scalar Adam step size.
    steps: number of full-batch updates.

  Returns:
    (w [f, T], b [T], losses [steps]) the weights and the objective before each update.
  """
  params = {"w": jnp.zeros((x.shape[1], y.shape[1]), jnp.float32),
            "b": jnp.zeros((y.shape[1],), jnp.float32)}
  # Zero start: the problem is convex, so no random initialisation is needed and the fit is
  # deterministic.
  opt = optax.adam(learning_rate)

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

  def step(carry, _):
    p, s = carry
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), loss

  (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  return params["w"], params["b"], losses


def _check_inputs(item_factors: Any, item_tags: Any) -> tuple[np.ndarray, np.ndarray]:
  factors = np.asarray(item_factors)
  tags = np.asarray(item_tags)
  if factors.ndim != 2:
    raise ValueError(f"item_factors must be 2-D [items, factors]; got shape {factors.shape}.")
  if tags.ndim != 2:
    raise ValueError(f"item_tags must be 2-D [items, tags]; got shape {tags.shape}. Build it "
                     "with `tag_matrix` or `synthetic_item_tags`.")
  if factors.shape[0] != tags.shape[0]:
    raise ValueError(f"item_factors has {factors.shape[0]} items but item_tags has "
                     f"{tags.shape[0]}; both must have one row per item, in the same order "
                     "(factors.npz's item_ids).")
  if not np.issubdtype(factors.dtype, np.number) or not np.isfinite(factors).all():
    raise ValueError("item_factors must be finite numbers; found NaN/inf or a non-numeric dtype "
                     f"({factors.dtype}). Check the factor fit.")
  if tags.dtype != np.bool_:
    if not np.isin(tags, (0, 1)).all():
      raise ValueError(f"item_tags must be binary (bool or 0/1); got values "
                       f"{np.unique(tags)[:5]}.")
    tags = tags.astype(bool)
  return factors, tags


def fit_and_score(factors: np.ndarray, tags: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                  l2: float = 1e-4, steps: int = 500, learning_rate: float = 0.05
                  ) -> tuple[np.ndarray, np.ndarray, float]:
  """Fits the regression on the `train` rows and scores the `test` rows (no input checks).

  Args:
    factors: [items, f] factors (l2-normalised here).
    tags: [items, T] bool tags.
    train, test: item indices.
    l2, steps, learning_rate: as in `tag_prediction_from_factors`.

  Returns:
    (scores [test, T] float64 logits, per-tag ROC AUC [T] float64 with NaN where a tag lacks a
    positive or a negative test item, the final training objective).
  """
  x = utils.normalize_rows(factors)
  w, b, losses = _fit_logistic(jnp.asarray(x[train]), jnp.asarray(tags[train], jnp.float32),
                               jnp.float32(l2), jnp.float32(learning_rate), steps)
  scores = np.asarray(jnp.asarray(x[test]) @ w + b, np.float64)
  per_tag = metrics_lib.per_label_roc_auc(scores, tags[test], reduce="none")
  return scores, per_tag, float(losses[-1])


def tag_prediction_from_factors(item_factors: Any, item_tags: Any, *, split_seed: int = 0,
                                test_fraction: float = 0.2, l2: float = 1e-4, steps: int = 500,
                                learning_rate: float = 0.05) -> dict[str, Any]:
  """Logistic regression from l2-normalised factors to tags, scored by mean ROC AUC on held-out items.

  The items are split by `split_seed`; one [f, T] weight matrix and [T] bias are fitted jointly
  (one-vs-rest: each tag its own sigmoid) on the training items, and the held-out items are ranked
  per tag. Tags without both a positive and a negative held-out item are left out of the mean.
  The same split and fit on Gaussian random factors of the same shape (seeded by `split_seed`)
  give the chance baseline.

  Args:
    item_factors: [items, f] latent factors (e.g. factors.npz's item_factors).
    item_tags: [items, T] bool (or 0/1) tags, rows in the same item order.
    split_seed: seed of the train/test split and of the random baseline's factors.
    test_fraction: share of items held out, in (0, 1).
    l2: weight decay on W (not on the bias), >= 0.
    steps: full-batch Adam updates, >= 1.
    learning_rate: Adam step size, > 0.

  Returns:
    A dict: "roc_auc" (mean over evaluated tags), "random_roc_auc" (the same on random factors),
    "num_tags" (tags evaluated), "num_train" and "num_test" (items), "train_loss" (the final
    training objective), and "per_tag_roc_auc" ([T] float64, NaN for tags not evaluated).
  """
  factors, tags = _check_inputs(item_factors, item_tags)
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
    raise ValueError(f"steps={steps!r} must be a positive integer.")
  if not l2 >= 0:
    raise ValueError(f"l2={l2!r} must be >= 0.")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate!r} must be > 0.")
  train, test = split_items(factors.shape[0], test_fraction, split_seed)
  evaluable = tags[test].any(axis=0) & ~tags[test].all(axis=0)
  if not evaluable.any():
    raise ValueError(
        f"no tag has both a positive and a negative item among the {len(test)} held-out items "
        f"({tags.shape[1]} tags, {int(tags.sum())} positives in all), so ROC AUC is undefined. "
        "Use more items, a larger test_fraction, or tags that occur more often.")
  _, per_tag, train_loss = fit_and_score(factors, tags, train, test, l2=l2, steps=int(steps),
                                         learning_rate=learning_rate)
  random_factors = np.random.default_rng([split_seed, 1]).standard_normal(
      factors.shape).astype(np.float32)
  _, random_per_tag, _ = fit_and_score(random_factors, tags, train, test, l2=l2,
                                      steps=int(steps), learning_rate=learning_rate)
  return {"roc_auc": float(per_tag[evaluable].mean()),
          "random_roc_auc": float(random_per_tag[evaluable].mean()),
          "num_tags": int(evaluable.sum()),
          "num_train": int(len(train)),
          "num_test": int(len(test)),
          "train_loss": train_loss,
          "per_tag_roc_auc": per_tag}
