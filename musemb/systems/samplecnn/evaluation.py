"""SampleCNN evaluation: averaged window predictions, regression quality, Table 6.1 (recommendation
from predicted factors) and Table 6.2 (tags read off predicted factors)."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import evaluate as evaluate_lib
from musemb import metrics as metrics_lib
from musemb import utils
from musemb.data.sources import listening
from musemb.models import samplecnn as samplecnn_lib
from musemb.systems.samplecnn import data as audio_data


def make_model(config: ml_collections.ConfigDict, info: dict) -> samplecnn_lib.SampleCNN:
  m = config.model
  if m.head not in samplecnn_lib.HEADS:
    raise ValueError(f"config.model.head={m.head!r}; expected one of {samplecnn_lib.HEADS}.")
  outputs = info["num_factors"] if m.head == "factors" else info["num_tags"]
  if not outputs:
    raise ValueError(f"the {m.head} head has no outputs (the dataset has no "
                     f"{'factors' if m.head == 'factors' else 'tags'}).")
  return samplecnn_lib.SampleCNN(
      num_outputs=int(outputs), head=m.head, widths=tuple(int(w) for w in m.widths),
      stem_width=int(m.stem_width), final_width=int(m.final_width) or None,
      dropout_rate=float(m.dropout), num_samples=int(config.data.crop_samples),
      bn_momentum=float(m.bn_momentum), dtype=str(m.get("dtype", "float32")))  # absent in runs saved before model.dtype


@functools.lru_cache(maxsize=8)
def _window_predictor(model: samplecnn_lib.SampleCNN):
  """Jitted: (variables, windows [B, W, n], num_windows [B]) -> the mean output over the first
  num_windows windows of each track (sigmoid probabilities for the tags head)."""

  @jax.jit
  def predict(variables, windows, counts):
    b, w, n = windows.shape
    out = model.apply(variables, windows.reshape(b * w, n), train=False)
    if model.head == "tags":
      out = nn.sigmoid(out)
    out = out.reshape(b, w, -1)
    mask = (jnp.arange(w)[None, :] < counts[:, None]).astype(out.dtype)
    return jnp.einsum("bwo,bw->bo", out, mask) / jnp.maximum(counts, 1)[:, None].astype(out.dtype)

  return predict


def predict_split(variables: Any, data: audio_data.AudioData, config: ml_collections.ConfigDict,
                  split: str, model: samplecnn_lib.SampleCNN | None = None
                  ) -> dict[str, np.ndarray]:
  """Averaged window predictions for every track of `split`, with their labels and targets.

  `model` (default: `make_model(config, data.info)`) lets a system that builds its SampleCNN
  differently (the tag-propagation system's two heads in one output layer) reuse this reader.
  """
  model = make_model(config, data.info) if model is None else model
  predict = _window_predictor(model)
  variables = jax.device_get(variables)
  ids, outputs, tags, factors, has = [], [], [], [], []
  for batch in data.windows(split, config.eval.batch_size, config.data.crop_samples,
                            config.eval.windows):
    valid = batch["valid"]
    out = np.asarray(predict(variables, batch["windows"], batch["num_windows"]))
    outputs.append(out[valid])
    ids += [t.decode("utf-8") for t in batch["track_id"][valid]]
    tags.append(batch["tags"][valid].astype(bool))
    if "factors" in batch:
      factors.append(batch["factors"][valid])
      has.append(batch["has_factors"][valid])
  result = {"track_ids": np.asarray(ids, str), "outputs": np.concatenate(outputs),
            "tags": np.concatenate(tags)}
  if factors:
    result["factors"] = np.concatenate(factors)
    result["has_factors"] = np.concatenate(has)
  return result


def split_metrics(pred: dict[str, np.ndarray], head: str) -> dict[str, float]:
  if head == "factors":
    has = pred["has_factors"]
    p, t = utils.normalize_rows(pred["outputs"][has]), utils.normalize_rows(pred["factors"][has])
    return {"factors/mse": float(np.mean(np.square(p - t))),
            "factors/cosine": float(np.mean(np.sum(p * t, axis=1))),
            "factors/num_tracks": float(has.sum())}
  scores, tags = pred["outputs"].astype(np.float64), pred["tags"]
  return {"tags/roc_auc": float(metrics_lib.per_label_roc_auc(scores, tags)),
          "tags/map": float(metrics_lib.per_label_average_precision(scores, tags)),
          "tags/num_tracks": float(len(tags))}


def _load_plays(config: ml_collections.ConfigDict):
  """The play counts the factors were fitted to, reloaded through the WMF run's own config."""
  path = config.data.factors
  workdir = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} is missing: the recommendation evaluation reloads the "
                            "play counts through the launch.wmf run's config; rerun launch.wmf "
                            "in that workdir (it resumes) or set --config.eval.recommendation=False.")
  with open(config_path) as f:
    wmf_config = ml_collections.ConfigDict(json.load(f))
  return listening.load_plays(wmf_config.data)


