r"""Writes the MUSLSE report of one finished run, or compares several runs as the paper's tables.

One run (Tables 2, 4, 6, 7, wins/losses/draws and map.png into the workdir; baseline workdirs'
metrics are merged into the run's metrics.json first):

  python -m launch.report --workdir=workdirs/muslse --baselines=workdirs/muslse/one_vs_rest

Several runs (Tables 3, 5 and 6 of Weston et al. 2011, one row per run, sorted by d and loss):

  python -m launch.report --workdirs=workdirs/warp_d100,workdirs/auc_d100,workdirs/warp_d400 \
      --out=workdirs/tables.md
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging

from musemb import report

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run: writes <workdir>/report.md.")
_BASELINES = flags.DEFINE_list(
    "baselines", [], "With --workdir: workdirs of baseline runs (e.g. one-vs-rest) to merge in.")
_WORKDIRS = flags.DEFINE_list("workdirs", [], "Several finished runs to compare (needs --out).")
_OUT = flags.DEFINE_string("out", None, "With --workdirs: the markdown file to write.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; pass --workdir or --workdirs.")
  if bool(_WORKDIR.value) == bool(_WORKDIRS.value):
    raise app.UsageError("pass either --workdir=W (one run's report) or --workdirs=W1,W2,... "
                         "--out=tables.md (a comparison), not both or neither.")
  if _WORKDIRS.value:
    if not _OUT.value:
      raise app.UsageError("--workdirs needs --out=<file.md> for the comparison tables.")
    if _BASELINES.value:
      raise app.UsageError("--baselines goes with --workdir; compare_runs reads each run's own "
                           "metrics.json (merge baselines into each run with --workdir first).")
    path = report.compare_runs(_WORKDIRS.value, _OUT.value)
  else:
    if _OUT.value:
      raise app.UsageError("--out goes with --workdirs; --workdir always writes <workdir>/report.md.")
    path = report.write_report(_WORKDIR.value, baseline_workdirs=_BASELINES.value)
  logging.info("Wrote %s", path)
  print(path)


if __name__ == "__main__":
  app.run(main)
