"""Tests for musemb.data.sources.msd on a small MSD tree in the published layouts.

The fixture writes unique_tracks.txt as released (`<SEP>`-separated, no header) with a few malformed
rows, a real SQLite lastfm_tags.db with the Last.fm dataset's schema (tids, tags, tid_tag holding
rowids and a score), and real MP3 previews (libsndfile writes MPEG Layer III) at the 7digital
layout's paths, one of them missing.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from musemb.data import builders
from musemb.data import prepared as prepared_lib
from musemb.data import pipeline
from musemb.data.sources import folder
from musemb.data.sources import msd
from musemb.data.sources import records

# (track id, song id, artist, title) as in unique_tracks.txt.
CATALOGUE = [
    ("TRAAAAK128F9318786", "SOBLFFE12AF72AA5BA", "Adelitas Way", "Scream"),
    ("TRAAAAV128F421A322", "SOQPWCR12A6D4FB2A3", "Adelitas Way", "Invincible"),
    ("TRAAABD128F429CF47", "SOCIWDW12A8C13D406", "The Box Tops", "Soul Deep"),
    ("TRBBACN128F9355673", "SOXVLOJ12AB0189215", "The Box Tops", "Neon Rainbow"),
    ("TRBBAEA128F935A30D", "SOBONFF12A6D4F84D8", "Björk", "Hyperballad"),
    ("TRCCAED128E0783FAB", "SODUJBS12A8C132150", "BJÖRK", "Isobel"),
    ("TRCCAEF128F4273421", "SOPEGZP12AC468B5D0", "", "Untitled"),
    ("TRDDAEM128F93347B9", "SOHNDLH12AB0186D62", "Rated R", "Keepin It Real"),
    ("TRDDAFD128F92F423A", "SOBRHVR12A8C133F35", "Tweeterfriendly Music", "Drop of Rain"),
]
IDS = [row[0] for row in CATALOGUE]
NO_ARTIST = "TRCCAEF128F4273421"
NO_PREVIEW = "TRDDAEM128F93347B9"
NOT_IN_CATALOGUE = "TRZZZZZ128F0000001"   # in the tags database only
MALFORMED_ROWS = [
    "TRBROKEN1234567890<SEP>SOBROKEN<SEP>only three fields",          # bad_row
    "<SEP>SOEMPTYID12A8C13D4<SEP>Somebody<SEP>Something",             # bad_row (empty id)
    "TRAAAAK128F9318786<SEP>SODUPLICATE12A8C1<SEP>Someone<SEP>Else",  # duplicate_id
    "TRSHORT<SEP>SOSHORT12A8C13D406<SEP>Somebody<SEP>Short id",       # bad_track_id
]
# Last.fm scores in [0, 100]; a tag counts when its score is above 50.
SCORES = {
    "TRAAAAK128F9318786": {"rock": 100, "alternative rock": 80, "00s": 50},
    "TRAAAAV128F421A322": {"rock": 90, "alternative rock": 51},
    "TRAAABD128F429CF47": {"oldies": 100, "soul": 70, "rock": 40},
    "TRBBACN128F9355673": {"oldies": 60, "rock": 55},
    "TRBBAEA128F935A30D": {"electronic": 100, "female vocalists": 90},
    "TRCCAED128E0783FAB": {"electronic": 70, "female vocalists": 50},
    "TRDDAEM128F93347B9": {"rock": 100},
    "TRDDAFD128F92F423A": {"chillout": 20},
    NOT_IN_CATALOGUE: {"electronic": 100, "rock": 100},
}
# Tracks per carried tag: rock 5 (incl. the missing preview and the uncatalogued track),
# electronic 3, alternative rock 2, oldies 2 (tie: name order), female vocalists 1, soul 1.
VOCABULARY = ["rock", "electronic", "alternative rock", "oldies", "female vocalists", "soul"]
EXPECTED_TAGS = {
    "TRAAAAK128F9318786": ["rock", "alternative rock"],   # "00s" scores exactly 50: not carried
    "TRAAAAV128F421A322": ["rock", "alternative rock"],
    "TRAAABD128F429CF47": ["oldies", "soul"],
    "TRBBACN128F9355673": ["rock", "oldies"],
    "TRBBAEA128F935A30D": ["electronic", "female vocalists"],
    "TRCCAED128E0783FAB": ["electronic"],
    "TRCCAEF128F4273421": [],
    "TRDDAFD128F92F423A": [],
}
SOURCE_SKIPS = {"bad_row": 2, "duplicate_id": 1, "bad_track_id": 1, "bad_tag_row": 1,
                "missing_preview": 1, "no_artist": 1}


def write_catalogue(path, rows, extra_lines=()) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(msd.listening.MSD_SEP.join(row) + "\n")
    for line in extra_lines:
      f.write(line + "\n")


def write_tags_db(path, scores, bad_rows=()) -> None:
  """lastfm_tags.db with the schema of the Last.fm dataset's SQLite release."""
  connection = sqlite3.connect(path)
  connection.execute("CREATE TABLE tags (tag TEXT PRIMARY KEY)")
  connection.execute("CREATE TABLE tids (tid TEXT PRIMARY KEY)")
  connection.execute("CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT)")
  tids = list(scores)
  tags = sorted({tag for per_track in scores.values() for tag in per_track})
  connection.executemany("INSERT INTO tids VALUES (?)", [(t,) for t in tids])
  connection.executemany("INSERT INTO tags VALUES (?)", [(t,) for t in tags])
  connection.executemany("INSERT INTO tid_tag VALUES (?, ?, ?)", [
      (tids.index(tid) + 1, tags.index(tag) + 1, float(val))
      for tid, per_track in scores.items() for tag, val in per_track.items()] + list(bad_rows))
  connection.execute("CREATE INDEX idx_tag_tid ON tid_tag ('tid')")
  connection.execute("CREATE INDEX idx_tag ON tid_tag ('tag')")
  connection.commit()
  connection.close()


