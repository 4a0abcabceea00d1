"""Tests for musemb.data.derived: bag-of-frames features and their cache."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from musemb import audio
from musemb import features
from musemb.data import prepared as prepared_lib
from musemb.data import derived

CONFIG = derived.BofConfig(n_codewords=16, kmeans_frames=6000, kmeans_steps=40, kmeans_batch=512)


@pytest.fixture(scope="module")
def dataset_dir(tiny_dataset_dir, tmp_path_factory) -> str:
  """A private copy of the session's tiny dataset, so that cache tampering stays here."""
  copy = tmp_path_factory.mktemp("derived") / "tiny"
  shutil.copytree(tiny_dataset_dir, copy, ignore=shutil.ignore_patterns(derived.DERIVED_DIR))
  return str(copy)


@pytest.fixture
def count_computes(monkeypatch):
  calls = []
  real = derived._compute

  def counted(*args, **kwargs):
    calls.append(args[1])
    return real(*args, **kwargs)

  monkeypatch.setattr(derived, "_compute", counted)
  return calls


@pytest.fixture(scope="module")
def computed(dataset_dir):
  return derived.compute_bag_of_frames(dataset_dir, CONFIG, batch_size=8)


def _split_audio(dataset_dir, split):
  builder = prepared_lib.load_prepared(dataset_dir).builder
  return [(ex["track_id"].decode(), audio.from_int16(ex["audio"]))
          for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))]


def test_counts_sum_to_frames_in_split_order(dataset_dir, computed):
  codebook, bags = computed
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert set(bags) == set(prepared.split_sizes)
  assert codebook.centroids.shape == (16, 39)
  for split, bag in bags.items():
    clips = _split_audio(dataset_dir, split)
    assert list(bag.track_ids) == [track_id for track_id, _ in clips]
    assert bag.indptr[0] == 0 and bag.indptr[-1] == len(bag.indices) == len(bag.counts)
    assert bag.indices.dtype == np.int32 and bag.counts.dtype == np.float32
    assert bag.indices.min() >= 0 and bag.indices.max() < 16
    for i, (_, x) in enumerate(clips):
      idx, cnt = bag.row(i)
      assert np.all(np.diff(idx) > 0) and np.all(cnt > 0)
      assert cnt.sum() == CONFIG.mfcc.n_frames(len(x))  # every real frame, no padding
    dense = bag.to_dense()
    np.testing.assert_array_equal(dense.sum(1), [CONFIG.mfcc.n_frames(len(x)) for _, x in clips])
    idx, cnt = bag.padded()
    assert idx.shape == cnt.shape == (len(bag), bag.nnz_per_row().max())
    rebuilt = np.zeros_like(dense)
    np.add.at(rebuilt, (np.arange(len(bag))[:, None], idx), cnt)  # padding adds 0 to index 0
    np.testing.assert_array_equal(rebuilt, dense)
    wide_idx, wide_cnt = bag.padded(max_nnz=20)
    assert wide_idx.shape == (len(bag), 20) and wide_cnt[:, idx.shape[1]:].sum() == 0
    with pytest.raises(ValueError, match="max_nnz"):
      bag.padded(max_nnz=1)


