"""Tests for musemb.data.sources.folder: metadata.csv / metadata.jsonl layouts, splits, skips."""

from __future__ import annotations

import collections
import csv
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from musemb.data.sources import folder
from musemb.data.sources import records


@pytest.fixture(scope="module")
def wav_file(tmp_path_factory) -> str:
  """One tiny real WAV (0.05 s of noise at 8 kHz), copied to every track's path."""
  path = tmp_path_factory.mktemp("audio") / "noise.wav"
  sf.write(path, np.random.default_rng(0).uniform(-0.1, 0.1, 400), 8000)
  return str(path)


def put_audio(root, wav_file, *relative_paths) -> None:
  for rel in relative_paths:
    target = os.path.join(root, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(wav_file, target)


def write_csv(path, rows) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows)


@pytest.fixture
def csv_dir(tmp_path, wav_file) -> str:
  root = tmp_path / "collection"
  outside = tmp_path / "elsewhere" / "t9.wav"
  put_audio(root, wav_file, "a/t1.wav", "a/t2.flac", "b/t3.wav", "b/t4.wav", "t5.wav", "t6.wav",
            "t7.wav", "t8.wav", "dup.wav")
  put_audio(tmp_path, wav_file, "elsewhere/t9.wav")
  write_csv(root / "metadata.csv", [
      ["ID", "Path", "Artists", "Tags", "Split", "Title", "Album"],
      ["t1", "a/t1.wav", "Alpha|Beta", "rock|guitar", "train", "One, with a comma", "First"],
      ["t2", "a/t2.flac", "Alpha", "rock; live ;guitar", "VALID", "", ""],
      ["t3", "b/t3.wav", "Gamma", "jazz|rock|rock", "test", "Three", ""],
      ["t4", "b/t4.wav", "", "jazz", "train", "", ""],                  # no artist: kept
      ["t5", "t5.wav", "Beta", "", "", "", ""],                          # no split: hashed
      ["t6", "t6.wav", "Gamma", "rock", "val", "", ""],
      ["t7", "t7.wav", "Alpha", "ambient", "holdout", "", ""],         # bad split
      ["t8", "t8.wav", "Alpha", "rock", "train", "", ""],
      ["t8", "dup.wav", "Delta", "pop", "train", "", ""],               # duplicate id
      ["t10", "missing.wav", "Alpha", "rock|metal", "train", "", ""],  # no audio; tags count
      ["t11", "t1.wav", "Alpha"],                                        # too few fields
      ["", "t1.wav", "Alpha", "", "", "", ""],                           # empty id
      ["t9", str(outside), "Epsilon", "Rock", "test", "", ""],          # absolute path
  ])
  return str(root)


def test_csv_rows_parsed(csv_dir):
  source = folder.AudioFolder(csv_dir)
  assert source.name == "folder"
  tracks = {t.id: t for t in source.tracks()}
  assert list(tracks) == ["t1", "t2", "t3", "t4", "t5", "t6", "t8", "t9"]
  # Tag counts over the well-formed unique rows (t10 included although its audio is missing):
  # rock 6, guitar 2, jazz 2, live 1, metal 1, Rock 1. "ambient" (t7, bad split) and "pop"
  # (duplicate t8) are not counted.
  assert source.tag_names == ["rock", "guitar", "jazz", "Rock", "live", "metal"]
  assert tracks["t1"].artists == ["Alpha", "Beta"] and tracks["t1"].tags == ["rock", "guitar"]
  assert tracks["t1"].title == "One, with a comma" and tracks["t1"].album == "First"
  assert tracks["t2"].tags == ["rock", "guitar", "live"] and tracks["t2"].split == "valid"
  assert tracks["t2"].title is None and tracks["t2"].album is None
  assert tracks["t3"].tags == ["rock", "jazz"] and tracks["t3"].split == "test"
  assert tracks["t4"].artists == []
  assert tracks["t5"].tags == [] and tracks["t5"].split == folder.hash_split("t5")
  assert tracks["t6"].split == "valid"
  assert tracks["t8"].artists == ["Alpha"] and tracks["t8"].tags == ["rock"]
  assert tracks["t9"].audio_path == os.path.join(os.path.dirname(csv_dir), "elsewhere", "t9.wav")
  assert tracks["t1"].audio_path == os.path.join(csv_dir, "a", "t1.wav")
  assert source.artist_names == ["Alpha", "Beta", "Epsilon", "Gamma"]
  assert dict(source.skipped.counts) == {
      "bad_split": 1, "duplicate_id": 1, "missing_audio_file": 1, "bad_row": 2, "no_artist": 1}
  assert source.tables() == records.SourceTables()
  assert "8 tracks" in source.description()