def seven_digital_path(root, track_id, suffix=".mp3") -> str:
  return os.path.join(root, track_id[2], track_id[3], track_id[4], track_id + suffix)


@pytest.fixture(scope="module")
def mp3_file(tmp_path_factory) -> str:
  """1.5 s of a 440 Hz tone at 16 kHz as a real MP3, copied to every preview path."""
  assert "MP3" in sf.available_formats(), "libsndfile here cannot write MP3"
  path = tmp_path_factory.mktemp("audio") / "tone.mp3"
  t = np.arange(24000) / 16000
  sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format="MP3")
  return str(path)


@pytest.fixture
def msd_dir(tmp_path, mp3_file) -> str:
  root = tmp_path / "msd"
  root.mkdir()
  write_catalogue(root / msd.CATALOGUE_FILE, CATALOGUE, MALFORMED_ROWS)
  write_tags_db(str(root / msd.TAGS_FILE), SCORES, bad_rows=[(99, 1, 100.0)])  # bad_tag_row
  for track_id in IDS:
    if track_id != NO_PREVIEW:
      path = seven_digital_path(str(root), track_id)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      shutil.copyfile(mp3_file, path)
  return str(root)


def test_fixture_is_the_published_layout(msd_dir):
  with open(os.path.join(msd_dir, msd.CATALOGUE_FILE), encoding="utf-8") as f:
    assert f.readline() == ("TRAAAAK128F9318786<SEP>SOBLFFE12AF72AA5BA<SEP>Adelitas Way<SEP>"
                            "Scream\n")
  connection = sqlite3.connect(os.path.join(msd_dir, msd.TAGS_FILE))
  assert connection.execute("SELECT tid FROM tids WHERE ROWID = 1").fetchone() == (IDS[0],)
  assert connection.execute("SELECT COUNT(*) FROM tid_tag").fetchone() == (19,)
  connection.close()
  assert os.path.isfile(os.path.join(msd_dir, "A", "A", "A", "TRAAAAK128F9318786.mp3"))


