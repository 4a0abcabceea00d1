"""Small helpers the trainer and launchers share: atomic files, TensorBoard scalars, formatting."""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import sys
import tempfile
from typing import Any

import jax
import numpy as np


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON through a temp file in the same folder and `os.replace`, so readers never see half."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str, text: str) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def update_metrics_json(workdir: str, metrics: dict[str, float]) -> dict[str, float]:
  """Merges `metrics` (flat "<system>/<task>/<metric>" keys) into `<workdir>/metrics.json`."""
  path = os.path.join(workdir, "metrics.json")
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged.update({k: float(v) for k, v in metrics.items()})
  write_json_atomic(path, merged)
  return merged


def format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def select_metric(metrics: dict[str, float], name: str) -> float:
  """Looks up the validation metric (larger is better).

  `mean_p@k` averages p@k over the tasks that report it; a leading "-" negates a metric where smaller
  is better (`-factors/mse`).
  """
  if name.startswith("-"):
    return -select_metric(metrics, name[1:])
  if name.startswith("mean_"):
    suffix = "/" + name[len("mean_"):]
    values = [v for k, v in metrics.items() if k.endswith(suffix) and math.isfinite(v)]
    if not values:
      raise KeyError(f"train.eval_metric={name!r}: no metric ends with {suffix!r} among "
                     f"{sorted(metrics)}.")
    return float(sum(values) / len(values))
  if name not in metrics:
    raise KeyError(f"train.eval_metric={name!r} is not among the validation metrics "
                   f"{sorted(metrics)}.")
  return float(metrics[name])


class MetricWriter:
  """TensorBoard scalars (tf.summary) from process 0, plus nothing else; `close()` flushes."""

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._writer = tf.summary.create_file_writer(logdir)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for k, v in scalars.items():
        self._tf.summary.scalar(k, float(v), step=step)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
  """glibc's `malloc_trim(size_t pad) -> int`, or None where there is none (macOS, musl, Windows).

  Looked up in the symbols the process has loaded (`CDLL(None)`, Linux only), which avoids
  `ctypes.util.find_library`'s `ldconfig` subprocess on the first ranking.
  """
  if not sys.platform.startswith("linux"):
    return None
  try:
    trim = ctypes.CDLL(None).malloc_trim
  except (OSError, AttributeError, TypeError):
    return None
  trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
  return trim


def release_free_memory() -> bool:
  """Hands the pages that the process has freed back to the operating system (glibc only).

  glibc keeps freed blocks in per-thread malloc arenas for reuse; after a phase that allocates and
  frees large buffers from several runtime threads (XLA's executions run on a pool) those arenas
  hold tens of MB that the resident size still counts, and the next such phase allocates beside
  them rather than in them. `malloc_trim(0)` returns every free page of every arena. It is called
  by `musemb.ranking.top_k_scores` when it returns (see its module docstring for the effect).
  Returns False where the C library has no `malloc_trim` (nothing is done there).
  """
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True


def normalize_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """Vectors along `axis` (rows of [n, f]) scaled to unit l2 norm; all-zero ones stay zero (they
  have no direction). Floating inputs keep their dtype, others become float32. The numpy twin of
  `musemb.ops.l2_normalize`."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  norms = np.linalg.norm(x, axis=axis, keepdims=True)
  return x / np.maximum(norms, np.finfo(x.dtype).tiny)


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
  """np.savez through a temp file + rename; string arrays are stored as unicode (no pickles)."""
  clean = {k: (np.asarray(v).astype(str) if np.asarray(v).dtype == object else np.asarray(v))
           for k, v in arrays.items()}
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz")
  os.close(fd)
  try:
    np.savez(tmp, **clean)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def update_model_stats(workdir: str, system: str, stats: dict) -> None:
  """Adds one system's entry to `<workdir>/model_stats.json` (Table 7's inputs)."""
  path = os.path.join(workdir, "model_stats.json")
  current = {}
  if os.path.exists(path):
    with open(path) as f:
      current = json.load(f)
  current[system] = stats
  write_json_atomic(path, current)
