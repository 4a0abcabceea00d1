r"""`make demo-playlists`: Lin et al.'s playlist-based tag propagation on the built-in world.

  python -m launch.demo_playlists --workdir=workdirs/playlists --data_dir=data \
      [--runs=baseline,proposed,separate,r0.2,r0.8,category]

1. prepares the synthetic `demo` world at 22,050 Hz (the rate configs/tagprop.py trains at; the
   same dataset `make demo-won` uses: reused if present) with its playlists and its weak,
   incomplete tags;
2. trains (`--runs` picks which; the default is the first six):
   * `baseline`: the SampleCNN with eq. (1) alone (configs/tagprop.py:demo,baseline);
   * `proposed`: eq. (3), the paper's single head, r = 0.4 (configs/tagprop.py:demo);
   * `separate`: eq. (3) with a separate supportive head, r = 0.4;
   * `r0.2`, `r0.8`: the single head at r = 0.2 and 0.8, with `proposed` a short search-range
     sweep (Figs. 3-4);
   * `category`: a search range per tag category (beyond the paper, its §V.D future work) over
     the world's taxonomy: genre tags at r = 0.8, instrument tags at r = 0.2, the rest (mood,
     activity) at 0.4. Chosen from how the world makes its playlists, not tuned: a playlist keeps
     to one genre throughout (so a far neighbour still shares the genre) and flows from song to
     song by mood and tempo, while the instruments vary from track to track within a genre;
   * `shortchunk_baseline`, `shortchunk` (not in the default): Won et al.'s short-chunk CNN at an
     eighth of its widths, eq. (1) and eq. (3) at r = 0.4 (propagation for another network);
3. writes `<workdir>/proposed/report.md` (the proposed run's, the others merged into its
   metrics.json) and `<workdir>/report.md` (Table I with paired bootstrap intervals, the
   search-range sweep and its plot, Fig. 5 per popularity bin, Table II / Fig. 6 per category of
   the world's taxonomy, Fig. 2 from the playlists) and prints Table I.

Each run resumes if interrupted; a finished run is evaluated again, not retrained.
"""

import os
import time

from absl import app
from absl import flags
from absl import logging

from launch import common

# The genre/instrument search ranges of the `category` run (see the docstring).
CATEGORY_R = "genre=0.8,instrument=0.2"
# name -> (configs/tagprop.py variant, config overrides)
RUNS = {
    "baseline": ("demo,baseline", {}),
    "proposed": ("demo", {}),
    "separate": ("demo,head=separate", {}),
    "r0.2": ("demo,r=0.2", {}),
    "r0.8": ("demo,r=0.8", {}),
    "category": ("demo", {"objective.category_r": CATEGORY_R}),
    "shortchunk_baseline": ("demo,baseline,shortchunk", {}),
    "shortchunk": ("demo,shortchunk", {}),
}
DEFAULT_RUNS = ["baseline", "proposed", "separate", "r0.2", "r0.8", "category"]
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/playlists", "Where the runs and report go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the prepared world goes.")
_RUNS = flags.DEFINE_list("runs", DEFAULT_RUNS, f"Which runs to train, of {list(RUNS)}.")


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
    variant, overrides = RUNS[name]
    config = tagprop_config.get_config(variant)
    config.data_dir = dataset_dir
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    workdirs[name] = os.path.join(_WORKDIR.value, name)
    train.run(config, workdirs[name])
    logging.info("[demo-playlists] %s trained (%.0f s)", name, time.time() - start)

  main_run = workdirs.get("proposed") or next(iter(workdirs.values()))
  others = [w for w in workdirs.values() if w != main_run]
  tagprop.report(main_run, baseline_workdirs=others)
  path = tagprop.compare(list(workdirs.values()), os.path.join(_WORKDIR.value, "report.md"))

  print("\nAuto-tagging the demo world's test songs (Table I shape):\n")
  print(f"  {'run':20s} {'annotation MAP':>15s} {'retrieval MAP':>14s} {'retrieval AUC':>14s}")
  for name, workdir in workdirs.items():
    m = common.read_metrics(workdir)
    key = tagprop.key(systems.run_config(workdir))
    print(f"  {name:20s} {m[f'{key}/annotation/map']:15.3f} {m[f'{key}/retrieval/map']:14.3f} "
          f"{m[f'{key}/retrieval/roc_auc']:14.3f}")
  print(f"\nreport: {os.path.abspath(path)}   ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
  app.run(main)