def test_tracks_tags_artists_and_skips(msd_dir):
  source = msd.MillionSongDataset(msd_dir)
  assert source.name == "msd"
  assert source.tag_names == VOCABULARY
  tracks = {t.id: t for t in source.tracks()}
  assert list(tracks) == [t for t in IDS if t != NO_PREVIEW]  # catalogue order
  for track_id, _, artist, title in CATALOGUE:
    if track_id == NO_PREVIEW:
      continue
    track = tracks[track_id]
    assert track.tags == EXPECTED_TAGS[track_id], track_id
    assert track.artists == ([artist] if artist else [])
    assert track.title == title and track.album is None
    assert track.audio_path == seven_digital_path(msd_dir, track_id)
  assert source.artist_names == sorted(
      {"Adelitas Way", "The Box Tops", "Björk", "BJÖRK", "Tweeterfriendly Music"})
  assert dict(source.skipped.counts) == SOURCE_SKIPS
  assert source.skipped.examples["missing_preview"] == [seven_digital_path(msd_dir, NO_PREVIEW)]
  assert source.coverage.as_dict() == {
      "catalogue_tracks": 9, "with_preview": 8, "with_lastfm_tags": 8, "with_vocabulary_tags": 7,
      "with_preview_and_vocabulary_tags": 6, "tracks": 8, "tracks_with_vocabulary_tags": 6,
      "by_split": {s: sum(t.split == s for t in tracks.values()) for s in records.SPLITS}}
  assert "8 have a preview" in source.description()


def test_vocabulary_size_and_score_threshold(msd_dir):
  source = msd.MillionSongDataset(msd_dir, top_n_tags=3)
  assert source.tag_names == ["rock", "electronic", "alternative rock"]
  tracks = {t.id: t for t in source.tracks()}
  assert tracks["TRAAABD128F429CF47"].tags == []            # kept with no tag of the top 3
  assert tracks["TRBBACN128F9355673"].tags == ["rock"]
  # Below the usual threshold, the two tags scored exactly 50 count too; 40 stays out.
  source = msd.MillionSongDataset(msd_dir, top_n_tags=None, min_tag_score=49.5)
  tracks = {t.id: t for t in source.tracks()}
  assert tracks["TRAAAAK128F9318786"].tags == ["rock", "alternative rock", "00s"]
  assert tracks["TRCCAED128E0783FAB"].tags == ["electronic", "female vocalists"]
  assert "rock" not in tracks["TRAAABD128F429CF47"].tags
  assert source.tag_names == ["rock", "electronic", "alternative rock", "female vocalists",
                              "oldies", "00s", "soul"]
  assert "chillout" not in msd.MillionSongDataset(msd_dir, top_n_tags=None).tag_names
  assert "chillout" in msd.MillionSongDataset(msd_dir, top_n_tags=None,
                                              min_tag_score=0).tag_names


def test_tagged_only_leaves_out_untagged_tracks(msd_dir):
  source = msd.MillionSongDataset(msd_dir, tagged_only=True)
  assert [t.id for t in source.tracks()] == [t for t, tags in EXPECTED_TAGS.items() if tags]
  assert source.skipped.counts["untagged"] == 2
  assert source.skipped.counts["missing_preview"] == 1
  assert "no_artist" not in source.skipped.counts   # the artistless track is untagged too


