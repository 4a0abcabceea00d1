"""Playlist-based tag propagation (Lin et al.) on the shared loop: tables, loss, metrics, report."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from configs import tagprop as tagprop_config
from musemb import sharding as sharding_lib
from musemb import systems
from musemb import train
from musemb.data.sources import records
from musemb.reports import runs
from musemb.reports import stats
from musemb.samplers import propagation
from musemb.systems import tagprop
from musemb.systems.tagprop import data as tagprop_data
from musemb.systems.tagprop import evaluation
from musemb.systems.tagprop import report
from musemb.systems.tagprop import taxonomy as taxonomy_lib


def _config(dataset_dir, variant="tiny"):
  config = tagprop_config.get_config(variant)
  config.data_dir = dataset_dir
  config.data.sample_rate = 16000      # the shared tiny world (conftest) is prepared at 16 kHz
  # Two blocks over 27 samples: what is under test is the data, the step and the evaluation
  # around the network, and compiling the tiny variant's six blocks costs seconds per test.
  config.model.widths, config.model.stem_width, config.model.final_width = (4, 4), 4, 8
  config.data.crop_samples = 3 ** 3
  return config


@pytest.fixture(scope="module")
def tiny_runs(tiny_dataset_dir, tmp_path_factory):
  """The baseline and the proposed model trained for a few steps on the tiny world."""
  root = tmp_path_factory.mktemp("tagprop")
  workdirs = {}
  for name, variant in (("baseline", "tiny,baseline"), ("proposed", "tiny")):
    config = _config(tiny_dataset_dir, variant)
    config.train.num_steps = 2      # one validation, at the end
    config.train.eval_every = 0
    workdirs[name] = str(root / name)
    train.train_and_evaluate(config, workdirs[name])
  return workdirs


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset_dir):
  """The proposed model's data on the tiny world (the heads and r do not change the songs)."""
  return tagprop.load_data(_config(tiny_dataset_dir), "/nonexistent")


# ----------------------------------------------------------------------------- end to end


def test_baseline_and_proposed_train_and_report_table_one(tiny_runs):
  for name, key in (("baseline", "tagprop_baseline"), ("proposed", "tagprop")):
    metrics = runs.read_metrics(tiny_runs[name])
    for metric in ("annotation/map", "retrieval/map", "retrieval/roc_auc"):
      assert 0.0 < metrics[f"{key}/{metric}"] <= 1.0
    assert metrics[f"{key}/num_tags"] > 0
    assert metrics[f"{key}/playlists/train_songs_in_playlists"] > 0
  path = systems.get("tagprop").report(tiny_runs["proposed"],
                                       baseline_workdirs=(tiny_runs["baseline"],))
  text = open(path).read()
  table = text.split("## Table I")[1].split("##")[0]
  assert "| Baseline (eq. 1)" in table and "| Proposed (eq. 3, single head), r = 0.4" in table
  assert "95% paired bootstrap" in text and "Fig. 5" in text and "Fig. 2" in text
  assert os.path.exists(os.path.join(tiny_runs["proposed"], "fig5_popularity.png"))
  merged = runs.read_metrics(tiny_runs["proposed"])     # one metrics.json holds both rows
  assert "tagprop_baseline/annotation/map" in merged and "tagprop/annotation/map" in merged
  # The proposed row's improvement is the ratio of the two runs' own values.
  base, prop = merged["tagprop_baseline/retrieval/map"], merged["tagprop/retrieval/map"]
  assert f"({100 * (prop / base - 1):+.1f}%)" in table


def test_per_query_arrays_reproduce_the_means(tiny_runs):
  z = np.load(os.path.join(tiny_runs["proposed"], "per_query.npz"))
  metrics = runs.read_metrics(tiny_runs["proposed"])
  assert np.nanmean(z["tagprop/annotation/ap"]) == pytest.approx(metrics["tagprop/annotation/map"])
  assert np.nanmean(z["tagprop/retrieval/roc_auc"]) == pytest.approx(
      metrics["tagprop/retrieval/roc_auc"])
  assert len(z["annotation/query_ids"]) == len(z["tagprop/annotation/ap"])
  assert len(z["retrieval/query_ids"]) == len(z["retrieval/train_counts"]) == metrics[
      "tagprop/num_tags"]


# ----------------------------------------------------------------------------- tables and leaks


