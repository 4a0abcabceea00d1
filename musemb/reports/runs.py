"""Reading a finished run's files (metrics.json, config.json, .npz) and merging baseline runs.

Baseline runs (e.g. one-vs-rest trained into its own workdir) are merged into a run's picture:
their keys for systems other than the run's own are added, the run's own values always win (a
disagreement is noted), and per-query arrays and model stats come along.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); rewrite it, or rerun the evaluation that "
                     "writes it.") from e


def read_json_if_exists(path: str) -> Any | None:
  return read_json(path) if os.path.exists(path) else None


def read_metrics(workdir: str) -> dict[str, float]:
  path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: the report needs a finished run's metrics; "
                            "train/evaluate into this workdir first, or pass the right --workdir.")
  metrics = read_json(path)
  if not isinstance(metrics, dict):
    raise ValueError(f"{path} holds a {type(metrics).__name__}; expected one flat JSON object "
                     "{\"<system>/<task>/<metric>\": value}.")
  return metrics


def training_line(workdir: str) -> str | None:
  """One sentence on how the run ended, from `<workdir>/training.json` (None without the file).

  Readers compare a report's numbers with a paper's table; a run whose validation was still
  improving when its steps ran out is not a converged result, and the line says so.
  """
  record = read_json_if_exists(os.path.join(workdir, "training.json"))
  if not record:
    return None
  steps, best = record.get("steps"), record.get("best_step", -1)
  metric = record.get("eval_metric") or "the validation metric"
  value = record.get("best_metric")
  best_text = (f"best validation {metric} = {value:.4f} at step {best}" if value is not None
               else "no validation")
  if record.get("still_improving"):
    return (f"**Still improving** when its {steps} steps ran out ({best_text}): the run may be too "
            "short; continue it with a larger `train.epochs` (or `train.num_steps`) and "
            "`--allow_changes`.")
  if record.get("stopped_early"):
    return f"Stopped early at step {steps} of {record.get('num_steps')} ({best_text})."
  return f"Ran all {steps} steps ({best_text})."


def read_npz(path: str) -> dict[str, np.ndarray] | None:
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except ValueError as e:
    raise ValueError(f"{path}: {e}. Save names and query ids as numpy str arrays (dtype '<U...'), "
                     "not object arrays.") from e


def config_get(config: Mapping[str, Any] | None, dotted: str, default: Any = None) -> Any:
  """`config["model"]["embed_dim"]` for "model.embed_dim"; flat dotted keys work too."""
  if not config:
    return default
  if dotted in config:
    return config[dotted]
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return default
    node = node[part]
  return node


class PerQuery:
  """Per-query arrays of one or more workdirs: (system, task, metric) -> (query ids or None, values)."""

  def __init__(self):
    self.arrays: dict[tuple[str, str, str], tuple[np.ndarray | None, np.ndarray]] = {}
    self.sources: dict[tuple[str, str, str], str] = {}

  def add(self, npz: Mapping[str, np.ndarray], source: str, skip_system: str | None = None) -> None:
    for name, values in npz.items():
      parts = name.split("/")
      if len(parts) != 3:
        continue
      owner, task, metric = parts
      if owner == skip_system or (owner, task, metric) in self.arrays:
        continue
      ids = npz.get(f"{task}/query_ids")
      values = np.asarray(values, dtype=np.float64).reshape(-1)
      if ids is not None:
        ids = np.asarray(ids).astype(str).reshape(-1)
        if len(ids) != len(values):
          raise ValueError(f"{source}: {name} has {len(values)} queries but {task}/query_ids has "
                           f"{len(ids)}; both must follow the same query order.")
      self.arrays[(owner, task, metric)] = (ids, values)
      self.sources[(owner, task, metric)] = source

  def paired(self, task: str, metric: str, a: str, b: str
             ) -> tuple[np.ndarray, np.ndarray] | None:
    """Values of systems a and b on the queries both score (finite), matched by query id."""
    if (a, task, metric) not in self.arrays or (b, task, metric) not in self.arrays:
      return None
    ids_a, va = self.arrays[(a, task, metric)]
    ids_b, vb = self.arrays[(b, task, metric)]
    if ids_a is not None and ids_b is not None:
      # Two workdirs may list a task's queries in different orders: pair by id, in a's order.
      where_b = {q: i for i, q in enumerate(ids_b)}
      ia = np.array([i for i, q in enumerate(ids_a) if q in where_b], dtype=np.int64)
      ib = np.array([where_b[ids_a[i]] for i in ia], dtype=np.int64)
      va, vb = va[ia], vb[ib]
    elif len(va) != len(vb):
      raise ValueError(
          f"per-query {metric} of {a} ({self.sources[(a, task, metric)]}, {len(va)} queries) and "
          f"{b} ({self.sources[(b, task, metric)]}, {len(vb)} queries) on {task} cannot be paired: "
          f"write '{task}/query_ids' into both per_query.npz files.")
    keep = np.isfinite(va) & np.isfinite(vb)
    return va[keep], vb[keep]


def merge_baselines(own_system: str, metrics: dict[str, Any],
                     model_stats: dict[str, Any], per_query: PerQuery,
                     baseline_workdirs: Sequence[str], notes: list[str]) -> list[str]:
  """Adds the baselines' keys (systems other than the run's own) that the run lacks; returns them."""
  added = []
  for bdir in baseline_workdirs:
    bmetrics = read_metrics(bdir)
    for key, value in sorted(bmetrics.items()):
      if key.split("/", 1)[0] == own_system:   # the run's own keys are never overwritten
        continue
      if key in metrics:
        if not _same(metrics[key], value):
          notes.append(f"`{key}`: kept this run's value {metrics[key]!r}; {bdir} has {value!r}.")
        continue
      metrics[key] = value
      added.append(key)
    bstats = read_json_if_exists(os.path.join(bdir, "model_stats.json")) or {}
    for owner, stats in bstats.items():
      if owner != own_system and owner not in model_stats:
        model_stats[owner] = stats
    bnpz = read_npz(os.path.join(bdir, "per_query.npz"))
    if bnpz is not None:
      per_query.add(bnpz, os.path.join(bdir, "per_query.npz"), skip_system=own_system)
  return added


def _same(a: Any, b: Any) -> bool:
  try:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12) or (
        math.isnan(float(a)) and math.isnan(float(b)))
  except (TypeError, ValueError):
    return a == b


def get_float(metrics: Mapping[str, Any], key: str) -> float | None:
  """metrics[key] as a float; None when missing or not a number."""
  value = metrics.get(key)
  if value is None:
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def metric(metrics: Mapping[str, Any], system: str, task: str, name: str) -> float | None:
  """`get_float(metrics, "<system>/<task>/<name>")`."""
  return get_float(metrics, f"{system}/{task}/{name}")
