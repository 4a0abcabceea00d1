r"""Evaluates a trained run on its test split and writes metrics.json, report.md and map.png.

  python -m launch.evaluate --workdir=workdirs/demo --baselines=workdirs/demo/one_vs_rest

Uses the best checkpoint by validation (else the latest). Baseline workdirs' metrics are merged into
the report (Tables 2, 6, 7 and the wins/losses/draws test need one-vs-rest).
"""

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
_BASELINES = flags.DEFINE_list("baselines", [], "Workdirs of baseline runs to merge into the report.")


def main(argv):
  del argv
  common.setup()
  from musemb import evaluate, report, train  # pylint: disable=g-import-not-at-top
  from musemb import systems  # pylint: disable=g-import-not-at-top
  config = common.load_workdir_config(_WORKDIR.value)
  system = systems.get_system(config.system)
  data = system.load_data(config, _WORKDIR.value)
  params = train.load_params(_WORKDIR.value, config, data)
  metrics = system.write_outputs(params, data, config, _WORKDIR.value)
  path = report.write_report(_WORKDIR.value, baseline_workdirs=tuple(_BASELINES.value))
  logging.info("%s metrics:\n%s", config.eval.split,
               evaluate.pk_table({f"{config.system}/{k}": v for k, v in metrics.items()}))
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
