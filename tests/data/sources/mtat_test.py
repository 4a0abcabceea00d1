"""Tests for musemb.data.sources.mtat on a small MagnaTagATune tree in the published layout.

The fixture writes annotations_final.csv and clip_info_final.csv exactly as released (TAB-separated,
every field double-quoted, the release's header order) for 32 clips across the folders 0-f, plus a
few malformed rows, and real MP3 files (libsndfile writes MPEG Layer III) at the mp3 paths.
"""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from musemb.data.sources import mtat
from musemb.data.sources import records

TAGS = ["no voice", "singer", "guitar", "classical", "slow", "techno", "hard rock", "female opera"]
# Which of the 32 well-formed clips (by index) carry each tag. Counts: guitar 10, classical 8,
# slow 6, techno 6 (tie: "slow" sorts first), singer 4, no voice 3, hard rock 2, female opera 0.
TAGGED = {
    "guitar": range(0, 10),
    "classical": range(10, 18),
    "slow": [0, 5, 10, 15, 20, 25],
    "techno": [1, 6, 11, 16, 21, 26],
    "singer": [2, 12, 22, 30],
    "no voice": [3, 13, 23],
    "hard rock": [4, 14],
    "female opera": [],
}
FREQUENCY_ORDER = ["guitar", "classical", "slow", "techno", "singer", "no voice", "hard rock",
                   "female opera"]
ARTISTS = ["American Bach Soloists", "Jacob Heringman", "Tilopa", "Ehren Starks", "Rapoon"]
N_CLIPS = 32
NO_AUDIO = 30        # well-formed row whose MP3 is not on disk
NO_CLIP_INFO = 31    # well-formed row absent from clip_info_final.csv
BAD_CLIP_INFO = 29   # its clip_info row has a missing field


def clip_id(i: int) -> str:
  return str(2 + 3 * i)


def mp3_path(i: int) -> str:
  artist = ARTISTS[i % len(ARTISTS)].lower().replace(" ", "_")
  return f"{i % 16:x}/{artist}-album_{i // 5}-{i:02d}-song_{i}-30-59.mp3"


def expected_tags(i: int) -> set[str]:
  return {tag for tag, clips in TAGGED.items() if i in clips}


def folder_split(i: int) -> str:
  digit = i % 16
  return "train" if digit < 12 else "valid" if digit == 12 else "test"


def write_tsv(path, rows) -> None:
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)


@pytest.fixture(scope="module")
def mp3_bytes(tmp_path_factory) -> str:
  """One tiny real MP3 (0.1 s of a 440 Hz tone at 16 kHz), copied to every clip path."""
  assert "MP3" in sf.available_formats(), "libsndfile here cannot write MP3"
  path = tmp_path_factory.mktemp("audio") / "tone.mp3"
  t = np.arange(1600) / 16000
  sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000, format="MP3")
  return str(path)


@pytest.fixture
def mtat_dir(tmp_path, mp3_bytes) -> str:
  root = tmp_path / "mtat"
  root.mkdir()
  annotations = [["clip_id", *TAGS, "mp3_path"]]
  clip_info = [list(mtat.CLIP_INFO_HEADER)]
  for i in range(N_CLIPS):
    annotations.append([clip_id(i), *("1" if i in TAGGED[t] else "0" for t in TAGS),
                        mp3_path(i)])
    if i == NO_CLIP_INFO:
      continue
    row = [clip_id(i), str(i % 10 + 1), f"Song {i}", ARTISTS[i % len(ARTISTS)],
           f"Album {i // 5}", f"http://example.org/{i}", "30", "59", f"http://example.org/o{i}",
           mp3_path(i)]
    clip_info.append(row[:-2] if i == BAD_CLIP_INFO else row)
  # Malformed annotation rows: a missing field, a tag value that is not 0/1, a path outside the hex
  # folders, and a duplicate of clip 0 whose "female opera" would change the counts if read.
  annotations.append(["900", *["0"] * (len(TAGS) - 1), "0/short_row.mp3"])
  annotations.append(["901", "2", *["0"] * (len(TAGS) - 1), "1/bad_value.mp3"])
  annotations.append(["902", *["0"] * len(TAGS), "g/not_a_hex_folder.mp3"])
  annotations.append([clip_id(0), *("1" if t == "female opera" else "0" for t in TAGS),
                      "0/duplicate.mp3"])
  write_tsv(root / mtat.ANNOTATIONS_FILE, annotations)
  write_tsv(root / mtat.CLIP_INFO_FILE, clip_info)
  for i in range(N_CLIPS):
    if i != NO_AUDIO:
      (root / mp3_path(i)).parent.mkdir(exist_ok=True)
      shutil.copyfile(mp3_bytes, root / mp3_path(i))
  os.makedirs(root / "g", exist_ok=True)
  shutil.copyfile(mp3_bytes, root / "g" / "not_a_hex_folder.mp3")
  return str(root)


