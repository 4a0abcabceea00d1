"""Tests for musemb/samplers/propagation.py: the walk against its closed form, eq. (4) by hand."""

from __future__ import annotations

import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from musemb.samplers import propagation

# A hand-built world of 8 songs. Song 0 opens p0; song 1 is in p0 and twice in p1 (the walk starts
# at its first position); p0 has a gap next to song 2; song 3 closes p0 and is alone in p3; song 6
# (closing p1) is a validation song, outside the source mask; song 7 is in no playlist.
PLAYLISTS = ([0, 1, -1, 2, 3], [4, 1, 5, 1, 6], [2, 4], [3])
NUM_SONGS = 8
NON_SOURCE = 6
SOURCE = np.arange(NUM_SONGS) != NON_SOURCE
WALKED = (0, 1, 2, 3, 4, 5, 6)
DRAWS = 200_000

SMALL = 20_000

_sample = jax.jit(propagation.sample)
_walk_lengths = jax.jit(propagation.walk_lengths)
_support_weights = jax.jit(propagation.support_weights)


def _grid(tables):
  """support_weights for every (song, partner) in [-1, 8)^2 (one compiled shape): grid[s + 1,
  p + 1], row and column 0 for id -1."""
  ids = jnp.arange(-1, NUM_SONGS)
  weights = _support_weights(tables, jnp.repeat(ids, NUM_SONGS + 1), jnp.tile(ids, NUM_SONGS + 1))
  return np.asarray(weights).reshape(NUM_SONGS + 1, NUM_SONGS + 1)


def _tables(r):
  return propagation.build_tables(PLAYLISTS, NUM_SONGS, SOURCE, r)


def _closed_form(song, r):
  """The module docstring's P((playlist, position) where the walk stops), in exact fractions."""
  r = Fraction(r)
  holding = [p for p, playlist in enumerate(PLAYLISTS) if song in playlist]
  out = {}
  for p in holding:
    playlist = PLAYLISTS[p]
    i = playlist.index(song)

    def q(k, room):
      if k < room:
        return (1 - r) * r**k
      return r**room if k == room else Fraction(0)

    for direction, room in ((1, len(playlist) - 1 - i), (-1, i)):
      for k in range(room + 1):
        key = (p, i + direction * k)
        out[key] = out.get(key, Fraction(0)) + Fraction(1, 2 * len(holding)) * q(k, room)
  return out


def _pseudocode_walk(song, r, rng):
  """The published pseudocode, one coin at a time, with the two fixes: stop on choosing s', and a
  walk that reaches an end stops on the end song."""
  holding = [p for p, playlist in enumerate(PLAYLISTS) if song in playlist]
  p = holding[rng.integers(len(holding))]
  i = PLAYLISTS[p].index(song)
  step = 1 if rng.random() < 0.5 else -1
  while 0 <= i + step < len(PLAYLISTS[p]) and rng.random() < r:
    i += step
  return p, i


@pytest.fixture(scope="module")
def sample_fn():
  traces = []

  def run(tables, songs, rng):
    traces.append(1)
    return propagation.sample(tables, songs, rng)

  return jax.jit(run), traces


def _draw(sample_fn, r, seed=0):
  songs = np.repeat(np.asarray(WALKED + (7,), np.int32), DRAWS)
  out = sample_fn[0](_tables(r), jnp.asarray(songs), jax.random.key(seed))
  return songs, jax.tree.map(np.asarray, out)


def test_hand_values_of_the_closed_form():
  # Song 0 opens p0 (room 4 forward, 0 backward) at r = 1/2: backward stays put, forward walks.
  got = _closed_form(0, Fraction(1, 2))
  assert got == {(0, 0): Fraction(3, 4), (0, 1): Fraction(1, 8), (0, 2): Fraction(1, 16),
                 (0, 3): Fraction(1, 32), (0, 4): Fraction(1, 32)}
  # Song 3 alone in p3 always stays there; in p0 it closes the playlist.
  got = _closed_form(3, Fraction(1, 2))
  assert got[(3, 0)] == Fraction(1, 2) and got[(0, 4)] == Fraction(1, 4) + Fraction(1, 8)
  for song in WALKED:
    for r in (0, Fraction(1, 2), Fraction(19, 20), 1):
      assert sum(_closed_form(song, r).values()) == 1


