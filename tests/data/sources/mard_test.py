"""Tests for musemb.data.sources.mard on a small MARD tree in the published layout.

The fixture writes mard_metadata.json and mard_reviews.json one JSON object per line with the
release's field names, and acousticbrainz_descriptors/<amazon-id>_<mbid>.json low-level documents,
then breaks a few inputs on purpose: both album-key spellings (and McAuley's `asin`), the `text`
spelling of the review text, a Python-literal metadata line (the README loads lines with eval), a
broken JSON line in each file, a broken and an incomplete descriptor file, a descriptor and a
review of unknown albums, empty texts, albums without descriptors or reviews, an album with two
descriptor files (an expanded collection).
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from musemb import features
from musemb.data.sources import mard
from musemb.data.sources import records
from musemb.data.sources import synthetic

A1, A2, A3, A4, A5, A6 = (f"B00000000{i}" for i in range(1, 7))
MBID = {k: f"{k}0000000-1111-2222-3333-444444444444" for k in "abcdefgh"}


def _stats(base: float) -> dict[str, float]:
  return {s: base + k / 10 for k, s in enumerate(features.DESCRIPTOR_STATS[::-1])}


def _lowlevel_doc(seed: int) -> dict:
  """An AcousticBrainz low-level document (abridged), its numbers drawn from `seed`."""
  rng = np.random.default_rng(seed)
  root = rng.standard_normal((13, 13))
  return {
      "lowlevel": {
          "average_loudness": float(rng.random()),
          "mfcc": {"mean": (rng.standard_normal(13) * 10).tolist(),
                   "cov": (root @ root.T).tolist(), "icov": np.eye(13).tolist()},
          **{name: _stats(float(rng.integers(1, 1000))) for name in features.FRAME_DESCRIPTORS},
          "spectral_flux": _stats(0.5),
      },
      "metadata": {"tags": {"album": ["An Album"]}, "audio_properties": {"length": 200.0}},
      "rhythm": {"bpm": 100.0 + seed},
  }


DOCS = {  # descriptor file name -> document (None: written broken)
    f"{A1}_{MBID['a']}.json": _lowlevel_doc(1),
    f"{A2}_{MBID['b']}.json": _lowlevel_doc(2),
    f"{A2}_{MBID['c']}.json": "incomplete",  # a field missing: bad_descriptor_file
    f"{A4}_{MBID['d']}.json": None,          # broken JSON: bad_descriptor_file
    f"{A5}_{MBID['e']}.json": _lowlevel_doc(5),
    f"{A6}_{MBID['f']}.json": _lowlevel_doc(6),
    f"{A6}_{MBID['g']}.json": _lowlevel_doc(7),
    f"B000000099_{MBID['h']}.json": _lowlevel_doc(9),  # descriptor_unknown_album
    "notes.json": _lowlevel_doc(10),                   # bad_descriptor_name
}


def _album(amazon_id: str, title: str, artist: str, genre: str) -> dict:
  return {"amazon-id": amazon_id, "artist": artist, "title": title, "root-genre": genre,
          "label": "A Label", "categories": [["CDs & Vinyl", genre]], "salesRank": {"Music": 1},
          "artist-mbid": "x", "songs": [{"title": "One", "mbid": "y"}]}


METADATA_LINES = [
    json.dumps(_album(A1, "First Light", "The Ones", "Jazz")),
    json.dumps(_album(A2, "Second Wind", "The Twos", "Pop")),
    json.dumps(_album(A3, "No Audio", "Nobody", "Rock")),
    '{"amazon-id": "B000000001", "title": "A broken',                        # bad_metadata_line
    json.dumps(_album(A4, "Broken Audio", "Nobody", "Rock")),
    json.dumps(_album(A5, "Unreviewed", "Quiet", "Folk")),
    json.dumps(_album(A1, "Duplicate", "The Ones", "Jazz")),                  # duplicate_album
    repr({"amazon-id": A6, "title": "Literal", "artist": "Evals", "root-genre": None}),
    json.dumps({"title": "No key"}),                                         # bad_metadata_line
]


def _review(key: str, album: str, text_key: str = "reviewText", text="A fine record.") -> str:
  return json.dumps({"reviewerID": "R1", key: album, "reviewerName": "X", "helpful": [0, 0],
                     text_key: text, "overall": 5.0, "summary": "Good",
                     "unixReviewTime": 1136073600, "reviewTime": "01 1, 2006"})


REVIEW_LINES = [
    _review("amazon-id", A1, text="Warm acoustic guitar all the way."),        # 1 kept
    _review("product-id", A2, text="Shiny synth pop."),                        # 2 kept
    _review("asin", A1, text="Lovely horns."),                                 # 3 kept
    '{"amazon-id": "B000000001", "reviewText": "cut off',                      # 4 bad_review_line
    _review("amazon-id", "B000000077"),                                        # 5 unknown album
    _review("amazon-id", A2, text="   "),                                      # 6 empty_text
    _review("amazon-id", A3),                                                  # 7 no descriptors
    _review("amazon-id", A4),                                                  # 8 no descriptors
    _review("amazon-id", A6, text_key="text", text="Two tracks of noise."),   # 9 kept
    json.dumps({"amazon-id": A1, "product-id": A2, "reviewText": "x"}),        # 10 conflicting
    _review("amazon-id", A2, text=None),                                       # 11 empty_text
    _review("amazon-id", A1, text=5),                                          # 12 bad_review_line
    "",                                                                        # 13 blank
    json.dumps({"reviewText": "no album"}),                                    # 14 bad_review_line
    _review("amazon-id", A6, text="Second review of the literal album."),     # 15 kept
]

EXPECTED_SKIPS = {
    "bad_metadata_line": 2, "duplicate_album": 1, "bad_descriptor_name": 1,
    "descriptor_unknown_album": 1, "bad_descriptor_file": 2, "bad_review_line": 4,
    "review_unknown_album": 1, "empty_text": 2, "review_album_without_descriptors": 2,
    "album_without_descriptors": 2, "album_without_reviews": 1,
}


def _write_tree(root, metadata=METADATA_LINES, reviews=REVIEW_LINES, docs=DOCS) -> str:
  root = str(root)
  folder = os.path.join(root, mard.DESCRIPTORS_DIR)
  os.makedirs(folder)
  with open(os.path.join(root, mard.METADATA_FILE), "w") as f:
    f.write("\n".join(metadata) + "\n")
  with open(os.path.join(root, mard.REVIEWS_FILE), "w") as f:
    f.write("\n".join(reviews) + "\n")
  for name, doc in docs.items():
    with open(os.path.join(folder, name), "w") as f:
      if doc is None:
        f.write('{"lowlevel": {"mfcc": {"mean": [1.0, 2.')
      elif doc == "incomplete":
        broken = _lowlevel_doc(3)
        del broken["lowlevel"]["zerocrossingrate"]["dvar"]
        json.dump(broken, f)
      else:
        json.dump(doc, f)
  with open(os.path.join(folder, "README.txt"), "w") as f:
    f.write("not a descriptor")
  return root


@pytest.fixture
def tree(tmp_path):
  return _write_tree(tmp_path / "mard")


def test_reads_the_published_layout(tree):
  data = mard.read(tree)
  assert data.source == "mard"
  assert data.album_ids == (A1, A2, A6)
  assert [(a.title, a.artist, a.genre) for a in data.albums] == [
      ("First Light", "The Ones", "Jazz"), ("Second Wind", "The Twos", "Pop"),
      ("Literal", "Evals", None)]
  assert data.track_ids == (f"{A1}_{MBID['a']}", f"{A2}_{MBID['b']}", f"{A6}_{MBID['f']}",
                            f"{A6}_{MBID['g']}")
  np.testing.assert_array_equal(data.track_album, [0, 1, 2, 2])
  assert data.feature_names == features.descriptor_names()
  assert data.features.shape == (4, 140) and data.features.dtype == np.float32
  for row, seed in enumerate((1, 2, 6, 7)):
    doc = _lowlevel_doc(seed)
    np.testing.assert_array_equal(data.features[row],
                                  features.descriptors_from_acousticbrainz(doc))
    k = data.feature_names.index("lowlevel.spectral_rolloff.dmean")
    assert data.features[row, k] == np.float32(doc["lowlevel"]["spectral_rolloff"]["dmean"])
  assert data.reviews == (
      records.Review("review0000001", (f"{A1}_{MBID['a']}",), "Warm acoustic guitar all the way.",
                     A1),
      records.Review("review0000002", (f"{A2}_{MBID['b']}",), "Shiny synth pop.", A2),
      records.Review("review0000003", (f"{A1}_{MBID['a']}",), "Lovely horns.", A1),
      records.Review("review0000009", (f"{A6}_{MBID['f']}", f"{A6}_{MBID['g']}"),
                     "Two tracks of noise.", A6),
      records.Review("review0000015", (f"{A6}_{MBID['f']}", f"{A6}_{MBID['g']}"),
                     "Second review of the literal album.", A6),
  )
  np.testing.assert_array_equal(data.review_album, [0, 1, 0, 2, 2])
  assert data.tables().reviews == list(data.reviews)


def test_counts_every_skip_with_its_reason(tree):
  skipped = mard.read(tree).skipped
  assert dict(skipped.counts) == EXPECTED_SKIPS
  assert skipped.examples["duplicate_album"] == [f"{mard.METADATA_FILE}:7: {A1}"]
  assert skipped.examples["review_unknown_album"] == [f"{mard.REVIEWS_FILE}:5: B000000077"]
  assert skipped.examples["album_without_descriptors"] == [A3, A4]
  assert skipped.examples["album_without_reviews"] == [A5]
  assert skipped.examples["descriptor_unknown_album"] == [f"B000000099_{MBID['h']}.json"]
  bad_files = skipped.examples["bad_descriptor_file"]
  assert bad_files[0].startswith(f"{A2}_{MBID['c']}.json: lowlevel.zerocrossingrate.dvar is")
  assert bad_files[1].startswith(f"{A4}_{MBID['d']}.json: ")
  reasons = [e.split(": ", 1)[1] for e in skipped.examples["bad_review_line"]]
  assert reasons[0] == "not a JSON object" and reasons[1].startswith("conflicting album keys")
  assert reasons[2] == "the text is int, not a string" and reasons[3].startswith("no album key")


def test_default_split_holds_out_whole_albums(tree):
  data = mard.read(tree)
  counts = collections.Counter(r.album for r in data.reviews)
  assert data.album_splits == mard.split_albums(counts, 0.1, 0.0, 0)
  assert sorted(data.album_splits.values()).count("test") == 1  # 10% of 5 reviews: one album
  sizes = data.split_sizes()
  assert sum(s[0] for s in sizes.values()) == 3 and sum(s[2] for s in sizes.values()) == 5
  parts = {name: data.split(name) for name in records.SPLITS}
  assert sum(len(p.reviews) for p in parts.values()) == len(data.reviews)
  for name, part in parts.items():
    assert all(a.split == name for a in part.albums)
    assert {r.album for r in part.reviews} == set(part.album_ids)
    for t, k in zip(part.track_ids, part.track_album):
      assert t.startswith(part.album_ids[k] + "_")
      np.testing.assert_array_equal(part.features[part.track_ids.index(t)],
                                    data.features[data.track_ids.index(t)])
  other = mard.read(tree, seed=0)
  assert other.album_splits == data.album_splits  # deterministic
  assert "whole albums split by review share (test 0.1, valid 0, seed 0)" in data.description()


def test_split_file(tree, tmp_path):
  path = tmp_path / "split.csv"
  # A3 is in the metadata but has no descriptors: naming it is fine. A6 is not listed.
  path.write_text(f"amazon-id,split\n{A1},train\n{A2},TEST\n{A3},val\n\n")
  data = mard.read(tree, split_file=str(path))
  assert data.album_splits == {A1: "train", A2: "test"}
  # A5 has descriptors but no review: the split file is checked first (the documented order).
  assert data.skipped.examples["album_not_in_split_file"] == [A5, A6]
  assert data.skipped.counts["review_not_in_split_file"] == 2
  assert [r.id for r in data.reviews] == ["review0000001", "review0000002", "review0000003"]
  tsv = tmp_path / "split.tsv"
  tsv.write_text(f'album_id\tsplit\n"{A1}"\tdev\n{A6}\ttrain\n{A2}\ttest\n')
  assert mard.read(tree, split_file=str(tsv)).album_splits == {A1: "valid", A2: "test",
                                                               A6: "train"}


@pytest.mark.parametrize("text,message", [
    (f"amazon-id,split\n{A1},train\nB000000077,test\n",
     r"split.csv, line 3: album 'B000000077' is not in .*mard_metadata.json"),
    (f"amazon-id,split\n{A1},holdout\n", r"split.csv, line 2: split 'holdout' is not one of"),
    (f"amazon-id,split\n{A1},train,extra\n", r"split.csv, line 2: 3 fields where the header has 2"),
    (f"amazon-id,split\n{A1},train\n{A1},test\n", r"split.csv, line 3: album 'B000000001' is put "
     r"in both 'train' \(line 2\) and 'test'"),
    (f"id,fold\n{A1},train\n", r"split.csv: header .* needs a 'split' column"),
    ("", "split.csv is empty"),
])
def test_bad_split_files_name_the_file_and_line(tree, tmp_path, text, message):
  path = tmp_path / "split.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    mard.read(tree, split_file=str(path))


def test_missing_layout_is_explained(tmp_path):
  with pytest.raises(FileNotFoundError, match="mard_metadata.json does not exist. A MARD folder"):
    mard.read(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="split file"):
    mard.read(_write_tree(tmp_path / "m"), split_file=str(tmp_path / "nope.csv"))


def test_split_albums_sizes_and_determinism():
  rng = np.random.default_rng(0)
  counts = {f"B{i:09d}": int(rng.integers(1, 30)) for i in range(200)}
  total, biggest = sum(counts.values()), max(counts.values())
  split = mard.split_albums(counts)
  assert set(split) == set(counts)
  held = collections.Counter()
  for album, s in split.items():
    held[s] += counts[album]
  assert 0.1 * total <= held["test"] < 0.1 * total + biggest and held["valid"] == 0
  assert mard.split_albums(dict(reversed(list(counts.items())))) == split  # order-free
  assert mard.split_albums(counts, seed=1) != split
  three = mard.split_albums(counts, test_fraction=0.2, valid_fraction=0.1, seed=3)
  held = collections.Counter()
  for album, s in three.items():
    held[s] += counts[album]
  assert 0.2 * total <= held["test"] < 0.2 * total + biggest
  assert 0.1 * total <= held["valid"] < 0.1 * total + biggest
  assert mard.split_albums(counts, test_fraction=0.0) == {a: "train" for a in counts}
  with pytest.raises(ValueError, match="take all 2 albums"):
    mard.split_albums({"a": 1, "b": 1}, test_fraction=0.5, valid_fraction=0.4)
  with pytest.raises(ValueError, match="sum must be below 1"):
    mard.split_albums(counts, test_fraction=0.6, valid_fraction=0.4)
  with pytest.raises(ValueError, match="test_fraction=-0.1"):
    mard.split_albums(counts, test_fraction=-0.1)


def test_builtin_world_reviews_flow_through_the_same_structure():
  world = synthetic.SyntheticWorld("tiny", seed=0)
  reviews = world.tables().reviews
  track_ids = [world.track_id(i) for i in range(len(world.recipes))]
  vectors = np.random.default_rng(0).standard_normal((len(track_ids), 140)).astype(np.float32)
  data = mard.from_reviews(track_ids, vectors, features.descriptor_names(), reviews,
                           test_fraction=0.25, seed=2)
  titles = sorted({r.album for r in reviews})
  assert data.album_ids == tuple(titles) and data.source == "synthetic"
  assert data.reviews == tuple(reviews)  # the world's reviews already list their album's tracks
  assert sorted(data.track_ids) == sorted(track_ids) and data.skipped.total == 0
  for t, k in zip(data.track_ids, data.track_album):
    album = world.recipes[track_ids.index(t)].album
    assert world._album_titles[album] == data.album_ids[k]
    np.testing.assert_array_equal(data.features[data.track_ids.index(t)],
                                  vectors[track_ids.index(t)])
  # The world splits songs per piece, so albums straddle its splits; here albums stay whole.
  assert any(len({world.splits[track_ids.index(t)] for t in r.track_ids}) > 1 for r in reviews)
  test = data.split("test")
  counts = collections.Counter(r.album for r in reviews)
  assert 0.25 * len(reviews) <= len(test.reviews) < 0.25 * len(reviews) + max(counts.values())
  assert not set(test.track_ids) & set(data.split("train").track_ids)


def test_from_reviews_refuses_inconsistent_input():
  names = ("f0", "f1")
  vectors = np.zeros((2, 2), np.float32)
  with pytest.raises(ValueError, match="names no album"):
    mard.from_reviews(["t0", "t1"], vectors, names, [records.Review("r", ("t0",), "x")])
  with pytest.raises(ValueError, match="item 't0' is named by reviews of album 'a' and of album"):
    mard.from_reviews(["t0", "t1"], vectors, names, [records.Review("r", ("t0",), "x", "a"),
                                                     records.Review("s", ("t0",), "y", "b")])
  with pytest.raises(ValueError, match="NaN"):
    mard.from_reviews(["t0", "t1"], np.full((2, 2), np.nan, np.float32), names, [])
  with pytest.raises(ValueError, match="split_of has no split"):
    mard.from_reviews(["t0", "t1"], vectors, names, [records.Review("r", ("t0",), "x", "a"),
                                                     records.Review("s", ("t1",), "y", "b")],
                      split_of={"a": "train"})
  data = mard.from_reviews(["t0", "t1", "t2"], np.zeros((3, 2), np.float32), names,
                           [records.Review("r", ("t0", "t1"), "x", "a"),
                            records.Review("s", ("t9",), "y", "a"),
                            records.Review("u", ("t1",), " ", "a")],
                           split_of={"a": "train"})
  assert dict(data.skipped.counts) == {"review_without_features": 1, "empty_text": 1,
                                       "track_without_reviews": 1}
  assert data.track_ids == ("t0", "t1") and data.reviews[0].track_ids == ("t0", "t1")
