"""Tests for musemb.report: tables parsed back against the fixture's numbers, hand-counted wins and
losses, scipy's p-values, brute-force nearest tags, the PNG map, merging baselines, compare_runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from matplotlib import image as mpimg

from musemb.reports import stats as stats_lib
from musemb.systems.muslse import report

TASKS = ("artist_prediction", "song_prediction", "similar_songs", "tag_prediction",
         "similar_artists")
KS = (1, 3, 6, 9, 12, 15)
TABLE6 = ("artist_prediction", "song_prediction", "similar_songs")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(embed_dim=16, ensemble=1, loss="warp", tasks=TASKS, data_dir=""):
  return {"system": "muslse", "data_dir": data_dir, "data": {"synthetic_size": "tiny"},
          "model": {"embed_dim": embed_dim, "ensemble": ensemble},
          "loss": {"kind": loss, "alpha": "harmonic"},
          "tasks": {"names": ",".join(tasks), "mode": "random"}}


def _random_metrics(rng, systems, tasks):
  out = {}
  for s in systems:
    for t in tasks:
      for k in KS:
        out[f"{s}/{t}/p@{k}"] = float(rng.uniform(0.01, 0.6))
      out[f"{s}/{t}/num_queries"] = 50.0
  return out


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


def _per_query_values(rng, n):
  # p@3 takes 4 values, so ties (draws) are common; a few queries are excluded (NaN).
  v = rng.integers(0, 4, size=n) / 3.0
  v[rng.random(n) < 0.1] = np.nan
  return v


def _write_run(workdir, rng, *, n_tags=8, n_artists=12, dim=6, n_queries=60, config=None,
               metrics=None, with_stats=True):
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "config.json"), config or _config())
  if metrics is None:
    metrics = _random_metrics(rng, ["muslse", "cosine"], TASKS)
  _write_json(os.path.join(workdir, "metrics.json"), metrics)
  ids = {t: np.array([f"{t[:3]}{i:03d}" for i in range(n_queries)]) for t in TASKS}
  arrays = {f"{t}/query_ids": ids[t] for t in TASKS}
  arrays.update({f"muslse/{t}/p@3": _per_query_values(rng, n_queries) for t in TASKS})
  np.savez(os.path.join(workdir, "per_query.npz"), **arrays)
  np.savez(os.path.join(workdir, "embeddings.npz"),
           tag_names=np.array([f"tag{i}" for i in range(n_tags)]),
           artist_names=np.array([f"artist{i}" for i in range(n_artists)]),
           T=rng.normal(size=(n_tags, dim)), A=rng.normal(size=(n_artists, dim)))
  if with_stats:
    _write_json(os.path.join(workdir, "model_stats.json"), {
        "muslse": {"num_params": 123_456, "bytes": 493_824,
                   "labels": {"tag_prediction": 160, "artist_prediction": 26_972},
                   "num_features": 2000, "avg_nonzero_features": 1032.0, "embed_dim": 100,
                   "seconds_per_song": {"tag_prediction": 0.00021, "artist_prediction": 0.045}}})
  return arrays


def _write_baseline(workdir, rng, run_arrays, n_queries=60, metrics=None):
  """One-vs-rest in its own workdir, with its queries listed in a different order than the run's."""
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "metrics.json"),
              metrics if metrics is not None else
              _random_metrics(rng, ["one_vs_rest"], ["tag_prediction", "artist_prediction"]))
  perm = rng.permutation(n_queries)
  arrays = {}
  for t in ("tag_prediction", "artist_prediction"):
    arrays[f"{t}/query_ids"] = run_arrays[f"{t}/query_ids"][perm]
    arrays[f"one_vs_rest/{t}/p@3"] = _per_query_values(rng, n_queries)
  np.savez(os.path.join(workdir, "per_query.npz"), **arrays)
  _write_json(os.path.join(workdir, "model_stats.json"), {
      "one_vs_rest": {"num_params": 320_000, "bytes": 1_280_000,
                      "labels": {"tag_prediction": 160}, "num_features": 2000,
                      "avg_nonzero_features": 1032.0, "embed_dim": None,
                      "seconds_per_song": {"tag_prediction": 0.0015}}})
  return arrays


