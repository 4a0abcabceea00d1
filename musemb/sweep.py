"""Hyperparameters chosen on validation: a grid of runs of one config, the best kept by its own
validation metric, the test split read only for the choice.

Weston et al. choose MUSLSE's learning rate on a validation set and call the max-norm C "a
regularizer ... as used in ... the lasso": a value right for 1,300 songs is too tight for 8,400
(README, "Defaults at other sizes"). A default fixed in a config cannot carry over; a choice made
on the user's own validation split does. `run_sweep` trains every grid point into its own
sub-workdir (`<workdir>/<key>=<value>,...`, each an ordinary resumable run with its lock and
config check), picks the point whose best validation `train.eval_metric` (`training.json`) is
highest, and writes `<workdir>/sweep.json` (every point: its overrides, validation, steps and
test metrics; the choice) and `<workdir>/metrics.json` (the chosen point's test metrics).

Ties go to the earlier point, so list the most regularised value first. A rerun skips the points
that finished with the same config and trains the rest (a preempted sweep resumes where it
stopped); a point's sub-workdir refuses a changed base config as any run's workdir does.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from typing import Any, Callable, Sequence

from absl import logging
import ml_collections

from musemb import utils
from musemb import workdir as workdir_lib


class SweepError(ValueError):
  """A grid the sweep cannot run (found before any point trains)."""


def parse_grid(items: Sequence[str], config: ml_collections.ConfigDict
               ) -> list[tuple[str, list[Any]]]:
  """`["model.max_norm=1,2,4", ...]` -> [("model.max_norm", [1.0, 2.0, 4.0]), ...], each value
  converted to the type the config declares for its key (so `2` is the float 2.0 for a float)."""
  grid, seen = [], set()
  for item in items:
    key, sep, values = item.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
      raise SweepError(f"--sweep={item!r}: expected key=value1,value2,... "
                       "(e.g. --sweep=model.max_norm=1,2,4)")
    if key in seen:
      raise SweepError(f"--sweep names {key} twice; give all its values in one item")
    seen.add(key)
    if key in ("train.eval_metric", "system", "seed") or key.startswith("eval."):
      raise SweepError(f"--sweep={key}: the sweep compares runs by train.eval_metric on one "
                       "system's validation split, so it cannot vary that key")
    current = _get(config, key)
    parsed = [_convert(key, current, v.strip()) for v in values.split(",")]
    if len(set(map(repr, parsed))) != len(parsed):
      raise SweepError(f"--sweep={item!r} repeats a value")
    grid.append((key, parsed))
  if not grid:
    raise SweepError("nothing to sweep: pass --sweep=key=value1,value2,...")
  return grid


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise SweepError(f"--sweep names {key}, which the config does not declare")
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise SweepError(f"--sweep names {key}, a group of keys; name one of its keys")
  return node


def _convert(key: str, current: Any, text: str) -> Any:
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
  except ValueError:
    name = type(current).__name__
    raise SweepError(f"--sweep value {text!r} for {key} is not {'an' if name == 'int' else 'a'} "
                     f"{name}, the type the config declares") from None
  if isinstance(current, str):
    return text
  raise SweepError(f"--sweep cannot vary {key} (a {type(current).__name__}); sweep numbers, "
                   "booleans or strings")


def points(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
  """The Cartesian product of the grid, in the order given (first key slowest)."""
  keys = [k for k, _ in grid]
  return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def point_name(point: dict[str, Any]) -> str:
  """The sub-workdir of a point: `model.max_norm=2.0,optimizer.learning_rate=0.05`."""
  return ",".join(f"{k}={v}" for k, v in point.items())


def point_config(config: ml_collections.ConfigDict, point: dict[str, Any]
                 ) -> ml_collections.ConfigDict:
  c = copy.deepcopy(config)
  with c.unlocked():
    for key, value in point.items():
      node = c
      *parents, leaf = key.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return c


def _finished(config: ml_collections.ConfigDict, sub: str) -> bool:
  """The point's run ended (training.json and metrics.json written) under this very config."""
  paths = [os.path.join(sub, f) for f in ("config.json", "training.json", "metrics.json")]
  if not all(os.path.exists(p) for p in paths):
    return False
  with open(paths[0]) as f:
    saved = json.load(f)
  # Raises ConfigMismatchError naming the keys when the base config changed since.
  workdir_lib.check_resume(saved, json.loads(config.to_json_best_effort()), workdir=sub)
  return True


