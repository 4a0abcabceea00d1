"""Won et al.: multimodal metric learning for tag-based music retrieval, on the shared loop.

Follows Won, Oramas, Nieto, Gouyon and Serra, *Multimodal Metric Learning for Tag-Based Music
Retrieval* (ICASSP 2021) and its code (minzwon/tag-based-music-retrieval):

* **Model** (section 2.2, `musemb.models.branches`): a tag branch T(y) over word vectors and a song
  branch S(x), `config.model.branch`: `cultural` (WMF item factors, section 2.2.3), `acoustic`
  (the short-chunk CNN over log-mel, 22,050 Hz), `hybrid` (Table 2's concatenation) or
  `late_fusion` (our design: one embedding per modality, each with its own triplet loss against
  the shared tag branch, losses summed, scores fused at retrieval; see `branches.LateFusion`).
  Parameters are `{"tag_branch": ..., "song_branch": ...}`, with their batch-norm statistics in
  the `batch_stats` collection (`STATEFUL`).
* **One training step** (`loss`, one jitted function, data in `tables`, `musemb.data.tag_data`):
  B anchors (tag, positive song) from the training annotations (zero-shot tags removed) by
  `config.sampling.anchors` (random | balanced); the anchor tags' word vectors through T; the
  positive songs through S (audio: a random `config.data.crop_samples` chunk of each clip, cut on
  the device from the resident int16 audio with `dynamic_slice`); one negative per anchor among
  the batch's positive songs that lack the anchor tag (`negative_mask_from_annotations`), drawn by
  `config.sampling.negatives` (random | distance_weighted | cosine) from the current embeddings;
  the cosine triplet loss with margin 0.4 (eq. 2) over the anchors that found a negative. Table 1's
  rows are sampling=random (random anchors, random negatives), balanced (balanced, random) and
  weighted (balanced, distance_weighted); `cosine` is the authors' code's weighting.
* **Optimisation** (section 2.2.3): Adam, learning rate 1e-4, weight decay 1e-4 (an L2 term added
  to the gradient, PyTorch's `weight_decay`), epochs of 10,000 triplets:
  `num_steps = epochs * triplets_per_epoch / batch_size` (configs/won.py).
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
training step is replicated, not data-parallel, across devices (its batch is drawn on the device
from replicated tables); on one accelerator this is the whole step.

`write_outputs` writes `metrics.json` keys `won/...` (see `write_outputs`), `per_tag.npz`,
`song_index.npz`, `words.npz` and `info.json`; `embed_query` and `embed_audio` are the query
tool's entry points, `load_run` restores a finished run without the dataset.
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
import tensorflow_datasets as tfds

from musemb import metrics as metrics_lib
from musemb import utils
from musemb.text import readers as text_readers
from musemb.text import tags as text_tags
from musemb.text import vectors as text_vectors
from musemb.data import tag_data
from musemb.models import branches
from musemb.models import shortchunk
from musemb.models.samplecnn import l2_normalize
from musemb.objectives import triplet as triplet_objective
from musemb.samplers import triplet as triplet_sampler

STATEFUL = True
KEY = "won"
BRANCHES = ("cultural", "acoustic", "hybrid", "late_fusion")
CATEGORIES = tag_data.CATEGORIES
load_data = tag_data.load_data


# ----------------------------------------------------------------------------- modules


def make_tag_branch(config: ml_collections.ConfigDict, word_dim: int) -> branches.TagBranch:
  m = config.model
  return branches.TagBranch(input_dim=int(word_dim), hidden_dim=int(m.hidden_dim),
                            out_dim=int(m.embed_dim), dropout_rate=float(m.dropout),
                            bn_momentum=float(m.bn_momentum))


def make_song_branch(config: ml_collections.ConfigDict, num_factors: int) -> nn.Module:
  m = config.model
  if m.branch not in BRANCHES:
    raise ValueError(f"config.model.branch={m.branch!r}; expected one of {BRANCHES}.")
  common = dict(hidden_dim=int(m.hidden_dim), out_dim=int(m.embed_dim),
                dropout_rate=float(m.dropout), bn_momentum=float(m.bn_momentum))
  if m.branch == "cultural":
    return branches.CulturalBranch(input_dim=int(num_factors), **common)
  audio = dict(widths=tuple(int(w) for w in m.widths),
               mel=shortchunk.MelConfig(sample_rate=int(config.data.sample_rate)),
               num_samples=int(config.data.crop_samples))
  if m.branch == "acoustic":
    return branches.AcousticBranch(**audio, **common)
  return branches.make_song_branch(m.branch, factors_dim=int(num_factors), **audio, **common)


def _acoustic_module(config: ml_collections.ConfigDict) -> branches.AcousticBranch:
  m = config.model
  return branches.AcousticBranch(
      widths=tuple(int(w) for w in m.widths),
      mel=shortchunk.MelConfig(sample_rate=int(config.data.sample_rate)),
      num_samples=int(config.data.crop_samples), hidden_dim=int(m.hidden_dim),
      out_dim=int(m.embed_dim), dropout_rate=float(m.dropout), bn_momentum=float(m.bn_momentum))


def _song_inputs(branch: str, audio: jax.Array | None, factors: jax.Array | None) -> list:
  named = {"audio": audio, "factors": factors}
  return [named[k] for k in branches.SONG_INPUTS[branch]]


def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> tuple[Any, Any]:
  """({"tag_branch", "song_branch"} params, {"batch_stats": the same two}) from silent inputs."""
  k_tag, k_song = jax.random.split(rng)
  tag = make_tag_branch(config, info["word_dim"])
  song = make_song_branch(config, info["num_factors"])
  tv = tag.init({"params": k_tag}, jnp.zeros((2, info["word_dim"]), jnp.float32), train=False)
  audio = jnp.zeros((2, int(config.data.crop_samples)), jnp.float32)
  factors = jnp.zeros((2, max(int(info["num_factors"]), 1)), jnp.float32)
  sv = song.init({"params": k_song}, *_song_inputs(config.model.branch, audio, factors),
                 train=False)
  params = {"tag_branch": tv["params"], "song_branch": sv["params"]}
  state = {"batch_stats": {"tag_branch": tv["batch_stats"], "song_branch": sv["batch_stats"]}}
  return params, state


def project(params: Any, config: ml_collections.ConfigDict) -> Any:
  del config
  return params


def _sub(variables: Any, name: str) -> dict:
  """The flax variables of one branch out of the system's `{"params", "batch_stats"}`."""
  return {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}