def test_no_validation_or_test_tags_reach_a_training_target(tiny_data):
  data = tiny_data
  songs, tables = data.songs, data.tables
  held_out = songs.splits != "train"
  assert held_out.any() and songs.tags[held_out].any()     # they do have tags to leak
  song_tags = np.asarray(tables["song_tags"])
  assert not song_tags[held_out].any()
  assert not np.asarray(tables["propagation"].source_mask)[held_out].any()
  np.testing.assert_array_equal(song_tags[~held_out], songs.tags[~held_out])
  # Held-out songs share playlists with training songs, so walks do land on them ...
  sequences = data.sequences
  neighbours = {s for row in sequences for a, b in zip(row, row[1:]) for s in (a, b)
                if (a >= 0 and b >= 0 and held_out[a] != held_out[b])}
  assert neighbours
  train_songs = np.flatnonzero(~held_out)
  batch = jnp.asarray(np.repeat(train_songs, 200), jnp.int32)
  walk = jax.jit(propagation.sample)(tables["propagation"], batch, jax.random.key(0))
  landed = np.asarray(walk.position) >= 0
  stops = np.array([sequences[p][i] if p >= 0 else -1
                    for p, i in zip(np.asarray(walk.playlist), np.asarray(walk.position))])
  assert held_out[stops[landed & (stops >= 0)]].any()
  # ... and give no partner there; every partner is a training song, its targets its own tags.
  partner = np.asarray(walk.partner)
  assert (partner[held_out[np.maximum(stops, 0)] & (stops >= 0)] == -1).all()
  assert not held_out[partner[partner >= 0]].any()
  targets, has = propagation.propagated_tags(tables["song_tags"], walk.partner)
  np.testing.assert_array_equal(np.asarray(targets)[np.asarray(has)],
                                songs.tags[partner[partner >= 0]])


def test_playlists_join_by_track_id_with_gaps():
  index = {"a": 0, "b": 1, "c": 2}
  playlists = [records.Playlist("p0", ("a", None, "b", "zz")), records.Playlist("p1", ("c", "a"))]
  sequences, counts = tagprop_data.playlist_sequences(playlists, index)
  assert sequences == [[0, -1, 1, -1], [2, 0]]
  assert counts == {"playlists": 2, "entries": 6, "gaps": 1, "not_prepared": 1}


def test_top_n_tags_are_the_most_frequent_training_tags(tiny_dataset_dir):
  train_tags = np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 1, 0]], bool)
  # Counts 2, 0, 3, 2: tags 0 and 3 tie, and the vocabulary order breaks it.
  np.testing.assert_array_equal(tagprop_data.select_tags(train_tags, 2, "abcd"), [2, 0])
  np.testing.assert_array_equal(tagprop_data.select_tags(train_tags, 3, "abcd"), [2, 0, 3])
  np.testing.assert_array_equal(tagprop_data.select_tags(train_tags, 0, "abcd"), [0, 1, 2, 3])
  with pytest.raises(ValueError, match="--top_n_tags=5"):
    tagprop_data.select_tags(train_tags, 5, "abcd")
  config = _config(tiny_dataset_dir, "tiny,top_n=5")
  data = tagprop.load_data(config, "/nonexistent")
  train_tags = data.splits["train"].labels.tags
  assert data.info["num_tags"] == 5 and data.songs.tags.shape[1] == 5
  counts = train_tags.sum(axis=0)
  assert sorted(data.info["tag_train_counts"], reverse=True) == data.info["tag_train_counts"]
  assert min(data.info["tag_train_counts"]) >= np.sort(counts)[-5]
  batch = data.train_batch(0)
  assert batch["tags"].shape == (config.train.batch_size, 5) and batch["song"].dtype == np.int32
  # The batch's song indices point at the rows of those very tracks' tags.
  np.testing.assert_array_equal(batch["tags"].astype(bool), data.songs.tags[batch["song"]])


# ----------------------------------------------------------------------------- loss and heads


@functools.lru_cache(maxsize=None)
def _init_model(model):
  # Jitted as the loop does (create_train_state): flax's eager init takes seconds op by op. Cached
  # by the (hashable) module, so tests of one network share its variables and compilation.
  return jax.jit(lambda key: dict(model.init({"params": key}, jnp.zeros((2, model.num_samples)),
                                             train=False)))(jax.random.key(1))


def _init(config, info):
  return _init_model(tagprop.make_model(config, info["num_tags"]))


