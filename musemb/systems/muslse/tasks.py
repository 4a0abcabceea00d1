"""MUSLSE's five tasks as ranking problems on a batch, and the ranking loss of one task (§4).

Each step's batch holds training-song row ids (`song` [B]); `_problem` turns a task into "rank Y
labels for each query" with the query and label embeddings of eqs. (4)-(8), and `_ranking_loss`
applies WARP (sampled rank, Algorithm 1), exact-rank WARP or the AUC margin loss (eq. 9) to it.
Where a task scores all its labels each step, WARP's draws come in closed form
(`_scored_warp_loss`), and `loss.positives=all` trains every positive of an example, eq. (10)'s
sum over j in y_i, instead of Algorithm 1's one random positive.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from musemb import ops
from musemb.models import linear
from musemb.objectives import ranking as ranking_losses
from musemb.samplers import warp as warp_sampler
from musemb.systems.muslse import data as bof_data


def embed_songs(V: jax.Array, idx: jax.Array, val: jax.Array, form: str = "auto") -> jax.Array:
  """Phi_Song(s) = V^T s for sparse bags: V [|S|, d], idx/val [..., P] -> [..., d].

  `form` (`model.bag_form`): a gather and segment sum, or the batch's bags densified and one GEMM
  (`linear.apply_sparse`; the same product in another order)."""
  return linear.apply_sparse(V, idx, val, form)


def with_label_bias(query: jax.Array, labels: jax.Array, bias: jax.Array | None
                    ) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
  """(query [..., d'], ids -> label rows [..., d']) whose dot products are query . label + bias.

  `model.label_bias` (a departure from the paper, off by default): LightFM's per-item bias, a
  learned constant per tag added to every song's score for it (how popular the tag is,
  whatever the audio). Carried as one more coordinate, 1 for every query and the bias for each
  label, so the WARP sampler, the exact loss and evaluation score it like any dimension, and it
  is trained by the same loss and optimizer; `musemb.systems.muslse.project` leaves it
  unconstrained. Without a bias (None) the query and `labels[ids]` are returned as they are.
  """
  if bias is None:
    return query, lambda ids: labels[ids]
  ones = jnp.ones(query.shape[:-1] + (1,), query.dtype)
  return (jnp.concatenate([query, ones], axis=-1),
          lambda ids: jnp.concatenate([labels[ids], bias[ids][..., None]], axis=-1))


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
  # -> int32 [B, M], -1 padded: the labels `positive` is drawn from (`loss.positives=all` trains
  # each of them); None where the task's positive is a song.
  drawn_from: Callable[[], jax.Array] | None = None


def _random_positive(rng: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A uniformly random True column per row of mask [..., Y] ("pick a random positive label").

  One draw j in [0, count) per row (`musemb.ops.uniform_below`), then the column of the row's
  (j + 1)-th True: the number of columns whose running count of Trues is at most j. Rows without
  a True get column 0 and valid False. (A Gumbel-max `jax.random.categorical` over the row drew Y
  uniforms and took Y logarithms per row; on CPU that and its arg-max reduction cost more than the
  rest of a `demo`-sized MUSLSE step's bookkeeping.)
  """
  running = jnp.cumsum(mask.astype(bool), axis=-1, dtype=jnp.int32)
  count = running[..., -1]
  j = ops.uniform_below(rng, jnp.maximum(count, 1), count.shape)
  choice = jnp.sum(running <= j[..., None], axis=-1, dtype=jnp.int32)
  return jnp.where(count > 0, choice, 0), count > 0


def _random_member(rng: jax.Array, table: jax.Array, exclude: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array]:
  """A random non-padding (>= 0) entry per row of table [B, K], optionally != exclude [B]."""
  ok = table >= 0
  if exclude is not None:
    ok &= table != exclude[:, None]
  col, valid = _random_positive(rng, ok)
  return jnp.take_along_axis(table, col[:, None], axis=1)[:, 0], valid