def song_columns(pred_train: dict, pred_test: dict, column_of: dict[str, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(keep_train, train_cols, keep_test, test_cols): the play-count column of each usable song.

  A song is usable when it has factors and its track id names a column (every MSD track of a
  matched key names the key's column). Two tracks of one column are one song: the first one kept,
  training split first, so a column is never both a training song (in the user vectors) and a test
  song (ranked), nor counted twice in either.
  """
  taken: set[int] = set()

  def usable(pred):
    keep = np.zeros(len(pred["track_ids"]), bool)
    cols = []
    for i, (track, has) in enumerate(zip(pred["track_ids"].tolist(), pred["has_factors"].tolist())):
      col = column_of.get(str(track))
      if has and col is not None and col not in taken:
        taken.add(col)
        keep[i] = True
        cols.append(col)
    return keep, np.asarray(cols, np.int64)

  keep_train, train_cols = usable(pred_train)
  keep_test, test_cols = usable(pred_test)
  return keep_train, train_cols, keep_test, test_cols


def recommendation(pred_train: dict, pred_test: dict, config: ml_collections.ConfigDict
                   ) -> dict[str, float]:
  """Table 6.1: predicted factors vs random vs the WMF factors (upper bound), same users/songs.

  The WMF factors are the launch.wmf run's all-plays fit (factors.npz), as in the thesis, which
  "trained our latent factor models using all users and tracks (including test tracks)": they have
  seen the test songs' plays, so their row bounds what predicting them from audio can reach. Both
  rows build the users from the training songs' vectors with `evaluate.user_vectors` (the upper
  bound's unnormalised WMF factors are normalised first, as the network's predictions are).
  """
  plays = _load_plays(config)
  tracks, items = plays.track_items()
  counts = plays.to_csr()
  keep_train, train_cols, keep_test, test_cols = song_columns(
      pred_train, pred_test, dict(zip(tracks, items.tolist())))
  n, chunk, seed = config.eval.map_n, config.eval.user_chunk, config.eval.seed
  ours, _ = evaluate_lib.recommendation_metrics(
      counts, train_cols, test_cols, pred_train["outputs"][keep_train],
      pred_test["outputs"][keep_test], n=n, user_chunk=chunk)
  upper, _ = evaluate_lib.recommendation_metrics(
      counts, train_cols, test_cols, pred_train["factors"][keep_train],
      pred_test["factors"][keep_test], n=n, user_chunk=chunk)
  chance, _ = evaluate_lib.recommendation_metrics(counts, train_cols, test_cols, None, None, n=n,
                                                  user_chunk=chunk, seed=seed)
  out = {}
  for name, m in (("", ours), ("random_", chance), ("upper_", upper)):
    out[f"recommendation/{name}map@{n}"] = m[f"map@{n}"]
    out[f"recommendation/{name}roc_auc"] = m["roc_auc"]
  out["recommendation/num_users"] = ours["num_users"]
  out["recommendation/num_train_songs"] = float(len(train_cols))
  out["recommendation/num_test_songs"] = float(len(test_cols))
  return out


def transfer(pred_train: dict, pred_test: dict, config: ml_collections.ConfigDict
             ) -> dict[str, float]:
  """Table 6.2: tags read off predicted factors (and off the WMF factors) by logistic regression."""
  t = config.eval.transfer
  out = {}
  for name, key in (("predicted_factors", "outputs"), ("true_factors", "factors")):
    keep_train = pred_train["has_factors"] if key == "factors" else np.ones(
        len(pred_train["tags"]), bool)
    keep_test = pred_test["has_factors"] if key == "factors" else np.ones(
        len(pred_test["tags"]), bool)
    x = np.concatenate([pred_train[key][keep_train], pred_test[key][keep_test]])
    y = np.concatenate([pred_train["tags"][keep_train], pred_test["tags"][keep_test]])
    n_train = int(keep_train.sum())
    _, per_tag, _ = evaluate_lib.fit_and_score(x, y, np.arange(n_train), np.arange(n_train, len(x)),
                                        l2=t.l2, steps=t.steps, learning_rate=t.learning_rate)
    out[f"transfer/{name}_roc_auc"] = float(np.nanmean(per_tag)) if np.isfinite(
        per_tag).any() else float("nan")
  return out
