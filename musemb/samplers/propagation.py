"""Playlist-based tag propagation: the random walk that picks a partner song, and eq. (4)'s weight.

Follows Lin, Chung & Chen, "Playlist-Based Tag Propagation for Improving Music Auto-Tagging",
section III.B (the pseudocode and eq. (2)) and III.C (eq. (4)). For a training song s the
algorithm picks a playlist holding s, walks from s along it in a random direction, continuing
with probability r (the "search range") at each step, and passes the tags of the song s' it stops
on to s as extra targets (the supportive term of eq. (3), `musemb.objectives.supportive`), weighted
by eq. (4)'s P(s'|s).

The published pseudocode leaves several things open; this module settles them as follows.

* Which occurrence. "Randomly select p~ among the playlists that contain s": uniform over the
  distinct playlists that hold s (n_s of them), which is also eq. (4)'s mean over P~. The for loop
  that follows breaks at the first i with s_i = s, so the walk starts at the first occurrence of s
  in p~; a later occurrence of s is just another position (whose tags are s's own).
* Stopping. The pseudocode never leaves its while loop after choosing s' (read: stop there), and
  its loop condition `0 < i < |p|` lets the walk run off either end. Here a walk that reaches an
  end song stops on it: the end song takes all the mass r^m of walking on past it.
* Landing where there is nothing to pass on. A gap (-1, a playlist entry matched to no song: it
  counts for distance, has no tags) and a song outside `source_mask` (a validation or test song, a
  song without tags: its tags must never reach a training target) give partner -1: that example's
  supportive term is zero (the walk is not resumed, so the distribution below stays the walk's).
  Songs in no playlist (and ids outside [0, num_songs), e.g. padding) get partner -1 too.
* Landing on s itself (d = 0 with probability 1 - r inside a playlist, or a second occurrence of s)
  is kept, as in the pseudocode: partner = s when s is a source song, whose "propagated" tags are
  its own, so the supportive term then repeats the own-tag term with weight P(s|s). Eq. (2) sums
  over every s' of p including s at d = 0 (r^0 = 1), so eq. (4) gives s itself the largest weight.
  A caller that wants only other songs masks `partner != songs`.

The walk in closed form. Number the positions of p from 0 to L - 1 (gaps included), let i be the
first position of s, m+ = L - 1 - i and m- = i the room forward and backward. The number of
continuations K has P(K >= k) = r^k (one coin of probability r per step); a walk in direction
+-1 (1/2 each) stops at i +- min(K, m+-), so with

    q_m(k) = P(min(K, m) = k) = (1 - r) r^k  for 0 <= k < m,   r^m  for k = m,   0 for k > m,

    P(stop at i + k | p) = q_{m+}(k) / 2,   P(stop at i - k | p) = q_{m-}(k) / 2   (k >= 1),
    P(stop at i | p)     = (q_{m+}(0) + q_{m-}(0)) / 2,

which is 1 - r for an interior s, 1 - r/2 for s at one end of a playlist of two or more entries and
1 for a playlist of one. Over playlists, P(partner = s') = (1 / n_s) sum over p in P~ of the mass
of the positions of p that hold s', for s' in `source_mask`; partner = -1 takes the rest. At r = 0
the walk always stays on s; at r = 1 it always runs to the end of its direction.

Eq. (4) as printed. `support_weights` returns

    P(s'|s) = (1 / n_s) sum over p in P~ of P(s'|s, p),
    P(s'|s, p) = sum over positions j of p holding s' of r^|j - i| / Z_p,
    Z_p = sum over the song positions j of p (gaps excluded, every song included) of r^|j - i|,

eq. (2) with d(s', s) = |j - i| from the first occurrence i of s; a song s' at several positions of
p gets the sum of their terms, so that eq. (2) stays a distribution over the songs of p. The paper
calls this "the probability that s' is sampled by our algorithm"; it is not the walk's: far from
the ends both decay like r^d, but eq. (2) gives (1 - r)/(1 + r) r^d on a long playlist where the
walk gives (1 - r) at d = 0 and (1 - r)/2 r^d on each side, and the walk also piles r^m on the end
songs and lands on gaps and non-source songs, which eq. (2) leaves out or keeps in Z_p. Drawing s'
by the walk and weighting by eq. (4), as the paper describes, makes the expected supportive term
sum over s' of P_walk(s'|s) P(s'|s) BCE(s'): near songs are favoured twice.

`build_tables` (host, numpy, vectorised; ~80k playlists build in seconds) precomputes everything as
a pytree of device arrays; `sample` and `support_weights` are pure jittable JAX with static shapes,
batched elementwise over the songs (no loop per example), and vmap over rngs.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class PropagationTables(NamedTuple):
  """What `sample` and `support_weights` need, as device arrays (a pytree; build with
  `build_tables`).

  Attributes:
    r: [] float32, the search range: the probability of walking on one more step.
    playlist_offsets: [num_playlists + 1] int32; playlist p is `flat_songs[playlist_offsets[p]:
      playlist_offsets[p + 1]]`.
    flat_songs: [num_entries] int32, the playlists concatenated; -1 marks a gap.
    song_offsets: [num_songs + 1] int32; the playlists of song s are the occurrences
      `song_offsets[s]:song_offsets[s + 1]` (CSR song -> (playlist, position)).
    occurrence_playlist: [num_occurrences] int32, the playlist of each (song, playlist) pair,
      ascending within a song.
    occurrence_position: [num_occurrences] int32, the index into `flat_songs` of the song's first
      position in that playlist (where the walk starts).
    source_mask: [num_songs] bool, the songs whose tags may be passed on.
    pair_offsets: [num_songs + 1] int32; the songs s' with an eq. (4) weight for s are
      `pair_partner[pair_offsets[s]:pair_offsets[s + 1]]` (CSR song -> partner).
    pair_partner: [num_pairs] int32, ascending within a song (the binary search relies on it).
    pair_weight: [num_pairs] float32, eq. (4)'s P(s'|s); each song's row sums to 1.
  """

  r: jax.Array
  playlist_offsets: jax.Array
  flat_songs: jax.Array
  song_offsets: jax.Array
  occurrence_playlist: jax.Array
  occurrence_position: jax.Array
  source_mask: jax.Array
  pair_offsets: jax.Array
  pair_partner: jax.Array
  pair_weight: jax.Array

  @property
  def num_songs(self) -> int:
    return self.song_offsets.shape[0] - 1

  @property
  def num_playlists(self) -> int:
    return self.playlist_offsets.shape[0] - 1

  @property
  def num_occurrences(self) -> int:
    return self.occurrence_playlist.shape[0]

  @property
  def num_pairs(self) -> int:
    return self.pair_partner.shape[0]


class PropagationSample(NamedTuple):
  """One walk per song of the batch (all [batch] arrays).

  Attributes:
    partner: int32, the song s' whose tags are propagated; -1 where there is none (the walk stopped
      on a gap or a song outside `source_mask`, or the song is in no playlist).
    distance: int32, d(s', s): the steps walked from s's first position (also where partner is -1
      because of a gap or a non-source song); -1 for songs in no playlist.
    weight: float32, eq. (4)'s P(s'|s); 0 where partner is -1.
    playlist: int32, the playlist walked; -1 for songs in no playlist.
    position: int32, where the walk stopped, 0-based within `playlist` (gaps counted); -1 for songs
      in no playlist.
  """

  partner: jax.Array
  distance: jax.Array
  weight: jax.Array
  playlist: jax.Array
  position: jax.Array


def build_tables(
    sequences: Sequence[Sequence[int]],
    num_songs: int,
    source_mask: np.ndarray,
    r: float,
) -> PropagationTables:
  """Builds the walk's index and eq. (4)'s weights from playlists (host side, numpy).

  Loops over playlists only to concatenate them; everything else is vectorised. The pair table
  has about sum over playlists of |p| * (distinct songs of p) entries before merging.

  Args:
    sequences: the playlists, each a sequence of song ids in [0, num_songs) in playlist order, with
      -1 marking a gap (an entry matched to no song). Empty playlists are allowed (never walked).
    num_songs: S, the number of songs (songs in no playlist are allowed: partner -1).
    source_mask: [S] bool, True for the songs whose tags may be propagated (training songs with
      tags). Songs outside it are still walked over, counted in eq. (2)'s normaliser and may be
      batch songs; they are never a partner.
    r: the search range in [0, 1] (0.4 for the paper's 50 tags, 0.2 for 1000 tags).

  Returns:
    A `PropagationTables` of device arrays.
  """
  name = "musemb/samplers/propagation.py build_tables"
  if not isinstance(num_songs, (int, np.integer)) or isinstance(num_songs, bool) or num_songs < 1:
    raise ValueError(f"{name}: num_songs must be an int >= 1; got {num_songs!r}.")
  num_songs = int(num_songs)
  if not isinstance(r, (float, int, np.floating, np.integer)) or not 0.0 <= float(r) <= 1.0:
    raise ValueError(
        f"{name}: r (the search range, the probability of walking on) must be a number in [0, 1]; "
        f"got {r!r}.")
  r = float(r)
  source_mask = np.asarray(source_mask)
  if source_mask.shape != (num_songs,) or source_mask.dtype != bool:
    raise ValueError(
        f"{name}: source_mask must be a bool array [num_songs] = [{num_songs}]; got "
        f"{source_mask.dtype} {source_mask.shape}.")
  lengths = np.fromiter((len(p) for p in sequences), np.int64, count=len(sequences))
  if lengths.size == 0 or lengths.sum() == 0:
    raise ValueError(f"{name}: no playlist entries; pass at least one non-empty playlist.")
  try:
    flat = np.fromiter(itertools.chain.from_iterable(sequences), np.int64, count=lengths.sum())
  except (TypeError, ValueError) as error:
    raise ValueError(
        f"{name}: every playlist must be a flat sequence of integer song ids ({error}).") from None
  if flat.min() < -1 or flat.max() >= num_songs:
    raise ValueError(
        f"{name}: playlist entries must lie in [0, {num_songs}) or be -1 (a gap); got values in "
        f"[{flat.min()}, {flat.max()}].")
  if lengths.sum() >= 2**31:
    raise ValueError(f"{name}: {lengths.sum()} playlist entries do not fit int32 offsets.")
  num_playlists = lengths.size
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  playlist_of = np.repeat(np.arange(num_playlists), lengths)

  # (song, playlist) occurrences: a stable sort by song then playlist keeps flat order within a
  # group, so the first of each group is the song's first position (the pseudocode's for loop).
  at = np.flatnonzero(flat >= 0)
  if at.size == 0:
    raise ValueError(f"{name}: every playlist entry is a gap; there is no song to walk from.")
  key = flat[at] * num_playlists + playlist_of[at]
  order = np.argsort(key, kind="stable")
  sorted_key = key[order]
  first = np.ones(sorted_key.shape, bool)
  first[1:] = sorted_key[1:] != sorted_key[:-1]
  occ_position = at[order][first]
  occ_song = flat[occ_position]
  occ_playlist = playlist_of[occ_position]
  playlists_per_song = np.bincount(occ_song, minlength=num_songs)
  song_offsets = np.concatenate([[0], np.cumsum(playlists_per_song)])

  # Eq. (2) for every occurrence and every song position of its playlist, then eq. (4)'s mean.
  occ_length = lengths[occ_playlist]
  owner = np.repeat(np.arange(occ_position.size), occ_length)
  within = np.arange(owner.size) - np.repeat(np.cumsum(occ_length) - occ_length, occ_length)
  entry = offsets[occ_playlist][owner] + within
  other = flat[entry]
  keep = other >= 0
  owner, entry, other = owner[keep], entry[keep], other[keep]
  mass = np.power(r, np.abs(entry - occ_position[owner]).astype(np.float64))  # 0.0 ** 0 = 1
  normaliser = np.bincount(owner, mass, minlength=occ_position.size)
  song = occ_song[owner]
  mass = mass / normaliser[owner] / playlists_per_song[song]
  key = song * num_songs + other
  order = np.argsort(key)
  key, mass = key[order], mass[order]
  first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
  pair_key, pair_weight = key[first], np.add.reduceat(mass, first)
  pair_song = pair_key // num_songs
  pair_offsets = np.concatenate([[0], np.cumsum(np.bincount(pair_song, minlength=num_songs))])
  if pair_key.size >= 2**31:
    raise ValueError(f"{name}: {pair_key.size} (song, partner) pairs do not fit int32 offsets.")

  return PropagationTables(
      r=jnp.asarray(r, jnp.float32),
      playlist_offsets=jnp.asarray(offsets, jnp.int32),
      flat_songs=jnp.asarray(flat, jnp.int32),
      song_offsets=jnp.asarray(song_offsets, jnp.int32),
      occurrence_playlist=jnp.asarray(occ_playlist, jnp.int32),
      occurrence_position=jnp.asarray(occ_position, jnp.int32),
      source_mask=jnp.asarray(source_mask),
      pair_offsets=jnp.asarray(pair_offsets, jnp.int32),
      pair_partner=jnp.asarray(pair_key % num_songs, jnp.int32),
      pair_weight=jnp.asarray(pair_weight, jnp.float32))


def walk_lengths(rng: jax.Array, r: jax.Array, room: jax.Array) -> jax.Array:
  """min(K, room) for K with P(K >= k) = r^k: the pseudocode's walk, stopped at the playlist's end.

  One uniform draw per walk instead of a loop of coins: with 1 - u uniform on (0, 1],
  floor(log(1 - u) / log r) >= k iff 1 - u <= r^k, which has probability r^k.

  Args:
    rng: a `jax.random.key`.
    r: [] the search range in [0, 1].
    room: [...] int, the steps available before the end (>= 0).

  Returns:
    int32 steps of `room`'s shape, in [0, room].
  """
  room = jnp.asarray(room, jnp.int32)
  log_keep = jnp.log1p(-jax.random.uniform(rng, room.shape, jnp.float32))
  walks_on = r < 1.0
  # r = 0: log r = -inf and the ratio is 0 (a finite log over -inf); r = 1 walks to the end.
  ratio = jnp.where(walks_on, log_keep / jnp.where(walks_on, jnp.log(r), -1.0), jnp.inf)
  steps = jnp.minimum(jnp.floor(jnp.maximum(ratio, 0.0)), room.astype(jnp.float32))
  return steps.astype(jnp.int32)


def sample(tables: PropagationTables, songs: jax.Array, rng: jax.Array) -> PropagationSample:
  """One walk per song: a playlist of the song, a direction, a walk, the song it stops on.

  The draws follow the closed form of the module docstring: the playlist uniform over the song's
  distinct playlists, the walk from its first position there, forward or backward with 1/2 each,
  min(K, room) steps. Jittable; elementwise over `songs`, so it vmaps (e.g. over rngs).

  Args:
    tables: from `build_tables`.
    songs: [batch] int song ids; ids outside [0, num_songs) (padding) and songs in no playlist get
      partner -1.
    rng: a `jax.random.key`.

  Returns:
    A `PropagationSample` of [batch] arrays.
  """
  songs = jnp.asarray(songs, jnp.int32)
  in_range = (songs >= 0) & (songs < tables.num_songs)
  song = jnp.where(in_range, songs, 0)
  start = tables.song_offsets[song]
  count = jnp.where(in_range, tables.song_offsets[song + 1] - start, 0)
  walked = count > 0
  rng_playlist, rng_direction, rng_steps = jax.random.split(rng, 3)
  pick = jax.random.randint(rng_playlist, songs.shape, 0, jnp.maximum(count, 1), jnp.int32)
  occurrence = jnp.clip(start + pick, 0, tables.num_occurrences - 1)
  playlist = tables.occurrence_playlist[occurrence]
  origin = tables.occurrence_position[occurrence]
  first = tables.playlist_offsets[playlist]
  last = tables.playlist_offsets[playlist + 1] - 1
  forward = jax.random.bernoulli(rng_direction, 0.5, songs.shape)
  steps = walk_lengths(rng_steps, tables.r, jnp.where(forward, last - origin, origin - first))
  stop = origin + jnp.where(forward, steps, -steps)
  landed = tables.flat_songs[stop]
  passes = walked & (landed >= 0) & tables.source_mask[jnp.maximum(landed, 0)]
  partner = jnp.where(passes, landed, -1)
  return PropagationSample(
      partner=partner,
      distance=jnp.where(walked, steps, -1),
      weight=support_weights(tables, songs, partner),
      playlist=jnp.where(walked, playlist, -1),
      position=jnp.where(walked, stop - first, -1))


def support_weights(tables: PropagationTables, songs: jax.Array, partners: jax.Array) -> jax.Array:
  """Eq. (4)'s P(s'|s) for (song, partner) pairs, looked up by binary search in the song's row.

  Args:
    tables: from `build_tables`.
    songs: int song ids s, any shape.
    partners: int partner ids s', broadcastable against `songs`; -1 (no partner) gives 0.

  Returns:
    float32 weights of the broadcast shape; 0 for pairs that share no playlist and for ids outside
    [0, num_songs).
  """
  songs, partners = jnp.broadcast_arrays(jnp.asarray(songs, jnp.int32),
                                         jnp.asarray(partners, jnp.int32))
  valid = ((songs >= 0) & (songs < tables.num_songs) & (partners >= 0)
           & (partners < tables.num_songs))
  song = jnp.where(valid, songs, 0)
  start, end = tables.pair_offsets[song], tables.pair_offsets[song + 1]
  last = tables.num_pairs - 1
  # Lower bound of the partner in pair_partner[start:end]; a row holds at most min(pairs, songs)
  # partners, so this many halvings close every interval (extra ones are no-ops once lo == hi).
  halvings = int(np.ceil(np.log2(min(tables.num_pairs, tables.num_songs) + 1))) + 1

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    go_right = (lo < hi) & (tables.pair_partner[jnp.clip(mid, 0, last)] < partners)
    return jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~go_right, mid, hi)

  lo, _ = jax.lax.fori_loop(0, halvings, halve, (start, end))
  hit = jnp.clip(lo, 0, last)
  found = valid & (lo < end) & (tables.pair_partner[hit] == partners)
  return jnp.where(found, tables.pair_weight[hit], 0.0)


def propagated_tags(song_tags: jax.Array, partner: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The partner's tags as the supportive targets y_{s', t'}, zero rows where there is no partner.

  Args:
    song_tags: [num_songs, tags] multi-hot tags (rows of non-source songs may hold anything: a
      partner is never one of them).
    partner: [batch] int32 from `sample` (-1 for none).

  Returns:
    targets: [batch, tags] of `song_tags`'s dtype, the partner's row or zeros.
    has_partner: [batch] bool, partner >= 0 (pass it to `supportive_bce`).
  """
  has_partner = partner >= 0
  rows = song_tags[jnp.maximum(partner, 0)]
  return jnp.where(has_partner[:, None], rows, jnp.zeros_like(rows)), has_partner


