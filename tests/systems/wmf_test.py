"""The WMF launcher's library side (musemb.wmf_run) and the ALS benchmark's data and metric code."""

from __future__ import annotations

import json
import os

from absl import logging as absl_logging
import numpy as np
import pytest
import scipy.sparse

from configs import wmf as wmf_config
from musemb.data.sources import listening
from musemb.systems.wmf import fit as wmf_run
from launch.benchmarks import als


def _tiny(iterations: int = 4):
  config = wmf_config.get_config("tiny")
  config.wmf.iterations = iterations
  # The tiny world has 80 tracks and users play up to 40: a cut-off of 50 would list nearly every
  # unseen item, so rank only the top 10 to tell a model from chance.
  config.eval.recall_k = 10
  config.eval.map_n = 10
  return config


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  metrics = wmf_run.fit_and_save(_tiny(4), workdir)
  return workdir, metrics


def test_writes_factors_with_ids_and_metrics_beating_random(straight):
  workdir, metrics = straight
  with np.load(os.path.join(workdir, "factors.npz")) as z:
    assert int(z["iteration"]) == 4
    users, items = z["user_ids"], z["item_ids"]
    assert z["user_factors"].shape == (len(users), 8)
    assert z["item_factors"].shape == (len(items), 8)
    assert len(set(users.tolist())) == len(users) == 24
    plays = listening.load_plays(_tiny().data)
    assert users.tolist() == plays.users and items.tolist() == plays.items
    losses = z["losses"]
  assert losses.shape == (4,)
  assert np.all(np.diff(losses) < 0), losses
  with open(os.path.join(workdir, "metrics.json")) as f:
    saved = json.load(f)
  assert saved == pytest.approx(metrics)
  assert metrics["wmf/recommendation/map@10"] > metrics["wmf/recommendation/random_map@10"] + 0.05
  assert (metrics["wmf/recommendation/recall@10"]
          > metrics["wmf/recommendation/random_recall@10"] + 0.05)


