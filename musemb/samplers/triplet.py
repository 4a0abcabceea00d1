"""Triplet sampling for tag-based music retrieval: anchor (tag, song) draws and in-batch negatives.

Follows Won, Oramas, Nieto, Gouyon & Serra, "Multimodal Metric Learning for Tag-Based Music
Retrieval" (ICASSP 2021), section 4.1 ("Sampling matters"), its public code
(minzwon/tag-based-music-retrieval, `data_loader.py` and `Solver.triplet_sampling`), and the
distance-weighted sampling it cites: Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep
Embedding Learning" (ICCV 2017), section 4, and its reference implementation (chaoyuaw/incubator-
mxnet, `example/gluon/embedding_learning/model.py`).

A triplet is (anchor tag, positive song carrying it, negative song not carrying it). A batch is
built in two stages.

1. Anchors, `sample_anchors` (on device, from an `Annotations` index; jit-able) or its numpy twin
   `sample_anchors_host` (the same distributions, for batches drawn per step on the host):

   * `"random"`: a (song, tag) annotation uniformly over all annotations, so a tag is drawn in
     proportion to its number of songs and frequent tags dominate (the paper's random sampling).
     Drawn as: a flat annotation index uniform in [0, N), whose tag is found by binary search in
     the tag-major CSR offsets.
   * `"balanced"`: a tag uniformly over the tags that have at least one song, then one of its songs
     uniformly (the paper's balanced sampling). The authors' loader cycles through the tags
     (`tags[index % len(tags)]`) under a shuffling DataLoader; the iid uniform draw here has the
     same distribution per draw.
   * `"song_uniform"`: what the authors' code does for random sampling: a song uniformly over the
     songs that carry a tag, then one of its tags uniformly. Tags are then drawn in proportion to
     `sum over their songs of 1 / #tags of the song`, close to, but not exactly, `"random"`.

2. Negatives, `sample_negatives` (on device; jit-able): for anchor i, a song j of the same batch
   that does not carry the anchor tag (`negative_mask`: `valid[i, j] = not song_tags[j, tag_i]`;
   the anchor's own positive is never valid), drawn with `jax.random.categorical` on masked
   log-weights:

   * `"random"`: uniform over the valid songs (random and balanced sampling of the paper).
   * `"distance_weighted"`: Wu et al.'s distance-weighted sampling, the method the paper's text
     cites for its balanced-weighted row (the authors' code that produced the row's numbers does
     `"cosine"` below instead). For points uniform on the unit sphere in R^n the pairwise distance
     has density `q(d) ∝ d^(n-2) [1 - d^2/4]^((n-3)/2)`; a negative is drawn with weight
     `min(lambda, q(d)^-1)`, which spreads draws evenly over distances instead of concentrating
     them near sqrt(2). As in the reference implementation, the cap lambda is applied by clipping
     the distance below at `cutoff` (0.5) before computing `q^-1`, and the weights live in log
     space (`-(n-2) log d - ((n-3)/2) log(1 - d^2/4)`). Distances are Euclidean (chordal) distances
     between the l2-normalised anchor-tag and song embeddings, d = sqrt(2 - 2 cos) in [0, 2]; n is
     the embedding size.

     Zero-loss negatives. Wu et al. also give weight 0 to negatives at d >= 1.4 because their
     margin loss is zero there: a negative costs `(alpha + beta - d)_+`, beta 1.2, alpha 0.2. That
     1.4 is a property of their loss, not of this one. Under the cosine triplet loss
     `[delta - cos(a, p) + cos(a, n)]_+` (delta 0.4, `musemb.objectives.triplet`) a negative's
     hinge is zero iff `cos(a, n) <= cos(a, p) - delta`, i.e. iff `d(a, n)^2 >= d(a, p)^2 +
     2 delta`: the cut-off is a distance per anchor, set by its positive. No fixed distance does
     the job, since every negative has a non-zero hinge against a positive with cos(a, p) <
     cos(a, n) + delta, and cos(a, n) + delta > -1. The fixed 1.4 is also harmful at
     initialisation: the cosines are then about N(0, 1/n), d = 1.414 +- 0.044 at n = 256, and
     d < 1.4 (cos > 0.02) keeps only about a third of the negatives, all of which have a non-zero
     hinge. So `nonzero_loss_cutoff` is None by default (no cut), a float for a loss with a fixed
     zero-loss distance (Wu et al.'s own 1.4), or [B] distances per anchor:
     `zero_hinge_distance(anchor, positive, margin)` gives `sqrt(d(a, p)^2 + 2 delta)` for the
     cosine triplet loss, and `musemb.systems.won` passes it (at initialisation, cos(a, p) ~ 0, it
     cuts only negatives below cos -0.4). Without a cut the weights are nearly symmetric in cos
     (`log q^-1 = -((n-2)/2) log(1 - cos) - ((n-3)/2) log(1 + cos) + const`), so an easy negative
     at cos -0.5 (zero hinge unless cos(a, p) < -0.1) weighs as much as a hard one at +0.5; the
     per-anchor cut is what keeps those wasted draws out.

     At the real dimension. `q^-1` is about `(1 - cos^2)^(-n/2) ~ exp(n cos^2 / 2)`, steep in cos
     at n = 256 (`configs/won.py`'s embedding). At initialisation (cos spread 1/sqrt(n)) the draw
     is already uneven: about 33 effective negatives of the 167 in a batch of 168, the top one
     about 12% of the mass. Once the space spreads (a positive at cos 0.5, the negatives' cosines
     around 0.1) the nearest negative takes about 85% of the mass at a spread of 0.1 and all but
     1e-5 of it at 0.2 (ties only closer than the cap, cos 0.875). Wu et al.'s weighting at this
     size thus degenerates into hardest-negative mining (within the zero-hinge cut) as training
     proceeds; `tests/samplers/triplet_test.py` pins these numbers at n = 256.
   * `"cosine"`: what the authors' public code does for `is_weighted`, the weighting behind the
     paper's balanced-weighted numbers: probability proportional to `(cos(a, s) + 1) / 2` over the
     valid songs, a mild preference for harder (closer) negatives at any n: on the spread rows
     above the nearest negative gets under 1%, against a uniform 0.6%.

   Anchors without any valid negative (every song of the batch carries the tag) get
   `has_negative = False` and index 0; mask them out of the loss (`triplet_loss(mask=...)`).
   Departure from Wu et al.'s code: where an anchor has valid negatives but none with positive
   weight (all beyond `nonzero_loss_cutoff`, or all at cos = -1 for `"cosine"`), the draw falls back
   to uniform over the valid negatives (under the zero-hinge cut they all meet the margin already,
   so the triplet costs nothing); the reference code falls back to uniform over the whole batch,
   same-class examples included.

   Note on the authors' code: its mask `1 - tag_binary @ song_binary.T` is indexed `[i]` after the
   two multi-hot arguments were passed in swapped order, so row i marks the anchors j whose tag
   song i lacks rather than the songs j that lack tag i. This module uses the intended mask.

Everything on the device is pure JAX with static shapes; sampling carries no gradient. The
`Annotations` index is built once on the host (numpy) by `annotations_from_multihot` or
`annotations_from_pairs`, then passed into the jitted step as an argument or closed over.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from musemb import ops

ANCHOR_METHODS = ("random", "balanced", "song_uniform")
NEGATIVE_METHODS = ("random", "distance_weighted", "cosine")

# Floor on the l2 norm (as musemb.objectives.triplet) and on 1 - d^2/4 (antipodal points) so that
# logarithms stay finite.
_NORM_EPS = 1e-8
_TINY = 1e-12


class Annotations(NamedTuple):
  """Song-tag annotations as CSR in both directions (a pytree of int32 arrays; build on the host).

  Attributes:
    tag_offsets: [num_tags + 1]; the songs of tag t are `tag_songs[tag_offsets[t]:tag_offsets[t +
      1]]`.
    tag_songs: [num_annotations] song ids grouped by tag, ascending within a tag.
    song_offsets: [num_songs + 1]; the tags of song s are `song_tags[song_offsets[s]:
      song_offsets[s + 1]]`.
    song_tags: [num_annotations] tag ids grouped by song, ascending within a song (the order
      `carries_tag`'s binary search relies on).
  """

  tag_offsets: jax.Array | np.ndarray
  tag_songs: jax.Array | np.ndarray
  song_offsets: jax.Array | np.ndarray
  song_tags: jax.Array | np.ndarray

  @property
  def num_tags(self) -> int:
    return self.tag_offsets.shape[0] - 1

  @property
  def num_songs(self) -> int:
    return self.song_offsets.shape[0] - 1

  @property
  def num_annotations(self) -> int:
    return self.tag_songs.shape[0]


def annotations_from_pairs(
    song_ids: np.ndarray,
    tag_ids: np.ndarray,
    num_songs: int,
    num_tags: int,
) -> Annotations:
  """Builds the CSR index from (song, tag) pairs (host side, numpy); duplicate pairs count once.

  Args:
    song_ids: [N] ints in [0, num_songs).
    tag_ids: [N] ints in [0, num_tags).
    num_songs: the number of songs S (songs without tags are allowed; they are never drawn).
    num_tags: the number of tags T (tags without songs are allowed; they are never drawn).

  Returns:
    An `Annotations` of numpy int32 arrays.
  """
  song_ids = np.asarray(song_ids)
  tag_ids = np.asarray(tag_ids)
  if song_ids.ndim != 1 or song_ids.shape != tag_ids.shape:
    raise ValueError(
        "musemb/samplers/triplet.py annotations_from_pairs: song_ids and tag_ids must be 1-D of "
        f"one length (one entry per annotation); got shapes {song_ids.shape} and "
        f"{tag_ids.shape}.")
  for name, value in (("num_songs", num_songs), ("num_tags", num_tags)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      raise ValueError(
          f"musemb/samplers/triplet.py annotations_from_pairs: {name} must be an int >= 1; got "
          f"{value!r}.")
  if song_ids.size == 0:
    raise ValueError(
        "musemb/samplers/triplet.py annotations_from_pairs: no annotations; a triplet needs at "
        "least one (song, tag) pair. Check that the split's tags were loaded.")
  if not (np.issubdtype(song_ids.dtype, np.integer) and np.issubdtype(tag_ids.dtype, np.integer)):
    raise ValueError(
        "musemb/samplers/triplet.py annotations_from_pairs: song_ids and tag_ids must be integer "
        f"ids; got dtypes {song_ids.dtype} and {tag_ids.dtype}.")
  for name, ids, bound in (("song_ids", song_ids, num_songs), ("tag_ids", tag_ids, num_tags)):
    if ids.min() < 0 or ids.max() >= bound:
      raise ValueError(
          f"musemb/samplers/triplet.py annotations_from_pairs: {name} must lie in [0, {bound}); "
          f"got values in [{ids.min()}, {ids.max()}].")
  if int(num_songs) * int(num_tags) >= 2**62:
    raise ValueError(
        "musemb/samplers/triplet.py annotations_from_pairs: num_songs * num_tags overflows int64.")
  keys = np.unique(song_ids.astype(np.int64) * num_tags + tag_ids.astype(np.int64))
  if keys.size >= 2**31:
    raise ValueError(
        f"musemb/samplers/triplet.py annotations_from_pairs: {keys.size} annotations do not fit "
        "int32 offsets; split the catalogue.")
  songs, tags = keys // num_tags, keys % num_tags          # sorted by song, then tag
  song_offsets = np.concatenate([[0], np.cumsum(np.bincount(songs, minlength=num_songs))])
  order = np.lexsort((songs, tags))                        # by tag, then song
  tag_offsets = np.concatenate([[0], np.cumsum(np.bincount(tags, minlength=num_tags))])
  return Annotations(
      tag_offsets=tag_offsets.astype(np.int32),
      tag_songs=songs[order].astype(np.int32),
      song_offsets=song_offsets.astype(np.int32),
      song_tags=tags.astype(np.int32))


def annotations_from_multihot(labels: np.ndarray) -> Annotations:
  """Builds the CSR index from a multi-hot matrix `labels` [num_songs, num_tags] (host side)."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(
        "musemb/samplers/triplet.py annotations_from_multihot: labels must be [num_songs, "
        f"num_tags] multi-hot; got shape {labels.shape}.")
  songs, tags = np.nonzero(labels)
  return annotations_from_pairs(songs, tags, labels.shape[0], labels.shape[1])


