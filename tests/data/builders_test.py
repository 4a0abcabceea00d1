"""Tests for musemb.data.builders: prepared TFDS datasets, their metadata, skips and atomicity."""

from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from musemb import audio
from musemb.data import builders
from musemb.data import prepared as prepared_lib
from musemb.data.sources import folder
from musemb.data.sources import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _leftovers(root) -> list[str]:
  """Unfinished builds and spill directories anywhere under root."""
  found = []
  for dirpath, dirnames, _ in os.walk(root):
    found += [os.path.join(dirpath, d) for d in dirnames
              if d.startswith("incomplete.") or d.startswith(".musemb-spill-")]
  return found


# ------------------------------------------------------------------------------------------------
# The tiny synthetic world.


@pytest.fixture(scope="module")
def world():
  return synthetic.SyntheticWorld("tiny", seed=0)


@pytest.fixture(scope="module")
def world_dir(world, tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  return str(root), builders.prepare(world, str(root))


def test_synthetic_round_trip(world, world_dir):
  root, dataset_dir = world_dir
  assert dataset_dir == os.path.join(root, "musemb_synthetic", "tiny-16k", "1.0.0")
  builder = tfds.builder_from_directory(dataset_dir)
  tracks = {t.id: t for t in world.tracks()}
  assert {s: int(i.num_examples) for s, i in builder.info.splits.items()} == dict(
      collections.Counter(t.split for t in tracks.values()))

  artist_names = builder.info.features["artists"].feature.names
  assert artist_names == list(world.artist_names)
  assert builder.info.features["tags"].shape == (len(world.tag_names),)
  assert builder.info.features["audio"].sample_rate == 16000
  seen = set()
  for split in builder.info.splits:
    for ex in _examples(builder, split):
      track = tracks[ex["track_id"].decode()]
      seen.add(track.id)
      assert track.split == split
      assert ex["audio"].dtype == np.int16
      expected = np.clip(track.audio, -1.0, 1.0)
      assert ex["audio"].shape == expected.shape
      # int16 storage rounds to the nearest step of 1/32768.
      np.testing.assert_array_less(np.abs(audio.from_int16(ex["audio"]) - expected),
                                   0.5 / 32768 + 1e-7)
      np.testing.assert_array_equal(ex["tags"], [t in track.tags for t in world.tag_names])
      assert [artist_names[i] for i in ex["artists"]] == track.artists
      assert ex["title"].decode() == (track.title or "")
      assert ex["album"].decode() == (track.album or "")
  assert seen == set(tracks)


def test_synthetic_metadata_and_tables(world, world_dir):
  root, dataset_dir = world_dir
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert (prepared.name, prepared.config_name, prepared.version) == (
      "musemb_synthetic", "tiny-16k", "1.0.0")
  assert prepared.source == "synthetic" and prepared.sample_rate == 16000
  assert prepared.tag_names == list(world.tag_names)
  assert prepared.artist_names == list(world.artist_names)
  tables = world.tables()
  assert prepared.artist_similarity == {k: list(v) for k, v in tables.artist_similarity.items()}
  assert prepared.skipped["source"] == world.skipped.as_dict()
  assert all(s["total"] == 0 for s in prepared.skipped["audio"].values())
  assert sum(prepared.split_sizes.values()) == len(list(world.tracks()))
  # The side tables come back as the records types, row for row.
  read = prepared.tables()
  assert read.playlists == list(tables.playlists) and read.playlists
  assert read.plays == list(tables.plays) and read.plays
  assert read.reviews == list(tables.reviews) and read.reviews
  assert "tiny-16k" in prepared.summary() and "audio skipped: none" in prepared.summary()
  # The TFDS name works where the builder classes are imported, without a source.
  by_name = tfds.builder("musemb_synthetic/tiny-16k", data_dir=root)
  assert by_name.info.splits["train"].num_examples == prepared.split_sizes["train"]
  assert by_name.info.metadata["tag_names"] == prepared.tag_names
  assert prepared_lib.find_dataset_dir(root) == dataset_dir
  assert prepared_lib.find_dataset_dir(root, "synthetic") == dataset_dir
  with pytest.raises(FileNotFoundError, match="launch.prepare"):
    prepared_lib.find_dataset_dir(root, "mtat")


def test_prepare_reuses_and_refuses_other_options(world, world_dir):
  root, dataset_dir = world_dir
  info = os.path.join(dataset_dir, "dataset_info.json")
  mtime = os.path.getmtime(info)
  assert builders.prepare(world, root) == dataset_dir
  assert os.path.getmtime(info) == mtime  # reused, not rebuilt
  with pytest.raises(ValueError, match="was prepared with options"):
    builders.prepare(world, root, min_seconds=0.5, config_name="tiny-16k")
  with pytest.raises(ValueError, match="reserved"):
    builders.prepare(world, root, min_seconds=0.5, config_name="demo-16k")


# ------------------------------------------------------------------------------------------------
# Audio on disk: resampling, skips, the bad-fraction limit, atomicity.


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _make_folder(root, n_good: int = 8, bad: bool = True) -> str:
  """n_good 1.2 s tones at 8 kHz (train and test), plus a corrupt, an empty and a short file."""
  os.makedirs(root, exist_ok=True)
  rows = [["id", "path", "artists", "tags", "split"]]
  for i in range(n_good):
    name = f"good{i}.wav"
    sf.write(os.path.join(root, name), _tone(1.2, 8000, 200.0 + 50 * i), 8000)
    rows.append([f"g{i}", name, f"artist{i % 3}", "calm" if i % 2 else "loud|calm",
                 "test" if i % 4 == 3 else "train"])
  if bad:
    with open(os.path.join(root, "corrupt.wav"), "wb") as f:
      f.write(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(range(200)))
    open(os.path.join(root, "empty.wav"), "wb").close()
    sf.write(os.path.join(root, "short.wav"), _tone(0.3, 8000), 8000)
    rows += [["bad_corrupt", "corrupt.wav", "artist0", "loud", "train"],
             ["bad_empty", "empty.wav", "artist1", "loud", "train"],
             ["bad_short", "short.wav", "artist2", "loud", "train"]]
  with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return str(root)


def test_folder_skips_are_counted_by_reason(tmp_path):
  source = folder.AudioFolder(_make_folder(tmp_path / "raw"))
  dataset_dir = builders.prepare(source, tmp_path / "data", max_bad_fraction=0.5)
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert prepared.split_sizes == {"train": 6, "test": 2}
  train = prepared.skipped["audio"]["train"]
  assert train["total"] == 3
  assert train["by_reason"] == {"unreadable": 1, "empty": 1, "too_short": 1}
  assert train["examples"]["empty"] == [str(tmp_path / "raw" / "empty.wav")]
  assert prepared.skipped["audio"]["test"]["total"] == 0
  # Audio is resampled from 8 kHz to 16 kHz exactly as musemb.audio does it.
  for ex in _examples(prepared.builder, "train"):
    track_id = ex["track_id"].decode()
    expected = audio.load_audio(tmp_path / "raw" / f"good{track_id[1:]}.wav", 16000)
    assert len(ex["audio"]) == len(expected) == 19200
    np.testing.assert_array_equal(ex["audio"], audio.to_int16(expected))
  assert prepared.tables().playlists == []
  assert "unreadable" in prepared.summary()


def test_too_many_bad_files_fail_and_leave_nothing(tmp_path):
  source = folder.AudioFolder(_make_folder(tmp_path / "raw"))
  data = tmp_path / "data"
  with pytest.raises(builders.TooManySkippedError) as e:
    builders.prepare(source, data)  # 3 of 9 train tracks are bad, the default allows 5%
  message = str(e.value)
  assert "--max_bad_fraction=0.05" in message
  assert "empty=1" in message and "too_short=1" in message and "unreadable=1" in message
  assert "corrupt.wav" in message
  assert _leftovers(data) == []
  with pytest.raises(FileNotFoundError):
    prepared_lib.find_dataset_dir(data)
  with pytest.raises(Exception):
    tfds.builder_from_directory(str(data / "musemb_folder" / "top50-16k" / "1.0.0"))


def test_crash_mid_build_leaves_nothing_then_rebuild_succeeds(tmp_path, monkeypatch):
  source = folder.AudioFolder(_make_folder(tmp_path / "raw", bad=False))
  data = tmp_path / "data"
  real_decode = builders.decode_track

  written_before_crash = []

  def crash_on_test_split(track, config):
    if track.id == "g3":  # the first test track: the train split is already written by then
      written_before_crash.extend(
          name for d in _leftovers(data) for name in os.listdir(d) if ".tfrecord-" in name)
      raise RuntimeError("disk on fire")
    return real_decode(track, config)

  monkeypatch.setattr(builders, "decode_track", crash_on_test_split)
  with pytest.raises(RuntimeError, match="disk on fire"):
    builders.prepare(source, data)
  assert any(name.startswith("musemb_folder-train.tfrecord") for name in written_before_crash)
  assert _leftovers(data) == []
  with pytest.raises(FileNotFoundError):
    prepared_lib.find_dataset_dir(data)

  monkeypatch.setattr(builders, "decode_track", real_decode)
  dataset_dir = builders.prepare(source, data)
  assert prepared_lib.find_dataset_dir(data) == dataset_dir
  assert prepared_lib.load_prepared(dataset_dir).split_sizes == {"train": 6, "test": 2}


def test_find_dataset_dir_resolution(tmp_path):
  for rel in ("musemb_a/x/1.0.0", "musemb_b/y/1.0.0", "musemb_a/x/incomplete.ABC123_1.0.0"):
    os.makedirs(tmp_path / rel)
    (tmp_path / rel / "dataset_info.json").write_text("{}")
  with pytest.raises(ValueError) as e:
    prepared_lib.find_dataset_dir(tmp_path)
  assert "musemb_a/x/1.0.0" in str(e.value) and "musemb_b/y/1.0.0" in str(e.value)
  assert prepared_lib.find_dataset_dir(tmp_path, "a") == str(tmp_path / "musemb_a" / "x" / "1.0.0")
  # A dataset directory itself resolves to itself.
  assert prepared_lib.find_dataset_dir(tmp_path / "musemb_b/y/1.0.0") == str(
      tmp_path / "musemb_b" / "y" / "1.0.0")
  with pytest.raises(FileNotFoundError, match="No prepared musemb dataset"):
    prepared_lib.find_dataset_dir(tmp_path / "nothing_here")


def test_launcher_prepares_a_folder_with_bof(tmp_path):
  raw = _make_folder(tmp_path / "raw", bad=False)
  data = tmp_path / "data"
  result = subprocess.run(
      [sys.executable, "-m", "launch.prepare", "--source=folder", f"--source_dir={raw}",
       f"--data_dir={data}", "--top_n_tags=0", "--max_seconds=1.0", "--bof", "--n_codewords=8"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  dataset_dir = str(data / "musemb_folder" / "all-16k-max1s" / "1.0.0")
  out = result.stdout.strip().splitlines()
  assert out[-1] == dataset_dir
  assert "tracks: train 6, test 2" in result.stdout
  assert "Bag of frames (K=8" in result.stdout
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert prepared.options["max_seconds"] == 1.0 and prepared.tag_names == ["calm", "loud"]
  for ex in _examples(prepared.builder, "test"):
    assert len(ex["audio"]) == 16000  # cropped to 1 s
  with open(os.path.join(dataset_dir, "metadata.json")) as f:
    assert json.load(f)["options"]["top_n_tags"] is None


def test_missing_audio_files_count_against_max_bad_fraction(tmp_path):
  root = _make_folder(tmp_path / "raw", bad=False)
  for i in range(4):                                   # half of the listed audio is not on disk
    os.remove(os.path.join(root, f"good{i}.wav"))
  source = folder.AudioFolder(root)
  assert source.skipped.counts["missing_audio_file"] == 4
  with pytest.raises(builders.TooManySkippedError, match="missing.*--max_bad_fraction"):
    builders.prepare(source, tmp_path / "data")
  assert _leftovers(tmp_path / "data") == []
  dataset_dir = builders.prepare(folder.AudioFolder(root), tmp_path / "data2", max_bad_fraction=0.6)
  assert prepared_lib.load_prepared(dataset_dir).skipped["source"]["by_reason"]["missing_audio_file"] == 4
