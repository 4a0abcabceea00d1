"""Tests for musemb.proxy: planted and random factors, scikit-learn references, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import linear_model
from sklearn import metrics as skm

from musemb import evaluate as proxy
from musemb import utils
from musemb.systems.wmf import data as wmf_data


def _planted(seed: int = 0, n: int = 500, f: int = 16, tags: int = 8, noise: float = 0.1):
  """Factors whose directions linearly determine the tags (top 20% of a noisy logit per tag)."""
  rng = np.random.default_rng(seed)
  factors = rng.standard_normal((n, f)).astype(np.float32) * rng.uniform(0.5, 3, size=(n, 1))
  logits = utils.normalize_rows(factors) @ rng.standard_normal((f, tags))
  logits += noise * rng.standard_normal(logits.shape)
  return factors, logits > np.quantile(logits, 0.8, axis=0)


def test_planted_factors_predict_tags_and_random_factors_do_not():
  factors, tags = _planted()
  result = proxy.tag_prediction_from_factors(factors, tags)
  assert result["roc_auc"] > 0.9
  assert abs(result["random_roc_auc"] - 0.5) < 0.08
  assert result["num_tags"] == tags.shape[1]
  assert (result["num_train"], result["num_test"]) == (400, 100)
  per_tag = result["per_tag_roc_auc"]
  assert per_tag.shape == (tags.shape[1],)
  np.testing.assert_allclose(np.nanmean(per_tag), result["roc_auc"])
  # Fully random factors as *input* (not just the baseline) are at chance too.
  noise = np.random.default_rng(5).standard_normal(factors.shape)
  assert abs(proxy.tag_prediction_from_factors(noise, tags)["roc_auc"] - 0.5) < 0.08


def test_auc_matches_sklearn_per_tag_on_the_same_predictions():
  factors, tags = _planted(seed=1, noise=0.5)
  tags[:, 0] = False
  tags[7, 0] = True  # a tag that is very likely absent from the test split
  train, test = proxy.split_items(len(factors), 0.2, seed=3)
  assert not tags[test, 0].any()
  scores, per_tag, _ = proxy.fit_and_score(factors, tags, train, test)
  assert scores.shape == (len(test), tags.shape[1])
  assert np.isnan(per_tag[0])
  for t in range(1, tags.shape[1]):
    np.testing.assert_allclose(per_tag[t], skm.roc_auc_score(tags[test, t], scores[:, t]),
                               rtol=1e-12, err_msg=f"tag {t}")
  result = proxy.tag_prediction_from_factors(factors, tags, split_seed=3)
  np.testing.assert_array_equal(result["per_tag_roc_auc"], per_tag)
  assert result["num_tags"] == tags.shape[1] - 1
  np.testing.assert_allclose(result["roc_auc"], np.nanmean(per_tag))


def test_fit_matches_sklearn_logistic_regression():
  # Our objective per tag, mean BCE over n*T cells + l2 ||w||^2, is sklearn's
  # C * sum BCE + ||w||^2 / 2 scaled by 1 / (C n T) when C = 1 / (2 n T l2).
  factors, tags = _planted(seed=2, n=300, f=8, tags=4, noise=0.5)
  train, test = proxy.split_items(len(factors), 0.25, seed=0)
  l2 = 1e-3
  scores, _, _ = proxy.fit_and_score(factors, tags, train, test, l2=l2, steps=1500,
                                     learning_rate=0.05)
  x = utils.normalize_rows(factors)
  c = 1.0 / (2 * len(train) * tags.shape[1] * l2)
  for t in range(tags.shape[1]):
    reference = linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(
        x[train], tags[train, t]).decision_function(x[test])
    np.testing.assert_allclose(scores[:, t], reference, atol=1e-2,
                               err_msg=f"tag {t}")


def test_deterministic_by_seed():
  factors, tags = _planted(seed=4, noise=1.0)
  a = proxy.tag_prediction_from_factors(factors, tags, split_seed=7, steps=100)
  b = proxy.tag_prediction_from_factors(factors, tags, split_seed=7, steps=100)
  assert a["roc_auc"] == b["roc_auc"] and a["random_roc_auc"] == b["random_roc_auc"]
  np.testing.assert_array_equal(a["per_tag_roc_auc"], b["per_tag_roc_auc"])
  c = proxy.tag_prediction_from_factors(factors, tags, split_seed=8, steps=100)
  assert c["roc_auc"] != a["roc_auc"]
  train, test = proxy.split_items(10, 0.3, seed=0)
  assert len(test) == 3 and sorted(np.concatenate([train, test])) == list(range(10))


def test_normalize_rows_keeps_zero_rows():
  x = np.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(utils.normalize_rows(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("factors, tags, match", [
    (np.zeros((10, 4)), np.zeros((9, 3), bool), "10 items but item_tags has 9"),
    (np.zeros(10), np.zeros((10, 3), bool), "item_factors must be 2-D"),
    (np.zeros((10, 4)), np.zeros(10, bool), "item_tags must be 2-D"),
    (np.full((10, 4), np.nan), np.zeros((10, 3), bool), "finite"),
    (np.zeros((10, 4)), np.full((10, 3), 2), "binary"),
    (np.ones((10, 4)), np.zeros((10, 3), bool), "no tag has both"),
    (np.ones((1, 4)), np.ones((1, 3), bool), "at least 2 items"),
])
def test_clear_errors(factors, tags, match):
  with pytest.raises(ValueError, match=match):
    proxy.tag_prediction_from_factors(factors, tags)


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"l2": -1.0}, "l2"), ({"learning_rate": 0.0}, "learning_rate"),
    ({"test_fraction": 1.0}, "test_fraction")])
def test_bad_settings(kwargs, match):
  factors, tags = _planted(n=20)
  with pytest.raises(ValueError, match=match):
    proxy.tag_prediction_from_factors(factors, tags, **kwargs)


def test_tag_matrix_orders_columns_and_marks_unknown_items():
  tags, labelled = wmf_data.tag_matrix(["a", "b", "z"], {"a": ["rock", "x"], "b": []},
                                    ["pop", "rock"])
  np.testing.assert_array_equal(tags, [[False, True], [False, False], [False, False]])
  np.testing.assert_array_equal(labelled, [True, True, False])
  with pytest.raises(ValueError, match="duplicates"):
    wmf_data.tag_matrix(["a"], {}, ["pop", "pop"])


def test_synthetic_item_tags_follow_the_world():
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  world = synthetic.SyntheticWorld("tiny", seed=0)
  ids = [world.track_id(i) for i in (5, 0, 17)]
  tags, names = wmf_data.synthetic_item_tags(ids, "tiny", 0)
  assert names == list(world.tag_names)
  for row, i in zip(tags, (5, 0, 17)):
    assert [names[j] for j in np.flatnonzero(row)] == world.track_tags[i]
  with pytest.raises(ValueError, match="not tracks of the synthetic world"):
    wmf_data.synthetic_item_tags(ids + ["nope"], "tiny", 0)
