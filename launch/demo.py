r"""`make demo`: the built-in world end to end, in a few minutes on 2 CPU cores.

  python -m launch.demo --workdir=workdirs/demo --data_dir=data

1. generates the synthetic world (`demo` size) and prepares it as a TFDS dataset under --data_dir;
2. trains MUSLSE on all five tasks (configs/muslse.py:demo), computing the MFCC k-means
   bag-of-frames on the way (cached beside the dataset);
3. trains the one-vs-rest baseline (configs/one_vs_rest.py:demo) on the same features;
4. evaluates both on the test split (plus the cosine similar-songs baseline), writes metrics.json and
   report.md (Tables 2, 4, 6, 7 shapes, wins/losses/draws with Wilcoxon tests, map.png);
5. prints the precision@k table and the report's path.

Rerunning resumes or reuses whatever is already done.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Where the runs and report go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")
_SIZE = flags.DEFINE_string("size", "demo", "Synthetic world size (tiny, demo, small, large).")
_VARIANT = flags.DEFINE_string("variant", "demo", "configs/muslse.py variant for both runs.")


def main(argv):
  del argv
  common.setup()
  from configs import muslse as muslse_config  # pylint: disable=g-import-not-at-top
  from configs import one_vs_rest as ovr_config  # pylint: disable=g-import-not-at-top
  from musemb import evaluate, systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top

  start = time.time()
  config = muslse_config.get_config(_VARIANT.value)
  config.data.synthetic_size = _SIZE.value
  world = synthetic.SyntheticWorld(_SIZE.value, seed=config.data.synthetic_seed,
                                   sample_rate=config.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=config.data.sample_rate,
                                 max_seconds=config.data.max_seconds or None)
  logging.info("[demo] dataset ready in %s (%.0f s)", dataset_dir, time.time() - start)

  config.data_dir = dataset_dir
  train.run(config, _WORKDIR.value)
  logging.info("[demo] MUSLSE trained (%.0f s)", time.time() - start)

  baseline = ovr_config.get_config(_VARIANT.value)
  baseline.data_dir = dataset_dir
  baseline_dir = os.path.join(_WORKDIR.value, "one_vs_rest")
  train.run(baseline, baseline_dir)
  logging.info("[demo] one-vs-rest trained (%.0f s)", time.time() - start)

  path = systems.get(config.system).report(_WORKDIR.value, baseline_workdirs=(baseline_dir,))
  metrics = common.read_metrics(_WORKDIR.value)
  print("\nTest precision@k on the synthetic world (songs not seen in training):\n")
  print(evaluate.pk_table({k: v for k, v in metrics.items()
                           if "/num_queries" not in k and "/r@" not in k}))
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