def _table(md, heading_prefix):
  """Rows (lists of stripped cells, header first, rule dropped) of the table under a heading."""
  lines = md.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(heading_prefix))
  rows = []
  for line in lines[start + 1:]:
    if line.startswith("## "):
      break
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip()[1:-1].split(" | ")]
      if not all(set(c) <= set("-:") for c in cells):
        rows.append(cells)
    elif rows:
      break
  return rows


def _row(rows, first_cell, col=0):
  matches = [r for r in rows if r[col] == first_cell]
  assert len(matches) == 1, (first_cell, rows)
  return matches[0]


def test_tables_2_and_6_print_the_run_metrics(tmp_path):
  rng = np.random.default_rng(0)
  wd = str(tmp_path / "run")
  metrics = _random_metrics(rng, ["muslse", "one_vs_rest", "cosine"], TASKS)
  metrics["muslse/tag_prediction/p@12"] = 0.0512  # below 0.1: four decimals
  _write_run(wd, rng, metrics=metrics)
  md = open(report.write_report(wd)).read()

  t2 = _table(md, "## Table 2")
  assert t2[0] == ["Algorithm", "Source", "p@3", "p@6", "p@9", "p@12", "p@15"]
  for label, system in (("MUSLSE (d=16)", "muslse"), ("one-vs-rest", "one_vs_rest")):
    row = _row(t2, label)
    assert row[1] == "this run"
    got = [float(c) for c in row[2:]]
    want = [metrics[f"{system}/tag_prediction/p@{k}"] for k in (3, 6, 9, 12, 15)]
    np.testing.assert_allclose(got, want, atol=5e-4)
  assert _row(t2, "MUSLSE (d=16)")[5] == "0.0512"
  assert _row(t2, "MUSLSE (MFCC+SAI)")[1:] == ["paper, TagATune", "0.473", "0.330", "0.256",
                                              "0.211", "0.179"]

  t6 = _table(md, "## Table 6")
  assert t6[0][2:] == [f"{name} p@{k}" for name in ("Artist Prediction", "Song Prediction",
                                                    "Similar Songs", "Similar Artists")
                       for k in (1, 6)]
  for label, system in (("one-vs-rest", "one_vs_rest"), ("cosine similarity", "cosine"),
                        ("MUSLSE", "muslse")):
    row = _row([r for r in t6 if r[1] == "this run"], label)
    want = [metrics[f"{system}/{t}/p@{k}"] for t in ("artist_prediction", "song_prediction",
                                                    "similar_songs", "similar_artists")
            for k in (1, 6)]
    np.testing.assert_allclose([float(c) for c in row[2:]], want, atol=5e-4)
  assert _row(t6, "MUSLSE all tasks")[2:4] == ["0.111", "0.0352"]
  assert "Test queries: tag_prediction 50." in md