def test_closed_form_is_the_pseudocodes_walk():
  rng = np.random.default_rng(0)
  for song, r in ((1, 0.5), (5, 0.9), (0, 0.7)):
    expected = _closed_form(song, r)
    keys = sorted(expected)
    walks = [_pseudocode_walk(song, r, rng) for _ in range(20_000)]
    counts = np.array([sum(w == k for w in walks) for k in keys])
    assert sum(counts) == len(walks)
    p = np.array([float(expected[k]) for k in keys])
    assert stats.chisquare(counts, p * len(walks)).pvalue > 1e-4, (song, r, counts, p)


@pytest.mark.parametrize("r", [0.0, 0.5, 0.95, 1.0])
def test_walk_follows_the_closed_form(sample_fn, r):
  songs, out = _draw(sample_fn, r, seed=int(r * 100))
  for song in WALKED:
    rows = songs == song
    expected = _closed_form(song, r)
    keys = sorted(expected)
    observed = {}
    for key, n in zip(*np.unique(np.stack([out.playlist[rows], out.position[rows]], 1), axis=0,
                                 return_counts=True)):
      observed[tuple(int(v) for v in key)] = int(n)
    assert set(observed) <= {k for k in keys if expected[k] > 0}, (song, r, observed)
    p = np.array([float(expected[k]) for k in keys])
    counts = np.array([observed.get(k, 0) for k in keys])
    support = p > 0
    if support.sum() == 1:
      assert counts[support][0] == DRAWS
    else:
      assert stats.chisquare(counts[support], p[support] * DRAWS).pvalue > 1e-4, (song, r)
    # partner and distance are what the stopping position says.
    playlist, position = out.playlist[rows], out.position[rows]
    landed = np.array([PLAYLISTS[a][b] for a, b in zip(playlist[:2000], position[:2000])])
    start = np.array([PLAYLISTS[a].index(song) for a in playlist[:2000]])
    want = np.where((landed >= 0) & SOURCE[np.maximum(landed, 0)], landed, -1)
    np.testing.assert_array_equal(out.partner[rows][:2000], want)
    np.testing.assert_array_equal(out.distance[rows][:2000], np.abs(position[:2000] - start))
  # A song in no playlist gets no walk at all.
  rows = songs == 7
  assert np.all(out.partner[rows] == -1) and np.all(out.distance[rows] == -1)
  assert np.all(out.playlist[rows] == -1) and np.all(out.weight[rows] == 0)
  # One compilation for all r (r is a leaf of the tables, the shapes do not change).
  assert len(sample_fn[1]) == 1


