"""Bi-directional ranking with neighbourhood constraints (Rush et al. eqs. 6-9), and InfoNCE.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings*, section 4.2,
after Wang, Li & Lazebnik (CVPR 2016) and Wang, Li, Huang & Lazebnik (TPAMI 2018). With d the
Euclidean distance between l2-normalised embeddings, m the margin (0.05, section 6.2), x audio and
y review embeddings and N(.) the items of the same album:

    L = l1 sum [m + d(x_i, y_j) - d(x_i, y_k)]_+    (6)  "audio_to_text": audio anchor x_i, a review
                                                          y_j of its album, a review y_k of another
      + l2 sum [m + d(x_j, y_i) - d(x_k, y_i)]_+    (7)  "text_to_audio": review anchor y_i, audio
                                                          x_j of its album, audio x_k of another
      + l3 sum [m + d(x_i, x_j) - d(x_i, x_k)]_+    (8)  "audio_neighbour": eq. (5), x_j in N(x_i)
      + l4 sum [m + d(y_i, y_j) - d(y_i, y_k)]_+    (9)  "text_neighbour": eq. (4), y_j in N(y_i)

Eq. (9) as printed reads `d(x_i', y_j') - d(y_i', y_k')`, mixing an audio-text and a text-text
distance; the text says the neighbourhood losses are "enforced much like the one defined above"
and scaled by l3 and l4 after eqs. (4) (reviews) and (5) (songs), and eq. (8) is eq. (5), so eq. (9)
is taken as eq. (4): both distances between reviews.

Positives, negatives and the album mask. Everything is drawn within the batch. Item j is a
positive of anchor i when it belongs to the same album (the paper's Y_i^+, "the sets of matching
text reviews"; for the neighbourhood terms j != i), and a negative candidate only when it belongs to
another album: a review of the anchor's album is never a negative, though a random draw over the
batch (the authors' code: `torch.randperm` over the batch, noah-rush/Joint-Music-Text-Embeddings
`Training.py`) would often pick one after neighbourhood sampling. `positives="pair"` keeps only the
item paired with the anchor (row i of the other modality) as its positive; the other items of its
album are then neither positive nor negative. Rows with a negative album id are padding: never an
anchor, a positive or a negative.

K negatives (10, section 6.2, "we sampled 10 false pairs for every true pair"). Each anchor draws K
distinct negatives among its valid candidates (`draw_negatives`: Gumbel top-K, i.e. uniform
sampling without replacement), shared by all of its positives, so each true pair meets K negatives.
A row with fewer than K valid candidates uses all of them and the missing draws are masked out; a
row without any contributes nothing. `mining="hardest"` takes the K valid candidates nearest the
anchor instead, which is what Wang et al.'s code does (lwwang/Two_branch_network,
`retrieval_model.py`: `top_k` over the hinges of all in-batch negatives; with one positive per
anchor the same K).

Reduction: each term is the mean of its hinge over the valid (anchor, positive, negative) triplets
(0, with zero gradient, when it has none), so the weights, the learning rate and the margin mean
the same at any batch size or K; the paper's sums differ from this by a count per batch. The
paper states no weights; the defaults are those of Wang et al.'s code, which Rush et al. follow
(margin 0.05 and K = 10 are theirs too): 1.5 on the text-anchored ranking (their `im_loss_factor`,
sentence anchor and images), 1 on the other direction and 0.05 on the text neighbourhood (their
`sent_only_loss_factor`); the audio neighbourhood, which Wang et al. lack, gets the text's 0.05.
Table 1's uni-directional row sets "l1 = 1 and l2 = 0 from equation 3"; the authors' code keeps the
text-anchored term instead (eq. (7), the direction review -> album retrieval evaluates), so both
are a matter of `weights`.

Distances are `sqrt(max(||a - b||^2, 1e-12))`: the floor keeps the gradient finite where an item
meets itself or a duplicate. Inputs are l2-normalised here (a no-op for `TwoBranch` outputs).

InfoNCE (beyond the paper; the objective of today's audio-text models, e.g. CLAP, after CLIP,
Radford et al. 2021): for paired rows, `(CE(s * A T^T, I) + CE(s * T A^T, I)) / 2` with cosine
logits and a learned scale s = exp(log_scale), started at 1/0.07 and capped at 100 as in CLIP
(`INIT_LOG_SCALE`, `MAX_SCALE`). The album mask applies here too: another pair of the anchor's
album is removed from the softmax (it is not a negative), the paired item stays the target.
`log_scale` is a trained scalar: keep it in the params pytree beside the branches.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from musemb import ops

MARGIN = 0.05  # section 6.2
NUM_NEGATIVES = 10  # section 6.2
TERMS = ("audio_to_text", "text_to_audio", "audio_neighbour", "text_neighbour")  # eqs. (6)-(9)
# lambda_1..lambda_4 in TERMS order: Wang et al.'s code's weights (see the module docstring).
DEFAULT_WEIGHTS = (1.0, 1.5, 0.05, 0.05)
MINING = ("random", "hardest")
POSITIVES = ("album", "pair")
INIT_LOG_SCALE = math.log(1.0 / 0.07)  # CLIP's initial temperature 0.07
MAX_SCALE = 100.0  # CLIP's cap on the logit scale
_DIST_FLOOR = 1e-12


def pairwise_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """Euclidean distances between the rows of a [n, d] and b [m, d] -> [n, m] (floored, see top)."""
  sq = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :]
        - 2.0 * jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST))
  return jnp.sqrt(jnp.maximum(sq, _DIST_FLOOR))


def draw_negatives(rng: jax.Array, candidates: jax.Array, k: int,
                   distances: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """K distinct negatives per anchor among its valid candidates.

  Args:
    rng: a key; unused when `distances` is given.
    candidates: [anchors, items] bool, True where item j may be a negative of anchor i.
    k: negatives per anchor.
    distances: None draws uniformly without replacement (Gumbel top-k); [anchors, items] distances
      picks the k nearest candidates (hardest mining) instead.

  Returns:
    idx [anchors, k] int32 item indices and ok [anchors, k] bool; ok is False for the draws a row
    could not fill (fewer than k candidates), whose idx is then meaningless.
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"draw_negatives: k must be a positive int, got {k!r}.")
  num_anchors, num_items = candidates.shape
  if distances is None:
    keys = jax.random.gumbel(rng, candidates.shape)
  else:
    keys = -jax.lax.stop_gradient(distances)
  keys = jnp.where(candidates, keys, -jnp.inf)
  top, idx = jax.lax.top_k(keys, min(k, num_items))
  ok = top > -jnp.inf
  if k > num_items:
    pad = k - num_items
    idx = jnp.concatenate([idx, jnp.zeros((num_anchors, pad), idx.dtype)], axis=1)
    ok = jnp.concatenate([ok, jnp.zeros((num_anchors, pad), bool)], axis=1)
  return idx.astype(jnp.int32), ok


