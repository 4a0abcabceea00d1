"""Reports of the listening-data systems: Tables 6.1/6.2 of a SampleCNN run, Tables 5.x of WMF runs."""

import json
import os

from musemb.systems.samplecnn import report
from musemb.systems.wmf import report as wmf_report


def _workdir(path, config, metrics):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  return str(path)


def test_samplecnn_report_has_tables_61_and_62_with_the_tags_baseline(tmp_path):
  run = _workdir(tmp_path / "factors", {"system": "samplecnn", "model": {"head": "factors"},
                                        "data": {"factors": "w"}}, {
      "samplecnn/factors/mse": 0.0489, "samplecnn/factors/cosine": 0.218,
      "samplecnn/factors/num_tracks": 80,
      "samplecnn/recommendation/map@500": 0.192, "samplecnn/recommendation/roc_auc": 0.674,
      "samplecnn/recommendation/random_map@500": 0.117,
      "samplecnn/recommendation/random_roc_auc": 0.502,
      "samplecnn/recommendation/upper_map@500": 0.418,
      "samplecnn/recommendation/upper_roc_auc": 0.844,
      "samplecnn/recommendation/num_users": 295, "samplecnn/recommendation/num_train_songs": 360,
      "samplecnn/recommendation/num_test_songs": 80,
      "samplecnn/transfer/predicted_factors_roc_auc": 0.736,
      "samplecnn/transfer/true_factors_roc_auc": 0.783})
  tags = _workdir(tmp_path / "tags", {"system": "samplecnn", "model": {"head": "tags"}},
                  {"samplecnn_tags/tags/roc_auc": 0.801, "samplecnn/factors/mse": 9.0})
  path = report.write_report(run, baseline_workdirs=[tags])
  text = open(path).read()
  lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
  assert "0.192" in lines["Sample-level raw audio (this run)"]
  assert "0.674" in lines["Sample-level raw audio (this run)"]
  assert "0.844" in lines["Upper bound: WMF factors (this run)"]
  assert "4e-06" in lines["Random (thesis, LFM-1b / MSD)"]
  assert "0.801" in lines["SampleCNN trained on tags directly (baseline run)"]
  assert "0.736" in lines["Logistic regression on predicted factors (this run)"]
  assert "295 users" in text
  # The baseline's tags key was merged; its samplecnn/ key did not overwrite the run's own.
  with open(os.path.join(run, "metrics.json")) as f:
    merged = json.load(f)
  assert merged["samplecnn_tags/tags/roc_auc"] == 0.801
  assert merged["samplecnn/factors/mse"] == 0.0489


def test_samplecnn_report_without_baseline_says_how_to_get_it(tmp_path):
  run = _workdir(tmp_path / "f", {"system": "samplecnn", "model": {"head": "factors"}},
                 {"samplecnn/factors/mse": 0.05})
  text = open(report.write_report(run)).read()
  assert "No recommendation metrics" in text
  assert "head=tags" in text


def test_wmf_runs_compare_as_tables_5x(tmp_path):
  runs = []
  for name, factors, auc in (("f32", 32, 0.749), ("f16", 16, 0.741)):
    runs.append(_workdir(tmp_path / name, {"system": "wmf", "data": {"source": "lfm1b"}}, {
        "wmf/fit/num_items": 2_300_000, "wmf/fit/num_users": 120_000, "wmf/fit/factors": factors,
        "wmf/fit/iterations": 40, "wmf/fit/seconds": 125.0, "wmf/proxy_tags/roc_auc": auc,
        "wmf/proxy_tags/random_roc_auc": 0.5, "wmf/recommendation/map@500": 0.1}))
  out = wmf_report.compare_runs(runs, str(tmp_path / "t.md"))
  rows = [line for line in open(out).read().splitlines() if line.startswith("| f")]
  assert len(rows) == 2
  assert "2,300,000" in rows[0] and " 32 |" in rows[0] and "0.749" in rows[0]
  assert "125 s" in rows[0]
  assert " 16 |" in rows[1] and "0.741" in rows[1]

  # One run's own report has its row and the held-out recommendation next to chance.
  with open(os.path.join(runs[0], "metrics.json")) as f:
    metrics = json.load(f)
  metrics.update({"wmf/recommendation/recall@50": 0.381, "wmf/recommendation/random_recall@50": 0.111,
                  "wmf/recommendation/random_map@500": 0.028})
  with open(os.path.join(runs[0], "metrics.json"), "w") as f:
    json.dump(metrics, f)
  text = open(wmf_report.write_report(runs[0])).read()
  recall = [line for line in text.splitlines() if line.startswith("| recall@50")]
  assert recall and "0.381" in recall[0] and "0.111" in recall[0]
  assert "2,300,000" in text