def _problem(task: str, p: dict, batch: dict, tables: bof_data.BofTables, rng: jax.Array,
             bag_form: str = "auto") -> _Problem:
  """The batch holds training-song row ids (`song` [B]); their features are gathered on device."""
  songs_emb = lambda ids: embed_songs(p["V"], tables.song_idx[ids], tables.song_val[ids], bag_form)
  song = batch["song"]
  num_songs = tables.song_idx.shape[0]
  song_artist = tables.song_artist
  artist = song_artist[song]
  has_artist = artist >= 0
  artist_safe = jnp.maximum(artist, 0)
  query_song = lambda: songs_emb(song)

  if task == "tag_prediction":
    tags = tables.song_tags[song]
    pos, valid = _random_positive(rng, tags)
    query, embed_tags = with_label_bias(query_song(), p["T"], p.get("T_bias"))
    return _Problem(
        query=query, positive=pos, valid=valid,
        num_labels=p["T"].shape[0], embed_labels=embed_tags,
        is_positive=lambda ids: jnp.take_along_axis(tags, ids, axis=1),
        positive_mask_all=lambda: tags, drawn_from=lambda: tables.song_tag_ids[song])
  if task == "artist_prediction":
    num_artists = p["A"].shape[0]
    return _Problem(
        query=query_song(), positive=artist_safe,
        valid=has_artist, num_labels=num_artists, embed_labels=lambda ids: p["A"][ids],
        is_positive=lambda ids: ids == artist_safe[:, None],
        positive_mask_all=lambda: jax.nn.one_hot(artist_safe, num_artists, dtype=bool),
        drawn_from=lambda: artist[:, None])
  if task == "song_prediction":
    # Query: the artist; positive: this (training) song; negatives: songs by other artists.
    return _Problem(
        query=p["A"][artist_safe], positive=song, valid=has_artist, num_labels=num_songs,
        embed_labels=songs_emb, is_positive=lambda ids: song_artist[ids] == artist_safe[:, None],
        positive_mask_all=lambda: song_artist[None, :] == artist_safe[:, None],
        shared_candidates=True)
  if task == "similar_songs":
    # Query: this song; positive: another song by the same artist (the paper's ground truth).
    other, valid = _random_member(rng, tables.artist_songs[artist_safe], exclude=song)
    return _Problem(
        query=query_song(), positive=other,
        valid=valid & has_artist, num_labels=num_songs, embed_labels=songs_emb,
        is_positive=lambda ids: song_artist[ids] == artist_safe[:, None],
        positive_mask_all=lambda: song_artist[None, :] == artist_safe[:, None],
        shared_candidates=True)
  if task == "similar_artists":
    similar = tables.artist_similar[artist_safe]                      # [B, K], -1 padded
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
                    is_positive=is_pos, positive_mask_all=mask_all, drawn_from=lambda: similar)
  raise ValueError(f"unknown MUSLSE task {task!r}; expected one of {bof_data.TASKS}.")


_ALPHA_KINDS = {"harmonic": "harmonic", "ones": "auc", "top_k": "top_k"}


def _alpha(config: ml_collections.ConfigDict) -> tuple[str, int | None]:
  """config.loss.alpha -> (kind for `rank_loss_weights`, k): harmonic 1/i, ones (AUC), top_k."""
  if config.loss.alpha not in _ALPHA_KINDS:
    raise ValueError(f"loss.alpha={config.loss.alpha!r}; expected one of {sorted(_ALPHA_KINDS)}.")
  kind = _ALPHA_KINDS[config.loss.alpha]
  return kind, (config.loss.top_k if kind == "top_k" else None)


def _scores_all_labels(prob: _Problem, budget: int) -> bool:
  """Whether a step scores every label once (a label set no larger than a block of draws, each
  example with its own draws) rather than the candidates of each block."""
  return not prob.shared_candidates and prob.num_labels <= budget


POSITIVES = ("one", "all")


def _check_positives(prob: _Problem, config: ml_collections.ConfigDict, budget: int) -> str:
  """config.loss.positives, checked against what the task and loss support."""
  lc = config.loss
  positives = lc.get("positives", "one")
  if positives not in POSITIVES:
    raise ValueError(f"loss.positives={positives!r}; expected one of {POSITIVES}.")
  if positives == "all" and (lc.kind != "warp" or int(lc.max_draws) or prob.drawn_from is None
                             or not _scores_all_labels(prob, budget)):
    raise ValueError(
        f"loss.positives='all' trains every positive label of an example in its step (eq. 10's "
        f"sum), which needs loss.kind='warp' with loss.max_draws=0 (got {lc.kind!r}, "
        f"{lc.max_draws}) and a task that scores all its labels each step: tag, artist or "
        f"similar-artist prediction with no more labels than loss.budget ({lc.budget}; this "
        f"task has {prob.num_labels}). Raise --config.loss.budget, or keep "
        "--config.loss.positives=one (Algorithm 1's one random positive).")
  return positives


