"""WMF's fit verb: load play counts, hold some out, fit WMF resumably, evaluate.

The recommendation step of Platt's thesis (`004_*` paper, chapter 5): implicit-feedback ALS factors
(Hu, Koren & Volinsky 2008; `musemb.systems.wmf.als`) fitted to play counts from the built-in synthetic world,
the Echo Nest Taste Profile triplets or LFM-1b. A seeded fraction of each user's (user, item) pairs
is held out; the factors are fitted on the rest and judged by ranking each user's unseen items:
recall@50 and the MSD challenge's mAP@500 of the held-out pairs (`musemb.metrics`), next to a random
ranking of the same unseen items.

Files in the workdir:

```
factors.npz    user_ids [U] str, item_ids [I] str, user_factors [U, f] float32,
               item_factors [I, f] float32, iteration (ALS iterations done), losses [iteration]
               float64 (the training objective after each), fit_seconds (ALS time so far). Rewritten atomically after every
               iteration, so a rerun with the same config resumes where the last one stopped.
config.json    the config of the fit (systems trained on the factors reload the plays through it).
metrics.json   wmf/recommendation/{recall@50, map@500, random_recall@50, random_map@500} merged
               into the file (`musemb.utils.update_metrics_json`).
```
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import scipy.sparse

from musemb import evaluate as evaluate_lib
from musemb import metrics as metrics_lib
from musemb import sharding as sharding_lib
from musemb import utils
from musemb.data.sources import listening
from musemb.systems.wmf import als
from musemb.systems.wmf import data as wmf_data

FACTORS_FILE = "factors.npz"
METRICS_PREFIX = "wmf/recommendation/"


def split_holdout(counts: scipy.sparse.spmatrix, fraction: float,
                  seed: int) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
  """Holds out round(fraction * n) of each user's n non-zeros (at least one, leaving at least one).

  Users with a single non-zero keep it for training. The choice is a seeded random permutation of
  each row, independent of any other row's length.

  Args:
    counts: [users, items] sparse counts.
    fraction: in (0, 1).
    seed: split seed.

  Returns:
    (train, heldout) [users, items] CSR matrices whose sum is `counts`, with disjoint non-zeros.
  """
  if not 0 < fraction < 1:
    raise ValueError(f"holdout_fraction={fraction!r} must be in (0, 1).")
  csr = scipy.sparse.csr_matrix(counts)
  csr.sum_duplicates()
  csr.eliminate_zeros()
  nnz_per_row = np.diff(csr.indptr)
  row_of = np.repeat(np.arange(csr.shape[0]), nnz_per_row)
  key = np.random.default_rng(seed).random(csr.nnz)
  # Rank of each non-zero within its row under a random key: sort by (row, key).
  order = np.lexsort((key, row_of))
  rank = np.empty(csr.nnz, np.int64)
  rank[order] = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], nnz_per_row)
  n_out = np.where(nnz_per_row >= 2,
                   np.clip(np.rint(fraction * nnz_per_row), 1, nnz_per_row - 1), 0).astype(np.int64)
  held = rank < np.repeat(n_out, nnz_per_row)
  coo = csr.tocoo()
  shape = csr.shape

  def part(mask):
    return scipy.sparse.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=shape)

  return part(~held), part(held)


def evaluate_topk(topk_idx: np.ndarray, heldout: scipy.sparse.csr_matrix, *, recall_k: int,
                  map_n: int) -> dict[str, float]:
  """recall@k and mAP@n of top lists [Q, K] against the held-out rows [Q, items] (-1 = no item)."""
  return {f"recall@{recall_k}": metrics_lib.recall_at_k_from_topk(topk_idx, heldout, recall_k),
          f"map@{map_n}": metrics_lib.map_at_n_from_topk(topk_idx, heldout, map_n)}


def random_topk(train: scipy.sparse.csr_matrix, users: np.ndarray, k: int,
                seed: int) -> np.ndarray:
  """[Q, k] a uniformly random order of each user's unseen items (the chance baseline)."""
  scores = np.random.default_rng(seed).random((len(users), train.shape[1]))
  # Rank with the same filtering rule as `wmf.recommend`: seen items never listed.
  rows = train[users]
  scores[np.repeat(np.arange(len(users)), np.diff(rows.indptr)), rows.indices] = -np.inf
  idx = np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int32)
  return np.where(np.take_along_axis(scores, idx, axis=1) > -np.inf, idx, -1)