def test_top_n_tags(csv_dir):
  source = folder.AudioFolder(csv_dir, top_n_tags=2)
  assert source.tag_names == ["rock", "guitar"]
  tracks = {t.id: t for t in source.tracks()}
  assert tracks["t3"].tags == ["rock"] and tracks["t9"].tags == []
  with pytest.raises(ValueError, match="top_n_tags"):
    folder.AudioFolder(csv_dir, top_n_tags=-1)


JSONL_LINES = [
    {"id": "j1", "path": "j1.wav", "artists": ["A; B", "C"], "tags": ["x|y", "z"],
     "split": "train", "title": "J one"},
    {"id": 2, "path": "j2.wav", "artist": "Solo Artist", "tags": "single tag"},
    {"id": "j3", "path": "j3.wav", "artist": "C", "tags": [], "split": None, "album": "LP"},
    {"id": "j4", "path": "j4.wav", "artist": "C", "artists": ["D"]},     # both keys
    {"id": "j5", "path": "j4.wav", "artists": [1, 2]},                   # not strings
    {"path": "j4.wav", "artists": ["C"]},                                  # no id
    {"id": "j6", "path": "j4.wav", "artists": ["C"], "split": "dev"},    # bad split
    {"id": "j3", "path": "j4.wav", "artists": ["C"]},                     # duplicate id
]