# ----------------------------------------------------------------------------- the step


def crop_audio(audio: jax.Array, lengths: jax.Array, songs: jax.Array, key: jax.Array,
               crop: int) -> jax.Array:
  """Random `crop`-sample chunks of the resident int16 clips -> float32 [len(songs), crop].

  A chunk starts uniformly in [0, length - crop] (0 for clips shorter than the crop, whose tail is
  the zero padding of `audio`, which is at least `crop` wide).
  """
  max_start = jnp.maximum(lengths[songs] - crop, 0)
  start = jax.random.randint(key, songs.shape, 0, max_start + 1, dtype=jnp.int32)

  def one(song, s):
    return jax.lax.dynamic_slice(audio, (song, s), (1, crop))[0]

  return jax.vmap(one)(songs, start).astype(jnp.float32) / 32768.0


def _triplets(key, method, tag_emb, song_emb, valid, margin):
  """One in-batch negative per anchor, then the masked triplet loss; also the fraction of anchors
  with a negative and, among those, the fraction with a non-zero hinge (logged)."""
  negative, has_negative = triplet_sampler.sample_negatives(key, method, tag_emb, song_emb, valid)
  hinge = triplet_objective.triplet_losses(tag_emb, song_emb, song_emb[negative], margin)
  value = triplet_objective.triplet_loss(tag_emb, song_emb, song_emb[negative], margin,
                                         mask=has_negative)
  active = jnp.sum(jnp.where(has_negative, hinge > 0, False)) / jnp.maximum(
      jnp.sum(has_negative), 1)
  return value, jnp.mean(has_negative.astype(jnp.float32)), active