def recommend_topk(user_factors: np.ndarray, item_factors: np.ndarray,
                   train: scipy.sparse.csr_matrix, users: np.ndarray, k: int,
                   chunk: int = 1024) -> np.ndarray:
  """[Q, k] each user's top-k unseen items by x_u . y_i, in chunks of `chunk` users."""
  out = []
  for start in range(0, len(users), chunk):
    _, idx = als.recommend(user_factors, item_factors, train, users[start:start + chunk], k)
    out.append(idx)
  return np.concatenate(out) if out else np.zeros((0, k), np.int32)


def eval_users(heldout: scipy.sparse.csr_matrix, max_users: int, seed: int) -> np.ndarray:
  """Users with a held-out pair, all of them or a seeded sample of `max_users` (sorted)."""
  users = np.flatnonzero(np.diff(heldout.indptr) > 0)
  if max_users and len(users) > max_users:
    users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
  return users


def _load_resume(path: str, plays: listening.PlayCounts, factors: int) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    saved = {k: z[k] for k in z.files}
  if (saved["user_ids"].tolist() != list(plays.users)
      or saved["item_ids"].tolist() != list(plays.items)):
    raise ValueError(f"{path} holds factors for other users/items than config.data names; use a "
                     "fresh --workdir, or delete the file to refit.")
  if saved["user_factors"].shape[1] != factors:
    raise ValueError(f"{path} holds {saved['user_factors'].shape[1]} factors, the config asks for "
                     f"{factors}; use a fresh --workdir, or delete the file to refit.")
  return saved