def sample_anchors(
    key: jax.Array,
    method: str,
    annotations: Annotations,
    batch_size: int,
) -> tuple[jax.Array, jax.Array]:
  """Draws `batch_size` iid (anchor tag, positive song) pairs; see the module docstring.

  Args:
    key: a `jax.random.key`.
    method: one of `ANCHOR_METHODS` (static): "random" (uniform over annotations), "balanced"
      (uniform over tags, then over the tag's songs) or "song_uniform" (the authors' code: uniform
      over songs, then over the song's tags).
    annotations: the CSR index (`annotations_from_multihot` / `annotations_from_pairs`).
    batch_size: B (static).

  Returns:
    anchor_tag: [B] int32 tag ids.
    positive_song: [B] int32 song ids; song `positive_song[b]` carries tag `anchor_tag[b]`.
  """
  if method not in ANCHOR_METHODS:
    raise ValueError(
        f"musemb/samplers/triplet.py sample_anchors: unknown method {method!r}; expected one of "
        f"{ANCHOR_METHODS}.")
  if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
      or batch_size < 1):
    raise ValueError(
        "musemb/samplers/triplet.py sample_anchors: batch_size must be a static int >= 1; got "
        f"{batch_size!r}.")
  _check_annotations("sample_anchors", annotations)
  tag_offsets = jnp.asarray(annotations.tag_offsets, jnp.int32)
  tag_songs = jnp.asarray(annotations.tag_songs, jnp.int32)
  song_offsets = jnp.asarray(annotations.song_offsets, jnp.int32)
  song_tags = jnp.asarray(annotations.song_tags, jnp.int32)
  k_first, k_second = jax.random.split(key)
  shape = (batch_size,)
  if method == "random":
    flat = jax.random.randint(k_first, shape, 0, annotations.num_annotations, dtype=jnp.int32)
    # The tag t with tag_offsets[t] <= flat < tag_offsets[t + 1] (never an empty tag).
    tag = jnp.searchsorted(tag_offsets, flat, side="right").astype(jnp.int32) - 1
    return tag, tag_songs[flat]
  if method == "balanced":
    tag = _uniform_nonempty(k_first, tag_offsets, shape)
    return tag, _uniform_member(k_second, tag_offsets, tag_songs, tag)
  song = _uniform_nonempty(k_first, song_offsets, shape)
  return _uniform_member(k_second, song_offsets, song_tags, song), song


