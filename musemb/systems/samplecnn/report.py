"""The SampleCNN run's report, shaped like the tables of Platt's thesis (`004_*` paper).

`write_report(workdir, baseline_workdirs)`: a SampleCNN run (`configs/samplecnn.py`) ->
  `<workdir>/report.md` with the factor-regression quality, Table 6.1 (recommendation: random,
  sample-level raw audio, upper bound from the WMF factors fitted on all plays; mAP@500 and
  per-user AUC) and Table 6.2 (tag prediction: logistic regression on predicted factors and on
  the WMF factors against direct audio tagging, the latter from a `head=tags` run passed as a
  baseline).
(WMF runs' Tables 5.1-5.5 are `musemb.systems.wmf.report`.)

The thesis' own numbers are printed beside ours for orientation only: they come from LFM-1b and
the Million Song Dataset, ours from whatever data the run used (`config.json` says which).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from musemb.reports import runs as runs_lib
from musemb.reports import tables as tables_lib
from musemb import utils

THESIS = ("Platt, \"Content-Based Music Recommendation with the LFM-1b Dataset and Sample-Level "
          "Deep Convolutional Neural Networks\" (thesis)")
# Table 6.1 of the thesis (LFM-1b users, 74k MSD test tracks): (mAP@500, AUC).
THESIS_TABLE61 = (("Random", 0.000004, 0.5), ("Sample-level raw audio", 0.001, 0.62),
                  ("Upper bound (WMF factors)", 0.04, 0.96))


def _merge(workdir: str, metrics: dict[str, Any], baseline_workdirs: Sequence[str]) -> list[str]:
  """Adds the baselines' keys of other systems the run lacks (e.g. `samplecnn_tags/...`), by the
  MUSLSE report's rule (`report._merge_baselines`), and writes the merged metrics.json."""
  # pylint: disable-next=protected-access
  per_query = runs_lib.PerQuery()
  # pylint: disable-next=protected-access
  added = runs_lib.merge_baselines("samplecnn", metrics, {}, per_query,
                                      list(baseline_workdirs), [])
  if added:
    utils.write_json_atomic(os.path.join(workdir, "metrics.json"), metrics)
  return added


def _regression_section(m: Mapping[str, Any]) -> str:
  rows = [["test tracks with factors", tables_lib.format_count(runs_lib.get_float(m, "samplecnn/factors/num_tracks"))],
          ["MSE (l2-normalised prediction vs factors)", tables_lib.format_small(runs_lib.get_float(m, "samplecnn/factors/mse"))],
          ["mean cosine", tables_lib.format_small(runs_lib.get_float(m, "samplecnn/factors/cosine"))]]
  return "\n".join(["## Latent-factor regression (test split)", "",
                    tables_lib.markdown_table(["", "value"], rows, [False, True])])


def _table61(m: Mapping[str, Any]) -> str:
  n = "500"
  out = ["## Table 6.1: recommendation from predicted factors", ""]
  if runs_lib.get_float(m, f"samplecnn/recommendation/map@{n}") is None:
    out.append("No recommendation metrics (eval.recommendation was off, or the head was tags).")
    return "\n".join(out)
  rows = []
  for label, prefix in (("Random", "random_"), ("Sample-level raw audio (this run)", ""),
                        ("Upper bound: WMF factors (this run)", "upper_")):
    rows.append([label, tables_lib.format_small(runs_lib.get_float(m, f"samplecnn/recommendation/{prefix}map@{n}")),
                 tables_lib.format_small(runs_lib.get_float(m, f"samplecnn/recommendation/{prefix}roc_auc"))])
  for label, map500, auc in THESIS_TABLE61:
    rows.append([f"{label} (thesis, LFM-1b / MSD)", tables_lib.format_small(map500), tables_lib.format_small(auc)])
  out.append(tables_lib.markdown_table(["Model", "mAP@500", "AUC"], rows, [False, True, True]))
  users = runs_lib.get_float(m, "samplecnn/recommendation/num_users")
  train = runs_lib.get_float(m, "samplecnn/recommendation/num_train_songs")
  test = runs_lib.get_float(m, "samplecnn/recommendation/num_test_songs")
  if users is not None:
    out += ["", f"{users:.0f} users with plays among both the {train:.0f} training songs (their "
            f"vectors) and the {test:.0f} test songs (ranked); per-user AUC and AP@500 averaged "
            "over them."]
  out += ["", "As in the thesis, the WMF factors are fitted on all plays, the test songs' included, "
          "so their row is an upper bound; both rows build a user's vector the same way, from the "
          "l2-normalised vectors of the training songs they played (predicted, or WMF)."]
  return "\n".join(out)


def _table62(m: Mapping[str, Any]) -> str:
  rows = [["Logistic regression on predicted factors (this run)",
           tables_lib.format_small(runs_lib.get_float(m, "samplecnn/transfer/predicted_factors_roc_auc"))],
          ["Logistic regression on WMF factors (this run)",
           tables_lib.format_small(runs_lib.get_float(m, "samplecnn/transfer/true_factors_roc_auc"))],
          ["SampleCNN trained on tags directly (baseline run)",
           tables_lib.format_small(runs_lib.get_float(m, "samplecnn_tags/tags/roc_auc"))]]
  out = ["## Table 6.2: tag prediction, transfer from predicted factors vs direct tagging", "",
         tables_lib.markdown_table(["Model", "mean per-tag ROC AUC (test)"], rows, [False, True])]
  if runs_lib.get_float(m, "samplecnn_tags/tags/roc_auc") is None:
    out += ["", "No direct-tagging row: train `configs/samplecnn.py:...,head=tags` into its own "
            "workdir and pass it with `--baselines`."]
  return "\n".join(out)


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """`<workdir>/report.md` of a SampleCNN run; returns its path."""
  config = runs_lib.read_json_if_exists(  # pylint: disable=protected-access
      os.path.join(workdir, "config.json"))
  metrics = runs_lib.read_metrics(workdir)  # pylint: disable=protected-access
  added = _merge(workdir, metrics, baseline_workdirs)
  head = runs_lib.config_get(config, "model.head", "factors")
  lines = [f"# SampleCNN from raw audio ({head} head)", "",
           f"Workdir `{workdir}`; dataset "
           f"`{runs_lib.config_get(config, 'data_dir', '') or 'built-in world'}`; "
           f"factors `{runs_lib.config_get(config, 'data.factors', '') or '-'}`. Following "
           f"{THESIS}, chapter 6."]
  if added:
    lines += ["", f"Merged {len(added)} keys from {', '.join(baseline_workdirs)}."]
  sections = ["\n".join(lines)]
  if head == "factors":
    sections += [_regression_section(metrics), _table61(metrics), _table62(metrics)]
  else:
    rows = [["mean per-tag ROC AUC", tables_lib.format_small(runs_lib.get_float(metrics, "samplecnn_tags/tags/roc_auc"))],
            ["mean per-tag average precision", tables_lib.format_small(runs_lib.get_float(metrics, "samplecnn_tags/tags/map"))]]
    sections.append("\n".join(["## Direct auto-tagging (test split)", "",
                               tables_lib.markdown_table(["", "value"], rows, [False, True])]))
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n\n".join(sections) + "\n")
  return path