def test_resume_matches_straight_run(straight, tmp_path):
  workdir, metrics = straight
  resumed = str(tmp_path)
  wmf_run.fit_and_save(_tiny(2), resumed)
  with np.load(os.path.join(resumed, "factors.npz")) as z:
    assert int(z["iteration"]) == 2
  again = wmf_run.fit_and_save(_tiny(4), resumed)
  with np.load(os.path.join(workdir, "factors.npz")) as a, \
       np.load(os.path.join(resumed, "factors.npz")) as b:
    assert int(b["iteration"]) == 4
    np.testing.assert_allclose(b["user_factors"], a["user_factors"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["item_factors"], a["item_factors"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
  quality = lambda m: {k: v for k, v in m.items()
                       if not k.startswith(("wmf/fit/", "wmf/heldout_fit/"))}
  assert quality(again) == pytest.approx(quality(metrics), abs=1e-6)
  for fit in ("fit", "heldout_fit"):
    assert again[f"wmf/{fit}/resumed_from"] == 2 and metrics[f"wmf/{fit}/resumed_from"] == 0
    assert again[f"wmf/{fit}/seconds"] > 0
  with np.load(os.path.join(resumed, "heldout_factors.npz")) as z:
    assert int(z["iteration"]) == 4 and str(z["fitted_on"]) == "train_split"


def test_resume_refuses_other_factor_count(straight, tmp_path):
  workdir, _ = straight
  config = _tiny(5)
  config.wmf.factors = 4
  with pytest.raises(ValueError, match="fresh --workdir"):
    wmf_run.fit_and_save(config, workdir)


def test_split_holdout_partitions_each_user():
  rng = np.random.default_rng(1)
  dense = (rng.random((30, 40)) < 0.2) * rng.integers(1, 9, (30, 40))
  dense[0] = 0
  dense[1] = 0
  dense[1, 3] = 5          # a single play stays in training
  counts = scipy.sparse.csr_matrix(dense)
  train, held = wmf_run.split_holdout(counts, 0.25, seed=3)
  np.testing.assert_array_equal((train + held).toarray(), dense)
  assert not (train.multiply(held)).nnz
  n = np.diff(counts.indptr)
  n_held = np.diff(held.indptr)
  expected = np.where(n >= 2, np.clip(np.rint(0.25 * n), 1, n - 1), 0)
  np.testing.assert_array_equal(n_held, expected)
  again, _ = wmf_run.split_holdout(counts, 0.25, seed=3)
  assert (again != train).nnz == 0
  with pytest.raises(ValueError, match="holdout_fraction"):
    wmf_run.split_holdout(counts, 1.0, seed=0)


def test_benchmark_data_is_seeded_long_tailed_and_exact():
  size = als.DataSize(users=500, items=2000, nnz=20_000, topics=8)
  counts = als.make_data(size, seed=0)
  assert counts.shape == (500, 2000) and counts.nnz == 20_000
  assert counts.data.min() >= 1
  assert (als.make_data(size, seed=0) != counts).nnz == 0
  assert (als.make_data(size, seed=1) != counts).nnz > 0
  per_item = np.sort(counts.getnnz(axis=0))[::-1]
  # Long tail: the top 5% of items hold far more than 5% of the pairs.
  assert per_item[:100].sum() > 0.3 * counts.nnz


def test_benchmark_times_each_iteration_of_a_fit_without_callback():
  """The suite times our fit as implicit's runs (no callback) and reads each iteration's end from
  fit's own per-iteration log records; if that message changed, run_ours says so."""
  counts = als.make_data(als.DataSize(users=60, items=300, nnz=3000, topics=4), seed=2)
  verbosity = absl_logging.get_verbosity()
  x, y, per_it, total, cpu = als.run_ours(counts, factors=4, regularization=0.01, iterations=3,
                                          alpha=10.0)
  assert x.shape == (60, 4) and y.shape == (300, 4)
  assert len(per_it) == 3 and all(s > 0 for s in per_it)
  assert sum(per_it) <= total and cpu > 0
  assert absl_logging.get_verbosity() == verbosity  # restored


def test_benchmark_quality_scores_oracle_and_chance():
  size = als.DataSize(users=60, items=300, nnz=3000, topics=4)
  counts = als.make_data(size, seed=2)
  train, held = wmf_run.split_holdout(counts, 0.2, seed=0)
  users = wmf_run.eval_users(held, 0, seed=0)
  # Oracle factors: x_u . y_i = [i held out for u], so held-out items come first.
  oracle = als.quality(held.toarray().astype(np.float32), np.eye(300, dtype=np.float32), train,
                       held, users)
  assert oracle["recall@50"] == pytest.approx(1.0)
  assert oracle["map@300"] == pytest.approx(1.0)
  chance = wmf_run.evaluate_topk(wmf_run.random_topk(train, users, 300, seed=0), held[users],
                                 recall_k=50, map_n=300)
  assert chance["recall@50"] < 0.5 and chance["map@300"] < 0.3
  # Seen items never appear in a random list.
  topk = wmf_run.random_topk(train, users, 300, seed=0)
  rows = train[users]
  for q in range(len(users)):
    seen = rows.indices[rows.indptr[q]:rows.indptr[q + 1]]
    assert not np.isin(topk[q], seen).any()
    assert (topk[q] >= 0).sum() == 300 - len(seen)


def test_taste_profile_source_reads_triplets(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "train_triplets.txt"
  lines = [f"u{u}\tSOS{i:04d}\t{rng.integers(1, 5)}" for u in range(12) for i in
           rng.choice(30, 8, replace=False)]
  path.write_text("\n".join(lines + ["broken line"]) + "\n")
  config = wmf_config.get_config("tiny,taste_profile")
  config.data.path = str(path)
  config.wmf.factors, config.wmf.iterations = 4, 2
  config.eval.max_users, config.eval.recall_k, config.eval.map_n = 0, 5, 10
  metrics = wmf_run.fit_and_save(config, str(tmp_path / "w"))
  with np.load(tmp_path / "w" / "factors.npz") as z:
    assert z["user_ids"].tolist() == [f"u{u}" for u in range(12)]
    assert z["item_factors"].shape == (len(set(l.split("\t")[1] for l in lines)), 4)
  assert {k for k in metrics if k.startswith("wmf/recommendation/")} == {
      f"wmf/recommendation/{k}" for k in ("recall@5", "map@10", "random_recall@5", "random_map@10")}
  assert metrics["wmf/fit/num_users"] == 12 and metrics["wmf/fit/factors"] == 4


def test_factor_file_holds_the_fit_on_all_plays(straight):
  """Platt §6.2.1 fits the factors on all users and tracks: the file SampleCNN and the cultural
  branch read is the ALS fit of every play, not of the 80% training split."""
  from musemb.systems.wmf import als as wmf_als
  workdir, _ = straight
  config = _tiny(4)
  w = config.wmf
  counts = listening.load_plays(config.data).to_csr()
  _, y = wmf_als.fit(counts, factors=w.factors, regularization=w.regularization, alpha=w.alpha,
                     confidence=w.confidence, eps=w.eps, iterations=w.iterations, solver=w.solver,
                     cg_steps=w.cg_steps, seed=config.seed, chunk_cells=w.chunk_cells)
  with np.load(os.path.join(workdir, "factors.npz")) as z:
    np.testing.assert_allclose(z["item_factors"], y, rtol=1e-4, atol=1e-5)


def test_lfm1b_configs_follow_the_thesis():
  """Tables 5.1-5.4 fit 40 factors for 40 iterations; chapter 6's factors are 80 factors, 80
  iterations, on the matched tracks plus the 2M most-played LFM-1b tracks."""
  lfm1b = wmf_config.get_config("lfm1b")
  assert (lfm1b.data.source, lfm1b.wmf.factors, lfm1b.wmf.iterations) == ("lfm1b", 40, 40)
  final = wmf_config.get_config("lfm1b_msd")
  assert (final.data.source, final.wmf.factors, final.wmf.iterations) == ("lfm1b_msd", 80, 80)
  assert final.data.top_n_tracks == lfm1b.data.top_n_tracks == 2_000_000
  assert wmf_config.get_config("demo").data.top_n_tracks == 0


def test_without_the_heldout_fit_the_metrics_are_omitted_and_said_to_be(tmp_path):
  from musemb.systems.wmf import report as wmf_report
  config = _tiny(2)
  config.eval.heldout_fit = False
  workdir = str(tmp_path / "w")
  metrics = wmf_run.fit_and_save(config, workdir)
  assert not any(k.startswith(("wmf/recommendation/", "wmf/heldout_fit/")) for k in metrics)
  assert "wmf/proxy_tags/roc_auc" in metrics and metrics["wmf/fit/iterations"] == 2
  assert not os.path.exists(os.path.join(workdir, "heldout_factors.npz"))
  with np.load(os.path.join(workdir, "factors.npz")) as z:
    assert str(z["fitted_on"]) == "all_plays"
  text = open(wmf_report.write_report(workdir)).read()
  assert "Omitted" in text and "eval.heldout_fit=False" in text


def test_resume_refuses_a_factor_file_fitted_on_the_training_split(straight, tmp_path):
  """A factors.npz from before the all-plays fit holds the 80% fit: resuming would pass it on."""
  workdir, _ = straight
  with np.load(os.path.join(workdir, "factors.npz")) as z:
    old = {k: z[k] for k in z.files if k not in ("fitted_on", "track_ids", "track_items")}
  os.makedirs(tmp_path / "old")
  np.savez(tmp_path / "old" / "factors.npz", **old)
  with pytest.raises(ValueError, match="fitted on train_split"):
    wmf_run.fit_and_save(_tiny(4), str(tmp_path / "old"))
