"""Tests for musemb/objectives/bidirectional.py: eqs. (6)-(9) and InfoNCE against hand values."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb.objectives import bidirectional

R2 = math.sqrt(2.0)
M = 0.05

# The tiny batch every hand computation below uses: 4 pairs, 2 dims, unit vectors at right angles,
# so every distance is 0, sqrt(2) or 2. Pairs 0 and 1 review the same album.
AUDIO = np.array([[1, 0], [0, 1], [0, 1], [-1, 0]], np.float32)
TEXT = np.array([[1, 0], [0, 1], [0, 1], [0, -1]], np.float32)
ALBUM = np.array([0, 0, 1, 2])


def _loss(weights, **kwargs):
  kwargs.setdefault("num_negatives", 10)  # >= every row's candidates: every negative is used
  return bidirectional.bidirectional_loss(AUDIO, TEXT, ALBUM, jax.random.key(0), weights=weights,
                                          margin=M, **kwargs)


# Sums of the hinges and triplet counts of each term, worked out by hand (see the comments).
HAND = {
    # Audio anchors. a0: positives t0 (d 0), t1 (r); negatives t2 (r), t3 (r): only (t1, .) give m,
    # 0.1. a1: positives t0 (r), t1 (0); negatives t2 (0), t3 (2): (t0, t2) m + r and (t1, t2) m.
    # a2: positive t2 (0); negatives t0 (r), t1 (0), t3 (2): m. a3: positive t3 (r); negatives
    # t0 (2), t1 (r), t2 (r): 2m. Triplets 4 + 4 + 3 + 3.
    "audio_to_text": (0.35 + R2, 14),
    # Text anchors. t0: positives a0 (0), a1 (r); negatives a2 (r), a3 (2): (a1, a2) m. t1:
    # positives a0 (r), a1 (0); negatives a2 (0), a3 (r): (a0, a2) m + r, (a0, a3) m, (a1, a2) m.
    # t2: positive a2 (0); negatives a0 (r), a1 (0), a3 (r): m. t3: positive a3 (r); negatives
    # a0 (r), a1 (2), a2 (2): m.
    "text_to_audio": (0.3 + R2, 14),
    # a0's neighbour a1 (r) against a2 (r), a3 (2): m; a1's neighbour a0 (r) against a2 (0), a3
    # (r): m + r and m. a2 and a3 have no neighbour in the batch.
    "audio_neighbour": (0.15 + R2, 4),
    # t0's neighbour t1 (r) against t2 (r), t3 (r): 2m; t1's neighbour t0 (r) against t2 (0),
    # t3 (2): m + r.
    "text_neighbour": (0.15 + R2, 4),
}


@pytest.mark.parametrize("term", bidirectional.TERMS)
def test_each_term_matches_the_hand_computation(term):
  weights = [0.0] * 4
  weights[bidirectional.TERMS.index(term)] = 1.0
  loss, aux = _loss(weights)
  total, count = HAND[term]
  assert int(aux[term + "/triplets"]) == count
  np.testing.assert_allclose(float(aux[term]), total / count, rtol=1e-5)
  np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)
  for other in bidirectional.TERMS:
    if other != term:  # a zero weight skips the term
      assert float(aux[other]) == 0.0 and int(aux[other + "/triplets"]) == 0


def test_lambda_weights_scale_their_own_terms():
  weights = (1.0, 2.0, 3.0, 4.0)
  loss, aux = _loss(weights)
  expected = sum(w * HAND[t][0] / HAND[t][1] for w, t in zip(weights, bidirectional.TERMS))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  for t in bidirectional.TERMS:
    np.testing.assert_allclose(float(aux[t]), HAND[t][0] / HAND[t][1], rtol=1e-5)
  default, _ = bidirectional.bidirectional_loss(AUDIO, TEXT, ALBUM, jax.random.key(0), margin=M)
  expected = sum(w * HAND[t][0] / HAND[t][1]
                 for w, t in zip(bidirectional.DEFAULT_WEIGHTS, bidirectional.TERMS))
  np.testing.assert_allclose(float(default), expected, rtol=1e-5)


def test_album_mask_keeps_same_album_items_out_of_the_negatives():
  # positives="pair": a0's positive is t0 alone. With the album mask t1 (same album as a0) is
  # neither positive nor negative: a0 (t0 vs t2, t3): 0; a1 (t1 0 vs t2 0, t3 2): m; a2 (t2 0 vs
  # t0 r, t1 0, t3 2): m; a3 (t3 r vs t0 2, t1 r, t2 r): 2m. 2 + 2 + 3 + 3 triplets.
  _, aux = _loss((1.0, 0.0, 0.0, 0.0), positives="pair")
  assert int(aux["audio_to_text/triplets"]) == 10
  np.testing.assert_allclose(float(aux["audio_to_text"]), 4 * M / 10, rtol=1e-5)
  # Without the shared album (every pair its own album) t1 becomes a0's negative and t0 a1's:
  # a0 gains (t0, t1) = 0 and a1 gains (t1, t0): 0, so 12 triplets over the same 4m.
  _, aux = bidirectional.bidirectional_loss(
      AUDIO, TEXT, np.arange(4), jax.random.key(0), weights=(1.0, 0.0, 0.0, 0.0), margin=M,
      num_negatives=10, positives="pair")
  assert int(aux["audio_to_text/triplets"]) == 12
  np.testing.assert_allclose(float(aux["audio_to_text"]), 4 * M / 12, rtol=1e-5)
  # Move t0 (a1's album) onto a1, where as a negative of a1 it would add a hinge m: it must not.
  text = TEXT.copy()
  text[0] = [0, 1]
  _, aux = bidirectional.bidirectional_loss(
      AUDIO, text, ALBUM, jax.random.key(0), weights=(1.0, 0.0, 0.0, 0.0), margin=M,
      num_negatives=10, positives="pair")
  # a0: t0 (r) vs t2 (r), t3 (r): 2m; a1: t1 (0) vs t2 (0), t3 (2): m; a2: t2 (0) vs t0 (0),
  # t1 (0), t3 (2): 2m; a3: t3 (r) vs t0 (r), t1 (r), t2 (r): 3m.
  np.testing.assert_allclose(float(aux["audio_to_text"]), 8 * M / 10, rtol=1e-5)


def test_separate_text_albums_and_padding_rows():
  # Two reviews per audio item given as separate rows; album -1 marks a padded review.
  audio = AUDIO[:2]
  text = np.array([[1, 0], [0, 1], [0, -1], [5, 5]], np.float32)
  _, aux = bidirectional.bidirectional_loss(
      audio, text, np.array([0, 1]), jax.random.key(0), text_album=np.array([0, 0, 1, -1]),
      weights=(1.0, 1.0, 0.0, 0.0), margin=M, num_negatives=10)
  # a0 (album 0): positives t0 (0), t1 (r); negative t2 (r): (t1, t2) m. a1 (album 1): positive
  # t2 (2); negatives t0 (r), t1 (0): m + 2 - r, m + 2. Padding t3 takes no part.
  np.testing.assert_allclose(float(aux["audio_to_text"]), (3 * M + 4 - R2) / 4, rtol=1e-5)
  # t0: positive a0 (0) vs a1 (r): 0; t1: a0 (r) vs a1 (0): m + r; t2: a1 (2) vs a0 (r): m + 2 - r.
  np.testing.assert_allclose(float(aux["text_to_audio"]), (2 * M + 2) / 3, rtol=1e-5)


def test_hardest_mining_takes_the_nearest_valid_negative():
  # K = 1: a0's candidates t2, t3 tie at r (the lower index, t2, is taken): (t1, t2) m. a1's
  # nearest is t2 (0): (t0, t2) m + r, (t1, t2) m. a2's is t1 (0): m. a3's is t1 (r): m.
  _, aux = _loss((1.0, 0.0, 0.0, 0.0), num_negatives=1, mining="hardest")
  assert int(aux["audio_to_text/triplets"]) == 6
  np.testing.assert_allclose(float(aux["audio_to_text"]), (5 * M + R2) / 6, rtol=1e-5)


def test_draws_are_distinct_valid_and_fill_what_they_can():
  rng = np.random.default_rng(0)
  album = rng.integers(0, 5, 12)
  candidates = album[:, None] != album[None, :]
  candidates[3] = False
  candidates[3, [0, 7]] = album[3] != album[[0, 7]]  # row 3 keeps at most 2 candidates
  k = 4
  for seed in range(20):
    idx, ok = bidirectional.draw_negatives(jax.random.key(seed), jnp.asarray(candidates), k)
    idx, ok = np.asarray(idx), np.asarray(ok)
    for i in range(12):
      picked = idx[i][ok[i]]
      assert len(set(picked.tolist())) == picked.size  # without replacement
      assert all(album[j] != album[i] for j in picked)  # never the anchor's album
      assert picked.size == min(k, candidates[i].sum())
  # k larger than the batch: padded with invalid draws.
  idx, ok = bidirectional.draw_negatives(jax.random.key(0), jnp.asarray(candidates), 20)
  assert idx.shape == (12, 20) and np.array_equal(np.asarray(ok).sum(1), candidates.sum(1))


def test_random_draws_are_uniform_over_the_candidates():
  candidates = jnp.asarray([[False, True, True, True, False]])
  counts = np.zeros(5)
  draw = jax.jit(lambda key: bidirectional.draw_negatives(key, candidates, 1)[0])
  for seed in range(600):
    counts[int(draw(jax.random.key(seed))[0, 0])] += 1
  assert counts[0] == counts[4] == 0
  np.testing.assert_allclose(counts[1:4] / 600, 1 / 3, atol=0.06)


def test_random_negatives_never_count_a_same_album_item():
  # Many same-album items and few negatives: a loss that drew same-album "negatives" would see the
  # hinge m (distance 0 to a positive twin) on them; the masked loss sees only real negatives,
  # which sit far away (distance 2) and contribute nothing.
  audio = np.array([[1, 0]] * 6 + [[-1, 0]] * 2, np.float32)
  album = np.array([0] * 6 + [1] * 2)
  for seed in range(10):
    loss, aux = bidirectional.bidirectional_loss(
        audio, audio, album, jax.random.key(seed), weights=(1.0, 1.0, 1.0, 1.0), margin=M,
        num_negatives=3)
    assert float(loss) == 0.0
    # Album 0 anchors have 2 candidates (album 1), album 1 anchors 6, of which 3 are drawn.
    assert int(aux["audio_to_text/triplets"]) == 6 * 6 * 2 + 2 * 2 * 3


def test_matches_a_brute_force_loop_on_random_embeddings():
  rng = np.random.default_rng(1)
  audio = rng.normal(size=(7, 3)).astype(np.float32)
  text = rng.normal(size=(7, 3)).astype(np.float32)
  album = np.array([0, 0, 1, 1, 1, 2, 3])
  weights = (0.5, 1.0, 2.0, 0.25)
  loss, aux = bidirectional.bidirectional_loss(audio, text, album, jax.random.key(3),
                                               weights=weights, margin=0.3, num_negatives=10)
  a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
  t = text / np.linalg.norm(text, axis=1, keepdims=True)

  def term(anchors, items, exclude_self):
    hinges = []
    for i, j, k in itertools.product(range(7), repeat=3):
      if album[j] == album[i] and not (exclude_self and i == j) and album[k] != album[i]:
        hinges.append(max(0.0, 0.3 + np.linalg.norm(anchors[i] - items[j])
                          - np.linalg.norm(anchors[i] - items[k])))
    return np.mean(hinges)

  expected = {"audio_to_text": term(a, t, False), "text_to_audio": term(t, a, False),
              "audio_neighbour": term(a, a, True), "text_neighbour": term(t, t, True)}
  for name, value in expected.items():
    np.testing.assert_allclose(float(aux[name]), value, rtol=1e-5)
  np.testing.assert_allclose(float(loss), sum(w * expected[n] for w, n in
                                              zip(weights, bidirectional.TERMS)), rtol=1e-5)


def test_jits_and_gradients_are_finite_with_duplicates():
  # Exact twins (distance 0, where sqrt has no derivative) within and across albums.
  audio = jnp.asarray(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32))
  text = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32))
  fn = jax.jit(lambda a, t, key: bidirectional.bidirectional_loss(
      a, t, ALBUM, key, weights=(1.0, 1.0, 1.0, 1.0), margin=0.5)[0])
  grads = jax.grad(fn, argnums=(0, 1))(audio, text, jax.random.key(0))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  assert any(np.abs(np.asarray(g)).sum() > 0 for g in grads)


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="weights must be 4"):
    bidirectional.bidirectional_loss(AUDIO, TEXT, ALBUM, jax.random.key(0), weights=(1.0, 1.0))
  with pytest.raises(ValueError, match="mining"):
    bidirectional.bidirectional_loss(AUDIO, TEXT, ALBUM, jax.random.key(0), mining="semi")
  with pytest.raises(ValueError, match="one per row"):
    bidirectional.bidirectional_loss(AUDIO, TEXT, ALBUM[:3], jax.random.key(0))


# ----------------------------------------------------------------------------- InfoNCE


def test_infonce_matches_the_hand_computation_with_the_album_mask():
  audio = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
  text = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
  album = np.array([0, 0, 1])
  loss, aux = bidirectional.infonce_loss(audio, text, album, jnp.float32(math.log(2.0)))
  # cos = audio @ text.T = [[1, 1, 0], [0, 0, 1], [-1, -1, 0]], scale 2. Pairs 0 and 1 share
  # album 0, so each drops the other from its softmax; pair 2 keeps all three.
  # Audio rows: -(2 - log(e^2 + e^0)), -(0 - log(e^0 + e^2)), -(0 - log(e^-2 + e^-2 + e^0)).
  e = math.exp
  a2t = np.mean([math.log(1 + e(-2)), math.log(1 + e(2)), math.log(1 + 2 * e(-2))])
  # Text rows (columns of cos): [1, 0, -1] keeping {0, 2}: -(2 - log(e^2 + e^-2)); [1, 0, -1]
  # keeping {1, 2}: -(0 - log(e^0 + e^-2)); [0, 1, 0] keeping all: -(0 - log(1 + e^2 + 1)).
  t2a = np.mean([math.log(1 + e(-4)), math.log(1 + e(-2)), math.log(2 + e(2))])
  np.testing.assert_allclose(float(aux["audio_to_text"]), a2t, rtol=1e-5)
  np.testing.assert_allclose(float(aux["text_to_audio"]), t2a, rtol=1e-5)
  np.testing.assert_allclose(float(loss), (a2t + t2a) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(aux["scale"]), 2.0, rtol=1e-6)


def test_infonce_temperature_is_learned_and_capped():
  rng = np.random.default_rng(0)
  audio = rng.normal(size=(6, 4)).astype(np.float32)
  text = audio + 0.1 * rng.normal(size=(6, 4)).astype(np.float32)
  album = np.array([0, 1, 2, 3, 3, -1])  # the last pair is padding

  def f(log_scale):
    return bidirectional.infonce_loss(audio, text, album, log_scale)[0]

  g = jax.grad(f)(jnp.float32(bidirectional.INIT_LOG_SCALE))
  assert np.isfinite(g) and g < 0  # well aligned pairs: sharper logits lower the loss
  assert float(jax.grad(f)(jnp.float32(10.0))) == 0.0  # beyond the cap of 100
  _, aux = bidirectional.infonce_loss(audio, text, album, jnp.float32(10.0))
  np.testing.assert_allclose(float(aux["scale"]), bidirectional.MAX_SCALE, rtol=1e-6)
  grads = jax.grad(lambda a: bidirectional.infonce_loss(a, text, album, jnp.float32(2.0))[0])(
      jnp.asarray(audio))
  assert np.isfinite(np.asarray(grads)).all()
  assert np.abs(np.asarray(grads[5])).sum() == 0.0  # padding gets no gradient
