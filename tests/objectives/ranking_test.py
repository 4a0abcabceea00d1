"""Tests for musemb/objectives/ranking.py against brute-force numpy loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb.objectives import ranking
from musemb.samplers import warp


def _random_problem(seed: int, batch: int = 6, num_labels: int = 15):
  rng = np.random.default_rng(seed)
  scores = rng.normal(0.0, 1.0, (batch, num_labels)).astype(np.float32)
  positive = rng.random((batch, num_labels)) < 0.2
  pos_index = rng.integers(0, num_labels, batch)
  positive[np.arange(batch), pos_index] = True
  return scores, positive, pos_index


def _harmonic(r):
  return sum(1.0 / i for i in range(1, r + 1))


def _brute_force(scores, positive, pos_index, margin=1.0):
  """Per example: list of hinges over negatives and the margin rank, with explicit loops."""
  out = []
  for b in range(scores.shape[0]):
    f_pos = float(scores[b, pos_index[b]])
    hinges, rank = [], 0
    for y in range(scores.shape[1]):
      if positive[b, y]:
        continue
      hinges.append(max(0.0, margin - f_pos + float(scores[b, y])))
      rank += int(float(scores[b, y]) > f_pos - margin)
    out.append((hinges, rank))
  return out


def test_auc_loss_matches_brute_force():
  scores, positive, pos_index = _random_problem(0)
  expected = [sum(h) for h, _ in _brute_force(scores, positive, pos_index)]
  got = ranking.auc_loss(jnp.asarray(scores), jnp.asarray(positive), jnp.asarray(pos_index))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert got.shape == (scores.shape[0],)


@pytest.mark.parametrize("kind,k,big_l", [
    ("harmonic", None, _harmonic),
    ("auc", None, lambda r: float(r)),
    ("top_k", 2, lambda r: float(min(r, 2))),
])
def test_exact_warp_loss_matches_brute_force(kind, k, big_l):
  scores, positive, pos_index = _random_problem(1)
  expected = []
  for hinges, rank in _brute_force(scores, positive, pos_index, margin=0.5):
    expected.append(0.0 if rank == 0 else big_l(rank) / rank * sum(hinges))
  got = ranking.exact_warp_loss(jnp.asarray(scores), jnp.asarray(positive),
                                jnp.asarray(pos_index), kind=kind, k=k, margin=0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert np.any(np.asarray(got) > 0)


def test_exact_warp_zero_when_no_violator():
  scores = jnp.array([[5.0, 0.0, 3.9, -1.0]])
  positive = jnp.array([[True, False, False, False]])
  loss = ranking.exact_warp_loss(scores, positive, jnp.array([0]))
  np.testing.assert_array_equal(loss, [0.0])
  # A single violator at rank 1: L(1) = 1, so the loss is its hinge 1 - 5 + 4.5.
  loss = ranking.exact_warp_loss(scores.at[0, 2].set(4.5), positive, jnp.array([0]))
  np.testing.assert_allclose(loss, [0.5], rtol=1e-6)


def test_exact_warp_auc_kind_equals_auc_loss():
  scores, positive, pos_index = _random_problem(2, batch=8, num_labels=30)
  args = (jnp.asarray(scores), jnp.asarray(positive), jnp.asarray(pos_index))
  np.testing.assert_allclose(ranking.exact_warp_loss(*args, kind="auc"), ranking.auc_loss(*args),
                             rtol=1e-5, atol=1e-6)


def test_one_vs_rest_hinge_matches_brute_force():
  scores, positive, _ = _random_problem(3)
  expected = [
      sum(max(0.0, 1.0 - (1.0 if positive[b, j] else -1.0) * float(scores[b, j]))
          for j in range(scores.shape[1]))
      for b in range(scores.shape[0])
  ]
  got = ranking.one_vs_rest_hinge(jnp.asarray(scores), jnp.asarray(positive))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_warp_loss_values_and_gradients():
  pos = jnp.array([1.0, 1.0, 2.0, 0.0])
  viol = jnp.array([0.5, -1.0, 1.5, 3.0])
  weights = jnp.array([2.0, 3.0, 0.5, 4.0])
  found = jnp.array([True, True, True, False])
  loss = ranking.warp_loss(pos, viol, weights, found)
  # Hinges: 0.5, 0 (not violating), 0.5, 4 (but not found).
  np.testing.assert_allclose(loss, [1.0, 0.0, 0.25, 0.0])

  grad_pos, grad_viol, grad_w = jax.grad(
      lambda p, v, w: jnp.sum(ranking.warp_loss(p, v, w, found)), argnums=(0, 1, 2))(
          pos, viol, weights)
  violating = np.array([True, False, True, False])  # found and inside the margin
  np.testing.assert_allclose(grad_pos, np.where(violating, -weights, 0.0))
  np.testing.assert_allclose(grad_viol, np.where(violating, weights, 0.0))
  np.testing.assert_array_equal(grad_w, np.zeros(4))


def test_exact_warp_gradient_is_scaled_auc_gradient():
  """d/df of L(r)/r * sum(hinges): -L(r) on the positive, +L(r)/r on each violator."""
  scores, positive, pos_index = _random_problem(4)
  grad = jax.grad(lambda s: jnp.sum(ranking.exact_warp_loss(
      s, jnp.asarray(positive), jnp.asarray(pos_index))))(jnp.asarray(scores))
  for b, (_, rank) in enumerate(_brute_force(scores, positive, pos_index)):
    expected = np.zeros(scores.shape[1])
    if rank:
      violators = ~positive[b] & (scores[b] > scores[b, pos_index[b]] - 1.0)
      expected[violators] = _harmonic(rank) / rank
      expected[pos_index[b]] = -_harmonic(rank)
    np.testing.assert_allclose(grad[b], expected, rtol=1e-5, atol=1e-6)


def test_sampled_auc_loss_is_unbiased():
  scores, positive, pos_index = _random_problem(5, batch=4, num_labels=12)
  exact = np.asarray(ranking.auc_loss(jnp.asarray(scores), jnp.asarray(positive),
                                      jnp.asarray(pos_index)))
  scores_j, positive_j = jnp.asarray(scores), jnp.asarray(positive)
  pos_scores = scores_j[jnp.arange(4), jnp.asarray(pos_index)]
  num_negatives = jnp.sum(~positive_j, axis=1)
  num_draws, budget = 20_000, 8

  def estimate(rng):
    cands = warp.draw_negative_candidates(rng, 12, (4, budget))
    return ranking.sampled_auc_loss(
        pos_scores, jnp.take_along_axis(scores_j, cands, axis=1),
        ~jnp.take_along_axis(positive_j, cands, axis=1), num_negatives)

  draws = np.asarray(jax.jit(jax.vmap(estimate))(
      jax.random.split(jax.random.key(0), num_draws)))
  # P(no valid draw) is at most (5/12)^8 ~ 1e-3 here; it biases by at most that fraction.
  mean, se = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(num_draws)
  assert np.all(np.abs(mean - exact) < 5 * se + 2e-3 * exact), (mean, exact, se)
  # With every draw valid and each negative drawn once, the estimate is exact.
  for b in range(4):
    neg = np.flatnonzero(~positive[b])
    est = ranking.sampled_auc_loss(pos_scores[b:b + 1], scores_j[b:b + 1, neg],
                                   jnp.ones((1, len(neg)), bool), len(neg))
    np.testing.assert_allclose(est, exact[b:b + 1], rtol=1e-5)


def test_losses_jit_and_vmap_over_members():
  members = 3
  scores = jnp.stack([jnp.asarray(_random_problem(10 + m)[0]) for m in range(members)])
  _, positive, pos_index = _random_problem(10)
  positive, pos_index = jnp.asarray(positive), jnp.asarray(pos_index)

  def all_losses(s):
    return (ranking.exact_warp_loss(s, positive, pos_index),
            ranking.auc_loss(s, positive, pos_index),
            ranking.one_vs_rest_hinge(s, positive))

  batched = jax.jit(jax.vmap(all_losses))(scores)
  for m in range(members):
    for got, want in zip(batched, all_losses(scores[m])):
      np.testing.assert_allclose(got[m], want, rtol=1e-6)
  pos = jnp.ones((members, 5))
  out = jax.jit(jax.vmap(ranking.warp_loss))(pos, pos, pos, jnp.ones((members, 5), bool))
  np.testing.assert_allclose(out, np.ones((members, 5)))


def test_shape_errors_are_explained():
  with pytest.raises(ValueError, match="pos_index must be"):
    ranking.auc_loss(jnp.zeros((2, 5)), jnp.zeros((2, 5), bool), jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match="same shape"):
    ranking.one_vs_rest_hinge(jnp.zeros((2, 5)), jnp.zeros((2, 4), bool))
  with pytest.raises(ValueError, match="one shape"):
    ranking.warp_loss(jnp.zeros(2), jnp.zeros(3), jnp.zeros(2), jnp.ones(2, bool))


def test_rank_loss_weights_by_hand():
  ranks = jnp.array([0, 1, 2, 3, 4, 10])
  harmonic = [0.0, 1.0, 1.5, 1.5 + 1 / 3, 1.5 + 1 / 3 + 0.25, sum(1 / i for i in range(1, 11))]
  np.testing.assert_allclose(ranking.rank_loss_weights(ranks), harmonic, rtol=1e-6, atol=0)
  np.testing.assert_allclose(ranking.rank_loss_weights(ranks, max_rank=4), harmonic, rtol=1e-6,
                             atol=0)
  np.testing.assert_allclose(ranking.rank_loss_weights(ranks, max_rank=20), harmonic, rtol=1e-7,
                             atol=0)
  assert float(ranking.rank_loss_weights(jnp.array(0))) == 0.0
  np.testing.assert_array_equal(ranking.rank_loss_weights(ranks, kind="auc"), [0, 1, 2, 3, 4, 10])
  np.testing.assert_array_equal(ranking.rank_loss_weights(ranks, kind="top_k", k=3),
                                [0, 1, 2, 3, 3, 3])
  np.testing.assert_array_equal(ranking.rank_loss_weights(ranks, kind="top_k", k=1),
                                [0, 1, 1, 1, 1, 1])
  big = jnp.array([1000, 100_000])
  exact = [sum(1 / i for i in range(1, 1001)), float(np.sum(1 / np.arange(1, 100_001)))]
  np.testing.assert_allclose(ranking.rank_loss_weights(big), exact, rtol=1e-6)
  assert ranking.rank_loss_weights(ranks).dtype == jnp.float32


def test_rank_loss_weights_errors():
  with pytest.raises(ValueError, match="unknown kind"):
    ranking.rank_loss_weights(jnp.array([1]), kind="ndcg")
  with pytest.raises(ValueError, match="positive int k"):
    ranking.rank_loss_weights(jnp.array([1]), kind="top_k")
  with pytest.raises(ValueError, match="only meaningful"):
    ranking.rank_loss_weights(jnp.array([1]), kind="harmonic", k=3)
