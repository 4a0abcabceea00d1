"""WMF's fit verb: load play counts, fit WMF on all of them resumably, evaluate.

The recommendation step of Platt's thesis (`004_*` paper, chapter 5): implicit-feedback ALS factors
(Hu, Koren & Volinsky 2008; `musemb.systems.wmf.als`) fitted to play counts from the built-in
synthetic world, the Echo Nest Taste Profile triplets or LFM-1b.

Two fits, because the factors serve two purposes that want different data:

* The factors other systems consume (SampleCNN's regression target, Won et al.'s cultural branch,
  Table 6.1's upper bound) are fitted on ALL plays: "we trained our latent factor models using all
  users and tracks (including test tracks), since the proximate task here is latent factor
  prediction, not recommendation" (§6.2.1). Chapter 5's proxy task reads them too.
* Held-out recommendation metrics need factors that never saw the held-out plays. With
  `eval.heldout_fit` (on by default; off in the LFM-1b variants) a seeded fraction of each user's
  (user, item) pairs is held out and a second model, same hyperparameters and seed, is fitted on
  the rest and judged by ranking each user's unseen items: recall@50 and the MSD challenge's
  mAP@500 of the held-out pairs (`musemb.metrics`), next to a random ranking of the same unseen
  items. Without it the metrics are omitted (the report says so), and the fit costs half as much.

Files in the workdir:

```
factors.npz           the all-plays fit: user_ids [U] str, item_ids [I] str, user_factors [U, f]
                      float32, item_factors [I, f] float32, iteration (ALS iterations done), losses
                      [iteration] float64 (the training objective after each), fit_seconds (ALS
                      time so far), fitted_on "all_plays", and track_ids [T] str with track_items
                      [T] int64: every track id an item stands for (all MSD tracks of a matched
                      (artist, title) key, `listening.PlayCounts.item_tracks`) and its item row,
                      which `musemb.data.pipeline.load_factor_targets` joins by. Rewritten
                      atomically after every iteration, so a rerun with the same config resumes
                      where the last one stopped.
heldout_factors.npz   the same layout for the fit on the training split (eval.heldout_fit only),
                      fitted_on "train_split"; resumed the same way.
config.json           the config of the fit (systems trained on the factors reload the plays
                      through it).
metrics.json          wmf/fit/... (size and ALS time of the all-plays fit), wmf/heldout_fit/...
                      (of the second fit), wmf/recommendation/{recall@50, map@500,
                      random_recall@50, random_map@500} (heldout_fit only) and wmf/proxy_tags/...,
                      merged into the file (`musemb.utils.update_metrics_json`).
```
"""

from __future__ import annotations

import dataclasses
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
HELDOUT_FACTORS_FILE = "heldout_factors.npz"
METRICS_PREFIX = "wmf/recommendation/"
# What a factor file was fitted on; resuming refuses a file fitted on other data.
ALL_PLAYS = "all_plays"
TRAIN_SPLIT = "train_split"


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
  """[Q, k] each user's top-k unseen items by x_u . y_i, in chunks of `chunk` users (the chunks
  reuse each other's freed pages, which go back to the system after the last one)."""
  out = []
  for start in range(0, len(users), chunk):
    _, idx = als.recommend(user_factors, item_factors, train, users[start:start + chunk], k,
                           release_memory=False)
    out.append(idx)
  utils.release_free_memory()
  return np.concatenate(out) if out else np.zeros((0, k), np.int32)


def eval_users(heldout: scipy.sparse.csr_matrix, max_users: int, seed: int) -> np.ndarray:
  """Users with a held-out pair, all of them or a seeded sample of `max_users` (sorted)."""
  users = np.flatnonzero(np.diff(heldout.indptr) > 0)
  if max_users and len(users) > max_users:
    users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
  return users


def _load_resume(path: str, plays: listening.PlayCounts, factors: int,
                 fitted_on: str) -> dict[str, Any] | None:
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
  # Files from before the all-plays fit lack the field: their factors.npz was fitted on the
  # training split, which resuming would silently pass on as the all-plays factors.
  found = str(saved["fitted_on"]) if "fitted_on" in saved else "train_split (an older musemb)"
  if found != fitted_on:
    raise ValueError(f"{path} holds factors fitted on {found}, this file should hold a fit on "
                     f"{fitted_on}; use a fresh --workdir, or delete the file to refit.")
  return saved


