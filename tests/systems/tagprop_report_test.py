"""The tag-propagation report's search-range sweep (Figs. 3-4) and tag categories (Table II,
Fig. 6).

Fake workdirs with hand-made per-query arrays stand in for trained runs: what is under test is
how the report pairs, sweeps and groups them, and a shift built into the arrays is the answer.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs import tagprop as tagprop_config
from musemb.systems.tagprop import evaluation
from musemb.systems.tagprop import report

# A vocabulary of Table II tags in three categories, and one tag Table II does not list.
TAGS = ("rock", "pop", "jazz", "metal", "80s", "90s", "chill", "Mellow", "whistling")
COUNTS = np.array([40, 30, 20, 10, 8, 6, 12, 4, 2])       # training songs per tag
TRAIN_SONGS = 200
BASE_AP = np.array([0.4, 0.3, 0.2, 0.1, 0.2, 0.1, 0.3, 0.2, 0.05])
BASE_AUC = np.array([0.8, 0.7, 0.6, 0.6, 0.6, 0.5, 0.7, 0.6, 0.5])
SONGS = np.array([f"TR{i:03d}" for i in range(12)])
BASE_SONG_AP = np.linspace(0.2, 0.6, 12)


def _write_run(folder, *, baseline, r=0.4, ap=BASE_AP, auc=BASE_AUC, song_ap=BASE_SONG_AP,
               taxonomy="", category_r=None, model=None):
  """A finished run's workdir as `write_outputs` leaves it: config, metrics, per-query arrays.
  `category_r` and `model` None leave those keys out, as in configs written before they existed."""
  os.makedirs(folder, exist_ok=True)
  config = {"system": "tagprop", "data_dir": "",
            "objective": {"name": "baseline" if baseline else "supportive", "r": r},
            "model": {"head": "single"},
            "eval": {"bootstrap_resamples": 300, "bootstrap_seed": 0, "popularity_bin": 3,
                     "taxonomy": taxonomy}}
  if category_r is not None:
    config["objective"]["category_r"] = category_r
  if model is not None:
    config["model"]["name"] = model
  key = evaluation.metrics_key(config)
  metrics = {f"{key}/annotation/map": float(np.mean(song_ap)),
             f"{key}/retrieval/map": float(np.nanmean(ap)),
             f"{key}/retrieval/roc_auc": float(np.nanmean(auc)),
             f"{key}/num_tags": float(len(TAGS)),
             f"{key}/playlists/train_songs": float(TRAIN_SONGS)}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(folder, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  np.savez(os.path.join(folder, "per_query.npz"), **{
      f"{key}/annotation/ap": np.asarray(song_ap, np.float64), "annotation/query_ids": SONGS,
      f"{key}/retrieval/ap": np.asarray(ap, np.float64),
      f"{key}/retrieval/roc_auc": np.asarray(auc, np.float64),
      "retrieval/query_ids": np.asarray(TAGS), "retrieval/train_counts": COUNTS})
  return str(folder)


def _cells(section):
  """The rows of a markdown table in `section`, as lists of stripped cells (header included)."""
  return [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in section.splitlines() if line.startswith("|") and "---" not in line]


def test_search_range_sweep_pairs_each_r_with_the_baseline(tmp_path):
  base = _write_run(tmp_path / "base", baseline=True)
  # Each r shifts every test song's AP and every tag's AP by 0.01 * (k + 1): the paired
  # differences are then constant, so each interval is exactly that shift.
  workdirs = [base]
  for k, r in enumerate(tagprop_config.SEARCH_RANGES):
    shift = 0.01 * (k + 1)
    workdirs.append(_write_run(tmp_path / f"r{r}", baseline=False, r=r, ap=BASE_AP + shift,
                               auc=BASE_AUC - shift, song_ap=BASE_SONG_AP + shift))
  runs = [report.read_run(w) for w in reversed(workdirs)]       # order of r comes from the runs
  (sweep,) = report.search_range_sweeps(runs)
  assert sweep["tags"] == len(TAGS) and sweep["head"] == "single"
  assert sweep["baseline"].baseline
  assert [p["r"] for p in sweep["points"]] == list(tagprop_config.SEARCH_RANGES)
  for k, point in enumerate(sweep["points"]):
    shift = 0.01 * (k + 1)
    ann, ap, auc = (point["differences"][n] for n in ("annotation/map", "retrieval/map",
                                                      "retrieval/roc_auc"))
    assert ann["queries"] == len(SONGS) and ap["queries"] == len(TAGS)
    for s, d in ((ann, shift), (ap, shift), (auc, -shift)):
      assert s["difference"] == pytest.approx(d)
      assert s["difference_low"] == pytest.approx(d) == s["difference_high"]
    assert point["values"]["retrieval/map"] == pytest.approx(BASE_AP.mean() + shift)

  out = tmp_path / "sweep" / "search_range.md"
  text = open(report.compare(workdirs, str(out))).read()
  section = text.split("## Search range (Figs. 3 and 4)")[1].split("\n## ")[0]
  table = _cells(section)
  assert table[1][:3] == ["9", "baseline (no r)", "-"]
  rows = table[2:]
  assert [row[2] for row in rows] == [f"{r:g}" for r in tagprop_config.SEARCH_RANGES]
  assert rows[2][3].endswith("(+0.0300 [+0.0300, +0.0300])")            # r = 0.4: annotation
  assert rows[2][5].endswith("(-0.0300 [-0.0300, -0.0300])")            # and retrieval AUC
  assert os.path.getsize(out.parent / "figs3_4_search_range.png") > 0
  assert "figs3_4_search_range.png" in section


def test_no_sweep_without_two_search_ranges(tmp_path):
  runs = [report.read_run(_write_run(tmp_path / "base", baseline=True)),
          report.read_run(_write_run(tmp_path / "p", baseline=False, ap=BASE_AP + 0.1))]
  assert report.search_range_sweeps(runs) == []
  assert "## Search range" not in report.document(runs, str(tmp_path))


def test_category_improvements_by_hand():
  taxonomy = {"genre": ["rock", "pop", "jazz", "metal", "punk"], "era": ["80s", "90s"],
              "location": ["american", "british"]}
  proposed = {"ap": BASE_AP * 1.5, "roc_auc": BASE_AUC + 0.1}
  proposed["ap"][3] = np.nan                  # metal not scored: the genre pairs cover 3 tags
  rows = report.category_improvements(taxonomy, np.asarray(TAGS), COUNTS, proposed,
                                      {"ap": BASE_AP, "roc_auc": BASE_AUC},
                                      train_songs=TRAIN_SONGS, resamples=300)
  genre, era, location = rows
  assert [r["category"] for r in rows] == ["genre", "era", "location"]
  assert (genre["listed"], genre["found"], genre["missing"]) == (5, 4, ["punk"])
  assert genre["popularity"] == pytest.approx(25.0)            # (40 + 30 + 20 + 10) / 4
  assert genre["popularity_percent"] == pytest.approx(12.5)    # of 200 training songs
  assert genre["ap"]["queries"] == 3
  # AP x 1.5 on every tag: the relative improvement is 50% in every resample.
  assert genre["ap"]["relative"] == pytest.approx(0.5)
  assert genre["ap"]["relative_low"] == pytest.approx(0.5) == genre["ap"]["relative_high"]
  assert genre["roc_auc"]["queries"] == 4
  assert genre["roc_auc"]["relative"] == pytest.approx(0.4 / 2.7)   # +0.1 over mean 0.675
  assert era["popularity"] == pytest.approx(7.0) and era["roc_auc"]["relative"] == pytest.approx(
      0.1 / 0.55)
  assert location["found"] == 0 and location["popularity"] is None
  assert location["ap"]["queries"] == 0 and location["ap"]["relative"] is None


def test_shipped_taxonomy_is_table_two():
  taxonomy = report.load_taxonomy()
  assert list(taxonomy) == ["genre", "instrument", "personal", "era", "mood", "location"]
  assert sum(len(tags) for tags in taxonomy.values()) == 50        # the top-50 vocabulary's size
  assert taxonomy["era"] == ["00s", "70s", "80s", "90s"]
  assert taxonomy["location"] == ["american", "british"]
  assert "Hip-Hop" in taxonomy["genre"] and "Mellow" in taxonomy["mood"]
  assert len({t for tags in taxonomy.values() for t in tags}) == 50  # no tag in two categories


def test_bad_taxonomy_is_refused(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text(json.dumps({"genre": "rock"}))
  with pytest.raises(ValueError, match="eval.taxonomy"):
    report.load_taxonomy(str(path))
  with pytest.raises(FileNotFoundError, match="eval.taxonomy"):
    report.load_taxonomy(str(tmp_path / "absent.json"))


def test_report_has_the_category_table_and_plot_from_the_run_taxonomy(tmp_path):
  base = _write_run(tmp_path / "base", baseline=True)
  ap = BASE_AP.copy()
  ap[4:6] *= 2.0                                              # era: +100%; the rest unchanged
  default = _write_run(tmp_path / "paper", baseline=False, ap=ap)
  text = open(report.compare([base, default], str(tmp_path / "paper.md"))).read()
  section = text.split("## Table II and Fig. 6")[1].split("\n## ")[0]
  assert "taxonomy: the paper's Table II" in section
  rows = {row[0]: row for row in _cells(section)}
  assert rows["era"][1:6] == ["2 / 4", "7", "3.5%", "2", "+100.0% [+100.0%, +100.0%]"]
  assert rows["genre"][1] == "4 / 21" and rows["genre"][5] == "+0.0% [+0.0%, +0.0%]"
  assert rows["location"][1:] == ["0 / 2", "-", "-", "0", "-", "-"]
  assert os.path.getsize(tmp_path / "fig6_categories.png") > 0

  own = tmp_path / "mine.json"
  own.write_text(json.dumps({"loud ones": ["rock", "metal"], "odd": ["whistling", "kazoo"]}))
  custom = _write_run(tmp_path / "custom", baseline=False, ap=ap, taxonomy=str(own))
  text = open(report.compare([base, custom], str(tmp_path / "custom.md"))).read()
  section = text.split("## Table II and Fig. 6")[1].split("\n## ")[0]
  rows = {row[0]: row for row in _cells(section)}
  assert f"taxonomy: {own}" in section and "era" not in rows
  assert rows["loud ones"][1] == "2 / 2" and rows["odd"][1] == "1 / 2"
  assert "not in it: kazoo." in section


def test_search_range_configs_and_taxonomy_key():
  for r in tagprop_config.SEARCH_RANGES:
    assert tagprop_config.get_config(f"top50,r={r}").objective.r == r
  assert tagprop_config.get_config().eval.taxonomy == ""
  assert tagprop_config.get_config("top50").objective.r in tagprop_config.SEARCH_RANGES
  assert tagprop_config.get_config("top1000").objective.r in tagprop_config.SEARCH_RANGES


def test_category_and_shortchunk_runs_in_table_one_and_the_sweep(tmp_path):
  """A run with a search range per category is a Table I row of its own (not a point of the r
  sweep); short-chunk CNN runs are compared with their own network's baseline."""
  base = _write_run(tmp_path / "base", baseline=True)
  r2 = _write_run(tmp_path / "r0.2", baseline=False, r=0.2, ap=BASE_AP + 0.01)
  r4 = _write_run(tmp_path / "r0.4", baseline=False, r=0.4, ap=BASE_AP + 0.02)
  category = _write_run(tmp_path / "category", baseline=False, r=0.4, ap=BASE_AP * 1.25,
                        category_r="genre=0.8,era=0.2")
  sc_base = _write_run(tmp_path / "sc_base", baseline=True, model="shortchunk", ap=BASE_AP / 2)
  sc = _write_run(tmp_path / "sc", baseline=False, model="shortchunk", ap=BASE_AP)
  runs = [report.read_run(w) for w in (base, r2, r4, category, sc_base, sc)]
  assert [r.key for r in runs] == ["tagprop_baseline", "tagprop", "tagprop", "tagprop_category_r",
                                   "tagprop_baseline_shortchunk", "tagprop_shortchunk"]
  assert runs[3].label == "Proposed (eq. 3, single head), r = 0.4, genre 0.8, era 0.2"
  assert runs[5].label == "Proposed (eq. 3, single head, short-chunk CNN), r = 0.4"
  (sweep,) = report.search_range_sweeps(runs)
  assert [p["run"].workdir for p in sweep["points"]] == [r2, r4]
  text = open(report.compare([base, r2, r4, category, sc_base, sc],
                             str(tmp_path / "all.md"))).read()
  table = {row[0]: row for row in _cells(text.split("## Table I")[1].split("\n## ")[0])}
  # Relative to the SampleCNN baseline: AP x 1.25; the short-chunk CNN to its own (AP x 2).
  assert table[runs[3].label][3].endswith("(+25.0%)")
  assert table[runs[5].label][3].endswith("(+100.0%)")
  assert float(table["Baseline (eq. 1, short-chunk CNN)"][3]) == pytest.approx(
      np.mean(BASE_AP) / 2, abs=5e-4)
  assert sum("(paper, MSD)" in label for label in table) == 0        # 9 tags: no paper rows


