"""Vectorised WARP negative sampling: the rank estimate of MUSLSE's Algorithm 1 in static shapes.

Follows Weston, Bengio & Hamel, "Multi-Tasking with Joint Semantic Spaces for Large-Scale Music
Annotation and Retrieval" (MUSLSE, JNMR 2011), section 4.2 and Algorithm 1, which take the WARP loss
from Weston, Bengio & Usunier (WSABIE, IJCAI 2011) and the rank-weighting family L(r) from Usunier,
Buffoni & Gallinari (ICML 2009).

Algorithm 1's inner loop draws one random negative label at a time until it finds a violator,
a negative `ybar` with `f_ybar > f_j - 1`, or until `N >= Y - 1` trials; the rank of the positive
`j` is then estimated as `floor((Y - 1) / N)` and weighted by `L(rank)`. One draw per loop
iteration is slow on an accelerator and cannot be batched, so `sample_warp` draws blocks of `K`
candidate labels for every example at once, scores a block in one call and takes the first
violator in draw order, repeating blocks in a `lax.while_loop` until every example of the batch has
stopped:

* Candidates that happen to be positives of the example are rejected draws: they are masked out and
  do not count as trials. The accepted draws are then iid uniform over the negatives, which is
  "pick a random negative label" (with replacement) of Algorithm 1, up to the draws' own
  departure from uniform: each label's probability is within Y / 2^32 (relative) of 1 / Y
  (`draw_negative_candidates`, one 32-bit word per draw).
* An example stops at its first violator or after `Y - 1` accepted draws (Algorithm 1's stop at
  `N = Y - 1`); N counts across blocks, so the distribution of `(found, N)` is Algorithm 1's for
  any Y and any block size. The examples of a batch run in lock-step: a batch costs the blocks its
  slowest example needs, about `(Y - 1) / K` for a positive at the top of the ranking.
* Speed option (`max_draws`): truncate after a fixed number of draws. An example without a violator
  by then makes no update, and every update has `N <= max_draws`, so `rank >= (Y - 1) / max_draws`:
  the positives near the top of the ranking lose most of their weight when Y is much larger than
  `max_draws` (measured in tests/samplers/warp_test.py: Y = 20,001 and 128 draws keep 5% of
  Algorithm 1's expected weight at rank 1, 12% at rank 10, 56% at rank 100). The sampler of earlier
  versions of this module was this truncation with `max_draws = K`.

Where a step has scored every label anyway (a tag vocabulary no larger than a block),
`sample_warp_scored` draws the same outcome in closed form: N from its geometric law (p = the
violators' share of the negatives, truncated at Y - 1) and the violator uniform over the
violators, with no loop; it also serves several positives per example (`loss.positives=all`).

Everything here is pure JAX with static shapes: jit-able, vmap-able (e.g. over ensemble members)
and batched over a leading `[batch]` axis.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from musemb import ops


class WarpSample(NamedTuple):
  """What `sample_warp` found for each example of the batch.

  Attributes:
    found: [batch] bool, whether a violator was drawn (before `Y - 1` accepted draws, or before
      `max_draws`). Examples without one make no update.
    n_trials: [batch] int32, N: the number of accepted (negative) draws up to and including the
      violator; where `found` is False, the number of accepted draws made (at most `Y - 1`).
    violator: [batch] int32, the violating label id; where `found` is False, the first candidate
      drawn (a valid id, so gathers stay in range; mask with `found`).
    rank_estimate: [batch] int32, `floor((Y - 1) / N)` where found, else 0 (so `L` gives weight 0).
    violator_score: [batch], `score_candidates`'s score of `violator` (no gradient: the blocks
      are drawn in a `lax.while_loop`; score `violator` again where the loss needs its gradient).
  """

  found: jax.Array
  n_trials: jax.Array
  violator: jax.Array
  rank_estimate: jax.Array
  violator_score: jax.Array


def draw_negative_candidates(rng: jax.Array, num_labels: int, shape: tuple[int, ...]) -> jax.Array:
  """Draws candidate labels iid uniform over [0, num_labels), one 32-bit word each.

  `musemb.ops.uniform_below`: each label's probability is within num_labels / 2^32 (relative) of
  1 / num_labels. It replaces `jax.random.randint` (exactly uniform, three Threefry passes a call
  against one; on CPU each pass is a rolled loop of about 70 us whatever the size, and a MUSLSE
  step at the `demo` size runs several).

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
  return ops.uniform_below(rng, num_labels, shape)


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
    max_draws: int = 0,
) -> WarpSample:
  """Algorithm 1's violator and rank estimate, drawn in blocks of `budget` candidates.

  Each block draws `budget` candidates per example, scores them in one call and takes the first
  violator in draw order; blocks repeat in a `lax.while_loop` until every example of the batch has
  a violator or `Y - 1` accepted draws (Algorithm 1's two stopping rules), all examples in
  lock-step. Examples that have stopped keep their outcome; the trial count N runs on across
  blocks. So the distribution of `(found, N)` is Algorithm 1's for any Y, whatever the block size:
  `budget` only trades the number of loop iterations against the work per iteration. A batch costs
  as many blocks as its slowest example needs, about `(Y - 1) / budget` for a positive already at
  the top of the ranking (Algorithm 1 pays the same `Y - 1` draws for it, one at a time).

  `max_draws > 0` truncates instead, after `ceil(max_draws / budget)` blocks: an example without
  a violator by then makes no update (the pre-loop behaviour of this function, kept as a speed
  option). That under-weights positives near the top: every update then has N <= max_draws, so
  rank >= floor((Y - 1) / max_draws), and a positive at true rank r keeps only part of its
  expected weight when Y / r is large compared with `max_draws` (for Y = 27,000 and 256 draws,
  about 6% at rank 1). It is exact when the truncation holds `Y - 1` accepted draws. With
  `max_draws = 0` a safety bound of `2 Y` raw draws (rounded up to whole blocks) ends the loop
  for an example whose labels are nearly all positive (with fewer than half of the labels
  positive it reaches `Y - 1` accepted draws long before).

  With `shared=True` each block draws one row of `budget` candidates and every example of the
  batch sees the same draws (`score_candidates` then receives identical rows, so it may embed
  `ids[0]` once, which matters when a label's embedding is expensive, e.g. songs as labels). Each
  example's draws are still iid uniform over [0, Y), so its distribution of (found, N) is exactly
  the per-example one; only the examples of a batch become correlated with each other.

  Args:
    rng: a `jax.random.key`.
    pos_scores: [batch] score of the positive label of each example.
    score_candidates: maps candidate ids [batch, budget] int32 to their scores [batch, budget];
      called once per block inside a `lax.while_loop`, so it must not need gradients (the
      sampler stops them; compute the violator's differentiable score from `violator`).
    is_positive: maps candidate ids [batch, budget] to [batch, budget] bool, True where the label
      is a positive of that example (those draws are rejected).
    num_labels: Y, the number of output labels (static).
    budget: K, the number of candidates drawn per example and block (static).
    margin: the ranking margin (1 in the paper).
    shared: one row of draws per block for the whole batch (see above).
    max_draws: 0 (Algorithm 1) or a cap on the raw draws per example (static).

  Returns:
    A `WarpSample` of [batch] arrays; `violator_score` carries no gradient.
  """
  _check_num_labels(num_labels)
  for name, value, low in (("budget", budget, 1), ("max_draws", max_draws, 0)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
      raise ValueError(
          f"musemb/samplers/warp.py sample_warp: {name} must be a static int >= {low}; got "
          f"{value!r}. budget: candidates per block (a few hundred at most); max_draws: 0 for "
          "Algorithm 1, or a cap on the draws per example.")
  if pos_scores.ndim != 1:
    raise ValueError(
        "musemb/samplers/warp.py sample_warp: pos_scores must be [batch]; got shape "
        f"{pos_scores.shape}.")
  budget, cap = int(budget), num_labels - 1
  batch = pos_scores.shape[0]
  max_blocks = -(-(int(max_draws) if max_draws else 2 * num_labels) // budget)
  pos_scores = jax.lax.stop_gradient(pos_scores)
  score_dtype = jax.eval_shape(
      lambda: score_candidates(jnp.zeros((batch, budget), jnp.int32))).dtype

  def draw(block):
    key = jax.random.fold_in(rng, block)
    if shared:
      return jnp.broadcast_to(draw_negative_candidates(key, num_labels, (1, budget)),
                              (batch, budget))
    return draw_negative_candidates(key, num_labels, (batch, budget))

  def active(found, n_trials):
    return ~found & (n_trials < cap)

  def cond(carry):
    block, found, n_trials, _, _ = carry
    return (block < max_blocks) & jnp.any(active(found, n_trials))

  def body(carry):
    block, found, n_trials, violator, violator_score = carry
    cands = draw(block)
    cand_scores = jax.lax.stop_gradient(score_candidates(cands))
    positive = is_positive(cands)
    if cand_scores.shape != cands.shape or positive.shape != cands.shape:
      raise ValueError(
          "musemb/samplers/warp.py sample_warp: score_candidates and is_positive must map "
          f"candidates {cands.shape} to arrays of the same shape; got {cand_scores.shape} and "
          f"{positive.shape}.")
    valid = ~positive.astype(bool) & active(found, n_trials)[:, None]
    # Algorithm 1 stops after Y - 1 trials: accepted draws past that neither violate nor count.
    valid &= n_trials[:, None] + jnp.cumsum(valid.astype(jnp.int32), axis=1) <= cap
    hit, n_block, position = first_violator(pos_scores, cand_scores, valid, margin)
    # Rows found in this block take its violator; unfound rows report their first draw (a valid
    # id to gather).
    take = hit | (block == 0)
    violator = jnp.where(take, jnp.take_along_axis(cands, position[:, None], axis=1)[:, 0],
                         violator)
    violator_score = jnp.where(
        take, jnp.take_along_axis(cand_scores, position[:, None], axis=1)[:, 0], violator_score)
    return block + 1, found | hit, n_trials + n_block, violator, violator_score

  init = (jnp.int32(0), jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32),
          jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), score_dtype))
  _, found, n_trials, violator, violator_score = jax.lax.while_loop(cond, body, init)
  rank_estimate = jnp.where(found, warp_rank_estimate(num_labels, n_trials), 0)
  return WarpSample(found=found, n_trials=n_trials, violator=violator,
                    rank_estimate=rank_estimate.astype(jnp.int32), violator_score=violator_score)