def sample_anchors_host(
    rng: np.random.Generator,
    method: str,
    annotations: Annotations,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """The host twin of `sample_anchors`: the same distributions, drawn with numpy.

  For batches that are a pure function of the step (`np.random.default_rng([seed, step])`), so
  they can be sharded over the mesh's `data` axis and a resumed run sees the same triplets.

  Args:
    rng: a numpy Generator.
    method: one of `ANCHOR_METHODS` (see `sample_anchors`).
    annotations: the CSR index (numpy arrays).
    batch_size: B.

  Returns:
    anchor_tag, positive_song: [B] int32 each; song `positive_song[b]` carries `anchor_tag[b]`.
  """
  if method not in ANCHOR_METHODS:
    raise ValueError(
        f"musemb/samplers/triplet.py sample_anchors_host: unknown method {method!r}; expected one "
        f"of {ANCHOR_METHODS}.")
  _check_annotations("sample_anchors_host", annotations)
  tag_offsets, tag_songs, song_offsets, song_tags = (np.asarray(a, np.int64) for a in annotations)

  def uniform_nonempty(offsets):
    rows = np.flatnonzero(np.diff(offsets) > 0)
    return rows[rng.integers(0, len(rows), batch_size)]

  def uniform_member(offsets, members, rows):
    start = offsets[rows]
    return members[start + rng.integers(0, offsets[rows + 1] - start)]

  if method == "random":
    flat = rng.integers(0, annotations.num_annotations, batch_size)
    tag = np.searchsorted(tag_offsets, flat, side="right") - 1
    return tag.astype(np.int32), tag_songs[flat].astype(np.int32)
  if method == "balanced":
    tag = uniform_nonempty(tag_offsets)
    return tag.astype(np.int32), uniform_member(tag_offsets, tag_songs, tag).astype(np.int32)
  song = uniform_nonempty(song_offsets)
  return uniform_member(song_offsets, song_tags, song).astype(np.int32), song.astype(np.int32)


def carries_tag(annotations: Annotations, songs: jax.Array, tags: jax.Array) -> jax.Array:
  """Whether song `songs[...]` carries tag `tags[...]` (broadcast), by binary search in its row.

  Args:
    annotations: the CSR index.
    songs: int song ids, any shape.
    tags: int tag ids, broadcastable against `songs`.

  Returns:
    bool array of the broadcast shape.
  """
  _check_annotations("carries_tag", annotations)
  song_offsets = jnp.asarray(annotations.song_offsets, jnp.int32)
  song_tags = jnp.asarray(annotations.song_tags, jnp.int32)
  songs, tags = jnp.broadcast_arrays(jnp.asarray(songs, jnp.int32), jnp.asarray(tags, jnp.int32))
  start, end = song_offsets[songs], song_offsets[songs + 1]
  last = annotations.num_annotations - 1
  # Lower bound of `tags` in song_tags[start:end]; a row holds at most min(N, T) tags, so this many
  # halvings always close the interval (extra iterations are no-ops once lo == hi).
  steps = int(np.ceil(np.log2(min(annotations.num_annotations, annotations.num_tags) + 1))) + 1

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    go_right = (lo < hi) & (song_tags[jnp.clip(mid, 0, last)] < tags)
    return jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~go_right, mid, hi)

  lo, _ = jax.lax.fori_loop(0, steps, halve, (start, end))
  return (lo < end) & (song_tags[jnp.clip(lo, 0, last)] == tags)