def test_extreme_ranges():
  songs = jnp.asarray([0, 1, 3, 5, 6], jnp.int32)
  out = _sample(_tables(0.0), jnp.tile(songs, SMALL // 5), jax.random.key(1))
  # r = 0: every walk stays on s, whose own tags are its "propagated" ones (none for song 6).
  np.testing.assert_array_equal(np.asarray(out.partner).reshape(-1, 5),
                                np.tile([0, 1, 3, 5, -1], (SMALL // 5, 1)))
  assert np.all(np.asarray(out.distance) == 0)
  np.testing.assert_allclose(np.asarray(out.weight).reshape(-1, 5)[0], [1, 1, 1, 1, 0])
  # r = 1: song 5 (middle of p1) always runs to an end: song 4 or song 6 (non-source: -1).
  out = _sample(_tables(1.0), jnp.full((SMALL,), 5, jnp.int32), jax.random.key(2))
  partner = np.asarray(out.partner)
  assert set(np.unique(partner)) == {-1, 4} and np.all(np.asarray(out.distance) == 2)
  assert abs((partner == 4).mean() - 0.5) < 5 * np.sqrt(0.25 / partner.size)


def test_walk_lengths_are_clipped_geometric():
  # P(min(K, m) = k) = (1 - r) r^k below m, r^m at m.
  r, room, n = 0.6, 3, 200_000
  steps = np.asarray(_walk_lengths(jax.random.key(3), jnp.float32(r), jnp.full((n,), room)))
  expected = np.array([(1 - r) * r**k for k in range(room)] + [r**room])
  assert stats.chisquare(np.bincount(steps, minlength=room + 1), expected * n).pvalue > 1e-4
  assert np.all(np.asarray(_walk_lengths(jax.random.key(4), jnp.float32(0.9),
                                         jnp.zeros((n,), jnp.int32))) == 0)


def test_support_weights_match_eq4_by_hand():
  tables = _tables(0.5)
  full = _grid(tables)
  grid = full[1:, 1:]
  # Song 0, p0 from position 0: r^d = 1, 1/2, (gap), 1/8, 1/16; Z = 27/16.
  np.testing.assert_allclose(grid[0], [16 / 27, 8 / 27, 2 / 27, 1 / 27, 0, 0, 0, 0], rtol=1e-6)
  # Song 1: p0 from position 1 (Z = 15/8) and p1 from its first position 1 (Z = 19/8; its second
  # position, d = 2, adds 1/4 to its own weight), averaged over the two playlists.
  np.testing.assert_allclose(
      grid[1], [2 / 15, (8 / 15 + 10 / 19) / 2, 1 / 15, 1 / 30, 2 / 19, 2 / 19, 1 / 38, 0],
      rtol=1e-6)
  # Song 3: p0 from its end (Z = 27/16) and p3 alone.
  np.testing.assert_allclose(grid[3], [1 / 54, 1 / 27, 4 / 27, 43 / 54, 0, 0, 0, 0], rtol=1e-6)
  # Song 5: p1 from position 2: 1/4, 1/2, 1, 1/2, 1/4 over songs 4, 1, 5, 1, 6; Z = 5/2.
  np.testing.assert_allclose(grid[5], [0, 0.4, 0, 0, 0.1, 0.4, 0.1, 0], rtol=1e-6)
  # Song 6 (non-source) still has weights: p1 from its end, Z = 31/16.
  np.testing.assert_allclose(grid[6], [0, 10 / 31, 0, 0, 1 / 31, 4 / 31, 16 / 31, 0], rtol=1e-6)
  assert np.all(grid[7] == 0)
  np.testing.assert_allclose(grid[:7].sum(axis=1), 1, rtol=1e-6)
  # r = 1: uniform over the song positions of each playlist; r = 0: all on s itself.
  np.testing.assert_allclose(_grid(_tables(1.0))[2, 1:],
                             [1 / 8, 13 / 40, 1 / 8, 1 / 8, 1 / 10, 1 / 10, 1 / 10, 0], rtol=1e-6)
  np.testing.assert_allclose(_grid(_tables(0.0))[1:, 1:],
                             np.diag((np.arange(NUM_SONGS) != 7).astype(float)))
  # No partner (-1) and padding songs (-1) weigh nothing.
  assert np.all(full[0] == 0) and np.all(full[:, 0] == 0)
  # sample's weight is this lookup.
  songs = np.repeat(np.arange(NUM_SONGS), SMALL // NUM_SONGS)
  out = _sample(tables, jnp.asarray(songs), jax.random.key(5))
  want = np.where(np.asarray(out.partner) >= 0, grid[songs, np.maximum(out.partner, 0)], 0)
  np.testing.assert_allclose(np.asarray(out.weight), want, rtol=1e-6)


def test_no_tag_of_a_non_source_song_becomes_a_target(sample_fn):
  # Only song 6 carries tag 0; every other song but 0 carries its own tag id (6 carries both).
  song_tags = np.eye(NUM_SONGS, dtype=bool)
  song_tags[:, 0] = False
  song_tags[NON_SOURCE, 0] = True
  for r in (0.5, 0.95):
    songs, out = _draw(sample_fn, r, seed=11)
    targets, has_partner = propagation.propagated_tags(jnp.asarray(song_tags), out.partner)
    targets, has_partner = np.asarray(targets), np.asarray(has_partner)
    assert not targets[:, 0].any() and not targets[:, NON_SOURCE].any()
    assert np.all(SOURCE[out.partner[has_partner]]) and np.all(out.partner[~has_partner] == -1)
    assert not targets[~has_partner].any()
    # The walk does reach song 6 often (so the check above is not vacuous): from 5, 1 and 6.
    reach = (out.playlist == 1) & (out.position == 4)
    assert reach.sum() > 10_000


def test_vmaps_over_rngs():
  # (Compiling once across calls and tables of one shape: test_walk_follows_the_closed_form.)
  tables = _tables(0.4)
  songs = jnp.asarray(np.resize([0, 1, 2, 5, 7, 3, -1], SMALL), jnp.int32)
  rngs = jax.random.split(jax.random.key(2), 2)
  batched = jax.jit(jax.vmap(propagation.sample, in_axes=(None, None, 0)))(tables, songs, rngs)
  for m in range(2):
    one = _sample(tables, songs, rngs[m])
    for a, b in zip(batched, one):
      np.testing.assert_array_equal(np.asarray(a)[m], np.asarray(b))


def test_build_rejects_bad_inputs():
  with pytest.raises(ValueError, match="r \\(the search range"):
    propagation.build_tables(PLAYLISTS, NUM_SONGS, SOURCE, 1.5)
  with pytest.raises(ValueError, match="source_mask"):
    propagation.build_tables(PLAYLISTS, NUM_SONGS, SOURCE[:-1], 0.5)
  with pytest.raises(ValueError, match="\\[0, 8\\) or be -1"):
    propagation.build_tables([[0, 8]], NUM_SONGS, SOURCE, 0.5)
  with pytest.raises(ValueError, match="every playlist entry is a gap"):
    propagation.build_tables([[-1, -1]], NUM_SONGS, SOURCE, 0.5)


def test_build_time_at_aotm_size():
  """Prints the build time for 80k playlists of mean length 6 over 70k songs (AotM-2011 as used in
  the paper); measured, not asserted."""
  rng = np.random.default_rng(0)
  num_songs = 70_000
  lengths = 1 + rng.poisson(5, 80_000)
  popularity = 1 / (np.arange(num_songs) + 10.0)
  flat = rng.choice(num_songs, size=lengths.sum(), p=popularity / popularity.sum())
  flat[rng.random(flat.size) < 0.05] = -1
  sequences = [p.tolist() for p in np.split(flat, np.cumsum(lengths)[:-1])]
  source = rng.random(num_songs) < 0.4
  start = time.perf_counter()
  tables = jax.block_until_ready(propagation.build_tables(sequences, num_songs, source, 0.4))
  seconds = time.perf_counter() - start
  print(f"\nbuild_tables: {len(sequences)} playlists, {flat.size} entries, {num_songs} songs: "
        f"{seconds:.2f} s; {tables.num_occurrences} occurrences, {tables.num_pairs} pairs")
  out = _sample(tables, jnp.arange(SMALL, dtype=jnp.int32), jax.random.key(0))
  partner = np.asarray(out.partner)
  assert np.all(source[partner[partner >= 0]])


# ----------------------------------------------------------------------------- a range per group


def test_grouped_targets_by_hand():
  """Each tag takes its group's partner, weight and mask (hand-made walks of a batch of 3)."""
  song_tags = jnp.asarray(np.eye(4, 5, dtype=np.float32) + np.eye(4, 5, 1, dtype=np.float32))
  walk = lambda partner, weight: propagation.PropagationSample(
      partner=jnp.asarray(partner, jnp.int32), distance=jnp.zeros(3, jnp.int32),
      weight=jnp.asarray(weight, jnp.float32), playlist=jnp.zeros(3, jnp.int32),
      position=jnp.zeros(3, jnp.int32))
  first, second = walk([2, -1, 0], [0.5, 0.0, 0.25]), walk([3, 1, -1], [0.2, 0.7, 0.0])
  tag_group = jnp.asarray([0, 1, 1, 0, 1])
  targets, weight, has = jax.jit(propagation.grouped_targets)(song_tags, [first, second],
                                                              tag_group)
  rows = np.asarray(song_tags)
  use = np.array([0, 1, 1, 0, 1])
  partners = np.array([[2, -1, 0], [3, 1, -1]])
  weights = np.array([[0.5, 0.0, 0.25], [0.2, 0.7, 0.0]])
  for b in range(3):
    for t in range(5):
      p = partners[use[t], b]
      assert bool(has[b, t]) == (p >= 0)
      assert float(targets[b, t]) == (rows[p, t] if p >= 0 else 0.0)
      assert float(weight[b, t]) == pytest.approx(weights[use[t], b] if p >= 0 else 0.0)
  # One group is `propagated_tags` with the walk's weight on every tag.
  targets, weight, has = propagation.grouped_targets(song_tags, [first], jnp.zeros(5, jnp.int32))
  want, want_has = propagation.propagated_tags(song_tags, first.partner)
  np.testing.assert_array_equal(np.asarray(targets), np.asarray(want))
  np.testing.assert_array_equal(np.asarray(has), np.repeat(np.asarray(want_has)[:, None], 5, 1))
  np.testing.assert_allclose(np.asarray(weight),
                             np.where(np.asarray(has), np.asarray(first.weight)[:, None], 0.0))
  with pytest.raises(ValueError, match="at least one"):
    propagation.grouped_targets(song_tags, [], tag_group)


def test_grouped_walks_follow_each_groups_closed_form():
  """Two tag groups at r = 1/2 and r = 1 from song 0 (it opens p0 = [0, 1, gap, 2, 3]): with one
  tag per song, a group's target row names its partner, whose law is the closed form at the
  group's r; the two groups' walks are independent (keys folded as the system folds them)."""
  song_tags = jnp.asarray(np.eye(NUM_SONGS, dtype=np.float32))
  groups = (_tables(0.5), _tables(1.0))
  draws = SMALL
  songs = jnp.zeros(draws, jnp.int32)
  key = jax.random.key(5)

  @jax.jit
  def run(key):
    walks = [propagation.sample(groups[0], songs, key),
             propagation.sample(groups[1], songs, jax.random.fold_in(key, 1))]
    # Tags 0-3 follow group 0, tags 4-7 group 1: a partner's one-hot tag shows in one half only.
    tag_group = jnp.asarray([0] * 4 + [1] * 4)
    both = propagation.grouped_targets(jnp.concatenate([song_tags[:, :4], song_tags[:, :4]], 1),
                                       walks, tag_group)
    return both, walks

  (targets, weight, has), walks = jax.tree.map(np.asarray, run(key))
  found = [targets[:, :4].argmax(1), targets[:, 4:].argmax(1)]
  for g, r in enumerate((Fraction(1, 2), Fraction(1))):
    expected = {}
    for (p, i), prob in _closed_form(0, r).items():
      song = PLAYLISTS[p][i]                     # -1 at the gap: no partner
      expected[song] = expected.get(song, Fraction(0)) + prob
    observed = np.where(has[:, 4 * g], found[g], -1)
    np.testing.assert_array_equal(observed, walks[g].partner)
    keys = sorted(expected)
    counts = np.array([(observed == k).sum() for k in keys])
    p = np.array([float(expected[k]) for k in keys])
    assert stats.chisquare(counts[p > 0], p[p > 0] * draws).pvalue > 1e-4, (r, counts, p)
    # Each group's weight is eq. (4) at its own r.
    np.testing.assert_allclose(weight[:, 4 * g], np.where(
        has[:, 4 * g], np.asarray(_support_weights(groups[g], songs, walks[g].partner)), 0.0))
  # At r = 1 from song 0: backward stays on 0, forward reaches the end song 3, 1/2 each.
  assert set(np.unique(walks[1].partner)) == {0, 3}
  # Independence: the joint law of the two partners is the product of the marginals.
  table = np.array([[np.sum((walks[0].partner == a) & (walks[1].partner == b)) for b in (0, 3)]
                    for a in (-1, 0, 1, 2, 3)])
  assert stats.chi2_contingency(table[table.sum(1) > 0]).pvalue > 1e-4
