"""Playlist-based tag propagation for a SampleCNN auto-tagger, on the shared training loop.

Lin, Chung and Chen, "Playlist-Based Tag Propagation for Improving Music Auto-Tagging" (`002_*`
paper). Songs next to each other in a playlist tend to share tags (its Fig. 2), so each training
song also learns the tags of a playlist neighbour s' drawn by a random walk, weighted by how
likely the walk is to pick it:

* the model (`model.name`): Lee et al.'s 3^9 SampleCNN (`musemb.models.samplecnn`, the paper's)
  on 22,050 Hz crops of 59,049 samples (`configs/tagprop.py` says why not the paper's 50,000), or,
  beyond the paper (its future work: "applying our approach to other neural network-based
  models"), Won et al.'s short-chunk CNN (`musemb.models.shortchunk`: log-mel computed inside the
  model, seven conv layers, a dense head) on crops of 88,064 samples (173 frames, ~4 s). The
  objective never looks inside the network, so both train with the same eq. (1)/(3), heads, walk,
  optimizer and schedule; batch statistics in `batch_stats`;
* the baseline (`objective.name = "baseline"`): eq. (1), binary cross-entropy on the song's own
  tags (`musemb.objectives.supportive.tag_bce`);
* the proposed model (`"supportive"`): eq. (3), eq. (1) plus the supportive cross-entropy on the
  partner's tags weighted by eq. (4)'s P(s'|s) (`supportive.supportive_bce`). The partner is drawn
  inside the jitted step (`musemb.samplers.propagation.sample`, its docstring settles the
  published pseudocode) from the batch's song indices and the device tables of `data.py`; only
  training songs pass tags on;
* a search range per tag category (`objective.category_r`, e.g. "genre=0.8,instrument=0.2", beyond
  the paper: its §V.D future work): the tags of each named category of the taxonomy
  (`eval.taxonomy`) are propagated from a walk with that category's r, every other tag from the
  walk with `objective.r`; one walk per distinct r in the step, each with eq. (4)'s weights at
  its r (`musemb.samplers.propagation.grouped_targets` gives the per-tag targets and weights,
  `supportive_bce` takes them). With no category named it is the paper's eq. (3) exactly;
* heads (`model.head`): `single`, the paper's one output layer for both terms, or `separate`, a
  second linear output for the supportive term on the same features (the usual multi-task form;
  the paper calls its objective multi-task). Both are one dense layer: with `separate` it has 2T
  outputs, columns [0, T) the auto-tagger and [T, 2T) the supportive head; a dense layer's columns
  have their own weights and biases, so this is exactly two linear heads on the same (dropped-out)
  features. The supportive head only trains; evaluation reads columns [0, T);
* evaluation (`evaluation.py`): annotation MAP, retrieval MAP and retrieval ROC-AUC on the test
  songs, each track the mean of its first `eval.windows` adjacent windows' probabilities (Lee et
  al.'s evaluation, reused from `musemb.systems.samplecnn.evaluation`); validation watches eq. (1)
  on the validation songs (`bce`).

metrics.json keys: `tagprop_baseline/...` (eq. (1)), `tagprop/...` (eq. (3), single head) and
`tagprop_separate/...` (eq. (3), separate head), with `_category_r` after a proposed key when
`objective.category_r` is set and `_shortchunk` at the end for the short-chunk CNN, so one
workdir's metrics.json can hold every row of Table I (`report.py` merges them). Per-song and
per-tag values go to `per_query.npz` for the report's paired bootstrap intervals, test
predictions to `predictions.npz` and Fig. 2's playlist statistic to `tag_similarity.npz`.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import utils
from musemb.models import samplecnn as samplecnn_lib
from musemb.models import shortchunk as shortchunk_lib
from musemb.objectives import supportive
from musemb.samplers import propagation
from musemb.systems import System
from musemb.systems.samplecnn import evaluation as samplecnn_evaluation
from musemb.systems.tagprop import data as tagprop_data
from musemb.systems.tagprop import evaluation
from musemb.systems.tagprop import report
from musemb.systems.tagprop import taxonomy as taxonomy_lib

HEADS = ("single", "separate")
MODELS = ("samplecnn", "shortchunk")
OBJECTIVES = ("supportive", "baseline")
metrics_key = evaluation.metrics_key


def model_name(config: ml_collections.ConfigDict) -> str:
  """`model.name`; a run saved before the key existed trained the SampleCNN."""
  return config.model.get("name", "samplecnn")


def category_r_spec(config: ml_collections.ConfigDict) -> str:
  """`objective.category_r`; a run saved before the key existed had one search range."""
  return config.objective.get("category_r", "")


def check_config(config: ml_collections.ConfigDict) -> None:
  """This system's own keys, checked before anything loads."""
  problems = []
  if config.model.head not in HEADS:
    problems.append(f"model.head={config.model.head!r} (one of {HEADS})")
  if config.objective.name not in OBJECTIVES:
    problems.append(f"objective.name={config.objective.name!r} (one of {OBJECTIVES})")
  if config.objective.reduction not in supportive.REDUCTIONS:
    problems.append(f"objective.reduction={config.objective.reduction!r} (one of "
                    f"{supportive.REDUCTIONS})")
  if not 0.0 <= float(config.objective.r) <= 1.0:
    problems.append(f"objective.r={config.objective.r!r} (the search range, in [0, 1])")
  if model_name(config) not in MODELS:
    problems.append(f"model.name={model_name(config)!r} (one of {MODELS})")
  try:
    category_r = taxonomy_lib.parse_category_r(category_r_spec(config))
  except ValueError as error:
    problems.append(str(error).rstrip("."))
    category_r = {}
  if category_r and config.objective.name == "baseline":
    problems.append(f"objective.category_r={category_r_spec(config)!r} with "
                    "objective.name='baseline' (the baseline propagates nothing)")
  if config.objective.name == "baseline" and config.model.head == "separate":
    problems.append("model.head='separate' with objective.name='baseline' (the baseline trains "
                    "no supportive head)")
  if problems:
    raise ValueError("tagprop config: " + "; ".join(problems) + ".")