def run_sweep(config: ml_collections.ConfigDict, workdir: str, grid: list[tuple[str, list[Any]]],
              train_fn: Callable[[ml_collections.ConfigDict, str], dict[str, float]],
              check_fn: Callable[[ml_collections.ConfigDict], None] | None = None) -> dict:
  """Trains every grid point (skipping finished ones), returns and writes the sweep's record.

  `train_fn(config, workdir)` is `musemb.train.run`; `check_fn(config)` (the loop's
  `check_config`) runs on every point before the first trains, so a bad value in the last point
  fails in a second, not after hours.
  """
  pts = points(grid)
  configs = [point_config(config, p) for p in pts]
  if check_fn is not None:
    for p, c in zip(pts, configs):
      try:
        check_fn(c)
      except ValueError as e:
        raise SweepError(f"point {point_name(p)}: {e}") from e
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.Lock(os.path.join(workdir, ".sweep_lock"), f"a {config.system} sweep"):
    utils.write_json_atomic(os.path.join(workdir, "sweep_config.json"),
                            {"grid": {k: v for k, v in grid},
                             "config": json.loads(config.to_json_best_effort())})
    runs = []
    for i, (p, c) in enumerate(zip(pts, configs)):
      sub = os.path.join(workdir, point_name(p))
      if _finished(c, sub):
        logging.info("Sweep point %d/%d %s: finished earlier, reusing it.", i + 1, len(pts),
                     point_name(p))
        with open(os.path.join(sub, "metrics.json")) as f:
          metrics = json.load(f)
      else:
        logging.info("Sweep point %d/%d: %s", i + 1, len(pts), point_name(p))
        metrics = train_fn(c, sub)
      with open(os.path.join(sub, "training.json")) as f:
        training = json.load(f)
      runs.append({"point": p, "workdir": sub, "validation": training["best_metric"],
                   "best_step": training["best_step"], "steps": training["steps"],
                   "still_improving": training["still_improving"], "metrics": metrics})
    record = choose(runs, config.train.eval_metric)
    utils.write_json_atomic(os.path.join(workdir, "sweep.json"), record)
    utils.write_json_atomic(os.path.join(workdir, "metrics.json"), record["metrics"])
  logging.info("Sweep over %s:\n%s", ", ".join(k for k, _ in grid), table(record))
  return record


def choose(runs: list[dict], eval_metric: str) -> dict:
  """The record: every run, and the first with the highest validation (None never wins)."""
  scored = [i for i, r in enumerate(runs) if r["validation"] is not None]
  if not scored:
    raise SweepError(f"no point of the sweep validated ({eval_metric}): a sweep needs "
                     "validation (train.eval_every or train.eval_every_epochs, a validation split)")
  best = max(scored, key=lambda i: (runs[i]["validation"], -i))
  return {"eval_metric": eval_metric, "runs": runs, "chosen": best,
          "chosen_point": runs[best]["point"], "metrics": runs[best]["metrics"]}


def table(record: dict) -> str:
  """One line per point: validation, steps, and the chosen point's mark."""
  lines = []
  for i, r in enumerate(record["runs"]):
    v = "-" if r["validation"] is None else f"{r['validation']:.4f}"
    note = " still improving" if r["still_improving"] else ""
    mark = "  <- chosen" if i == record["chosen"] else ""
    lines.append(f"  {point_name(r['point'])}: validation {record['eval_metric']} {v} "
                 f"(best step {r['best_step']} of {r['steps']}){note}{mark}")
  return "\n".join(lines)
