"""Tests for the Apache Beam path of musemb.data.builders: the same dataset as the plain path.

The builds need the optional `beam` extra (`pip install -e '.[beam]'`); without it they skip and
only the checks that need no Beam run. The Beam builds use the DirectRunner with two worker
processes, so that tracks are rendered, decoded and skipped in processes other than the one
that writes the metadata.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from musemb.data import builders
from musemb.data import prepared as prepared_lib
from musemb.data.sources import folder
from musemb.data.sources import synthetic

HAVE_BEAM = importlib.util.find_spec("apache_beam") is not None
needs_beam = pytest.mark.skipif(
    not HAVE_BEAM, reason="apache-beam is not installed (optional `beam` extra: "
                          "pip install -e '.[beam]', see README \"Prepared datasets\")")
TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _records(dataset_dir: str) -> dict[str, list[bytes]]:
  """Every shard's records in file order, re-serialized deterministically.

  Protobuf writes an Example's feature map in an order that changes from process to process, so
  two builds of the same data (plain or not) differ in bytes; the records are compared as the
  Examples they hold, in canonical form.
  """
  out = {}
  for name in sorted(os.listdir(dataset_dir)):
    if ".tfrecord-" in name:
      out[name] = [tf.train.Example.FromString(r.numpy()).SerializeToString(deterministic=True)
                   for r in tf.data.TFRecordDataset(os.path.join(dataset_dir, name))]
  return out


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _assert_same_dataset(plain_dir: str, beam_dir: str) -> None:
  plain, beam = _records(plain_dir), _records(beam_dir)
  assert list(plain) == list(beam) and plain
  for name in plain:
    assert len(plain[name]) == len(beam[name]), name
    assert plain[name] == beam[name], f"{name}: records differ"
  # The metadata (skips included) is the same, key order too.
  assert _read(os.path.join(plain_dir, "metadata.json")) == _read(
      os.path.join(beam_dir, "metadata.json"))
  assert _read(os.path.join(plain_dir, "features.json")) == _read(
      os.path.join(beam_dir, "features.json"))
  plain_info, beam_info = (prepared_lib.load_prepared(d).builder.info for d in (plain_dir, beam_dir))
  assert {s: list(i.shard_lengths) for s, i in plain_info.splits.items()} == {
      s: list(i.shard_lengths) for s, i in beam_info.splits.items()}
  for name in sorted(os.listdir(os.path.join(plain_dir, builders.TABLES_DIR))):
    assert _read(os.path.join(plain_dir, builders.TABLES_DIR, name)) == _read(
        os.path.join(beam_dir, builders.TABLES_DIR, name))
  # Nothing of the Beam build's working files is left in the dataset or beside it.
  assert not os.path.exists(os.path.join(beam_dir, builders._BEAM_WORK_DIR))  # pylint: disable=protected-access
  assert sorted(os.listdir(plain_dir)) == sorted(os.listdir(beam_dir))


# ------------------------------------------------------------------------------------------------
# The tiny world, rendered in two worker processes.


@needs_beam
def test_tiny_world_through_beam_matches_the_plain_path(tiny_dataset_dir, tmp_path):
  world = synthetic.SyntheticWorld("tiny", seed=0)
  beam_dir = builders.prepare(world, tmp_path, beam_runner="DirectRunner",
                              beam_options=TWO_PROCESSES)
  assert os.path.relpath(beam_dir, tmp_path) == os.path.relpath(
      tiny_dataset_dir, os.path.dirname(os.path.dirname(os.path.dirname(tiny_dataset_dir))))
  _assert_same_dataset(tiny_dataset_dir, beam_dir)
  prepared = prepared_lib.load_prepared(beam_dir)
  assert sum(prepared.split_sizes.values()) == len(world.recipes)
  assert all(s["total"] == 0 for s in prepared.skipped["audio"].values())
  # A second prepare reuses it whichever path asks.
  assert builders.prepare(world, tmp_path) == beam_dir


# ------------------------------------------------------------------------------------------------
# Audio files with skips: counted in the workers, merged into the same metadata.


def _tone(seconds: float, rate: int, freq: float) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _make_folder(root) -> str:
  """8 good 1.2 s tones and 8 bad files (7 empty, 1 short) between them, all in train but 2.

  Seven files of one reason, more than the five a SkipCounter keeps as examples, so the merged
  report must keep the five earliest in source order, not any five.
  """
  os.makedirs(root, exist_ok=True)
  rows = [["id", "path", "artists", "tags", "split"]]
  for i in range(8):
    name = f"good{i}.wav"
    sf.write(os.path.join(root, name), _tone(1.2, 8000, 200.0 + 50 * i), 8000)
    rows.append([f"g{i}", name, f"artist{i % 3}", "calm|loud|rare" if i % 2 else "loud",
                 "test" if i % 4 == 3 else "train"])
    name = f"empty{i}.wav" if i < 7 else "short.wav"
    if i < 7:
      open(os.path.join(root, name), "wb").close()
    else:
      sf.write(os.path.join(root, name), _tone(0.3, 8000, 440.0), 8000)
    rows.append([f"bad{i}", name, "artist0", "loud", "train"])
  with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return str(root)


def _folder_source(raw: str) -> folder.AudioFolder:
  source = folder.AudioFolder(raw)
  # The tracks keep tags that the vocabulary lacks, so the dropped-tag counts are exercised too.
  source.tag_names = [t for t in source.tag_names if t != "rare"]
  return source


@needs_beam
def test_skips_counted_in_workers_match_the_plain_path(tmp_path):
  raw = _make_folder(tmp_path / "raw")
  plain_dir = builders.prepare(_folder_source(raw), tmp_path / "plain", max_bad_fraction=0.6)
  beam_dir = builders.prepare(_folder_source(raw), tmp_path / "beam", max_bad_fraction=0.6,
                              beam_runner="DirectRunner", beam_options=TWO_PROCESSES)
  _assert_same_dataset(plain_dir, beam_dir)
  prepared = prepared_lib.load_prepared(beam_dir)
  train = prepared.skipped["audio"]["train"]
  assert train["by_reason"] == {"empty": 7, "too_short": 1}
  assert train["examples"]["empty"] == [os.path.join(raw, f"empty{i}.wav") for i in range(5)]
  assert prepared.skipped["audio"]["test"]["total"] == 0
  outside = prepared.builder.info.metadata["tags_outside_vocabulary"]
  assert outside == {"train": 2, "test": 2}  # "rare" on g1, g5 (train) and g3, g7 (test)
  assert prepared.split_sizes == {"train": 6, "test": 2}


@needs_beam
def test_too_many_skips_fail_the_beam_build_and_leave_nothing(tmp_path):
  raw = _make_folder(tmp_path / "raw")
  data = tmp_path / "data"
  with pytest.raises(builders.TooManySkippedError) as e:
    builders.prepare(_folder_source(raw), data, beam_runner="DirectRunner",
                     beam_options=["--direct_running_mode=in_memory"])
  assert "8 of 14 tracks" in str(e.value) and "empty=7" in str(e.value)
  assert "--max_bad_fraction=0.05" in str(e.value)
  left = [os.path.join(d, n) for d, dirs, _ in os.walk(data) for n in dirs
          if n.startswith("incomplete.") or n == builders._BEAM_WORK_DIR]  # pylint: disable=protected-access
  assert left == []
  with pytest.raises(FileNotFoundError):
    prepared_lib.find_dataset_dir(data)


@needs_beam
def test_direct_runner_defaults_to_local_processes():
  config = builders.beam_download_config("DirectRunner", num_workers=3)
  assert config.beam_runner == "DirectRunner"
  options = config.beam_options.get_all_options()
  assert options["direct_num_workers"] == 3
  assert options["direct_running_mode"] == "multi_processing"
  config = builders.beam_download_config(
      "DirectRunner", ["--direct_num_workers=5", "--direct_running_mode=multi_threading"], 3)
  options = config.beam_options.get_all_options()
  assert (options["direct_num_workers"], options["direct_running_mode"]) == (5, "multi_threading")
  # Other runners get exactly the flags they are given.
  config = builders.beam_download_config("DataflowRunner", ["--region=europe-west4"], 3)
  assert config.beam_options.get_all_options(drop_default=True) == {"region": "europe-west4"}


# ------------------------------------------------------------------------------------------------
# Without Beam, and the report merge itself.


def test_without_beam_the_error_says_how_to_install_it(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam now fails
  with pytest.raises(ImportError, match=r"pip install -e '\.\[beam\]'"):
    builders.prepare(synthetic.SyntheticWorld("tiny", seed=0), tmp_path,
                     beam_runner="DirectRunner")
  assert not any(n.startswith("musemb_") for n in os.listdir(tmp_path))


def _report(position: int, reason: str | None, outside: int = 0) -> dict:
  if reason is None:
    return {"counts": {}, "examples": {}, "outside_vocab": outside}
  return {"counts": {reason: 1}, "examples": {reason: [[position, f"f{position}"]]},
          "outside_vocab": outside}


def test_report_merge_is_order_free_and_keeps_the_earliest_examples():
  rng = np.random.default_rng(0)
  reports = [_report(p, ["empty", "unreadable", None][p % 3], outside=p % 2) for p in range(40)]
  whole = builders._merge_reports(reports)  # pylint: disable=protected-access
  # Any partition into bundles, merged in any order, gives the same result.
  for _ in range(5):
    order = rng.permutation(len(reports))
    cuts = sorted(rng.choice(np.arange(1, len(reports)), size=4, replace=False))
    parts = [builders._merge_reports([reports[i] for i in chunk])  # pylint: disable=protected-access
             for chunk in np.split(order, cuts)]
    assert builders._merge_reports(parts[::-1]) == whole  # pylint: disable=protected-access
  assert whole["counts"] == {"empty": 14, "unreadable": 13}
  assert whole["outside_vocab"] == 20
  skipped = builders._skip_counter_from_report(whole)  # pylint: disable=protected-access
  # What a SkipCounter fed in source order holds, reasons in the order first met.
  expected = builders.records.SkipCounter()
  for report in reports:
    for reason, items in report["examples"].items():
      expected.add(reason, items[0][1])
  assert json.dumps(skipped.as_dict()) == json.dumps(expected.as_dict())
  assert builders._merge_reports([]) == _report(0, None)  # pylint: disable=protected-access