def _ranking_term(dist: jax.Array, positive: jax.Array, candidates: jax.Array, rng: jax.Array,
                  k: int, margin: float, mining: str) -> tuple[jax.Array, jax.Array]:
  """Mean of [m + d(i, j) - d(i, n)]_+ over anchors i, positives j and K drawn negatives n.

  dist, positive, candidates: [anchors, items]. Returns (mean hinge, number of valid triplets).
  """
  idx, ok = draw_negatives(rng, candidates, k, dist if mining == "hardest" else None)
  d_neg = jnp.take_along_axis(dist, idx, axis=1)  # [anchors, k]
  hinge = jax.nn.relu(margin + dist[:, :, None] - d_neg[:, None, :])  # [anchors, items, k]
  valid = positive[:, :, None] & ok[:, None, :]
  count = jnp.sum(valid)
  total = jnp.sum(jnp.where(valid, hinge, 0.0))
  return total / jnp.maximum(count, 1).astype(total.dtype), count


def _check_embeddings(name: str, audio: jax.Array, text: jax.Array, audio_album: jax.Array,
                      text_album: jax.Array, paired: bool) -> None:
  if audio.ndim != 2 or text.ndim != 2 or audio.shape[1] != text.shape[1]:
    raise ValueError(f"{name}: audio and text must be [items, dim] with one dim; got "
                     f"{audio.shape} and {text.shape}.")
  if audio_album.shape != audio.shape[:1] or text_album.shape != text.shape[:1]:
    raise ValueError(f"{name}: album ids must be one per row: audio_album {audio_album.shape} for "
                     f"audio {audio.shape}, text_album {text_album.shape} for text {text.shape}.")
  if paired and audio.shape[0] != text.shape[0]:
    raise ValueError(f"{name}: paired rows need as many audio as text rows; got {audio.shape[0]} "
                     f"and {text.shape[0]}.")


