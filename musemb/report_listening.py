"""Reports of the listening-data systems, shaped like the tables of Platt's thesis (`004_*` paper).

* `write_report(workdir, baseline_workdirs)`: a SampleCNN run (`configs/samplecnn.py`) ->
  `<workdir>/report.md` with the factor-regression quality, Table 6.1 (recommendation: random,
  sample-level raw audio, upper bound from the WMF factors; mAP@500 and per-user AUC) and Table 6.2
  (tag prediction: logistic regression on predicted factors and on the WMF factors against direct
  audio tagging, the latter from a `head=tags` run passed as a baseline).
* `compare_wmf_runs(workdirs, out_path)`: several `launch.wmf` runs -> the shape of Tables 5.1-5.5
  (data set, tracks, factors, iterations -> proxy-task AUC and run time), one row per run.

The thesis' own numbers are printed beside ours for orientation only: they come from LFM-1b and
the Million Song Dataset, ours from whatever data the run used (`config.json` says which).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from musemb import report as report_lib
from musemb import utils

THESIS = ("Platt, \"Content-Based Music Recommendation with the LFM-1b Dataset and Sample-Level "
          "Deep Convolutional Neural Networks\" (thesis)")
# Table 6.1 of the thesis (LFM-1b users, 74k MSD test tracks): (mAP@500, AUC).
THESIS_TABLE61 = (("Random", 0.000004, 0.5), ("Sample-level raw audio", 0.001, 0.62),
                  ("Upper bound (WMF factors)", 0.04, 0.96))



def fmt(value: float | None) -> str:
  """3 decimals, or 2 significant digits below 0.01 (the thesis' random mAP@500 is 0.000004)."""
  if value is None or value != value:
    return "-"
  if 0 < abs(value) < 0.01:
    return f"{value:.2g}"
  return report_lib.format_value(value)


def count(value: float | None) -> str:
  return "-" if value is None or value != value else f"{value:,.0f}"


def _get(metrics: Mapping[str, Any], key: str) -> float | None:
  value = metrics.get(key)
  return None if value is None else float(value)


def _merge(workdir: str, metrics: dict[str, Any], baseline_workdirs: Sequence[str]) -> list[str]:
  """Adds the baselines' keys of other systems the run lacks (e.g. `samplecnn_tags/...`), by the
  MUSLSE report's rule (`report._merge_baselines`), and writes the merged metrics.json."""
  # pylint: disable-next=protected-access
  per_query = report_lib._PerQuery()
  # pylint: disable-next=protected-access
  added = report_lib._merge_baselines("samplecnn", metrics, {}, per_query,
                                      list(baseline_workdirs), [])
  if added:
    utils.write_json_atomic(os.path.join(workdir, "metrics.json"), metrics)
  return added


def _regression_section(m: Mapping[str, Any]) -> str:
  rows = [["test tracks with factors", count(_get(m, "samplecnn/factors/num_tracks"))],
          ["MSE (l2-normalised prediction vs factors)", fmt(_get(m, "samplecnn/factors/mse"))],
          ["mean cosine", fmt(_get(m, "samplecnn/factors/cosine"))]]
  return "\n".join(["## Latent-factor regression (test split)", "",
                    report_lib.markdown_table(["", "value"], rows, [False, True])])


def _table61(m: Mapping[str, Any]) -> str:
  n = "500"
  out = ["## Table 6.1: recommendation from predicted factors", ""]
  if _get(m, f"samplecnn/recommendation/map@{n}") is None:
    out.append("No recommendation metrics (eval.recommendation was off, or the head was tags).")
    return "\n".join(out)
  rows = []
  for label, prefix in (("Random", "random_"), ("Sample-level raw audio (this run)", ""),
                        ("Upper bound: WMF factors (this run)", "upper_")):
    rows.append([label, fmt(_get(m, f"samplecnn/recommendation/{prefix}map@{n}")),
                 fmt(_get(m, f"samplecnn/recommendation/{prefix}roc_auc"))])
  for label, map500, auc in THESIS_TABLE61:
    rows.append([f"{label} (thesis, LFM-1b / MSD)", fmt(map500), fmt(auc)])
  out.append(report_lib.markdown_table(["Model", "mAP@500", "AUC"], rows, [False, True, True]))
  users = _get(m, "samplecnn/recommendation/num_users")
  train = _get(m, "samplecnn/recommendation/num_train_songs")
  test = _get(m, "samplecnn/recommendation/num_test_songs")
  if users is not None:
    out += ["", f"{users:.0f} users with plays among both the {train:.0f} training songs (their "
            f"vectors) and the {test:.0f} test songs (ranked); per-user AUC and AP@500 averaged "
            "over them."]
  return "\n".join(out)


def _table62(m: Mapping[str, Any]) -> str:
  rows = [["Logistic regression on predicted factors (this run)",
           fmt(_get(m, "samplecnn/transfer/predicted_factors_roc_auc"))],
          ["Logistic regression on WMF factors (this run)",
           fmt(_get(m, "samplecnn/transfer/true_factors_roc_auc"))],
          ["SampleCNN trained on tags directly (baseline run)",
           fmt(_get(m, "samplecnn_tags/tags/roc_auc"))]]
  out = ["## Table 6.2: tag prediction, transfer from predicted factors vs direct tagging", "",
         report_lib.markdown_table(["Model", "mean per-tag ROC AUC (test)"], rows, [False, True])]
  if _get(m, "samplecnn_tags/tags/roc_auc") is None:
    out += ["", "No direct-tagging row: train `configs/samplecnn.py:...,head=tags` into its own "
            "workdir and pass it with `--baselines`."]
  return "\n".join(out)


def write_report(workdir: str, *, baseline_workdirs: Sequence[str] = ()) -> str:
  """`<workdir>/report.md` of a SampleCNN run; returns its path."""
  config = report_lib._read_json_if_exists(  # pylint: disable=protected-access
      os.path.join(workdir, "config.json"))
  metrics = report_lib._read_metrics(workdir)  # pylint: disable=protected-access
  added = _merge(workdir, metrics, baseline_workdirs)
  head = report_lib.config_get(config, "model.head", "factors")
  lines = [f"# SampleCNN from raw audio ({head} head)", "",
           f"Workdir `{workdir}`; dataset "
           f"`{report_lib.config_get(config, 'data_dir', '') or 'built-in world'}`; "
           f"factors `{report_lib.config_get(config, 'data.factors', '') or '-'}`. Following "
           f"{THESIS}, chapter 6."]
  if added:
    lines += ["", f"Merged {len(added)} keys from {', '.join(baseline_workdirs)}."]
  sections = ["\n".join(lines)]
  if head == "factors":
    sections += [_regression_section(metrics), _table61(metrics), _table62(metrics)]
  else:
    rows = [["mean per-tag ROC AUC", fmt(_get(metrics, "samplecnn_tags/tags/roc_auc"))],
            ["mean per-tag average precision", fmt(_get(metrics, "samplecnn_tags/tags/map"))]]
    sections.append("\n".join(["## Direct auto-tagging (test split)", "",
                               report_lib.markdown_table(["", "value"], rows, [False, True])]))
  path = os.path.join(workdir, "report.md")
  utils.write_text_atomic(path, "\n\n".join(sections) + "\n")
  return path


def compare_wmf_runs(workdirs: Sequence[str], out_path: str) -> str:
  """Tables 5.1-5.5 in one: a row per `launch.wmf` run (data, size, factors, iterations -> AUC)."""
  rows = []
  for w in workdirs:
    config = report_lib._read_json_if_exists(  # pylint: disable=protected-access
        os.path.join(w, "config.json")) or {}
    m = report_lib._read_metrics(w)  # pylint: disable=protected-access
    source = report_lib.config_get(config, "data.source", "-")
    if source == "synthetic":
      source = f"synthetic ({report_lib.config_get(config, 'data.synthetic_size', '?')})"
    rows.append([os.path.basename(os.path.normpath(w)), source,
                 count(_get(m, "wmf/fit/num_items")), count(_get(m, "wmf/fit/num_users")),
                 count(_get(m, "wmf/fit/factors")), count(_get(m, "wmf/fit/iterations")),
                 fmt(_get(m, "wmf/proxy_tags/roc_auc")),
                 fmt(_get(m, "wmf/proxy_tags/random_roc_auc")),
                 fmt(_get(m, "wmf/recommendation/map@500")),
                 # pylint: disable-next=protected-access
                 report_lib._format_seconds(_get(m, "wmf/fit/seconds"))])
  header = ["Run", "Dataset", "Tracks", "Users", "Factors", "Iterations", "Proxy AUC",
            "Random-factor AUC", "Held-out mAP@500", "Fit time"]
  text = ["# WMF runs compared (the shape of the thesis' Tables 5.1-5.5)", "",
          "Proxy AUC: mean per-tag ROC AUC of a logistic regression from l2-normalised item "
          "factors to tags on held-out items (chapter 5); fit time is the ALS time of "
          "all iterations (resumed fits summed), evaluation excluded.", "",
          report_lib.markdown_table(header, rows, [False, False] + [True] * (len(header) - 2))]
  utils.write_text_atomic(out_path, "\n".join(text) + "\n")
  return out_path
