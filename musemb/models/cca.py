"""Regularised canonical correlation analysis in closed form: Rush et al.'s CCA baseline.

Hotelling, *Relations between two sets of variates* (Biometrika 1936); Rush, Yang, Hsu, Rybicki,
Le & Lin, *Learning to Rank with Text-Music Embeddings*, sections 5, 6.1 and 8 (audio features
against mean GloVe vectors of the reviews, latent sizes 50 and 100). With centred views X [n, dx]
and Y [n, dy], covariances C_xx, C_yy, C_xy (divided by n - 1) and ridges r_x, r_y:

    W_x = (C_xx + r_x I)^(-1/2),  W_y = (C_yy + r_y I)^(-1/2)     whitening
    W_x C_xy W_y = U S V^T                                       SVD of the whitened cross-cov.
    A = W_x U[:, :k],  B = W_y V[:, :k],  rho = S[:k]            projections, canonical corr.

so X A and Y B have (regularised) identity covariance and their i-th columns correlate with rho_i;
rho solves the generalised eigenproblem [[0, C_xy], [C_yx, 0]] w = rho [[C_xx + r_x I, 0],
[0, C_yy + r_y I]] w, which the tests check with scipy.

Choices:

* The ridge is relative: r = reg * trace(C) / d, a fraction of the view's mean variance, so one
  `reg` suits z-scored audio features and unnormalised word-vector means alike (an absolute r
  would be negligible for one and dominant for the other). reg = 0 is plain CCA and needs
  covariances of full rank (an error names the view otherwise).
* Everything is numpy float64 on the host: the cost is O(n (dx^2 + dy^2) + dx^3 + dy^3) and the
  largest matrix is d x d, so the paper's "O(n^2)" limit to 10,000 albums does not arise here.
* `transform_*(..., power=p)` scales latent dimension i by rho_i^p. Retrieval in the latent space
  with p = 0 is the textbook projection; Gong, Ke, Isard & Lazebnik (IJCV 2014, the paper's [6])
  weight the dimensions by a power of the eigenvalues (p = 4 on rho there) so that weakly
  correlated directions count less in nearest-neighbour distances.
"""

from __future__ import annotations

import dataclasses

import numpy as np

LATENT_DIMS = (50, 100)  # section 8
DEFAULT_REG = 1e-3


@dataclasses.dataclass(frozen=True)
class CCA:
  """A fitted CCA.

  Attributes:
    x_mean, y_mean: [dx], [dy] training means (subtracted before projecting).
    x_weights, y_weights: [dx, k], [dy, k] projections A and B.
    correlations: [k] canonical correlations rho, descending.
    reg: the relative ridge it was fitted with.
  """
  x_mean: np.ndarray
  y_mean: np.ndarray
  x_weights: np.ndarray
  y_weights: np.ndarray
  correlations: np.ndarray
  reg: float

  @property
  def dim(self) -> int:
    return int(self.correlations.shape[0])

  def transform_x(self, x, power: float = 0.0) -> np.ndarray:
    """[n, dx] first-view rows -> [n, k] latent coordinates (scaled by rho^power)."""
    return self._project(x, self.x_mean, self.x_weights, power, "x")

  def transform_y(self, y, power: float = 0.0) -> np.ndarray:
    """[n, dy] second-view rows -> [n, k] latent coordinates (scaled by rho^power)."""
    return self._project(y, self.y_mean, self.y_weights, power, "y")

  def _project(self, v, mean, weights, power, name):
    v = np.asarray(v, np.float64)
    if v.ndim != 2 or v.shape[1] != mean.shape[0]:
      raise ValueError(f"CCA.transform_{name}: expected [n, {mean.shape[0]}], got shape "
                       f"{v.shape}.")
    out = (v - mean) @ weights
    if power:
      out = out * np.maximum(self.correlations, 0.0) ** power
    return out


def _inverse_sqrt(cov: np.ndarray, ridge: float, name: str) -> np.ndarray:
  """(cov + ridge I)^(-1/2) of a symmetric PSD matrix, by eigendecomposition."""
  vals, vecs = np.linalg.eigh(cov + ridge * np.eye(cov.shape[0]))
  tiny = max(float(vals.max()), 1.0) * cov.shape[0] * np.finfo(np.float64).eps
  if vals.min() <= tiny:
    raise ValueError(
        f"fit_cca: the covariance of {name} is singular (smallest eigenvalue {vals.min():.3g}): "
        "constant or linearly dependent features, or fewer rows than features. Use reg > 0.")
  return (vecs / np.sqrt(vals)) @ vecs.T


def fit_cca(x, y, dim: int, reg: float = DEFAULT_REG) -> CCA:
  """Fits regularised CCA on paired rows (see the module docstring).

  Args:
    x: [n, dx] first view (e.g. audio features of the training albums).
    y: [n, dy] second view, row i paired with x's row i (e.g. that album's review vectors).
    dim: k, the latent size (50 or 100 in the paper); at most min(dx, dy).
    reg: relative ridge, r = reg * trace(C) / d per view; 0 for plain CCA.

  Returns:
    The fitted `CCA`.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(f"fit_cca: x and y must be [n, dx] and [n, dy] with the same n (paired "
                     f"rows); got {x.shape} and {y.shape}.")
  if x.shape[0] < 2:
    raise ValueError(f"fit_cca: needs at least 2 paired rows, got {x.shape[0]}.")
  if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or \
      not 1 <= dim <= min(x.shape[1], y.shape[1]):
    raise ValueError(f"fit_cca: dim={dim!r} must be an int in [1, min(dx, dy) = "
                     f"{min(x.shape[1], y.shape[1])}].")
  if not reg >= 0.0:
    raise ValueError(f"fit_cca: reg={reg!r} must be >= 0.")
  for name, v in (("x", x), ("y", y)):
    if not np.isfinite(v).all():
      raise ValueError(f"fit_cca: {name} holds NaN or inf.")
  x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
  xc, yc = x - x_mean, y - y_mean
  n = x.shape[0]
  cxx, cyy, cxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
  wx = _inverse_sqrt(cxx, reg * np.trace(cxx) / cxx.shape[0], "x")
  wy = _inverse_sqrt(cyy, reg * np.trace(cyy) / cyy.shape[0], "y")
  u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
  x_weights, y_weights = wx @ u[:, :dim], wy @ vt[:dim].T
  # Fix each pair's sign so the first view's largest-magnitude loading is positive: the SVD's
  # signs are arbitrary, and a deterministic choice makes fits comparable across runs.
  flip = np.sign(x_weights[np.abs(x_weights).argmax(axis=0), np.arange(dim)])
  flip[flip == 0] = 1.0
  return CCA(x_mean, y_mean, x_weights * flip, y_weights * flip, s[:dim].copy(), float(reg))