@pytest.fixture
def jsonl_dir(tmp_path, wav_file) -> str:
  root = tmp_path / "jsonl"
  put_audio(root, wav_file, "j1.wav", "j2.wav", "j3.wav", "j4.wav")
  lines = [json.dumps(obj) for obj in JSONL_LINES]
  lines.insert(2, "")                  # blank lines are not rows
  lines.insert(3, "{not json")
  lines.insert(4, '["a", "list"]')
  (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(root)


def test_jsonl_rows_parsed(jsonl_dir):
  source = folder.AudioFolder(jsonl_dir)
  tracks = {t.id: t for t in source.tracks()}
  assert list(tracks) == ["j1", "2", "j3"]
  # In JSONL a string is one item: "A; B" and "x|y" are not split.
  assert tracks["j1"].artists == ["A; B", "C"] and tracks["j1"].tags == ["x|y", "z"]
  assert tracks["j1"].title == "J one" and tracks["j1"].split == "train"
  assert tracks["2"].artists == ["Solo Artist"] and tracks["2"].tags == ["single tag"]
  assert tracks["2"].split == folder.hash_split("2")
  assert tracks["j3"].album == "LP" and tracks["j3"].split == folder.hash_split("j3")
  assert source.artist_names == ["A; B", "C", "Solo Artist"]
  assert dict(source.skipped.counts) == {"bad_row": 5, "bad_split": 1, "duplicate_id": 1}
  assert any("line 4" in e and "invalid JSON" in e for e in source.skipped.examples["bad_row"])


def test_metadata_detection_and_errors(csv_dir, jsonl_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="neither metadata.csv nor metadata.jsonl"):
    folder.AudioFolder(str(tmp_path))
  shutil.copyfile(os.path.join(jsonl_dir, "metadata.jsonl"), os.path.join(csv_dir,
                                                                           "metadata.jsonl"))
  with pytest.raises(ValueError, match="both metadata.csv and metadata.jsonl"):
    folder.AudioFolder(csv_dir)
  # metadata= picks one (relative to the folder, or absolute).
  assert len(list(folder.AudioFolder(csv_dir, metadata="metadata.csv").tracks())) == 8
  only_jsonl = folder.AudioFolder(csv_dir, metadata=os.path.join(csv_dir, "metadata.jsonl"))
  assert {t.id for t in only_jsonl.tracks()} == set()  # j*.wav are not in csv_dir
  assert only_jsonl.skipped.counts["missing_audio_file"] == 3
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    folder.AudioFolder(csv_dir, metadata="nope.csv")
  write_csv(tmp_path / "metadata.csv", [["id", "file", "artist"], ["1", "a.wav", "A"]])
  with pytest.raises(ValueError, match="needs the columns 'id' and 'path'"):
    folder.AudioFolder(str(tmp_path))
  write_csv(tmp_path / "metadata.csv", [["id", "path", "artist", "artists"]])
  with pytest.raises(ValueError, match="exactly one of the columns 'artist' and 'artists'"):
    folder.AudioFolder(str(tmp_path))


def test_hash_split_deterministic_and_proportional():
  ids = [f"track-{i}" for i in range(20000)]
  first = [folder.hash_split(i, (0.7, 0.2, 0.1), seed=3) for i in ids]
  assert first == [folder.hash_split(i, (0.7, 0.2, 0.1), seed=3) for i in ids]
  counts = collections.Counter(first)
  # Binomial standard deviations at n=20000 are at most 0.0033; allow ~5 of them.
  assert abs(counts["train"] / 20000 - 0.7) < 0.016
  assert abs(counts["valid"] / 20000 - 0.2) < 0.016
  assert abs(counts["test"] / 20000 - 0.1) < 0.016
  other_seed = [folder.hash_split(i, (0.7, 0.2, 0.1), seed=4) for i in ids]
  assert 0.4 < np.mean([a != b for a, b in zip(first, other_seed)]) < 0.6
  assert {folder.hash_split(i, (1.0, 0.0, 0.0)) for i in ids[:500]} == {"train"}
  assert {folder.hash_split(i, (0.0, 0.0, 1.0)) for i in ids[:500]} == {"test"}


def test_hash_split_in_a_folder_ignores_row_order(tmp_path, wav_file):
  ids = [f"song{i:03d}" for i in range(60)]
  put_audio(tmp_path, wav_file, *[f"{i}.wav" for i in ids])
  rows = [["id", "path", "artist"]] + [[i, f"{i}.wav", "A"] for i in ids]
  write_csv(tmp_path / "metadata.csv", rows)
  forward = {t.id: t.split for t in folder.AudioFolder(str(tmp_path), seed=7).tracks()}
  write_csv(tmp_path / "metadata.csv", [rows[0]] + rows[:0:-1])
  backward = {t.id: t.split for t in folder.AudioFolder(str(tmp_path), seed=7).tracks()}
  assert forward == backward == {i: folder.hash_split(i, (0.8, 0.1, 0.1), 7) for i in ids}
  assert set(forward.values()) == set(records.SPLITS)
  with pytest.raises(ValueError, match="split_ratios"):
    folder.AudioFolder(str(tmp_path), split_ratios=(0.8, 0.1))
  with pytest.raises(ValueError, match="split_ratios"):
    folder.AudioFolder(str(tmp_path), split_ratios=(0.9, 0.2, -0.1))


def test_artist_similarity(csv_dir):
  with open(os.path.join(csv_dir, folder.SIMILARITY_FILE), "w", encoding="utf-8") as f:
    json.dump({"Alpha": ["Beta", "Nobody", "Gamma", "Beta"], "Stranger": ["Alpha"],
               "Gamma": ["Nobody"], "Beta": ["Alpha"]}, f)
  source = folder.AudioFolder(csv_dir)
  assert source.tables().artist_similarity == {"Alpha": ["Beta", "Gamma"], "Beta": ["Alpha"]}
  assert source.skipped.counts["similarity_unknown_artist"] == 3
  assert sorted(source.skipped.examples["similarity_unknown_artist"]) == [
      "Alpha -> Nobody", "Gamma -> Nobody", "Stranger"]
  # tables() hands out copies.
  source.tables().artist_similarity["Alpha"].append("Mutated")
  assert source.tables().artist_similarity["Alpha"] == ["Beta", "Gamma"]
  with open(os.path.join(csv_dir, folder.SIMILARITY_FILE), "w", encoding="utf-8") as f:
    json.dump({"Alpha": "Beta"}, f)
  with pytest.raises(ValueError, match="artist_similarity.json"):
    folder.AudioFolder(csv_dir)
