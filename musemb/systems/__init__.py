"""The system contract, and the registry from a config's `system` name to a paper's package.

A system is what one paper trains and evaluates. Its package (`musemb/systems/<name>/`) holds what
belongs to that paper alone: the recipe (its `__init__.py`, ending in `SYSTEM = System(...)`), its
data adapter (`data.py`), its report tables (`report.py`) and its query code. Everything generic
(the loop, models, objectives, samplers, metrics, reports' building blocks) lives outside, in
folders by kind, and never asks which system it serves: it calls the verbs below.

The verbs (all pure functions of their arguments; `config` is the run's ConfigDict):

  load_data(config, workdir) -> data
      `data.info` (a dict: sizes and vocabularies `init` needs), `data.splits`, `data.tables` (a
      pytree of arrays that stays on the device beside the batch, e.g. the training songs' bags),
      `data.train_batch(step) -> {name: [B_process, ...] array}` (a pure function of the step:
      exact resume; this process's share of the global batch) and
      `data.info["num_train_examples"]` (what an epoch is, when the config counts in epochs).
  init(config, info, rng) -> variables
      The flax variables dict, always: `{"params": ..., <other collections>: ...}`.
  loss(variables, batch, tables, rng, config) -> (loss, aux)
      Differentiated with respect to `variables["params"]`. Updated non-trained collections
      (batch statistics) come back as `aux["model_state"]`; other aux entries are logged (means
      over the log period; a dict of per-task losses logs as `loss/<task>`, NaN = not run).
  project(params, config) -> params            (optional)
      Constraints applied after every update (MUSLSE's max-norm rows).
  evaluate(variables, data, config, split) -> {metric: value}
      Validation. Keys carry no system prefix: the loop adds `<key>/` and the split.
  write_outputs(variables, data, config, workdir) -> {metric: value}
      The final evaluation on `config.eval.split`; writes the system's own files (per-query
      arrays, embeddings, indexes) and returns its metrics without prefix. The loop writes them
      into `metrics.json` as `<key>/<metric>`.
  report(workdir, *, baseline_workdirs=(), **options) -> path of report.md
  compare(workdirs, out_path, **options) -> out_path   (optional) the paper's cross-run tables
      `report_options` names the keyword options both take (e.g. tagprop's `taxonomy`, which
      `launch.report --taxonomy=` passes); a launcher passes only the ones a system declares.
  predictor(workdir, **options) -> Predictor    (optional) what the query tool and server call
  fit(config, workdir) -> metrics               (optional) for systems fitted outside the
      gradient loop (WMF's alternating least squares); such a system has no loss.
  cpu_devices(config) -> int                    (optional) CPU devices the launchers give JAX
      before it starts, on hosts without an accelerator (0: one per core, at most 8;
      `launch.common.configure_cpu_devices`), for a system whose own sharding puts the cores to
      work that way (WMF's ALS); without it a run keeps JAX's one CPU device.

`key(config)` is the metrics.json prefix: the system's name unless `metrics_key` says otherwise
(the SampleCNN run with the tags head is `samplecnn_tags`, so it merges beside a factors run).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable, Protocol, Sequence

import numpy as np

# name -> the package whose `SYSTEM` it is (imported on first use, so naming a system never
# loads the others' code).
_PACKAGES = {
    "muslse": "musemb.systems.muslse",
    "one_vs_rest": "musemb.systems.one_vs_rest",
    "rush": "musemb.systems.rush",
    "rush_baselines": "musemb.systems.rush_baselines",
    "samplecnn": "musemb.systems.samplecnn",
    "tagprop": "musemb.systems.tagprop",
    "wmf": "musemb.systems.wmf",
    "won": "musemb.systems.won",
}


class Predictor(Protocol):
  """A finished run, loaded once, answering queries (`launch.predict`, `launch.serve`).

  `sample_rate` is the rate `analyze` wants its waveform at (None: the run does not hear audio);
  `searches_text` says whether `search` works. Both methods return JSON-able dicts.
  """

  sample_rate: int | None
  searches_text: bool

  def analyze(self, waveform: np.ndarray, top: int) -> dict[str, Any]:
    """What the run says about one mono clip at `sample_rate` (tags, artists, neighbours...)."""

  def search(self, text: str, top: int) -> dict[str, Any]:
    """The run's songs ranked for free text."""


@dataclasses.dataclass(frozen=True)
class System:
  """One paper's system: the verbs of the contract (module docstring)."""

  name: str
  report: Callable[..., str]
  load_data: Callable[[Any, str], Any] | None = None
  init: Callable[[Any, dict, Any], dict] | None = None
  loss: Callable[..., tuple[Any, dict]] | None = None
  evaluate: Callable[[Any, Any, Any, str], dict[str, float]] | None = None
  write_outputs: Callable[[Any, Any, Any, str], dict[str, float]] | None = None
  project: Callable[[Any, Any], Any] | None = None
  compare: Callable[[Sequence[str], str], str] | None = None
  predictor: Callable[..., Predictor] | None = None
  fit: Callable[[Any, str], dict[str, float]] | None = None
  metrics_key: Callable[[Any], str] | None = None
  report_options: tuple[str, ...] = ()
  cpu_devices: Callable[[Any], int] | None = None

  def __post_init__(self):
    trained = [self.load_data, self.init, self.loss, self.evaluate, self.write_outputs]
    if self.fit is None and not all(trained):
      raise TypeError(f"system {self.name!r}: a system trained by the loop needs load_data, init, "
                      "loss, evaluate and write_outputs (or a fit verb instead).")

  def key(self, config: Any) -> str:
    """The metrics.json prefix of a run of this system."""
    return self.metrics_key(config) if self.metrics_key else self.name


def names() -> tuple[str, ...]:
  return tuple(sorted(_PACKAGES))


def get(name: str) -> System:
  """The registered system called `name` (a config's `system`)."""
  if name not in _PACKAGES:
    raise ValueError(f"config.system={name!r}; known systems: {sorted(_PACKAGES)}.")
  system = importlib.import_module(_PACKAGES[name]).SYSTEM
  if system.name != name:
    raise RuntimeError(f"{_PACKAGES[name]}.SYSTEM is named {system.name!r}, not {name!r}.")
  return system


def run_config(workdir: str):
  """The ConfigDict a run in `workdir` was made with (its config.json)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a run's workdir (train with "
                            "`python -m launch.train --config=... --workdir=...` first).")
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); the run's config is damaged.") from e


def for_workdir(workdir: str) -> tuple[System, Any]:
  """(system, config) of the run in `workdir`."""
  config = run_config(workdir)
  if "system" not in config:
    raise ValueError(f"{workdir}/config.json names no system.")
  return get(config.system), config