def test_path_patterns(tmp_path, mp3_file):
  assert msd.preview_path(msd.DEFAULT_PATH_PATTERN, "/data", "TRAAAAK128F9318786") == (
      "/data/A/A/A/TRAAAAK128F9318786.mp3")
  assert msd.preview_path("{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.clip.mp3", "/d",
                          "TRAAAAK128F9318786") == "/d/A/A/A/TRAAAAK128F9318786.clip.mp3"
  assert msd.preview_path("flac/{song_id}/{tid}.flac", "/d", "TRAAAAK128F9318786",
                          "SOBLFFE12AF72AA5BA") == (
                              "/d/flac/SOBLFFE12AF72AA5BA/TRAAAAK128F9318786.flac")
  root = tmp_path / "msd"
  audio = tmp_path / "previews"
  root.mkdir()
  write_catalogue(root / msd.CATALOGUE_FILE, CATALOGUE[:3])
  write_tags_db(str(root / msd.TAGS_FILE), {IDS[0]: {"rock": 100}})
  # .clip.mp3 previews kept in another directory; one of them under the plain .mp3 name only.
  for track_id in IDS[:3]:
    path = seven_digital_path(str(audio), track_id, ".clip.mp3" if track_id != IDS[1] else ".mp3")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(mp3_file, path)
  source = msd.MillionSongDataset(str(root), audio_dir=str(audio), path_pattern=(
      "{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.clip.mp3"))
  assert [t.audio_path for t in source.tracks()] == [
      seven_digital_path(str(audio), t, ".clip.mp3") for t in (IDS[0], IDS[2])]
  assert source.skipped.counts["missing_preview"] == 1
  # A FLAC preview at a relative pattern with the song id.
  flac = root / "flac" / CATALOGUE[0][1] / f"{IDS[0]}.flac"
  flac.parent.mkdir(parents=True)
  sf.write(flac, np.zeros(16000, np.float32), 16000, format="FLAC")
  source = msd.MillionSongDataset(str(root), path_pattern="flac/{song_id}/{tid}.flac")
  assert [t.audio_path for t in source.tracks()] == [str(flac)]
  # Nothing at the pattern at all is an error that shows where it looked.
  with pytest.raises(FileNotFoundError, match=r"No preview .* looked for e\.g\. .*A/A/A/TRAAAAK"):
    msd.MillionSongDataset(str(root))


@pytest.mark.parametrize("pattern, message", [
    ("{root}/{tid[2]}/{track}.mp3", r"fields \['track'\]"),
    ("{root}/{}.mp3", r"fields \[''\]"),
    ("{root}/{tid.lower}.mp3", r"fields \['tid.lower'\]"),
    ("{root}/{song_id}.mp3", r"does not use \{tid\}"),
    ("{root}/{tid[20]}/{tid}.mp3", "cannot be expanded"),
    ("{root}/{tid.mp3", "not a valid format string"),
])
def test_bad_path_patterns(msd_dir, pattern, message):
  with pytest.raises(ValueError, match=message):
    msd.MillionSongDataset(msd_dir, path_pattern=pattern)


def test_artist_split_keeps_each_artist_in_one_split(msd_dir):
  source = msd.MillionSongDataset(msd_dir, seed=3)
  for track in source.tracks():
    artist = track.artists[0] if track.artists else None
    assert track.split == folder.hash_split(
        f"artist:{artist.casefold()}" if artist else f"track:{track.id}", (0.8, 0.1, 0.1), 3)
  splits = {t.id: t.split for t in source.tracks()}
  assert splits["TRBBAEA128F935A30D"] == splits["TRCCAED128E0783FAB"]  # Björk == BJÖRK


def test_artist_split_fractions_on_a_larger_catalogue(tmp_path):
  """300 artists x 2 tracks; the source only stats previews, so empty files will do."""
  root = tmp_path / "msd"
  root.mkdir()
  rows = [(f"TRA{a:05d}{k}128F93187", f"SO{a:05d}{k}12AF72AA5B", f"Artist {a}", f"Song {k}")
          for a in range(300) for k in range(2)]
  write_catalogue(root / msd.CATALOGUE_FILE, rows)
  write_tags_db(str(root / msd.TAGS_FILE), {rows[0][0]: {"rock": 100}})
  for row in rows:
    path = seven_digital_path(str(root), row[0])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
  for seed in (0, 1):
    source = msd.MillionSongDataset(str(root), split_ratios=(0.6, 0.2, 0.2), seed=seed)
    split_of_artist = collections.defaultdict(set)
    for track in source.tracks():
      split_of_artist[track.artists[0]].add(track.split)
    assert len(split_of_artist) == 300
    assert all(len(s) == 1 for s in split_of_artist.values())  # no artist in two splits
    per_split = collections.Counter(s.pop() for s in split_of_artist.values())
    # Binomial(300, 0.2) has sd 6.9: each count lies well within 5 sd of its expectation.
    assert abs(per_split["train"] - 180) < 43 and abs(per_split["valid"] - 60) < 35
    assert source.coverage.by_split == {s: 2 * per_split[s] for s in records.SPLITS}
  first = [t.split for t in msd.MillionSongDataset(str(root), split_ratios=(0.6, 0.2, 0.2))
           .tracks()]
  again = [t.split for t in msd.MillionSongDataset(str(root), split_ratios=(0.6, 0.2, 0.2))
           .tracks()]
  assert first == again
  with pytest.raises(ValueError, match="split_ratios"):
    msd.MillionSongDataset(str(root), split_ratios=(0.5, 0.2, 0.2))


