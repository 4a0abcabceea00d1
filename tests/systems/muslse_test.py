"""MUSLSE's system module: constraints, losses on known problems, ensembles, evaluation, tasks."""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import muslse as muslse_config
from musemb import metrics
from musemb import sharding
from musemb import train
from musemb.systems import muslse
from musemb.systems.muslse import data as bof_data
from musemb.systems.muslse import evaluation
from musemb.systems.muslse import tasks as muslse_tasks


@contextlib.contextmanager
def absltest_logs():
  """The messages absl logs inside the block (absl's handler does not reach pytest's caplog)."""
  records = []
  handler = logging.Handler()
  handler.emit = lambda record: records.append(record.getMessage())
  logger = logging.getLogger("absl")
  logger.addHandler(handler)
  try:
    yield records
  finally:
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def tiny_data(tiny_dataset_dir, tmp_path_factory):
  config = muslse_config.get_config("tiny")
  config.data_dir = tiny_dataset_dir
  return config, muslse.load_data(config, str(tmp_path_factory.mktemp("w")))


def test_init_is_normal_with_std_one_over_sqrt_d_and_projected():
  config = muslse_config.get_config("tiny")
  config.model.embed_dim, config.model.max_norm, config.model.ensemble = 64, 100.0, 2
  info = {"num_features": 500, "num_artists": 30, "num_tags": 20}
  p = muslse.init(config, info, jax.random.key(0))["params"]
  assert p["V"].shape == (2, 500, 64) and p["A"].shape == (2, 30, 64) and p["T"].shape == (2, 20, 64)
  assert np.std(np.asarray(p["V"])) == pytest.approx(1 / 8, rel=0.05)
  config.model.max_norm = 0.5
  config.model.max_norms.audio = config.model.max_norms.tags = 0.0
  p = muslse.init(config, info, jax.random.key(0))["params"]
  for x in p.values():
    assert np.linalg.norm(np.asarray(x), axis=-1).max() <= 0.5 + 1e-6


