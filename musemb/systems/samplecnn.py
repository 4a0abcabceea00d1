"""SampleCNN from raw audio: latent-factor regression (Platt, chapter 6) or direct auto-tagging.

The thesis' recipe (`004_*` paper, §6.1), on the shared training loop:

* audio stored in the TFRecords (16 kHz, 20 s per track by default: `configs/samplecnn.py`), random
  59,049-sample (3.7 s) crops in training (`musemb.data.audio_data`, seeded and resumable);
* the 3^9 SampleCNN (`musemb.models.samplecnn`, Lee et al. 2017) with batch-norm statistics carried
  in the TrainState (`STATEFUL`), and one of two heads:
  - `factors`: linear + l2-normalised output, MSE against the l2-normalised WMF item factors of the
    track (`launch.wmf`); tracks without factors are left out of training and counted;
  - `tags`: sigmoid tag outputs with binary cross-entropy (Lee et al.'s auto-tagger; the direct
    tagging baseline of Table 6.2);
* SGD with Nesterov momentum (Lee et al.'s implementation) and the learning rate divided by 5 when
  validation stops improving, four times (`optimizer.plateau_drops`), or Adam;
* evaluation on the average of the first five adjacent 59,049-sample windows of each track
  (`eval.windows`; fewer when a clip holds fewer whole windows).

Final outputs (`write_outputs`), keys `samplecnn/...` for the factors head and `samplecnn_tags/...`
for the tags head so that the two runs merge into one report:

* factor regression quality on the test split: MSE between the l2-normalised averaged prediction
  and the l2-normalised factors, and their mean cosine;
* recommendation (§6.2.1, Table 6.1): users' play-weighted sums of the training songs' predicted
  factors rank the test songs; per-user ROC AUC and mAP@500 next to random scores and the upper
  bound from the WMF factors themselves (`musemb.evaluate.recommendation_metrics`);
* transfer (§6.2.1 "Tag prediction", Table 6.2): a logistic regression from predicted factors to
  tags (trained on the training split's predictions, scored on the test split's) next to the same
  regression on the WMF factors; the tags head's own test ROC AUC is the direct-tagging row;
* `predictions.npz` (per split: track ids and averaged outputs) for later analysis.

Departure (documented in the README): the thesis kept the tagged tracks in separate shards with
Choi et al.'s split; here one prepared dataset's train/valid/test splits serve both the
recommendation and the tagging evaluations.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import evaluate as evaluate_lib
from musemb import metrics as metrics_lib
from musemb import proxy
from musemb import utils
from musemb.data import audio_data
from musemb.models import samplecnn as samplecnn_lib

STATEFUL = True
HEADS = samplecnn_lib.HEADS
load_data = audio_data.load_data


def system_key(config: ml_collections.ConfigDict) -> str:
  """The metrics.json prefix: `samplecnn` (factor regression) or `samplecnn_tags` (auto-tagging)."""
  return "samplecnn" if config.model.head == "factors" else "samplecnn_tags"


def make_model(config: ml_collections.ConfigDict, info: dict) -> samplecnn_lib.SampleCNN:
  m = config.model
  if m.head not in HEADS:
    raise ValueError(f"config.model.head={m.head!r}; expected one of {HEADS}.")
  outputs = info["num_factors"] if m.head == "factors" else info["num_tags"]
  if not outputs:
    raise ValueError(f"the {m.head} head has no outputs (the dataset has no "
                     f"{'factors' if m.head == 'factors' else 'tags'}).")
  return samplecnn_lib.SampleCNN(
      num_outputs=int(outputs), head=m.head, widths=tuple(int(w) for w in m.widths),
      stem_width=int(m.stem_width), final_width=int(m.final_width) or None,
      dropout_rate=float(m.dropout), num_samples=int(config.data.crop_samples),
      bn_momentum=float(m.bn_momentum))


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> tuple[Any, Any]:
  """(params, {"batch_stats": ...}) of the model, initialised with a batch of two silent crops."""
  model = make_model(config, info)
  variables = model.init({"params": rng}, jnp.zeros((2, config.data.crop_samples), jnp.float32),
                         train=False)
  return variables["params"], {"batch_stats": variables["batch_stats"]}


def project(params: Any, config: ml_collections.ConfigDict) -> Any:
  del config
  return params


def loss(params: Any, batch: dict, tables: Any, rng: jax.Array, config: ml_collections.ConfigDict,
         task_names: tuple[str, ...], model_state: Any) -> tuple[jax.Array, dict]:
  """MSE to l2-normalised factors (factors head) or BCE to tags; batch statistics from this batch."""
  del tables, task_names
  info = {"num_factors": batch["factors"].shape[-1] if "factors" in batch else 0,
          "num_tags": batch["tags"].shape[-1]}
  model = make_model(config, info)
  out, updates = model.apply({"params": params, **model_state}, batch["audio"], train=True,
                             rngs={"dropout": rng}, mutable=["batch_stats"])
  if config.model.head == "factors":
    value = samplecnn_lib.factor_mse_loss(out, batch["factors"])
  else:
    value = samplecnn_lib.bce_loss(out, batch["tags"])
  return value, {"model_state": dict(updates)}


# ----------------------------------------------------------------------------- prediction


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
                  split: str) -> dict[str, np.ndarray]:
  """Averaged window predictions for every track of `split`, with their labels and targets."""
  model = make_model(config, data.info)
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


def _split_metrics(pred: dict[str, np.ndarray], head: str) -> dict[str, float]:
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


def evaluate(variables: Any, data: audio_data.AudioData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Validation: factor MSE / cosine (factors head) or per-tag ROC AUC / AP (tags head)."""
  return _split_metrics(predict_split(variables, data, config, split), config.model.head)


