"""Tests for musemb/samplers/warp.py: the vectorised sampler against Algorithm 1 of MUSLSE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from musemb.samplers import warp

# A fixed world: Y = 20 labels, 5 positives (so a quarter of the raw draws are rejected), positive
# score 0, margin 1; three negatives score above -1 (violators), the rest well below.
NUM_LABELS = 20
POSITIVES = (0, 3, 7, 11, 19)
VIOLATORS = (2, 9, 15)
POS_SCORE = 0.0
MARGIN = 1.0
NUM_SAMPLES = 20_000


def _world():
  scores = np.full(NUM_LABELS, -3.0, np.float32)
  scores[list(VIOLATORS)] = [-0.5, 0.3, 2.0]
  # Positives score high: if they were not rejected they would all look like violators.
  scores[list(POSITIVES)] = 5.0
  positive = np.zeros(NUM_LABELS, bool)
  positive[list(POSITIVES)] = True
  return scores, positive


def _sample_vectorised(budget: int, seed: int = 0, shared: bool = False, batch: int = 1,
                       max_draws: int = 0):
  """Runs sample_warp once per rng (vmap over NUM_SAMPLES rngs, `batch` examples each)."""
  scores, positive = _world()
  scores_j, positive_j = jnp.asarray(scores), jnp.asarray(positive)

  def one(rng):
    return warp.sample_warp(
        rng,
        jnp.full((batch,), POS_SCORE, jnp.float32),
        score_candidates=lambda c: scores_j[c],
        is_positive=lambda c: positive_j[c],
        num_labels=NUM_LABELS,
        budget=budget,
        margin=MARGIN,
        shared=shared,
        max_draws=max_draws)

  rngs = jax.random.split(jax.random.key(seed), NUM_SAMPLES)
  out = jax.jit(jax.vmap(one))(rngs)
  if batch > 1:
    return jax.tree.map(np.asarray, out)
  return jax.tree.map(lambda x: np.asarray(x)[:, 0], out)


def _first_violator_all_draws_vectorised(budget: int, seed: int = 0):
  """The sampler's draws passed through first_violator, returning (found, n_trials, position)."""
  scores, positive = _world()
  cands = warp.draw_negative_candidates(jax.random.key(seed), NUM_LABELS, (NUM_SAMPLES, budget))
  found, n_trials, position = warp.first_violator(
      jnp.full((NUM_SAMPLES,), POS_SCORE), jnp.asarray(scores)[cands],
      ~jnp.asarray(positive)[cands], MARGIN)
  return np.asarray(found), np.asarray(n_trials), np.asarray(position)


def _algorithm1_inner_loop(num_samples: int, seed: int = 1):
  """Algorithm 1's inner loop, one negative at a time, in plain numpy."""
  scores, positive = _world()
  negatives = np.flatnonzero(~positive)
  rng = np.random.default_rng(seed)
  found = np.zeros(num_samples, bool)
  n_trials = np.zeros(num_samples, np.int64)
  for s in range(num_samples):
    n = 0
    while True:
      ybar = negatives[rng.integers(len(negatives))]
      n += 1
      if scores[ybar] > POS_SCORE - MARGIN:
        found[s] = True
        break
      if n >= NUM_LABELS - 1:
        break
    n_trials[s] = n
  return found, n_trials


def _outcome_codes(found, n_trials):
  # One category per (found, N); "not found" is its own category whatever N was.
  return np.where(found, n_trials, 0)


def _two_sample_chi2_pvalue(a, b):
  """Chi-square homogeneity test of two samples of small integer codes, sparse bins pooled."""
  top = int(max(a.max(), b.max()))
  counts = np.stack([np.bincount(a, minlength=top + 1), np.bincount(b, minlength=top + 1)])
  # Pool the tail from the right until each pooled bin has >= 20 observations in total.
  pooled, acc = [], np.zeros(2, np.int64)
  for column in counts.T[::-1]:
    acc = acc + column
    if acc.sum() >= 20:
      pooled.append(acc)
      acc = np.zeros(2, np.int64)
  if acc.sum() and pooled:
    pooled[-1] = pooled[-1] + acc
  table = np.array(pooled).T
  table = table[:, table.sum(axis=0) > 0]
  return stats.chi2_contingency(table).pvalue


