r"""Writes one finished run's report, or compares several runs as their paper's tables.

The run's system (its config.json) writes the report: MUSLSE Tables 2, 4, 6, 7, wins/losses/draws
and map.png; Won et al. retrieval, categories, zero-shot and Table 3; SampleCNN Tables 6.1 and
6.2; WMF the shape of Tables 5.1-5.5; Rush et al. album retrieval from reviews with chance levels
and the nearest reviews of a few albums. Baseline workdirs' metrics are merged in first:

  python -m launch.report --workdir=workdirs/muslse --baselines=workdirs/muslse/one_vs_rest

A system's report may take options (`System.report_options`): `--taxonomy=` (tagprop: Table II /
Fig. 6 over another taxonomy, "" the paper's Table II, "builtin" the built-in world's, or a JSON
{category: [tags]}; without it each run's own `eval.taxonomy`):

  python -m launch.report --workdir=workdirs/playlists/proposed --taxonomy=builtin

Several runs of one paper (MUSLSE: Tables 3, 5, 6; Won et al.: Tables 1, 2; WMF: Tables 5.x;
Rush et al.: Table 1 over rush runs and a rush_baselines run):

  python -m launch.report --workdirs=workdirs/warp_d100,workdirs/auc_d100,workdirs/warp_d400 \
      --out=workdirs/tables.md
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging

from musemb import systems

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run: writes <workdir>/report.md.")
_BASELINES = flags.DEFINE_list(
    "baselines", [], "With --workdir: workdirs of baseline runs (e.g. one-vs-rest) to merge in.")
_WORKDIRS = flags.DEFINE_list("workdirs", [], "Several finished runs to compare (needs --out).")
_OUT = flags.DEFINE_string("out", None, "With --workdirs: the markdown file to write.")
_TAXONOMY = flags.DEFINE_string(
    "taxonomy", None, "For systems whose report takes a tag taxonomy (tagprop): the taxonomy of "
    "the per-category tables, instead of each run's own (\"\" / \"builtin\" / a JSON file).")


def _options(found) -> dict:
  """The report options given on the command line, refused unless every system takes them."""
  given = {"taxonomy": _TAXONOMY.value} if _TAXONOMY.value is not None else {}
  for system in found:
    refused = sorted(set(given) - set(system.report_options))
    if refused:
      raise app.UsageError(f"--{refused[0]} is not an option of the {system.name!r} report (its "
                           f"options: {list(system.report_options) or 'none'}).")
  return given


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
    found = [systems.for_workdir(w)[0] for w in _WORKDIRS.value]
    compare = {s.compare for s in found}
    if None in compare or len(compare) != 1:
      raise app.UsageError("--workdirs must be runs of one paper's systems (they share one "
                           f"comparison); got {sorted({s.name for s in found})}.")
    path = compare.pop()(_WORKDIRS.value, _OUT.value, **_options(found))
  else:
    if _OUT.value:
      raise app.UsageError("--out goes with --workdirs; --workdir always writes <workdir>/report.md.")
    system, _ = systems.for_workdir(_WORKDIR.value)
    path = system.report(_WORKDIR.value, baseline_workdirs=_BASELINES.value,
                         **_options([system]))
  logging.info("Wrote %s", path)
  print(path)


if __name__ == "__main__":
  app.run(main)
