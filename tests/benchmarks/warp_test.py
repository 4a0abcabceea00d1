"""Tests of launch/benchmarks/warp.py: its timing logic and its MUSLSE half (LightFM not needed)."""

from __future__ import annotations

import math
import re
import os

import numpy as np
import pytest

from launch.benchmarks import warp
from musemb.systems.muslse import evaluation


def test_time_to_target_is_the_first_evaluation_that_reaches_it():
  times = [0.5, 1.0, 1.5, 2.0, 2.5]
  values = [0.10, 0.30, 0.25, 0.40, 0.40]
  assert warp.time_to_target(times, values, 0.30) == 1.0
  assert warp.time_to_target(times, values, 0.26) == 1.0    # passed, not only hit exactly
  assert warp.time_to_target(times, values, 0.40) == 2.0    # the first of two equal maxima
  assert warp.time_to_target(times, values, 0.05) == 0.5
  assert warp.time_to_target(times, values, 0.41) == math.inf
  assert warp.time_to_target([], [], 0.1) == math.inf
  # A mean summed in another order differs in the last bits: it still counts as reached.
  assert warp.time_to_target([1.0, 2.0], [0.3 - 1e-12, 0.5], 0.3) == 1.0


def test_time_to_target_rejects_malformed_traces():
  with pytest.raises(ValueError, match="non-decreasing"):
    warp.time_to_target([1.0, 0.5], [0.1, 0.2], 0.1)
  with pytest.raises(ValueError, match="2 times but 1 values"):
    warp.time_to_target([1.0, 2.0], [0.1], 0.1)
  with pytest.raises(ValueError, match="finite"):
    warp.time_to_target([1.0], [0.1], float("nan"))


def test_trace_best_and_rates():
  trace = warp.Trace("MUSLSE", "sgd")
  for t, v in [(0.2, 0.1), (0.4, 0.5), (0.6, 0.3), (0.8, 0.5)]:
    trace.record(t, [v])
  trace.examples = 400
  assert trace.best == 0.5
  assert trace.time_to(trace.best) == 0.4
  assert trace.examples_per_second == pytest.approx(500.0)


def test_record_averages_tagged_songs_and_gives_the_standard_error():
  trace = warp.Trace("LightFM", "x")
  trace.record(1.0, np.array([1.0, 0.0, np.nan, 1 / 3, 2 / 3]))    # NaN: a song without tags
  assert trace.p_at_3 == [pytest.approx(0.5)]
  assert trace.stderr == [pytest.approx(np.std([1.0, 0.0, 1 / 3, 2 / 3], ddof=1) / 2)]
  with pytest.raises(ValueError, match="no test song has a tag"):
    trace.record(2.0, np.array([np.nan, np.nan]))


def test_stalled_counts_evaluations_without_a_new_best():
  trace = warp.Trace("LightFM", "x")
  for v in [0.1, 0.3, 0.2, 0.3]:
    trace.record(len(trace.times), [v])
  assert not warp._stalled(trace, None)
  assert not warp._stalled(trace, 3)            # 0.3 at evaluation 2 is within the last 3
  assert warp._stalled(trace, 2)                # 0.2, 0.3 do not beat the earlier 0.3
  assert not warp._stalled(trace, 4)            # too few evaluations to tell


def test_selection_of_the_reported_settings():
  slow, fast, high = (warp.Trace("MUSLSE", n) for n in ("slow", "fast", "high"))
  for t, v in [(1.0, 0.2), (2.0, 0.6)]:
    slow.record(t, [v])
  for t, v in [(0.5, 0.55), (3.0, 0.58)]:
    fast.record(t, [v])
  high.record(1.0, [0.7])
  assert warp._best_muslse([slow, fast], 0.55) is fast
  assert warp._best_muslse([slow, high], 0.65) is high           # the only one to arrive
  assert warp._best_muslse([slow, fast], 0.9) is slow            # none arrives: highest best
  assert warp._best_muslse([slow, fast], None) is slow
  # With a lower level (LightFM's best minus a standard error): the first to climb to it wins,
  # even if another reached the best itself sooner with one lucky evaluation.
  steady, lucky = warp.Trace("MUSLSE", "steady"), warp.Trace("MUSLSE", "lucky")
  for t, v in [(0.1, 0.57), (0.2, 0.58), (0.9, 0.61)]:
    steady.record(t, [v])
  for t, v in [(0.1, 0.40), (0.5, 0.61)]:
    lucky.record(t, [v])
  assert warp._best_muslse([steady, lucky], 0.61) is lucky
  assert warp._best_muslse([steady, lucky], 0.61, 0.57) is steady
  assert warp._best_muslse([lucky, fast], 0.61, 0.9) is lucky     # none at 0.9: the best rule
  tie = warp.Trace("MUSLSE", "tie")
  for t, v in [(0.1, 0.57), (0.4, 0.61)]:
    tie.record(t, [v])
  assert warp._best_muslse([steady, tie], 0.61, 0.57) is tie       # same climb, best sooner
  late = warp.Trace("LightFM", "late")
  late.record(5.0, [0.6])
  assert warp._best_lightfm([late, slow]) is slow                # equal best, reached earlier