def negative_mask(
    anchor_tag: jax.Array,
    song_tags: jax.Array,
    example_mask: jax.Array | None = None,
) -> jax.Array:
  """Valid in-batch negatives from the batch songs' multi-hot tags.

  Args:
    anchor_tag: [B] int anchor tag ids (in [0, T); not checked inside jit).
    song_tags: [M, T] bool multi-hot tags of the batch's candidate songs (usually the B positive
      songs, M = B).
    example_mask: optional [B] bool (requires M = B), False for padding rows: they neither get
      negatives nor serve as one.

  Returns:
    [B, M] bool: `valid[i, j] = not song_tags[j, anchor_tag[i]]`.
  """
  if anchor_tag.ndim != 1 or song_tags.ndim != 2:
    raise ValueError(
        "musemb/samplers/triplet.py negative_mask: expected anchor_tag [B] and song_tags [M, "
        f"num_tags]; got shapes {anchor_tag.shape} and {song_tags.shape}.")
  valid = ~jnp.take(song_tags.astype(bool), anchor_tag.astype(jnp.int32), axis=1).T
  return _apply_example_mask("negative_mask", valid, example_mask)


def negative_mask_from_annotations(
    annotations: Annotations,
    anchor_tag: jax.Array,
    positive_song: jax.Array,
    example_mask: jax.Array | None = None,
) -> jax.Array:
  """`negative_mask` for song ids looked up in the CSR index (no multi-hot rows needed).

  Args:
    annotations: the CSR index.
    anchor_tag: [B] int anchor tag ids.
    positive_song: [M] int song ids of the batch's candidate songs (usually M = B, the positives).
    example_mask: optional [B] bool (requires M = B), False for padding rows.

  Returns:
    [B, M] bool: True where song `positive_song[j]` does not carry tag `anchor_tag[i]`.
  """
  if anchor_tag.ndim != 1 or positive_song.ndim != 1:
    raise ValueError(
        "musemb/samplers/triplet.py negative_mask_from_annotations: expected anchor_tag [B] and "
        f"positive_song [M]; got shapes {anchor_tag.shape} and {positive_song.shape}.")
  valid = ~carries_tag(annotations, positive_song[None, :], anchor_tag[:, None])
  return _apply_example_mask("negative_mask_from_annotations", valid, example_mask)


