r"""Trains a grid of one config and keeps the point that validates best (`musemb.sweep`).

  python -m launch.sweep --config=configs/muslse.py:tagatune --workdir=W \
      --config.data_dir=data/mtat --sweep=model.max_norm=1,2,4
  python -m launch.sweep --config=configs/one_vs_rest.py:tagatune --workdir=W2 \
      --config.data_dir=data/mtat --sweep=optimizer.learning_rate=0.003,0.01,0.03

Every point is an ordinary run in `W/<key>=<value>,...` (resumable, locked, config-checked);
`W/sweep.json` lists each point's validation and test metrics and the choice, `W/metrics.json`
holds the chosen point's test metrics. Several `--sweep` flags make a grid (their product). The
test split never takes part in the choice. Rerun the same command after a preemption: finished
points are reused.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's folder; each point trains in a "
                               "sub-folder named for its values.", required=True)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "key=value1,value2,... (repeat for a grid), "
                                   "e.g. model.max_norm=1,2,4.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from musemb import sweep  # pylint: disable=g-import-not-at-top  (light: no JAX)
  from musemb import workdir  # pylint: disable=g-import-not-at-top
  try:
    grid = sweep.parse_grid(_SWEEP.value, _CONFIG.value)
  except sweep.SweepError as e:
    common.fail(str(e))
  common.setup()
  from musemb import systems  # pylint: disable=g-import-not-at-top
  from musemb import train  # pylint: disable=g-import-not-at-top
  if systems.get(_CONFIG.value.system).fit is not None:
    common.fail(f"{_CONFIG.value.system} is fitted, not trained with validation: launch.sweep "
                "chooses by the training loop's validation metric (training.json).")
  try:
    record = sweep.run_sweep(_CONFIG.value, _WORKDIR.value, grid, train.run,
                             check_fn=train.check_config)
  except (sweep.SweepError, train.ConfigError, workdir.WorkdirBusyError,
          workdir.ConfigMismatchError) as e:
    common.fail(str(e))
  logging.info("Chosen: %s. Its test metrics:\n%s", sweep.point_name(record["chosen_point"]),
               common.metrics_lines(record["metrics"]))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=common.parse_flags)