class ShortChunkTagger(shortchunk_lib.ShortChunkCNN):
  """`ShortChunkCNN` as an auto-tagger: the same module and parameters; `head` (a class attribute,
  not a field) tells SampleCNN's window reader (`samplecnn.evaluation.predict_split`, reused for
  both models) that the outputs are tag logits to pass through a sigmoid before averaging."""

  head = "tags"


def make_model(config: ml_collections.ConfigDict, num_tags: int):
  """The network (`model.name`) with T outputs (single head) or 2T (auto-tagger, then supportive
  head)."""
  m = config.model
  if num_tags < 1:
    raise ValueError("tagprop: the dataset has no tags to learn.")
  outputs = int(num_tags) * (2 if m.head == "separate" else 1)
  if model_name(config) == "shortchunk":
    s = m.shortchunk
    return ShortChunkTagger(
        num_outputs=outputs, widths=tuple(int(w) for w in s.widths),
        dense_width=int(s.dense_width) or None, dropout_rate=float(m.dropout),
        mel=shortchunk_lib.MelConfig(sample_rate=int(config.data.sample_rate),
                                     n_fft=int(s.n_fft), hop_length=int(s.hop_length),
                                     n_mels=int(s.n_mels)),
        num_samples=int(config.data.crop_samples), bn_momentum=float(s.bn_momentum))
  return samplecnn_lib.SampleCNN(
      num_outputs=outputs, head="tags",
      widths=tuple(int(w) for w in m.widths), stem_width=int(m.stem_width),
      final_width=int(m.final_width) or None, dropout_rate=float(m.dropout),
      num_samples=int(config.data.crop_samples), bn_momentum=float(m.bn_momentum))


def load_data(config: ml_collections.ConfigDict, workdir: str) -> tagprop_data.TagpropData:
  check_config(config)
  return tagprop_data.load_data(config, workdir)


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params", "batch_stats"}, initialised with a batch of two silent crops."""
  check_config(config)
  model = make_model(config, info["num_tags"])
  return dict(model.init({"params": rng}, jnp.zeros((2, config.data.crop_samples), jnp.float32),
                         train=False))


