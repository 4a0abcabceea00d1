r"""Trains one system from a config file; resumes from the workdir's checkpoints.

  python -m launch.train --config=configs/muslse.py --workdir=workdirs/muslse
  python -m launch.train --config=configs/muslse.py:tagatune,d=400 --workdir=W \
      --config.data_dir=data/mtat --config.optimizer.learning_rate=0.02
  python -m launch.train --config=configs/one_vs_rest.py --workdir=W/one_vs_rest
  python -m launch.train --config=configs/wmf.py:demo --workdir=workdirs/wmf   # fit, not trained

Overrides are validated: an unknown key or a value of the wrong type stops before anything runs,
with its message alone. A rerun in an existing workdir must match the config the run started with;
`--allow_changes=train.num_steps,optimizer.learning_rate` lets those keys differ (e.g. to train a
finished run for longer). One run per workdir: a second is refused while the first lives.
SIGTERM (preemption) writes a checkpoint and exits with status 143; rerun the same command to resume.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard events and "
                               "metrics.json go.", required=True)
_ALLOW_CHANGES = flags.DEFINE_list(
    "allow_changes", [], "Resuming with a changed config: the keys that may change (durations, "
    "the learning rate, ...: musemb.workdir.RESUMABLE_KEYS), e.g. train.num_steps.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from musemb import workdir  # pylint: disable=g-import-not-at-top  (light: no JAX)
  try:     # in a second, before TensorFlow and JAX load
    workdir.preflight(_WORKDIR.value)
  except workdir.WorkdirBusyError as e:
    common.fail(str(e))
  common.configure_system_devices(_CONFIG.value)  # before JAX starts (WMF: a CPU device a core)
  common.setup()
  from musemb import train  # pylint: disable=g-import-not-at-top
  try:
    metrics = train.run(_CONFIG.value, _WORKDIR.value, allow_changes=tuple(_ALLOW_CHANGES.value))
  except (train.ConfigError, workdir.WorkdirBusyError, workdir.ConfigMismatchError) as e:
    common.fail(str(e))
  logging.info("Done. Final metrics:\n%s", common.metrics_lines(metrics))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=common.parse_flags)
