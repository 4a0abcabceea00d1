"""SampleCNN from raw audio: latent-factor regression (Platt, chapter 6) or direct auto-tagging.

The thesis' recipe (`004_*` paper, §6.1), on the shared training loop:

* audio stored in the TFRecords (16 kHz, 20 s per track by default: `configs/samplecnn.py`), random
  59,049-sample (3.7 s) crops in training (`data.py`, seeded and resumable);
* the 3^9 SampleCNN (`musemb.models.samplecnn`, Lee et al. 2017) with batch-norm statistics carried
  in the `batch_stats` collection of the run's variables, and one of two heads:
  - `factors`: linear + l2-normalised output, MSE against the l2-normalised WMF item factors of the
    track (`launch.wmf`); tracks without factors are left out of training and counted;
  - `tags`: sigmoid tag outputs with binary cross-entropy (Lee et al.'s auto-tagger; the direct
    tagging baseline of Table 6.2);
* SGD with Nesterov momentum (Lee et al.'s implementation) and the learning rate divided by 5 when
  validation stops improving, four times (`optimizer.plateau_drops`), or Adam;
* evaluation on the average of the first five adjacent 59,049-sample windows of each track
  (`eval.windows`; fewer when a clip holds fewer whole windows).

Final outputs (`write_outputs`; `evaluation.py`), metrics.json keys `samplecnn/...` for the factors
head and `samplecnn_tags/...` for the tags head (`metrics_key`) so that the two runs merge into one
report (`report.py`):

* factor regression quality on the test split: MSE between the l2-normalised averaged prediction
  and the l2-normalised factors, and their mean cosine;
* recommendation (§6.2.1, Table 6.1): users' play-weighted sums of the training songs' predicted
  factors rank the test songs; per-user ROC AUC and mAP@500 next to random scores and the upper
  bound from the WMF factors themselves, fitted on all plays and turned into user vectors by the
  same `musemb.evaluate.user_vectors` (`musemb.evaluate.recommendation_metrics`);
* transfer (§6.2.1 "Tag prediction", Table 6.2): a logistic regression from predicted factors to
  tags (trained on the training split's predictions, scored on the test split's) next to the same
  regression on the WMF factors; the tags head's own test ROC AUC is the direct-tagging row;
* `predictions.npz` (per split: track ids and averaged outputs) for later analysis.

Departure (documented in the README): the thesis kept the tagged tracks in separate shards with
Choi et al.'s split; here one prepared dataset's train/valid/test splits serve both the
recommendation and the tagging evaluations.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from musemb import utils
from musemb.models import samplecnn as samplecnn_lib
from musemb.systems import System
from musemb.systems.samplecnn import data as audio_data
from musemb.systems.samplecnn import evaluation
from musemb.systems.samplecnn import report

HEADS = samplecnn_lib.HEADS
load_data = audio_data.load_data


def metrics_key(config: ml_collections.ConfigDict) -> str:
  """The metrics.json prefix: `samplecnn` (factor regression) or `samplecnn_tags` (auto-tagging)."""
  return "samplecnn" if config.model.head == "factors" else "samplecnn_tags"


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params", "batch_stats"} of the model, initialised with a batch of two silent crops."""
  model = evaluation.make_model(config, info)
  return dict(model.init({"params": rng}, jnp.zeros((2, config.data.crop_samples), jnp.float32),
                         train=False))


def loss(variables: dict, batch: dict, tables: Any, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """MSE to l2-normalised factors (factors head) or BCE to tags; batch statistics from this batch."""
  del tables
  info = {"num_factors": batch["factors"].shape[-1] if "factors" in batch else 0,
          "num_tags": batch["tags"].shape[-1]}
  model = evaluation.make_model(config, info)
  out, updates = model.apply(variables, batch["audio"], train=True, rngs={"dropout": rng},
                             mutable=["batch_stats"])
  if config.model.head == "factors":
    value = samplecnn_lib.factor_mse_loss(out, batch["factors"])
  else:
    value = samplecnn_lib.bce_loss(out, batch["tags"])
  return value, {"model_state": dict(updates)}


def evaluate(variables: Any, data: audio_data.AudioData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Validation: factor MSE / cosine (factors head) or per-tag ROC AUC / AP (tags head)."""
  return evaluation.split_metrics(evaluation.predict_split(variables, data, config, split),
                                  config.model.head)


def write_outputs(variables: Any, data: audio_data.AudioData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Test metrics, recommendation (Table 6.1) and transfer (Table 6.2), `predictions.npz`."""
  head = config.model.head
  split = config.eval.split
  pred_test = evaluation.predict_split(variables, data, config, split)
  metrics = evaluation.split_metrics(pred_test, head)
  arrays = {f"{split}_track_ids": pred_test["track_ids"], f"{split}_outputs": pred_test["outputs"]}
  if head == "factors":
    pred_train = evaluation.predict_split(variables, data, config, "train")
    arrays.update({"train_track_ids": pred_train["track_ids"],
                   "train_outputs": pred_train["outputs"]})
    if config.eval.recommendation:
      metrics.update(evaluation.recommendation(pred_train, pred_test, config))
    if config.eval.transfer.enabled:
      metrics.update(evaluation.transfer(pred_train, pred_test, config))
  for split_name, c in data.info["coverage"].items():
    metrics[f"coverage/{split_name}_tracks"] = float(c["tracks"])
    if data.targets:
      metrics[f"coverage/{split_name}_with_factors"] = float(c["with_factors"])
  if jax.process_index() == 0:
    utils.save_npz_atomic(os.path.join(workdir, "predictions.npz"), arrays)
  logging.info("%s test metrics:\n%s", metrics_key(config),
               "\n".join(f"  {k}: {v:.4f}" for k, v in sorted(metrics.items())))
  return metrics


SYSTEM = System(
    name="samplecnn", load_data=load_data, init=init, loss=loss, evaluate=evaluate,
    write_outputs=write_outputs, report=report.write_report, metrics_key=metrics_key)
