r"""`make demo-won`: Won et al.'s tag-based retrieval on the built-in world, Tables 1 and 2.

  python -m launch.demo_won --workdir=workdirs/won --data_dir=data [--acoustic_epochs=2]

1. prepares the synthetic `demo` world at 22,050 Hz (the short-chunk CNN's rate) under --data_dir;
2. fits WMF factors to its listeners (configs/wmf.py:demo) for the cultural branch;
3. Table 1: the cultural branch (fast) with each sampling method: random, balanced, and the
   paper's balanced-weighted row as its two readings: `authors` (the (cos + 1) / 2 weighting of
   the authors' code, which produced the paper's numbers) and `wu` (Wu et al.'s distance
   weighting, which the paper's text cites);
4. Table 2: the authors' balanced-weighted sampling (as the paper's Table 2) with the acoustic,
   concatenation hybrid and late-fusion branches (the cultural row is step 3's cultural_authors);
5. writes each run's report.md and `<workdir>/report.md` (Tables 1 and 2 with the paper's rows,
   zero-shot and multi-tag results per run) and prints the table.

Each run resumes if interrupted. The acoustic rows dominate the time: `--acoustic_epochs` (2 of
10,000 triplets by default here, 4 in configs/won.py:demo) trades their quality for minutes.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", "workdirs/won", "Where the runs and tables go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")
_ACOUSTIC_EPOCHS = flags.DEFINE_integer("acoustic_epochs", 2,
                                        "Epochs of the acoustic, hybrid and late-fusion runs.")
_TABLES = flags.DEFINE_list("tables", ["1", "2"], "Which tables' runs to train.")


def main(argv):
  del argv
  common.setup()
  from configs import won as won_config  # pylint: disable=g-import-not-at-top
  from configs import wmf as wmf_config  # pylint: disable=g-import-not-at-top
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top

  won = systems.get("won")
  start = time.time()
  base = won_config.get_config("demo")
  world = synthetic.SyntheticWorld("demo", seed=base.data.synthetic_seed,
                                   sample_rate=base.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=base.data.sample_rate,
                                 max_seconds=base.data.max_seconds or None)
  wmf_dir = os.path.join(_WORKDIR.value, "wmf")
  train.run(wmf_config.get_config("demo"), wmf_dir)
  logging.info("[demo-won] dataset and factors ready (%.0f s)", time.time() - start)

  runs = []
  if "1" in _TABLES.value:
    runs += [(f"cultural_{s}", f"demo,branch=cultural,sampling={s}")
             for s in ("random", "balanced", "authors", "wu")]
  if "2" in _TABLES.value:
    runs += [(f"{b}_authors", f"demo,branch={b},sampling=authors,epochs={_ACOUSTIC_EPOCHS.value}")
             for b in ("acoustic", "hybrid", "late_fusion")]
  workdirs = []
  for name, variant in runs:
    config = won_config.get_config(variant)
    config.data_dir = dataset_dir
    config.data.factors = wmf_dir
    workdir = os.path.join(_WORKDIR.value, name)
    train.run(config, workdir)
    won.report(workdir)
    workdirs.append(workdir)
    logging.info("[demo-won] %s trained (%.0f s)", name, time.time() - start)

  path = won.compare(workdirs, os.path.join(_WORKDIR.value, "report.md"))
  print("\nTag-to-song retrieval on the demo world's test songs (MAP / P@10 over tags):\n")
  for workdir in workdirs:
    m = common.read_metrics(workdir)
    print(f"  {os.path.basename(workdir):22s} MAP {m['won/retrieval/map']:.3f}  "
          f"P@10 {m['won/retrieval/p@10']:.3f}  zero-shot MAP {m['won/zero_shot/map']:.3f} "
          f"(chance {m['won/zero_shot/random_map']:.3f})  multi-tag MAP "
          f"{m['won/multi_tag/map']:.3f}")
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