def loss(params: Any, batch: dict, tables: Any, rng: jax.Array, config: ml_collections.ConfigDict,
         task_names: tuple[str, ...], model_state: Any) -> tuple[jax.Array, dict]:
  """Triplet loss of one batch sampled on the device (see the module docstring)."""
  del task_names
  branch = config.model.branch
  batch_size = batch["slot"].shape[0]
  k_anchor, k_crop, k_neg, k_tag, k_song = jax.random.split(rng, 5)
  annotations = tables["annotations"]
  anchor, positive = triplet_sampler.sample_anchors(k_anchor, config.sampling.anchors, annotations,
                                                    batch_size)
  word_dim = tables["tag_vectors"].shape[1]
  num_factors = tables["factors"].shape[1] if "factors" in tables else 0
  stats = model_state["batch_stats"]
  tag_emb, tag_updates = make_tag_branch(config, word_dim).apply(
      {"params": params["tag_branch"], "batch_stats": stats["tag_branch"]},
      tables["tag_vectors"][anchor], train=True, rngs={"dropout": k_tag}, mutable=["batch_stats"])
  audio = factors = None
  if branch != "cultural":
    audio = crop_audio(tables["audio"], tables["lengths"], positive, k_crop,
                       int(config.data.crop_samples))
  if branch != "acoustic":
    factors = tables["factors"][positive]
  song_emb, song_updates = make_song_branch(config, num_factors).apply(
      {"params": params["song_branch"], "batch_stats": stats["song_branch"]},
      *_song_inputs(branch, audio, factors), train=True, rngs={"dropout": k_song},
      mutable=["batch_stats"])
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


# ----------------------------------------------------------------------------- embeddings


@functools.lru_cache(maxsize=8)
def _tag_embedder(module: branches.TagBranch):
  @jax.jit
  def embed(variables, vectors):
    return module.apply(variables, vectors, train=False)
  return embed


@functools.lru_cache(maxsize=8)
def _chunk_embedder(module: nn.Module, branch: str):
  """Jitted: (variables, chunks [B, C, n] or None, factors [B, f] or None) -> the mean of each
  track's chunk embeddings, re-normalised: [B, d] (late fusion: [B, 2, d])."""

  @jax.jit
  def embed(variables, chunks, factors):
    if branch == "cultural":
      return module.apply(variables, factors, train=False)
    b, c, n = chunks.shape
    flat_factors = None if factors is None else jnp.repeat(factors, c, axis=0)
    out = module.apply(variables, *_song_inputs(branch, chunks.reshape(b * c, n), flat_factors),
                       train=False)
    out = out.reshape((b, c) + out.shape[1:])
    return l2_normalize(jnp.mean(out, axis=1))

  return embed


def embed_tag_vectors(variables: Any, config: ml_collections.ConfigDict,
                      vectors: np.ndarray) -> np.ndarray:
  """Word vectors [n, word dim] -> unit tag-space embeddings [n, d] (float32)."""
  vectors = np.asarray(vectors, np.float32)
  module = make_tag_branch(config, vectors.shape[1])
  return np.asarray(_tag_embedder(module)(_sub(variables, "tag_branch"), vectors), np.float32)


def chunk_starts(length: int, crop: int, chunks: int) -> np.ndarray:
  """`chunks` evenly spaced chunk starts covering a clip: round(linspace(0, length - crop))."""
  return np.round(np.linspace(0, max(length - crop, 0), chunks)).astype(np.int64)