# ----------------------------------------------------------------------------- final evaluation


def _load_plays(config: ml_collections.ConfigDict):
  """The play counts the factors were fitted to, reloaded through the WMF run's own config."""
  from musemb import wmf_run  # pylint: disable=g-import-not-at-top
  path = config.data.factors
  workdir = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} is missing: the recommendation evaluation reloads the "
                            "play counts through the launch.wmf run's config; rerun launch.wmf "
                            "in that workdir (it resumes) or set --config.eval.recommendation=False.")
  with open(config_path) as f:
    wmf_config = ml_collections.ConfigDict(json.load(f))
  return wmf_run.load_plays(wmf_config)


def recommendation(pred_train: dict, pred_test: dict, config: ml_collections.ConfigDict
                   ) -> dict[str, float]:
  """Table 6.1: predicted factors vs random vs the WMF factors (upper bound), same users/songs."""
  plays = _load_plays(config)
  column = {item: i for i, item in enumerate(plays.items)}
  counts = plays.to_csr()

  def usable(pred):
    keep = np.array([t in column for t in pred["track_ids"]]) & pred["has_factors"]
    return keep, np.array([column[t] for t in pred["track_ids"][keep]], np.int64)

  keep_train, train_cols = usable(pred_train)
  keep_test, test_cols = usable(pred_test)
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
    _, per_tag, _ = proxy.fit_and_score(x, y, np.arange(n_train), np.arange(n_train, len(x)),
                                        l2=t.l2, steps=t.steps, learning_rate=t.learning_rate)
    out[f"transfer/{name}_roc_auc"] = float(np.nanmean(per_tag)) if np.isfinite(
        per_tag).any() else float("nan")
  return out


def write_outputs(variables: Any, data: audio_data.AudioData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Test metrics, recommendation and transfer tables, predictions.npz; merged into metrics.json."""
  head, key = config.model.head, system_key(config)
  split = config.eval.split
  pred_test = predict_split(variables, data, config, split)
  metrics = {f"{key}/{k}": v for k, v in _split_metrics(pred_test, head).items()}
  arrays = {f"{split}_track_ids": pred_test["track_ids"], f"{split}_outputs": pred_test["outputs"]}
  if head == "factors":
    pred_train = predict_split(variables, data, config, "train")
    arrays.update({"train_track_ids": pred_train["track_ids"],
                   "train_outputs": pred_train["outputs"]})
    if config.eval.recommendation:
      metrics.update({f"{key}/{k}": v for k, v in
                      recommendation(pred_train, pred_test, config).items()})
    if config.eval.transfer.enabled:
      metrics.update({f"{key}/{k}": v for k, v in transfer(pred_train, pred_test, config).items()})
  for split_name, c in data.info["coverage"].items():
    metrics[f"{key}/coverage/{split_name}_tracks"] = float(c["tracks"])
    if data.targets:
      metrics[f"{key}/coverage/{split_name}_with_factors"] = float(c["with_factors"])
  if jax.process_index() == 0:
    utils.save_npz_atomic(os.path.join(workdir, "predictions.npz"), arrays)
    utils.update_metrics_json(workdir, metrics)
  logging.info("%s test metrics:\n%s", key, "\n".join(f"  {k}: {v:.4f}"
                                                       for k, v in sorted(metrics.items())))
  return metrics
