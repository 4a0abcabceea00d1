"""Plots for reports: matplotlib's Agg canvas directly (no global backend is changed), PNGs written
atomically, PCA as a plain numpy SVD."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projects rows of `X: [n, D]` on their two leading principal axes.

  Returns `coords: [n, 2]` (zeros where fewer than two axes exist) and the fraction of variance of
  each axis `[2]`. Each axis's sign is fixed so that its largest loading is positive, so reruns
  draw the same picture.
  """
  X = np.asarray(X, dtype=np.float64)
  Xc = X - X.mean(axis=0, keepdims=True)
  _, s, vt = np.linalg.svd(Xc, full_matrices=False)
  m = min(2, vt.shape[0])
  vt = vt[:m]
  signs = np.sign(vt[np.arange(m), np.argmax(np.abs(vt), axis=1)])
  vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
  coords = np.zeros((X.shape[0], 2))
  coords[:, :m] = Xc @ vt.T
  total = float(np.sum(s ** 2))
  explained = np.zeros(2)
  if total > 0:
    explained[:m] = s[:m] ** 2 / total
  return coords, explained


def save_figure_atomic(fig: Any, path: str) -> str:
  """A matplotlib figure saved as PNG through a temp file + rename; returns `path`."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path
