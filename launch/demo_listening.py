r"""`make demo-listening`: Platt's pipeline on the built-in world's listeners, end to end.

  python -m launch.demo_listening --workdir=workdirs/listening --data_dir=data

1. prepares the synthetic `demo` world (the same dataset `make demo` uses: reused if present);
2. fits WMF latent factors to all its users' play counts (configs/wmf.py:demo; the factors the
   next steps use, as the thesis fits on all plays), runs chapter 5's proxy task (tags from
   factors) and, for the held-out mAP@500, a second fit without 20% of each user's pairs;
3. trains the SampleCNN to regress the factors from raw audio (configs/samplecnn.py:demo);
4. trains the same SampleCNN on the tags directly (configs/samplecnn.py:demo,head=tags), the
   direct-tagging row of Table 6.2;
5. evaluates recommendation from predicted factors (Table 6.1: per-user AUC and mAP@500 next to
   random and the all-plays WMF factors, the upper bound) and the transfer to tags (Table 6.2),
   writes report.md.

Rerunning resumes or reuses whatever is already done (factors by iteration, training by checkpoint).
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/listening", "Where the runs and report go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")


def main(argv):
  del argv
  common.setup()
  from configs import muslse as muslse_config  # pylint: disable=g-import-not-at-top
  from configs import samplecnn as samplecnn_config  # pylint: disable=g-import-not-at-top
  from configs import wmf as wmf_config  # pylint: disable=g-import-not-at-top
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top

  start = time.time()
  # Prepared exactly as `make demo` prepares it, so both demos share one dataset under --data_dir
  # (the demo world's 8 s clips are shorter than either config's crop limit).
  prep = muslse_config.get_config("demo")
  world = synthetic.SyntheticWorld("demo", seed=prep.data.synthetic_seed,
                                   sample_rate=prep.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=prep.data.sample_rate,
                                 max_seconds=prep.data.max_seconds or None)
  logging.info("[demo-listening] dataset ready in %s (%.0f s)", dataset_dir, time.time() - start)

  wmf_dir = os.path.join(_WORKDIR.value, "wmf")
  wmf_metrics = train.run(wmf_config.get_config("demo"), wmf_dir)
  logging.info("[demo-listening] WMF factors fitted (%.0f s)", time.time() - start)

  factors_dir = os.path.join(_WORKDIR.value, "samplecnn")
  config = samplecnn_config.get_config("demo")
  config.data_dir = dataset_dir
  config.data.factors = wmf_dir
  train.run(config, factors_dir)
  logging.info("[demo-listening] factor regression trained (%.0f s)", time.time() - start)

  tags_dir = os.path.join(_WORKDIR.value, "samplecnn_tags")
  tags_config = samplecnn_config.get_config("demo,head=tags")
  tags_config.data_dir = dataset_dir
  train.run(tags_config, tags_dir)
  logging.info("[demo-listening] direct tagger trained (%.0f s)", time.time() - start)

  path = systems.get(config.system).report(factors_dir, baseline_workdirs=(tags_dir,))
  m = common.read_metrics(factors_dir)
  nan = float("nan")
  print("\nWMF on the demo world's listeners: held-out mAP@500 (fit on the training split) "
        f"{wmf_metrics.get('wmf/recommendation/map@500', nan):.3f} (random "
        f"{wmf_metrics.get('wmf/recommendation/random_map@500', nan):.3f}); proxy tag AUC "
        f"(all-plays factors) {wmf_metrics.get('wmf/proxy_tags/roc_auc', nan):.3f}")
  print("\nRecommendation of test songs from factors (Table 6.1 shape):")
  for label, prefix in (("random", "random_"), ("predicted from audio", ""),
                        ("WMF factors (upper bound)", "upper_")):
    print(f"  {label:28s} mAP@500 {m[f'samplecnn/recommendation/{prefix}map@500']:.3f}   "
          f"AUC {m[f'samplecnn/recommendation/{prefix}roc_auc']:.3f}")
  print("\nTag prediction (Table 6.2 shape), mean per-tag ROC AUC on test songs:")
  print(f"  from predicted factors       {m['samplecnn/transfer/predicted_factors_roc_auc']:.3f}")
  print(f"  from WMF factors             {m['samplecnn/transfer/true_factors_roc_auc']:.3f}")
  print(f"  SampleCNN trained on tags    {m['samplecnn_tags/tags/roc_auc']:.3f}")
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