def fit_and_save(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Fits WMF on the training part of config's plays, resumably, and evaluates the held-out part.

  Args:
    config: a `configs/wmf.py` config.
    workdir: output folder (created); see the module docstring for its files.

  Returns:
    The metrics written to metrics.json (keys "wmf/recommendation/...").
  """
  os.makedirs(workdir, exist_ok=True)
  # The config travels with the factors: systems trained on them reload the same plays from it.
  utils.write_json_atomic(os.path.join(workdir, "config.json"),
                          json.loads(config.to_json_best_effort()))
  plays = listening.load_plays(config.data)
  if not plays.nnz:
    raise ValueError(f"config.data ({config.data.source}) yielded no plays.")
  counts = plays.to_csr()
  train, heldout = split_holdout(counts, config.eval.holdout_fraction, config.eval.split_seed)
  logging.info("wmf: %d users x %d items, %d pairs (%d train, %d held out)", len(plays.users),
               len(plays.items), plays.nnz, train.nnz, heldout.nnz)
  w = config.wmf
  path = os.path.join(workdir, FACTORS_FILE)
  saved = _load_resume(path, plays, w.factors)
  start = int(saved["iteration"]) if saved is not None else 0
  losses = list(saved["losses"]) if saved is not None else []
  # ALS seconds of all invocations so far (older factors.npz files lack the field).
  prior_seconds = float(saved["fit_seconds"]) if saved is not None and "fit_seconds" in saved else 0.0
  mesh = sharding_lib.make_mesh(w.num_devices or None)
  t0 = time.perf_counter()

  def save(iteration: int, loss: float, x, y) -> None:
    losses.append(float(loss))
    utils.save_npz_atomic(path, {
        "user_ids": np.asarray(plays.users, str), "item_ids": np.asarray(plays.items, str),
        "user_factors": np.asarray(x, np.float32), "item_factors": np.asarray(y, np.float32),
        "iteration": np.int64(iteration), "losses": np.asarray(losses, np.float64),
        "fit_seconds": np.float64(prior_seconds + time.perf_counter() - t0)})
    done = iteration - start
    elapsed = time.perf_counter() - t0
    eta = elapsed / done * (w.iterations - iteration)
    logging.info("wmf [%d/%d] loss %.6g | %s elapsed, %s left", iteration, w.iterations, loss,
                 utils.format_seconds(elapsed), utils.format_seconds(eta))

  if start >= w.iterations:
    logging.info("wmf: %s already holds %d iterations (>= %d); evaluating only.", path, start,
                 w.iterations)
    x, y = saved["user_factors"], saved["item_factors"]
  else:
    if start:
      logging.info("wmf: resuming from %s at iteration %d.", path, start)
    x, y = als.fit(train, factors=w.factors, regularization=w.regularization, alpha=w.alpha,
                   confidence=w.confidence, eps=w.eps, iterations=w.iterations, solver=w.solver,
                   cg_steps=w.cg_steps, seed=config.seed, mesh=mesh, callback=save,
                   user_factors=None if saved is None else saved["user_factors"],
                   item_factors=None if saved is None else saved["item_factors"],
                   start_iteration=start, chunk_cells=w.chunk_cells)

  fit_seconds = prior_seconds + (time.perf_counter() - t0 if start < w.iterations else 0.0)
  users = eval_users(heldout, config.eval.max_users, config.eval.split_seed)
  k = min(max(config.eval.map_n, config.eval.recall_k), train.shape[1])
  recall_k, map_n = min(config.eval.recall_k, k), min(config.eval.map_n, k)
  held = heldout[users]
  ours = evaluate_topk(recommend_topk(x, y, train, users, k, config.eval.user_chunk), held,
                       recall_k=recall_k, map_n=map_n)
  chance = evaluate_topk(random_topk(train, users, k, config.eval.split_seed), held,
                         recall_k=recall_k, map_n=map_n)
  # Keys keep the configured cut-offs' names (recall@50, map@500) even when fewer items exist.
  result = {f"{METRICS_PREFIX}recall@{config.eval.recall_k}": ours[f"recall@{recall_k}"],
            f"{METRICS_PREFIX}map@{config.eval.map_n}": ours[f"map@{map_n}"],
            f"{METRICS_PREFIX}random_recall@{config.eval.recall_k}": chance[f"recall@{recall_k}"],
            f"{METRICS_PREFIX}random_map@{config.eval.map_n}": chance[f"map@{map_n}"]}
  # What Tables 5.1-5.5 list beside the proxy AUC: the data's size and the fit's run time (ALS
  # seconds summed over the invocations that resumed it; evaluation not included).
  result.update({"wmf/fit/num_users": float(len(plays.users)),
                 "wmf/fit/num_items": float(len(plays.items)), "wmf/fit/nnz": float(train.nnz),
                 "wmf/fit/factors": float(w.factors), "wmf/fit/iterations": float(w.iterations),
                 "wmf/fit/seconds": float(fit_seconds),
                 "wmf/fit/resumed_from": float(start)})
  found = wmf_data.proxy_tags(config, list(plays.items)) if config.proxy.enabled else None
  if found is not None:
    # Chapter 5's proxy task: how much of the tags the item factors carry.
    tags, _, labelled = found
    p = evaluate_lib.tag_prediction_from_factors(
        np.asarray(y)[labelled], tags[labelled], split_seed=config.proxy.split_seed,
        test_fraction=config.proxy.test_fraction, l2=config.proxy.l2, steps=config.proxy.steps,
        learning_rate=config.proxy.learning_rate)
    result.update({f"wmf/proxy_tags/{k}": float(p[k]) for k in
                   ("roc_auc", "random_roc_auc", "num_tags", "num_train", "num_test")})
  utils.update_metrics_json(workdir, result)
  logging.info("wmf: held-out metrics over %d users: %s", len(users), result)
  return result