def test_repeat_summary_takes_the_median_ratio_over_seeds():
  def pair(peer_points, our_points):
    peer, ours = warp.Trace("LightFM", "lf"), warp.Trace("MUSLSE", "ms")
    for t, v in peer_points:
      peer.record(t, [v, v])          # two songs with equal p@3: standard error 0
    for t, v in our_points:
      ours.record(t, [v, v])
    return peer, ours

  repeats = [pair([(1.0, 0.5), (4.0, 0.6)], [(1.0, 0.61)]),      # 4.0 / 1.0 = 4
             pair([(2.0, 0.6)], [(1.0, 0.5), (4.0, 0.6)]),       # 2.0 / 4.0 = 0.5
             pair([(3.0, 0.6)], [(2.0, 0.65)])]                  # 3.0 / 2.0 = 1.5
  text = warp._repeat_summary(repeats)
  assert "reaches it in 3/3, median ratio 1.50" in text
  assert "Verdict (median ratio LightFM/MUSLSE time to LightFM's best, unreached = 0): 1.50" in text
  assert "no slower than LightFM" in text
  repeats[2] = pair([(3.0, 0.7)], [(2.0, 0.65)])                 # never reached: ratio 0
  text = warp._repeat_summary(repeats)
  assert "reaches it in 2/3, median ratio 0.50" in text
  assert "SLOWER than LightFM" in text and "not reached" in text


def test_repeat_summary_lowers_the_target_by_one_standard_error():
  peer, ours = warp.Trace("LightFM", "lf"), warp.Trace("MUSLSE", "ms")
  peer.record(2.0, [0.5, 0.7])                                   # best 0.6, standard error 0.1
  ours.record(0.5, [0.5, 0.5])                                   # 0.5 >= 0.6 - 0.1 at 0.5 s
  ours.record(4.0, [0.6, 0.6])                                   # 0.6 at 4 s
  text = warp._repeat_summary([(peer, ours)])
  best_line, lowered_line = text.splitlines()[1:3]
  assert "LightFM 2.000, MUSLSE 4.000" in best_line and "median ratio 0.50" in best_line
  assert "seed 0: 0.5000" in lowered_line and "MUSLSE 0.500" in lowered_line
  assert "median ratio 4.00" in lowered_line
  assert "SLOWER than LightFM" in text                           # the verdict uses the best


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset_dir):
  from musemb.systems import muslse
  config = warp.benchmark_config("tiny")
  config.data_dir = tiny_dataset_dir
  return config, muslse.load_data(config, tiny_dataset_dir)


def test_lightfm_sees_the_songs_muslse_embeds(tiny_data):
  """bag_matrix (LightFM's user features) @ V equals MUSLSE's song embeddings V^T s."""
  _, data = tiny_data
  split = data.splits["test"]
  table = np.random.default_rng(0).standard_normal((data.info["num_features"], 5)).astype(np.float32)
  bags = warp.bag_matrix(split, data.info["num_features"])
  assert bags.shape == (len(split), data.info["num_features"])
  np.testing.assert_allclose(np.linalg.norm(bags.toarray(), axis=1), 1.0, rtol=1e-5)  # l2 bags
  np.testing.assert_allclose(bags @ table,
                             evaluation.song_embeddings({"V": table[None]}, split.idx, split.val),
                             rtol=1e-5, atol=1e-5)


