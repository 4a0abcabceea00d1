"""Tests for musemb/objectives/triplet.py and musemb/samplers/triplet.py (Won et al. 2021)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from musemb.objectives import triplet as triplet_objective
from musemb.samplers import triplet

NUM_DRAWS = 20_000
# A draw distribution passes when the chi-square p-value exceeds this (fixed seeds: deterministic).
P_MIN = 1e-3


# ---------------------------------------------------------------------------------------------
# The loss.


def _np_cos(a, b):
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _np_dcos_da(a, b):
  """d cos(a, b) / d a = (b_hat - cos(a, b) a_hat) / ||a||."""
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  return (b / nb - _np_cos(a, b) * a / na) / na


def _triplet_fixture():
  rng = np.random.default_rng(0)
  anchor = rng.normal(size=(4, 5))
  positive = rng.normal(size=(4, 5))
  negative = rng.normal(size=(4, 5))
  # Triplet 1: the negative is the anchor reversed and the positive the anchor scaled, so
  # D(a, p) = 0, D(a, n) = 2 and the hinge 0.4 + 0 - 2 < 0 is inactive.
  positive[1] = 3.0 * anchor[1]
  negative[1] = -anchor[1]
  # Triplet 2: the negative is the positive nudged, so D(a, n) ~ D(a, p) and the hinge ~ margin
  # is strictly active.
  negative[2] = positive[2] + 0.05 * rng.normal(size=5)
  return anchor, positive, negative


def _np_triplet(anchor, positive, negative, margin, mask):
  """Loss and gradients by hand: mean over valid triplets of relu(margin - cos_p + cos_n)."""
  count = max(int(mask.sum()), 1)
  loss = 0.0
  grads = [np.zeros_like(anchor) for _ in range(3)]
  for i in range(anchor.shape[0]):
    a, p, n = anchor[i], positive[i], negative[i]
    hinge = margin + (1 - _np_cos(a, p)) - (1 - _np_cos(a, n))
    if not mask[i] or hinge <= 0:
      continue
    loss += hinge / count
    grads[0][i] = (-_np_dcos_da(a, p) + _np_dcos_da(a, n)) / count
    grads[1][i] = -_np_dcos_da(p, a) / count
    grads[2][i] = _np_dcos_da(n, a) / count
  return loss, grads


@pytest.mark.parametrize("use_mask", [False, True])
def test_triplet_loss_value_and_gradient_match_hand_computation(use_mask):
  anchor, positive, negative = _triplet_fixture()
  mask = np.array([True, True, True, False]) if use_mask else np.ones(4, bool)
  margin = 0.4
  expected_loss, expected_grads = _np_triplet(anchor, positive, negative, margin, mask)

  def loss_fn(a, p, n):
    return triplet_objective.triplet_loss(a, p, n, margin=margin,
                                          mask=jnp.asarray(mask) if use_mask else None)

  args = [jnp.asarray(x, jnp.float32) for x in (anchor, positive, negative)]
  loss, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))(*args)
  np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5, atol=1e-6)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
  # The inactive triplet (row 1) and the masked one (row 3, when masked) have zero gradient.
  zero_rows = [1, 3] if use_mask else [1]
  for got in grads:
    np.testing.assert_array_equal(np.asarray(got)[zero_rows], 0.0)
  # Active rows really do get a gradient (otherwise the zero checks above prove nothing).
  assert np.abs(np.asarray(grads[0])[[0, 2]]).sum() > 1e-3


def test_triplet_losses_per_example_and_distances():
  anchor, positive, negative = _triplet_fixture()
  hinges = np.asarray(triplet_objective.triplet_losses(
      jnp.asarray(anchor), jnp.asarray(positive), jnp.asarray(negative), margin=0.4))
  expected = [max(0.0, 0.4 - _np_cos(a, p) + _np_cos(a, n))
              for a, p, n in zip(anchor, positive, negative)]
  np.testing.assert_allclose(hinges, expected, rtol=1e-5, atol=1e-6)
  assert hinges[1] == 0.0 and hinges[2] > 0.0
  distance = triplet_objective.cosine_distance(jnp.asarray(anchor[1]), jnp.asarray(negative[1]))
  np.testing.assert_allclose(np.asarray(distance), 2.0, rtol=1e-6)
  sims = np.asarray(triplet_objective.pairwise_cosine_similarity(jnp.asarray(anchor),
                                                                 jnp.asarray(negative)))
  expected_sims = [[_np_cos(a, n) for n in negative] for a in anchor]
  np.testing.assert_allclose(sims, expected_sims, rtol=1e-5, atol=1e-6)


def test_triplet_loss_all_masked_is_zero_with_zero_gradient():
  anchor, positive, negative = (jnp.asarray(x, jnp.float32) for x in _triplet_fixture())
  mask = jnp.zeros(4, bool)
  loss, grad = jax.value_and_grad(triplet_objective.triplet_loss)(
      anchor, positive, negative, 0.4, mask)
  assert float(loss) == 0.0
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_triplet_loss_rejects_bad_shapes():
  a = jnp.ones((3, 4))
  with pytest.raises(ValueError, match="one shape"):
    triplet_objective.triplet_loss(a, a, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="mask must be"):
    triplet_objective.triplet_loss(a, a, a, mask=jnp.ones(2, bool))


# ---------------------------------------------------------------------------------------------
# Anchor sampling.

# Heavily skewed tag frequencies over 300 songs; tag 6 has no song and must never be drawn.
TAG_COUNTS = (240, 60, 20, 6, 2, 1, 0)
NUM_SONGS = 300


def _skewed_labels():
  rng = np.random.default_rng(1)
  labels = np.zeros((NUM_SONGS, len(TAG_COUNTS)), bool)
  for t, count in enumerate(TAG_COUNTS):
    labels[rng.choice(NUM_SONGS, size=count, replace=False), t] = True
  return labels


def _draw_anchors(method, labels, seed=0):
  annotations = triplet.annotations_from_multihot(labels)
  fn = jax.jit(lambda key, ann: triplet.sample_anchors(key, method, ann, NUM_DRAWS))
  tags, songs = fn(jax.random.key(seed), annotations)
  return np.asarray(tags), np.asarray(songs)


def test_annotations_from_multihot_is_csr_of_the_labels():
  labels = _skewed_labels()
  ann = triplet.annotations_from_multihot(labels)
  np.testing.assert_array_equal(np.diff(ann.tag_offsets), labels.sum(0))
  np.testing.assert_array_equal(np.diff(ann.song_offsets), labels.sum(1))
  for t in range(labels.shape[1]):
    np.testing.assert_array_equal(ann.tag_songs[ann.tag_offsets[t]:ann.tag_offsets[t + 1]],
                                  np.flatnonzero(labels[:, t]))
  for s in range(labels.shape[0]):
    np.testing.assert_array_equal(ann.song_tags[ann.song_offsets[s]:ann.song_offsets[s + 1]],
                                  np.flatnonzero(labels[s]))


def test_balanced_anchors_draw_tags_uniformly():
  labels = _skewed_labels()
  tags, songs = _draw_anchors("balanced", labels)
  assert labels[songs, tags].all()                     # every positive carries its anchor tag
  counts = np.bincount(tags, minlength=len(TAG_COUNTS))
  assert counts[6] == 0                                # the empty tag is never drawn
  assert stats.chisquare(counts[:6]).pvalue > P_MIN    # uniform over the 6 nonempty tags
  # Not proportional to annotation frequency (this is what separates it from "random").
  freq = np.asarray(TAG_COUNTS[:6], float)
  assert stats.chisquare(counts[:6], freq / freq.sum() * NUM_DRAWS).pvalue < 1e-12
  # Given the tag, the song is uniform over the tag's songs.
  songs_of_tag0 = songs[tags == 0]
  per_song = np.bincount(songs_of_tag0, minlength=NUM_SONGS)[labels[:, 0]]
  assert stats.chisquare(per_song).pvalue > P_MIN


def test_random_anchors_follow_annotation_frequencies():
  labels = _skewed_labels()
  tags, songs = _draw_anchors("random", labels)
  assert labels[songs, tags].all()
  counts = np.bincount(tags, minlength=len(TAG_COUNTS))
  freq = np.asarray(TAG_COUNTS, float)
  assert counts[6] == 0
  assert stats.chisquare(counts[:6], freq[:6] / freq.sum() * NUM_DRAWS).pvalue > P_MIN
  assert stats.chisquare(counts[:6]).pvalue < 1e-12    # far from uniform over tags
  # Every annotation (song, tag) is equally likely.
  num_annotations = int(labels.sum())
  flat = np.zeros(labels.shape, np.int64)
  np.add.at(flat, (songs, tags), 1)
  assert stats.chisquare(flat[labels]).pvalue > P_MIN and flat[~labels].sum() == 0
  assert flat[labels].size == num_annotations


def test_song_uniform_anchors_follow_the_authors_loader():
  labels = _skewed_labels()
  tags, songs = _draw_anchors("song_uniform", labels)
  assert labels[songs, tags].all()
  tagged = labels.any(1)
  per_song = np.bincount(songs, minlength=NUM_SONGS)
  assert per_song[~tagged].sum() == 0
  assert stats.chisquare(per_song[tagged]).pvalue > P_MIN
  # Tag t is drawn with probability mean over tagged songs of [t in song] / #tags(song).
  expected = (labels[tagged] / labels[tagged].sum(1, keepdims=True)).mean(0)
  counts = np.bincount(tags, minlength=len(TAG_COUNTS))
  nonzero = expected > 0
  assert stats.chisquare(counts[nonzero], expected[nonzero] * NUM_DRAWS).pvalue > P_MIN


def test_sample_anchors_rejects_bad_arguments():
  ann = triplet.annotations_from_multihot(_skewed_labels())
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="unknown method"):
    triplet.sample_anchors(key, "uniform", ann, 4)
  with pytest.raises(ValueError, match="batch_size"):
    triplet.sample_anchors(key, "balanced", ann, 0)
  with pytest.raises(TypeError, match="Annotations"):
    triplet.sample_anchors(key, "balanced", (ann.tag_offsets, ann.tag_songs), 4)
  with pytest.raises(ValueError, match="no annotations"):
    triplet.annotations_from_multihot(np.zeros((3, 2), bool))
  with pytest.raises(ValueError, match="tag_ids must lie"):
    triplet.annotations_from_pairs(np.array([0, 1]), np.array([0, 5]), 2, 3)


def test_negative_masks_agree_and_exclude_tag_carriers():
  labels = _skewed_labels()
  ann = triplet.annotations_from_multihot(labels)
  anchor_tag, positive_song = jax.jit(
      lambda key: triplet.sample_anchors(key, "balanced", ann, 64))(jax.random.key(3))
  song_tags = jnp.asarray(labels)[positive_song]
  from_rows = np.asarray(jax.jit(triplet.negative_mask)(anchor_tag, song_tags))
  from_index = np.asarray(jax.jit(triplet.negative_mask_from_annotations)(
      ann, anchor_tag, positive_song))
  expected = ~labels[np.asarray(positive_song)][:, np.asarray(anchor_tag)].T
  np.testing.assert_array_equal(from_rows, expected)
  np.testing.assert_array_equal(from_index, expected)
  assert not np.diagonal(from_rows).any()              # the own positive is never a negative
  # carries_tag on every (song, tag) cell, including songs without tags and the empty tag.
  songs, tags = np.meshgrid(np.arange(NUM_SONGS), np.arange(len(TAG_COUNTS)), indexing="ij")
  np.testing.assert_array_equal(np.asarray(triplet.carries_tag(ann, songs, tags)), labels)
  # Padding rows neither get nor serve as negatives.
  example_mask = jnp.arange(64) < 60
  masked = np.asarray(triplet.negative_mask(anchor_tag, song_tags, example_mask))
  assert not masked[60:].any() and not masked[:, 60:].any()
  np.testing.assert_array_equal(masked[:60, :60], expected[:60, :60])


# ---------------------------------------------------------------------------------------------
# Negative sampling.

DIM = 5
# Row 0 of the controlled batch: songs at these chordal distances from the anchor. 0.3 and 0.5
# sit below the cutoff (equal weights), 1.5 and 1.9 beyond nonzero_loss_cutoff (never drawn).
ROW0_DISTANCES = (0.3, 0.5, 0.8, 1.0, 1.2, 1.35, 1.5, 1.9)
# Song 8 is closest of all but carries the anchor tag: it must never be drawn.
ROW0_INVALID_DISTANCE = 0.1


def _controlled_batch():
  """Anchor 0 at e0 with songs at ROW0_DISTANCES (+ an invalid one); anchors 1-3 random."""
  distances = np.asarray(ROW0_DISTANCES + (ROW0_INVALID_DISTANCE,))
  num_songs = len(distances)
  cos = 1.0 - distances**2 / 2.0
  rng = np.random.default_rng(2)
  songs = np.zeros((num_songs, DIM))
  for j, c in enumerate(cos):
    # Unit vectors at cosine c from e0: c e0 + sqrt(1 - c^2) u, with u a random unit vector
    # orthogonal to e0; the norms are then scaled to check that sampling normalises.
    u = rng.normal(size=DIM - 1)
    songs[j, 0] = c
    songs[j, 1:] = np.sqrt(1 - c * c) * u / np.linalg.norm(u)
    songs[j] *= rng.uniform(0.5, 3.0)
  anchors = rng.normal(size=(4, DIM))
  anchors[0] = 0.0
  anchors[0, 0] = 2.5
  valid = np.ones((4, num_songs), bool)
  valid[0, num_songs - 1] = False                      # the positive-sharing song of anchor 0
  valid[1, [0, 2, 4]] = False
  valid[2, :] = False                                  # anchor 2: no valid negative at all
  valid[2, 5] = True
  valid[3, :] = False
  return anchors, songs, valid


def _np_target(method, anchors, songs, valid, cutoff=0.5, nonzero_loss_cutoff=1.4):
  """Target probabilities in float64, straight from the formulas."""
  a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
  s = songs / np.linalg.norm(songs, axis=1, keepdims=True)
  cos = np.clip(a @ s.T, -1, 1)
  if method == "random":
    w = np.ones_like(cos)
  elif method == "cosine":
    w = (cos + 1) / 2
  else:
    n = anchors.shape[1]
    d = np.sqrt(np.maximum(2 - 2 * cos, 0))
    dc = np.maximum(d, cutoff)
    q = dc**(n - 2) * (1 - dc**2 / 4)**((n - 3) / 2)     # Wu et al.'s q(d), unnormalised
    w = np.where(d < nonzero_loss_cutoff, 1 / q, 0.0)
  w = np.where(valid, w, 0.0)
  total = w.sum(1, keepdims=True)
  # Fallback: rows with valid songs but zero weight draw uniformly among the valid ones.
  w = np.where((total == 0) & valid, 1.0, w)
  total = w.sum(1, keepdims=True)
  return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _draw_negatives(method, anchors, songs, valid, **kwargs):
  fn = jax.jit(jax.vmap(
      lambda key: triplet.sample_negatives(key, method, jnp.asarray(anchors, jnp.float32),
                                           jnp.asarray(songs, jnp.float32), jnp.asarray(valid),
                                           **kwargs)))
  negative, has_negative = fn(jax.random.split(jax.random.key(5), NUM_DRAWS))
  return np.asarray(negative), np.asarray(has_negative)


def _check_frequencies(draws, target, valid):
  """Per anchor row with negatives: never off-support, chi-square fit to the target."""
  for i in range(target.shape[0]):
    if not valid[i].any():
      continue
    counts = np.bincount(draws[:, i], minlength=target.shape[1])
    support = target[i] > 0
    assert counts[~support].sum() == 0, (i, counts, target[i])
    if support.sum() > 1:
      assert stats.chisquare(counts[support], target[i, support] * NUM_DRAWS).pvalue > P_MIN, (
          i, counts, target[i] * NUM_DRAWS)


@pytest.mark.parametrize("method", ["distance_weighted", "cosine", "random"])
def test_negative_draw_frequencies_match_targets(method):
  anchors, songs, valid = _controlled_batch()
  target = _np_target(method, anchors, songs, valid)
  # The controlled distances of row 0 came out as built.
  a0 = anchors[0] / np.linalg.norm(anchors[0])
  s = songs / np.linalg.norm(songs, axis=1, keepdims=True)
  np.testing.assert_allclose(np.sqrt(2 - 2 * s @ a0)[:len(ROW0_DISTANCES)], ROW0_DISTANCES,
                             atol=1e-9)
  # Wu et al.'s fixed 1.4 (their margin loss's zero-loss distance); the other methods ignore it.
  wu_cut = {"nonzero_loss_cutoff": 1.4}
  probs = np.asarray(triplet.negative_probabilities(
      method, jnp.asarray(anchors, jnp.float32), jnp.asarray(songs, jnp.float32),
      jnp.asarray(valid), **wu_cut))
  np.testing.assert_allclose(probs, target, rtol=1e-4, atol=1e-6)
  draws, has_negative = _draw_negatives(method, anchors, songs, valid, **wu_cut)
  np.testing.assert_array_equal(has_negative, np.broadcast_to(valid.any(1), has_negative.shape))
  for i in np.flatnonzero(valid.any(1)):
    assert valid[i, draws[:, i]].all()                 # only valid negatives are ever drawn
  assert (draws[:, 3] == 0).all()                      # no negative: index 0, flagged
  assert (draws[:, 0] != len(ROW0_DISTANCES)).all()    # the invalid close song never appears
  _check_frequencies(draws, target, valid)
  if method == "distance_weighted":
    # Distances below the cutoff share one weight; beyond 1.4 the weight is 0.
    np.testing.assert_allclose(target[0, 0], target[0, 1], rtol=1e-12)
    assert target[0, 6] == 0 and target[0, 7] == 0
    assert target[0, 1] > target[0, 2] > target[0, 3]
  if method == "cosine":
    cos0 = 1 - np.asarray(ROW0_DISTANCES)**2 / 2
    np.testing.assert_allclose(target[0, :8], (cos0 + 1) / 2 / ((cos0 + 1) / 2).sum(), rtol=1e-9)


def test_distance_weighted_falls_back_to_uniform_beyond_the_nonzero_loss_cutoff():
  anchors, songs, valid = _controlled_batch()
  # Anchor 0 may only use the two songs beyond 1.4: no positive weight, uniform fallback.
  valid = valid.copy()
  valid[0] = False
  valid[0, [6, 7]] = True
  draws, has_negative = _draw_negatives("distance_weighted", anchors, songs, valid,
                                        nonzero_loss_cutoff=1.4)
  assert has_negative[:, 0].all()
  assert set(np.unique(draws[:, 0])) == {6, 7}
  assert abs((draws[:, 0] == 6).mean() - 0.5) < 5 * np.sqrt(0.25 / NUM_DRAWS)


def test_distance_weighted_dimension_and_cutoff_options():
  anchors, songs, valid = _controlled_batch()
  # A per-anchor cut: anchor 0 keeps d < 1.1, the others d < 1.6.
  per_anchor = np.array([1.1, 1.6, 1.6, 1.6], np.float32)
  for kwargs in ({"dim": 9, "cutoff": 0.6, "nonzero_loss_cutoff": 1.4}, {},
                 {"nonzero_loss_cutoff": jnp.asarray(per_anchor)}):
    full = {"cutoff": 0.5, "nonzero_loss_cutoff": None, **kwargs}
    probs = np.asarray(triplet.negative_probabilities(
        "distance_weighted", jnp.asarray(anchors, jnp.float32), jnp.asarray(songs, jnp.float32),
        jnp.asarray(valid), **kwargs))
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    s = songs / np.linalg.norm(songs, axis=1, keepdims=True)
    d = np.sqrt(np.maximum(2 - 2 * np.clip(a @ s.T, -1, 1), 0))
    dc = np.maximum(d, full["cutoff"])
    n = full.get("dim", DIM)
    log_w = -(n - 2) * np.log(dc) - (n - 3) / 2 * np.log(1 - dc**2 / 4)
    limit = full["nonzero_loss_cutoff"]
    keep = valid if limit is None else valid & (d < np.reshape(np.asarray(limit), (-1, 1)))
    w = np.where(keep, np.exp(log_w - log_w.max()), 0.0)
    total = w.sum(1, keepdims=True)
    w = np.where((total == 0) & valid, 1.0, w)
    total = w.sum(1, keepdims=True)
    expected = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    np.testing.assert_allclose(probs, expected, rtol=2e-4, atol=1e-6)
  with pytest.raises(ValueError, match="nonzero_loss_cutoff must exceed"):
    triplet.sample_negatives(jax.random.key(0), "distance_weighted", jnp.asarray(anchors),
                             jnp.asarray(songs), jnp.asarray(valid), cutoff=1.5,
                             nonzero_loss_cutoff=1.4)
  with pytest.raises(ValueError, match=r"one distance per anchor, shape \(4,\)"):
    triplet.sample_negatives(jax.random.key(0), "distance_weighted", jnp.asarray(anchors),
                             jnp.asarray(songs), jnp.asarray(valid),
                             nonzero_loss_cutoff=jnp.ones(3))
  with pytest.raises(ValueError, match="unknown method"):
    triplet.sample_negatives(jax.random.key(0), "hard", jnp.asarray(anchors), jnp.asarray(songs),
                             jnp.asarray(valid))
  with pytest.raises(ValueError, match="valid_mask must be"):
    triplet.sample_negatives(jax.random.key(0), "random", jnp.asarray(anchors), jnp.asarray(songs),
                             jnp.asarray(valid[:, :3]))


# ---------------------------------------------------------------------------------------------
# Everything inside one jitted step.


@pytest.mark.parametrize("negatives", triplet.NEGATIVE_METHODS)
def test_jitted_triplet_step_samples_and_differentiates(negatives):
  labels = _skewed_labels()
  ann = triplet.annotations_from_multihot(labels)
  rng = np.random.default_rng(4)
  params = {"tags": jnp.asarray(rng.normal(size=(len(TAG_COUNTS), 8)), jnp.float32),
            "songs": jnp.asarray(rng.normal(size=(NUM_SONGS, 8)), jnp.float32)}
  traces = []

  @jax.jit
  def step(params, ann, key):
    traces.append(1)
    k_anchor, k_neg = jax.random.split(key)
    anchor_tag, positive_song = triplet.sample_anchors(k_anchor, "balanced", ann, 16)
    valid = triplet.negative_mask_from_annotations(ann, anchor_tag, positive_song)

    def loss_fn(p):
      a, s = p["tags"][anchor_tag], p["songs"][positive_song]
      neg, has_neg = triplet.sample_negatives(k_neg, negatives, a, s, valid)
      return triplet_objective.triplet_loss(a, s, s[neg], margin=0.4, mask=has_neg), (neg, valid)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, grads, aux, anchor_tag, positive_song

  for seed in range(3):
    loss, grads, (neg, valid), anchor_tag, positive_song = step(params, ann, jax.random.key(seed))
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    neg, valid = np.asarray(neg), np.asarray(valid)
    has = valid.any(1)
    assert valid[np.arange(16), neg][has].all()
    assert not labels[np.asarray(positive_song)[neg[has]], np.asarray(anchor_tag)[has]].any()
  assert len(traces) == 1                              # no recompilation across steps


@pytest.mark.parametrize("method", triplet.ANCHOR_METHODS)
def test_host_anchors_follow_the_device_sampler(method):
  """`sample_anchors_host` (numpy, for step-indexed host batches) draws what `sample_anchors`
  draws: the same tag distribution and, given the tag, the same song distribution."""
  labels = _skewed_labels()
  ann = triplet.annotations_from_multihot(labels)
  dev_tags, dev_songs = _draw_anchors(method, labels, seed=3)
  host_tags, host_songs = triplet.sample_anchors_host(np.random.default_rng(3), method, ann,
                                                      NUM_DRAWS)
  assert host_tags.dtype == host_songs.dtype == np.int32
  assert labels[host_songs, host_tags].all()
  tag_counts = np.stack([np.bincount(t, minlength=len(TAG_COUNTS))[:6]
                         for t in (dev_tags, host_tags)])
  assert stats.chi2_contingency(tag_counts).pvalue > P_MIN
  # Songs given tag 0 (the frequent one): same distribution over its songs.
  song_counts = np.stack([np.bincount(s[t == 0], minlength=NUM_SONGS)[labels[:, 0]]
                          for t, s in ((dev_tags, dev_songs), (host_tags, host_songs))])
  assert stats.chi2_contingency(song_counts + 1).pvalue > P_MIN
  # A pure function of the generator's seed.
  again = triplet.sample_anchors_host(np.random.default_rng(3), method, ann, NUM_DRAWS)
  np.testing.assert_array_equal(again[0], host_tags)
  np.testing.assert_array_equal(again[1], host_songs)



# ---------------------------------------------------------------------------------------------
# Wu et al.'s weights at the embedding size the configs use (configs/won.py: model.embed_dim 256;
# the authors' batch of 168, so 167 candidates per anchor), where q(d) peaks sharply at sqrt(2).

WU_DIM = 256
WU_BATCH = 168
MARGIN = 0.4


def _init_like_batch(seed=0):
  """Anchor and song embeddings as at initialisation: independent directions in R^256, so the
  cosines are about N(0, 1 / 256); song i is anchor i's positive, every other song a negative."""
  rng = np.random.default_rng(seed)
  anchors = rng.normal(size=(WU_BATCH, WU_DIM))
  songs = rng.normal(size=(WU_BATCH, WU_DIM))
  return anchors, songs, ~np.eye(WU_BATCH, dtype=bool)


