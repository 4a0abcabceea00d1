"""Neighbourhood sampling: batches in which every item has a partner from the same album.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings*, section 6.2: "In
neighborhood sampling, we make sure for each audio feature in a batch, that there is another audio
feature from the same album, and for each review, there is another review reviewing the same
album", after Wang, Li, Huang & Lazebnik (TPAMI 2018), whose batches hold `sample_size` = 2
sentences per image. It gave Table 1's largest gain: without it the neighbourhood terms (eqs. 8-9
of `musemb.objectives.bidirectional`) rarely find a positive in a batch of 128 random pairs.

The items are the training pairs (an audio item and a review of one album), identified by index,
with `album[i]` the album of pair i. An epoch is a pure function of (seed, epoch):

1. each album with at least `group_size` pairs shuffles them and cuts them into groups of
   `group_size`; a remainder of r < group_size pairs is completed with group_size - r other pairs of
   the same album drawn without replacement (so those pairs occur twice that epoch, and no pair is
   left out of any epoch);
2. the groups are shuffled and consecutive `batch_size // group_size` groups form a batch; the
   groups that do not fill a last batch are dropped (static shapes; a different set each epoch).

So every pair of a batch has a partner pair of its album in the same batch, which gives its review a
partner review and its audio item a partner audio item (the same features when an album has a
single audio item but several reviews, as in the original MARD, which has one descriptor per
album). Albums with fewer than `group_size` pairs cannot give a partner and are left out; how many
pairs that drops is `num_dropped` (logged), never silent.

`batch(step)` is a pure function of the step (exact resume, DESIGN's "the host only picks the
batch's example ids"); the K negatives are drawn on the device inside the loss.
"""

from __future__ import annotations

from absl import logging
import numpy as np


class NeighbourhoodSampler:
  """Batch indices [batch_size] for step s, each with a same-album partner (see the module).

  Attributes:
    batch_size: rows per batch (128 in the paper); a multiple of group_size.
    group_size: pairs of one album placed together (2: one partner each).
    num_batches: batches per epoch.
    num_dropped: pairs whose album has fewer than group_size pairs (never sampled).
    seed: the seed every epoch's order derives from.
  """

  def __init__(self, album, batch_size: int, seed: int = 0, group_size: int = 2):
    album = np.asarray(album)
    if album.ndim != 1 or not np.issubdtype(album.dtype, np.integer):
      raise ValueError(f"NeighbourhoodSampler: album must be [pairs] integer album ids, got shape "
                       f"{album.shape} dtype {album.dtype}.")
    for name, value in (("batch_size", batch_size), ("group_size", group_size)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"NeighbourhoodSampler: {name} must be a positive int, got {value!r}.")
    if group_size < 2:
      raise ValueError(f"NeighbourhoodSampler: group_size={group_size} gives no partners; use 2 or "
                       "more.")
    if batch_size % group_size:
      raise ValueError(f"NeighbourhoodSampler: batch_size={batch_size} is not a multiple of "
                       f"group_size={group_size}; every batch holds whole groups.")
    self.batch_size, self.group_size, self.seed = int(batch_size), int(group_size), int(seed)
    order = np.argsort(album, kind="stable")
    bounds = np.flatnonzero(np.diff(album[order])) + 1
    members = [m for m in np.split(order, bounds) if m.size]
    self._albums = [np.sort(m) for m in members if m.size >= group_size]
    self.num_dropped = int(sum(m.size for m in members if m.size < group_size))
    num_groups = sum(-(-m.size // group_size) for m in self._albums)
    self.num_batches = num_groups // (batch_size // group_size)
    if self.num_batches == 0:
      raise ValueError(
          f"NeighbourhoodSampler: {len(self._albums)} albums with >= {group_size} pairs make "
          f"{num_groups} groups of {group_size}, fewer than one batch of {batch_size} needs "
          f"({batch_size // group_size}); lower batch_size or use more training pairs.")
    if self.num_dropped:
      logging.info("NeighbourhoodSampler: %d of %d pairs belong to albums with fewer than %d pairs "
                   "and are never sampled.", self.num_dropped, album.size, group_size)
    self._epoch_cache: tuple[int, np.ndarray] | None = None

  def epoch(self, epoch: int) -> np.ndarray:
    """[num_batches, batch_size] int64 pair indices of one epoch."""
    if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
      return self._epoch_cache[1]
    rng = np.random.default_rng([self.seed, int(epoch)])
    g = self.group_size
    groups = []
    for members in self._albums:
      shuffled = rng.permutation(members)
      full = shuffled.size // g * g
      groups.extend(shuffled[:full].reshape(-1, g))
      rest = shuffled[full:]
      if rest.size:
        fill = rng.choice(shuffled[:full], g - rest.size, replace=False)
        groups.append(np.concatenate([rest, fill]))
    groups = np.stack(groups)[rng.permutation(len(groups))]
    per_batch = self.batch_size // g
    batches = groups[:self.num_batches * per_batch].reshape(self.num_batches, self.batch_size)
    self._epoch_cache = (int(epoch), batches.astype(np.int64))
    return self._epoch_cache[1]

  def batch(self, step: int) -> np.ndarray:
    """[batch_size] int64 pair indices of training step `step` (epoch step // num_batches)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"NeighbourhoodSampler.batch: step must be a non-negative int, got "
                       f"{step!r}.")
    epoch, position = divmod(int(step), self.num_batches)
    return self.epoch(epoch)[position]