def _scored_warp_loss(prob: _Problem, rng: jax.Array, config: ml_collections.ConfigDict,
                      positives: str) -> jax.Array:
  """WARP when every label is scored each step: [B] losses, Algorithm 1's draws in closed form.

  One [B, d] x [d, Y] product scores every label (with its gradient); the positives' and the
  violators' scores are looked up in it. `sample_warp_scored` draws the violator and N from
  their exact distribution, so there is no loop of candidate blocks. `positives="one"` trains
  the example's one random positive (Algorithm 1); `"all"` every positive it has, each with its
  own draw (eq. 10: the sum over j in y_i), summed into the example's loss.
  """
  lc = config.loss
  alpha_kind, alpha_k = _alpha(config)
  scores = prob.query @ prob.embed_labels(jnp.arange(prob.num_labels)).T           # [B, Y]
  if positives == "all":
    ids = prob.drawn_from().astype(jnp.int32)                                       # [B, M]
    mask, ids = (ids >= 0) & prob.valid[:, None], jnp.maximum(ids, 0)
  else:
    mask, ids = prob.valid[:, None], prob.positive[:, None].astype(jnp.int32)
  sample = warp_sampler.sample_warp_scored(rng, scores, prob.positive_mask_all(), ids,
                                           margin=lc.margin)
  weights = ranking_losses.rank_loss_weights(sample.rank_estimate, kind=alpha_kind, k=alpha_k,
                                             max_rank=prob.num_labels)
  flat = lambda x: x.reshape(-1)
  per_positive = ranking_losses.warp_loss(
      flat(jnp.take_along_axis(scores, ids, axis=1)),
      flat(jnp.take_along_axis(scores, sample.violator, axis=1)), flat(weights),
      flat(sample.found & mask), margin=lc.margin)
  return jnp.sum(per_positive.reshape(ids.shape), axis=1)


def _ranking_loss(prob: _Problem, rng: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """Sum over valid examples of the configured ranking loss for one task."""
  lc = config.loss
  alpha_kind, alpha_k = _alpha(config)
  # Draws per block: a small label set needs no more than one block of 2Y raw draws (rejected
  # positives use up draws too; the sampler never counts more than Y-1 accepted ones).
  budget = int(min(lc.budget, 2 * prob.num_labels))
  positives = _check_positives(prob, config, budget)
  if lc.kind == "warp" and not int(lc.max_draws) and _scores_all_labels(prob, budget):
    return jnp.sum(_scored_warp_loss(prob, rng, config, positives))     # invalid rows are 0
  pos_scores = jnp.einsum("bd,bd->b", prob.query, prob.embed_labels(prob.positive))
  if lc.kind in ("warp_exact",):
    scores = prob.query @ prob.embed_labels(jnp.arange(prob.num_labels)).T          # [B, Y]
    per_example = ranking_losses.exact_warp_loss(
        scores, prob.positive_mask_all(), prob.positive, kind=alpha_kind, k=alpha_k, margin=lc.margin)
  else:
    stopped_query = jax.lax.stop_gradient(prob.query)

    if _scores_all_labels(prob, budget):
      # A label set no larger than one block with capped draws (`loss.max_draws`; uncapped WARP
      # took `_scored_warp_loss` above): score every label once per step, one
      # [B, d] x [d, Y] GEMM, and let each block look its candidates up, instead of gathering a
      # [B, K, d] block of label rows per block (K >= Y rows for each example).
      all_scores = stopped_query @ jax.lax.stop_gradient(
          prob.embed_labels(jnp.arange(prob.num_labels))).T                          # [B, Y]
      score_candidates = lambda ids: jnp.take_along_axis(all_scores, ids, axis=1)
    else:
      def score_candidates(ids):                                                    # [B, K]
        if prob.shared_candidates:   # every row of ids is the same draw: embed it once
          return stopped_query @ jax.lax.stop_gradient(prob.embed_labels(ids[0])).T
        return jnp.einsum("bd,bkd->bk", stopped_query,
                          jax.lax.stop_gradient(prob.embed_labels(ids)))

    if lc.kind == "warp":
      sample = warp_sampler.sample_warp(
          rng, jax.lax.stop_gradient(pos_scores), score_candidates, prob.is_positive,
          num_labels=prob.num_labels, budget=budget, margin=lc.margin,
          shared=prob.shared_candidates, max_draws=int(lc.max_draws))
      viol_scores = jnp.einsum("bd,bd->b", prob.query, prob.embed_labels(sample.violator))
      weights = ranking_losses.rank_loss_weights(sample.rank_estimate, kind=alpha_kind, k=alpha_k,
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


def task_loss(task, p, batch, tables, rng, config):
  r_prob, r_loss = jax.random.split(rng)
  return _ranking_loss(_problem(task, p, batch, tables, r_prob, config.model.get("bag_form", "auto")),
                       r_loss, config)