def test_split_file_is_honoured(msd_dir, tmp_path):
  path = tmp_path / "split.tsv"
  path.write_text("track_id\tsplit\n"
                  f"{IDS[0]}\ttrain\n{IDS[1]}\tVAL\n\n# a comment\n{IDS[2]}\ttest\n"
                  f"{IDS[4]}\tvalidation\n{NO_PREVIEW}\ttest\nTRZZZZZ128F0000009\ttrain\n")
  source = msd.MillionSongDataset(msd_dir, split_file=str(path))
  assert {t.id: t.split for t in source.tracks()} == {
      IDS[0]: "train", IDS[1]: "valid", IDS[2]: "test", IDS[4]: "valid"}
  assert source.skipped.counts["not_in_split_file"] == 4      # 3, 5, 6 and 8
  assert source.skipped.counts["missing_preview"] == 1
  assert source.skipped.examples["split_file_unknown_track"] == ["TRZZZZZ128F0000009"]
  assert "no_artist" not in source.skipped.counts            # the artistless track is not listed
  assert source.coverage.by_split == {"train": 1, "valid": 2, "test": 1}

  # Choi et al.'s published lists, one MSD id per line, read from their directory as they are.
  choi = tmp_path / "MSD_split_for_tagging"
  choi.mkdir()
  (choi / "train_x_msd_id.txt").write_text(f"{IDS[0]}\n{IDS[3]}\n")
  (choi / "valid_x_msd_id.txt").write_text(f"{IDS[1]}\n")
  (choi / "test_x_msd_id.txt").write_text(f"{IDS[2]}\n{IDS[5]}\n")
  assert msd.read_split_file(str(choi)) == {IDS[0]: "train", IDS[3]: "train", IDS[1]: "valid",
                                            IDS[2]: "test", IDS[5]: "test"}
  plain = tmp_path / "plain"
  plain.mkdir()
  for split in records.SPLITS:
    (plain / f"{split}.txt").write_text((choi / f"{split}_x_msd_id.txt").read_text())
  assert msd.read_split_file(str(plain)) == msd.read_split_file(str(choi))
  assert msd.split_file_digest(str(plain)) == msd.split_file_digest(str(choi))
  (plain / "test.txt").write_text(f"{IDS[2]}\n")
  assert msd.split_file_digest(str(plain)) != msd.split_file_digest(str(choi))


@pytest.mark.parametrize("content, message", [
    (f"{IDS[0]}\ttrain\n{IDS[0]}\ttest\n", "both 'train' and 'test'"),
    (f"{IDS[0]}\ttraining\n", "split 'training' is not one of"),
    (f"{IDS[0]},train\n", "1 TAB-separated fields"),
    ("36122424\ttrain\n", "not an MSD track id"),
    ("track_id\tsplit\n", "assigns no track"),
])
def test_split_file_errors(tmp_path, content, message):
  path = tmp_path / "split.tsv"
  path.write_text(content)
  with pytest.raises(ValueError, match=message):
    msd.read_split_file(str(path))


def test_split_directory_errors(tmp_path):
  (tmp_path / "train.txt").write_text(f"{IDS[0]}\n")
  (tmp_path / "test.txt").write_text(f"{IDS[1]}\n")
  with pytest.raises(FileNotFoundError, match=r"not \['valid.txt'\]"):
    msd.read_split_file(str(tmp_path))
  (tmp_path / "valid.txt").write_text(f"{IDS[0]}\n")
  with pytest.raises(ValueError, match="also in the 'train' list"):
    msd.read_split_file(str(tmp_path))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="none of the split lists"):
    msd.read_split_file(str(empty))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    msd.read_split_file(str(tmp_path / "no_such_split.tsv"))


