"""Input pipelines: deterministic step-indexed batches, per-process shares, tf.data audio batches."""

import numpy as np
import pytest

from musemb.data import prepared as prepared_lib
from musemb.data import pipeline


def test_epoch_batcher_is_a_pure_function_of_seed_and_step():
  a = pipeline.EpochBatcher(100, 16, seed=3, process_index=0, process_count=1)
  b = pipeline.EpochBatcher(100, 16, seed=3, process_index=0, process_count=1)
  steps = [0, 5, 6, 7, 40, 6]
  np.testing.assert_array_equal(np.concatenate([a.indices(s) for s in steps]),
                                np.concatenate([b.indices(s) for s in reversed(steps)][::-1]))
  # One epoch (6 full batches of 16 out of 100) visits distinct examples; the next reshuffles.
  epoch0 = np.concatenate([a.indices(s) for s in range(6)])
  assert len(set(epoch0)) == 96
  assert not np.array_equal(a.indices(0), a.indices(6))
  assert not np.array_equal(a.indices(0), pipeline.EpochBatcher(100, 16, seed=4).indices(0))


def test_process_shares_tile_the_global_batch():
  whole = pipeline.EpochBatcher(50, 8, seed=0, process_index=0, process_count=1)
  shares = [pipeline.EpochBatcher(50, 8, seed=0, process_index=p, process_count=4) for p in range(4)]
  for step in (0, 3, 11):
    np.testing.assert_array_equal(np.concatenate([s.indices(step) for s in shares]),
                                  whole.indices(step))


def test_epoch_batcher_errors():
  with pytest.raises(ValueError, match="batch_size"):
    pipeline.EpochBatcher(10, 16, seed=0)
  with pytest.raises(ValueError, match="divisible"):
    pipeline.EpochBatcher(100, 10, seed=0, process_index=0, process_count=3)


def test_read_split_matches_the_source(tiny_dataset_dir):
  from musemb.data.sources import synthetic
  prepared = prepared_lib.load_prepared(tiny_dataset_dir)
  labels = pipeline.read_split(prepared.builder, "test")
  world = synthetic.SyntheticWorld("tiny", seed=0)
  truth = {t.id: t for t in world.tracks() if t.split == "test"}
  assert sorted(labels.track_ids) == sorted(truth)
  for tid, artists, tags in zip(labels.track_ids, labels.artists, labels.tags):
    assert [prepared.artist_names[a] for a in artists] == truth[tid].artists
    assert {prepared.tag_names[i] for i in np.flatnonzero(tags)} == set(truth[tid].tags) & set(
        prepared.tag_names)


def test_audio_batches_crop_batch_and_resume(tiny_dataset_dir):
  prepared = prepared_lib.load_prepared(tiny_dataset_dir)
  kwargs = dict(batch_size=4, crop_samples=8000, seed=7, per_process=False)
  first = [b for _, b in zip(range(3), pipeline.audio_batches(prepared.builder, "train", **kwargs))]
  again = [b for _, b in zip(range(3), pipeline.audio_batches(prepared.builder, "train", **kwargs))]
  for x, y in zip(first, again):
    assert x["audio"].shape == (4, 8000) and x["audio"].dtype == np.float32
    assert x["tags"].shape == (4, len(prepared.tag_names))
    np.testing.assert_array_equal(x["audio"], y["audio"])
  assert np.abs(first[0]["audio"]).max() <= 1.0
  resumed = next(pipeline.audio_batches(prepared.builder, "train", skip_batches=2, **kwargs))
  np.testing.assert_array_equal(resumed["audio"], first[2]["audio"])
  np.testing.assert_array_equal(resumed["track_id"], first[2]["track_id"])
