"""Factor regression from raw audio (Platt ch. 6) on the shared loop: data, evaluation, resume."""

import os

import jax
import numpy as np
import pytest
import scipy.sparse
from sklearn import metrics as sk_metrics

from musemb import evaluate
from musemb import train
from musemb import utils
from musemb.data import pipeline
from musemb.data import prepared as prepared_lib
from musemb.systems.samplecnn import data as audio_data
from musemb.systems.samplecnn import evaluation as samplecnn_evaluation


@pytest.fixture(scope="module")
def tiny_factors(tmp_path_factory):
  """WMF factors of the tiny world's listeners (launch.wmf's library side)."""
  from configs import wmf as wmf_config
  from musemb.systems.wmf import fit as wmf_run
  workdir = str(tmp_path_factory.mktemp("wmf"))
  wmf_run.fit_and_save(wmf_config.get_config("tiny"), workdir)
  return workdir


def _config(dataset_dir, factors, **overrides):
  from configs import samplecnn
  config = samplecnn.get_config("tiny")
  config.data_dir = dataset_dir
  config.data.factors = factors
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- evaluation maths


def test_recommendation_metrics_match_a_hand_computation():
  counts = scipy.sparse.csr_matrix(np.array([
      [3, 0, 1, 1, 0, 0],    # user 0: train songs 0, 2; test song 3
      [0, 2, 0, 0, 5, 1],    # user 1: train song 1; test songs 4, 5
      [0, 0, 0, 1, 0, 0],    # user 2: no training plays: left out
      [1, 1, 0, 0, 0, 0],    # user 3: no test plays: left out
  ], np.float64))
  train_cols, test_cols = np.array([0, 1, 2]), np.array([3, 4, 5])
  rng = np.random.default_rng(0)
  train_vectors, test_vectors = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  means, per_user = evaluate.recommendation_metrics(counts, train_cols, test_cols, train_vectors,
                                                    test_vectors, n=2)
  np.testing.assert_array_equal(per_user["users"], [0, 1])
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  dense = counts.toarray()
  aucs, aps = [], []
  for u in (0, 1):
    # The training songs' vectors are l2-normalised first, as the network's predictions are.
    user = unit(dense[u, train_cols] @ unit(train_vectors))
    scores = unit(test_vectors) @ user
    relevant = dense[u, test_cols] > 0
    aucs.append(sk_metrics.roc_auc_score(relevant, scores))
    order = np.argsort(-scores)[:2]
    hits = relevant[order]
    precision = np.cumsum(hits) / np.arange(1, 3)
    aps.append((precision * hits).sum() / min(relevant.sum(), 2))
  np.testing.assert_allclose(per_user["roc_auc"], aucs)
  np.testing.assert_allclose(per_user["map@2"], aps)
  assert means["roc_auc"] == pytest.approx(np.mean(aucs))
  assert means["num_users"] == 2
  # Both vectors None: seeded random scores, chance-level on a large problem.
  big = scipy.sparse.random(300, 400, density=0.05, random_state=1, format="csr")
  chance, _ = evaluate.recommendation_metrics(big, np.arange(200), np.arange(200, 400), None, None)
  assert chance["roc_auc"] == pytest.approx(0.5, abs=0.02)
  with pytest.raises(ValueError, match="both"):
    evaluate.recommendation_metrics(counts, train_cols, test_cols, train_vectors, None)


def test_user_vectors_ignore_the_norms_of_the_song_vectors():
  """Predicted factors are unit vectors (the head's l2 normalisation); the upper bound's WMF factors
  are not. Users are built from unit song vectors in both rows, so a song's norm never weighs it."""
  counts = scipy.sparse.random(40, 30, density=0.3, random_state=2, format="csr") * 10
  rng = np.random.default_rng(3)
  train_cols, test_cols = np.arange(20), np.arange(20, 30)
  train_vectors, test_vectors = rng.normal(size=(20, 5)), rng.normal(size=(10, 5))
  scale = rng.uniform(0.1, 10.0, size=(20, 1))
  a, _ = evaluate.recommendation_metrics(counts, train_cols, test_cols, train_vectors, test_vectors)
  b, _ = evaluate.recommendation_metrics(counts, train_cols, test_cols, scale * train_vectors,
                                         test_vectors)
  assert a == pytest.approx(b, rel=1e-6)
  np.testing.assert_allclose(
      evaluate.user_vectors(counts[:, train_cols], scale * train_vectors),
      utils.normalize_rows(counts[:, train_cols] @ utils.normalize_rows(train_vectors)), rtol=1e-5,
      atol=1e-6)