def zero_hinge_distance(anchor_emb: jax.Array, positive_emb: jax.Array,
                        margin: float) -> jax.Array:
  """Per anchor, the distance beyond which a negative's cosine triplet hinge is zero.

  The hinge `[margin - cos(a, p) + cos(a, n)]_+` vanishes iff `cos(a, n) <= cos(a, p) - margin`;
  with chordal distances `d^2 = 2 - 2 cos` that is `d(a, n) >= sqrt(d(a, p)^2 + 2 margin)`. It is
  the cosine triplet loss's counterpart of Wu et al.'s fixed `nonzero_loss_cutoff` (1.4 for their
  margin loss), to pass as `sample_negatives(..., nonzero_loss_cutoff=...)` so that no draw is
  wasted on a negative that already satisfies the margin. Values above 2 cut nothing.

  Args:
    anchor_emb: [B, dim] anchor tag embeddings (need not be normalised; no gradient flows).
    positive_emb: [B, dim] each anchor's positive song embedding.
    margin: delta of the triplet loss (0.4 in `configs/won.py`), >= 0.

  Returns:
    [B] float32 distances in [sqrt(2 margin), sqrt(4 + 2 margin)].
  """
  if anchor_emb.ndim != 2 or anchor_emb.shape != positive_emb.shape:
    raise ValueError(
        "musemb/samplers/triplet.py zero_hinge_distance: expected anchor_emb and positive_emb "
        f"[B, dim] of one shape; got {anchor_emb.shape} and {positive_emb.shape}.")
  if not isinstance(margin, (int, float, np.floating)) or isinstance(margin, bool) or margin < 0:
    raise ValueError(
        "musemb/samplers/triplet.py zero_hinge_distance: margin must be a number >= 0 (the "
        f"triplet loss's delta, 0.4 in configs/won.py); got {margin!r}.")
  a = ops.l2_normalize(jax.lax.stop_gradient(anchor_emb).astype(jnp.float32), axis=1,
                       eps=_NORM_EPS)
  p = ops.l2_normalize(jax.lax.stop_gradient(positive_emb).astype(jnp.float32), axis=1,
                       eps=_NORM_EPS)
  cos_p = jnp.clip(jnp.sum(a * p, axis=1), -1.0, 1.0)
  return jnp.sqrt(2.0 - 2.0 * cos_p + 2.0 * float(margin))


