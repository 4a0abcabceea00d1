r"""One-vs-rest linear classifiers (MUSLSE §6.3 baseline) on the same bag-of-frames as MUSLSE.

  python -m launch.train --config=configs/one_vs_rest.py --workdir=workdirs/demo/one_vs_rest \
      --config.data_dir=data

It starts from configs/muslse.py so data and feature settings (hence the cached bag-of-frames) are
shared; variants are the same (`tiny`, `demo`, `tagatune`, `bigdata`).
"""

from __future__ import annotations

import ml_collections

from configs import muslse


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = muslse.get_config(arg)
  c.system = "one_vs_rest"
  c.tasks.names = "tag_prediction,artist_prediction"
  if arg and "tagatune" in arg:
    c.tasks.names = "tag_prediction"
  if arg and "bigdata" in arg:
    c.tasks.names = "artist_prediction"
  c.tasks.mode = "sum"
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.train.eval_metric = "mean_p@3"
  return c
