"""Tests for musemb/reports/: markdown tables and formats, paired tests, PCA."""

import numpy as np
from sklearn.decomposition import PCA

from musemb.reports import plots as plots_lib
from musemb.reports import stats as stats_lib
from musemb.reports import tables as tables_lib


def test_wins_losses_draws_without_differences_has_no_signed_rank_p():
  r = stats_lib.wins_losses_draws(np.array([0.5, 1.0]), np.array([0.5, 1.0]))
  assert (r["wins"], r["losses"], r["draws"], r["signed_rank_p"]) == (0, 0, 2, None)
  assert stats_lib.wins_losses_draws(np.array([]), np.array([]))["rank_sum_p"] is None


def test_pca_2d_matches_sklearn_up_to_sign():
  X = np.random.default_rng(4).normal(size=(30, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
  coords, explained = plots_lib.pca_2d(X)
  pca = PCA(n_components=2).fit(X)
  ref = pca.transform(X)
  np.testing.assert_allclose(np.abs(coords), np.abs(ref), atol=1e-9)
  np.testing.assert_allclose(explained, pca.explained_variance_ratio_, rtol=1e-9)
  one_dim, _ = plots_lib.pca_2d(X[:, :1])
  assert one_dim.shape == (30, 2) and np.all(one_dim[:, 1] == 0)


def test_markdown_table_escapes_pipes_and_aligns():
  md = tables_lib.markdown_table(["a", "b"], [["x|y", "1.000"], ["z", "10.500"]], [False, True])
  lines = md.splitlines()
  assert len({len(l) for l in lines}) == 1
  assert lines[1] == "| ---- | -----: |"
  assert "x\\|y" in lines[2]
  assert tables_lib.format_value(0.0427) == "0.0427" and tables_lib.format_value(0.33) == "0.330"
  assert tables_lib.format_value(None) == "-" and tables_lib.format_value(float("nan")) == "-"