@functools.lru_cache(maxsize=None)
def _train_apply(model):
  """Jitted `model.apply` in train mode: (variables, audio, dropout key) -> outputs."""
  return jax.jit(lambda v, a, k: model.apply(v, a, train=True, rngs={"dropout": k},
                                             mutable=["batch_stats"])[0])


def test_loss_is_eq3_with_the_walk_of_the_step_for_both_heads_and_eq1_for_the_baseline(
    tiny_dataset_dir, tiny_data):
  data = tiny_data                                       # the heads do not change the data
  num_tags = data.info["num_tags"]
  batch = {k: jnp.asarray(v) for k, v in data.train_batch(0).items()}
  rng = jax.random.key(7)
  rng_dropout, rng_walk = jax.random.split(rng)
  walk = jax.jit(propagation.sample)(data.tables["propagation"], batch["song"], rng_walk)
  partner = np.asarray(walk.partner)
  assert (partner >= 0).any()
  y = np.asarray(batch["tags"], np.float64)
  y_prop = np.where(partner[:, None] >= 0, data.songs.tags[np.maximum(partner, 0)], 0.0)
  bce = lambda z, t: np.mean(np.logaddexp(0, z) - t * z, axis=1)   # mean over tags
  for head in ("single", "separate"):
    config = _config(tiny_dataset_dir, f"tiny,head={head}")
    variables = _init(config, data.info)
    assert variables["params"]["head"]["kernel"].shape[-1] == num_tags * (
        2 if head == "separate" else 1)
    value, aux = jax.jit(lambda v, b, t, k, c=config: tagprop.loss(v, b, t, k, c))(
        variables, batch, data.tables, rng)
    # By hand: the same dropout key gives the same outputs, the walk key the same partners.
    model = tagprop.make_model(config, num_tags)
    out = _train_apply(model)(variables, batch["audio"], rng_dropout)
    x = np.asarray(out, np.float64)
    support = x[:, num_tags:] if head == "separate" else x[:, :num_tags]
    own = bce(x[:, :num_tags], y)
    expected = np.mean(own + np.where(partner >= 0,
                                      np.asarray(walk.weight) * bce(support, y_prop), 0))
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert float(aux["propagation"]["partner_rate"]) == pytest.approx(np.mean(partner >= 0))
    if head == "single":
      # The baseline's loss is eq. (1) alone, on the same outputs (its model is the single head's);
      # it needs no tables.
      baseline = _config(tiny_dataset_dir, "tiny,baseline")
      value, _ = jax.jit(lambda v, b, k: tagprop.loss(v, b, {}, k, baseline))(variables, batch,
                                                                               rng)
      assert float(value) == pytest.approx(np.mean(own), rel=1e-5)


# ----------------------------------------------------------------------------- beyond the paper


def test_search_range_groups_by_hand():
  names = ["rock", "jazz", "piano", "happy", "guitar", "whistling"]
  taxonomy = {"genre": ["rock", "jazz", "punk"], "instrument": ["piano", "guitar"],
              "mood": ["happy"], "odd": ["piano"]}
  ranges, group, found = tagprop_data.search_range_groups(
      names, taxonomy, {"genre": 0.8, "instrument": 0.0, "mood": 0.4}, 0.4)
  # mood's r is objective.r: its tags stay in group 0 with the untaxed "whistling".
  assert ranges == [0.4, 0.8, 0.0]
  np.testing.assert_array_equal(group, [1, 1, 2, 0, 2, 0])
  assert found == {"genre": 2, "instrument": 2, "mood": 1}
  with pytest.raises(ValueError, match="'piano' is in categories 'instrument'"):
    tagprop_data.search_range_groups(names, taxonomy, {"instrument": 0.2, "odd": 0.6}, 0.4)
  # Two categories that share a tag at one r are fine.
  _, group, _ = tagprop_data.search_range_groups(names, taxonomy, {"instrument": 0.2, "odd": 0.2},
                                                 0.4)
  np.testing.assert_array_equal(group, [0, 0, 1, 0, 1, 0])
  with pytest.raises(ValueError, match="not categories of"):
    tagprop_data.search_range_groups(names, taxonomy, {"era": 0.2}, 0.4)
  assert taxonomy_lib.parse_category_r(" genre=0.8, instrument=0 ") == {"genre": 0.8,
                                                                       "instrument": 0.0}
  assert taxonomy_lib.parse_category_r("") == {}
  for bad in ("genre", "genre=1.5", "=0.2", "genre=x", "genre=0.1,genre=0.2"):
    with pytest.raises(ValueError, match="category_r"):
      taxonomy_lib.parse_category_r(bad)


