"""Tests for musemb/samplers/neighbourhood.py: every batch item has a same-album partner."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from musemb.samplers import neighbourhood

# Pairs of 7 albums: sizes 3, 2, 1 (no partner possible), 4, 5, 2, 1.
ALBUM = np.repeat(np.arange(7), [3, 2, 1, 4, 5, 2, 1])


def test_every_batch_item_has_a_partner_from_its_album():
  sampler = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=4, seed=3)
  for step in range(5 * sampler.num_batches):
    batch = sampler.batch(step)
    assert batch.shape == (4,)
    for pos, pair in enumerate(batch):
      partners = [q for p, q in enumerate(batch) if p != pos and ALBUM[q] == ALBUM[pair]]
      assert partners and any(q != pair for q in partners), (step, batch, ALBUM[batch])


def test_groups_are_distinct_pairs_and_epochs_cover_every_partnered_pair():
  # group_size 3 and batches of one group: each batch is 3 distinct pairs of one album.
  sampler = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=3, seed=0, group_size=3)
  assert sampler.num_dropped == 6  # the 2 + 1 + 2 + 1 pairs of albums 1, 2, 5, 6
  eligible = set(np.flatnonzero(np.isin(ALBUM, [0, 3, 4])).tolist())
  # 3 + 4 + 5 pairs make 1 + 2 + 2 groups of 3 (remainders completed within the album).
  assert sampler.num_batches == 5
  for epoch in range(4):
    batches = sampler.epoch(epoch)
    seen = set(batches.reshape(-1).tolist())
    assert seen == eligible  # every pair of a partnered album, every epoch
    for group in batches:
      assert len(set(group.tolist())) == 3 and len(set(ALBUM[group].tolist())) == 1
    counts = collections.Counter(batches.reshape(-1).tolist())
    assert sum(counts.values()) == 15 and max(counts.values()) <= 2


def test_albums_without_a_partner_are_counted_and_never_sampled():
  sampler = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=4, seed=1)
  assert sampler.num_dropped == 2  # the single pairs of albums 2 and 6
  drawn = np.concatenate([sampler.batch(s) for s in range(3 * sampler.num_batches)])
  assert not np.isin(ALBUM[drawn], [2, 6]).any()
  # Groups of 2: 2 + 1 + 2 + 3 + 1 = 9 groups, 2 per batch of 4: 4 batches, one group dropped.
  assert sampler.num_batches == 4


def test_batches_are_a_pure_function_of_seed_and_step():
  a = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=4, seed=7)
  b = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=4, seed=7)
  c = neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=4, seed=8)
  steps = [9, 0, 5, 9, 2]  # out of order, as after a resume
  assert all(np.array_equal(a.batch(s), b.batch(s)) for s in steps)
  assert not all(np.array_equal(a.batch(s), c.batch(s)) for s in range(8))
  # Epochs differ from each other.
  assert not np.array_equal(a.epoch(0), a.epoch(1))


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="multiple of group_size"):
    neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=5)
  with pytest.raises(ValueError, match="fewer than one batch"):
    neighbourhood.NeighbourhoodSampler(ALBUM, batch_size=64)
  with pytest.raises(ValueError, match="integer album ids"):
    neighbourhood.NeighbourhoodSampler(np.array([0.5, 1.0]), batch_size=2)
