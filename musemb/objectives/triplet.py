"""Cosine triplet loss of multimodal metric learning for tag-based music retrieval.

Follows Won, Oramas, Nieto, Gouyon & Serra, "Multimodal Metric Learning for Tag-Based Music
Retrieval" (ICASSP 2021), section 2.2.1, eqs. (1)-(2):

    L = [D(E_a, E_p) - D(E_a, E_n) + delta]_+,

with E_a the anchor tag's embedding T(y_a), E_p and E_n the positive and negative songs'
embeddings S(x_p), S(x_n), D the cosine distance `1 - cos` and delta the margin. The paper does not
state delta; the default 0.4 is the one of the authors' public code (minzwon/tag-based-music-
retrieval, `--margin 0.4`), whose `relu(margin - cos(a, p) + cos(a, n))` is the same hinge, since
`D(a, p) - D(a, n) = cos(a, n) - cos(a, p)`.

Reduction: `triplet_loss` averages the hinge over the *valid* triplets (those whose `mask` entry is
True, e.g. anchors for which the sampler found a negative, or non-padding rows), i.e. `sum(mask *
hinge) / max(sum(mask), 1)`, and is 0 (with zero gradient) when no triplet is valid. With every
triplet valid it is the plain batch mean of the authors' code. `triplet_losses` returns the
per-triplet hinges `[batch]` for callers that want another reduction.

Embeddings are l2-normalised inside (as `torch.nn.CosineSimilarity` does), with a small floor on
the norm so that a zero vector gives a finite value and gradient. Everything is pure JAX with
static shapes: jit-able, vmap-able and differentiable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from musemb import ops

# Floor on the l2 norm before dividing (torch.nn.CosineSimilarity uses 1e-8).
NORM_EPS = 1e-8




def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of `a` and `b` ([..., dim] each, broadcastable) -> [...]."""
  return jnp.sum(ops.l2_normalize(a, eps=NORM_EPS) * ops.l2_normalize(b, eps=NORM_EPS), axis=-1)


def cosine_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine distance `D = 1 - cos(a, b)` of eq. (1), in [0, 2]; [..., dim] -> [...]."""
  return 1.0 - cosine_similarity(a, b)


def pairwise_cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """All cosine similarities between the rows of `a` [n, dim] and `b` [m, dim] -> [n, m]."""
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(
        "musemb/objectives/triplet.py pairwise_cosine_similarity: expected a [n, dim] and b "
        f"[m, dim] with the same dim; got shapes {a.shape} and {b.shape}.")
  return ops.l2_normalize(a, eps=NORM_EPS) @ ops.l2_normalize(b, eps=NORM_EPS).T


def triplet_losses(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    margin: float = 0.4,
) -> jax.Array:
  """Per-triplet hinge of eqs. (1)-(2): `max(0, margin + D(a, p) - D(a, n))`.

  Args:
    anchor: [batch, dim] anchor (tag) embeddings E_a.
    positive: [batch, dim] positive song embeddings E_p.
    negative: [batch, dim] negative song embeddings E_n.
    margin: delta (0.4 in the authors' code).

  Returns:
    [batch] hinges.
  """
  _check_triplet_shapes("triplet_losses", anchor, positive, negative)
  return jax.nn.relu(margin + cosine_distance(anchor, positive) - cosine_distance(anchor, negative))


def triplet_loss(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    margin: float = 0.4,
    mask: jax.Array | None = None,
) -> jax.Array:
  """Mean of eq. (1)'s hinge over the valid triplets (see the module docstring).

  Args:
    anchor: [batch, dim] anchor (tag) embeddings E_a.
    positive: [batch, dim] positive song embeddings E_p.
    negative: [batch, dim] negative song embeddings E_n.
    margin: delta (0.4 in the authors' code).
    mask: optional [batch] bool, True for the triplets to count (e.g. `has_negative` from
      `musemb.samplers.triplet.sample_negatives`); None counts all.

  Returns:
    A scalar: `sum(mask * hinge) / max(sum(mask), 1)`; 0 when no triplet is valid.
  """
  hinges = triplet_losses(anchor, positive, negative, margin)
  if mask is None:
    return jnp.mean(hinges)
  if mask.shape != hinges.shape:
    raise ValueError(
        "musemb/objectives/triplet.py triplet_loss: mask must be [batch] = "
        f"{hinges.shape}; got {mask.shape}. Pass one flag per triplet.")
  mask = mask.astype(bool)
  # where() rather than a product: a masked triplet then contributes no gradient even if its
  # (unused) negative index pointed at a degenerate embedding.
  total = jnp.sum(jnp.where(mask, hinges, 0.0))
  count = jnp.sum(mask).astype(hinges.dtype)
  return total / jnp.maximum(count, 1.0)


def _check_triplet_shapes(name: str, anchor: jax.Array, positive: jax.Array,
                          negative: jax.Array) -> None:
  if anchor.ndim != 2 or anchor.shape != positive.shape or anchor.shape != negative.shape:
    raise ValueError(
        f"musemb/objectives/triplet.py {name}: expected anchor, positive and negative of one "
        f"shape [batch, dim]; got {anchor.shape}, {positive.shape}, {negative.shape}. Gather the "
        "negatives with the sampler's indices first (song_emb[negative_index]).")