def test_builtin_taxonomy_covers_the_world_as_won_groups_it():
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  from musemb.systems.won import data as won_data  # pylint: disable=g-import-not-at-top
  taxonomy = taxonomy_lib.load_taxonomy("builtin")
  assert {t: c for c, tags in taxonomy.items() for t in tags} == won_data.builtin_taxonomy()
  assert sorted(t for tags in taxonomy.values() for t in tags) == sorted(synthetic.TAG_VOCABULARY)


def test_a_search_range_per_category_is_eq3_per_group_by_hand(tiny_dataset_dir, tiny_data):
  """genre tags walk at r = 1, instrument tags at r = 0 (the song itself, weight 1: the closed
  form of a walk that never moves), the rest at objective.r = 0.4, in one step."""
  config = _config(tiny_dataset_dir, "tiny")
  config.eval.taxonomy = "builtin"
  config.objective.category_r = "genre=1,instrument=0"
  data = tiny_data
  names = data.info["tag_names"]
  ranges, tag_group, _ = tagprop_data.search_range_groups(
      names, taxonomy_lib.load_taxonomy("builtin"), {"genre": 1.0, "instrument": 0.0}, 0.4)
  assert ranges == [0.4, 1.0, 0.0] and {0, 1, 2} <= set(tag_group.tolist())
  tables = tagprop_data.device_tables(data.songs, data.sequences, 0.4, ranges, tag_group)
  assert [float(t.r) for t in tables["ranges"]] == [1.0, 0.0]
  num_tags = data.info["num_tags"]
  batch = {k: jnp.asarray(v) for k, v in data.train_batch(0).items()}
  rng = jax.random.key(3)
  rng_dropout, rng_walk = jax.random.split(rng)
  walks = [jax.jit(propagation.sample)(t, batch["song"], jax.random.fold_in(rng_walk, g) if g
                                       else rng_walk)
           for g, t in enumerate([tables["propagation"], *tables["ranges"]])]
  partner = np.stack([np.asarray(w.partner) for w in walks])          # [3, B]
  weight = np.stack([np.asarray(w.weight) for w in walks])
  songs = np.asarray(batch["song"])
  # r = 0: every song in a playlist is its own partner, with eq. (4)'s weight 1.
  walked = partner[2] >= 0
  assert walked.any() and (partner[2][walked] == songs[walked]).all()
  np.testing.assert_allclose(weight[2][walked], 1.0)
  variables = _init(config, data.info)
  value, _ = jax.jit(lambda v, b, t, k: tagprop.loss(v, b, t, k, config))(variables, batch, tables,
                                                                         rng)
  model = tagprop.make_model(config, num_tags)
  out = _train_apply(model)(variables, batch["audio"], rng_dropout)
  x = np.asarray(out, np.float64)
  y = np.asarray(batch["tags"], np.float64)
  bce = np.logaddexp(0, x) - y * x                                     # [B, T]
  expected = bce.mean(axis=1)
  for g in range(3):
    cols = tag_group == g
    p = partner[g]
    y_g = np.where(p[:, None] >= 0, data.songs.tags[np.maximum(p, 0)][:, cols], 0.0)
    support = np.logaddexp(0, x[:, cols]) - y_g * x[:, cols]
    expected = expected + np.where(p >= 0, weight[g] * support.sum(axis=1), 0.0) / num_tags
  assert float(value) == pytest.approx(float(np.mean(expected)), rel=1e-5)
  # The run's data builds the same tables from the config (and the key says what it is).
  loaded = tagprop.load_data(config, "/nonexistent")
  np.testing.assert_array_equal(loaded.tables["tag_range"], tag_group)
  assert [float(t.r) for t in loaded.tables["ranges"]] == [1.0, 0.0]
  assert loaded.info["search_ranges"] == ranges
  assert tagprop.metrics_key(config) == "tagprop_category_r"
  bad = _config(tiny_dataset_dir, "tiny")
  bad.objective.category_r = "activity=0.2"         # not a category of the paper's Table II
  with pytest.raises(ValueError, match="eval.taxonomy=''"):
    tagprop.load_data(bad, "/nonexistent")