def grouped_targets(song_tags: jax.Array, samples: Sequence[PropagationSample],
                    tag_group: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-tag supportive targets and weights when tag groups walk with their own search range.

  Beyond the paper (its §V.D: "assign an appropriate search range to each category"): group g's
  tags are propagated from its own walk, `samples[g]` (drawn with `sample` on tables built at
  r_g, independently of the other groups), so for a tag t of group g

      Y_{s,t} = y_{s'_g, t},   W_{s,t} = P_{r_g}(s'_g | s),   mask_{s,t} = s'_g exists,

  and `musemb.objectives.supportive.supportive_bce` with these [batch, tags] weights is

      loss = sum_t BCE(x_t, y_{s,t}) + sum_g P_{r_g}(s'_g|s) sum_{t in g} BCE(x'_t, y_{s'_g,t}),

  whose expectation is sum_g sum_{s'} P_walk,r_g(s'|s) P_{r_g}(s'|s) sum_{t in g} BCE(s'): each
  group is eq. (3) on its own tags with its own r (the module docstring's distribution and eq.
  (4) at r_g). With one group, or every group at one r, it is eq. (3) exactly.

  Args:
    song_tags: [num_songs, tags] multi-hot tags (as for `propagated_tags`).
    samples: G walks of one batch, `PropagationSample`s of [batch] arrays.
    tag_group: [tags] int, each tag's index into `samples`.

  Returns:
    targets: [batch, tags] of `song_tags`'s dtype; zero where the group's walk found no partner.
    weight: [batch, tags] float32, the group's eq. (4) weight; zero without a partner.
    has_partner: [batch, tags] bool.
  """
  if not samples:
    raise ValueError("grouped_targets: pass at least one PropagationSample.")
  partner = jnp.stack([s.partner for s in samples])                  # [G, B]
  weight = jnp.stack([s.weight for s in samples])                    # [G, B]
  rows = song_tags[jnp.maximum(partner, 0)]                          # [G, B, T]
  group = jnp.asarray(tag_group, jnp.int32)
  has = partner[:, :, None] >= 0                                     # [G, B, 1]
  pick = lambda x: jnp.take_along_axis(
      x, jnp.broadcast_to(group[None, None, :], (1,) + rows.shape[1:]), axis=0)[0]
  has_partner = pick(jnp.broadcast_to(has, rows.shape))
  targets = jnp.where(has_partner, pick(rows), jnp.zeros((), rows.dtype))
  weights = jnp.where(has_partner, pick(jnp.broadcast_to(weight[:, :, None], rows.shape)), 0.0)
  return targets, weights, has_partner
