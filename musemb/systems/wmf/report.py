"""WMF runs as the tables of Platt's thesis, chapter 5 (`004_*` paper, Tables 5.1-5.5).

* `write_report(workdir)`: one `launch.wmf` run -> `<workdir>/report.md`: what was fitted (data,
  tracks, users, factors, iterations, ALS time), the held-out recommendation (recall@k and
  mAP@500 next to a random ranking of the same unseen items, from the separate fit on the training
  split; or a line saying it was omitted) and the proxy task (tags from the all-plays item factors,
  next to random factors).
* `compare_runs(workdirs, out_path)`: several runs -> one table in the shape of Tables 5.1-5.5
  (data set, tracks, factors, iterations -> proxy-task AUC and fit time), a row per run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from musemb import utils
from musemb.reports import runs as runs_lib
from musemb.reports import tables as tables_lib

THESIS = ("Platt, \"Content-Based Music Recommendation with the LFM-1b Dataset and Sample-Level "
          "Deep Convolutional Neural Networks\" (thesis)")
HEADER = ["Run", "Dataset", "Tracks", "Users", "Factors", "Iterations", "Proxy AUC",
          "Random-factor AUC", "Held-out mAP@500", "Fit time"]


def _row(workdir: str) -> list[str]:
  config = runs_lib.read_json_if_exists(os.path.join(workdir, "config.json")) or {}
  m = runs_lib.read_metrics(workdir)
  source = runs_lib.config_get(config, "data.source", "-")
  if source == "synthetic":
    source = f"synthetic ({runs_lib.config_get(config, 'data.synthetic_size', '?')})"
  get = lambda key: runs_lib.get_float(m, f"wmf/{key}")
  return [os.path.basename(os.path.normpath(workdir)), source,
          tables_lib.format_count(get("fit/num_items")), tables_lib.format_count(get("fit/num_users")),
          tables_lib.format_count(get("fit/factors")), tables_lib.format_count(get("fit/iterations")),
          tables_lib.format_small(get("proxy_tags/roc_auc")),
          tables_lib.format_small(get("proxy_tags/random_roc_auc")),
          tables_lib.format_small(get("recommendation/map@500")),
          tables_lib.format_seconds(get("fit/seconds"))]


def _table(workdirs: Sequence[str]) -> str:
  return tables_lib.markdown_table(HEADER, [_row(w) for w in workdirs],
                                   [False, False] + [True] * (len(HEADER) - 2))


_NOTE = ("The factors (factors.npz, what SampleCNN and the cultural branch read) are fitted on all "
         "plays, as the thesis' are. Proxy AUC: mean per-tag ROC AUC of a logistic regression from "
         "their l2-normalised item factors to tags on held-out items (chapter 5); held-out mAP@500 "
         "comes from a second fit without the held-out pairs (eval.heldout_fit, 20% of each "
         "user's pairs by default; '-' when it was off); fit time is the ALS time of all "
         "iterations of the all-plays fit (resumed fits summed), evaluation and the second fit "
         "excluded.")


def _recommendation(m: Mapping[str, Any]) -> str:
  keys = sorted(k.split("/", 2)[2] for k in m if k.startswith("wmf/recommendation/")
                and not k.split("/", 2)[2].startswith("random_"))
  if not keys:
    return "\n".join(["## Held-out recommendation", "",
                      "Omitted: this run fitted only the all-plays factors "
                      "(eval.heldout_fit=False), which have seen every play and cannot be judged "
                      "on held-out ones. Rerun with --config.eval.heldout_fit=True to add a fit on "
                      "the training split."])
  rows = [[name, tables_lib.format_small(runs_lib.get_float(m, f"wmf/recommendation/{name}")),
           tables_lib.format_small(runs_lib.get_float(m, f"wmf/recommendation/random_{name}"))]
          for name in keys]
  return "\n".join(["## Held-out recommendation", "",
                    "Each user's held-out (user, item) pairs ranked among the items they did not "
                    "play in training, by a second fit (heldout_factors.npz) on the other pairs "
                    "only; the all-plays factors saw the held-out pairs.", "",
                    tables_lib.markdown_table(["metric", "WMF factors", "random ranking"], rows,
                                              [False, True, True])])


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """`<workdir>/report.md` of one WMF run; returns its path. Baselines: other WMF runs, as rows."""
  m = runs_lib.read_metrics(workdir)
  sections = ["\n".join([f"# WMF factors: `{os.path.basename(os.path.abspath(workdir))}`", "",
                         f"Hu, Koren & Volinsky's implicit-feedback ALS, following {THESIS}, "
                         "chapter 5."]),
              "\n".join(["## The fit (Tables 5.1-5.5 shape)", "",
                         _table([workdir, *baseline_workdirs]), "", _NOTE]),
              _recommendation(m)]
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n\n".join(sections) + "\n")
  return path


def compare_runs(workdirs: Sequence[str], out_path: str) -> str:
  """Tables 5.1-5.5 in one: a row per WMF run (data, size, factors, iterations -> AUC)."""
  text = ["# WMF runs compared (the shape of the thesis' Tables 5.1-5.5)", "", _NOTE, "",
          _table(workdirs)]
  utils.write_text_atomic(out_path, "\n".join(text) + "\n")
  return out_path