@pytest.fixture(scope="module")
def reference():
  return _algorithm1_inner_loop(NUM_SAMPLES)


def test_distribution_of_trials_matches_algorithm1(reference):
  ref_found, ref_n = reference
  # 80 raw draws hold >= Y - 1 = 19 negatives except with probability ~1e-18: exact regime.
  sample = _sample_vectorised(budget=80)
  p_value = _two_sample_chi2_pvalue(
      _outcome_codes(sample.found, sample.n_trials), _outcome_codes(ref_found, ref_n))
  assert p_value > 1e-3, p_value
  # Blocks of 4 draws (five or more loop iterations) give the same distribution.
  blocks = _sample_vectorised(budget=4, seed=7)
  assert _two_sample_chi2_pvalue(_outcome_codes(blocks.found, blocks.n_trials),
                                 _outcome_codes(ref_found, ref_n)) > 1e-3
  p = len(VIOLATORS) / (NUM_LABELS - len(POSITIVES))
  # Closed forms of Algorithm 1: N ~ Geometric(p) truncated at Y - 1.
  expected_found = 1 - (1 - p) ** (NUM_LABELS - 1)
  se = np.sqrt(expected_found * (1 - expected_found) / NUM_SAMPLES)
  assert abs(sample.found.mean() - expected_found) < 5 * se
  assert abs(ref_found.mean() - expected_found) < 5 * se
  assert sample.n_trials.min() >= 1 and sample.n_trials.max() <= NUM_LABELS - 1
  assert np.all(sample.n_trials[~sample.found] == NUM_LABELS - 1)
  # Every reported violator is a negative that violates; its rank estimate is floor((Y-1)/N).
  scores, positive = _world()
  v = sample.violator[sample.found]
  assert np.all(~positive[v]) and np.all(scores[v] > POS_SCORE - MARGIN)
  np.testing.assert_array_equal(sample.violator_score[sample.found], scores[v])
  np.testing.assert_array_equal(
      sample.rank_estimate, np.where(sample.found, (NUM_LABELS - 1) // sample.n_trials, 0))


def test_shared_candidates_keep_each_examples_distribution(reference):
  """shared=True: one row of draws per batch; each example's (found, N) is still Algorithm 1's."""
  ref_found, ref_n = reference
  sample = _sample_vectorised(budget=80, shared=True, batch=3)
  # Identical examples in one batch see identical draws, hence identical outcomes ...
  np.testing.assert_array_equal(sample.n_trials[:, 0], sample.n_trials[:, 2])
  np.testing.assert_array_equal(sample.violator[:, 0], sample.violator[:, 1])
  # ... and across batches each example follows the sequential algorithm's distribution.
  p_value = _two_sample_chi2_pvalue(
      _outcome_codes(sample.found[:, 1], sample.n_trials[:, 1]), _outcome_codes(ref_found, ref_n))
  assert p_value > 1e-3, p_value


def test_chi2_rejects_wrong_trial_counts(reference):
  """Negative controls: the same test fails for the classic mistakes, so it has power."""
  ref_found, ref_n = reference
  ref_codes = _outcome_codes(ref_found, ref_n)
  found, n_trials, position = _first_violator_all_draws_vectorised(budget=80)
  # Sanity: the right count agrees with Algorithm 1 on these draws too (no cap needed here,
  # since a violator shows up within Y - 1 negatives in all but a (1 - p)^19 ~ 5% of rows).
  capped = found & (n_trials <= NUM_LABELS - 1)
  right = _outcome_codes(capped, np.minimum(n_trials, NUM_LABELS - 1))
  assert _two_sample_chi2_pvalue(right, ref_codes) > 1e-3
  # Mistake 1: counting rejected draws (positives) as trials, N = raw draw position + 1.
  raw = position + 1
  wrong_rejections = _outcome_codes(found & (raw <= NUM_LABELS - 1),
                                    np.minimum(raw, NUM_LABELS - 1))
  assert _two_sample_chi2_pvalue(wrong_rejections, ref_codes) < 1e-6
  # Mistake 2: 0-based N.
  wrong_zero_based = _outcome_codes(capped, np.minimum(n_trials, NUM_LABELS - 1) - 1)
  assert _two_sample_chi2_pvalue(np.maximum(wrong_zero_based, 0), ref_codes) < 1e-6
  # Mistake 3: no stop at N = Y - 1, so violators found after 19 negatives still count.
  assert _two_sample_chi2_pvalue(_outcome_codes(found, n_trials), ref_codes) < 1e-6


def test_truncated_budget_found_probability():
  """max_draws = K raw draws: P(found) = 1 - (1 - v / Y)^K; over negatives, 1 - (1 - p)^K'."""
  for budget in (3, 8):
    sample = _sample_vectorised(budget=budget, seed=budget, max_draws=budget)
    q = len(VIOLATORS) / NUM_LABELS  # violation probability of one raw (unrejected) draw
    expected = 1 - (1 - q) ** budget
    se = np.sqrt(expected * (1 - expected) / NUM_SAMPLES)
    assert abs(sample.found.mean() - expected) < 5 * se, (budget, sample.found.mean(), expected)
    # Given K' accepted negative draws, P(found | K') = 1 - (1 - p)^K' with p among negatives:
    p = len(VIOLATORS) / (NUM_LABELS - len(POSITIVES))
    accepted = np.where(sample.found, -1, sample.n_trials)  # accepted draws when none violated
    # P(not found and exactly K' accepted) = Binom(K; K', (Y - |pos|) / Y) * (1 - p)^K'.
    accept = (NUM_LABELS - len(POSITIVES)) / NUM_LABELS
    for k_prime in range(budget + 1):
      expected_joint = stats.binom.pmf(k_prime, budget, accept) * (1 - p) ** k_prime
      observed = np.mean(accepted == k_prime)
      se = np.sqrt(expected_joint * (1 - expected_joint) / NUM_SAMPLES) + 1e-4
      assert abs(observed - expected_joint) < 5 * se, (budget, k_prime, observed, expected_joint)
    # Unfound rows make no update: rank estimate 0, hence weight L(0) = 0.
    assert np.all(sample.rank_estimate[~sample.found] == 0)


def test_first_violator_by_hand():
  pos = jnp.array([0.0, 0.0, 0.0, 1.0])
  cand = jnp.array([
      [-2.0, 5.0, -0.5, 3.0],   # col 1 violates but is invalid -> col 2 (N = 2)
      [-2.0, -3.0, -1.0, -1.5],  # -1.0 is not > -1.0: no violator, 3 valid draws
      [0.5, 0.0, 0.0, 0.0],     # first draw violates
      [-1.0, 0.5, 0.0, 0.2],    # threshold 0: position 1, no invalid draws
  ])
  valid = jnp.array([
      [True, False, True, True],
      [True, False, True, True],
      [True, True, True, True],
      [True, True, True, True],
  ])
  found, n_trials, position = warp.first_violator(pos, cand, valid, margin=1.0)
  np.testing.assert_array_equal(found, [True, False, True, True])
  np.testing.assert_array_equal(n_trials, [2, 3, 1, 2])
  np.testing.assert_array_equal(position, [2, 0, 0, 1])
  assert n_trials.dtype == jnp.int32 and position.dtype == jnp.int32


def test_rank_estimate_examples():
  np.testing.assert_array_equal(warp.warp_rank_estimate(20, jnp.array([1, 2, 3, 6, 19, 25])),
                                [19, 9, 6, 3, 1, 0])
  np.testing.assert_array_equal(warp.warp_rank_estimate(1001, jnp.array([1, 7, 1000])),
                                [1000, 142, 1])
  assert warp.warp_rank_estimate(20, jnp.array([3])).dtype == jnp.int32
  with pytest.raises(ValueError, match="num_labels"):
    warp.warp_rank_estimate(1, jnp.array([1]))


def test_sample_warp_batched_jit_and_vmap_over_members():
  """Batch rows are independent examples; vmapping over ensemble members adds a leading axis."""
  members, batch, num_labels, dim = 3, 4, 50, 8
  keys = jax.random.split(jax.random.key(3), 4)
  label_emb = jax.random.normal(keys[0], (members, num_labels, dim))
  x = jax.random.normal(keys[1], (members, batch, dim))
  positive = jax.random.bernoulli(keys[2], 0.1, (batch, num_labels)).at[:, 0].set(True)

  def member_sample(emb, xm, rng):
    scores = xm @ emb.T  # [batch, labels]
    return warp.sample_warp(
        rng, scores[:, 0],
        score_candidates=lambda c: jnp.take_along_axis(scores, c, axis=1),
        is_positive=lambda c: jnp.take_along_axis(positive, c, axis=1),
        num_labels=num_labels, budget=16)

  out = jax.jit(jax.vmap(member_sample))(label_emb, x, jax.random.split(keys[3], members))
  assert out.found.shape == (members, batch)
  assert out.violator.dtype == jnp.int32 and out.rank_estimate.dtype == jnp.int32
  scores = np.einsum("mbd,mld->mbl", np.asarray(x), np.asarray(label_emb))
  found = np.asarray(out.found)
  for m, b in zip(*np.nonzero(found)):
    v = int(out.violator[m, b])
    assert not positive[b, v]
    assert scores[m, b, v] > scores[m, b, 0] - 1.0 - 1e-5
    np.testing.assert_allclose(out.violator_score[m, b], scores[m, b, v], rtol=1e-5, atol=1e-5)


# Y much larger than the block: a positive with `violators` margin violators among Y - 1 - 40
# negatives (true rank violators + 1), 40 other positives that must be rejected.
LARGE_Y = 20_001
LARGE_POSITIVES = 41
LARGE_BLOCK = 128


def _large_world(violators: int):
  scores = np.full(LARGE_Y, -3.0, np.float32)
  positive = np.zeros(LARGE_Y, bool)
  positive[:LARGE_POSITIVES] = True
  scores[:LARGE_POSITIVES] = 5.0              # would all violate if they were not rejected
  scores[LARGE_POSITIVES:LARGE_POSITIVES + violators] = 0.5
  return scores, positive


def _expected_weight(violators: int, max_negative_draws: int | None = None) -> float:
  """Algorithm 1, summed exactly: N ~ Geometric(p) over the negatives, stopped at Y - 1.

  E[L(floor((Y - 1) / N)) 1{N <= Y - 1}], L harmonic. With `max_negative_draws` the sum stops
  there instead (a truncated sampler), which is what a fixed draw budget computes.
  """
  p = violators / (LARGE_Y - LARGE_POSITIVES)
  top = LARGE_Y - 1 if max_negative_draws is None else min(max_negative_draws, LARGE_Y - 1)
  n = np.arange(1, top + 1)
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, LARGE_Y))])
  return float(np.sum(p * (1 - p) ** (n - 1) * harmonic[(LARGE_Y - 1) // n]))


def _sequential_algorithm1_weights(violators: int, num_samples: int, seed: int):
  """Algorithm 1's inner loop one draw at a time (vectorised over samples, not over draws)."""
  scores, positive = _large_world(violators)
  rng = np.random.default_rng(seed)
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, LARGE_Y))])
  n = np.zeros(num_samples, np.int64)
  done = np.zeros(num_samples, bool)
  found = np.zeros(num_samples, bool)
  while not done.all():
    live = ~done
    draw = rng.integers(0, LARGE_Y, live.sum())
    accepted = ~positive[draw]
    idx = np.flatnonzero(live)[accepted]
    n[idx] += 1
    hit = scores[draw[accepted]] > 0.0 - 1.0
    found[idx[hit]] = True
    done[idx[hit]] = True
    done[idx[n[idx] >= LARGE_Y - 1]] = True
  return np.where(found, harmonic[(LARGE_Y - 1) // np.maximum(n, 1)], 0.0)


def _code_weights(violators: int, batch: int, seed: int, **kwargs):
  from musemb.objectives import ranking
  scores, positive = _large_world(violators)
  scores_j, positive_j = jnp.asarray(scores), jnp.asarray(positive)

  @jax.jit
  def run(rng):
    sample = warp.sample_warp(
        rng, jnp.zeros((batch,), jnp.float32), score_candidates=lambda c: scores_j[c],
        is_positive=lambda c: positive_j[c], num_labels=LARGE_Y, budget=LARGE_BLOCK, **kwargs)
    weights = ranking.rank_loss_weights(sample.rank_estimate, "harmonic", max_rank=LARGE_Y)
    return sample, weights

  sample, weights = run(jax.random.key(seed))
  return jax.tree.map(np.asarray, sample), np.asarray(weights)


@pytest.mark.parametrize("violators", [1, 10, 100])
def test_expected_rank_weight_matches_algorithm1_when_labels_outnumber_the_block(violators):
  """The weight WARP gives a positive at true rank r, E[L(rank estimate)], is Algorithm 1's.

  A sampler that stops after one block of 128 draws keeps 5% (rank 1) to 50% (rank 100) of it
  here (Y = 20,001), and so under-trains exactly the positives at the top of the ranking.
  """
  batch = 4096
  sample, weights = _code_weights(violators, batch, seed=violators)
  expected = _expected_weight(violators)
  reference = _sequential_algorithm1_weights(violators, batch, seed=violators)
  se = np.sqrt((weights.var() + reference.var()) / batch)
  assert abs(weights.mean() - expected) < 5 * np.sqrt(weights.var() / batch), (
      violators, weights.mean(), expected)
  assert abs(weights.mean() - reference.mean()) < 5 * se, (weights.mean(), reference.mean())
  scores, positive = _large_world(violators)
  # Every update is a real violator; trials run past one block and stop at Y - 1.
  assert np.all(~positive[sample.violator[sample.found]])
  assert np.all(scores[sample.violator[sample.found]] > -1.0)
  assert sample.n_trials.max() > LARGE_BLOCK
  assert np.all(sample.n_trials[~sample.found] == LARGE_Y - 1)
  p = violators / (LARGE_Y - LARGE_POSITIVES)
  expected_found = 1 - (1 - p) ** (LARGE_Y - 1)
  assert abs(sample.found.mean() - expected_found) < 5 * np.sqrt(
      expected_found * (1 - expected_found) / batch) + 1e-9


def test_max_draws_truncates_as_documented():
  """max_draws = K is the fixed-budget sampler: its expected weight is the truncated sum."""
  batch, violators = 4096, 10
  _, weights = _code_weights(violators, batch, seed=5, max_draws=LARGE_BLOCK)
  # Raw draws include rejected positives (41 of 20,001): about 127.7 accepted negatives of 128.
  lo = _expected_weight(violators, max_negative_draws=LARGE_BLOCK - 3)
  hi = _expected_weight(violators, max_negative_draws=LARGE_BLOCK)
  tol = 5 * np.sqrt(weights.var() / batch)
  assert lo - tol < weights.mean() < hi + tol, (weights.mean(), lo, hi)
  assert hi < 0.5 * _expected_weight(violators)


def test_loop_runs_under_grad_and_vmap():
  """The loop sits inside a differentiated loss: gradients flow through the violator's score."""
  members, batch, num_labels, dim = 2, 8, 3000, 4
  keys = jax.random.split(jax.random.key(0), 3)
  emb = jax.random.normal(keys[0], (members, num_labels, dim)) * 0.01
  x = jax.random.normal(keys[1], (members, batch, dim))

  def loss(emb_m, x_m, rng):
    pos = jnp.einsum("bd,bd->b", x_m, emb_m[jnp.zeros(batch, jnp.int32)])
    sample = warp.sample_warp(
        rng, pos, score_candidates=lambda c: jnp.einsum("bd,bkd->bk", x_m, emb_m[c]),
        is_positive=lambda c: c == 0, num_labels=num_labels, budget=16)
    viol = jnp.einsum("bd,bd->b", x_m, emb_m[sample.violator])
    return jnp.sum(jnp.where(sample.found, jax.nn.relu(1 - pos + viol), 0.0)), sample

  grads, sample = jax.jit(jax.vmap(jax.grad(loss, has_aux=True)))(
      emb, x, jax.random.split(keys[2], members))
  assert grads.shape == emb.shape and np.isfinite(np.asarray(grads)).all()
  # All scores are within the margin, so the first accepted draw violates: N = 1 everywhere.
  np.testing.assert_array_equal(sample.n_trials, 1)
  assert np.abs(np.asarray(grads)).sum() > 0


# ----------------------------------------------------------------------------- closed form


def _scored_world():
  """_world as one row of scores with the positive under test (label 0) at POS_SCORE."""
  scores, positive = _world()
  scores = scores.copy()
  scores[0] = POS_SCORE
  return scores, positive


def _sample_scored(seed: int, positives=((0,),)):
  scores, positive = _scored_world()
  positives = jnp.asarray(positives, jnp.int32)
  rows = positives.shape[0]
  scores_j = jnp.broadcast_to(jnp.asarray(scores), (rows, NUM_LABELS))
  mask_j = jnp.broadcast_to(jnp.asarray(positive), (rows, NUM_LABELS))

  def one(rng):
    return warp.sample_warp_scored(rng, scores_j, mask_j, positives, margin=MARGIN)

  out = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), NUM_SAMPLES))
  return jax.tree.map(np.asarray, out)


