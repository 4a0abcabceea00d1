r"""Fits implicit-feedback WMF factors to listening data; resumes from the workdir's factors.npz.

  python -m launch.wmf --config=configs/wmf.py:demo --workdir=workdirs/wmf
  python -m launch.wmf --config=configs/wmf.py:lfm1b --workdir=W --config.data.path=data/LFM-1b
  python -m launch.wmf --config=configs/wmf.py:taste_profile --workdir=W \
      --config.data.path=data/msd/train_triplets.txt

Writes <workdir>/factors.npz (ids and the factors fitted on all plays, after every iteration: what
SampleCNN and the cultural branch read) and, with eval.heldout_fit (on for the built-in world),
heldout_factors.npz from a second fit without 20% of each user's pairs, whose held-out recall@50 /
mAP@500 go to <workdir>/metrics.json (see musemb.systems.wmf.fit). Rerun the same command to
resume; `launch.train` with the same config does the same (WMF's fit verb).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/wmf.py[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where factors.npz and metrics.json go.",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.configure_system_devices(_CONFIG.value)  # before JAX starts (WMF: a CPU device a core)
  common.setup()
  from musemb import train  # pylint: disable=g-import-not-at-top
  metrics = train.run(_CONFIG.value, _WORKDIR.value)
  logging.info("Done. Metrics:\n%s", common.metrics_lines(metrics))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=common.parse_flags)