def test_fixture_is_the_published_layout(mtat_dir):
  with open(os.path.join(mtat_dir, mtat.ANNOTATIONS_FILE), encoding="utf-8") as f:
    header = f.readline()
  assert header.startswith('"clip_id"\t"no voice"\t"singer"\t') and header.endswith('"mp3_path"\n')
  with open(os.path.join(mtat_dir, mtat.CLIP_INFO_FILE), encoding="utf-8") as f:
    assert f.readline() == ('"clip_id"\t"track_number"\t"title"\t"artist"\t"album"\t"url"\t'
                            '"segmentStart"\t"segmentEnd"\t"original_url"\t"mp3_path"\n')


def test_tags_artists_and_fields_per_clip(mtat_dir):
  source = mtat.MagnaTagATune(mtat_dir, top_n_tags=None)
  assert source.name == "mtat"
  tracks = {t.id: t for t in source.tracks()}
  expected_ids = [clip_id(i) for i in range(N_CLIPS) if i != NO_AUDIO]
  assert list(tracks) == expected_ids
  for i in range(N_CLIPS):
    if i == NO_AUDIO:
      continue
    track = tracks[clip_id(i)]
    assert set(track.tags) == expected_tags(i), i
    assert track.tags == [t for t in FREQUENCY_ORDER if t in expected_tags(i)]
    if i in (NO_CLIP_INFO, BAD_CLIP_INFO):
      assert track.artists == []
      assert track.title is None and track.album is None
    else:
      assert track.artists == [ARTISTS[i % len(ARTISTS)]]
      assert track.title == f"Song {i}" and track.album == f"Album {i // 5}"
    assert track.audio_path == os.path.join(os.path.abspath(mtat_dir), *mp3_path(i).split("/"))
  assert source.artist_names == sorted(ARTISTS)
  # Clips without any tag are kept (24, 27, 28 have none).
  assert tracks[clip_id(24)].tags == []
  # The paths point at the real files.
  assert sf.info(tracks[clip_id(5)].audio_path).samplerate == 16000


def test_top_n_tags_by_frequency_then_name(mtat_dir):
  assert mtat.MagnaTagATune(mtat_dir, top_n_tags=None).tag_names == FREQUENCY_ORDER
  source = mtat.MagnaTagATune(mtat_dir, top_n_tags=3)
  assert source.tag_names == ["guitar", "classical", "slow"]
  tracks = {t.id: t for t in source.tracks()}
  assert len(tracks) == N_CLIPS - 1  # clips outside the top 3 stay
  assert tracks[clip_id(0)].tags == ["guitar", "slow"]
  assert tracks[clip_id(1)].tags == ["guitar"]          # techno is not kept
  assert tracks[clip_id(22)].tags == []                 # singer only
  assert mtat.MagnaTagATune(mtat_dir, top_n_tags=4).tag_names[-1] == "techno"
  assert mtat.MagnaTagATune(mtat_dir).tag_names == FREQUENCY_ORDER  # 50 > 8 tags
  with pytest.raises(ValueError, match="top_n_tags"):
    mtat.MagnaTagATune(mtat_dir, top_n_tags=0)


def test_split_by_folder_digit(mtat_dir):
  source = mtat.MagnaTagATune(mtat_dir)
  for track in source.tracks():
    i = (int(track.id) - 2) // 3
    assert track.split == folder_split(i), track.id
  splits = [t.split for t in source.tracks()]
  # 32 clips over folders 0-f twice; clip 30 (folder e) has no audio.
  assert splits.count("train") == 24 and splits.count("valid") == 2 and splits.count("test") == 5


def test_skip_counts_by_reason(mtat_dir):
  source = mtat.MagnaTagATune(mtat_dir)
  assert dict(source.skipped.counts) == {
      "bad_row": 2, "duplicate_id": 1, "bad_path": 1, "missing_audio_file": 1,
      "bad_clip_info_row": 1, "no_artist": 2}
  assert source.skipped.examples["missing_audio_file"] == [
      os.path.join(os.path.abspath(mtat_dir), *mp3_path(NO_AUDIO).split("/"))]
  assert any("902" in e for e in source.skipped.examples["bad_path"])
  assert "clip_id" not in " ".join(source.skipped.examples["bad_row"])  # header is not a row
  assert source.tables() == records.SourceTables()
  text = source.description()
  assert "31 clips" in text and "8 tags" in text and "5 artists" in text