def _at_cosines(rng, cos):
  """[K] cosines -> [K, WU_DIM] unit vectors at those cosines from e0 (random directions else)."""
  u = rng.normal(size=(len(cos), WU_DIM - 1))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  return np.concatenate([cos[:, None], np.sqrt(1 - cos[:, None]**2) * u], axis=1)


def _spread_rows(seed, mean, std, cos_positive=0.5, rows=64):
  """Trained-like rows: anchor e0, its positive at `cos_positive`, WU_BATCH - 1 negatives with
  cosines ~ N(mean, std) (clipped to +-0.95). Returns anchor [rows, 1, n], positive [rows, 1, n],
  negatives [rows, M, n] and their cosines [rows, M]."""
  rng = np.random.default_rng(seed)
  m = WU_BATCH - 1
  cos = np.clip(rng.normal(mean, std, size=(rows, m)), -0.95, 0.95)
  anchor = np.zeros((rows, 1, WU_DIM))
  anchor[:, 0, 0] = 1.0
  positive = np.stack([_at_cosines(rng, np.array([cos_positive])) for _ in range(rows)])
  negatives = np.stack([_at_cosines(rng, c) for c in cos])
  return anchor, positive, negatives, cos


def _row_log_weights(method, anchor, positive, negatives, cut):
  """Per row (vmap): the sampler's log-weights over the row's negatives, [rows, M]; `cut` is
  "zero_hinge" (the cosine triplet loss's per-anchor cut, as musemb.systems.won passes), or None."""
  def one(a, p, n):
    limit = triplet.zero_hinge_distance(a, p, MARGIN) if cut == "zero_hinge" else None
    return triplet.negative_log_weights(method, a, n, jnp.ones((1, n.shape[0]), bool),
                                        nonzero_loss_cutoff=limit)[0]
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return np.asarray(jax.jit(jax.vmap(one))(f32(anchor), f32(positive), f32(negatives)),
                    np.float64)


