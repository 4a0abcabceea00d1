"""Vectorised WARP negative sampling: the rank estimate of MUSLSE's Algorithm 1 in static shapes.

Follows Weston, Bengio & Hamel, "Multi-Tasking with Joint Semantic Spaces for Large-Scale Music
Annotation and Retrieval" (MUSLSE, JNMR 2011), section 4.2 and Algorithm 1, which take the WARP loss
from Weston, Bengio & Usunier (WSABIE, IJCAI 2011) and the rank-weighting family L(r) from Usunier,
Buffoni & Gallinari (ICML 2009).

Algorithm 1's inner loop draws one random negative label at a time until it finds a violator,
a negative `ybar` with `f_ybar > f_j - 1`, or until `N >= Y - 1` trials; the rank of the positive
`j` is then estimated as `floor((Y - 1) / N)` and weighted by `L(rank)`. A data-dependent loop is
slow on an accelerator and cannot be batched, so `sample_warp` draws a fixed budget of `K`
candidate labels for every example at once, scores them in one call and takes the first violator
in draw order:

* Candidates that happen to be positives of the example are rejected draws: they are masked out and
  do not count as trials. The accepted draws are then iid uniform over the negatives, which is
  exactly "pick a random negative label" (with replacement) of Algorithm 1.
* Only the first `Y - 1` accepted draws count, since Algorithm 1 stops at `N = Y - 1`.
* Departure from Algorithm 1: when fewer than `Y - 1` accepted draws fit in the budget, the loop is
  truncated. If no violator appears among the budget's accepted draws, the example makes no update
  (`found` is False and its rank estimate is 0, so `L` gives it weight 0), whereas Algorithm 1 would
  keep drawing. A violator that Algorithm 1 would have found after `N > K` trials has rank estimate
  `floor((Y - 1) / N) <= floor((Y - 1) / K)`, i.e. a small weight, so the truncation drops only
  the least important updates: those of positives already near the top of the ranking.
  When the budget always holds `Y - 1` accepted draws (budget >= `Y - 1` plus the rejections), the
  distribution of `(found, N)` is exactly Algorithm 1's.

Everything here is pure JAX with static shapes: jit-able, vmap-able (e.g. over ensemble members)
and batched over a leading `[batch]` axis.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class WarpSample(NamedTuple):
  """What `sample_warp` found for each example of the batch.

  Attributes:
    found: [batch] bool, whether a violator was drawn within the budget. Examples without one make
      no update.
    n_trials: [batch] int32, N: the number of accepted (negative) draws up to and including the
      violator; where `found` is False, the number of accepted draws made (at most `Y - 1`).
    violator: [batch] int32, the violating label id; where `found` is False, the first candidate
      drawn (a valid id, so gathers stay in range; mask with `found`).
    rank_estimate: [batch] int32, `floor((Y - 1) / N)` where found, else 0 (so `L` gives weight 0).
    violator_score: [batch], `score_candidates`'s score of `violator`, gathered from the scored
      budget so the caller need not score it again; it carries gradients if `score_candidates`
      does (only through the violator's own score).
  """

  found: jax.Array
  n_trials: jax.Array
  violator: jax.Array
  rank_estimate: jax.Array
  violator_score: jax.Array


def draw_negative_candidates(rng: jax.Array, num_labels: int, shape: tuple[int, ...]) -> jax.Array:
  """Draws candidate labels iid uniform over [0, num_labels).

  The draws may hit positives of the example; `first_violator` rejects those, which leaves iid
  uniform draws over the negatives.

  Args:
    rng: a `jax.random.key`.
    num_labels: Y, the number of output labels (static).
    shape: the static output shape, typically `(batch, budget)`.

  Returns:
    int32 candidate label ids of `shape`.
  """
  _check_num_labels(num_labels)
  return jax.random.randint(rng, shape, 0, num_labels, dtype=jnp.int32)


def first_violator(
    pos_scores: jax.Array,
    cand_scores: jax.Array,
    cand_valid: jax.Array,
    margin: float = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Finds, per example, the first valid candidate in draw order that violates the margin.

  A candidate violates when `cand_score > pos_score - margin` (Algorithm 1's stopping test).
  Invalid candidates (positives of the example, or draws past a cap) are rejected draws: they can
  neither violate nor count as trials.

  Args:
    pos_scores: [batch] score of the positive label.
    cand_scores: [batch, budget] scores of the candidates, in draw order.
    cand_valid: [batch, budget] bool, True where the candidate is an accepted (negative) draw.
    margin: the ranking margin (1 in the paper).

  Returns:
    found: [batch] bool, whether any valid candidate violates.
    n_trials: [batch] int32, N: the number of valid draws up to and including the first violator;
      where not found, the number of valid draws in the budget (possibly 0).
    position: [batch] int32, the column of the first violator in `cand_scores`; 0 where not found.
  """
  if pos_scores.ndim != 1 or cand_scores.ndim != 2 or cand_scores.shape != cand_valid.shape:
    raise ValueError(
        "musemb/samplers/warp.py first_violator: expected pos_scores [batch], cand_scores and "
        f"cand_valid [batch, budget]; got shapes {pos_scores.shape}, {cand_scores.shape}, "
        f"{cand_valid.shape}. Pass one row of candidates per example.")
  if cand_scores.shape[0] != pos_scores.shape[0]:
    raise ValueError(
        "musemb/samplers/warp.py first_violator: batch sizes differ: pos_scores has "
        f"{pos_scores.shape[0]} rows, cand_scores {cand_scores.shape[0]}.")
  cand_valid = cand_valid.astype(bool)
  violates = cand_valid & (cand_scores > (pos_scores - margin)[:, None])
  found = jnp.any(violates, axis=1)
  # argmax returns the first maximal entry, i.e. the first violator in draw order (0 if none).
  position = jnp.argmax(violates, axis=1).astype(jnp.int32)
  valid_so_far = jnp.cumsum(cand_valid.astype(jnp.int32), axis=1)
  trials_at_violator = jnp.take_along_axis(valid_so_far, position[:, None], axis=1)[:, 0]
  n_trials = jnp.where(found, trials_at_violator, valid_so_far[:, -1]).astype(jnp.int32)
  return found, n_trials, position


def warp_rank_estimate(num_labels: int, n_trials: jax.Array) -> jax.Array:
  """Algorithm 1's rank estimate `floor((Y - 1) / N)`.

  Args:
    num_labels: Y, the number of output labels.
    n_trials: [...] int, N >= 1, the number of negative draws up to the first violator. N = 0 (no
      draw at all, only possible where no violator was found) is treated as N = 1 so the integer
      division stays defined; mask such rows with `found`.

  Returns:
    int32 rank estimates of `n_trials`'s shape, in [0, Y - 1].
  """
  _check_num_labels(num_labels)
  n = jnp.maximum(jnp.asarray(n_trials, jnp.int32), 1)
  return ((num_labels - 1) // n).astype(jnp.int32)


def sample_warp(
    rng: jax.Array,
    pos_scores: jax.Array,
    score_candidates: Callable[[jax.Array], jax.Array],
    is_positive: Callable[[jax.Array], jax.Array],
    num_labels: int,
    budget: int,
    margin: float = 1.0,
    shared: bool = False,
) -> WarpSample:
  """Draws a budget of candidates at once and returns Algorithm 1's violator and rank estimate.

  With `shared=True` one row of `budget` candidates is drawn per call and every example of the
  batch sees the same draws (`score_candidates` then receives identical rows, so it may embed
  `ids[0]` once, which matters when a label's embedding is expensive, e.g. songs as labels). Each
  example's draws are still iid uniform over [0, Y), so its distribution of (found, N) is exactly
  the per-example one; only the examples of a batch become correlated with each other.

  See the module docstring for how this matches Algorithm 1 and where it departs from it (the loop
  is truncated at the budget; examples with no violator in the budget make no update). Choose
  `budget = min(Y - 1, a few hundred)` for typical label counts: with a few hundred draws a
  positive is left without a violator only when it ranks near the top, where its WARP weight would
  be small anyway; small label sets (Y up to a few hundred) can afford `budget` a little above
  `Y - 1` to cover the rejected positives as well, which makes the sampler exact.

  Args:
    rng: a `jax.random.key`.
    pos_scores: [batch] score of the positive label of each example.
    score_candidates: maps candidate ids [batch, budget] int32 to their scores [batch, budget];
      called once. Wrap it in `jax.lax.stop_gradient` unless `violator_score`'s gradient is wanted.
    is_positive: maps candidate ids [batch, budget] to [batch, budget] bool, True where the label
      is a positive of that example (those draws are rejected).
    num_labels: Y, the number of output labels (static).
    budget: K, the number of candidates drawn per example (static).
    margin: the ranking margin (1 in the paper).

  Returns:
    A `WarpSample` of [batch] arrays.
  """
  _check_num_labels(num_labels)
  if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
    raise ValueError(
        f"musemb/samplers/warp.py sample_warp: budget must be a static int >= 1; got {budget!r}. "
        "Use min(num_labels - 1, a few hundred).")
  if pos_scores.ndim != 1:
    raise ValueError(
        "musemb/samplers/warp.py sample_warp: pos_scores must be [batch]; got shape "
        f"{pos_scores.shape}.")
  batch = pos_scores.shape[0]
  if shared:
    cands = jnp.broadcast_to(draw_negative_candidates(rng, num_labels, (1, budget)), (batch, budget))
  else:
    cands = draw_negative_candidates(rng, num_labels, (batch, budget))
  cand_scores = score_candidates(cands)
  positive = is_positive(cands)
  if cand_scores.shape != cands.shape or positive.shape != cands.shape:
    raise ValueError(
        "musemb/samplers/warp.py sample_warp: score_candidates and is_positive must map "
        f"candidates {cands.shape} to arrays of the same shape; got {cand_scores.shape} and "
        f"{positive.shape}.")
  valid = ~positive.astype(bool)
  # Algorithm 1 stops after Y - 1 trials: later accepted draws must neither violate nor count.
  valid = valid & (jnp.cumsum(valid.astype(jnp.int32), axis=1) <= num_labels - 1)
  found, n_trials, position = first_violator(
      jax.lax.stop_gradient(pos_scores), jax.lax.stop_gradient(cand_scores), valid, margin)
  violator = jnp.take_along_axis(cands, position[:, None], axis=1)[:, 0]
  violator_score = jnp.take_along_axis(cand_scores, position[:, None], axis=1)[:, 0]
  rank_estimate = jnp.where(found, warp_rank_estimate(num_labels, n_trials), 0).astype(jnp.int32)
  return WarpSample(
      found=found,
      n_trials=n_trials,
      violator=violator,
      rank_estimate=rank_estimate,
      violator_score=violator_score)


def _check_num_labels(num_labels: int) -> None:
  if (not isinstance(num_labels, (int, np.integer)) or isinstance(num_labels, bool)
      or num_labels < 2):
    raise ValueError(
        "musemb/samplers/warp.py: num_labels (Y) must be a static int >= 2, the size of the "
        f"output vocabulary; got {num_labels!r}.")