def test_standardisation_uses_training_frames(dataset_dir, computed):
  codebook, _ = computed
  # Reference: the same padded MFCC frames, stacked with numpy, in float64.
  clips = _split_audio(dataset_dir, "train")
  frames = []
  for keys, x, lengths in derived._batches(iter(clips), codebook.batch_size):
    f, n_valid = derived._frames(CONFIG.mfcc, x, lengths)
    frames += [f[i, :n_valid[i]] for i in range(len(keys))]
  frames = np.concatenate(frames).astype(np.float64)
  np.testing.assert_allclose(codebook.mean, frames.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(codebook.std, frames.std(0), rtol=1e-4, atol=1e-4)
  # Centroids live in the standardised space, where the frames have unit spread.
  assert np.abs(codebook.centroids).max() < 20


def test_encode_reproduces_stored_bags(dataset_dir, computed):
  codebook, bags = computed
  clips = _split_audio(dataset_dir, "test")
  for i, (_, x) in enumerate(clips):
    idx, cnt = codebook.encode(x)
    stored_idx, stored_cnt = bags["test"].row(i)
    np.testing.assert_array_equal(idx, stored_idx)
    np.testing.assert_array_equal(cnt, stored_cnt)
  loaded = derived.load_codebook(dataset_dir, CONFIG)
  np.testing.assert_array_equal(loaded.centroids, codebook.centroids)
  np.testing.assert_array_equal(loaded.encode(clips[0][1])[1], bags["test"].row(0)[1])


def test_second_call_loads_the_cache(dataset_dir, computed, count_computes):
  _, bags = computed
  meta = os.path.join(derived.cache_dir(dataset_dir, CONFIG), "meta.json")
  mtime = os.path.getmtime(meta)
  _, again = derived.compute_bag_of_frames(dataset_dir, CONFIG, batch_size=8)
  assert count_computes == []
  assert os.path.getmtime(meta) == mtime
  for split in bags:
    np.testing.assert_array_equal(again[split].indices, bags[split].indices)
    np.testing.assert_array_equal(again[split].track_ids, bags[split].track_ids)


def test_changed_config_gets_its_own_cache(dataset_dir, computed, count_computes):
  first = derived.cache_dir(dataset_dir, CONFIG)
  other_mfcc = dataclasses.replace(CONFIG, mfcc=features.MfccConfig(n_mfcc=12))
  assert other_mfcc.hash() != CONFIG.hash()
  assert derived.cache_dir(dataset_dir, other_mfcc) != first
  smaller = dataclasses.replace(CONFIG, n_codewords=8)
  codebook, bags = derived.compute_bag_of_frames(dataset_dir, smaller, batch_size=8)
  assert len(count_computes) == 1
  assert derived.cache_dir(dataset_dir, smaller) != first
  assert codebook.centroids.shape == (8, 39) and bags["train"].indices.max() < 8
  # The first cache is untouched and still valid.
  assert derived.load_codebook(dataset_dir, CONFIG).centroids.shape == (16, 39)
  assert sorted(os.listdir(os.path.join(dataset_dir, derived.DERIVED_DIR))) == sorted(
      [os.path.basename(first), os.path.basename(derived.cache_dir(dataset_dir, smaller))])


def test_tampered_meta_is_refused_then_recomputed(dataset_dir, computed, count_computes):
  path = derived.cache_dir(dataset_dir, CONFIG)
  meta_path = os.path.join(path, "meta.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["fingerprint"]["split_sizes"]["train"] += 1  # as if the dataset had been rebuilt
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(FileNotFoundError, match="disagrees on \\['fingerprint'\\]"):
    derived.load_codebook(dataset_dir, CONFIG)
  codebook, bags = derived.compute_bag_of_frames(dataset_dir, CONFIG, batch_size=8)
  assert len(count_computes) == 1
  np.testing.assert_array_equal(codebook.centroids, computed[0].centroids)  # seeded: same result
  assert derived.load_codebook(dataset_dir, CONFIG) is not None
  leftovers = [d for d in os.listdir(os.path.dirname(path)) if d.startswith(".")]
  assert leftovers == []


def test_config_and_dataset_mismatches_are_errors(dataset_dir):
  with pytest.raises(ValueError, match="sample_rate=16000"):
    derived.compute_bag_of_frames(
        dataset_dir, dataclasses.replace(CONFIG, mfcc=features.MfccConfig(sample_rate=22050)))
  with pytest.raises(ValueError, match="n_codewords"):
    derived.BofConfig(n_codewords=10, kmeans_frames=5)
  assert derived.BofConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_bucket_lengths_are_few_and_tight():
  sizes = range(1, 2_000_000, 997)
  lengths = [derived.bucket_length(n) for n in sizes]
  assert all(b >= n for b, n in zip(lengths, sizes))
  # Padding is at most a third of a padded clip (beyond the 2^14-sample floor).
  assert all(b - n <= max(b / 3, (1 << 14) - n) for b, n in zip(lengths, sizes))
  assert len(set(lengths)) <= 16
  assert derived.bucket_length(16385) == 24576 and derived.bucket_length(24577) == 32768


def test_reservoir_is_uniform_and_seeded():
  def sample(seed):
    r = derived._Reservoir(size=500, dim=1, seed=seed)
    for start in range(0, 10_000, 137):
      r.add(np.arange(start, min(start + 137, 10_000), dtype=np.float32)[:, None])
    return r.sample()[:, 0]
  a = sample(0)
  np.testing.assert_array_equal(a, sample(0))
  assert len(np.unique(a)) == 500
  # Each of 10 equal blocks of the stream should hold about 50 of the 500 kept rows.
  per_block = np.bincount((a // 1000).astype(int), minlength=10)
  assert per_block.min() > 25 and per_block.max() < 80