def test_closed_form_matches_algorithm1(reference):
  """N drawn by inversion from its geometric law and a uniform violator: Algorithm 1's outcome."""
  ref_found, ref_n = reference
  sample = jax.tree.map(lambda x: x[:, 0, 0], _sample_scored(seed=11))
  assert _two_sample_chi2_pvalue(_outcome_codes(sample.found, sample.n_trials),
                                 _outcome_codes(ref_found, ref_n)) > 1e-3
  # The same chi-square test tells the block sampler's mistakes apart (test above); here the
  # off-by-one of inversion (N = floor(log U / log(1 - p)), 0-based) must fail it too.
  shifted = np.where(sample.found, np.maximum(sample.n_trials - 1, 1), 0)
  assert _two_sample_chi2_pvalue(shifted, _outcome_codes(ref_found, ref_n)) < 1e-6
  scores, positive = _scored_world()
  assert sample.n_trials.min() >= 1 and sample.n_trials.max() <= NUM_LABELS - 1
  assert np.all(sample.n_trials[~sample.found] == NUM_LABELS - 1)
  np.testing.assert_array_equal(
      sample.rank_estimate, np.where(sample.found, (NUM_LABELS - 1) // sample.n_trials, 0))
  # The violator is uniform over the three violators, whatever N was.
  v = sample.violator[sample.found]
  assert set(v.tolist()) == set(VIOLATORS)
  np.testing.assert_array_equal(sample.violator_score[sample.found], scores[v])
  counts = np.array([np.sum(v == y) for y in VIOLATORS])
  assert stats.chisquare(counts).pvalue > 1e-3
  first = sample.found & (sample.n_trials == 1)
  later = sample.found & (sample.n_trials > 1)
  table = np.array([[np.sum(sample.violator[m] == y) for y in VIOLATORS] for m in (first, later)])
  assert stats.chi2_contingency(table).pvalue > 1e-3


def test_closed_form_gives_each_positive_its_own_draw():
  """Several positives of a row (loss.positives=all): each follows its own threshold, and the
  draws of two positives with the same score are independent."""
  scores, positive = _scored_world()
  # Label 3 is a positive scoring 5.0: no negative reaches 4.0, so it is never found.
  sample = _sample_scored(seed=3, positives=((0, 3, 0),))
  found = sample.found[:, 0]
  assert not found[:, 1].any()
  assert np.all(sample.n_trials[:, 0, 1] == NUM_LABELS - 1)
  p = len(VIOLATORS) / (NUM_LABELS - len(POSITIVES))
  expected = 1 - (1 - p) ** (NUM_LABELS - 1)
  se = np.sqrt(expected * (1 - expected) / NUM_SAMPLES)
  for col in (0, 2):
    assert abs(found[:, col].mean() - expected) < 5 * se
  # Independent draws: P(both found) = P(found)^2, and the two N differ.
  assert abs((found[:, 0] & found[:, 2]).mean() - expected ** 2) < 5 * se
  assert np.mean(sample.n_trials[:, 0, 0] != sample.n_trials[:, 0, 2]) > 0.5


def test_closed_form_edges():
  """Every negative violates: N = 1. No negative at all: not found, N = 0. Rows are independent."""
  scores = jnp.asarray([[0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
  mask = jnp.asarray([[True, False, False, False], [True, True, True, True]])
  out = warp.sample_warp_scored(jax.random.key(0), scores, mask, jnp.asarray([[0], [0]]))
  np.testing.assert_array_equal(out.found[:, 0], [True, False])
  np.testing.assert_array_equal(out.n_trials[:, 0], [1, 0])
  np.testing.assert_array_equal(out.rank_estimate[:, 0], [3, 0])
  assert int(out.violator[0, 0]) in (1, 2, 3)
  with pytest.raises(ValueError, match="positives must be"):
    warp.sample_warp_scored(jax.random.key(0), scores, mask, jnp.asarray([0, 0]))