def audio_chunks(audio: np.ndarray, crop: int, chunks: int) -> np.ndarray:
  """int16 or float samples [n] -> float32 [chunks, crop] evenly spaced (zero padded if short)."""
  audio = np.asarray(audio)
  x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
  if len(x) < crop:
    x = np.pad(x, (0, crop - len(x)))
  return np.stack([x[s:s + crop] for s in chunk_starts(len(x), crop, chunks)])


def embed_audio(variables: Any, config: ml_collections.ConfigDict,
                waveform: np.ndarray) -> np.ndarray:
  """A waveform at `config.data.sample_rate` (22,050 Hz) -> [d], the mean over `eval.chunks`
  evenly spaced chunks through the acoustic branch (late fusion: its acoustic embedding)."""
  branch = config.model.branch
  waveform = np.asarray(waveform)
  if waveform.ndim != 1:
    raise ValueError(f"embed_audio: waveform has shape {waveform.shape}; pass mono samples [n] at "
                     f"{config.data.sample_rate} Hz (average the channels first).")
  if branch == "acoustic":
    module, song_vars = _acoustic_module(config), _sub(variables, "song_branch")
  elif branch == "late_fusion":
    module = _acoustic_module(config)
    song_vars = {"params": variables["params"]["song_branch"]["acoustic"],
                 "batch_stats": variables["batch_stats"]["song_branch"]["acoustic"]}
  else:
    raise ValueError(f"embed_audio: the {branch} branch does not embed audio alone (it needs WMF "
                     "factors); use a model trained with branch=acoustic or late_fusion.")
  chunks = audio_chunks(waveform, int(config.data.crop_samples), int(config.eval.chunks))
  out = _chunk_embedder(module, "acoustic")(song_vars, chunks[None], None)
  return np.asarray(out[0], np.float32)


def _resolve_words(data_or_info: Any) -> text_vectors.WordVectors:
  if isinstance(data_or_info, text_vectors.WordVectors):
    return data_or_info
  words = getattr(data_or_info, "words", None)
  if words is None and isinstance(data_or_info, dict):
    words = data_or_info.get("words")
  if isinstance(words, str):
    words = text_readers.load_word_vectors(words)
  if not isinstance(words, text_vectors.WordVectors):
    raise TypeError("embed_query: pass the TagData, a WordVectors, or a dict with 'words' (a "
                    "WordVectors or the run's words.npz path).")
  return words


def embed_query(variables: Any, data_or_info: Any, config: ml_collections.ConfigDict,
                text: str) -> np.ndarray:
  """Free text -> [d]: `musemb.text.tags.query_vector` (phrase, word or mean of pieces) then the tag branch.

  Raises:
    ValueError: no word of `text` has a vector.
  """
  words = _resolve_words(data_or_info)
  vector, how = text_tags.query_vector(words, text)
  if how == "oov":
    raise ValueError(f"embed_query: no word of {text!r} is in the word vectors ({words!r}); try "
                     "other words, or train domain vectors on a corpus that has them.")
  return embed_tag_vectors(variables, config, vector[None])[0]


def _split_titles(data: tag_data.TagData, split: str) -> dict[str, str]:
  ds = data.prepared.builder.as_dataset(
      split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1),
      decoders=tfds.decode.PartialDecoding({"track_id": True, "title": True}))
  return {ex["track_id"].decode("utf-8"): ex["title"].decode("utf-8")
          for ex in ds.as_numpy_iterator()}


