"""MUSLSE's system module: constraints, losses on known problems, ensembles, evaluation, tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import muslse as muslse_config
from musemb import metrics
from musemb.data import bof_data
from musemb.systems import muslse
from musemb import train


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset_dir, tmp_path_factory):
  config = muslse_config.get_config("tiny")
  config.data_dir = tiny_dataset_dir
  return config, muslse.load_data(config, str(tmp_path_factory.mktemp("w")))


def test_init_is_normal_with_std_one_over_sqrt_d_and_projected():
  config = muslse_config.get_config("tiny")
  config.model.embed_dim, config.model.max_norm, config.model.ensemble = 64, 100.0, 2
  info = {"num_features": 500, "num_artists": 30, "num_tags": 20}
  p = muslse.init(config, info, jax.random.key(0))
  assert p["V"].shape == (2, 500, 64) and p["A"].shape == (2, 30, 64) and p["T"].shape == (2, 20, 64)
  assert np.std(np.asarray(p["V"])) == pytest.approx(1 / 8, rel=0.05)
  config.model.max_norm = 0.5
  p = muslse.init(config, info, jax.random.key(0))
  for x in p.values():
    assert np.linalg.norm(np.asarray(x), axis=-1).max() <= 0.5 + 1e-6


def test_project_only_shrinks_rows_above_c():
  config = muslse_config.get_config("tiny")
  config.model.max_norm = 1.0
  x = jnp.array([[[3.0, 4.0], [0.3, 0.4]]])
  out = np.asarray(muslse.project({"V": x, "A": x, "T": x}, config)["V"])
  np.testing.assert_allclose(out[0, 0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_allclose(out[0, 1], [0.3, 0.4])


def test_embed_songs_is_a_sparse_matvec():
  rng = np.random.default_rng(0)
  V = rng.normal(size=(50, 8)).astype(np.float32)
  idx = rng.integers(0, 50, (4, 6)).astype(np.int32)
  val = rng.random((4, 6)).astype(np.float32)
  val[:, -2:] = 0.0                                   # padding contributes nothing
  dense = np.zeros((4, 50), np.float32)
  np.add.at(dense, (np.repeat(np.arange(4), 6), idx.ravel()), val.ravel())
  np.testing.assert_allclose(np.asarray(muslse.embed_songs(V, idx, val)), dense @ V, rtol=1e-5)


def test_ensemble_scores_are_summed_at_test_time(tiny_data):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.model.ensemble = 3
  p = muslse.init(config, data.info, jax.random.key(1))
  s = data.splits["test"]
  songs = muslse.song_embeddings(p, s.idx, s.val)
  summed = sum(np.asarray(muslse.embed_songs(p["V"][m], s.idx, s.val)) @ np.asarray(p["T"][m]).T
               for m in range(3))
  np.testing.assert_allclose(songs @ muslse.label_embeddings(p, "T").T, summed, rtol=1e-4, atol=1e-5)


def test_tag_prediction_eval_equals_full_matrix_precision(tiny_data):
  config, data = tiny_data
  p = muslse.init(config, data.info, jax.random.key(2))
  means, per_query = muslse.evaluate_tasks(p, data, config, "test", tasks=("tag_prediction",))
  s = data.splits["test"]
  scores = muslse.song_embeddings(p, s.idx, s.val) @ muslse.label_embeddings(p, "T").T
  for k in (1, 3, 6):
    assert means[f"tag_prediction/p@{k}"] == pytest.approx(
        metrics.precision_at_k(scores, s.tags, k), abs=1e-9)


def test_similar_songs_positives_are_other_songs_of_the_artist(tiny_data):
  config, data = tiny_data
  p = muslse.init(config, data.info, jax.random.key(3))
  means, per_query = muslse.evaluate_tasks(p, data, config, "test", tasks=("similar_songs",))
  s = data.splits["test"]
  songs = muslse.song_embeddings(p, s.idx, s.val)
  scores = songs @ songs.T
  np.fill_diagonal(scores, -np.inf)
  relevance = (s.artist[:, None] == s.artist[None, :]) & ~np.eye(len(s), dtype=bool)
  assert means["similar_songs/p@1"] == pytest.approx(metrics.precision_at_k(scores, relevance, 1))


@pytest.mark.parametrize("kind", ["warp", "warp_exact", "auc"])
def test_every_loss_kind_trains_all_tasks_and_keeps_the_constraints(tiny_data, kind):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.loss.kind = kind
  config.tasks.mode = "sum"
  tx = train.make_optimizer(config)
  params = muslse.init(config, data.info, jax.random.key(0))
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(1)))
  tables = jax.tree.map(jnp.asarray, data.tables)
  step = jax.jit(lambda s, b: train.train_step(s, b, tables, system=muslse, config=config,
                                               tx=tx, task_names=data.task_names))
  losses = []
  for i in range(30):
    state, m = step(state, data.train_batch(i))
    losses.append(np.asarray(m["task_losses"]))
  losses = np.array(losses)
  assert np.isfinite(losses).all() and (losses[:5].sum(0) > 0).all()
  assert losses[-10:].mean() < losses[:10].mean()
  for x in jax.tree.leaves(state.params):
    assert np.linalg.norm(np.asarray(x), axis=-1).max() <= config.model.max_norm * (1 + 1e-5)


def test_random_task_mode_runs_one_task_per_step_in_proportion_to_weights(tiny_data):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.weights.tag_prediction = 3.0
  p = muslse.init(config, data.info, jax.random.key(0))
  batch = data.train_batch(0)
  tables = jax.tree.map(jnp.asarray, data.tables)
  fn = jax.jit(lambda r: muslse.loss(p, batch, tables, r, config, data.task_names)[1])
  chosen = [int(np.flatnonzero(np.isfinite(np.asarray(fn(jax.random.key(i))["task_losses"])))[0])
            for i in range(300)]
  counts = np.bincount(chosen, minlength=len(data.task_names)) / 300
  weights = np.array([config.tasks.weights[t] for t in data.task_names])
  np.testing.assert_allclose(counts, weights / weights.sum(), atol=0.08)


def test_tasks_without_data_are_skipped_with_a_log_line(tiny_data, caplog):
  _, data = tiny_data
  none = [np.zeros(0, np.int32)] * data.info["num_artists"]
  kept = bof_data.supported_tasks(("tag_prediction", "similar_artists"), data.splits["train"],
                                  data.info["num_tags"], none)
  assert kept == ("tag_prediction",)
  with pytest.raises(ValueError, match="none of the configured tasks"):
    bof_data.supported_tasks(("similar_artists",), data.splits["train"], data.info["num_tags"], none)


def test_unknown_task_and_loss_are_clear_errors(tiny_data):
  config, data = tiny_data
  with pytest.raises(ValueError, match="genre_prediction"):
    bof_data.supported_tasks(("tag_prediction", "genre_prediction"), data.splits["train"],
                             data.info["num_tags"], data.similar_edges["train"])
  config = config.copy_and_resolve_references()
  config.loss.kind = "hinge"
  p = muslse.init(config, data.info, jax.random.key(0))
  with pytest.raises(ValueError, match="loss.kind"):
    muslse.loss(p, data.train_batch(0), jax.tree.map(jnp.asarray, data.tables), jax.random.key(0),
                config, ("tag_prediction",))


def test_random_task_mode_computes_one_task_per_step(tiny_data):
  """The task switch must stay a conditional (not a select over all tasks), ensembles included."""
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.model.ensemble = 2
  p = muslse.init(config, data.info, jax.random.key(0))
  tables = jax.tree.map(jnp.asarray, data.tables)
  grad = jax.grad(lambda pp: muslse.loss(pp, data.train_batch(0), tables, jax.random.key(0),
                                         config, data.task_names)[0])
  jaxpr = str(jax.make_jaxpr(grad)(p))
  assert "cond[" in jaxpr


def test_similar_artist_edges_are_split_as_unordered_pairs(tiny_data):
  _, data = tiny_data
  seen = {}
  for split, per_artist in data.similar_edges.items():
    for a, others in enumerate(per_artist):
      for b in others:
        pair = (min(a, b), max(a, b))
        assert seen.setdefault(pair, split) == split, f"{pair} in {seen[pair]} and {split}"
        assert a in per_artist[b]                    # symmetric within the split
  assert {"train", "valid", "test"} <= set(seen.values())
