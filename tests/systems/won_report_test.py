"""Tests for musemb/systems/won/report.py and query.py, and the query mode of launch.predict, on fixture workdirs: tables
parsed back against the fixture's numbers, brute-force nearest words, row order of Tables 1 and 2,
the song ranking against numpy cosines and `late_fusion_scores`, and the launcher's usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from musemb import systems
from musemb.reports import tables as tables_lib
from musemb.systems.won import query as won_query
from musemb.systems.won import report as report_won
from musemb.text import tags as text_tags
from musemb.text import vectors as text_vectors
from musemb.models import branches

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS = ("rock", "metal", "jazz", "piano", "dark", "ambient", "dark_ambient", "jungle",
         "breakbeat", "dub", "calm", "guitar")


def _word_vectors(seed=0, words=WORDS, dim=6):
  rng = np.random.default_rng(seed)
  vectors = rng.normal(size=(len(words), dim)).astype(np.float32)
  # jungle's neighbours: breakbeat, then dub (the paper's domain-specific Table 3 row).
  w = {x: i for i, x in enumerate(words)}
  if "jungle" in w and "breakbeat" in w:
    vectors[w["breakbeat"]] = vectors[w["jungle"]] + 0.05
    vectors[w["dub"]] = vectors[w["jungle"]] + 0.3 * rng.normal(size=dim)
  return text_vectors.WordVectors(words, vectors)


def _config(branch="acoustic", anchors="balanced", negatives="distance_weighted", **words):
  return {"system": "won", "data_dir": "/data/msd_tiny", "data": {"sample_rate": 22050},
          "sampling": {"anchors": anchors, "negatives": negatives},
          "model": {"branch": branch}, "words": {"source": "domain", **words}}


def _metrics(map_=0.1834, p10=0.352, categories=None, zero_shot=True, multi=True):
  m = {"won/retrieval/map": map_, "won/retrieval/num_tags": 25.0, "won/words/oov_tags": 2.0}
  if p10 is not None:
    m["won/retrieval/p@10"] = p10
  for c, (value, n) in (categories or {}).items():
    m[f"won/category/{c}/map"] = value
    m[f"won/category/{c}/num_tags"] = n
  if zero_shot:
    m.update({"won/zero_shot/map": 0.0912, "won/zero_shot/p@10": 0.14,
              "won/zero_shot/random_map": 0.0304, "won/zero_shot/num_tags": 5.0})
  if multi:
    m.update({"won/multi_tag/map": 0.0611, "won/multi_tag/p@10": 0.09,
              "won/multi_tag/num_queries": 40.0})
  return m


def _per_tag(n=25, seed=0):
  rng = np.random.default_rng(seed)
  names = np.array(["jungle", "rock", "dark ambient", "piano"] +
                   [f"tag{i:02d}" for i in range(4, n)])
  ap = rng.uniform(0.0, 1.0, size=n)
  ap[[5, 11]] = np.nan
  seen = np.ones(n, bool)
  seen[[0, 3, 7]] = False
  return {"tag_names": names, "ap": ap, "p10": rng.uniform(0, 1, size=n), "seen": seen}


def _write_run(workdir, *, config=None, metrics=None, per_tag=True, words=True, index=None):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config if config is not None else _config(), f)
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics if metrics is not None else _metrics(), f)
  if per_tag:
    np.savez(os.path.join(workdir, "per_tag.npz"), **_per_tag())
  if words:
    _word_vectors().save(os.path.join(workdir, "words.npz"))
  if index is not None:
    np.savez(os.path.join(workdir, "song_index.npz"), **index)
  return workdir


def _index(rng, songs=7, tags=4, dim=5, late_fusion=False, names=True, key="embeddings"):
  # The won system writes the song embeddings as "embeddings" ("song_embeddings" is read too).
  shape = (songs, 2, dim) if late_fusion else (songs, dim)
  emb = rng.normal(size=shape).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  out = {"track_ids": np.array([f"TR{i:03d}" for i in range(songs)]), key: emb,
         "tag_names": np.array([f"tag{i}" for i in range(tags)]),
         "tag_embeddings": rng.normal(size=(tags, dim)).astype(np.float32)}
  if names:
    out["titles"] = np.array([f"Song {i}" for i in range(songs)])
    out["artists"] = np.array([f"Artist {i % 3}" for i in range(songs)])
  return out


def _tables(text, heading):
  """Rows (lists of cells) of every markdown table in the section under `heading`."""
  lines = text.split("\n")
  start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
  level = len(lines[start]) - len(lines[start].lstrip("#"))
  tables, current = [], None
  for line in lines[start + 1:]:
    if line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
      break
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
      if current is None:
        current = []
        tables.append(current)
      if not set("".join(cells)) <= set("-:| "):
        current.append(cells)
    else:
      current = None
  return tables


def _brute_neighbours(wv, word, k):
  v = wv[word]
  unit = wv.vectors / np.linalg.norm(wv.vectors, axis=1, keepdims=True)
  sims = unit @ (v / np.linalg.norm(v))
  order = [i for i in np.argsort(-sims, kind="stable") if wv.words[i] != word]
  return [wv.words[i] for i in order[:k]]


# ------------------------------------------------------------------------------------------------
# write_report.


def test_write_report_numbers_and_sections(tmp_path):
  cats = {"genre": (0.2512, 10.0), "mood": (0.1401, 6.0), "location": (0.0823, 4.0),
          "instrument": (0.3050, 5.0)}
  workdir = _write_run(str(tmp_path / "acoustic"), metrics=_metrics(categories=cats))
  base = _write_run(str(tmp_path / "cultural"), config=_config(branch="cultural"),
                    metrics=_metrics(map_=0.1155, p10=0.32,
                                     categories={"genre": (0.11, 10.0), "location": (0.2, 4.0)}))
  path = systems.for_workdir(workdir)[0].report(workdir, baseline_workdirs=[base])
  assert path == os.path.join(workdir, "report.md")
  text = open(path).read()
  assert "Balanced, Wu et al. distance-weighted" in text and "2 tags out of" in text
  assert "prepared data set at `/data/msd_tiny`" in text

  (retrieval,) = _tables(text, "Tag-based retrieval")
  assert retrieval[1] == ["acoustic (this run)", "25", "0.183", "0.352"]
  assert retrieval[2] == ["cultural", "25", "0.116", "0.320"]

  (cat,) = _tables(text, "MAP per tag category")
  assert cat[0] == ["Category", "Tags", "acoustic (this run) MAP", "cultural MAP"]
  # Taxonomy order (Fig. 2), only the categories present; the baseline lacks mood / instrument.
  assert cat[1:] == [["genre", "10", "0.251", "0.110"], ["mood", "6", "0.140", "-"],
                     ["location", "4", "0.0823", "0.200"], ["instrument", "5", "0.305", "-"]]
  png = mpimg.imread(os.path.join(workdir, "categories.png"))
  assert png.ndim == 3 and png.shape[0] > 100

  zs = _tables(text, "Zero-shot")
  assert zs[0][1:] == [["tags", "5", "-"], ["MAP", "0.0912", "0.0304"], ["P@10", "0.140", "-"]]
  assert f"{0.0912 / 0.0304:.2f}x chance" in text
  pt = _per_tag()
  unseen = np.flatnonzero(~pt["seen"])
  expected = [str(pt["tag_names"][i]) for i in unseen[np.argsort(-pt["ap"][unseen])]]
  assert [r[0] for r in zs[1][1:]] == expected

  (multi,) = _tables(text, "Multi-tag")
  assert multi[1:] == [["queries", "40"], ["MAP", "0.0611"], ["P@10", "0.0900"]]


def test_best_and_worst_tags_against_numpy(tmp_path):
  workdir = _write_run(str(tmp_path / "run"))
  text = open(report_won.write_report(workdir)).read()
  best, worst = _tables(text, "Best and worst tags")
  pt = _per_tag()
  ok = np.flatnonzero(np.isfinite(pt["ap"]))
  ranked = ok[np.argsort(-pt["ap"][ok])]
  assert [r[0] for r in best[1:]] == [str(pt["tag_names"][i]) for i in ranked[:10]]
  assert [r[0] for r in worst[1:]] == [str(pt["tag_names"][i]) for i in ranked[::-1][:10]]
  assert best[1][1] == tables_lib.format_value(pt["ap"][ranked[0]])
  assert best[1][3] == ("seen" if pt["seen"][ranked[0]] else "zero-shot")
  # A small vocabulary is listed whole, best first, NaN APs left out.
  small = {"tag_names": np.array(["a", "b", "c"]), "ap": np.array([0.2, np.nan, 0.7])}
  b, w = report_won.best_and_worst_tags(small)
  assert b.tolist() == [2, 0] and w.size == 0


def test_table3_nearest_words_with_general_embedding(tmp_path):
  general = _word_vectors(seed=5, words=WORDS[:-1] + ("jungles",))
  gpath = general.save(str(tmp_path / "general.npz"))
  workdir = _write_run(str(tmp_path / "run"), config=_config(general_path=gpath))
  text = open(report_won.write_report(workdir)).read()
  (table,) = _tables(text, "Table 3")
  assert table[0] == ["Tag", "this run: domain-specific (trained)", "general: general.npz"]
  rows = {r[0]: r[1:] for r in table[1:]}
  # Default words: the zero-shot tags first, then the best tags by AP (rock 0.27 before dark
  # ambient 0.04), those out of the run's vocabulary (tag07, ...) skipped.
  assert list(rows) == ["jungle", "piano", "rock", "dark ambient"]
  run_wv = _word_vectors()
  assert rows["jungle"][0] == ", ".join(_brute_neighbours(run_wv, "jungle", 10))
  assert rows["jungle"][0].startswith("breakbeat, ")
  assert rows["jungle"][1] == ", ".join(_brute_neighbours(general, "jungle", 10))
  assert rows["rock"][1] == ", ".join(_brute_neighbours(general, "rock", 10))


def test_table3_config_words_and_missing_files(tmp_path):
  workdir = _write_run(str(tmp_path / "run"),
                       config=_config(query_words="rock, dark ambient",
                                      general_path=str(tmp_path / "nope.bin")),
                       metrics=_metrics(zero_shot=False, multi=False), per_tag=False)
  text = open(report_won.write_report(workdir)).read()
  (table,) = _tables(text, "Table 3")
  assert [r[0] for r in table[1:]] == ["rock", "dark ambient"]
  wv = _word_vectors()
  # "dark ambient" is the phrase token dark_ambient, which is left out of its own neighbours.
  assert table[2][1] == ", ".join(w for w, _ in wv.nearest(wv["dark_ambient"], 10,
                                                         exclude=["dark_ambient"]))
  assert "nope.bin, which does not exist" in text
  assert "No zero-shot evaluation" in text and "No multi-tag evaluation" in text
  assert "No per_tag.npz" in text and "No per-category metrics" in text
  # Counted as zero (NaN values), as the system writes an empty evaluation.
  metrics = _metrics()
  metrics.update({"won/zero_shot/num_tags": 0.0, "won/zero_shot/map": float("nan"),
                  "won/multi_tag/num_queries": 0.0, "won/multi_tag/map": float("nan")})
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  text = open(report_won.write_report(workdir)).read()
  assert "No zero-shot evaluation" in text and "No multi-tag queries in this run" in text
  assert not os.path.exists(os.path.join(workdir, "categories.png"))


def test_write_report_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.json"):
    report_won.write_report(str(tmp_path))
  workdir = _write_run(str(tmp_path / "run"), per_tag=False)
  np.savez(os.path.join(workdir, "per_tag.npz"), tag_names=np.array(["a", "b"]),
           ap=np.array([0.1]))
  with pytest.raises(ValueError, match="ap has 1 entries but tag_names has 2"):
    report_won.write_report(workdir)


# ------------------------------------------------------------------------------------------------
# compare_runs.


def test_compare_runs_tables_ordered_with_paper_rows(tmp_path):
  specs = [  # name, branch, anchors, negatives, MAP, P@10
      ("cos_lf", "late_fusion", "balanced", "cosine", 0.21, 0.41),
      ("bw_cul", "cultural", "balanced", "distance_weighted", 0.12, 0.30),
      ("bal_ac", "acoustic", "balanced", "random", 0.17, None),
      ("bw_ac", "acoustic", "balanced", "distance_weighted", 0.19, 0.36),
      ("rnd_ac", "acoustic", "random", "random", 0.16, 0.29),
  ]
  workdirs = []
  for name, branch, anchors, negatives, m, p in specs:
    metrics = _metrics(map_=m, p10=p, zero_shot=name != "bal_ac",
                       categories={"genre": (m + 0.01, 3.0)})
    workdirs.append(_write_run(str(tmp_path / name), config=_config(branch, anchors, negatives),
                               metrics=metrics, per_tag=False, words=False))
  out = systems.get("won").compare(workdirs, str(tmp_path / "tables.md"))
  text = open(out).read()

  (t1,) = _tables(text, "Table 1")
  assert t1[0] == ["Sampling", "Runs", "Cultural MAP", "Cultural P@10", "Acoustic MAP",
                   "Acoustic P@10", "Late fusion MAP", "Late fusion P@10"]
  # The paper's balanced-weighted row is two: the authors' (cos + 1) / 2 and Wu et al.'s.
  authors, wu = "Balanced-weighted, authors' (cos + 1) / 2", "Balanced, Wu et al. distance-weighted"
  assert t1[1:5] == [
      ["Random", "rnd_ac", "-", "-", "0.160", "0.290", "-", "-"],
      ["Balanced", "bal_ac", "-", "-", "0.170", "-", "-", "-"],
      [authors, "cos_lf", "-", "-", "-", "-", "0.210", "0.410"],
      [wu, "bw_cul, bw_ac", "0.120", "0.300", "0.190", "0.360", "-", "-"]]
  # The paper's numbers sit on the authors' row, and the text says so.
  assert t1[5:] == [["Random", "paper, MSD100", "-", "-", "0.1658", "0.2990", "-", "-"],
                    ["Balanced", "paper, MSD100", "-", "-", "0.1675", "0.3160", "-", "-"],
                    [authors, "paper, MSD100", "-", "-", "0.1852", "0.3500", "-", "-"]]
  table1 = text[text.index("## Table 1"):text.index("## Table 2")]
  assert ("balanced-weighted numbers (0.1852 / 0.3500) were produced by the authors' code, i.e. "
          "the `authors` row") in table1
  assert "hardest-negative mining" in table1

  (t2,) = _tables(text, "Table 2")
  ours = [r for r in t2[1:] if not r[1].startswith("paper")]
  assert [r[1] for r in ours] == ["bw_cul", "rnd_ac", "bal_ac", "bw_ac", "cos_lf"]
  assert ours[2][4:] == ["0.170", "-"]
  paper = [r for r in t2[1:] if r[1].startswith("paper, MSD")]
  assert {r[2] for r in paper} == {authors}
  assert [(r[0], r[1], r[4], r[5]) for r in paper] == [
      ("Cultural (Cul-E)", "paper, MSD100", "0.1155", "0.3200"),
      ("Acoustic", "paper, MSD100", "0.1852", "0.3500"),
      ("Concatenation hybrid (Concat)", "paper, MSD100", "0.1775", "0.3120"),
      ("Cultural (Cul-E)", "paper, MSD50", "0.2163", "0.4500"),
      ("Cultural (Cul-I)", "paper, MSD50", "0.4719", "0.6380"),
      ("Acoustic", "paper, MSD50", "0.3062", "0.4680")]

  (zs,) = _tables(text, "Zero-shot retrieval per run")
  rows = {r[0]: r[1:] for r in zs[1:]}
  assert rows["bal_ac"] == ["-", "-", "-", "-"]
  assert rows["bw_ac"] == ["5", "0.0912", "0.0304", "0.140"]
  (cat,) = _tables(text, "MAP per tag category")
  assert cat[0][2:] == [f"{n} MAP" for n in ("rnd_ac", "bal_ac", "cos_lf", "bw_cul", "bw_ac")]


def test_compare_runs_rejects_other_systems(tmp_path):
  a = _write_run(str(tmp_path / "a"), per_tag=False, words=False)
  b = _write_run(str(tmp_path / "b"), config={"system": "muslse"}, per_tag=False, words=False)
  with pytest.raises(ValueError, match=r"\['b'\] are not won runs"):
    report_won.compare_runs([a, b], str(tmp_path / "t.md"))
  with pytest.raises(ValueError, match="at least one"):
    report_won.compare_runs([], str(tmp_path / "t.md"))


def test_sampling_key():
  assert report_won.sampling_key(_config(anchors="random", negatives="random")) == "random"
  assert report_won.sampling_key(_config(anchors="balanced", negatives="random")) == "balanced"
  assert report_won.sampling_key(_config()) == "wu"
  assert report_won.sampling_key(_config(anchors="balanced", negatives="cosine")) == "authors"
  assert report_won.sampling_key(_config(anchors="random", negatives="cosine")) == (
      "random_authors")
  assert report_won.sampling_key(_config(anchors="random", negatives="distance_weighted")) == (
      "random_wu")
  assert report_won.sampling_key(_config(anchors="song_uniform", negatives="random")) == (
      "song_uniform")
  assert report_won.sampling_key(_config(anchors="x", negatives="y")) == "x/y"


# ------------------------------------------------------------------------------------------------
# Query helpers.


def test_rank_songs_is_cosine_order():
  rng = np.random.default_rng(1)
  songs = rng.normal(size=(30, 8)).astype(np.float32) * rng.uniform(0.5, 3, size=(30, 1))
  q = rng.normal(size=8).astype(np.float32)
  cos = (songs / np.linalg.norm(songs, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
  idx, scores = won_query.rank_songs(q, songs, 5)
  assert idx.tolist() == np.argsort(-cos)[:5].tolist()
  np.testing.assert_allclose(scores, cos[idx], rtol=1e-5, atol=1e-6)
  idx, _ = won_query.rank_songs(q, songs, 100)
  assert len(idx) == 30
  # Ties keep index order.
  tied = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], np.float32)
  assert won_query.rank_songs(np.array([1.0, 0.0]), tied, 3)[0].tolist() == [0, 2, 1]
  with pytest.raises(ValueError, match="only apply to a late-fusion index"):
    won_query.rank_songs(q, songs, 3, late_fusion_weight=0.3)
  with pytest.raises(ValueError, match="zero or not finite"):
    won_query.rank_songs(np.zeros(8), songs, 3)
  with pytest.raises(ValueError, match="has 7 values"):
    won_query.rank_songs(np.ones(7), songs, 3)
  with pytest.raises(ValueError, match="positive int"):
    won_query.rank_songs(q, songs, 0)


def test_rank_songs_late_fusion_uses_late_fusion_scores(monkeypatch):
  rng = np.random.default_rng(2)
  songs = rng.normal(size=(20, 2, 6)).astype(np.float32)
  q = rng.normal(size=6).astype(np.float32)
  unit = songs / np.linalg.norm(songs, axis=-1, keepdims=True)
  qu = q / np.linalg.norm(q)
  for w in (0.0, 0.3, 1.0):
    hand = w * unit[:, 0] @ qu + (1 - w) * unit[:, 1] @ qu
    reference = np.asarray(branches.late_fusion_scores(q[None], songs, w))[0]
    np.testing.assert_allclose(reference, hand, rtol=1e-5, atol=1e-6)
    idx, scores = won_query.rank_songs(q, songs, 7, late_fusion_weight=w)
    assert idx.tolist() == np.argsort(-hand)[:7].tolist()
    np.testing.assert_allclose(scores, hand[idx], rtol=1e-5, atol=1e-6)
  calls = []
  real = branches.late_fusion_scores

  def spy(tag_emb, song_emb, acoustic_weight=0.5):
    calls.append(acoustic_weight)
    return real(tag_emb, song_emb, acoustic_weight)

  monkeypatch.setattr(branches, "late_fusion_scores", spy)
  won_query.rank_songs(q, songs, 3)
  assert calls == [0.5]
  # Songs without WMF factors fall back to the acoustic cosine (late_fusion_scores with w = 1).
  has = np.arange(20) % 2 == 0
  idx, scores = won_query.rank_songs(q, songs, 20, 0.3, has_factors=has)
  assert calls[1:] == [0.3, 1.0]
  hand = np.where(has, 0.3 * unit[:, 0] @ qu + 0.7 * unit[:, 1] @ qu, unit[:, 0] @ qu)
  assert idx.tolist() == np.argsort(-hand).tolist()
  np.testing.assert_allclose(scores, hand[idx], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="has 3 entries for 20 songs"):
    won_query.rank_songs(q, songs, 3, has_factors=has[:3])


def test_rank_tags_is_cosine_order():
  rng = np.random.default_rng(3)
  tags = rng.normal(size=(12, 4)).astype(np.float32)
  a = rng.normal(size=4).astype(np.float32)
  cos = (tags / np.linalg.norm(tags, axis=1, keepdims=True)) @ (a / np.linalg.norm(a))
  idx, scores = won_query.rank_tags(a, tags, 4)
  assert idx.tolist() == np.argsort(-cos)[:4].tolist()
  np.testing.assert_allclose(scores, cos[idx], rtol=1e-5, atol=1e-6)


def test_split_query_drops_oov_words():
  wv = _word_vectors()
  q = won_query.split_query(wv, "Dark Ambient zzyzx piano")
  assert q.tokens == ("dark_ambient", "piano") and q.oov == ("zzyzx",)
  np.testing.assert_allclose(text_tags.query_vector(wv, q.text)[0],
                             (wv["dark_ambient"] + wv["piano"]) / 2, rtol=1e-6)
  whole = won_query.split_query(wv, "jazz piano")
  assert whole.text == "jazz piano" and whole.oov == ()
  with pytest.raises(text_tags.OutOfVocabularyError, match=r"\['foo', 'bar'\]"):
    won_query.split_query(wv, "foo bar")
  with pytest.raises(ValueError, match="empty query"):
    won_query.split_query(wv, "  ")


@pytest.mark.parametrize("late_fusion", [False, True])
def test_answer_queries_with_a_stand_in_tag_branch(tmp_path, late_fusion):
  rng = np.random.default_rng(4)
  wv = _word_vectors()
  index_arrays = _index(rng, songs=9, dim=5, late_fusion=late_fusion)
  if late_fusion:
    index_arrays["has_factors"] = np.arange(9) % 3 != 0  # songs 0, 3, 6: audio only
  workdir = _write_run(str(tmp_path / "run"), index=index_arrays)
  index = won_query.load_song_index(workdir)
  assert index.late_fusion == late_fusion
  proj = rng.normal(size=(wv.dim, 5)).astype(np.float32)
  seen = []

  def embed(text):
    seen.append(text)
    return text_tags.query_vector(wv, text)[0] @ proj

  queries = [won_query.split_query(wv, "dark ambient qqq piano"),
             won_query.split_query(wv, "rock")]
  out = won_query.answer_queries(index, queries, embed, 4, late_fusion_weight=0.25)
  assert seen == ["dark ambient piano", "rock"]
  assert list(out) == ["dark ambient qqq piano", "rock"]
  assert out["dark ambient qqq piano"]["oov"] == ["qqq"]
  assert out["dark ambient qqq piano"]["words"] == ["dark_ambient", "piano"]
  for q, text in zip(queries, seen):
    v = embed(text)
    songs = index_arrays["embeddings"]
    if late_fusion:
      hand = (0.25 * songs[:, 0] @ v + 0.75 * songs[:, 1] @ v) / np.linalg.norm(v)
      hand = np.where(index_arrays["has_factors"], hand, songs[:, 0] @ v / np.linalg.norm(v))
    else:
      hand = songs @ v / np.linalg.norm(v)
    order = np.argsort(-hand)[:4]
    got = out[q.query]["songs"]
    assert [s["track_id"] for s in got] == [f"TR{i:03d}" for i in order]
    assert got[0]["title"] == f"Song {order[0]}" and got[0]["artist"] == f"Artist {order[0] % 3}"
    np.testing.assert_allclose([s["score"] for s in got], hand[order], rtol=1e-4, atol=1e-5)


def test_load_song_index_checks_shapes(tmp_path):
  rng = np.random.default_rng(5)
  with pytest.raises(FileNotFoundError, match="song_index.npz does not exist"):
    won_query.load_song_index(str(tmp_path))
  bad = _index(rng, names=False)
  bad["tag_embeddings"] = bad["tag_embeddings"][:, :3]
  np.savez(str(tmp_path / "song_index.npz"), **bad)
  with pytest.raises(ValueError, match="tag_embeddings has shape"):
    won_query.load_song_index(str(tmp_path))
  bad = _index(rng)
  bad["embeddings"] = bad["embeddings"][:-1]
  np.savez(str(tmp_path / "song_index.npz"), **bad)
  with pytest.raises(ValueError, match="song_embeddings has shape"):
    won_query.load_song_index(str(tmp_path))
  ok = _index(rng, names=False, key="song_embeddings")
  np.savez(str(tmp_path / "song_index.npz"), **ok)
  index = won_query.load_song_index(str(tmp_path))
  assert index.titles is None and index.artists is None
  assert won_query.song_results(index, np.array([2]), np.array([0.5])) == [
      {"track_id": "TR002", "score": 0.5}]


def test_late_fusion_weight_from_config():
  assert won_query.late_fusion_weight({"model": {"acoustic_weight": 0.8}}) == 0.8
  assert won_query.late_fusion_weight({"model": {}}) == 0.5


# ------------------------------------------------------------------------------------------------
# The launcher's argument checks (all fail before any model or TensorFlow loads).


def _predict(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "launch.predict", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


def test_predict_launcher_usage_errors(tmp_path):
  rng = np.random.default_rng(6)
  won_dir = _write_run(str(tmp_path / "won"), index=_index(rng), per_tag=False)
  cultural_dir = _write_run(str(tmp_path / "cultural"), config=_config(branch="cultural"),
                            index=_index(rng), per_tag=False)
  muslse_dir = str(tmp_path / "muslse")
  os.makedirs(muslse_dir)
  with open(os.path.join(muslse_dir, "config.json"), "w") as f:
    json.dump({"system": "muslse"}, f)
  cases = [
      ((f"--workdir={muslse_dir}", "--query=rock"), "predicts from audio files only"),
      ((f"--workdir={won_dir}",), "give one or more audio files"),
      ((f"--workdir={won_dir}", "--query=rock", "a.wav"), "not both"),
      ((f"--workdir={won_dir}", "--query=rock", "--top_k=0"), "positive number"),
      ((f"--workdir={won_dir}", "--query= "), "--query is empty"),
      ((f"--workdir={won_dir}", "--query=rock", "--acoustic_weight=2"), "must be in [0, 1]"),
      ((f"--workdir={won_dir}", "--query=foo bar"), "no word of the query 'foo bar'"),
      ((f"--workdir={cultural_dir}", "a.wav"), "hears audio (acoustic or late_fusion)"),
  ]
  for args, message in cases:
    proc = _predict(*args)
    assert proc.returncode != 0, (args, proc.stdout)
    assert message in proc.stderr, (args, proc.stderr[-2000:])
  assert "['foo', 'bar']" in _predict(f"--workdir={won_dir}", "--query=foo bar").stderr