@dataclasses.dataclass
class _Fit:
  """One resumable ALS fit: its factors, where it started and its ALS seconds (all invocations)."""
  user_factors: np.ndarray
  item_factors: np.ndarray
  resumed_from: int
  seconds: float


def _fit_resumably(counts: scipy.sparse.csr_matrix, plays: listening.PlayCounts, path: str,
                   fitted_on: str, config: ml_collections.ConfigDict, mesh,
                   extra: dict[str, np.ndarray]) -> _Fit:
  """Fits `counts` with config.wmf, saving `path` (ids, factors, `extra`) after every iteration and
  resuming from it; a file that already holds config.wmf.iterations is only read."""
  w = config.wmf
  saved = _load_resume(path, plays, w.factors, fitted_on)
  start = int(saved["iteration"]) if saved is not None else 0
  losses = list(saved["losses"]) if saved is not None else []
  # ALS seconds of all invocations so far (older factor files lack the field).
  prior_seconds = (float(saved["fit_seconds"]) if saved is not None and "fit_seconds" in saved
                   else 0.0)
  t0 = time.perf_counter()

  def save(iteration: int, loss: float, x, y) -> None:
    losses.append(float(loss))
    utils.save_npz_atomic(path, {
        "user_ids": np.asarray(plays.users, str), "item_ids": np.asarray(plays.items, str),
        "user_factors": np.asarray(x, np.float32), "item_factors": np.asarray(y, np.float32),
        "iteration": np.int64(iteration), "losses": np.asarray(losses, np.float64),
        "fit_seconds": np.float64(prior_seconds + time.perf_counter() - t0),
        "fitted_on": np.asarray(fitted_on), **extra})
    done = iteration - start
    elapsed = time.perf_counter() - t0
    eta = elapsed / done * (w.iterations - iteration)
    logging.info("wmf (%s) [%d/%d] loss %.6g | %s elapsed, %s left", fitted_on, iteration,
                 w.iterations, loss, utils.format_seconds(elapsed), utils.format_seconds(eta))

  if start >= w.iterations:
    logging.info("wmf: %s already holds %d iterations (>= %d); evaluating only.", path, start,
                 w.iterations)
    return _Fit(saved["user_factors"], saved["item_factors"], start, prior_seconds)
  if start:
    logging.info("wmf: resuming %s at iteration %d.", path, start)
  x, y = als.fit(counts, factors=w.factors, regularization=w.regularization, alpha=w.alpha,
                 confidence=w.confidence, eps=w.eps, iterations=w.iterations, solver=w.solver,
                 cg_steps=w.cg_steps, seed=config.seed, mesh=mesh, callback=save,
                 user_factors=None if saved is None else saved["user_factors"],
                 item_factors=None if saved is None else saved["item_factors"],
                 start_iteration=start, chunk_cells=w.chunk_cells)
  return _Fit(x, y, start, prior_seconds + time.perf_counter() - t0)


def heldout_metrics(fit: _Fit, train: scipy.sparse.csr_matrix, heldout: scipy.sparse.csr_matrix,
                    config: ml_collections.ConfigDict) -> dict[str, float]:
  """recall@k and mAP@n of the held-out pairs under `fit` (fitted on `train`), and of chance."""
  users = eval_users(heldout, config.eval.max_users, config.eval.split_seed)
  k = min(max(config.eval.map_n, config.eval.recall_k), train.shape[1])
  recall_k, map_n = min(config.eval.recall_k, k), min(config.eval.map_n, k)
  held = heldout[users]
  ours = evaluate_topk(recommend_topk(fit.user_factors, fit.item_factors, train, users, k,
                                      config.eval.user_chunk), held, recall_k=recall_k,
                       map_n=map_n)
  chance = evaluate_topk(random_topk(train, users, k, config.eval.split_seed), held,
                         recall_k=recall_k, map_n=map_n)
  logging.info("wmf: held-out metrics over %d users.", len(users))
  # Keys keep the configured cut-offs' names (recall@50, map@500) even when fewer items exist.
  return {f"{METRICS_PREFIX}recall@{config.eval.recall_k}": ours[f"recall@{recall_k}"],
          f"{METRICS_PREFIX}map@{config.eval.map_n}": ours[f"map@{map_n}"],
          f"{METRICS_PREFIX}random_recall@{config.eval.recall_k}": chance[f"recall@{recall_k}"],
          f"{METRICS_PREFIX}random_map@{config.eval.map_n}": chance[f"map@{map_n}"]}


