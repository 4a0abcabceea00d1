r"""`make demo-playlists`: Lin et al.'s playlist-based tag propagation on the built-in world.

  python -m launch.demo_playlists --workdir=workdirs/playlists --data_dir=data \
      [--runs=baseline,proposed,separate]

1. prepares the synthetic `demo` world at 22,050 Hz (the rate configs/tagprop.py trains at; the
   same dataset `make demo-won` uses: reused if present) with its playlists and its weak,
   incomplete tags;
2. trains the baseline SampleCNN (eq. (1), configs/tagprop.py:demo,baseline), the proposed model
   (eq. (3), the paper's single head, r = 0.4) and the proposed model with a separate supportive
   head (`--runs` picks which);
3. writes `<workdir>/proposed/report.md` (the proposed run's, the others merged into its
   metrics.json) and `<workdir>/report.md` (Table I with paired bootstrap intervals, Fig. 5 per
   popularity bin, Fig. 2 from the playlists) and prints Table I.

Each run resumes if interrupted; a finished run is evaluated again, not retrained.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

RUNS = {"baseline": "demo,baseline", "proposed": "demo", "separate": "demo,head=separate"}
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/playlists", "Where the runs and report go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")
_RUNS = flags.DEFINE_list("runs", list(RUNS), f"Which runs to train, of {list(RUNS)}.")


def main(argv):
  del argv
  common.setup()
  from configs import tagprop as tagprop_config  # pylint: disable=g-import-not-at-top
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top

  unknown = sorted(set(_RUNS.value) - set(RUNS))
  if unknown or not _RUNS.value:
    common.fail(f"--runs={','.join(_RUNS.value)}: pick from {list(RUNS)}.")
  tagprop = systems.get("tagprop")
  start = time.time()
  base = tagprop_config.get_config("demo")
  world = synthetic.SyntheticWorld("demo", seed=base.data.synthetic_seed,
                                   sample_rate=base.data.sample_rate)
  dataset_dir = builders.prepare(world, _DATA_DIR.value, sample_rate=base.data.sample_rate,
                                 max_seconds=base.data.max_seconds or None)
  logging.info("[demo-playlists] dataset ready in %s (%.0f s)", dataset_dir, time.time() - start)

  workdirs = {}
  for name in [n for n in RUNS if n in _RUNS.value]:
    config = tagprop_config.get_config(RUNS[name])
    config.data_dir = dataset_dir
    workdirs[name] = os.path.join(_WORKDIR.value, name)
    train.run(config, workdirs[name])
    logging.info("[demo-playlists] %s trained (%.0f s)", name, time.time() - start)

  main_run = workdirs.get("proposed") or next(iter(workdirs.values()))
  others = [w for w in workdirs.values() if w != main_run]
  tagprop.report(main_run, baseline_workdirs=others)
  path = tagprop.compare(list(workdirs.values()), os.path.join(_WORKDIR.value, "report.md"))

  print("\nAuto-tagging the demo world's test songs (Table I shape):\n")
  print(f"  {'run':10s} {'annotation MAP':>15s} {'retrieval MAP':>14s} {'retrieval AUC':>14s}")
  for name, workdir in workdirs.items():
    m = common.read_metrics(workdir)
    key = tagprop.key(systems.run_config(workdir))
    print(f"  {name:10s} {m[f'{key}/annotation/map']:15.3f} {m[f'{key}/retrieval/map']:14.3f} "
          f"{m[f'{key}/retrieval/roc_auc']:14.3f}")
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
