"""Tests for musemb/models/cca.py against scipy's generalised eigensolver and scikit-learn's CCA."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn import cross_decomposition

from musemb.models import cca


def _views(n=400, dx=5, dy=4, seed=0):
  """Two views sharing 2 latent signals (correlations well separated), plus noise."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, 2))
  x = z @ rng.normal(size=(2, dx)) + np.array([0.3, 1.0, 1.0, 1.0, 1.0])[:dx] * rng.normal(
      size=(n, dx))
  y = z @ np.diag([1.0, 0.5]) @ rng.normal(size=(2, dy)) + rng.normal(size=(n, dy))
  return x + 3.0, y - 1.0


def _generalised_eig(x, y, rx, ry):
  """Canonical correlations as the top eigenvalues of the symmetric-definite pencil (A, B)."""
  xc, yc = x - x.mean(0), y - y.mean(0)
  n = len(x)
  cxx, cyy, cxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
  dx, dy = cxx.shape[0], cyy.shape[0]
  a = np.block([[np.zeros((dx, dx)), cxy], [cxy.T, np.zeros((dy, dy))]])
  b = np.block([[cxx + rx * np.eye(dx), np.zeros((dx, dy))],
                [np.zeros((dy, dx)), cyy + ry * np.eye(dy)]])
  vals = scipy.linalg.eigh(a, b, eigvals_only=True)
  return np.sort(vals)[::-1], cxx, cyy


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_correlations_solve_the_generalised_eigenproblem(reg):
  x, y = _views()
  fit = cca.fit_cca(x, y, dim=4, reg=reg)
  xc = x - x.mean(0)
  yc = y - y.mean(0)
  rx = reg * np.trace(xc.T @ xc / (len(x) - 1)) / x.shape[1]
  ry = reg * np.trace(yc.T @ yc / (len(y) - 1)) / y.shape[1]
  expected, cxx, cyy = _generalised_eig(x, y, rx, ry)
  np.testing.assert_allclose(fit.correlations, expected[:4], rtol=1e-8, atol=1e-10)
  # The projections are (regularised-)whitened: A^T (C_xx + r I) A = I, likewise for B.
  np.testing.assert_allclose(fit.x_weights.T @ (cxx + rx * np.eye(5)) @ fit.x_weights,
                             np.eye(4), atol=1e-8)
  np.testing.assert_allclose(fit.y_weights.T @ (cyy + ry * np.eye(4)) @ fit.y_weights,
                             np.eye(4), atol=1e-8)


def test_unregularised_projections_correlate_by_rho_and_match_scikit_learn():
  x, y = _views(n=300, seed=1)
  fit = cca.fit_cca(x, y, dim=2, reg=0.0)
  px, py = fit.transform_x(x), fit.transform_y(y)
  ours = [np.corrcoef(px[:, i], py[:, i])[0, 1] for i in range(2)]
  np.testing.assert_allclose(ours, fit.correlations[:2], rtol=1e-8)
  # Latent columns are uncorrelated within a view.
  assert abs(np.corrcoef(px[:, 0], px[:, 1])[0, 1]) < 1e-8
  # scikit-learn's iterative (NIPALS) CCA reaches the same canonical correlations.
  sk = cross_decomposition.CCA(n_components=2, max_iter=5000, tol=1e-12).fit(x, y)
  sx, sy = sk.transform(x, y)
  theirs = [abs(np.corrcoef(sx[:, i], sy[:, i])[0, 1]) for i in range(2)]
  np.testing.assert_allclose(ours, theirs, rtol=1e-4)
  # And the same directions, up to sign.
  for i in range(2):
    assert abs(abs(np.corrcoef(px[:, i], sx[:, i])[0, 1]) - 1.0) < 1e-4


def test_held_out_rows_project_with_the_training_means():
  x, y = _views(n=200, seed=2)
  fit = cca.fit_cca(x[:150], y[:150], dim=3, reg=1e-3)
  np.testing.assert_allclose(fit.transform_x(x[150:]), (x[150:] - x[:150].mean(0)) @ fit.x_weights)
  # power scales each latent dimension by rho^power (Gong et al.'s weighting).
  np.testing.assert_allclose(fit.transform_y(y, power=4.0),
                             fit.transform_y(y) * fit.correlations ** 4)
  assert fit.dim == 3 and cca.LATENT_DIMS == (50, 100)


def test_singular_covariance_needs_a_ridge():
  x, y = _views(n=50)
  x = np.concatenate([x, x[:, :1] * 2.0], axis=1)  # a linearly dependent column
  with pytest.raises(ValueError, match="singular"):
    cca.fit_cca(x, y, dim=2, reg=0.0)
  fit = cca.fit_cca(x, y, dim=2, reg=1e-2)
  assert np.all(np.isfinite(fit.correlations)) and fit.correlations[0] < 1.0
  with pytest.raises(ValueError, match="dim=5"):
    cca.fit_cca(x, y, dim=5)
  with pytest.raises(ValueError, match="same n"):
    cca.fit_cca(x, y[:-1], dim=2)
