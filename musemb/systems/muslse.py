"""MUSLSE: Multi-tasking with joint semantic spaces (Weston, Bengio, Hamel, ISMIR 2011 / JNMR).

The paper's recipe on one screen:

* Parameters (§3): V [|S|, d] maps a song's bag-of-frames vector s to V^T s (a gather of the rows of
  its non-zero codewords weighted by their counts, summed: a segment sum over the padded bag);
  A [|A|, d] artists; T [|T|, d] tags. Initialised N(0, 1/sqrt(d)) (Algorithm 1), every row kept
  within the ball ||.|| <= C after each update (constraints 1-3, `project`).
* Five scoring functions (eqs. 4-8), all dot products in the one space: artist prediction A_i . Vs,
  song prediction Vs' . A_i, similar artists A_j . A_i, similar songs Vs' . Vs'', tag prediction
  T_i . Vs.
* Loss (§4.2): WARP with the sampled rank estimate floor((Y-1)/N) and L(r) = sum_{i<=r} alpha_i
  (`musemb.samplers.warp`, vectorised: a budget of negatives drawn at once, the first violator gives N),
  an exact-rank WARP when all Y labels can be scored each step, or the AUC margin ranking loss (eq. 9)
  estimated from the same sampled negatives.
* Multi-task (§4.1): each step picks a random task (probabilities proportional to
  `config.tasks.weights`), or `tasks.mode=sum` adds all tasks every step.
* Ensembles (§4.2, "Training Ensembles"): M members with a leading parameter axis trained together
  with `jax.vmap`; at test time their scores are summed, which equals ranking with the members'
  embeddings concatenated (sum_m <q_m, l_m> = <[q_1..q_M], [l_1..l_M]>), so evaluation is unchanged.

Departures, all documented where they happen: a step processes a batch of examples and sums their
losses (each example still contributes its own Algorithm-1 update); song vectors s are normalised
(`config.features.normalize`, l2 by default) because raw frame counts scale with clip length; for
multi-artist songs the first listed artist is the positive of artist-based tasks; similar-artist
edges are split 60/20/20 into train/valid/test edges per artist (the paper had no such data).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import evaluate as evaluate_lib
from musemb import utils
from musemb.data import bof_data
from musemb.models import linear
from musemb.objectives import ranking as ranking_losses
from musemb.samplers import warp as warp_sampler

TASKS = bof_data.TASKS

load_data = bof_data.load_data


# ----------------------------------------------------------------------------- parameters

def init(config: ml_collections.ConfigDict, info: dict, rng: jax.Array) -> dict:
  """{"V": [M, |S|, d], "A": [M, |A|, d], "T": [M, |T|, d]}, N(0, 1/sqrt(d)), then projected."""
  params = linear.normal_tables(
      rng, {"V": info["num_features"], "A": info["num_artists"], "T": info["num_tags"]},
      config.model.embed_dim, members=config.model.ensemble)
  return project(params, config)


def project(params: dict, config: ml_collections.ConfigDict) -> dict:
  """Constraints (1)-(3): rows with ||row|| > C are rescaled to norm C."""
  return jax.tree.map(lambda x: linear.max_norm(x, config.model.max_norm), params)


def embed_songs(V: jax.Array, idx: jax.Array, val: jax.Array) -> jax.Array:
  """Phi_Song(s) = V^T s for sparse bags: V [|S|, d], idx/val [..., P] -> [..., d]."""
  return linear.apply_sparse(V, idx, val)


# ----------------------------------------------------------------------------- one task's problem

@dataclasses.dataclass
class _Problem:
  """A ranking problem for one task on one batch: rank Y labels for each query."""

  query: jax.Array                                   # [B, d]
  positive: jax.Array                                # [B] label id
  valid: jax.Array                                   # [B] bool: the example has a positive
  num_labels: int
  embed_labels: Callable[[jax.Array], jax.Array]     # ids [...] -> [..., d]
  is_positive: Callable[[jax.Array], jax.Array]      # ids [B, K] -> bool [B, K]
  positive_mask_all: Callable[[], jax.Array]         # -> bool [B, Y] (exact losses only)
  # Songs as labels: embedding a candidate means gathering its whole bag, so the batch shares one
  # row of candidate draws (each example's draws stay iid uniform; see `sample_warp(shared=True)`).
  shared_candidates: bool = False


def _random_positive(rng: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A uniformly random True column per row of mask [B, Y] ("pick a random positive label")."""
  logits = jnp.where(mask, 0.0, -jnp.inf)
  choice = jax.random.categorical(rng, jnp.where(mask.any(-1, keepdims=True), logits, 0.0))
  return choice.astype(jnp.int32), mask.any(-1)


