"""One-vs-rest large-margin linear classifiers: the MUSLSE paper's baseline (§6.3).

f_i(x) = w_i^T x on the same sparse bag-of-frames song vectors MUSLSE sees, trained with the margin
perceptron's hinge sum_j max(0, 1 - phi(t, j) f_j(x)) (phi = +1 for the song's labels, -1 otherwise)
by SGD, one classifier per tag and per artist (W_tag [|S|, |T|], W_artist [|S|, |A|]). Prediction
ranks labels by f_i(x); its cost is O(Y * |S|_nz) per song against MUSLSE's O((Y + |S|_nz) d)
(Table 7).

Trained by the shared loop: `python -m launch.train --config=configs/one_vs_rest.py --workdir=W`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import evaluate as evaluate_lib
from musemb import utils
from musemb.models import linear
from musemb.objectives import ranking as ranking_losses
from musemb.systems import System
from musemb.systems.muslse import data as bof_data
from musemb.systems.muslse import report as muslse_report

TASKS = ("tag_prediction", "artist_prediction")
_WEIGHTS = {"tag_prediction": "W_tag", "artist_prediction": "W_artist"}
_LABELS = {"tag_prediction": "num_tags", "artist_prediction": "num_artists"}

load_data = bof_data.load_data


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params": {"W_tag": [|S|, |T|], "W_artist": [|S|, |A|]}}, zero, as the perceptron starts."""
  del config, rng
  return {"params": {
      "W_tag": jnp.zeros((info["num_features"], info["num_tags"]), jnp.float32),
      "W_artist": jnp.zeros((info["num_features"], info["num_artists"]), jnp.float32)}}


def scores(W: jax.Array, idx: jax.Array, val: jax.Array) -> jax.Array:
  """f(x) = W^T x for sparse bags idx/val [B, P] -> [B, Y].

  The bags are densified ([B, |S|]) and multiplied: gathering rows of W would build [B, P, Y],
  gigabytes at Big-data scale (Y = 26,972 artists)."""
  return linear.densify(idx, val, W.shape[0]) @ W


def loss(variables: dict, batch: dict, tables: bof_data.BofTables, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """The summed hinge of every configured task's classifiers over the batch."""
  del rng, config
  params = variables["params"]
  song = batch["song"]                          # training-song row ids; features live in tables
  idx, val = tables.song_idx[song], tables.song_val[song]
  per_task = []
  for task in tables.task_names:
    f = scores(params[_WEIGHTS[task]], idx, val)
    if task == "tag_prediction":
      labels = tables.song_tags[song]
      valid = labels.any(-1)
    else:
      artist = tables.song_artist[song]
      labels = jax.nn.one_hot(jnp.maximum(artist, 0), f.shape[-1], dtype=bool)
      valid = artist >= 0
    per_task.append(jnp.sum(jnp.where(valid, ranking_losses.one_vs_rest_hinge(f, labels), 0.0)))
  return sum(per_task), {"task_losses": dict(zip(tables.task_names, per_task))}


def _check_tasks(task_names):
  unknown = [t for t in task_names if t not in TASKS]
  if unknown:
    raise ValueError(f"one_vs_rest trains {TASKS}; config.tasks.names has {unknown}.")


def evaluate_tasks(params: dict, data, config: ml_collections.ConfigDict, split: str
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  _check_tasks(data.task_names)
  s = data.splits[split]
  ks = tuple(config.eval.ks)
  means, per_query = {}, {}
  for task in data.task_names:
    W = jnp.asarray(params[_WEIGHTS[task]])
    if task == "tag_prediction":
      relevant = [np.flatnonzero(row) for row in s.tags]
    else:
      relevant = [np.array([a]) if a >= 0 else np.zeros(0, np.int64) for a in s.artist]
    m, pq = evaluate_lib.scored_retrieval_metrics(
        lambda lo, hi, W=W: np.asarray(scores(W, s.idx[lo:hi], s.val[lo:hi])), len(s), relevant, ks,
        chunk=config.eval.query_chunk)
    means.update({f"{task}/{k}": v for k, v in m.items()})
    per_query.update({f"{task}/{k}": v for k, v in pq.items()})
    per_query[f"{task}/query_ids"] = s.track_ids
  return means, per_query


def evaluate(variables: dict, data, config: ml_collections.ConfigDict, split: str
             ) -> dict[str, float]:
  return evaluate_tasks(variables["params"], data, config, split)[0]


def _seconds_per_song(W: np.ndarray, data) -> float:
  W = jnp.asarray(W)
  top1 = jax.jit(lambda i, v: jnp.argmax(scores(W, i, v)[0]))
  return evaluate_lib.seconds_per_song(top1, data.splits[evaluate_lib.timing_split(data)])


def write_outputs(variables: dict, data, config: ml_collections.ConfigDict, workdir: str
                  ) -> dict[str, float]:
  """Evaluates on `config.eval.split`, writes per-query p@3 and Table 7's stats; returns the
  metrics."""
  params = variables["params"]
  metrics, per_query = evaluate_tasks(params, data, config, config.eval.split)
  if jax.process_index() != 0:
    return metrics
  arrays = {k: v for k, v in per_query.items() if k.endswith("/query_ids")}
  arrays.update({f"one_vs_rest/{k}": v for k, v in per_query.items() if k.endswith("/p@3")})
  utils.save_npz_atomic(os.path.join(workdir, "per_query.npz"), arrays)
  used = {t: np.asarray(params[_WEIGHTS[t]]) for t in data.task_names}
  num_params = int(sum(w.size for w in used.values()))
  utils.update_model_stats(workdir, "one_vs_rest", {
      "num_params": num_params, "bytes": num_params * 4, "embed_dim": None,
      "num_features": int(data.info["num_features"]),
      "avg_nonzero_features": float(data.info["avg_nonzero_features"]),
      "labels": {t: int(data.info[_LABELS[t]]) for t in data.task_names},
      "seconds_per_song": {t: _seconds_per_song(w, data) for t, w in used.items()}})
  return metrics


# The run's report is MUSLSE's (Tables 2, 6, 7), with this run's rows and MUSLSE's as a baseline.
SYSTEM = System(
    name="one_vs_rest", load_data=load_data, init=init, loss=loss, evaluate=evaluate,
    write_outputs=write_outputs, report=muslse_report.write_report,
    compare=muslse_report.compare_runs)