def test_split_file_by_clip_id_and_by_path(mtat_dir, tmp_path):
  # CSV keyed by clip_id; clip 1 is left out, "val" means valid.
  by_id = tmp_path / "split.csv"
  by_id.write_text("clip_id,split\n" + "".join(
      f"{clip_id(i)},{['train', 'val', 'test'][i % 3]}\n" for i in range(N_CLIPS) if i != 1))
  source = mtat.MagnaTagATune(mtat_dir, split_file=str(by_id))
  got = {t.id: t.split for t in source.tracks()}
  want = {clip_id(i): ["train", "valid", "test"][i % 3] for i in range(N_CLIPS)
          if i not in (1, NO_AUDIO)}
  assert got == want
  assert source.skipped.counts["not_in_split_file"] == 2  # clip 1 and clip 902
  assert "bad_path" not in source.skipped.counts  # folders do not matter with a split file
  # TSV keyed by mp3_path, quoted fields: the clip under folder "g" can now be used.
  by_path = tmp_path / "split.tsv"
  write_tsv(by_path, [["mp3_path", "split"], [mp3_path(0), "test"],
                      ["g/not_a_hex_folder.mp3", "valid"]])
  source = mtat.MagnaTagATune(mtat_dir, split_file=str(by_path))
  assert {t.id: t.split for t in source.tracks()} == {clip_id(0): "test", "902": "valid"}
  # The other 31 well-formed clips (clip 30, without audio, among them) are not listed.
  assert source.skipped.counts["not_in_split_file"] == N_CLIPS - 1


@pytest.mark.parametrize("content, message", [
    ("clip_id,split\n2,training\n", "line 2: split 'training'"),
    ("clip_id,split\n2,train\n2,test\n", "both 'train' and 'test'"),
    ("id,fold\n2,train\n", "needs a 'split' column"),
    ("clip_id,split\n2\n", "line 2: 1 fields"),
])
def test_split_file_errors(mtat_dir, tmp_path, content, message):
  path = tmp_path / "split.csv"
  path.write_text(content)
  with pytest.raises(ValueError, match=message):
    mtat.MagnaTagATune(mtat_dir, split_file=str(path))


def test_audio_dir_elsewhere(mtat_dir, tmp_path):
  audio = tmp_path / "audio"
  os.makedirs(audio)
  for name in os.listdir(mtat_dir):
    if os.path.isdir(os.path.join(mtat_dir, name)):
      shutil.move(os.path.join(mtat_dir, name), audio / name)
  assert mtat.MagnaTagATune(mtat_dir).skipped.counts["missing_audio_file"] == N_CLIPS
  source = mtat.MagnaTagATune(mtat_dir, audio_dir=str(audio))
  assert len(list(source.tracks())) == N_CLIPS - 1
  assert all(t.audio_path.startswith(str(audio) + os.sep) for t in source.tracks())


@pytest.mark.parametrize("name", [mtat.ANNOTATIONS_FILE, mtat.CLIP_INFO_FILE])
def test_missing_metadata_file_is_a_clear_error(mtat_dir, name):
  os.remove(os.path.join(mtat_dir, name))
  with pytest.raises(FileNotFoundError) as error:
    mtat.MagnaTagATune(mtat_dir)
  message = str(error.value)
  assert os.path.join(os.path.abspath(mtat_dir), name) in message
  assert "TAB-separated" in message and "0/ .. f/" in message


def test_comma_separated_annotations_are_rejected(mtat_dir):
  path = os.path.join(mtat_dir, mtat.ANNOTATIONS_FILE)
  with open(path, "w") as f:
    f.write("clip_id,guitar,mp3_path\n2,1,0/a.mp3\n")
  with pytest.raises(ValueError, match="TAB-separated"):
    mtat.MagnaTagATune(mtat_dir)


def test_latin1_clip_info_is_read(mtat_dir):
  path = os.path.join(mtat_dir, mtat.CLIP_INFO_FILE)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  with open(path, "wb") as f:
    f.write(text.replace("Tilopa", "Tilöpa").encode("latin-1"))
  assert "Tilöpa" in mtat.MagnaTagATune(mtat_dir).artist_names