def test_both_evaluations_give_the_same_p_at_3(tiny_data):
  """LightFM's p@3 path (full scores + metrics.precision_at_k) agrees with muslse.evaluate_tasks."""
  import jax
  from musemb.systems import muslse
  config, data = tiny_data
  params = muslse.init(config, data.info, jax.random.key(3))["params"]
  split = data.splits["test"]
  scores = (evaluation.song_embeddings(params, split.idx, split.val)
            @ evaluation.label_embeddings(params, "T").T)
  means, _ = evaluation.evaluate_tasks(params, data, config, "test", tasks=("tag_prediction",))
  per_song = warp.per_song_p_at_3(scores, split.tags)
  assert per_song.shape == (len(split),)
  assert np.nanmean(per_song) == pytest.approx(means["tag_prediction/p@3"])


def test_muslse_half_trains_and_reports_finite_timings(tiny_data):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.optimizer.name, config.optimizer.learning_rate = "adagrad", 0.1
  trace = warp.train_muslse(config, data, budget_s=0.5, eval_every=4)
  assert trace.library == "MUSLSE" and "adagrad" in trace.setting
  assert len(trace.times) >= 1
  assert np.all(np.diff(trace.times) > 0) and trace.times[-1] >= 0.5
  # What it records is test p@3 of the trained state: above the initial parameters'.
  import jax
  from musemb.systems import muslse
  init = muslse.init(config, data.info, jax.random.key(config.seed))["params"]
  start, _ = evaluation.evaluate_tasks(init, data, config, "test", tasks=("tag_prediction",))
  assert trace.best > start["tag_prediction/p@3"], (trace.p_at_3, start)
  assert trace.examples == 4 * len(trace.times) * config.train.batch_size
  # With loss.positives=all an example is all of its song's tags: the updates count them.
  config.loss.positives, config.loss.budget = "all", data.info["num_tags"]
  trace = warp.train_muslse(config, data, budget_s=0.2, eval_every=4, updates_per_example=2.5)
  assert trace.examples == round(4 * len(trace.times) * config.train.batch_size * 2.5)
  assert math.isfinite(trace.examples_per_second) and trace.examples_per_second > 0
  assert math.isfinite(trace.compile_s) and trace.compile_s > 0
  assert 0 < trace.cores < 2 * (os.cpu_count() or 1)
  assert trace.time_to(trace.best) <= trace.times[-1]


def test_run_without_lightfm_reports_the_muslse_half(tmp_path, monkeypatch):
  monkeypatch.setattr(warp, "lightfm_available", lambda: False)
  plan = warp.QUICK_PLANS[0]
  monkeypatch.setattr(warp, "QUICK_PLANS", (warp.Plan(
      plan.size, budget_s=0.3, patience=plan.patience, lightfm_grid=plan.lightfm_grid,
      muslse_grid=plan.muslse_grid[:1], max_norm=1.0, positives="all"),))
  # The bag-of-frames plan too, on a world small enough for a test (with 4 steps per call).
  monkeypatch.setattr(warp, "QUICK_BAGS_PLAN", warp.Plan(
      "bags300", budget_s=0.3, patience=3, lightfm_grid=((0.05, 10),),
      muslse_grid=(("adagrad", 0.1),), batch_size=16, steps_per_call=4,
      bags=warp.BofWorld(train_songs=300, test_songs=100, codewords=200, tags=20, topics=5,
                         frames=(40, 80))))
  table = warp.run(quick=True, cache_dir=str(tmp_path))
  assert "bag-of-frames world 'bags300': 300 training songs" in table
  # A plan's C replaces both tables' (the tags-only recipe's one C); without one, the config's.
  tiny, bags = table.split("bag-of-frames world 'bags300'")
  assert "MUSLSE's C (max-norm of the V and T rows) 1 / 1;" in tiny
  assert "MUSLSE's C (max-norm of the V and T rows) 4 / 4;" in bags
  # loss.positives=all: a step updates every tag of its songs, so one LightFM epoch of updates
  # is one pass over the training songs; one positive per song: the pairs over the batch.
  songs = int(re.search(r"world 'tiny': (\d+) training songs", tiny).group(1))
  pairs = int(re.search(r"(\d+) \(song, tag\) pairs", tiny).group(1))
  batch = int(re.search(r"MUSLSE every \d+ steps \(x(\d+) songs", tiny).group(1))
  assert f"MUSLSE every {math.ceil(songs / batch)} steps (x{batch} songs, each with all its tags" in tiny
  assert pairs > songs
  bag_pairs = int(re.search(r"(\d+) \(song, tag\) pairs", bags).group(1))
  assert f"MUSLSE every {math.ceil(bag_pairs / 16)} steps (x16 songs = one LightFM epoch" in bags
  assert all(p.max_norm == 1.0 for p in warp.FULL_PLANS) and warp.BAGS_PLAN.max_norm is None
  assert table.startswith(warp.INSTALL_HINT)
  assert "bash launch/install_peers.sh" in table
  rows = [line for line in table.splitlines() if line.startswith("| MUSLSE")]
  assert rows and "LightFM not installed" in table
  for row in rows:
    cells = [c.strip() for c in row.split("|")]
    # system, setting, examples/s, cores, best @ time, to target, compile, + compile, ratio, evals
    assert cells[6] == cells[8] == "n/a" and cells[9] == "-"
    assert re.fullmatch(r"[01]\.\d{4} @ \d+\.\d{3} s", cells[5]), cells[5]
    assert float(cells[3].replace(",", "")) > 0 and float(cells[4]) > 0 and float(cells[7]) > 0