def test_shortchunk_trains_with_propagation(tiny_dataset_dir, tiny_data):
  """The objective does not depend on the network: Won et al.'s short-chunk CNN takes the same
  step, and a few steps on one batch lower eq. (3)."""
  config = tagprop_config.get_config("tiny,shortchunk")
  config.data_dir = tiny_dataset_dir
  config.data.sample_rate = 16000
  config.optimizer.learning_rate = 0.05
  assert tagprop.metrics_key(config) == "tagprop_shortchunk"
  data = tiny_data
  model = tagprop.make_model(config, data.info["num_tags"])
  assert isinstance(model, tagprop.ShortChunkTagger) and model.num_samples == 4096
  tx = train.make_optimizer(config)
  system = systems.get("tagprop")
  state = train.create_train_state(system, config, data.info, tx, sharding_lib.make_mesh())
  assert "dense2" in state.params and "layer2_conv" in state.params
  step = train.make_train_step(system, config, tx)
  rng = np.random.default_rng(0)
  songs = np.flatnonzero(data.songs.source_mask)[:8]
  batch = {"audio": 0.1 * rng.standard_normal((8, 4096)).astype(np.float32),
           "tags": data.songs.tags[songs].astype(np.float32), "song": songs.astype(np.int32)}
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch, data.tables)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_the_baseline_builds_no_propagation_tables(tiny_dataset_dir):
  data = tagprop.load_data(_config(tiny_dataset_dir, "tiny,baseline"), "/nonexistent")
  assert data.tables == {} and data.info["playlists"]["train_songs_in_playlists"] > 0


# ----------------------------------------------------------------------------- configs


def test_config_variants():
  top50, top1000 = tagprop_config.get_config("top50"), tagprop_config.get_config("top1000")
  assert (top50.data.top_n_tags, top50.objective.r) == (50, 0.4)
  assert (top1000.data.top_n_tags, top1000.objective.r) == (1000, 0.2)
  assert tagprop_config.get_config("top1000,r=0.6").objective.r == 0.6
  assert tagprop_config.get_config("r=0").objective.r == 0.0
  assert tagprop.metrics_key(tagprop_config.get_config("top50,baseline")) == "tagprop_baseline"
  assert tagprop.metrics_key(tagprop_config.get_config("top50")) == "tagprop"
  assert tagprop.metrics_key(tagprop_config.get_config("head=separate")) == "tagprop_separate"
  assert tagprop.metrics_key(tagprop_config.get_config("baseline,shortchunk")) == (
      "tagprop_baseline_shortchunk")
  shortchunk = tagprop_config.get_config("top50,shortchunk")
  assert (shortchunk.model.name, shortchunk.data.crop_samples) == ("shortchunk", 172 * 512)
  assert tagprop_config.MODELS == tagprop.MODELS
  from musemb.models import shortchunk as shortchunk_model  # pylint: disable=g-import-not-at-top
  assert tagprop_config.SHORTCHUNK_WIDTHS == shortchunk_model.WON_WIDTHS
  assert tagprop_config.SHORTCHUNK_SAMPLES == shortchunk_model.NUM_SAMPLES
  both = tagprop_config.get_config("head=separate")
  both.objective.category_r = "genre=0.8"
  assert tagprop.metrics_key(both) == "tagprop_separate_category_r"
  default = tagprop_config.get_config()
  assert default.data.crop_samples == 3 ** 10 and default.data.sample_rate == 22050
  assert (default.optimizer.learning_rate, default.optimizer.momentum) == (0.01, 0.9)
  assert default.optimizer.plateau_factor == 0.2 and default.train.eval_metric == "-bce"
  assert default.train.patience + default.optimizer.plateau_drops == 12
  assert tagprop_config.HEADS == tagprop.HEADS
  with pytest.raises(ValueError, match="supportive head"):
    tagprop_config.get_config("baseline,head=separate")
  with pytest.raises(ValueError, match="head="):
    tagprop_config.get_config("head=double")
  bad = tagprop_config.get_config("tiny")
  bad.objective.r = 1.5
  with pytest.raises(ValueError, match="objective.r"):
    tagprop.check_config(bad)
  bad = tagprop_config.get_config("tiny,baseline")
  bad.objective.category_r = "genre=0.8"
  with pytest.raises(ValueError, match="propagates nothing"):
    tagprop.check_config(bad)
  bad = tagprop_config.get_config("tiny")
  bad.model.name = "vgg"
  with pytest.raises(ValueError, match="model.name"):
    tagprop.check_config(bad)


# ----------------------------------------------------------------------------- metrics, stats