def loss(variables: dict, batch: dict, tables: Any, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """Eq. (1) (baseline) or eq. (3) (proposed), averaged over the batch.

  Batch: `audio` [B, n], `tags` [B, T], `song` [B] int32 (rows of the tables). The walk draws
  from its own key, split from the step's, so dropout and propagation are independent.
  """
  num_tags = batch["tags"].shape[-1]
  model = make_model(config, num_tags)
  rng_dropout, rng_walk = jax.random.split(rng)
  out, updates = model.apply(variables, batch["audio"], train=True, rngs={"dropout": rng_dropout},
                             mutable=["batch_stats"])
  logits = out[:, :num_tags]
  reduction = config.objective.reduction
  own = supportive.tag_bce(logits, batch["tags"], reduction)
  aux = {"model_state": dict(updates)}
  if config.objective.name == "baseline":
    aux["bce"] = {"own": jnp.mean(own)}
    return jnp.mean(own), aux
  support_logits = out[:, num_tags:] if config.model.head == "separate" else None
  walk = propagation.sample(tables["propagation"], batch["song"], rng_walk)
  if "ranges" in tables:
    # A search range per tag category: one more walk per r (keys folded from the walk's, so the
    # objective.r walk is the one the paper's model would draw), tags picking their group's.
    walks = [walk] + [propagation.sample(t, batch["song"], jax.random.fold_in(rng_walk, g))
                      for g, t in enumerate(tables["ranges"], start=1)]
    targets, weight, has_partner = propagation.grouped_targets(tables["song_tags"], walks,
                                                               tables["tag_range"])
  else:
    targets, has_partner = propagation.propagated_tags(tables["song_tags"], walk.partner)
    weight = walk.weight
  per_example = supportive.supportive_bce(logits, batch["tags"], targets, weight,
                                          support_logits=support_logits, has_partner=has_partner,
                                          reduction=reduction)
  found = (walk.partner >= 0).astype(jnp.float32)   # of the objective.r walk
  aux["bce"] = {"own": jnp.mean(own), "support": jnp.mean(per_example - own)}
  aux["propagation"] = {
      "partner_rate": jnp.mean(found),
      "other_song_rate": jnp.mean(found * (walk.partner != batch["song"])),
      "weight": jnp.sum(walk.weight * found) / jnp.maximum(jnp.sum(found), 1.0)}
  return jnp.mean(per_example), aux


def _predict(variables: Any, data: tagprop_data.TagpropData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, np.ndarray]:
  """Window-averaged probabilities of the auto-tagging head, [songs, T], with tags and ids."""
  num_tags = data.info["num_tags"]
  pred = samplecnn_evaluation.predict_split(variables, data, config, split,
                                            model=make_model(config, num_tags))
  pred["outputs"] = pred["outputs"][:, :num_tags]
  return pred


def evaluate(variables: Any, data: tagprop_data.TagpropData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Eq. (1) on the split's own tags (`bce`, the validation loss) and the Table I metrics."""
  pred = _predict(variables, data, config, split)
  metrics, _ = evaluation.tagging_metrics(pred["outputs"], pred["tags"])
  metrics["bce"] = evaluation.validation_bce(pred["outputs"], pred["tags"])
  return metrics


def write_outputs(variables: Any, data: tagprop_data.TagpropData,
                  config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Test metrics; `per_query.npz`, `predictions.npz`, `tag_similarity.npz` (Fig. 2)."""
  key = metrics_key(config)
  split = config.eval.split
  pred = _predict(variables, data, config, split)
  metrics, per_query = evaluation.tagging_metrics(pred["outputs"], pred["tags"])
  metrics["bce"] = evaluation.validation_bce(pred["outputs"], pred["tags"])
  metrics["num_tags"] = float(data.info["num_tags"])
  for name, value in data.info["playlists"].items():
    metrics[f"playlists/{name}"] = float(value)
  tag_names = np.asarray(data.info["tag_names"], str)
  arrays = {f"{key}/annotation/ap": per_query["annotation_ap"],
            "annotation/query_ids": np.asarray(pred["track_ids"], str),
            f"{key}/retrieval/ap": per_query["retrieval_ap"],
            f"{key}/retrieval/roc_auc": per_query["retrieval_auc"],
            "retrieval/query_ids": tag_names,
            "retrieval/train_counts": np.asarray(data.info["tag_train_counts"], np.int64)}
  similarity = evaluation.tag_similarity_by_distance(
      data.sequences, data.songs.tags, int(config.eval.max_distance), seed=int(config.seed))
  if jax.process_index() == 0:
    utils.save_npz_atomic(os.path.join(workdir, "per_query.npz"), arrays)
    utils.save_npz_atomic(os.path.join(workdir, "predictions.npz"),
                          {f"{split}_track_ids": np.asarray(pred["track_ids"], str),
                           f"{split}_scores": pred["outputs"], "tag_names": tag_names})
    utils.save_npz_atomic(os.path.join(workdir, "tag_similarity.npz"), similarity)
  logging.info("%s test metrics:\n%s", key,
               "\n".join(f"  {k}: {v:.4f}" for k, v in sorted(metrics.items())))
  return metrics


SYSTEM = System(
    name="tagprop", load_data=load_data, init=init, loss=loss, evaluate=evaluate,
    write_outputs=write_outputs, report=report.write_report, compare=report.compare,
    metrics_key=metrics_key, report_options=("taxonomy",))