@pytest.fixture(scope="module")
def bag_world():
  world = warp.BofWorld(train_songs=300, test_songs=100, codewords=200, tags=20, topics=5,
                        frames=(40, 80), seed=3)
  return world, warp.make_bof_world(world, batch_size=16)


def test_bag_world_is_muslse_data_with_the_promised_shape(bag_world):
  world, data = bag_world
  train, test = data.splits["train"], data.splits["test"]
  assert (len(train), len(test)) == (300, 100)
  assert data.info["num_features"] == 200 and data.info["num_tags"] == 20
  assert data.tables.song_idx.shape == train.idx.shape and data.tables.task_names == (warp.TASK,)
  for split in (train, test):
    assert (split.val != 0).sum(1).min() >= 1
    # Distinct codewords per bag, l2-normalised counts, padding with value 0.
    for row_idx, row_val in zip(split.idx[:20], split.val[:20]):
      ids = row_idx[row_val != 0]
      assert len(np.unique(ids)) == len(ids)
    np.testing.assert_allclose(np.linalg.norm(split.val, axis=1), 1.0, rtol=1e-5)
    counts = split.tags.sum(1)
    assert counts.min() >= 1 and 2.0 < counts.mean() < 6.0        # 1 + Poisson(3)
  # At most the frames drawn; the mean is what the info reports.
  assert data.info["avg_nonzero_features"] == pytest.approx(
      np.concatenate([(s.val != 0).sum(1) for s in (train, test)]).mean())
  assert data.info["bag_width"] == max(s.idx.shape[1] for s in (train, test)) <= world.frames[1]
  assert data.info["bag_width"] == max((s.val != 0).sum(1).max() for s in (train, test))
  again = warp.make_bof_world(world, batch_size=16)                  # seeded: the same world
  np.testing.assert_array_equal(again.splits["test"].idx, test.idx)
  np.testing.assert_array_equal(again.splits["test"].tags, test.tags)


def test_bag_world_tags_are_learnable_from_the_bags(bag_world):
  """Ridge regression from dense bags to tags beats tag popularity on the held-out songs: the
  topics shape both, so a model of the bags can rank tags (the world is a fair test of WARP)."""
  from sklearn.linear_model import Ridge
  _, data = bag_world
  train, test = data.splits["train"], data.splits["test"]
  dense = lambda s: warp.bag_matrix(s, data.info["num_features"]).toarray()
  ridge = Ridge(alpha=1.0).fit(dense(train), train.tags.astype(np.float32))
  learned = np.nanmean(warp.per_song_p_at_3(ridge.predict(dense(test)), test.tags))
  popular = np.nanmean(warp.per_song_p_at_3(np.tile(train.tags.mean(0), (len(test), 1)), test.tags))
  assert learned > popular + 0.1, (learned, popular)