def embed_split(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
                split: str) -> dict[str, np.ndarray]:
  """Song embeddings of a split's evaluated songs (all, or those with factors for the cultural and
  hybrid branches): track_ids, titles, embeddings [S, d] (late fusion [S, 2, d]), tags [S, T],
  has_factors [S]."""
  branch = config.model.branch
  s = data.splits[split]
  keep = s.has_factors if branch in ("cultural", "hybrid") else np.ones(len(s), bool)
  factors = data.song_factors(split)
  module = make_song_branch(config, data.info["num_factors"])
  embed = _chunk_embedder(module, branch)
  song_vars = _sub(variables, "song_branch")
  bsz = int(config.eval.batch_size)
  out: list[np.ndarray] = []
  titles: dict[str, str] = {}
  if branch == "cultural":
    rows = np.flatnonzero(keep)
    for start in range(0, len(rows), bsz):
      idx = rows[start:start + bsz]
      f = np.zeros((bsz, factors.shape[1]), np.float32)
      f[:len(idx)] = factors[idx]
      out.append(np.asarray(embed(song_vars, None, f))[:len(idx)])
    titles = _split_titles(data, split)
  else:
    crop, n_chunks = int(config.data.crop_samples), int(config.eval.chunks)
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
      chunks = np.zeros((bsz, n_chunks, crop), np.float32)
      f = np.zeros((bsz, max(factors.shape[1], 1)), np.float32)
      for i, (row, c) in enumerate(pending):
        chunks[i] = c
        if factors.shape[1]:
          f[i] = factors[row]
      emb = np.asarray(embed(song_vars, chunks, f if branch != "acoustic" else None))
      out.append(emb[:len(pending)])
      pending.clear()

    for row, (track_id, title, audio) in enumerate(tag_data.split_audio(data.prepared, split)):
      if track_id != s.track_ids[row]:
        raise ValueError(f"{data.prepared.dataset_dir}: split {split} audio is out of order with "
                         "its labels; prepare the dataset again.")
      titles[track_id] = title
      if not keep[row]:
        continue
      pending.append((row, audio_chunks(audio, crop, n_chunks)))
      if len(pending) == bsz:
        flush()
    if pending:
      flush()
  emb_dim = int(config.model.embed_dim)
  shape = (0, 2, emb_dim) if branch == "late_fusion" else (0, emb_dim)
  embeddings = np.concatenate(out).astype(np.float32) if out else np.zeros(shape, np.float32)
  ids = s.track_ids[keep]
  artist_names = data.info.get("artist_names", [])
  artists = np.array([", ".join(artist_names[a] for a in s.artists[i] if a < len(artist_names))
                      for i in np.flatnonzero(keep)], str)
  return {"track_ids": ids, "titles": np.array([titles.get(t, "") for t in ids], str),
          "artists": artists, "embeddings": embeddings, "tags": s.tags[keep],
          "has_factors": s.has_factors[keep]}


def score(tag_emb: np.ndarray, song_emb: np.ndarray, config: ml_collections.ConfigDict,
          has_factors: np.ndarray | None = None) -> np.ndarray:
  """Cosine scores [songs, queries] of query embeddings [Q, d] against song embeddings.

  P@k in `retrieval_metrics` uses k = min(config.eval.k, songs).

  Late fusion ([S, 2, d]): `w cos_acoustic + (1 - w) cos_cultural` with w =
  `config.model.late_fusion_weight`, and the acoustic cosine alone for songs without factors.
  """
  t = tag_emb / np.maximum(np.linalg.norm(tag_emb, axis=-1, keepdims=True), 1e-12)
  s = song_emb / np.maximum(np.linalg.norm(song_emb, axis=-1, keepdims=True), 1e-12)
  if s.ndim == 2:
    return (s.astype(np.float64) @ t.T.astype(np.float64))
  cos = np.einsum("smd,qd->msq", s.astype(np.float64), t.astype(np.float64))
  w = float(config.model.late_fusion_weight)
  fused = w * cos[0] + (1.0 - w) * cos[1]
  if has_factors is not None:
    fused = np.where(np.asarray(has_factors, bool)[:, None], fused, cos[0])
  return fused


# ----------------------------------------------------------------------------- metrics