def sample_warp_scored(
    rng: jax.Array,
    scores: jax.Array,
    positive_mask: jax.Array,
    positives: jax.Array,
    margin: float = 1.0,
) -> WarpSample:
  """Algorithm 1's violator and rank estimate in closed form, when every label's score is known.

  A step that has scored all Y labels for each example (a tag vocabulary no larger than a block
  of draws) does not need to simulate the draws. Algorithm 1 draws negatives uniformly with
  replacement until one violates, `f_ybar > f_j - margin`, or `N = Y - 1` draws were made. With
  `n` negatives of which `v` violate, the draw count up to the first violator is geometric,
  `P(N = k) = (1 - p)^(k - 1) p` with `p = v / n`, and that violator is uniform over the `v`
  violators, independent of N. So this samples N by inversion, `N = 1 + floor(log U /
  log(1 - p))`, calls the example found when `v > 0` and `N <= Y - 1` (Algorithm 1's stop), and
  picks the violator uniformly among the `v` violating negatives: the same
  distribution of `(found, N, violator)` as `sample_warp` with `max_draws = 0`, without its loop
  of candidate blocks (checked against the sequential algorithm in tests/samplers/warp_test.py).
  Where the two differ: U has 24 random bits, so draw counts whose probability is under 2^-24
  are not produced; and `sample_warp`'s safety stop after 2Y raw draws (which only binds when
  most labels are positives of the example) does not exist here, so those examples follow
  Algorithm 1 exactly. An example without any negative is not found (N = 0).

  Several positives of one example (`positives` [B, M]) each get their own independent draw
  against the same scores: eq. (10)'s sum over the positive labels, `loss.positives=all`. Work
  and memory: [B, M, Y] comparisons and a running count, so M should be the positives an example
  has (a padded list), not Y.

  Args:
    rng: a `jax.random.key`.
    scores: [B, Y] every label's score for each example (gradients are not needed).
    positive_mask: [B, Y] bool, the example's positive labels (never drawn as negatives).
    positives: [B, M] int32, the positive labels to sample a violator for (column ids; rows may
      repeat or be padding the caller masks out).
    margin: the ranking margin (1 in the paper).

  Returns:
    A `WarpSample` of [B, M] arrays.
  """
  if scores.ndim != 2 or positive_mask.shape != scores.shape:
    raise ValueError(
        "musemb/samplers/warp.py sample_warp_scored: expected scores and positive_mask [B, Y]; "
        f"got shapes {scores.shape} and {positive_mask.shape}.")
  if positives.ndim != 2 or positives.shape[0] != scores.shape[0]:
    raise ValueError(
        "musemb/samplers/warp.py sample_warp_scored: positives must be [B, M] label ids with "
        f"B = {scores.shape[0]}; got shape {positives.shape}.")
  num_labels = scores.shape[1]
  _check_num_labels(num_labels)
  scores = jax.lax.stop_gradient(scores)
  positive_mask = positive_mask.astype(bool)
  negative_scores = jnp.where(positive_mask, -jnp.inf, scores)
  num_negatives = num_labels - jnp.sum(positive_mask, axis=1, dtype=jnp.int32)           # [B]
  threshold = jnp.take_along_axis(scores, positives, axis=1) - margin                    # [B, M]
  violates = negative_scores[:, None, :] > threshold[:, :, None]                         # [B, M, Y]
  running = jnp.cumsum(violates, axis=2, dtype=jnp.int32)
  num_violators = running[..., -1]                                                        # [B, M]
  words = jax.random.bits(rng, (2,) + positives.shape, jnp.uint32)
  # U uniform on (0, 1): the top 24 bits and half a step, so log U is finite.
  uniform = ((words[0] >> 8).astype(jnp.float32) + 0.5) * np.float32(2.0 ** -24)
  p = num_violators.astype(jnp.float32) / jnp.maximum(num_negatives, 1)[:, None].astype(
      jnp.float32)
  cap = num_labels - 1
  # N - 1 = floor(log U / log(1 - p)), clipped to cap before the cast (small p: huge values).
  # p = 0 (no violator: never found) and p = 1 (N = 1) are set apart so no 0 / 0 is formed.
  p_inner = jnp.where((p > 0) & (p < 1), p, 0.5)
  extra = jnp.minimum(jnp.floor(jnp.log(uniform) / jnp.log1p(-p_inner)), float(cap))
  extra = jnp.where(p >= 1, 0.0, extra)
  n_draws = 1 + extra.astype(jnp.int32)
  found = (num_violators > 0) & (n_draws <= cap)
  n_trials = jnp.where(found, n_draws, jnp.where(num_negatives[:, None] > 0, cap, 0))
  # The violator: the (position + 1)-th violating label in label order, position uniform in
  # [0, v): the number of labels whose running count of violators is at most position.
  position = ops.mul_high_u32(words[1], jnp.maximum(num_violators, 1).astype(jnp.uint32))
  violator = jnp.sum(running <= position.astype(jnp.int32)[..., None], axis=2, dtype=jnp.int32)
  violator = jnp.minimum(violator, num_labels - 1)       # unfound rows: a valid id to gather
  rank_estimate = jnp.where(found, warp_rank_estimate(num_labels, n_trials), 0)
  return WarpSample(found=found, n_trials=n_trials.astype(jnp.int32), violator=violator,
                    rank_estimate=rank_estimate.astype(jnp.int32),
                    violator_score=jnp.take_along_axis(scores, violator, axis=1))


def _check_num_labels(num_labels: int) -> None:
  if (not isinstance(num_labels, (int, np.integer)) or isinstance(num_labels, bool)
      or num_labels < 2):
    raise ValueError(
        "musemb/samplers/warp.py: num_labels (Y) must be a static int >= 2, the size of the "
        f"output vocabulary; got {num_labels!r}.")