def negative_log_weights(
    method: str,
    anchor_emb: jax.Array,
    song_emb: jax.Array,
    valid_mask: jax.Array,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float | jax.Array | None = None,
    dim: int | None = None,
) -> jax.Array:
  """The masked log-weights `sample_negatives` draws from (up to a per-row constant).

  Args: as `sample_negatives`.

  Returns:
    [B, M] float32 logits: the method's log-weight where the song is drawable, -inf elsewhere.
    Rows with valid songs but no drawable one fall back to 0 on the valid songs (uniform); rows
    with no valid song are all 0 (their draw is meaningless; `sample_negatives` flags them).
  """
  if method not in NEGATIVE_METHODS:
    raise ValueError(
        f"musemb/samplers/triplet.py sample_negatives: unknown method {method!r}; expected one "
        f"of {NEGATIVE_METHODS}.")
  if anchor_emb.ndim != 2 or song_emb.ndim != 2 or anchor_emb.shape[1] != song_emb.shape[1]:
    raise ValueError(
        "musemb/samplers/triplet.py sample_negatives: expected anchor_emb [B, dim] and song_emb "
        f"[M, dim] with one dim; got shapes {anchor_emb.shape} and {song_emb.shape}.")
  expected = (anchor_emb.shape[0], song_emb.shape[0])
  if valid_mask.shape != expected:
    raise ValueError(
        f"musemb/samplers/triplet.py sample_negatives: valid_mask must be [B, M] = {expected}; "
        f"got {valid_mask.shape}. Build it with negative_mask or negative_mask_from_annotations.")
  valid = valid_mask.astype(bool)
  if method == "random":
    log_w = jnp.zeros(valid.shape, jnp.float32)
    drawable = valid
  else:
    cos = _pairwise_cosine(jax.lax.stop_gradient(anchor_emb), jax.lax.stop_gradient(song_emb))
    if method == "cosine":
      # The authors' (cos + 1) / 2; cos = -1 gives weight 0, hence not drawable.
      weight = (cos + 1.0) / 2.0
      drawable = valid & (weight > 0)
      log_w = jnp.log(jnp.maximum(weight, _TINY))
    else:
      n = anchor_emb.shape[1] if dim is None else dim
      if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise ValueError(
            "musemb/samplers/triplet.py sample_negatives: dim (the sphere's dimension n in Wu et "
            f"al.'s q(d)) must be a static int >= 2; got {n!r}. Leave it None to use the "
            "embedding size.")
      if not 0 < cutoff < 2:
        raise ValueError(
            "musemb/samplers/triplet.py sample_negatives: cutoff (the distance below which "
            f"weights are capped) must lie in (0, 2); got {cutoff!r}. Wu et al. use 0.5.")
      limit = _nonzero_loss_limit(nonzero_loss_cutoff, cutoff, valid.shape[0])
      distance = jnp.sqrt(jnp.maximum(2.0 - 2.0 * cos, 0.0))
      clipped = jnp.maximum(distance, cutoff)
      # log q(d)^-1 = -(n - 2) log d - ((n - 3) / 2) log(1 - d^2 / 4)   (Wu et al., section 4).
      log_w = (-(n - 2.0) * jnp.log(clipped)
               - ((n - 3.0) / 2.0) * jnp.log(jnp.maximum(1.0 - 0.25 * clipped**2, _TINY)))
      drawable = valid if limit is None else valid & (distance < limit)
  has_drawable = jnp.any(drawable, axis=1, keepdims=True)
  has_valid = jnp.any(valid, axis=1, keepdims=True)
  neg_inf = jnp.float32(-jnp.inf)
  logits = jnp.where(drawable, log_w, neg_inf)
  logits = jnp.where(has_drawable, logits, jnp.where(valid, 0.0, neg_inf))
  return jnp.where(has_valid, logits, 0.0).astype(jnp.float32)