def test_wins_losses_draws_and_pvalues_match_a_hand_count_and_scipy(tmp_path):
  rng = np.random.default_rng(1)
  wd, bd = str(tmp_path / "run"), str(tmp_path / "run" / "one_vs_rest")
  run_arrays = _write_run(wd, rng)
  base_arrays = _write_baseline(bd, rng, run_arrays)
  md = open(report.write_report(wd, baseline_workdirs=[bd])).read()
  rows = _table(md, "## MUSLSE vs one-vs-rest")
  assert rows[0] == ["Task", "Queries", "Wins", "Losses", "Draws", "Wilcoxon signed-rank p",
                     "Rank-sum p"]
  for task in ("tag_prediction", "artist_prediction"):
    base = dict(zip(base_arrays[f"{task}/query_ids"], base_arrays[f"one_vs_rest/{task}/p@3"]))
    wins = losses = draws = 0
    a, b = [], []
    for q, m in zip(run_arrays[f"{task}/query_ids"], run_arrays[f"muslse/{task}/p@3"]):
      o = base[q]
      if np.isnan(m) or np.isnan(o):
        continue
      a.append(m)
      b.append(o)
      if m > o:
        wins += 1
      elif m < o:
        losses += 1
      else:
        draws += 1
    row = _row(rows, task)
    assert [int(c) for c in row[1:5]] == [len(a), wins, losses, draws]
    assert draws > 0 and wins > 0 and losses > 0
    want_signed = scipy.stats.wilcoxon(a, b, zero_method="wilcox").pvalue
    want_sum = scipy.stats.ranksums(a, b).pvalue
    np.testing.assert_allclose(float(row[5]), want_signed, rtol=1e-3)
    np.testing.assert_allclose(float(row[6]), want_sum, rtol=1e-3)
    r = stats_lib.wins_losses_draws(np.array(a), np.array(b))
    assert r["signed_rank_p"] == pytest.approx(want_signed, rel=1e-12)
    assert r["rank_sum_p"] == pytest.approx(want_sum, rel=1e-12)


@pytest.mark.parametrize("n_tags,rows_shown", [(8, 8), (25, 10)])
def test_table4_lists_the_true_nearest_tags(tmp_path, n_tags, rows_shown):
  rng = np.random.default_rng(2)
  wd = str(tmp_path / "run")
  _write_run(wd, rng, n_tags=n_tags)
  md = open(report.write_report(wd)).read()
  with np.load(os.path.join(wd, "embeddings.npz")) as z:
    T, names = z["T"], z["tag_names"]
  rows = _table(md, "## Table 4")[1:]
  assert [r[0] for r in rows] == list(names[:rows_shown])
  for i, row in enumerate(rows):
    sims = [(float(T[i] @ T[j]), j) for j in range(n_tags) if j != i]
    want = [names[j] for _, j in sorted(sims, key=lambda s: -s[0])[:5]]
    assert row[1].split(", ") == want