def test_each_table_has_its_own_c_where_set():
  config = muslse_config.get_config("tiny")
  config.model.max_norm = 1.0
  config.model.max_norms.audio, config.model.max_norms.artists, config.model.max_norms.tags = (
      4.0, 0.0, 2.0)
  x = jnp.array([[[30.0, 40.0], [0.3, 0.4]]])
  out = muslse.project({"V": x, "A": x, "T": x}, config)
  norms = {k: np.linalg.norm(np.asarray(v), axis=-1)[0] for k, v in out.items()}
  np.testing.assert_allclose(norms["V"], [4.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(norms["A"], [1.0, 0.5], rtol=1e-6)   # 0: the shared max_norm
  np.testing.assert_allclose(norms["T"], [2.0, 0.5], rtol=1e-6)
  # The defaults: five tasks free the audio and tag rows; tagatune has one C for both.
  default, tagatune = muslse_config.get_config(), muslse_config.get_config("tagatune")
  assert [muslse.table_max_norm(default, t) for t in "VAT"] == [4.0, 1.0, 4.0]
  assert [muslse.table_max_norm(tagatune, t) for t in "VAT"] == [1.0, 1.0, 1.0]


def test_project_only_shrinks_rows_above_c():
  config = muslse_config.get_config("tiny")
  config.model.max_norm = 1.0
  x = jnp.array([[[3.0, 4.0], [0.3, 0.4]]])
  out = np.asarray(muslse.project({"V": x, "A": x, "T": x}, config)["A"])
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
  np.testing.assert_allclose(np.asarray(muslse_tasks.embed_songs(V, idx, val)), dense @ V, rtol=1e-5)


def test_bag_forms_agree_and_bad_forms_are_errors():
  """The gather + segment sum and the densified GEMM are the same product (and its gradient)."""
  from musemb.models import linear
  rng = np.random.default_rng(1)
  V = jnp.asarray(rng.normal(size=(30, 5)).astype(np.float32))
  idx = jnp.asarray(rng.integers(0, 30, (2, 3, 7)).astype(np.int32))   # leading dims [2, 3]
  val = rng.random((2, 3, 7)).astype(np.float32)
  val[..., -3:] = 0.0
  val = jnp.asarray(val)
  outs, grads = {}, {}
  for form in ("gather", "dense", "auto"):
    outs[form] = np.asarray(linear.apply_sparse(V, idx, val, form))
    grads[form] = np.asarray(jax.grad(lambda v, f=form: jnp.sum(
        linear.apply_sparse(v, idx, val, f) ** 2))(V))
  assert outs["dense"].shape == (2, 3, 5)
  for form in ("dense", "auto"):
    np.testing.assert_allclose(outs[form], outs["gather"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[form], grads["gather"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="model.bag_form"):
    linear.apply_sparse(V, idx, val, "sparse")


def test_scoring_all_tags_once_is_the_per_block_scoring(tiny_data, monkeypatch):
  """Tags (Y <= one block) with capped draws: one [B, Y] score matrix looked up per block gives
  the loss and the gradient of scoring each block's gathered label rows (same draws, same rank
  estimates)."""
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.names, config.loss.kind = "tag_prediction", "warp"
  config.loss.budget = 64                     # a block of 64 draws holds the tiny world's 43 tags
  config.loss.max_draws = 4096                # the block sampler (uncapped: the closed form)
  p = muslse.init(config, data.info, jax.random.key(4))["params"]
  batch = {"song": jnp.asarray(data.train_batch(0)["song"])}
  tables = jax.tree.map(jnp.asarray, data.tables)

  def loss_and_grad():
    fn = lambda params: muslse_tasks.task_loss("tag_prediction", jax.tree.map(lambda x: x[0], params),
                                              batch, tables, jax.random.key(7), config)
    return jax.value_and_grad(fn)(p)

  assert data.info["num_tags"] <= config.loss.budget          # so a step scores all tags once
  loss_all, grad_all = loss_and_grad()
  monkeypatch.setattr(muslse_tasks, "_scores_all_labels", lambda prob, budget: False)
  loss_block, grad_block = loss_and_grad()
  assert float(loss_all) > 0
  np.testing.assert_allclose(float(loss_all), float(loss_block), rtol=1e-5)
  for name in grad_all:
    np.testing.assert_allclose(grad_all[name], grad_block[name], rtol=1e-4, atol=1e-6)


def test_ensemble_scores_are_summed_at_test_time(tiny_data):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.model.ensemble = 3
  p = muslse.init(config, data.info, jax.random.key(1))["params"]
  s = data.splits["test"]
  songs = evaluation.song_embeddings(p, s.idx, s.val)
  summed = sum(np.asarray(muslse_tasks.embed_songs(p["V"][m], s.idx, s.val)) @ np.asarray(p["T"][m]).T
               for m in range(3))
  np.testing.assert_allclose(songs @ evaluation.label_embeddings(p, "T").T, summed, rtol=1e-4, atol=1e-5)


def test_tag_prediction_eval_equals_full_matrix_precision(tiny_data):
  config, data = tiny_data
  p = muslse.init(config, data.info, jax.random.key(2))["params"]
  means, per_query = evaluation.evaluate_tasks(p, data, config, "test", tasks=("tag_prediction",))
  s = data.splits["test"]
  scores = evaluation.song_embeddings(p, s.idx, s.val) @ evaluation.label_embeddings(p, "T").T
  for k in (1, 3, 6):
    assert means[f"tag_prediction/p@{k}"] == pytest.approx(
        metrics.precision_at_k(scores, s.tags, k), abs=1e-9)


def test_label_bias_is_off_by_default_and_adds_a_constant_per_tag(tiny_data):
  """`model.label_bias`: a learned constant per tag added to every song's score for it, in the
  training step's scores (the WARP loss) and in evaluation; off by default (the paper's model)."""
  config, data = tiny_data
  assert muslse_config.get_config().model.label_bias is False
  assert "T_bias" not in muslse.init(config, data.info, jax.random.key(5))["params"]
  config = config.copy_and_resolve_references()
  config.model.label_bias, config.model.ensemble = True, 2
  config.tasks.names, config.loss.kind = "tag_prediction", "warp"
  p = muslse.init(config, data.info, jax.random.key(5))["params"]
  num_tags = data.info["num_tags"]
  np.testing.assert_array_equal(p["T_bias"], np.zeros((2, num_tags)))       # starts at zero
  bias = np.random.default_rng(0).normal(size=(2, num_tags)).astype(np.float32) * 10
  biased = dict(p, T_bias=jnp.asarray(bias))
  assert muslse.project(biased, config)["T_bias"] is biased["T_bias"]       # not constrained

  # Training scores: query . label + bias[label], members each with their own bias.
  song = jnp.asarray(data.train_batch(0)["song"])
  member = jax.tree.map(lambda x: x[0], biased)
  query, embed_tags = muslse_tasks.with_label_bias(
      muslse_tasks.embed_songs(member["V"], data.tables.song_idx[song], data.tables.song_val[song]),
      member["T"], member["T_bias"])
  ids = jnp.broadcast_to(jnp.arange(num_tags), (len(song), num_tags))
  plain = np.asarray(query[:, :-1]) @ np.asarray(member["T"]).T
  np.testing.assert_allclose(np.einsum("bd,bkd->bk", query, embed_tags(ids)) - plain,
                             np.broadcast_to(bias[0], plain.shape), rtol=1e-5, atol=1e-4)
  # The bias gets a gradient from the WARP loss; the paper's tables are unchanged in shape.
  grads = jax.grad(lambda q: muslse_tasks.task_loss(
      "tag_prediction", q, {"song": song}, jax.tree.map(jnp.asarray, data.tables),
      jax.random.key(7), config))(jax.tree.map(lambda x: x[0], p))
  assert grads["T_bias"].shape == (num_tags,) and np.abs(np.asarray(grads["T_bias"])).sum() > 0

  # Evaluation: the members' biases summed, added to every test song's tag scores.
  s = data.splits["test"]
  scores = evaluation.song_embeddings(biased, s.idx, s.val) @ evaluation.label_embeddings(biased, "T").T
  np.testing.assert_allclose(evaluation.label_bias(biased, "T"), bias.sum(0), rtol=1e-6)
  means, _ = evaluation.evaluate_tasks(biased, data, config, "test", tasks=("tag_prediction",))
  unbiased, _ = evaluation.evaluate_tasks(p, data, config, "test", tasks=("tag_prediction",))
  for k in (1, 3):
    assert means[f"tag_prediction/p@{k}"] == pytest.approx(
        metrics.precision_at_k(scores + bias.sum(0), s.tags, k), abs=1e-9)
  assert means["tag_prediction/p@1"] != unbiased["tag_prediction/p@1"]    # the bias mattered


def test_similar_songs_positives_are_other_songs_of_the_artist(tiny_data):
  config, data = tiny_data
  p = muslse.init(config, data.info, jax.random.key(3))["params"]
  means, per_query = evaluation.evaluate_tasks(p, data, config, "test", tasks=("similar_songs",))
  s = data.splits["test"]
  songs = evaluation.song_embeddings(p, s.idx, s.val)
  scores = songs @ songs.T
  np.fill_diagonal(scores, -np.inf)
  relevance = (s.artist[:, None] == s.artist[None, :]) & ~np.eye(len(s), dtype=bool)
  assert means["similar_songs/p@1"] == pytest.approx(metrics.precision_at_k(scores, relevance, 1))


def _tag_losses(config, data, params, rngs):
  """task_loss of tag prediction on one batch, one value per rng (vmapped)."""
  batch = {"song": jnp.asarray(data.train_batch(0)["song"])}
  tables = jax.tree.map(jnp.asarray, data.tables)
  fn = lambda rng: muslse_tasks.task_loss("tag_prediction", params, batch, tables, rng, config)
  return np.asarray(jax.jit(jax.vmap(fn))(rngs))


def test_closed_form_warp_has_the_block_samplers_expected_loss(tiny_data):
  """Tags with every label scored: the closed-form draw (`sample_warp_scored`) and the block
  sampler give the same expected loss over the randomness of a step (same positives)."""
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.names, config.loss.kind, config.loss.budget = "tag_prediction", "warp", 64
  params = jax.tree.map(lambda x: x[0], muslse.init(config, data.info, jax.random.key(4))["params"])
  rngs = jax.random.split(jax.random.key(9), 2000)
  closed = _tag_losses(config, data, params, rngs)
  config.loss.max_draws = 4096                                   # the block sampler's path
  blocks = _tag_losses(config, data, params, rngs)
  se = np.sqrt(closed.var() / closed.size + blocks.var() / blocks.size)
  assert closed.std() > 0 and abs(closed.mean() - blocks.mean()) < 4 * se, (
      closed.mean(), blocks.mean(), se)


def test_all_positives_sum_every_positive_label(tiny_data):
  """loss.positives=all: each positive tag of a song gets its own WARP term (eq. 10's sum over
  j in y_i); with T = 0 every negative violates at once (N = 1), so each term is L(Y - 1) * 1."""
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.names, config.loss.kind, config.loss.budget = "tag_prediction", "warp", 64
  params = jax.tree.map(lambda x: x[0], muslse.init(config, data.info, jax.random.key(4))["params"])
  params["T"] = jnp.zeros_like(params["T"])
  num_tags = data.info["num_tags"]
  weight = float(np.sum(1.0 / np.arange(1, num_tags)))              # harmonic L(Y - 1)
  tags = data.tables.song_tags[np.asarray(data.train_batch(0)["song"])]
  rngs = jax.random.split(jax.random.key(1), 3)
  one = _tag_losses(config, data, params, rngs)
  np.testing.assert_allclose(one, weight * np.sum(tags.any(1)), rtol=1e-5)
  config.loss.positives = "all"
  every = _tag_losses(config, data, params, rngs)
  np.testing.assert_allclose(every, weight * tags.sum(), rtol=1e-5)
  assert tags.sum() > np.sum(tags.any(1))                            # songs with several tags


@pytest.mark.parametrize("change", [dict(max_draws=64), dict(kind="auc"), dict(budget=8),
                                    dict(positives="some")])
def test_all_positives_needs_scored_uncapped_warp(tiny_data, change):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.names, config.loss.kind, config.loss.budget = "tag_prediction", "warp", 64
  config.loss.positives = "all"
  config.loss.update(change)
  params = jax.tree.map(lambda x: x[0], muslse.init(config, data.info, jax.random.key(4))["params"])
  with pytest.raises(ValueError, match="loss.positives"):
    _tag_losses(config, data, params, jax.random.split(jax.random.key(1), 1))


@pytest.mark.parametrize("kind", ["warp", "warp_exact", "auc"])
def test_every_loss_kind_trains_all_tasks_and_keeps_the_constraints(tiny_data, kind):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.loss.kind = kind
  config.tasks.mode = "sum"
  tx = train.make_optimizer(config)
  mesh = sharding.make_mesh(1)
  state = train.create_train_state(muslse.SYSTEM, config, data.info, tx, mesh)
  tables = sharding.put_replicated(data.tables, mesh)
  step = train.make_train_step(muslse.SYSTEM, config, tx)
  losses = []
  for i in range(30):
    state, m = step(state, sharding.shard_batch(data.train_batch(i), mesh), tables)
    losses.append([np.asarray(m["task_losses"][t]) for t in data.task_names])
  losses = np.array(losses)
  assert np.isfinite(losses).all() and (losses[:5].sum(0) > 0).all()
  assert losses[-10:].mean() < losses[:10].mean()
  for name, x in state.params.items():
    bound = muslse.table_max_norm(config, name)
    assert np.linalg.norm(np.asarray(x), axis=-1).max() <= bound * (1 + 1e-5), name


def test_random_task_mode_runs_one_task_per_step_in_proportion_to_weights(tiny_data):
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.tasks.weights.tag_prediction = 3.0
  v = muslse.init(config, data.info, jax.random.key(0))
  batch = data.train_batch(0)
  tables = jax.tree.map(jnp.asarray, data.tables)
  fn = jax.jit(lambda r: muslse.loss(v, batch, tables, r, config)[1]["task_losses"])
  chosen = []
  for i in range(300):
    losses = fn(jax.random.key(i))
    ran = [j for j, t in enumerate(data.task_names) if np.isfinite(np.asarray(losses[t]))]
    assert len(ran) == 1
    chosen.append(ran[0])
  counts = np.bincount(chosen, minlength=len(data.task_names)) / 300
  weights = np.array([config.tasks.weights[t] for t in data.task_names])
  np.testing.assert_allclose(counts, weights / weights.sum(), atol=0.08)


def test_tasks_without_data_are_skipped_with_a_log_line(tiny_data):
  _, data = tiny_data
  none = [np.zeros(0, np.int32)] * data.info["num_artists"]
  with absltest_logs() as records:
    kept = bof_data.supported_tasks(("tag_prediction", "similar_artists"), data.splits["train"],
                                    data.info["num_tags"], none)
  assert kept == ("tag_prediction",)
  assert any("Skipping task similar_artists" in r and "no artist-artist similarity" in r
             for r in records), records
  with pytest.raises(ValueError, match="none of the configured tasks"):
    bof_data.supported_tasks(("similar_artists",), data.splits["train"], data.info["num_tags"], none)


def test_unknown_task_and_loss_are_clear_errors(tiny_data):
  config, data = tiny_data
  with pytest.raises(ValueError, match="genre_prediction"):
    bof_data.supported_tasks(("tag_prediction", "genre_prediction"), data.splits["train"],
                             data.info["num_tags"], data.similar_edges["train"])
  config = config.copy_and_resolve_references()
  config.loss.kind = "hinge"
  v = muslse.init(config, data.info, jax.random.key(0))
  tables = data.tables.replace(task_names=("tag_prediction",))
  with pytest.raises(ValueError, match="loss.kind"):
    muslse.loss(v, data.train_batch(0), jax.tree.map(jnp.asarray, tables), jax.random.key(0),
                config)


def test_random_task_mode_computes_one_task_per_step(tiny_data):
  """The task switch must stay a conditional (not a select over all tasks), ensembles included."""
  config, data = tiny_data
  config = config.copy_and_resolve_references()
  config.model.ensemble = 2
  p = muslse.init(config, data.info, jax.random.key(0))["params"]
  tables = jax.tree.map(jnp.asarray, data.tables)
  grad = jax.grad(lambda pp: muslse.loss({"params": pp}, data.train_batch(0), tables,
                                         jax.random.key(0), config)[0])
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


def test_an_epoch_gives_every_task_one_pass_over_the_training_songs(tiny_config, tmp_path):
  """One task per step (random mode) needs len(tasks) x the songs per epoch; sum mode the songs."""
  from musemb import systems, train
  system = systems.get("muslse")
  random_mode = system.load_data(tiny_config, str(tmp_path))
  songs, tasks = random_mode.info["num_train_songs"], len(random_mode.task_names)
  assert tasks == 5 and random_mode.info["num_train_examples"] == songs * tasks
  tiny_config.tasks.mode = "sum"
  assert system.load_data(tiny_config, str(tmp_path)).info["num_train_examples"] == songs
  tiny_config.tasks.mode, tiny_config.tasks.names = "random", "tag_prediction"
  tag_only = system.load_data(tiny_config, str(tmp_path)).info
  assert tag_only["num_train_examples"] == songs
  # So `train.epochs` means the same number of tag updates either way.
  tiny_config.train.num_steps, tiny_config.train.epochs = 0, 10.0
  steps_random = train.resolve_num_steps(tiny_config, random_mode.info)
  assert abs(steps_random - tasks * train.resolve_num_steps(tiny_config, tag_only)) <= tasks


def test_random_positive_is_uniform_over_each_rows_positives():
  rows = np.array([[0, 1, 0, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0],
                   [1, 1, 1, 1, 1, 1, 1]], bool)
  mask = np.tile(rows, (6000, 1))
  choice, valid = jax.jit(muslse_tasks._random_positive)(jax.random.key(0), mask)  # pylint: disable=protected-access
  choice, valid = np.asarray(choice).reshape(6000, 4), np.asarray(valid).reshape(6000, 4)
  np.testing.assert_array_equal(valid, np.tile(rows.any(1), (6000, 1)))
  for r in (0, 1, 3):
    picked = choice[:, r]
    assert rows[r][picked].all()  # always a positive of its row
    freq = np.bincount(picked, minlength=7)[rows[r]] / 6000
    np.testing.assert_allclose(freq, 1 / rows[r].sum(), atol=0.025)
  assert (choice[:, 2] == 0).all()  # no positive: column 0, marked invalid
