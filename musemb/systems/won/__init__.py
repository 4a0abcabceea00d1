"""Won et al.: multimodal metric learning for tag-based music retrieval, on the shared loop.

Follows Won, Oramas, Nieto, Gouyon and Serra, *Multimodal Metric Learning for Tag-Based Music
Retrieval* (ICASSP 2021) and its code (minzwon/tag-based-music-retrieval):

* **Model** (section 2.2, `musemb.models.branches`): a tag branch T(y) over word vectors and a song
  branch S(x), `config.model.branch`: `cultural` (WMF item factors, section 2.2.3), `acoustic`
  (the short-chunk CNN over log-mel, 22,050 Hz), `hybrid` (Table 2's concatenation) or
  `late_fusion` (our design: one embedding per modality, each with its own triplet loss against
  the shared tag branch, losses summed, scores fused at retrieval; see `branches.LateFusion`).
  Variables are `{"params": {"tag_branch", "song_branch"}, "batch_stats": {the same two}}`.
* **One training step**: the host draws the batch's B anchors (tag, positive song) from the
  training annotations (zero-shot tags removed) by `config.sampling.anchors` (random | balanced),
  a pure function of (seed, step) (`data.TagData.train_batch`), so the batch shards over the
  mesh's `data` axis and a resumed run sees the same triplets. The jitted `loss` then does the
  rest on the device, with the data in `tables`: the anchor tags' word vectors through T; the
  positive songs through S (audio: a random `config.data.crop_samples` chunk of each clip, cut on
  the device from the resident int16 audio with `dynamic_slice`); one negative per anchor among
  the batch's positive songs that lack the anchor tag (`negative_mask_from_annotations`), drawn by
  `config.sampling.negatives` (random | distance_weighted | cosine) from the current embeddings;
  the cosine triplet loss with margin 0.4 (eq. 2) over the anchors that found a negative. Table 1's
  rows are sampling=random (random anchors, random negatives), balanced (balanced, random),
  authors (balanced, cosine: the (cos + 1) / 2 weighting of the authors' code, which produced the
  paper's balanced-weighted numbers) and wu (balanced, distance_weighted: Wu et al.'s weighting,
  which the paper's text cites, with the zero-loss cut derived from this loss).
* **Optimisation** (section 2.2.3): Adam, learning rate 1e-4, weight decay 1e-4 (an L2 term added
  to the gradient, PyTorch's `weight_decay`), epochs of 10,000 triplets:
  `train.epochs` of `train.examples_per_epoch` triplets, turned into steps by the loop.
* **Evaluation** (section 4): a test song's embedding is the mean of its embeddings of
  `config.eval.chunks` (8) evenly spaced chunks (acoustic), or of its factors (cultural); every
  tag's embedding is T of its word vector; tags rank songs by cosine. Per-tag average precision
  and P@10 (`musemb.metrics`), MAP over the tags seen in training that have a positive test song
  (the others are excluded and counted in the log and in `per_tag.npz` as NaN); MAP per category
  of a tag taxonomy (genre, mood, location, language, instrument, activity, decade: Fig. 2);
  zero-shot MAP/P@10 over the held-out tags, queried by their word vectors only, next to the
  expected MAP of a random ranking (`random_ranking_ap`, exact); multi-tag queries: for pairs of
  seen tags co-occurring on test songs, the phrase "tag1 tag2" embedded by
  `musemb.text.tags.query_vector` and the tag branch; relevant songs carry both tags.

Departures: cultural and hybrid branches train and evaluate only the songs that have WMF factors
(counted per split in the log); late fusion scores songs without factors by audio alone. The
in-batch negatives of an anchor are drawn from the whole global batch (all devices' shares), so
the trajectory does not depend on the number of devices.

The package: this file is the recipe; `data.py` the data adapter (tags, word vectors, zero-shot
split, factors, resident training audio, host-drawn anchors), `model.py` the branches of a config
and embedding with them, `evaluation.py` the retrieval metrics, `report.py` Tables 1-3 and Fig. 2,
`query.py` the song index and query ranking the query tool and the server use (`predictor`).
`write_outputs` writes `per_tag.npz`, `song_index.npz`, `words.npz` and `info.json`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import utils
from musemb.models import branches
from musemb.objectives import triplet as triplet_objective
from musemb.samplers import triplet as triplet_sampler
from musemb.systems import System
from musemb.systems.won import data as tag_data
from musemb.systems.won import evaluation
from musemb.systems.won import model as won_model
from musemb.systems.won import query as query_lib
from musemb.systems.won import report
from musemb.text import vectors as text_vectors

BRANCHES = won_model.BRANCHES
CATEGORIES = tag_data.CATEGORIES
load_data = tag_data.load_data


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"params": {"tag_branch", "song_branch"}, "batch_stats": the same two}, from silent inputs."""
  k_tag, k_song = jax.random.split(rng)
  tag = won_model.make_tag_branch(config, info["word_dim"])
  song = won_model.make_song_branch(config, info["num_factors"])
  tv = tag.init({"params": k_tag}, jnp.zeros((2, info["word_dim"]), jnp.float32), train=False)
  audio = jnp.zeros((2, int(config.data.crop_samples)), jnp.float32)
  factors = jnp.zeros((2, max(int(info["num_factors"]), 1)), jnp.float32)
  sv = song.init({"params": k_song}, *won_model.song_inputs(config.model.branch, audio, factors),
                 train=False)
  return {"params": {"tag_branch": tv["params"], "song_branch": sv["params"]},
          "batch_stats": {"tag_branch": tv["batch_stats"], "song_branch": sv["batch_stats"]}}