def bidirectional_loss(
    audio: jax.Array,
    text: jax.Array,
    audio_album: jax.Array,
    rng: jax.Array,
    *,
    text_album: jax.Array | None = None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    margin: float = MARGIN,
    num_negatives: int = NUM_NEGATIVES,
    mining: str = "random",
    positives: str = "album",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eqs. (6)-(9): the weighted sum of the four ranking terms (see the module docstring).

  Args:
    audio: [Na, dim] audio embeddings x.
    text: [Nt, dim] review embeddings y.
    audio_album: [Na] int album of each audio row; < 0 marks padding.
    rng: a key for the negative draws (one sub-key per term).
    text_album: [Nt] int album of each review; None means the batch is pairs (row i of audio and
      text belong together) and the albums are `audio_album`.
    weights: lambda_1..lambda_4 in `TERMS` order; a zero weight skips its term's work.
    margin: m.
    num_negatives: K, drawn per anchor.
    mining: "random" (uniform without replacement) or "hardest" (the K nearest).
    positives: for the cross-modal terms, "album" (every item of the anchor's album) or "pair"
      (only the paired row; needs equal Na and Nt). The neighbourhood terms' positives are always
      the anchor's album's other items, N(.) of eqs. (4)-(5).

  Returns:
    (loss, aux): aux holds each term's mean hinge under its name in `TERMS`, and the number of
    valid triplets it averaged over as "<name>/triplets".
  """
  if mining not in MINING:
    raise ValueError(f"bidirectional_loss: mining={mining!r}; expected one of {MINING}.")
  if positives not in POSITIVES:
    raise ValueError(f"bidirectional_loss: positives={positives!r}; expected one of {POSITIVES}.")
  weights = tuple(float(w) for w in weights)
  if len(weights) != len(TERMS):
    raise ValueError(f"bidirectional_loss: weights must be 4 numbers (lambda_1..lambda_4 for "
                     f"{TERMS}); got {len(weights)}.")
  audio_album = jnp.asarray(audio_album)
  paired = text_album is None or positives == "pair"
  text_album = audio_album if text_album is None else jnp.asarray(text_album)
  _check_embeddings("bidirectional_loss", audio, text, audio_album, text_album, paired)
  audio = ops.l2_normalize(jnp.asarray(audio, jnp.float32))
  text = ops.l2_normalize(jnp.asarray(text, jnp.float32))

  def masks(album_q, album_c, same_rows):
    """(positive, candidates) [q, c] for anchors with albums album_q over items album_c."""
    real = (album_q >= 0)[:, None] & (album_c >= 0)[None, :]
    same = (album_q[:, None] == album_c[None, :]) & real
    if same_rows == "exclude_self":
      positive = same & ~jnp.eye(album_q.shape[0], dtype=bool)
    elif positives == "pair":
      positive = jnp.eye(album_q.shape[0], album_c.shape[0], dtype=bool) & real
    else:
      positive = same
    return positive, real & ~same

  terms = {}
  keys = dict(zip(TERMS, jax.random.split(rng, len(TERMS))))
  d_at = pairwise_distances(audio, text) if weights[0] or weights[1] else None
  setups = {
      "audio_to_text": lambda: (d_at, *masks(audio_album, text_album, "cross")),
      "text_to_audio": lambda: (d_at.T, *masks(text_album, audio_album, "cross")),
      "audio_neighbour": lambda: (pairwise_distances(audio, audio),
                                  *masks(audio_album, audio_album, "exclude_self")),
      "text_neighbour": lambda: (pairwise_distances(text, text),
                                 *masks(text_album, text_album, "exclude_self")),
  }
  loss = jnp.zeros((), jnp.float32)
  for name, weight in zip(TERMS, weights):
    if weight == 0.0:
      terms[name] = jnp.zeros((), jnp.float32)
      terms[name + "/triplets"] = jnp.zeros((), jnp.int32)
      continue
    dist, positive, candidates = setups[name]()
    value, count = _ranking_term(dist, positive, candidates, keys[name], num_negatives, margin,
                                 mining)
    terms[name], terms[name + "/triplets"] = value, count.astype(jnp.int32)
    loss = loss + weight * value
  return loss, terms


def infonce_loss(
    audio: jax.Array,
    text: jax.Array,
    album: jax.Array,
    log_scale: jax.Array,
    *,
    max_scale: float = MAX_SCALE,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetric contrastive loss over paired rows with a learned temperature and the album mask.

  Args:
    audio: [B, dim] audio embeddings; row i is paired with text row i.
    text: [B, dim] review embeddings.
    album: [B] int album of each pair; < 0 marks padding (left out of both softmaxes).
    log_scale: scalar parameter, the log of the logit scale (start at `INIT_LOG_SCALE`).
    max_scale: cap on exp(log_scale) (CLIP's 100); beyond it the scale has no gradient.

  Returns:
    (loss, aux) with "audio_to_text" and "text_to_audio" (the mean cross-entropies of the two
    directions; loss is their mean) and "scale".
  """
  album = jnp.asarray(album)
  _check_embeddings("infonce_loss", audio, text, album, album, paired=True)
  audio = ops.l2_normalize(jnp.asarray(audio, jnp.float32))
  text = ops.l2_normalize(jnp.asarray(text, jnp.float32))
  scale = jnp.exp(jnp.minimum(jnp.asarray(log_scale, jnp.float32), math.log(max_scale)))
  logits = scale * jnp.dot(audio, text.T, precision=jax.lax.Precision.HIGHEST)  # [B, B] audio rows
  real = album >= 0
  eye = jnp.eye(album.shape[0], dtype=bool)
  same_album_other = (album[:, None] == album[None, :]) & ~eye
  keep = real[:, None] & real[None, :] & ~same_album_other

  def direction(scores):
    # A padding row is set to zeros rather than all -inf, whose logsumexp would give NaN gradients
    # even though the row is masked out of the mean.
    scores = jnp.where(real[:, None], jnp.where(keep, scores, -jnp.inf), 0.0)
    ce = jax.nn.logsumexp(scores, axis=1) - jnp.diagonal(scores)
    ce = jnp.where(real, ce, 0.0)
    return jnp.sum(ce) / jnp.maximum(jnp.sum(real), 1).astype(ce.dtype)

  a2t, t2a = direction(logits), direction(logits.T)
  return (a2t + t2a) / 2.0, {"audio_to_text": a2t, "text_to_audio": t2a, "scale": scale}