def test_tagging_metrics_match_scikit_learn():
  rng = np.random.default_rng(0)
  scores = np.round(rng.random((30, 12)), 1)               # ties, handled as scikit-learn does
  tags = rng.random((30, 12)) < 0.3
  tags[:, 0] = True                                        # every song: not a retrieval query
  tags[:, 1] = False                                       # no song: not a retrieval query
  means, per = evaluation.tagging_metrics(scores, tags)
  ap_songs = [sk_metrics.average_precision_score(tags[i], scores[i]) for i in range(30)]
  np.testing.assert_allclose(per["annotation_ap"], ap_songs)
  assert means["annotation/map"] == pytest.approx(np.mean(ap_songs))
  scored = list(range(2, 12))
  ap_tags = [sk_metrics.average_precision_score(tags[:, t], scores[:, t]) for t in scored]
  auc_tags = [sk_metrics.roc_auc_score(tags[:, t], scores[:, t]) for t in scored]
  np.testing.assert_allclose(per["retrieval_ap"][scored], ap_tags)
  np.testing.assert_allclose(per["retrieval_auc"][scored], auc_tags)
  assert np.isnan(per["retrieval_ap"][:2]).all() and means["retrieval/num_tags"] == 10
  assert means["retrieval/map"] == pytest.approx(np.mean(ap_tags))
  assert means["retrieval/roc_auc"] == pytest.approx(
      sk_metrics.roc_auc_score(tags[:, scored], scores[:, scored], average="macro"))
  untagged = tags.copy()
  untagged[3] = False                                      # a song without tags: no annotation AP
  means, per = evaluation.tagging_metrics(scores, untagged)
  assert np.isnan(per["annotation_ap"][3]) and means["annotation/num_songs"] == 29
  assert means["annotation/map"] == pytest.approx(np.mean(np.delete(ap_songs, 3)))
  probabilities = np.clip(scores, 0.05, 0.95)
  assert evaluation.validation_bce(probabilities, tags) == pytest.approx(
      sk_metrics.log_loss(tags.ravel(), probabilities.ravel()))


def test_paired_bootstrap_interval():
  rng = np.random.default_rng(1)
  b = rng.random(200)
  shifted = stats.paired_bootstrap(b + 0.1, b, resamples=500)
  assert shifted["difference_low"] == pytest.approx(0.1) == shifted["difference_high"]
  noisy = stats.paired_bootstrap(b + rng.normal(0.0, 0.2, 200), b, resamples=2000, seed=3)
  assert noisy["difference_low"] < noisy["difference"] < noisy["difference_high"]
  half_width = (noisy["difference_high"] - noisy["difference_low"]) / 2
  assert half_width == pytest.approx(1.96 * 0.2 / np.sqrt(200), rel=0.2)   # the normal theory
  assert noisy["relative"] == pytest.approx(noisy["mean_a"] / noisy["mean_b"] - 1)
  assert stats.paired_bootstrap([], [])["difference"] is None


def test_popularity_bins_and_tag_similarity_by_hand():
  counts = np.array([1, 9, 5, 7, 3])        # popularity order: tags 1, 3, 2, 4, 0
  proposed = np.array([0.5, 0.2, 0.3, 0.4, np.nan])
  baseline = np.array([0.25, 0.1, 0.3, 0.2, 0.1])
  bins = report.popularity_bins(counts, proposed, baseline, 2)
  assert [(b["first_rank"], b["last_rank"], b["tags"]) for b in bins] == [(1, 2, 2), (3, 4, 1),
                                                                           (5, 5, 1)]
  assert bins[0]["relative"] == pytest.approx(0.6 / 0.3 - 1)   # tags 1 and 3
  assert bins[1]["relative"] == pytest.approx(0.0)              # tag 2 (tag 4 has no value)
  assert bins[2]["relative"] == pytest.approx(1.0)              # tag 0
  tags = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)       # song 3 has no tag
  s = evaluation.tag_similarity_by_distance([[0, 1, -1, 2], [3, 0, 2]], tags, 3, random_pairs=10)
  half = 1 / np.sqrt(2)
  # d=1: (0,1) (3,0)x (0,2); d=2: (0,-1)x (1,2) (3,2)x; d=3: (0,2). x = not a pair.
  np.testing.assert_array_equal(s["pairs"], [2, 1, 1])
  np.testing.assert_allclose(s["mean_cosine"], [(half + 0) / 2, half, 0.0])