def fit_and_save(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Fits WMF on all of config's plays (and, with eval.heldout_fit, on a training split for the
  held-out metrics), resumably, and runs the proxy task on the all-plays factors.

  Args:
    config: a `configs/wmf.py` config.
    workdir: output folder (created); see the module docstring for its files.

  Returns:
    The metrics written to metrics.json (keys "wmf/...").
  """
  os.makedirs(workdir, exist_ok=True)
  # The config travels with the factors: systems trained on them reload the same plays from it.
  utils.write_json_atomic(os.path.join(workdir, "config.json"),
                          json.loads(config.to_json_best_effort()))
  plays = listening.load_plays(config.data)
  if not plays.nnz:
    raise ValueError(f"config.data ({config.data.source}) yielded no plays.")
  counts = plays.to_csr()
  logging.info("wmf: %d users x %d items, %d pairs", len(plays.users), len(plays.items), plays.nnz)
  w = config.wmf
  mesh = sharding_lib.make_mesh(w.num_devices or None)
  track_ids, track_items = plays.track_items()
  full = _fit_resumably(counts, plays, os.path.join(workdir, FACTORS_FILE), ALL_PLAYS, config,
                        mesh, {"track_ids": np.asarray(track_ids, str),
                               "track_items": np.asarray(track_items, np.int64)})
  # What Tables 5.1-5.5 list beside the proxy AUC: the data's size and the fit's run time (ALS
  # seconds summed over the invocations that resumed it; evaluation and the held-out fit not
  # included).
  result = {"wmf/fit/num_users": float(len(plays.users)),
            "wmf/fit/num_items": float(len(plays.items)), "wmf/fit/nnz": float(plays.nnz),
            "wmf/fit/factors": float(w.factors), "wmf/fit/iterations": float(w.iterations),
            "wmf/fit/seconds": float(full.seconds),
            "wmf/fit/resumed_from": float(full.resumed_from)}

  if config.eval.heldout_fit:
    train, heldout = split_holdout(counts, config.eval.holdout_fraction, config.eval.split_seed)
    logging.info("wmf: held-out fit on %d pairs, %d held out", train.nnz, heldout.nnz)
    held_fit = _fit_resumably(train, plays, os.path.join(workdir, HELDOUT_FACTORS_FILE),
                              TRAIN_SPLIT, config, mesh, {})
    result.update(heldout_metrics(held_fit, train, heldout, config))
    result.update({"wmf/heldout_fit/nnz": float(train.nnz),
                   "wmf/heldout_fit/seconds": float(held_fit.seconds),
                   "wmf/heldout_fit/resumed_from": float(held_fit.resumed_from)})
  else:
    logging.info("wmf: no held-out metrics (eval.heldout_fit=False): the factors saw every play.")

  found = wmf_data.proxy_tags(config, list(plays.items)) if config.proxy.enabled else None
  if found is not None:
    # Chapter 5's proxy task: how much of the tags the (all-plays) item factors carry.
    tags, _, labelled = found
    p = evaluate_lib.tag_prediction_from_factors(
        np.asarray(full.item_factors)[labelled], tags[labelled],
        split_seed=config.proxy.split_seed, test_fraction=config.proxy.test_fraction,
        l2=config.proxy.l2, steps=config.proxy.steps, learning_rate=config.proxy.learning_rate)
    result.update({f"wmf/proxy_tags/{k}": float(p[k]) for k in
                   ("roc_auc", "random_roc_auc", "num_tags", "num_train", "num_test")})
  utils.update_metrics_json(workdir, result)
  logging.info("wmf: metrics: %s", result)
  return result
