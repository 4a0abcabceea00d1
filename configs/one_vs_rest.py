r"""One-vs-rest linear classifiers (MUSLSE §6.3 baseline) on the same bag-of-frames as MUSLSE.

  python -m launch.train --config=configs/one_vs_rest.py --workdir=workdirs/demo/one_vs_rest \
      --config.data_dir=data
  python -m launch.train --config=configs/one_vs_rest.py:tiny,tasks=tag_prediction --workdir=W

It declares MUSLSE's keys (configs/muslse.py) so data and feature settings, hence the cached
bag-of-frames, are shared; the variants are MUSLSE's (`tiny`, `demo`, `tagatune`, `bigdata` and the
same knobs), applied after this system's defaults: tag and artist prediction summed every step with
SGD at 0.01 on MUSLSE's schedule (epochs, validation every 2, early stopping), `tagatune` trains
tags only and `bigdata` artists only (the paper's one-vs-rest rows), and `tasks=`, `opt=`, `mode=`
override them.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import muslse


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = muslse.base("one_vs_rest")
  c.tasks.names = "tag_prediction,artist_prediction"
  c.tasks.mode = "sum"
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.01
  c.train.eval_metric = "mean_p@3"
  v = common.parse_arg(arg, **muslse.VARIANTS)
  muslse.apply_variants(c, v)
  if v.tagatune and not v.tasks:
    c.tasks.names = "tag_prediction"
  if v.bigdata and not v.tasks:
    c.tasks.names = "artist_prediction"
  c.train.eval_metric = "mean_p@3"
  return c
