"""Ranking losses of MUSLSE: sampled and exact WARP, AUC margin ranking, one-vs-rest hinge.

Follows Weston, Bengio & Hamel, "Multi-Tasking with Joint Semantic Spaces for Large-Scale Music
Annotation and Retrieval" (MUSLSE, JNMR 2011): section 4.2 (eq. (9) AUC margin ranking, eqs.
(10)-(11) WARP), Algorithm 1 (the sampled WARP update) and the one-vs-rest hinge baseline of
section 6.3. The exact WARP form `L(r) / r * sum of violating hinges` is the one of Usunier, Buffoni
& Gallinari (ICML 2009) and Weston, Bengio & Usunier (WSABIE, IJCAI 2011).

All losses return per-example values `[batch]` (the caller averages or sums), are pure JAX with
static shapes, and can be jitted and vmapped (e.g. over ensemble members). The margin-violation
test is `f_neg > f_pos - margin` throughout, which is where the hinge `max(0, margin - f_pos +
f_neg)` is positive, and Algorithm 1's stopping test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np



def warp_loss(
    pos_scores: jax.Array,
    violator_scores: jax.Array,
    weights: jax.Array,
    found: jax.Array,
    margin: float = 1.0,
) -> jax.Array:
  """Algorithm 1's sampled WARP loss: `L(rank estimate) * max(0, margin - f_pos + f_violator)`.

  The weight is a constant of the step (gradients are stopped), as in Algorithm 1 where
  `L(floor((Y - 1) / N))` only scales the update.

  Args:
    pos_scores: [batch] scores of the positive labels.
    violator_scores: [batch] scores of the sampled violators (`WarpSample.violator_score`).
    weights: [batch] rank weights, e.g. `rank_loss_weights(WarpSample.rank_estimate)`.
    found: [batch] bool; examples without a violator contribute 0 (and no gradient).
    margin: the ranking margin (1 in the paper).

  Returns:
    [batch] per-example losses.
  """
  _check_same_shape("warp_loss", pos_scores=pos_scores, violator_scores=violator_scores,
                    weights=weights, found=found)
  hinge = jax.nn.relu(margin - pos_scores + violator_scores)
  loss = jax.lax.stop_gradient(weights) * hinge
  return jnp.where(found.astype(bool), loss, jnp.zeros_like(loss))


def exact_warp_loss(
    scores: jax.Array,
    positive_mask: jax.Array,
    pos_index: jax.Array,
    kind: str = "harmonic",
    k: int | None = None,
    margin: float = 1.0,
) -> jax.Array:
  """WARP with the exact margin rank, for label sets that fit on the device.

  For the positive `j = pos_index` the margin rank is `r = #{negatives ybar : f_ybar > f_j -
  margin}` (eq. (10)'s rank_j^1, with Algorithm 1's strict test), and the loss is

      L(r) * mean over the r violators of max(0, margin - f_j + f_ybar)
        = L(r) / r * sum over negatives of max(0, margin - f_j + f_ybar),

  0 when r = 0 (the WSABIE / Usunier et al. form). Its expectation matches what Algorithm 1
  samples (a uniformly chosen violator weighted by L of the rank) with the exact rank in place of
  `floor((Y - 1) / N)`. The rank and L(r) / r are constants of the gradient (the rank is piecewise
  constant in the scores).

  Args:
    scores: [batch, labels] scores f_y(x).
    positive_mask: [batch, labels] bool, True for the example's positive labels (all of them are
      excluded from the negatives).
    pos_index: [batch] int, the positive label whose rank is penalised; it must be a positive of
      its row (not checked inside jit).
    kind: the L(r) family, see `rank_loss_weights`; "auc" gives `auc_loss`.
    k: the cut-off for kind="top_k".
    margin: the ranking margin (1 in the paper).

  Returns:
    [batch] per-example losses.
  """
  pos = _gather_positive("exact_warp_loss", scores, positive_mask, pos_index)
  negative = ~positive_mask.astype(bool)
  hinges = jnp.where(negative, jax.nn.relu(margin - pos[:, None] + scores), 0.0)
  rank = jnp.sum(negative & (scores > (pos - margin)[:, None]), axis=1).astype(jnp.int32)
  big_l = rank_loss_weights(rank, kind=kind, k=k, max_rank=scores.shape[1])
  scale = jnp.where(rank > 0, big_l / jnp.maximum(rank, 1).astype(big_l.dtype), 0.0)
  return jax.lax.stop_gradient(scale) * jnp.sum(hinges, axis=1)


def auc_loss(
    scores: jax.Array,
    positive_mask: jax.Array,
    pos_index: jax.Array,
    margin: float = 1.0,
) -> jax.Array:
  """MUSLSE eq. (9) for one positive per example: sum over negatives of max(0, 1 + f_neg - f_pos).

  Args:
    scores: [batch, labels] scores f_y(x).
    positive_mask: [batch, labels] bool, True for the example's positive labels (excluded from
      the negatives).
    pos_index: [batch] int, the positive label j of each example.
    margin: the ranking margin (1 in eq. (9)).

  Returns:
    [batch] per-example losses. Sum eq. (9) over all positives by vmapping over `pos_index`.
  """
  pos = _gather_positive("auc_loss", scores, positive_mask, pos_index)
  negative = ~positive_mask.astype(bool)
  hinges = jnp.where(negative, jax.nn.relu(margin - pos[:, None] + scores), 0.0)
  return jnp.sum(hinges, axis=1)


def sampled_auc_loss(
    pos_scores: jax.Array,
    cand_scores: jax.Array,
    cand_valid: jax.Array,
    num_negatives: jax.Array | int,
    margin: float = 1.0,
) -> jax.Array:
  """Unbiased estimate of `auc_loss` from K iid uniform negative draws.

  Returns `(#negatives / #valid draws) * sum over valid draws of max(0, margin - f_pos + f_neg)`.
  Given m >= 1 valid draws (each uniform over the negatives, e.g. from
  `warp.draw_negative_candidates` with positives rejected), this is #negatives times an unbiased
  mean hinge, hence unbiased for the full sum; a row with no valid draw returns 0, a bias of
  P(no valid draw) * the full sum, negligible once K is a few times Y / #negatives. (With
  `draw_negative_candidates`'s one-word draws each label's probability is within Y / 2^32,
  relative, of uniform, a bias of the same relative size.)

  Args:
    pos_scores: [batch] scores of the positive labels.
    cand_scores: [batch, K] scores of the drawn candidates.
    cand_valid: [batch, K] bool, True where the draw is a negative of the example.
    num_negatives: [batch] or a scalar, the number of negatives of each example (Y - #positives).
    margin: the ranking margin.

  Returns:
    [batch] per-example estimates.
  """
  if pos_scores.ndim != 1 or cand_scores.ndim != 2 or cand_scores.shape != cand_valid.shape:
    raise ValueError(
        "musemb/objectives/ranking.py sampled_auc_loss: expected pos_scores [batch], cand_scores "
        f"and cand_valid [batch, K]; got shapes {pos_scores.shape}, {cand_scores.shape}, "
        f"{cand_valid.shape}.")
  if cand_scores.shape[0] != pos_scores.shape[0]:
    raise ValueError(
        "musemb/objectives/ranking.py sampled_auc_loss: batch sizes differ: pos_scores has "
        f"{pos_scores.shape[0]} rows, cand_scores {cand_scores.shape[0]}.")
  valid = cand_valid.astype(bool)
  hinges = jnp.where(valid, jax.nn.relu(margin - pos_scores[:, None] + cand_scores), 0.0)
  n_valid = jnp.sum(valid, axis=1)
  scale = jnp.asarray(num_negatives, hinges.dtype) / jnp.maximum(n_valid, 1).astype(hinges.dtype)
  return jnp.where(n_valid > 0, scale * jnp.sum(hinges, axis=1), 0.0)


def one_vs_rest_hinge(scores: jax.Array, labels: jax.Array) -> jax.Array:
  """The one-vs-rest hinge baseline (MUSLSE section 6.3): sum_j max(0, 1 - phi_j f_j).

  Args:
    scores: [batch, labels] scores f_j(x).
    labels: [batch, labels] bool, True for positives (phi_j = +1), False for negatives (-1).

  Returns:
    [batch] per-example losses.
  """
  if scores.ndim != 2 or scores.shape != labels.shape:
    raise ValueError(
        "musemb/objectives/ranking.py one_vs_rest_hinge: expected scores and labels of the same "
        f"shape [batch, labels]; got {scores.shape} and {labels.shape}.")
  phi = jnp.where(labels.astype(bool), 1.0, -1.0).astype(scores.dtype)
  return jnp.sum(jax.nn.relu(1.0 - phi * scores), axis=1)


def _gather_positive(name: str, scores: jax.Array, positive_mask: jax.Array,
                     pos_index: jax.Array) -> jax.Array:
  if scores.ndim != 2 or scores.shape != positive_mask.shape:
    raise ValueError(
        f"musemb/objectives/ranking.py {name}: expected scores and positive_mask of the same "
        f"shape [batch, labels]; got {scores.shape} and {positive_mask.shape}.")
  if pos_index.shape != scores.shape[:1]:
    raise ValueError(
        f"musemb/objectives/ranking.py {name}: pos_index must be [batch] = {scores.shape[:1]}; "
        f"got {pos_index.shape}. Pass one positive label id per example.")
  return jnp.take_along_axis(scores, pos_index[:, None].astype(jnp.int32), axis=1)[:, 0]


def _check_same_shape(name: str, **arrays: jax.Array) -> None:
  shapes = {key: value.shape for key, value in arrays.items()}
  if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
    raise ValueError(
        f"musemb/objectives/ranking.py {name}: expected [batch] arrays of one shape; got "
        f"{shapes}.")


RANK_WEIGHT_KINDS = ("harmonic", "auc", "top_k")


def rank_loss_weights(
    ranks: jax.Array,
    kind: str = "harmonic",
    k: int | None = None,
    max_rank: int | None = None,
) -> jax.Array:
  """The rank-to-loss transform L(r) = sum_{i <= r} alpha_i of MUSLSE eq. (11); L(0) = 0.

  Kinds (Usunier et al. 2009; MUSLSE section 4.2):
    * "harmonic": alpha_i = 1 / i, so L(r) is the r-th harmonic number: most weight on the top
      positions, the smooth choice that targets precision at many k at once (the paper's WARP).
    * "auc": alpha_i = 1, L(r) = r: every violation counts alike, the AUC loss of eq. (9).
    * "top_k": alpha_i = 1 for i <= k, else 0: L(r) = min(r, k), precision at k.

  Args:
    ranks: [...] integer ranks >= 0 (negative ranks are treated as 0).
    kind: one of `RANK_WEIGHT_KINDS`.
    k: the cut-off for "top_k" (a positive int); must be None for the other kinds.
    max_rank: for "harmonic", the largest rank expected (e.g. Y - 1). Ranks up to it are looked up
      in a table of harmonic numbers accumulated in float64; larger ranks, and all ranks when
      max_rank is None, use digamma(r + 1) + Euler's gamma (relative error ~3e-7 in float32).

  Returns:
    float32 weights of `ranks`'s shape.
  """
  if kind not in RANK_WEIGHT_KINDS:
    raise ValueError(
        f"musemb/objectives/ranking.py rank_loss_weights: unknown kind {kind!r}; expected one of "
        f"{RANK_WEIGHT_KINDS}.")
  if kind == "top_k":
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
      raise ValueError(
          "musemb/objectives/ranking.py rank_loss_weights: kind='top_k' needs a positive int k "
          f"(precision at k); got k={k!r}.")
  elif k is not None:
    raise ValueError(
        f"musemb/objectives/ranking.py rank_loss_weights: k={k!r} is only meaningful for "
        f"kind='top_k', not {kind!r}; drop k.")
  ranks = jnp.maximum(jnp.asarray(ranks), 0).astype(jnp.int32)
  if kind == "auc":
    return ranks.astype(jnp.float32)
  if kind == "top_k":
    return jnp.minimum(ranks, k).astype(jnp.float32)
  # Harmonic numbers: digamma(r + 1) + gamma = H_r, exact only up to float32 rounding and
  # slightly off at r = 0, hence the table and the explicit L(0) = 0.
  r_float = ranks.astype(jnp.float32)
  harmonic = jax.scipy.special.digamma(r_float + 1.0) + np.float32(np.euler_gamma)
  if max_rank is not None:
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 0:
      raise ValueError(
          "musemb/objectives/ranking.py rank_loss_weights: max_rank must be a static int >= 0 (e.g. "
          f"num_labels - 1); got {max_rank!r}.")
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max_rank + 1))]).astype(np.float32)
    in_table = jnp.asarray(table)[jnp.minimum(ranks, max_rank)]
    harmonic = jnp.where(ranks <= max_rank, in_table, harmonic)
  return jnp.where(ranks == 0, 0.0, harmonic).astype(jnp.float32)