def random_ranking_ap(num_items: int, num_relevant: int) -> float:
  """Expected AP of a uniformly random ranking of `num_items` items, `num_relevant` relevant.

  E[AP] = (1/R) sum_k P(item k relevant) E[P@k | item k relevant]
        = (1/N) sum_{k=1..N} (1 + (k - 1)(R - 1)/(N - 1)) / k.
  """
  n, r = int(num_items), int(num_relevant)
  if r < 1 or r > n:
    raise ValueError(f"random_ranking_ap: need 1 <= num_relevant <= num_items, got {r}, {n}.")
  if n == 1:
    return 1.0
  k = np.arange(1, n + 1, dtype=np.float64)
  return float(np.sum((1.0 + (k - 1.0) * (r - 1.0) / (n - 1.0)) / k) / n)


def multi_tag_queries(tags: np.ndarray, usable: np.ndarray, max_queries: int, min_songs: int
                      ) -> tuple[list[tuple[int, int]], np.ndarray]:
  """Pairs of usable tags carried together by at least `min_songs` songs, most frequent first
  (ties by tag index), at most `max_queries`; and their relevance [songs, pairs] = the AND."""
  tags = np.asarray(tags, bool)
  cols = np.flatnonzero(np.asarray(usable, bool))
  t = tags[:, cols].astype(np.int64)
  co = t.T @ t
  pairs = [(int(co[a, b]), int(cols[a]), int(cols[b])) for a in range(len(cols))
           for b in range(a + 1, len(cols)) if co[a, b] >= max(int(min_songs), 1)]
  pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
  chosen = [(i, j) for _, i, j in pairs[:max(int(max_queries), 0)]]
  relevance = np.stack([tags[:, i] & tags[:, j] for i, j in chosen], axis=1) if chosen else (
      np.zeros((len(tags), 0), bool))
  return chosen, relevance


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if len(x) else float("nan")