def test_taxonomy_at_report_time(tmp_path):
  """`compare(..., taxonomy=)` and `launch.report --taxonomy=` replace the runs' own taxonomy."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from launch import report as report_launcher  # pylint: disable=g-import-not-at-top
  base = _write_run(tmp_path / "base", baseline=True)
  run = _write_run(tmp_path / "run", baseline=False, ap=BASE_AP * 2)
  own = tmp_path / "mine.json"
  own.write_text(json.dumps({"loud ones": ["rock", "metal"]}))
  text = open(report.compare([base, run], str(tmp_path / "a.md"), taxonomy=str(own))).read()
  assert f"taxonomy: {own}:" in text and "| era" not in text
  builtin = open(report.compare([base, run], str(tmp_path / "b.md"), taxonomy="builtin")).read()
  assert "taxonomy: the built-in world's categories:" in builtin
  flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(workdir=run, baselines=[base], workdirs=[], out=None,
                           taxonomy=str(own)):
    report_launcher.main(["report"])
  assert f"taxonomy: {own}:" in open(os.path.join(run, "report.md")).read()
  with flagsaver.flagsaver(workdir=run, baselines=[base], workdirs=[], out=None, taxonomy=None):
    report_launcher.main(["report"])
  assert "taxonomy: the paper's Table II:" in open(os.path.join(run, "report.md")).read()
  # A system whose report takes no taxonomy refuses the flag instead of ignoring it.
  from absl import app  # pylint: disable=g-import-not-at-top
  from musemb import systems  # pylint: disable=g-import-not-at-top
  with flagsaver.flagsaver(taxonomy="builtin"):
    with pytest.raises(app.UsageError, match="not an option of the 'wmf' report"):
      report_launcher._options([systems.get("wmf")])  # pylint: disable=protected-access