def _triplets(key, method, tag_emb, song_emb, valid, margin):
  """One in-batch negative per anchor, then the masked triplet loss; also the fraction of anchors
  with a negative and, among those, the fraction with a non-zero hinge (logged).

  Wu et al.'s sampler skips negatives whose loss is zero; for this loss that distance depends on
  each anchor's positive (song_emb[i]), not Wu's fixed 1.4 (samplers/triplet.py)."""
  cut = (triplet_sampler.zero_hinge_distance(tag_emb, song_emb, margin)
         if method == "distance_weighted" else None)
  negative, has_negative = triplet_sampler.sample_negatives(key, method, tag_emb, song_emb, valid,
                                                            nonzero_loss_cutoff=cut)
  hinge = triplet_objective.triplet_losses(tag_emb, song_emb, song_emb[negative], margin)
  value = triplet_objective.triplet_loss(tag_emb, song_emb, song_emb[negative], margin,
                                         mask=has_negative)
  active = jnp.sum(jnp.where(has_negative, hinge > 0, False)) / jnp.maximum(
      jnp.sum(has_negative), 1)
  return value, jnp.mean(has_negative.astype(jnp.float32)), active


def loss(variables: dict, batch: dict, tables: dict, rng: jax.Array,
         config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """Triplet loss of one batch of (anchor tag, positive song) pairs (see the module docstring)."""
  params, stats = variables["params"], variables["batch_stats"]
  branch = config.model.branch
  anchor, positive = batch["anchor"], batch["positive"]
  k_crop, k_neg, k_tag, k_song = jax.random.split(rng, 4)
  annotations = tables["annotations"]
  word_dim = tables["tag_vectors"].shape[1]
  num_factors = tables["factors"].shape[1] if "factors" in tables else 0
  tag_emb, tag_updates = won_model.make_tag_branch(config, word_dim).apply(
      {"params": params["tag_branch"], "batch_stats": stats["tag_branch"]},
      tables["tag_vectors"][anchor], train=True, rngs={"dropout": k_tag}, mutable=["batch_stats"])
  audio = factors = None
  if branch != "cultural":
    audio = won_model.crop_audio(tables["audio"], tables["lengths"], positive, k_crop,
                                 int(config.data.crop_samples))
  if branch != "acoustic":
    factors = tables["factors"][positive]
  song_emb, song_updates = won_model.make_song_branch(config, num_factors).apply(
      {"params": params["song_branch"], "batch_stats": stats["song_branch"]},
      *won_model.song_inputs(branch, audio, factors), train=True, rngs={"dropout": k_song},
      mutable=["batch_stats"])
  # Negatives come from the whole global batch: the trajectory is the same on any device count.
  valid = triplet_sampler.negative_mask_from_annotations(annotations, anchor, positive)
  margin = float(config.sampling.margin)
  method = config.sampling.negatives
  aux = {}
  if branch == "late_fusion":
    total = 0.0
    for m, name in enumerate(branches.MODALITIES):
      v = valid
      if name == "cultural":
        has = tables["has_factors"][positive]
        v = v & has[None, :] & has[:, None]   # both songs need factors for the cultural loss
      value, with_negative, active = _triplets(jax.random.fold_in(k_neg, m), method, tag_emb,
                                               song_emb[:, m], v, margin)
      total = total + value
      aux[f"loss/{name}"] = value
      aux[f"triplets/{name}_with_negative"] = with_negative
      aux[f"triplets/{name}_active"] = active
    value = total
  else:
    value, with_negative, active = _triplets(k_neg, method, tag_emb, song_emb, valid, margin)
    aux["triplets/with_negative"] = with_negative
    aux["triplets/active"] = active
  aux["model_state"] = {"batch_stats": {"tag_branch": tag_updates["batch_stats"],
                                        "song_branch": song_updates["batch_stats"]}}
  return value, aux


def evaluate(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Validation: retrieval MAP/P@10 (seen tags), zero-shot and category MAP; no multi-tag."""
  emb = evaluation.embed_split(variables, data, config, split)
  tag_emb = won_model.embed_tag_vectors(variables, config, data.tag_vectors)
  metrics, _ = evaluation.retrieval_metrics(emb, tag_emb, data, config)
  return metrics


def write_outputs(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Final evaluation on `config.eval.split`.

  Metrics: `retrieval/map`, `retrieval/p@10`, `retrieval/num_tags`; `category/<category>/num_tags`
  for the seven categories and `category/<category>/map` for those with tags; `zero_shot/map`,
  `zero_shot/p@10`, `zero_shot/random_map`, `zero_shot/num_tags`; `multi_tag/map`,
  `multi_tag/p@10`, `multi_tag/num_queries`; `words/oov_tags`. Undefined values (no zero-shot
  tag, no pair) are NaN.

  Files: `per_tag.npz` (tag_names, ap, p10 [T], NaN where excluded; seen [T], False for zero-shot
  tags), `song_index.npz` (track_ids, titles, artists, embeddings [S, d] or [S, 2, d] for late
  fusion, has_factors, tag_names, tag_embeddings [T, d]), `words.npz` (the word vectors used) and
  `info.json` (what `init` needs, so the predictor restores the run without its dataset).
  """
  split = config.eval.split
  emb = evaluation.embed_split(variables, data, config, split)
  tag_emb = won_model.embed_tag_vectors(variables, config, data.tag_vectors)
  metrics, per_tag = evaluation.retrieval_metrics(emb, tag_emb, data, config, variables)
  metrics["words/oov_tags"] = float(len(data.tag_report.oov_tags))
  if jax.process_index() == 0:
    utils.save_npz_atomic(os.path.join(workdir, "per_tag.npz"), per_tag)
    utils.save_npz_atomic(os.path.join(workdir, "song_index.npz"), {
        "track_ids": emb["track_ids"], "titles": emb["titles"], "artists": emb["artists"],
        "embeddings": emb["embeddings"].astype(np.float32), "has_factors": emb["has_factors"],
        "tag_names": np.array(data.tag_names, str), "tag_embeddings": tag_emb.astype(np.float32)})
    data.words.save(os.path.join(workdir, "words.npz"))
    utils.write_json_atomic(os.path.join(workdir, "info.json"), {
        k: data.info[k] for k in ("num_tags", "tag_names", "word_dim", "num_factors",
                                  "sample_rate", "zero_shot_tags", "dataset", "coverage")})
  logging.info("won test metrics:\n%s", "\n".join(f"  {k}: {v:.4f}"
                                                  for k, v in sorted(metrics.items())))
  return metrics


class WonPredictor:
  """A finished run's song index, tag branch and (acoustic, late fusion) audio branch.

  `search(text)` ranks the index's songs for free text (words with no vector are listed under
  "oov" and left out); `analyze(waveform)` gives the tags nearest a clip (audio branches only).
  Constructing one reads the word vectors and the song index; the network's variables are restored
  on first use (`load()`), so questions the run cannot answer fail fast.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict,
               restore: Callable[[dict], Any], acoustic_weight: float):
    for name in ("words.npz", "song_index.npz"):
      if not os.path.exists(os.path.join(workdir, name)):
        raise FileNotFoundError(f"{workdir} lacks {name}: not a finished won run (train it with "
                                "python -m launch.train --config=configs/won.py:... first).")
    self.workdir, self.config, self._restore = workdir, config, restore
    self.acoustic_weight = acoustic_weight
    self.words = text_vectors.load_npz(os.path.join(workdir, "words.npz"))
    self.index = query_lib.load_song_index(workdir)
    self.searches_text = True
    hears = config.model.branch in ("acoustic", "late_fusion")
    self.sample_rate = int(config.data.sample_rate) if hears else None
    self._variables = None

  @property
  def variables(self) -> Any:
    return self.load()

  def load(self) -> Any:
    """The run's variables (restored once, from `info.json` and the best checkpoint)."""
    if self._variables is None:
      path = os.path.join(self.workdir, "info.json")
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: the won run did not finish its final "
                                "evaluation; rerun its training command (it resumes).")
      with open(path) as f:
        self._variables = self._restore(json.load(f))
    return self._variables

  def search(self, text: str, top: int) -> dict[str, Any]:
    q = query_lib.split_query(self.words, text)    # raises when no word has a vector
    result = query_lib.answer_queries(
        self.index, [q], lambda t: won_model.embed_query(self.load(), self.words, self.config, t),
        top, self.acoustic_weight)
    return result[q.query]

  def analyze(self, waveform: np.ndarray, top: int) -> dict[str, Any]:
    if self.sample_rate is None:
      raise ValueError(f"this is a {self.config.model.branch!r} run, which embeds songs from "
                       "listening data, not audio: audio needs an acoustic or late_fusion run.")
    indices, scores = query_lib.rank_tags(
        won_model.embed_audio(self.load(), self.config, waveform), self.index.tag_embeddings, top)
    return {"tags": [{"name": str(self.index.tag_names[i]), "score": float(s)}
                     for i, s in zip(indices, scores)]}


def predictor(workdir: str, config: ml_collections.ConfigDict, restore: Callable[[dict], Any],
              acoustic_weight: float | None = None) -> WonPredictor:
  """The run from its workdir alone (`info.json`, `words.npz`, `song_index.npz`, checkpoints): no
  dataset needed. `acoustic_weight` (late fusion's w in [0, 1]) defaults to the config's."""
  if acoustic_weight is not None and not 0.0 <= acoustic_weight <= 1.0:
    raise ValueError(f"acoustic_weight={acoustic_weight} must be in [0, 1].")
  weight = (acoustic_weight if acoustic_weight is not None
            else query_lib.late_fusion_weight(config.to_dict()))
  return WonPredictor(workdir, config, restore, weight)


SYSTEM = System(
    name="won", load_data=load_data, init=init, loss=loss, evaluate=evaluate,
    write_outputs=write_outputs, report=report.write_report, compare=report.compare_runs,
    predictor=predictor)