def negative_probabilities(
    method: str,
    anchor_emb: jax.Array,
    song_emb: jax.Array,
    valid_mask: jax.Array,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float | jax.Array | None = None,
    dim: int | None = None,
) -> jax.Array:
  """[B, M] probabilities of `sample_negatives`'s draws; all-zero rows for anchors without any."""
  logits = negative_log_weights(method, anchor_emb, song_emb, valid_mask, cutoff=cutoff,
                                nonzero_loss_cutoff=nonzero_loss_cutoff, dim=dim)
  has_valid = jnp.any(valid_mask.astype(bool), axis=1, keepdims=True)
  return jnp.where(has_valid, jax.nn.softmax(logits, axis=1), 0.0)


def sample_negatives(
    key: jax.Array,
    method: str,
    anchor_emb: jax.Array,
    song_emb: jax.Array,
    valid_mask: jax.Array,
    *,
    cutoff: float = 0.5,
    nonzero_loss_cutoff: float | jax.Array | None = None,
    dim: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Draws one in-batch negative per anchor; see the module docstring for the methods.

  Args:
    key: a `jax.random.key`.
    method: one of `NEGATIVE_METHODS` (static): "random", "distance_weighted" (Wu et al., what
      the paper's text cites) or "cosine" (the authors' code, p ∝ (cos + 1) / 2, which produced
      the paper's balanced-weighted numbers).
    anchor_emb: [B, dim] anchor tag embeddings (need not be normalised; no gradient flows).
    song_emb: [M, dim] candidate song embeddings, usually the batch's B positive songs.
    valid_mask: [B, M] bool, True where song j is a negative of anchor i (`negative_mask`).
    cutoff: "distance_weighted" only: distances are clipped below at this value (Wu et al.: 0.5).
    nonzero_loss_cutoff: "distance_weighted" only: songs at distance >= this from anchor i get
      weight 0, because their loss would be zero. None (default) keeps all; a float is one
      distance for every anchor (Wu et al.'s 1.4 belongs to their margin loss); a [B] array is a
      distance per anchor, e.g. `zero_hinge_distance(anchor_emb, positive_emb, margin)` for the
      cosine triplet loss (see the module docstring).
    dim: "distance_weighted" only: n in q(d); None uses the embedding size.

  Returns:
    negative: [B] int32 indices into `song_emb`; 0 where `has_negative` is False.
    has_negative: [B] bool, False for anchors without any valid negative in the batch.
  """
  logits = negative_log_weights(method, anchor_emb, song_emb, valid_mask, cutoff=cutoff,
                                nonzero_loss_cutoff=nonzero_loss_cutoff, dim=dim)
  has_negative = jnp.any(valid_mask.astype(bool), axis=1)
  negative = jax.random.categorical(key, logits, axis=1).astype(jnp.int32)
  return jnp.where(has_negative, negative, 0), has_negative


def _nonzero_loss_limit(value: float | jax.Array | None, cutoff: float,
                        batch: int) -> jax.Array | None:
  """`nonzero_loss_cutoff` as None, a scalar or a [B, 1] column to compare the [B, M] distances
  with; a static number must exceed `cutoff`, else nothing could be drawn."""
  if value is None:
    return None
  if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
    if not cutoff < value:
      raise ValueError(
          "musemb/samplers/triplet.py sample_negatives: nonzero_loss_cutoff must exceed cutoff "
          f"(got {value!r} <= {cutoff!r}), else no song can be drawn. Wu et al. use 1.4 with "
          "their margin loss; None (the default) keeps every negative.")
    return jnp.float32(value)
  limit = jnp.asarray(value, jnp.float32)
  if limit.shape not in ((), (batch,)):
    raise ValueError(
        "musemb/samplers/triplet.py sample_negatives: nonzero_loss_cutoff must be None, a number "
        f"or one distance per anchor, shape ({batch},); got shape {limit.shape}. "
        "zero_hinge_distance(anchor_emb, positive_emb, margin) builds the per-anchor one.")
  return limit if limit.ndim == 0 else limit[:, None]


def _pairwise_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, dim] x [M, dim] -> [B, M] cosine similarities in float32, clipped to [-1, 1]."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  a = ops.l2_normalize(a, axis=1, eps=_NORM_EPS)
  b = ops.l2_normalize(b, axis=1, eps=_NORM_EPS)
  return jnp.clip(a @ b.T, -1.0, 1.0)


def _uniform_nonempty(key: jax.Array, offsets: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Rows (tags or songs) uniformly over those with at least one entry, via inverse CDF."""
  rank_end = jnp.cumsum((offsets[1:] > offsets[:-1]).astype(jnp.int32))   # nonempty rows <= r
  u = jax.random.randint(key, shape, 0, rank_end[-1], dtype=jnp.int32)
  # The row whose 0-based rank among nonempty rows is u: the first r with rank_end[r] > u.
  return jnp.searchsorted(rank_end, u, side="right").astype(jnp.int32)


def _uniform_member(key: jax.Array, offsets: jax.Array, members: jax.Array,
                    rows: jax.Array) -> jax.Array:
  """One member of each (nonempty) CSR row, uniformly."""
  start = offsets[rows]
  count = offsets[rows + 1] - start
  pick = jax.random.randint(key, rows.shape, 0, jnp.maximum(count, 1), dtype=jnp.int32)
  return members[start + pick]


def _apply_example_mask(name: str, valid: jax.Array, example_mask: jax.Array | None) -> jax.Array:
  if example_mask is None:
    return valid
  if example_mask.shape != (valid.shape[0],) or valid.shape[0] != valid.shape[1]:
    raise ValueError(
        f"musemb/samplers/triplet.py {name}: example_mask must be [B] and the candidate songs "
        f"the batch's own B songs; got example_mask {example_mask.shape} for a mask of shape "
        f"{valid.shape}.")
  example_mask = example_mask.astype(bool)
  return valid & example_mask[:, None] & example_mask[None, :]


def _check_annotations(name: str, annotations: Annotations) -> None:
  if not isinstance(annotations, Annotations):
    raise TypeError(
        f"musemb/samplers/triplet.py {name}: expected an Annotations index (build it with "
        f"annotations_from_multihot or annotations_from_pairs); got {type(annotations).__name__}.")
  n = annotations.num_annotations
  if (annotations.tag_offsets.ndim != 1 or annotations.song_offsets.ndim != 1
      or annotations.song_tags.shape != (n,) or n < 1 or annotations.num_tags < 1
      or annotations.num_songs < 1):
    raise ValueError(
        f"musemb/samplers/triplet.py {name}: malformed Annotations (tag_offsets "
        f"{annotations.tag_offsets.shape}, tag_songs {annotations.tag_songs.shape}, song_offsets "
        f"{annotations.song_offsets.shape}, song_tags {annotations.song_tags.shape}); build it "
        "with annotations_from_multihot or annotations_from_pairs.")
