r"""`make demo-reviews`: Rush et al.'s text-music embeddings on the built-in world, Table 1's shape.

  python -m launch.demo_reviews --workdir=workdirs/reviews --data_dir=data

1. prepares the synthetic world at --size (`small`, 16 kHz) under --data_dir: 480 albums of four
   tracks and two reviews each, split by whole albums (configs/rush.py:demo: 20% of the reviews
   test, 20% of the rest valid: 307 / 77 / 96 albums);
2. trains the main variant (mean word embeddings, non-linear branches, bi-directional ranking
   loss with neighbourhood constraints and neighbourhood sampling) and the ablations in
   --ablations (default: no neighbourhood sampling, uni-directional; also available: linear,
   lstm, no_constraints, infonce); the descriptor vectors are computed once per run's workdir from
   the audio (`features.audio_descriptors`);
3. fits the baselines on the same split (`rush_baselines`, workdir `baselines`): CCA with latent
   sizes 50 and 100 (capped at the views' sizes) and WSABIE (WARP, albums as labels);
4. writes each run's report.md and `<workdir>/report.md` (Table 1's shape) and prints the rows.

Each run resumes if interrupted. Measured on 2 shared CPU cores: about 5.5 minutes from nothing,
of which 2.2 prepare the world and about 0.8 go to each run (network or baselines), a third of that
being the run's own descriptor pass over the 1,920 clips (cached in its workdir).
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
_ABLATIONS = flags.DEFINE_list("ablations", ["no_sampling", "unidirectional"],
                               "configs/rush.py items, one run each, beside the main variant.")


def main(argv):
  del argv
  common.setup()
  from configs import rush as rush_config  # pylint: disable=g-import-not-at-top
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top

  rush = systems.get("rush")
  start = time.time()
  base = rush_config.get_config(f"demo,size={_SIZE.value}")
  world = synthetic.SyntheticWorld(_SIZE.value, seed=base.data.synthetic_seed,
                                   sample_rate=base.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=base.data.sample_rate,
                                 max_seconds=base.data.max_seconds or None)
  logging.info("[demo-reviews] dataset ready (%.0f s)", time.time() - start)

  demo = f"demo,size={_SIZE.value}"
  runs = ([("main", demo)] + [(a, f"{demo},{a}") for a in _ABLATIONS.value]
          + [("baselines", f"{demo},cca")])
  workdirs = []
  for name, variant in runs:
    config = rush_config.get_config(variant)
    config.data_dir = dataset_dir
    workdir = os.path.join(_WORKDIR.value, name)
    train.run(config, workdir)
    workdirs.append(workdir)
    logging.info("[demo-reviews] %s done (%.0f s)", name, time.time() - start)
  baselines = workdirs[-1]
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