def test_missing_inputs_are_clear_errors(msd_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="unique_tracks.txt"):
    msd.MillionSongDataset(msd_dir, catalogue=str(tmp_path / "unique_tracks.txt"))
  with pytest.raises(FileNotFoundError, match="lastfm_tags.db"):
    msd.MillionSongDataset(msd_dir, tags_db=str(tmp_path / "lastfm_tags.db"))
  empty = tmp_path / "empty"
  empty.mkdir()
  write_catalogue(empty / "unique_tracks.txt", [], MALFORMED_ROWS[:2])
  with pytest.raises(ValueError, match="no usable row"):
    msd.MillionSongDataset(msd_dir, catalogue=str(empty / "unique_tracks.txt"))
  with pytest.raises(ValueError, match="min_tag_score"):
    msd.MillionSongDataset(msd_dir, min_tag_score=float("nan"))


def test_prepare_end_to_end(msd_dir, tmp_path):
  source = msd.MillionSongDataset(msd_dir)
  dataset_dir = builders.prepare(source, tmp_path / "data",
                                 max_seconds=msd.DEFAULT_CLIP_SECONDS, num_workers=2)
  # The thesis' settings are the builder's predefined default config.
  assert dataset_dir == str(tmp_path / "data" / "musemb_msd" / "top50-16k-max20s" / "1.0.0")
  assert builders.MusembMsd.DEFAULT_CONFIG_NAME == "top50-16k-max20s"
  assert builders.MsdConfig(name="x").path_pattern == msd.DEFAULT_PATH_PATTERN
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert prepared.source == "msd" and prepared.sample_rate == msd.DEFAULT_SAMPLE_RATE
  assert prepared.tag_names == VOCABULARY
  assert prepared.options == {
      "sample_rate": 16000, "max_seconds": 20.0, "min_seconds": 1.0, "top_n_tags": 50,
      "min_tag_score": 50.0, "tagged_only": False, "split_file": None,
      "split_ratios": [0.8, 0.1, 0.1], "seed": 0}
  assert prepared.skipped["source"]["by_reason"] == SOURCE_SKIPS
  assert prepared.builder.info.metadata["coverage"] == source.coverage.as_dict()
  with open(os.path.join(dataset_dir, "metadata.json")) as f:
    assert json.load(f)["coverage"]["with_preview"] == 8
  expected_splits = {t.id: t.split for t in source.tracks()}
  seen = {}
  for split in prepared.split_sizes:
    labels = pipeline.read_split(prepared.builder, split)
    for track_id, artists, tags in zip(labels.track_ids, labels.artists, labels.tags):
      seen[track_id] = split
      assert [prepared.tag_names[i] for i in np.flatnonzero(tags)] == EXPECTED_TAGS[track_id]
      artist = CATALOGUE[IDS.index(track_id)][2]
      assert [prepared.artist_names[i] for i in artists] == ([artist] if artist else [])
  assert seen == expected_splits
  example = next(iter(prepared.builder.as_dataset(split="train").as_numpy_iterator()))
  assert abs(len(example["audio"]) - 24000) < 1200   # a 1.5 s preview, shorter than 20 s: whole
  # Prepared by hand from the directory, with the builder's own default config.
  builder = builders.MusembMsd(source_dir=msd_dir, data_dir=str(tmp_path / "by_hand"),
                               num_workers=2)
  builder.download_and_prepare()
  by_hand = prepared_lib.load_prepared(builder.data_dir)
  assert by_hand.config_name == "top50-16k-max20s"
  assert by_hand.split_sizes == prepared.split_sizes
  assert by_hand.builder.info.metadata["coverage"] == source.coverage.as_dict()


def test_config_names_follow_the_options(msd_dir, tmp_path):
  split = tmp_path / "split.tsv"
  split.write_text(f"{IDS[0]}\ttrain\n")
  source = msd.MillionSongDataset(msd_dir, top_n_tags=10, min_tag_score=70, tagged_only=True,
                                  split_file=str(split))
  config = builders.make_config(source, max_seconds=20.0)
  assert config.name == f"top10-score70-tagged-split{msd.split_file_digest(str(split))}-16k-max20s"
  assert config.options()["split_file"] == str(split)
  config = builders.make_config(msd.MillionSongDataset(msd_dir, seed=1))
  assert config.name.startswith("top50-artistsplit") and config.name.endswith("-16k")
