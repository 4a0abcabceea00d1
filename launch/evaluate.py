r"""Evaluates a trained run on its test split and writes metrics.json and report.md.

  python -m launch.evaluate --workdir=workdirs/demo --baselines=workdirs/demo/one_vs_rest

Uses the best checkpoint by validation (else the latest), then the run's system writes its report
(for MUSLSE: Tables 2, 6, 7, the wins/losses/draws test against the baselines, map.png).
"""

from absl import app
from absl import flags
from absl import logging

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
_BASELINES = flags.DEFINE_list("baselines", [], "Workdirs of baseline runs to merge into the report.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup()
  from musemb import systems, train  # pylint: disable=g-import-not-at-top
  system, _ = systems.for_workdir(_WORKDIR.value)
  metrics = train.evaluate_run(_WORKDIR.value)
  path = system.report(_WORKDIR.value, baseline_workdirs=tuple(_BASELINES.value))
  logging.info("Final metrics:\n%s", common.metrics_lines(metrics))
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
