r"""`make demo-reviews`: Rush et al.'s text-music embeddings on the built-in world, Table 1's shape.

  python -m launch.demo_reviews --workdir=workdirs/reviews --data_dir=data

1. prepares the synthetic world at --size (`small`, 16 kHz) under --data_dir: 480 albums of four
   tracks and two reviews each, split by whole albums (configs/rush.py:demo: 20% of the reviews
   test, 20% of the rest valid: 307 / 77 / 96 albums);
2. trains the main variant (mean word embeddings, non-linear branches, bi-directional ranking
   loss with neighbourhood constraints and neighbourhood sampling) and one run per item of
   --ablations, Table 1's rows: `no_sampling`, `unidirectional`, `linear` (the "non-linear" column
   off), `text=features`, `infonce` (the contrastive variant, beyond the paper) and `text=lstm`
   (eqs. 12-14; 15 epochs and reviews padded to 64 tokens, `configs/rush.py`, so that the demo
   fits its budget); `no_constraints` is available too. The descriptor vectors are computed once from
   the audio into `<workdir>/cache` and shared by every run;
3. for `text=features` (the paper's "BERT features" row) writes `<workdir>/sentence_features.npz`
   first: nothing is downloaded, so the file holds the mean of word2vec vectors trained here on
   the training reviews only (`rush.data.word2vec_sentence_features`), a frozen text
   representation like BERT's but no stand-in for its quality; the table labels the row so;
4. fits the baselines on the same split (`rush_baselines`, workdir `baselines`, right after the
   main run): CCA with latent sizes 50 and 100 (capped at the views' sizes) and WSABIE (WARP,
   albums as labels);
5. writes each run's report.md and `<workdir>/report.md` (Table 1's shape) and prints the rows.

Each run resumes if interrupted. Measured on 2 CPU cores: see the README's Rush et al. section
(wall-clock of the whole demo beside its table).
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/reviews", "Where the runs and tables go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")
_SIZE = flags.DEFINE_string("size", "small", "The built-in world's size (tiny, demo, small).")
_ABLATIONS = flags.DEFINE_list(
    "ablations", ["no_sampling", "unidirectional", "linear", "text=features", "infonce",
                  "text=lstm"],
    "configs/rush.py items, one run each, beside the main variant (a run's folder is the item "
    "without `text=`).")


def main(argv):
  del argv
  common.setup()
  from configs import rush as rush_config  # pylint: disable=g-import-not-at-top
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  from musemb.systems.rush import data as rush_data  # pylint: disable=g-import-not-at-top

  rush = systems.get("rush")
  start = time.time()
  base = rush_config.get_config(f"demo,size={_SIZE.value}")
  world = synthetic.SyntheticWorld(_SIZE.value, seed=base.data.synthetic_seed,
                                   sample_rate=base.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=base.data.sample_rate,
                                 max_seconds=base.data.max_seconds or None)
  logging.info("[demo-reviews] dataset ready (%.0f s)", time.time() - start)

  demo = f"demo,size={_SIZE.value}"
  # The baselines run before the ablations' networks; the LSTM, the slowest run, comes last.
  runs = ([("main", demo), ("baselines", f"{demo},cca")]
          + [(a.replace("text=", ""), f"{demo},{a}") for a in _ABLATIONS.value])
  cache = os.path.join(_WORKDIR.value, "cache")
  features_path = os.path.join(_WORKDIR.value, "sentence_features.npz")
  workdirs = []
  for name, variant in runs:
    config = rush_config.get_config(variant)
    config.data_dir = dataset_dir
    config.data.cache_dir = cache
    if config.model.text == "features":
      config.text.features_path = features_path
      if not os.path.exists(features_path):
        made = rush_data.word2vec_sentence_features(config, cache, features_path)
        logging.info("[demo-reviews] sentence features for the BERT row: %s (%.0f s)", made,
                     time.time() - start)
    workdir = os.path.join(_WORKDIR.value, name)
    train.run(config, workdir)
    workdirs.append(workdir)
    logging.info("[demo-reviews] %s done (%.0f s)", name, time.time() - start)
  baselines = workdirs[1]
  for workdir in workdirs:
    rush.report(workdir, baseline_workdirs=[baselines] if workdir != baselines else [])
  path = rush.compare(workdirs, os.path.join(_WORKDIR.value, "report.md"))
  print("\nReview -> album retrieval on the built-in world's test albums "
        "(R@1 / R@5 / R@10, MRR):\n")
  for workdir in workdirs:
    m = common.read_metrics(workdir)
    prefixes = ([("rush", "rush")] if "rush/review_to_album/r@1" in m else
                [(f"rush_baselines/{b}", b) for b in ("cca_50", "cca_100", "wsabie")])
    for prefix, label in prefixes:
      r = lambda k: m[f"{prefix}/review_to_album/{k}"]  # pylint: disable=cell-var-from-loop
      print(f"  {os.path.basename(workdir) + ' ' + label:24s} {r('r@1'):.3f} / {r('r@5'):.3f} / "
            f"{r('r@10'):.3f}  MRR {r('mrr'):.3f}  (chance R@10 {r('chance/r@10'):.3f}, "
            f"MRR {r('chance/mrr'):.3f})")
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