def test_map_png_is_written_and_linked(tmp_path):
  rng = np.random.default_rng(3)
  wd = str(tmp_path / "run")
  _write_run(wd, rng, n_artists=70)  # > 60 artists: drawn, not named
  md = open(report.write_report(wd)).read()
  path = os.path.join(wd, "map.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  img = mpimg.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
  assert "](map.png)" in md
  assert not [f for f in os.listdir(wd) if f.startswith(".tmp-")]


def test_table7_fills_the_complexity_formulas(tmp_path):
  rng = np.random.default_rng(5)
  wd, bd = str(tmp_path / "run"), str(tmp_path / "ovr")
  run_arrays = _write_run(wd, rng)
  _write_baseline(bd, rng, run_arrays)
  md = open(report.write_report(wd, baseline_workdirs=[bd])).read()
  rows = _table(md, "## Table 7")
  ovr = [r for r in rows if r[0] == "one-vs-rest"]
  assert len(ovr) == 1 and ovr[0][1] == "tag_prediction"
  assert ovr[0][2] == "O(Y·\\|S\\|_nz)"
  assert ovr[0][3] == "160 × 1,032 = 165,120"
  assert ovr[0][5] == "160 × 2,000 = 320,000"
  assert ovr[0][6:] == ["0.0015 s", "320,000", "1.28 MB"]
  mus = _row([r for r in rows if r[0] == "MUSLSE"], "tag_prediction", col=1)
  assert mus[2] == "O((Y + \\|S\\|_nz)·d)"
  assert mus[3] == "(160 + 1,032) × 100 = 119,200"
  assert mus[5] == "(160 + 2,000) × 100 = 216,000"
  assert mus[6:] == ["0.00021 s", "123,456", "0.494 MB"]
  art = _row([r for r in rows if r[0] == "MUSLSE"], "artist_prediction", col=1)
  assert art[3] == "(26,972 + 1,032) × 100 = 2,800,400"
  assert [r[1] for r in rows if r[0] == "MUSLSE"] == ["tag_prediction", "artist_prediction"]
  assert ("tag_prediction: one-vs-rest needs 1.39x the multiply-adds per song of MUSLSE and "
          "measured 7.14x its prediction time.") in md


def test_missing_systems_tasks_and_files_are_omitted(tmp_path):
  wd = str(tmp_path / "run")
  os.makedirs(wd)
  metrics = {f"muslse/tag_prediction/p@{k}": 0.3 for k in (3, 6, 9, 12)}  # no p@15, no config
  _write_json(os.path.join(wd, "metrics.json"), metrics)
  md = open(report.write_report(wd)).read()
  t2 = _table(md, "## Table 2")
  assert _row(t2, "MUSLSE")[2:] == ["0.300", "0.300", "0.300", "0.300", "-"]
  assert not [r for r in t2 if r[0] == "one-vs-rest" and r[1] == "this run"]
  assert "No artist prediction, song prediction, similar songs" in md
  assert "nothing to compare" in md
  assert "No tag embeddings" in md
  assert "No model_stats.json" in md
  assert "no map" in md and not os.path.exists(os.path.join(wd, "map.png"))

  # Only artist prediction for MUSLSE: Table 6 has one row, the other tasks print "-".
  wd2 = str(tmp_path / "run2")
  os.makedirs(wd2)
  _write_json(os.path.join(wd2, "metrics.json"), {"muslse/artist_prediction/p@1": 0.25})
  md2 = open(report.write_report(wd2)).read()
  assert "No tag prediction metrics" in md2
  row = _row([r for r in _table(md2, "## Table 6") if r[1] == "this run"], "MUSLSE")
  assert row[2:] == ["0.250"] + ["-"] * 5


def test_missing_metrics_json_names_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.json"):
    report.write_report(str(tmp_path))


def test_merge_adds_baseline_keys_and_keeps_the_runs_own(tmp_path):
  rng = np.random.default_rng(6)
  wd, bd = str(tmp_path / "run"), str(tmp_path / "ovr")
  run_metrics = _random_metrics(rng, ["muslse"], TASKS)
  run_metrics["one_vs_rest/tag_prediction/p@1"] = 0.5
  run_arrays = _write_run(wd, rng, metrics=dict(run_metrics))
  base_metrics = _random_metrics(rng, ["one_vs_rest"], ["tag_prediction", "artist_prediction"])
  base_metrics["muslse/tag_prediction/p@3"] = 0.99  # another MUSLSE run's value: never merged
  _write_baseline(bd, rng, run_arrays, metrics=dict(base_metrics))
  stats_before = open(os.path.join(wd, "model_stats.json")).read()
  report.write_report(wd, baseline_workdirs=[bd])
  merged = json.load(open(os.path.join(wd, "metrics.json")))
  want = dict(base_metrics)
  del want["muslse/tag_prediction/p@3"]
  want.update(run_metrics)
  assert merged == want
  assert merged["one_vs_rest/tag_prediction/p@1"] == 0.5
  assert open(os.path.join(wd, "model_stats.json")).read() == stats_before
  md = open(os.path.join(wd, "report.md")).read()
  assert "kept this run's value" in md
  # Running again is idempotent.
  report.write_report(wd, baseline_workdirs=[bd])
  assert json.load(open(os.path.join(wd, "metrics.json"))) == want


def _fake_run(root, name, rng, *, loss, d, ensemble=1, tasks=TASKS, metrics=None):
  wd = os.path.join(root, name)
  os.makedirs(wd)
  _write_json(os.path.join(wd, "config.json"), _config(embed_dim=d, ensemble=ensemble, loss=loss,
                                                       tasks=tasks))
  if metrics is None:
    metrics = _random_metrics(rng, ["muslse"], tasks)
  _write_json(os.path.join(wd, "metrics.json"), metrics)
  return wd, metrics


def test_compare_runs_builds_tables_3_5_and_6(tmp_path):
  rng = np.random.default_rng(7)
  root = str(tmp_path)
  warp200, m_w200 = _fake_run(root, "warp200", rng, loss="warp", d=100, ensemble=2,
                              tasks=("tag_prediction",))
  auc100, m_a100 = _fake_run(root, "auc100", rng, loss="auc", d=100, tasks=("tag_prediction",))
  m_w100 = _random_metrics(rng, ["muslse"], ["tag_prediction"])
  del m_w100["muslse/tag_prediction/p@9"]
  warp100, _ = _fake_run(root, "warp100", rng, loss="warp", d=100, tasks=("tag_prediction",),
                         metrics=m_w100)
  single, m_single = _fake_run(root, "artist_only", rng, loss="warp", d=100,
                               tasks=("artist_prediction",))
  m_all = _random_metrics(rng, ["muslse", "one_vs_rest"], TABLE6)
  all_tasks, _ = _fake_run(root, "all", rng, loss="warp", d=100, tasks=TABLE6, metrics=m_all)
  out = report.compare_runs([warp200, single, all_tasks, warp100, auc100],
                            str(tmp_path / "tables.md"))
  md = open(out).read()

  t3 = _table(md, "## Table 3")
  assert t3[0] == ["Run", "Loss", "d", "p@3", "p@6", "p@9", "p@12", "p@15"]
  assert [(r[0], r[1], r[2]) for r in t3[1:]] == [("auc100", "auc", "100"),
                                                 ("warp100", "warp", "100"),
                                                 ("warp200", "warp", "200 (2x100)")]
  np.testing.assert_allclose([float(c) for c in t3[3][3:]],
                             [m_w200[f"muslse/tag_prediction/p@{k}"] for k in (3, 6, 9, 12, 15)],
                             atol=5e-4)
  assert t3[2][5] == "-"

  t5 = _table(md, "## Table 5")
  assert [r[:2] for r in t5[1:]] == [["warp100", "100"], ["warp200", "200 (2x100)"]]
  np.testing.assert_allclose(float(t5[2][2]), m_w200["muslse/tag_prediction/p@3"], atol=5e-4)

  t6 = _table(md, "## Table 6")
  assert [r[0] for r in t6[1:]] == ["one-vs-rest", "MUSLSE single task", "MUSLSE all tasks"]
  row = _row(t6, "MUSLSE single task")
  assert row[1:5] == ["artist_only", "artist_prediction", "warp", "100"]
  np.testing.assert_allclose([float(c) for c in row[5:7]],
                             [m_single[f"muslse/artist_prediction/p@{k}"] for k in (1, 6)],
                             atol=5e-4)
  assert row[7:] == ["-"] * 4
  row = _row(t6, "MUSLSE all tasks")
  np.testing.assert_allclose([float(c) for c in row[5:]],
                             [m_all[f"muslse/{t}/p@{k}"] for t in TABLE6 for k in (1, 6)],
                             atol=5e-4)


def test_compare_runs_needs_a_config(tmp_path):
  wd = tmp_path / "run"
  wd.mkdir()
  _write_json(str(wd / "metrics.json"), {})
  with pytest.raises(FileNotFoundError, match="config.json"):
    report.compare_runs([str(wd)], str(tmp_path / "t.md"))


def test_launcher_writes_both_reports(tmp_path):
  rng = np.random.default_rng(8)
  wd = str(tmp_path / "run")
  _write_run(wd, rng)
  wd2, _ = _fake_run(str(tmp_path), "auc", rng, loss="auc", d=32, tasks=("tag_prediction",))
  out = str(tmp_path / "tables.md")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "launch.report", f"--workdirs={wd},{wd2}", f"--out={out}"]
  subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True)
  assert "## Table 3" in open(out).read()
  subprocess.run([sys.executable, "-m", "launch.report", f"--workdir={wd}"], check=True, cwd=REPO,
                 env=env, capture_output=True)
  assert "## Table 2" in open(os.path.join(wd, "report.md")).read()
  bad = subprocess.run([sys.executable, "-m", "launch.report", f"--workdirs={wd}"], cwd=REPO,
                       env=env, capture_output=True, text=True)
  assert bad.returncode != 0 and "--out" in bad.stderr
