"""Tests for musemb/objectives/supportive.py: eq. (3) and its gradient against closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb.objectives import supportive
from musemb.samplers import propagation

LOGITS = np.array([[0.0, 2.0, -1.0], [3.0, -2.0, 0.5]], np.float32)
TAGS = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
PROPAGATED = np.array([[0, 1, 1], [1, 0, 0]], np.float32)
SUPPORT_LOGITS = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, -3.0]], np.float32)
WEIGHT = np.array([0.25, 0.6], np.float32)


def _bce(x, y):
  """-log sigmoid(x) for a positive, -log(1 - sigmoid(x)) for a negative."""
  return math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x))


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_tag_bce_by_hand():
  got = np.asarray(supportive.tag_bce(jnp.asarray(LOGITS), jnp.asarray(TAGS)))
  row0 = math.log(2.0) + math.log1p(math.exp(2.0)) + math.log1p(math.exp(1.0))
  row1 = math.log1p(math.exp(3.0)) + math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.5))
  np.testing.assert_allclose(got, [row0, row1], rtol=1e-6)
  mean = np.asarray(supportive.tag_bce(jnp.asarray(LOGITS), jnp.asarray(TAGS), reduction="mean"))
  np.testing.assert_allclose(mean, [row0 / 3, row1 / 3], rtol=1e-6)


def test_tag_bce_is_stable_for_large_logits():
  logits = jnp.asarray([[80.0, -80.0, 80.0, -80.0]])
  targets = jnp.asarray([[0.0, 1.0, 1.0, 0.0]])
  loss, grad = jax.value_and_grad(lambda x: supportive.tag_bce(x, targets)[0])(logits)
  # The two wrong-side logits cost 80 each; the right-side ones about e^-80.
  np.testing.assert_allclose(float(loss), 160.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), [[1.0, -1.0, 0.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_single_head_loss_and_gradient(reduction):
  scale = 1.0 if reduction == "sum" else 1.0 / LOGITS.shape[1]

  def loss(logits):
    return jnp.sum(supportive.supportive_bce(logits, jnp.asarray(TAGS), jnp.asarray(PROPAGATED),
                                             jnp.asarray(WEIGHT), reduction=reduction))

  want = [scale * sum(_bce(x, y) + w * _bce(x, yp) for x, y, yp in zip(xs, ys, yps))
          for xs, ys, yps, w in zip(LOGITS, TAGS, PROPAGATED, WEIGHT)]
  got = supportive.supportive_bce(jnp.asarray(LOGITS), jnp.asarray(TAGS), jnp.asarray(PROPAGATED),
                                  jnp.asarray(WEIGHT), reduction=reduction)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  # d/dx = (sigmoid(x) - y) + P(s'|s) (sigmoid(x) - y'): one head takes both terms.
  grad = jax.grad(loss)(jnp.asarray(LOGITS))
  p = _sigmoid(LOGITS)
  np.testing.assert_allclose(np.asarray(grad),
                             scale * ((p - TAGS) + WEIGHT[:, None] * (p - PROPAGATED)), atol=1e-6)


def test_separate_head_loss_and_gradient():
  def loss(logits, support_logits, weight, has_partner):
    return jnp.sum(supportive.supportive_bce(
        logits, jnp.asarray(TAGS), jnp.asarray(PROPAGATED), weight,
        support_logits=support_logits, has_partner=has_partner))

  args = (jnp.asarray(LOGITS), jnp.asarray(SUPPORT_LOGITS), jnp.asarray(WEIGHT),
          jnp.asarray([True, True]))
  value = float(loss(*args))
  want = sum(_bce(x, y) for x, y in zip(LOGITS.ravel(), TAGS.ravel())) + sum(
      w * sum(_bce(x, yp) for x, yp in zip(xs, yps))
      for xs, yps, w in zip(SUPPORT_LOGITS, PROPAGATED, WEIGHT))
  np.testing.assert_allclose(value, want, rtol=1e-6)
  g_logits, g_support, g_weight = jax.grad(loss, argnums=(0, 1, 2))(*args)
  np.testing.assert_allclose(np.asarray(g_logits), _sigmoid(LOGITS) - TAGS, atol=1e-6)
  np.testing.assert_allclose(np.asarray(g_support),
                             WEIGHT[:, None] * (_sigmoid(SUPPORT_LOGITS) - PROPAGATED), atol=1e-6)
  # The weight is a constant of the step (eq. (4) is data, not a parameter).
  np.testing.assert_array_equal(np.asarray(g_weight), 0.0)


def test_rows_without_a_partner_keep_only_their_own_term():
  has_partner = jnp.asarray([True, False])
  # Garbage in the masked row (NaN weight, junk targets) must not leak into loss or gradient.
  weight = jnp.asarray([WEIGHT[0], np.nan])
  propagated = jnp.asarray(PROPAGATED).at[1].set(7.0)

  def loss(logits, support_logits):
    return supportive.supportive_bce(logits, jnp.asarray(TAGS), propagated, weight,
                                     support_logits=support_logits, has_partner=has_partner)

  per_example = loss(jnp.asarray(LOGITS), jnp.asarray(SUPPORT_LOGITS))
  own = supportive.tag_bce(jnp.asarray(LOGITS), jnp.asarray(TAGS))
  np.testing.assert_allclose(float(per_example[1]), float(own[1]), rtol=1e-6)
  g_logits, g_support = jax.grad(lambda a, b: jnp.sum(loss(a, b)), argnums=(0, 1))(
      jnp.asarray(LOGITS), jnp.asarray(SUPPORT_LOGITS))
  np.testing.assert_allclose(np.asarray(g_logits), _sigmoid(LOGITS) - TAGS, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(g_support)[1], 0.0)
  np.testing.assert_allclose(np.asarray(g_support)[0],
                             WEIGHT[0] * (_sigmoid(SUPPORT_LOGITS[0]) - PROPAGATED[0]), atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tag_dependent_weights_by_hand(reduction):
  """A [batch, tags] weight and mask: each tag's supportive BCE has its own W_{s,t'}."""
  scale = 1.0 if reduction == "sum" else 1.0 / LOGITS.shape[1]
  per_tag = np.array([[0.25, 0.0, 0.5], [0.6, 0.1, np.nan]], np.float32)
  has = np.array([[True, True, True], [True, True, False]])
  propagated = PROPAGATED.copy()
  propagated[1, 2] = 7.0                 # garbage under the mask must not leak

  def loss(logits, support_logits):
    return supportive.supportive_bce(logits, jnp.asarray(TAGS), jnp.asarray(propagated),
                                     jnp.asarray(per_tag), support_logits=support_logits,
                                     has_partner=jnp.asarray(has), reduction=reduction)

  want = [scale * (sum(_bce(x, y) for x, y in zip(xs, ys))
                   + sum(w * _bce(z, yp) for z, yp, w, h in zip(zs, yps, ws, hs) if h))
          for xs, ys, zs, yps, ws, hs in zip(LOGITS, TAGS, SUPPORT_LOGITS, propagated, per_tag,
                                             has)]
  got = loss(jnp.asarray(LOGITS), jnp.asarray(SUPPORT_LOGITS))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  g_logits, g_support = jax.grad(lambda a, b: jnp.sum(loss(a, b)), argnums=(0, 1))(
      jnp.asarray(LOGITS), jnp.asarray(SUPPORT_LOGITS))
  np.testing.assert_allclose(np.asarray(g_logits), scale * (_sigmoid(LOGITS) - TAGS), atol=1e-6)
  want_support = np.where(has, np.nan_to_num(per_tag) * (_sigmoid(SUPPORT_LOGITS) - propagated),
                          0.0)
  np.testing.assert_allclose(np.asarray(g_support), scale * want_support, atol=1e-6)
  # A [batch] weight broadcast to every tag is eq. (3): the two forms agree.
  row = supportive.supportive_bce(jnp.asarray(LOGITS), jnp.asarray(TAGS), jnp.asarray(PROPAGATED),
                                  jnp.asarray(WEIGHT), has_partner=jnp.asarray([True, False]),
                                  reduction=reduction)
  tiled = supportive.supportive_bce(
      jnp.asarray(LOGITS), jnp.asarray(TAGS), jnp.asarray(PROPAGATED),
      jnp.asarray(np.repeat(WEIGHT[:, None], 3, 1)),
      has_partner=jnp.asarray(np.array([[True] * 3, [False] * 3])), reduction=reduction)
  np.testing.assert_allclose(np.asarray(tiled), np.asarray(row), rtol=1e-6)


def test_rejects_bad_arguments():
  x = jnp.asarray(LOGITS)
  with pytest.raises(ValueError, match="unknown reduction"):
    supportive.supportive_bce(x, x, x, jnp.asarray(WEIGHT), reduction="batchmean")
  with pytest.raises(ValueError, match="share the shape"):
    supportive.supportive_bce(x, x, x[:, :2], jnp.asarray(WEIGHT))
  with pytest.raises(ValueError, match="\\[batch\\]"):
    supportive.supportive_bce(x, x, x, jnp.asarray(WEIGHT[:1]))
  with pytest.raises(ValueError, match="\\[batch, tags\\]"):
    supportive.supportive_bce(x, x, x, x[:, :2])


def test_a_jitted_step_with_the_sampler_compiles_once():
  """The intended use: draw partners, gather their tags and take eq. (3)'s gradient in one jit."""
  playlists = [[0, 1, 2, 3], [3, 2, -1, 4]]
  source = np.array([True, True, True, True, False])
  tables = propagation.build_tables(playlists, 5, source, 0.4)
  song_tags = jnp.asarray(np.eye(5, 3, dtype=np.float32))
  traces = []

  @jax.jit
  def step(logits, support_logits, songs, rng):
    traces.append(1)
    drawn = propagation.sample(tables, songs, rng)
    targets, has_partner = propagation.propagated_tags(song_tags, drawn.partner)

    def mean_loss(a, b):
      return jnp.mean(supportive.supportive_bce(a, song_tags[songs], targets, drawn.weight,
                                                support_logits=b, has_partner=has_partner))

    return jax.value_and_grad(mean_loss, argnums=(0, 1))(logits, support_logits), drawn

  songs = jnp.asarray([0, 1, 2, 3, 4, 1], jnp.int32)
  logits = jnp.zeros((6, 3))
  for seed in range(2):
    (value, (g_logits, g_support)), drawn = step(logits, logits + 1.0, songs, jax.random.key(seed))
    # At zero logits the own gradient is (1/2 - y) / batch; the support one w (sigmoid(1) - y').
    np.testing.assert_allclose(np.asarray(g_logits), (0.5 - np.asarray(song_tags)[songs]) / 6,
                               atol=1e-6)
    partner = np.asarray(drawn.partner)
    targets = np.where(partner[:, None] >= 0, np.asarray(song_tags)[np.maximum(partner, 0)], 0)
    want = np.asarray(drawn.weight)[:, None] * (_sigmoid(1.0) - targets) / 6
    np.testing.assert_allclose(np.asarray(g_support), np.where(partner[:, None] >= 0, want, 0),
                               atol=1e-6)
    assert np.isfinite(float(value))
  assert len(traces) == 1