def retrieval_metrics(emb: dict[str, np.ndarray], tag_emb: np.ndarray, data: tag_data.TagData,
                      config: ml_collections.ConfigDict, variables: Any | None = None,
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """All metrics of one split's embeddings (unprefixed keys) and the per-tag arrays."""
  tags = emb["tags"]
  num_songs = len(tags)
  if num_songs == 0:
    raise ValueError("no songs to evaluate (for the cultural/hybrid branch: no song of the split "
                     "has WMF factors; check config.data.factors).")
  k = min(int(config.eval.k), num_songs)
  scores = score(tag_emb, emb["embeddings"], config, emb["has_factors"])
  ap = np.asarray(metrics_lib.per_label_average_precision(scores, tags, reduce="none"))
  p10 = np.asarray(metrics_lib.per_label_precision_at_k(scores, tags, k, reduce="none"))
  seen = data.seen
  has_pos = tags.any(axis=0)
  names = data.tag_names
  out: dict[str, float] = {}
  ok = seen & has_pos
  out["retrieval/map"] = _nanmean(ap[ok])
  out["retrieval/p@10"] = _nanmean(p10[ok])
  out["retrieval/num_tags"] = float(ok.sum())
  excluded = [names[i] for i in np.flatnonzero(seen & ~has_pos)]
  if excluded:
    logging.info("%d seen tags have no positive song in the split and are excluded: %s",
                 len(excluded), excluded[:20])
  for cat in CATEGORIES:
    in_cat = ok & np.array([data.taxonomy.get(t) == cat for t in names], bool)
    out[f"category/{cat}/num_tags"] = float(in_cat.sum())
    if in_cat.any():
      out[f"category/{cat}/map"] = _nanmean(ap[in_cat])
  zs = ~seen & has_pos
  out["zero_shot/map"] = _nanmean(ap[zs])
  out["zero_shot/p@10"] = _nanmean(p10[zs])
  out["zero_shot/random_map"] = _nanmean([random_ranking_ap(num_songs, int(tags[:, i].sum()))
                                          for i in np.flatnonzero(zs)])
  out["zero_shot/num_tags"] = float(zs.sum())
  if variables is not None:
    pairs, relevance = multi_tag_queries(tags, ok, config.eval.multi_tag_max_queries,
                                         config.eval.multi_tag_min_songs)
    vectors, kept = [], []
    for q, (i, j) in enumerate(pairs):
      v, how = text_tags.query_vector(data.words, f"{names[i]} {names[j]}")
      if how != "oov":
        vectors.append(v)
        kept.append(q)
    if kept:
      q_emb = embed_tag_vectors(variables, config, np.stack(vectors))
      q_scores = score(q_emb, emb["embeddings"], config, emb["has_factors"])
      rel = relevance[:, kept]
      out["multi_tag/map"] = float(metrics_lib.per_label_average_precision(q_scores, rel))
      out["multi_tag/p@10"] = float(metrics_lib.per_label_precision_at_k(q_scores, rel, k))
    else:
      out["multi_tag/map"] = out["multi_tag/p@10"] = float("nan")
    out["multi_tag/num_queries"] = float(len(kept))
  per_tag = {"tag_names": np.array(names, str), "ap": ap.astype(np.float64),
             "p10": p10.astype(np.float64), "seen": seen.copy()}
  return out, per_tag


def evaluate(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
             split: str) -> dict[str, float]:
  """Validation: retrieval MAP/P@10 (seen tags), zero-shot and category MAP; no multi-tag."""
  emb = embed_split(variables, data, config, split)
  tag_emb = embed_tag_vectors(variables, config, data.tag_vectors)
  metrics, _ = retrieval_metrics(emb, tag_emb, data, config)
  return metrics


def write_outputs(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
                  workdir: str) -> dict[str, float]:
  """Final evaluation on `config.eval.split`.

  metrics.json keys (prefix `won/`): `retrieval/map`, `retrieval/p@10`, `retrieval/num_tags`;
  `category/<category>/num_tags` for the seven categories and `category/<category>/map` for those
  with tags; `zero_shot/map`, `zero_shot/p@10`, `zero_shot/random_map`, `zero_shot/num_tags`;
  `multi_tag/map`, `multi_tag/p@10`, `multi_tag/num_queries`; `words/oov_tags`. Undefined values
  (no zero-shot tag, no pair) are NaN.

  Files: `per_tag.npz` (tag_names, ap, p10 [T], NaN where excluded; seen [T], False for zero-shot
  tags), `song_index.npz` (track_ids, titles, artists, embeddings [S, d] or [S, 2, d] for late
  fusion, has_factors, tag_names, tag_embeddings [T, d]), `words.npz` (the word vectors used) and
  `info.json` (what `init` needs, for `load_run`).
  """
  split = config.eval.split
  emb = embed_split(variables, data, config, split)
  tag_emb = embed_tag_vectors(variables, config, data.tag_vectors)
  values, per_tag = retrieval_metrics(emb, tag_emb, data, config, variables)
  values["words/oov_tags"] = float(len(data.tag_report.oov_tags))
  metrics = {f"{KEY}/{k}": v for k, v in values.items()}
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
    utils.update_metrics_json(workdir, metrics)
  logging.info("won test metrics:\n%s", "\n".join(f"  {k}: {v:.4f}"
                                                 for k, v in sorted(metrics.items())))
  return metrics


class _RunInfo:
  """What `musemb.train.load_params` needs from a data object: `info` for `init`."""

  def __init__(self, info: dict, words: text_vectors.WordVectors):
    self.info = info
    self.words = words


def load_run(workdir: str) -> tuple[ml_collections.ConfigDict, Any, text_vectors.WordVectors]:
  """(config, variables, word vectors) of a finished run, without opening its dataset."""
  from musemb import train  # pylint: disable=g-import-not-at-top
  for name in ("config.json", "info.json", "words.npz"):
    if not os.path.exists(os.path.join(workdir, name)):
      raise FileNotFoundError(f"{workdir} lacks {name}: not a finished won run (train it with "
                              "python -m launch.train --config=configs/won.py:... first).")
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(workdir, "info.json")) as f:
    info = json.load(f)
  words = text_vectors.load_npz(os.path.join(workdir, "words.npz"))
  variables = train.load_params(workdir, config, _RunInfo(info, words))
  return config, variables, words