def _random_member(rng: jax.Array, table: jax.Array, exclude: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """A random non-padding (>= 0) entry per row of table [B, K], optionally != exclude [B]."""
  ok = table >= 0
  if exclude is not None:
    ok &= table != exclude[:, None]
  col, valid = _random_positive(rng, ok)
  return jnp.take_along_axis(table, col[:, None], axis=1)[:, 0], valid


def _problem(task: str, p: dict, batch: dict, tables: dict, rng: jax.Array) -> _Problem:
  """The batch holds training-song row ids (`song` [B]); their features are gathered on device."""
  songs_emb = lambda ids: embed_songs(p["V"], tables["song_idx"][ids], tables["song_val"][ids])
  song = batch["song"]
  num_songs = tables["song_idx"].shape[0]
  song_artist = tables["song_artist"]
  artist = song_artist[song]
  has_artist = artist >= 0
  artist_safe = jnp.maximum(artist, 0)
  query_song = lambda: songs_emb(song)

  if task == "tag_prediction":
    tags = tables["song_tags"][song]
    pos, valid = _random_positive(rng, tags)
    return _Problem(
        query=query_song(), positive=pos, valid=valid,
        num_labels=p["T"].shape[0], embed_labels=lambda ids: p["T"][ids],
        is_positive=lambda ids: jnp.take_along_axis(tags, ids, axis=1),
        positive_mask_all=lambda: tags)
  if task == "artist_prediction":
    num_artists = p["A"].shape[0]
    return _Problem(
        query=query_song(), positive=artist_safe,
        valid=has_artist, num_labels=num_artists, embed_labels=lambda ids: p["A"][ids],
        is_positive=lambda ids: ids == artist_safe[:, None],
        positive_mask_all=lambda: jax.nn.one_hot(artist_safe, num_artists, dtype=bool))
  if task == "song_prediction":
    # Query: the artist; positive: this (training) song; negatives: songs by other artists.
    return _Problem(
        query=p["A"][artist_safe], positive=song, valid=has_artist, num_labels=num_songs,
        embed_labels=songs_emb, is_positive=lambda ids: song_artist[ids] == artist_safe[:, None],
        positive_mask_all=lambda: song_artist[None, :] == artist_safe[:, None],
        shared_candidates=True)
  if task == "similar_songs":
    # Query: this song; positive: another song by the same artist (the paper's ground truth).
    other, valid = _random_member(rng, tables["artist_songs"][artist_safe], exclude=song)
    return _Problem(
        query=query_song(), positive=other,
        valid=valid & has_artist, num_labels=num_songs, embed_labels=songs_emb,
        is_positive=lambda ids: song_artist[ids] == artist_safe[:, None],
        positive_mask_all=lambda: song_artist[None, :] == artist_safe[:, None],
        shared_candidates=True)
  if task == "similar_artists":
    similar = tables["artist_similar"][artist_safe]                      # [B, K], -1 padded
    other, valid = _random_member(rng, similar)
    num_artists = p["A"].shape[0]

    def is_pos(ids):
      return (ids[:, :, None] == similar[:, None, :]).any(-1) | (ids == artist_safe[:, None])

    def mask_all():
      onehots = jax.nn.one_hot(jnp.where(similar >= 0, similar, num_artists), num_artists + 1,
                               dtype=bool)[..., :num_artists].any(1)
      return onehots | jax.nn.one_hot(artist_safe, num_artists, dtype=bool)

    return _Problem(query=p["A"][artist_safe], positive=other, valid=valid & has_artist,
                    num_labels=num_artists, embed_labels=lambda ids: p["A"][ids],
                    is_positive=is_pos, positive_mask_all=mask_all)
  raise ValueError(f"unknown MUSLSE task {task!r}; expected one of {TASKS}.")


_ALPHA_KINDS = {"harmonic": "harmonic", "ones": "auc", "top_k": "top_k"}


def _alpha(config: ml_collections.ConfigDict) -> tuple[str, int | None]:
  """config.loss.alpha -> (kind for `rank_loss_weights`, k): harmonic 1/i, ones (AUC), top_k."""
  if config.loss.alpha not in _ALPHA_KINDS:
    raise ValueError(f"loss.alpha={config.loss.alpha!r}; expected one of {sorted(_ALPHA_KINDS)}.")
  kind = _ALPHA_KINDS[config.loss.alpha]
  return kind, (config.loss.top_k if kind == "top_k" else None)


def _ranking_loss(prob: _Problem, rng: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Sum over valid examples of the configured ranking loss for one task."""
  lc = config.loss
  alpha_kind, alpha_k = _alpha(config)
  pos_scores = jnp.einsum("bd,bd->b", prob.query, prob.embed_labels(prob.positive))
  if lc.kind in ("warp_exact",):
    scores = prob.query @ prob.embed_labels(jnp.arange(prob.num_labels)).T          # [B, Y]
    per_example = ranking_losses.exact_warp_loss(
        scores, prob.positive_mask_all(), prob.positive, kind=alpha_kind, k=alpha_k, margin=lc.margin)
  else:
    # Rejected positives use up draws too, so small label sets get up to 2Y draws (the sampler
    # never counts more than Y-1 accepted ones); large ones are truncated at the budget.
    budget = int(min(lc.budget, 2 * prob.num_labels))
    stopped_query = jax.lax.stop_gradient(prob.query)

    def score_candidates(ids):                                                      # [B, K]
      if prob.shared_candidates:   # every row of ids is the same draw: embed it once
        return stopped_query @ jax.lax.stop_gradient(prob.embed_labels(ids[0])).T
      return jnp.einsum("bd,bkd->bk", stopped_query, jax.lax.stop_gradient(prob.embed_labels(ids)))

    if lc.kind == "warp":
      sample = warp_sampler.sample_warp(
          rng, jax.lax.stop_gradient(pos_scores), score_candidates, prob.is_positive,
          num_labels=prob.num_labels, budget=budget, margin=lc.margin,
          shared=prob.shared_candidates)
      viol_scores = jnp.einsum("bd,bd->b", prob.query, prob.embed_labels(sample.violator))
      weights = warp_sampler.rank_loss_weights(sample.rank_estimate, kind=alpha_kind, k=alpha_k,
                                               max_rank=prob.num_labels)
      per_example = ranking_losses.warp_loss(pos_scores, viol_scores, weights, sample.found,
                                             margin=lc.margin)
    elif lc.kind == "auc":
      batch = pos_scores.shape[0]
      if prob.shared_candidates:
        row = warp_sampler.draw_negative_candidates(rng, prob.num_labels, (budget,))
        cands = jnp.broadcast_to(row, (batch, budget))
        cand_scores = prob.query @ prob.embed_labels(row).T
      else:
        cands = warp_sampler.draw_negative_candidates(rng, prob.num_labels, (batch, budget))
        cand_scores = jnp.einsum("bd,bkd->bk", prob.query, prob.embed_labels(cands))
      cand_valid = ~prob.is_positive(cands)
      # Mean hinge over the sampled negatives: eq. (9) divided by the number of negatives, i.e.
      # SGD on random (positive, negative) pairs, so `loss=auc` and `loss=warp` share a sensible
      # learning rate (the sum would scale the step by Y).
      per_example = ranking_losses.sampled_auc_loss(pos_scores, cand_scores, cand_valid, 1,
                                                    margin=lc.margin)
    else:
      raise ValueError(f"loss.kind={lc.kind!r}; expected warp, warp_exact or auc.")
  return jnp.sum(jnp.where(prob.valid, per_example, 0.0))


def loss(params: dict, batch: dict, tables: dict, rng: jax.Array, config: ml_collections.ConfigDict,
         task_names: tuple[str, ...]) -> tuple[jax.Array, dict]:
  """Multi-task MUSLSE loss, summed over the batch and the ensemble members.

  `task_names` are the configured tasks the data supports (`BofData.task_names`).
  """
  tasks = task_names
  weights = jnp.asarray([config.tasks.weights[t] for t in tasks], jnp.float32)
  members = params["V"].shape[0]
  r_task, r_members = jax.random.split(rng)
  member_rngs = jax.random.split(r_members, members)

  def all_members(task):
    """Sum over ensemble members of one task's loss (members vmapped, each with its own rng)."""
    def run(p, rngs):
      return jax.vmap(lambda pm, rm: _task_loss(task, pm, batch, tables, rm, config))(p, rngs).sum()
    return run

  if config.tasks.mode == "random":
    # The task is drawn outside the member vmap: under vmap a batched switch index would turn
    # lax.switch into a select that computes every task; drawn here it stays one conditional, so a
    # step costs one task (all members train the same task that step).
    t = jax.random.choice(r_task, len(tasks), p=weights / weights.sum())
    total = jax.lax.switch(t, [all_members(task) for task in tasks], params, member_rngs)
    per_task = jnp.where(jnp.arange(len(tasks)) == t, total, jnp.nan)
  elif config.tasks.mode == "sum":
    rngs = jax.random.split(r_members, (len(tasks), members))
    per_task = jnp.stack([all_members(task)(params, rngs[i]) for i, task in enumerate(tasks)])
    total = jnp.sum(weights * per_task)
  else:
    raise ValueError(f"tasks.mode={config.tasks.mode!r}; expected random or sum.")
  return total, {"task_losses": per_task}


def _task_loss(task, p, batch, tables, rng, config):
  r_prob, r_loss = jax.random.split(rng)
  return _ranking_loss(_problem(task, p, batch, tables, r_prob), r_loss, config)


# ----------------------------------------------------------------------------- evaluation

@jax.jit
def _embed_members(V: jax.Array, idx: jax.Array, val: jax.Array) -> jax.Array:
  """V [M, |S|, d], bags [n, P] -> [n, M*d]: the ensemble's song embeddings, concatenated.

  Evaluation embeds many songs at once, so the bags are scattered into dense [n, |S|] rows and
  multiplied (memory n*|S| instead of the gather's n*P*M*d)."""
  dense = linear.densify(idx, val, V.shape[1])                        # [n, |S|]
  e = jnp.einsum("nf,mfd->nmd", dense, V)
  return e.reshape(idx.shape[0], -1)


def song_embeddings(params: dict, idx: np.ndarray, val: np.ndarray, chunk: int = 1024) -> np.ndarray:
  out = []
  for lo in range(0, len(idx), chunk):
    hi = min(lo + chunk, len(idx))
    pad = chunk - (hi - lo) if len(idx) > chunk else 0   # fixed chunk shape: one compilation
    i = np.pad(idx[lo:hi], ((0, pad), (0, 0)))
    v = np.pad(val[lo:hi], ((0, pad), (0, 0)))
    out.append(np.asarray(_embed_members(params["V"], i, v))[:hi - lo])
  return np.concatenate(out) if out else np.zeros((0, params["V"].shape[0] * params["V"].shape[2]))


def label_embeddings(params: dict, name: str) -> np.ndarray:
  """A [|A|, M*d] or T [|T|, M*d]: members concatenated, matching `song_embeddings`."""
  x = np.asarray(params[name])
  return np.moveaxis(x, 0, 1).reshape(x.shape[1], -1)


def evaluate_tasks(params: dict, data, config: ml_collections.ConfigDict, split: str,
                   tasks: tuple[str, ...] | None = None
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Precision@k of each task on `split` (songs not seen in training); per-query p@k as well."""
  s = data.splits[split]
  ks = tuple(config.eval.ks)
  songs = song_embeddings(params, s.idx, s.val)
  A, T = label_embeddings(params, "A"), label_embeddings(params, "T")
  chunking = dict(query_chunk=config.eval.query_chunk, item_chunk=config.eval.item_chunk or None)
  means, per_query = {}, {}

  def record(task, result, query_ids):
    m, pq = result
    means.update({f"{task}/{k}": v for k, v in m.items()})
    per_query.update({f"{task}/{k}": v for k, v in pq.items()})
    per_query[f"{task}/query_ids"] = np.asarray(query_ids)

  for task in tasks or data.task_names:
    if task == "tag_prediction":
      relevant = [np.flatnonzero(row) for row in s.tags]
      record(task, evaluate_lib.retrieval_metrics(songs, T, relevant, ks, **chunking), s.track_ids)
    elif task == "artist_prediction":
      relevant = [np.array([a]) if a >= 0 else np.zeros(0, np.int64) for a in s.artist]
      record(task, evaluate_lib.retrieval_metrics(songs, A, relevant, ks, **chunking), s.track_ids)
    elif task == "song_prediction":
      artists = np.unique(s.artist[s.artist >= 0])
      relevant = [np.flatnonzero(s.artist == a) for a in artists]
      record(task, evaluate_lib.retrieval_metrics(A[artists], songs, relevant, ks, **chunking),
             np.asarray(data.info["artist_names"], dtype=object)[artists])
    elif task == "similar_songs":
      relevant = evaluate_lib.relevant_by_group(s.artist, exclude_self=True)
      record(task, evaluate_lib.retrieval_metrics(songs, songs, relevant, ks,
                                                  exclude=np.arange(len(songs)), **chunking),
             s.track_ids)
    elif task == "similar_artists":
      edges = data.similar_edges[split]
      queries = np.array([a for a, e in enumerate(edges) if len(e)], np.int64)
      # Known edges are not ranked: training edges, and validation edges when testing.
      known = ("train",) if split == "valid" else ("train", "valid")
      excluded = [np.concatenate([data.similar_edges[k][a] for k in known] + [[a]]).astype(np.int64)
                  for a in queries]
      record(task, evaluate_lib.masked_retrieval_metrics(A[queries], A, [edges[a] for a in queries],
                                                         excluded, ks),
             np.asarray(data.info["artist_names"], dtype=object)[queries])
  return means, per_query


def evaluate(params: dict, data, config: ml_collections.ConfigDict, split: str) -> dict[str, float]:
  return evaluate_tasks(params, data, config, split)[0]


def cosine_similar_songs(data, config: ml_collections.ConfigDict, split: str
                         ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """The similar-songs baseline of §6.3: cosine similarity of the raw bag-of-frames vectors."""
  s = data.splits[split]
  dense = np.zeros((len(s), data.info["num_features"]), np.float32)
  np.add.at(dense, (np.repeat(np.arange(len(s)), s.idx.shape[1]), s.idx.ravel()), s.val.ravel())
  dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
  relevant = evaluate_lib.relevant_by_group(s.artist, exclude_self=True)
  return evaluate_lib.retrieval_metrics(dense, dense, relevant, tuple(config.eval.ks),
                                        exclude=np.arange(len(s)),
                                        query_chunk=config.eval.query_chunk)


def prediction_seconds_per_song(params: dict, data, task: str) -> float:
  """Table 7: time to embed one test song and return its top label (tags or artists)."""
  labels = jnp.asarray(label_embeddings(params, "T" if task == "tag_prediction" else "A"))
  top1 = jax.jit(lambda i, v: jnp.argmax(labels @ _embed_members(params["V"], i, v)[0]))
  return evaluate_lib.seconds_per_song(top1, data.splits[evaluate_lib.timing_split(data)])


def model_stats(params: dict, data, tasks: tuple[str, ...]) -> dict[str, Any]:
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  m, _, d = params["V"].shape
  return {
      "num_params": num_params, "bytes": num_params * 4, "embed_dim": int(m * d),
      "num_features": int(data.info["num_features"]),
      "avg_nonzero_features": float(data.info["avg_nonzero_features"]),
      "labels": {"tag_prediction": int(data.info["num_tags"]),
                 "artist_prediction": int(data.info["num_artists"])},
      "seconds_per_song": {t: prediction_seconds_per_song(params, data, t)
                           for t in ("tag_prediction", "artist_prediction") if t in tasks},
  }


def write_outputs(params: dict, data, config: ml_collections.ConfigDict, workdir: str
                  ) -> dict[str, float]:
  """Evaluates on `config.eval.split` and writes metrics.json (muslse/* and the cosine baseline),
  per-query p@3, embeddings and model stats (process 0 only); returns the metrics."""
  split = config.eval.split
  metrics, per_query = evaluate_tasks(params, data, config, split)
  if jax.process_index() != 0:
    return metrics
  flat = {f"muslse/{k}": v for k, v in metrics.items()}
  arrays = {k: v for k, v in per_query.items() if k.endswith("/query_ids")}
  arrays.update({f"muslse/{k}": v for k, v in per_query.items() if k.endswith("/p@3")})
  if "similar_songs" in data.task_names or "song_prediction" in data.task_names:
    cos_means, cos_per_query = cosine_similar_songs(data, config, split)
    flat.update({f"cosine/similar_songs/{k}": v for k, v in cos_means.items()})
    arrays["cosine/similar_songs/p@3"] = cos_per_query["p@3"]
    arrays.setdefault("similar_songs/query_ids", data.splits[split].track_ids)
  utils.update_metrics_json(workdir, flat)
  utils.save_npz_atomic(os.path.join(workdir, "per_query.npz"), arrays)
  utils.save_npz_atomic(os.path.join(workdir, "embeddings.npz"), {
      "tag_names": np.asarray(data.info["tag_names"]),
      "artist_names": np.asarray(data.info["artist_names"]),
      "T": label_embeddings(params, "T"), "A": label_embeddings(params, "A")})
  utils.update_model_stats(workdir, "muslse", model_stats(params, data, data.task_names))
  return metrics


# ----------------------------------------------------------------------------- prediction

def predict(params: dict, data, waveform: np.ndarray, config: ml_collections.ConfigDict,
            top: int = 10, train_embeddings: np.ndarray | None = None) -> dict[str, Any]:
  """Top tags, likely artists and most similar training songs for one clip (at the data's rate)."""
  indices, counts = data.codebook.encode(waveform)
  width = max(len(indices), 1)
  idx = np.zeros((1, width), np.int32)
  val = np.zeros((1, width), np.float32)
  idx[0, :len(indices)] = indices
  val[0, :len(indices)] = bof_data.normalise(np.asarray(counts), config.features.normalize)
  song = song_embeddings(params, idx, val)[0]
  if train_embeddings is None:
    train_embeddings = song_embeddings(params, data.splits["train"].idx, data.splits["train"].val)

  def ranked(scores, names):
    order = np.argsort(-scores, kind="stable")[:top]
    return [{"name": str(names[i]), "score": float(scores[i])} for i in order]

  return {
      "tags": ranked(label_embeddings(params, "T") @ song, data.info["tag_names"]),
      "artists": ranked(label_embeddings(params, "A") @ song, data.info["artist_names"]),
      "similar_songs": ranked(train_embeddings @ song, data.splits["train"].track_ids),
  }
