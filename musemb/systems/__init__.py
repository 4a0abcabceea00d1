"""One module per paper's system; each composes a model, an objective, a sampler and evaluators.

`get_system(name)` is the one place that maps a config's `system` string to its module.
"""

from __future__ import annotations

import importlib

_SYSTEMS = {
    "muslse": "musemb.systems.muslse",
    "one_vs_rest": "musemb.systems.one_vs_rest",
    "samplecnn": "musemb.systems.samplecnn",
    "won": "musemb.systems.won",
}


def get_system(name: str):
  if name not in _SYSTEMS:
    raise ValueError(f"config.system={name!r}; known systems: {sorted(_SYSTEMS)}.")
  return importlib.import_module(_SYSTEMS[name])