def _normalised(log_w):
  p = np.exp(log_w - log_w.max(axis=-1, keepdims=True))
  return p / p.sum(axis=-1, keepdims=True)


def _np_cosines(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return np.clip(a @ b.T, -1, 1)


def test_distance_weighted_at_initialisation_keeps_the_negatives_drawable():
  """Wu et al.'s 1.4 cut-off belongs to their margin loss (zero beyond beta + alpha = 1.2 + 0.2);
  at initialisation the distances sit at sqrt(2) = 1.414 > 1.4, so that cut-off dropped about
  two thirds of the negatives. Under the cosine triplet loss they all have a non-zero hinge."""
  anchors, songs, valid = _init_like_batch()
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  probs = np.asarray(triplet.negative_probabilities(
      "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid)))
  drawable = (probs > 0)[valid].mean()
  assert drawable > 0.99, f"only {drawable:.1%} of the valid negatives can be drawn at init"
  # The cut derived from the loss (per anchor, from its positive) keeps them too: at init
  # cos(a, p) ~ 0, so only negatives below cos -0.4 (none here) have a zero hinge.
  limit = triplet.zero_hinge_distance(f32(anchors), f32(songs), MARGIN)
  probs = np.asarray(triplet.negative_probabilities(
      "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid),
      nonzero_loss_cutoff=limit))
  assert (probs > 0)[valid].mean() > 0.99
  # Wu et al.'s own 1.4, still available, is what dropped them.
  probs = np.asarray(triplet.negative_probabilities(
      "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid), nonzero_loss_cutoff=1.4))
  assert (probs > 0)[valid].mean() < 0.5


def test_zero_hinge_distance_is_where_the_triplet_hinge_vanishes():
  rng = np.random.default_rng(1)
  anchors, positives, negatives = (rng.normal(size=(32, 6)) for _ in range(3))
  limit = np.asarray(triplet.zero_hinge_distance(jnp.asarray(anchors, jnp.float32),
                                                 jnp.asarray(positives, jnp.float32), MARGIN))
  d = np.sqrt(2 - 2 * np.diagonal(_np_cosines(anchors, negatives)))
  hinge = np.asarray(triplet_objective.triplet_losses(
      jnp.asarray(anchors), jnp.asarray(positives), jnp.asarray(negatives), MARGIN))
  clear = np.abs(d - limit) > 1e-4
  assert clear.sum() > 28 and (d < limit).any() and (d >= limit).any()
  np.testing.assert_array_equal((hinge > 0)[clear], (d < limit)[clear])
  with pytest.raises(ValueError, match="margin must be a number >= 0"):
    triplet.zero_hinge_distance(jnp.asarray(anchors), jnp.asarray(positives), -0.1)
  with pytest.raises(ValueError, match="of one shape"):
    triplet.zero_hinge_distance(jnp.asarray(anchors), jnp.asarray(positives[:3]), MARGIN)


def test_distance_weighted_mass_at_the_embedding_size():
  """At n = 256 the weights q(d)^-1 ~ exp(n cos^2 / 2) are steep in cos: even at initialisation
  a few negatives carry most of the mass, and once the cosines spread the nearest negative takes
  nearly all of it (hardest-negative mining). The authors' (cos + 1) / 2 stays close to uniform."""
  anchors, songs, valid = _init_like_batch()
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  limit = triplet.zero_hinge_distance(f32(anchors), f32(songs), MARGIN)
  log_w = np.asarray(triplet.negative_log_weights(
      "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid),
      nonzero_loss_cutoff=limit), np.float64)
  p = _normalised(log_w)
  effective = 1 / (p**2).sum(axis=1)               # the number of equally weighted negatives
  top = p.max(axis=1)
  # At init: uneven already (about 25 effective negatives of 167), but no single negative rules.
  assert 10 < np.median(effective) < 60, np.median(effective)
  assert np.median(top) < 0.3, np.median(top)
  # A wrong dimension (n = 5, the small tests' size) would leave the draw nearly uniform.
  p5 = _normalised(np.asarray(triplet.negative_log_weights(
      "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid), dim=5,
      nonzero_loss_cutoff=limit), np.float64))
  assert np.median(1 / (p5**2).sum(axis=1)) > 160

  # Spread: positive at cos 0.5, negatives' cosines ~ N(0.1, 0.2).
  anchor, positive, negatives, cos = _spread_rows(3, 0.1, 0.2)
  nearest = cos.argmax(axis=1)
  rows = np.arange(len(cos))
  p = _normalised(_row_log_weights("distance_weighted", anchor, positive, negatives, "zero_hinge"))
  assert np.median(p[rows, nearest]) > 0.99, np.median(p[rows, nearest])
  assert np.mean(p[rows, nearest] > 0.5) > 0.9
  # Cosines spread by 0.1: the nearest already takes most of the mass.
  anchor1, positive1, negatives1, cos1 = _spread_rows(4, 0.1, 0.1)
  p1 = _normalised(_row_log_weights("distance_weighted", anchor1, positive1, negatives1,
                                    "zero_hinge"))
  assert np.median(p1[rows, cos1.argmax(axis=1)]) > 0.8
  # The authors' weighting on the same spread rows: the nearest gets under twice the uniform 1/167.
  p_authors = _normalised(_row_log_weights("cosine", anchor, positive, negatives, None))
  assert (p_authors[rows, nearest] < 2 / cos.shape[1]).all()
  assert np.median(1 / (p_authors**2).sum(axis=1)) > 150


def test_distance_weighted_needs_the_zero_hinge_cut_once_spread():
  """Without a cut, q^-1 is nearly symmetric in cos: an anti-similar negative (zero hinge) weighs
  as much as a hard one, and in about half the rows it is the one drawn. The per-anchor cut
  leaves only negatives whose hinge is non-zero."""
  anchor, positive, negatives, cos = _spread_rows(5, 0.0, 0.3)
  cos_p = np.array([_np_cosines(a, p)[0, 0] for a, p in zip(anchor, positive)])
  hinge = MARGIN - cos_p[:, None] + cos                # [rows, M]
  rows = np.arange(len(cos))
  uncut = _row_log_weights("distance_weighted", anchor, positive, negatives, None)
  assert np.mean(hinge[rows, uncut.argmax(axis=1)] <= 0) > 0.25
  cut = _row_log_weights("distance_weighted", anchor, positive, negatives, "zero_hinge")
  drawable = np.isfinite(cut)
  clear = np.abs(hinge) > 1e-4
  np.testing.assert_array_equal(drawable[clear], (hinge > 0)[clear])
  assert (hinge[rows, cut.argmax(axis=1)] > 0).all()
  # The top weight is the nearest negative's, shared by any other closer than the cap d = 0.5
  # (cos 0.875).
  top_cos = cos[rows, cut.argmax(axis=1)]
  assert (top_cos >= np.minimum(cos.max(axis=1), 0.875) - 1e-6).all()


def test_distance_weighted_draws_match_the_weights_at_the_embedding_size():
  """Draws from sample_negatives at n = 256 (8 anchors of an init-like batch of 168, with the
  zero-hinge cut) against the weights computed here in float64 from Wu et al.'s q(d)."""
  anchors, songs, valid = _init_like_batch(seed=6)
  anchors, valid = anchors[:8], valid[:8]
  limit = np.sqrt(2 - 2 * np.diagonal(_np_cosines(anchors, songs[:8])) + 2 * MARGIN)
  d = np.sqrt(np.maximum(2 - 2 * _np_cosines(anchors, songs), 0))
  dc = np.maximum(d, 0.5)
  log_w = -(WU_DIM - 2) * np.log(dc) - (WU_DIM - 3) / 2 * np.log(1 - dc**2 / 4)
  keep = valid & (d < limit[:, None])
  w = np.where(keep, np.exp(log_w - np.where(keep, log_w, -np.inf).max(1, keepdims=True)), 0.0)
  target = w / w.sum(1, keepdims=True)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  draw = jax.jit(jax.vmap(lambda key: triplet.sample_negatives(
      key, "distance_weighted", f32(anchors), f32(songs), jnp.asarray(valid),
      nonzero_loss_cutoff=triplet.zero_hinge_distance(f32(anchors), f32(songs[:8]), MARGIN))))
  draws, has_negative = draw(jax.random.split(jax.random.key(7), NUM_DRAWS))
  draws = np.asarray(draws)
  assert np.asarray(has_negative).all()
  for i in range(len(anchors)):
    counts = np.bincount(draws[:, i], minlength=WU_BATCH)
    assert counts[target[i] == 0].sum() == 0
    expected = target[i] * NUM_DRAWS
    # Pool the negatives expected fewer than 5 times into one bin (chi-square's validity).
    big = expected >= 5
    assert big.sum() > 10
    if expected[~big].sum() > 0:
      observed = np.append(counts[big], counts[~big].sum())
      expected = np.append(expected[big], expected[~big].sum())
    else:
      observed, expected = counts[big], expected[big]
    assert stats.chisquare(observed, expected).pvalue > P_MIN, (i, observed, expected)