def test_upper_bound_is_the_predicted_row_fed_the_wmf_factors(tiny_factors):
  """Table 6.1's two rows differ only in the song vectors: predictions equal to the unit WMF factors
  score exactly the upper bound."""
  targets = pipeline.load_factor_targets(tiny_factors)
  n = len(targets.ids)
  order = np.random.default_rng(0).permutation(n)
  def pred(rows):
    factors = targets.values[rows]
    return {"track_ids": targets.ids[rows], "factors": factors,
            "outputs": utils.normalize_rows(factors), "has_factors": np.ones(len(rows), bool)}
  config = _config("", tiny_factors)
  out = samplecnn_evaluation.recommendation(pred(order[:n // 2]), pred(order[n // 2:]), config)
  assert out["recommendation/roc_auc"] == pytest.approx(out["recommendation/upper_roc_auc"])
  assert out["recommendation/map@500"] == pytest.approx(out["recommendation/upper_map@500"])


def test_song_columns_join_every_track_of_a_column_once():
  """Two MSD tracks of one matched key share a play-count column: the first (training split
  first) stands for it, so a column is never both a user-vector song and a ranked test song."""
  column_of = {"TRA1": 0, "TRA2": 0, "TRB": 1, "TRC": 2, "TRD": 3}
  pred = lambda ids, has: {"track_ids": np.asarray(ids), "has_factors": np.asarray(has)}
  keep_train, train_cols, keep_test, test_cols = samplecnn_evaluation.song_columns(
      pred(["TRB", "TRA2", "TRX", "TRD"], [True, True, True, False]),
      pred(["TRA1", "TRC", "TRC", "TRD"], [True, True, True, True]), column_of)
  np.testing.assert_array_equal(keep_train, [True, True, False, False])   # TRX: no column
  np.testing.assert_array_equal(train_cols, [1, 0])
  np.testing.assert_array_equal(keep_test, [False, True, False, True])    # TRA1: TRA2's column
  np.testing.assert_array_equal(test_cols, [2, 3])


# ----------------------------------------------------------------------------- data


def test_windows_are_the_first_adjacent_crops(tiny_dataset_dir):
  prepared = prepared_lib.load_prepared(tiny_dataset_dir)
  window, max_windows = 3 ** 7, 5
  raw = {ex["track_id"].decode(): ex["audio"].astype(np.float32) / 32768.0 for ex in
         prepared.builder.as_dataset(split="test").as_numpy_iterator()}
  batches = list(pipeline.audio_windows(prepared.builder, "test", batch_size=6, window=window,
                                        max_windows=max_windows))
  seen = 0
  for batch in batches:
    assert batch["windows"].shape == (6, max_windows, window)
    for i in np.flatnonzero(batch["valid"]):
      audio = raw[batch["track_id"][i].decode()]
      count = pipeline.num_windows(len(audio), window, max_windows)
      assert batch["num_windows"][i] == count
      np.testing.assert_array_equal(batch["windows"][i, :count].reshape(-1),
                                    audio[:count * window])
      seen += 1
  assert seen == len(raw)
  assert not batches[-1]["valid"].all() or len(raw) % 6 == 0   # the last batch is padded


def test_train_batches_keep_only_tracks_with_factors_and_resume(tiny_dataset_dir, tiny_factors,
                                                                tmp_path):
  # Drop a third of the items from the factors: they must not reach training.
  full = pipeline.load_factor_targets(tiny_factors)
  keep = np.arange(len(full.ids)) % 3 != 0
  partial = str(tmp_path / "factors.npz")
  np.savez(partial, item_ids=full.ids[keep], item_factors=full.values[keep])
  data = audio_data.load_data(_config(tiny_dataset_dir, partial), str(tmp_path))
  train_split = data.splits["train"]
  assert data.info["coverage"]["train"]["with_factors"] == int(train_split.has_target.sum())
  assert 0 < train_split.has_target.sum() < len(train_split.has_target)
  factor_of = dict(zip(full.ids[keep].tolist(), full.values[keep]))
  first = [data.train_batch(step) for step in range(4)]
  allowed = {tuple(np.round(v, 6)) for v in factor_of.values()}
  for batch in first:
    assert batch["audio"].shape == (8, 3 ** 7)
    assert all(tuple(np.round(v, 6)) in allowed for v in batch["factors"])
  # Asking for step 2 again reopens the stream at that batch: exact resume.
  again = data.train_batch(2)
  np.testing.assert_array_equal(again["audio"], first[2]["audio"])
  np.testing.assert_array_equal(again["factors"], first[2]["factors"])
  np.testing.assert_array_equal(data.train_batch(3)["audio"], first[3]["audio"])


def test_missing_factors_are_clear_errors(tiny_dataset_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="launch.wmf"):
    audio_data.load_data(_config(tiny_dataset_dir, str(tmp_path / "nowhere")), str(tmp_path))
  with pytest.raises(ValueError, match="needs latent factors"):
    audio_data.load_data(_config(tiny_dataset_dir, ""), str(tmp_path))


# ----------------------------------------------------------------------------- the system


def test_factor_regression_trains_resumes_and_reports(tiny_dataset_dir, tiny_factors, tmp_path):
  from musemb.systems import samplecnn
  straight = str(tmp_path / "straight")
  config = _config(tiny_dataset_dir, tiny_factors, **{"train.eval_every": 0})
  metrics = train.train_and_evaluate(config, straight)
  for key in ("factors/mse", "factors/cosine", "recommendation/map@500",
              "recommendation/roc_auc", "recommendation/random_roc_auc",
              "recommendation/upper_roc_auc", "transfer/predicted_factors_roc_auc",
              "transfer/true_factors_roc_auc"):
    assert np.isfinite(metrics[f"samplecnn/{key}"]), key
  # The trained network regresses the factors better than the untrained one (same test songs).
  untrained = samplecnn.evaluate(samplecnn.init(config, samplecnn.load_data(config, straight).info,
                                                jax.random.key(config.seed)),
                                 samplecnn.load_data(config, straight), config, "test")
  assert metrics["samplecnn/factors/mse"] < untrained["factors/mse"], untrained
  assert metrics["samplecnn/factors/cosine"] > untrained["factors/cosine"], untrained
  # Ground-truth factors rank the held-out songs better than chance on the tiny world.
  assert (metrics["samplecnn/recommendation/upper_roc_auc"]
          > metrics["samplecnn/recommendation/random_roc_auc"])
  assert os.path.exists(os.path.join(straight, "predictions.npz"))

  # Stopped at step 10 and resumed: the same parameters and batch statistics as the straight run.
  resumed = str(tmp_path / "resumed")
  config.train.num_steps = 10
  train.train_and_evaluate(config, resumed)
  config.train.num_steps = 20
  train.train_and_evaluate(config, resumed, allow_changes=("train.num_steps",))
  data = samplecnn.load_data(config, resumed)
  _, a = train.load_variables(straight, samplecnn.SYSTEM, config, data.info, best=False)
  _, b = train.load_variables(resumed, samplecnn.SYSTEM, config, data.info, best=False)
  assert set(a) == {"params", "batch_stats"}
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # The batch statistics were trained (they start at mean 0, variance 1).
  init = samplecnn.init(config, data.info, jax.random.key(0))
  moved = [np.abs(x - y).max() for x, y in zip(_leaves(init["batch_stats"]),
                                               _leaves(a["batch_stats"]))]
  assert min(moved) > 0


def test_window_average_is_the_mean_of_per_window_predictions(tiny_dataset_dir, tiny_factors,
                                                              tmp_path):
  from musemb.systems import samplecnn
  config = _config(tiny_dataset_dir, tiny_factors)
  data = samplecnn.load_data(config, str(tmp_path))
  variables = samplecnn.init(config, data.info, jax.random.key(1))
  model = samplecnn_evaluation.make_model(config, data.info)
  pred = samplecnn_evaluation.predict_split(variables, data, config, "test")
  batch = next(data.windows("test", 4, config.data.crop_samples, config.eval.windows))
  for i in range(4):
    n = batch["num_windows"][i]
    each = np.asarray(model.apply(variables, batch["windows"][i, :n], train=False))
    row = list(pred["track_ids"]).index(batch["track_id"][i].decode())
    np.testing.assert_allclose(pred["outputs"][row], each.mean(0), rtol=1e-4, atol=1e-5)


def test_tags_head_reports_direct_tagging(tiny_dataset_dir, tmp_path):
  from musemb.systems import samplecnn
  config = _config(tiny_dataset_dir, "", **{"train.eval_every": 0, "train.num_steps": 60})
  from configs import samplecnn as samplecnn_config
  samplecnn_config._set_head(config, "tags")
  workdir = str(tmp_path / "tags")
  metrics = train.train_and_evaluate(config, workdir)
  assert not any(k.startswith("samplecnn/") for k in metrics)
  # Direct tagging beats the untrained network on the test songs' per-tag ROC AUC.
  data = samplecnn.load_data(config, workdir)
  untrained = samplecnn.evaluate(samplecnn.init(config, data.info, jax.random.key(config.seed)),
                                 data, config, "test")
  assert metrics["samplecnn_tags/tags/roc_auc"] > untrained["tags/roc_auc"] + 0.02, untrained


def test_plateau_drops_lower_the_learning_rate_then_stop(tiny_config, tmp_path, monkeypatch):
  """Validation that never improves: N drops by the factor, one per exhausted patience, then stop."""
  import dataclasses
  from musemb import systems
  from musemb.systems import muslse
  flat = dataclasses.replace(muslse.SYSTEM, evaluate=lambda *args: {"tag_prediction/p@1": 0.5})
  monkeypatch.setattr(systems, "get", lambda name: flat)
  tiny_config.train.eval_metric = "tag_prediction/p@1"
  tiny_config.train.eval_every = 2
  tiny_config.train.patience = 1
  tiny_config.train.num_steps = 40
  tiny_config.optimizer.plateau_drops = 2
  tiny_config.optimizer.plateau_factor = 0.2
  workdir = str(tmp_path / "plateau")
  train.train_and_evaluate(tiny_config, workdir)
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                             options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    # best at step 2; drops at steps 4 and 6; stop at step 8.
    assert m.latest_step() == 8
    restored = m.restore(8, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                    progress=ocp.args.JsonRestore()))
  assert restored.progress["lr_drops"] == 2
  assert restored.progress["stopped_early"]
  rate = np.asarray(restored.state["opt_state"]["hyperparams"]["learning_rate"])
  assert rate == pytest.approx(tiny_config.optimizer.learning_rate * 0.04, rel=1e-6)
