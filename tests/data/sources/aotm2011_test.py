"""Tests for musemb.data.sources.aotm2011, and AotM-2011 playlists through the MSD source.

The fixture writes aotm2011_playlists.json(.gz) in the layout McFee published (one JSON array of
objects with mix_id, category, timestamp, user, playlist and filtered_lists; entries
`[[artist, title], song id or null]`), with malformed playlists and entries among the good ones,
and unique_tracks.txt as the MSD released it (`<SEP>`-separated, no header), one song with two
tracks.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3

from absl import app
from absl.testing import flagsaver
import numpy as np
import pytest
import soundfile as sf

from musemb.data import builders
from musemb.data import prepared as prepared_lib
from musemb.data.sources import aotm2011
from musemb.data.sources import msd
from musemb.data.sources import records


def song(key: str) -> str:
  """An MSD song id for a one-letter key: song("a") == "SOAAAAA12A8C13D401"."""
  return f"SO{key.upper() * 5}12A8C13D401"


def track(key: str, n: int = 1) -> str:
  """An MSD track id: track("a") == "TRAAAAA128F9318701", track("b", 2) its second track."""
  return f"TR{key.upper() * 5}128F93187{n:02d}"


A, B1, B2, C, D, E, F, G = (track("a"), track("b", 1), track("b", 2), track("c"), track("d"),
                            track("e"), track("f"), track("g"))
# (track id, song id, artist, title); song b has two tracks, the first without audio.
CATALOGUE = [(A, song("a"), "Artist A", "Song A"), (B1, song("b"), "Artist B", "Song B"),
             (B2, song("b"), "Artist B", "Song B (album version)"),
             (C, song("c"), "Artist C", "Song C"), (D, song("d"), "Artist D", "Song D"),
             (E, song("e"), "Artist E", "Song E"), (F, song("f"), "Artist F", "Song F"),
             (G, song("g"), "Artist G", "Song G")]
WITH_AUDIO = [A, B2, C, D, F, G]       # B1 and E have no preview
TAGGED = [A, B1, B2, C, E, F, G]       # D has no Last.fm tag
AVAILABLE = {A, B2, C, F, G}           # audio and tags
UNKNOWN = song("z")                    # not in unique_tracks.txt


def entry(key: str | None, artist: str = "someone", title: str = "something"):
  return [[artist, title], None if key is None else song(key)]


def playlist(mix_id, user, entries, runs, **extra):
  return {"mix_id": mix_id, "category": "Mixed Genre", "timestamp": "2005-03-27T10:53:00",
          "user": {"name": user, "member_since": "2004-03-21T00:00:00", "mixes_posted": "23"},
          "playlist": entries, "filtered_lists": runs, **extra}


def _published_playlists() -> list:
  good = [
      # 0: a null entry, a song with two tracks, one without audio or tags, one unknown to the
      # catalogue, and a repeat.
      playlist(101, "alice",
               [entry("a"), entry(None, "peter murphy", "marlene dietrich's favourite poem"),
                entry("b"), entry("c"), entry("d"), entry("z"), entry("f"), entry("a"),
                entry("g")],
               [[song("a")], [song(k) for k in "bcdzfag"]]),
      # 1: malformed entries, a repeat inside a run, a run that is not a list.
      playlist(102, "bob",
               [entry("e"), ["just a string"], entry("f"), entry("c"), entry("c"),
                [["only an artist"], song("g")], entry("g"), [["x", "y"], "NOTASONGID"]],
               [[song("e")], [song("f"), song("c"), song("c")], [song("g"), 7], song("g")]),
  ]
  malformed = [
      ["not", "an", "object"],
      {k: v for k, v in playlist(201, "dave", [entry("a"), entry("b")],
                                 [[song("a"), song("b")]]).items() if k != "filtered_lists"},
      playlist("202", "erin", [entry("a"), entry("b")], [[song("a"), song("b")]]),
      {**playlist(203, "x", [entry("a"), entry("b")], [[song("a"), song("b")]]),
       "user": {"member_since": "2004-03-21T00:00:00"}},
      playlist(204, "frank", "a string", [[song("a"), song("b")]]),
      playlist(True, "grace", [entry("a"), entry("b")], [[song("a"), song("b")]]),
  ]
  rest = [
      playlist(101, "mallory", [entry("a"), entry("b")], [[song("a"), song("b")]]),  # again
      # Only one song matched: too short in both modes.
      playlist(104, "carol", [entry(None), entry("a"), entry(None)], [[song("a")]]),
      # An empty user name: the playlist has no user.
      playlist(105, "", [entry("a"), entry("b")], [[song("a"), song("b")]]),
  ]
  return good[:1] + malformed[:3] + good[1:] + malformed[3:] + rest


PLAYLISTS = _published_playlists()
FILTERED = [records.Playlist("101/1", (B2, C, F, A, G), "alice"),
            records.Playlist("102/1", (F, C), "bob"),
            records.Playlist("105/0", (A, B2), None)]
FILTERED_SKIPS = {"malformed_playlist": 6, "duplicate_mix_id": 1, "not_in_collection": 2,
                  "unknown_song": 1, "repeated_song": 1, "malformed_entry": 2,
                  "short_sequence": 4}
WHOLE = [records.Playlist("101", (A, None, B2, C, None, None, F, None, G), "alice"),
         records.Playlist("102", (None, None, F, C, None, None, G, None), "bob"),
         records.Playlist("105", (A, B2), None)]
WHOLE_SKIPS = {"malformed_playlist": 6, "duplicate_mix_id": 1, "unmatched_song": 3,
               "not_in_collection": 2, "unknown_song": 1, "repeated_song": 2,
               "malformed_entry": 3, "short_sequence": 1}


def write_catalogue(path, rows, extra_lines=()) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write("<SEP>".join(row) + "\n")
    for line in extra_lines:
      f.write(line + "\n")


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
  """The playlists as .json and as .json.gz, and unique_tracks.txt with one malformed row."""
  text = json.dumps(PLAYLISTS)
  plain = tmp_path / "aotm2011_playlists.json"
  plain.write_text(text)
  gz = tmp_path / "aotm2011_playlists.json.gz"
  with gzip.open(gz, "wt") as f:
    f.write(text)
  catalogue = tmp_path / "unique_tracks.txt"
  write_catalogue(catalogue, CATALOGUE, ["TRBROKEN<SEP>only two fields"])
  return {"json": str(plain), "gz": str(gz), "catalogue": str(catalogue)}


def test_fixture_is_the_published_layout(files):
  with gzip.open(files["gz"], "rt") as f:
    first = json.load(f)[0]
  assert sorted(first) == sorted(aotm2011.REQUIRED_KEYS)
  assert first["playlist"][1] == [["peter murphy", "marlene dietrich's favourite poem"], None]
  assert first["filtered_lists"][0] == ["SOAAAAA12A8C13D401"]
  assert all(aotm2011.is_song_id(s) for run in first["filtered_lists"] for s in run)
  assert all(msd.is_track_id(t) for t, *_ in CATALOGUE)
  with open(files["catalogue"]) as f:
    assert f.readline() == "TRAAAAA128F9318701<SEP>SOAAAAA12A8C13D401<SEP>Artist A<SEP>Song A\n"


@pytest.mark.parametrize("kind", ["json", "gz"])
def test_filtered_sequences_and_skips(files, kind):
  songs = aotm2011.read_song_tracks(files["catalogue"])
  result = aotm2011.read_playlists(files[kind], songs, sequence="filtered", available=AVAILABLE)
  assert result.playlists == FILTERED
  assert dict(result.skipped.counts) == FILTERED_SKIPS
  assert result.playlists_read == 4      # 101, 102, 104, 105
  assert result.skipped.examples["not_in_collection"] == [f"101/1 song 2: {song('d')}",
                                                          f"102/0 song 0: {song('e')}"]
  assert result.skipped.examples["unknown_song"] == [f"101/1 song 3: {UNKNOWN}"]
  assert result.skipped.examples["malformed_entry"] == ["102/2 song 1: 7",
                                                        "102/3: a JSON str, not an array"]
  assert result.skipped.examples["short_sequence"] == [
      "101/0: 1 usable song(s)", "102/0: 0 usable song(s)", "102/2: 1 usable song(s)",
      "104/0: 1 usable song(s)"]
  assert result.as_dict() == {
      "file": files[kind], "sequence": "filtered", "playlists_read": 4, "sequences": 3,
      "songs": 9, "distinct_tracks": 5, "gaps": 0, "skipped": result.skipped.as_dict()}


@pytest.mark.parametrize("kind", ["json", "gz"])
def test_whole_playlists_keep_gaps(files, kind):
  songs = aotm2011.read_song_tracks(files["catalogue"])
  result = aotm2011.read_playlists(files[kind], songs, sequence="playlist", available=AVAILABLE)
  assert result.playlists == WHOLE
  assert dict(result.skipped.counts) == WHOLE_SKIPS
  # Every position of a kept playlist that holds no track is accounted for under one reason.
  gaps = sum(t is None for p in result.playlists for t in p.track_ids)
  per_entry = sum(n for r, n in result.skipped.counts.items()
                  if r not in ("malformed_playlist", "duplicate_mix_id", "short_sequence"))
  assert gaps == 9 and per_entry == gaps + 2   # 104's two null entries went with its playlist
  assert result.skipped.examples["unmatched_song"][0] == (
      "mix 101 entry 1: peter murphy - marlene dietrich's favourite poem")
  assert result.skipped.examples["repeated_song"] == [f"mix 101 entry 7: {song('a')}",
                                                      f"mix 102 entry 4: {song('c')}"]
  assert result.skipped.examples["malformed_entry"] == [
      'mix 102 entry 1: ["just a string"]',
      f'mix 102 entry 5: [["only an artist"], "{song("g")}"]',
      'mix 102 entry 7: [["x", "y"], "NOTASONGID"]']
  assert result.skipped.examples["malformed_playlist"] == [
      "array element 1 (mix_id None): a JSON list, not an object",
      "array element 2 (mix_id 201): missing ['filtered_lists']",
      "array element 3 (mix_id '202'): mix_id '202' is not an integer",
      "array element 5 (mix_id 203): user {'member_since': '2004-03-21T00:00:00'} is not an "
      "object with a string name",
      "array element 6 (mix_id 204): playlist is a JSON str, not an array"]
  assert result.skipped.examples["duplicate_mix_id"] == ["array element 8: mix_id 101 again"]
  assert result.as_dict()["gaps"] == 9 and result.as_dict()["songs"] == 10


def test_without_a_collection_every_song_takes_its_first_track(files):
  songs = aotm2011.read_song_tracks(files["catalogue"])
  assert songs[song("b")] == (B1, B2)
  result = aotm2011.read_playlists(files["json"], songs, sequence="filtered")
  assert result.playlists == [records.Playlist("101/1", (B1, C, D, F, A, G), "alice"),
                              records.Playlist("102/1", (F, C), "bob"),
                              records.Playlist("105/0", (A, B1), None)]
  assert "not_in_collection" not in result.skipped.counts
  assert result.skipped.counts["short_sequence"] == 4    # 102/0 now holds E: still one song
  # Which track a song with several stands for follows the collection, not the file alone.
  only_second = aotm2011.read_playlists(files["json"], songs, available={B2, C})
  assert only_second.playlists == [records.Playlist("101/1", (B2, C), "alice")]


def test_read_aotm2011_counts_catalogue_rows(files):
  result = aotm2011.read_aotm2011(files["gz"], files["catalogue"], sequence="playlist",
                                  available=AVAILABLE)
  assert result.playlists == WHOLE
  assert dict(result.skipped.counts) == {**WHOLE_SKIPS, "catalogue_bad_row": 1}


def test_bad_files_are_clear_errors(files, tmp_path):
  songs = aotm2011.read_song_tracks(files["catalogue"])
  not_json = tmp_path / "aotm2011_playlists.json"
  not_json.write_text('[{"mix_id": 1, "category": ')
  with pytest.raises(ValueError, match=rf"{not_json} is not JSON .*line 1, column 28.*"
                                       r"one JSON array of playlist objects.*fetch it again"):
    aotm2011.read_playlists(str(not_json), songs)
  truncated = tmp_path / "truncated.json.gz"
  truncated.write_bytes(open(files["gz"], "rb").read()[:100])
  with pytest.raises(ValueError, match=rf"{truncated} starts like a gzip file but cannot be "
                                       r"decompressed.*\.md5"):
    aotm2011.read_playlists(str(truncated), songs)
  not_array = tmp_path / "object.json"
  not_array.write_text(json.dumps(PLAYLISTS[0]))
  with pytest.raises(ValueError, match=rf"{not_array} holds a JSON dict, not an array"):
    aotm2011.read_playlists(str(not_array), songs)
  with pytest.raises(FileNotFoundError, match=r"missing.json does not exist; download "
                                              r"aotm2011_playlists.json.gz from https://"):
    aotm2011.read_playlists(str(tmp_path / "missing.json"), songs)
  missing = tmp_path / "msd" / "unique_tracks.txt"
  with pytest.raises(FileNotFoundError, match=rf"MSD catalogue {missing} does not exist\. "
                                              r"AotM-2011 names songs by MSD song id .*pass its "
                                              r"path"):
    aotm2011.read_aotm2011(files["json"], str(missing))
  with pytest.raises(ValueError, match=r"sequence='runs': expected one of \('filtered', "
                                       r"'playlist'\)"):
    aotm2011.read_playlists(files["json"], songs, sequence="runs")


def test_gaps_survive_the_side_table(tmp_path):
  tables = records.SourceTables(playlists=WHOLE)
  assert builders.write_tables(tmp_path, tables)["playlists"] == 3
  with open(tmp_path / "tables" / "playlists.jsonl") as f:
    assert json.loads(f.readline())["track_ids"][1] is None     # a gap is JSON null
  assert prepared_lib.read_tables(tmp_path).playlists == WHOLE


# ------------------------------------------------------------------------------------------------
# Through the MSD source and launch.prepare.


@pytest.fixture
def msd_dir(tmp_path, files) -> str:
  """An MSD tree: the catalogue, a Last.fm tags database and 1.2 s WAV previews at {tid}.wav."""
  root = tmp_path / "msd"
  root.mkdir()
  write_catalogue(root / msd.CATALOGUE_FILE, CATALOGUE)
  connection = sqlite3.connect(root / msd.TAGS_FILE)
  connection.execute("CREATE TABLE tags (tag TEXT PRIMARY KEY)")
  connection.execute("CREATE TABLE tids (tid TEXT PRIMARY KEY)")
  connection.execute("CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT)")
  connection.execute("INSERT INTO tags VALUES ('rock')")
  connection.executemany("INSERT INTO tids VALUES (?)", [(t,) for t in TAGGED])
  connection.executemany("INSERT INTO tid_tag VALUES (?, 1, 100.0)",
                         [(i + 1,) for i in range(len(TAGGED))])
  connection.commit()
  connection.close()
  tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(19200) / 16000)).astype(np.float32)
  for track_id in WITH_AUDIO:
    sf.write(root / f"{track_id}.wav", tone, 16000)
  return str(root)


def test_msd_source_attaches_playlists(msd_dir, files):
  # tagged_only: available means audio and a tag, as in Lin et al.
  source = msd.MillionSongDataset(msd_dir, path_pattern="{tid}.wav", tagged_only=True,
                                  playlists=files["gz"], playlist_sequence="playlist")
  assert sorted(t.id for t in source.tracks()) == sorted(AVAILABLE)
  assert source.tables().playlists == WHOLE
  assert dict(source.playlist_report.skipped.counts) == WHOLE_SKIPS
  assert dict(source.skipped.counts) == {"untagged": 1, "missing_preview": 2}   # apart from them
  assert "3 sequences of 4 playlists" in source.description()
  # Without tagged_only, D (a preview, no tag) is in the collection.
  source = msd.MillionSongDataset(msd_dir, path_pattern="{tid}.wav", playlists=files["json"])
  assert source.tables().playlists[0] == records.Playlist("101/1", (B2, C, D, F, A, G), "alice")
  assert msd.MillionSongDataset(msd_dir, path_pattern="{tid}.wav").tables().playlists == []
  with pytest.raises(FileNotFoundError, match="AotM-2011 playlists file .* does not exist"):
    msd.MillionSongDataset(msd_dir, playlists=os.path.join(msd_dir, "aotm2011.json"))
  with pytest.raises(ValueError, match="sequence='whole'"):
    msd.MillionSongDataset(msd_dir, playlists=files["json"], playlist_sequence="whole")


def test_prepare_with_playlists(msd_dir, files, tmp_path):
  from launch import prepare  # pylint: disable=g-import-not-at-top
  with flagsaver.flagsaver():
    prepare.FLAGS(["prepare", "--source=msd", f"--source_dir={msd_dir}",
                   f"--data_dir={tmp_path / 'data'}", "--path_pattern={tid}.wav",
                   "--tagged_only", f"--playlists={files['gz']}", "--playlist_sequence=playlist"])
    source = prepare.make_source()
  dataset_dir = builders.prepare(source, tmp_path / "data", max_seconds=20.0, num_workers=2)
  digest = aotm2011.file_digest(files["gz"])
  assert os.path.basename(os.path.dirname(dataset_dir)) == (
      f"top50-tagged-aotm{digest}-playlist-16k-max20s")
  prepared = prepared_lib.load_prepared(dataset_dir)
  assert prepared.tables().playlists == WHOLE
  assert prepared.options["playlists"] == files["gz"]
  assert prepared.options["playlist_sequence"] == "playlist"
  metadata = prepared.builder.info.metadata
  assert metadata["playlists"] == source.playlist_report.as_dict()
  assert metadata["playlists"]["skipped"]["by_reason"] == WHOLE_SKIPS
  assert metadata["tables"]["playlists"] == 3
  assert ("playlists: 3 playlist sequences of 4 playlists from " + files["gz"]) in (
      prepared.summary())
  assert sum(prepared.split_sizes.values()) == len(AVAILABLE)
  # The builder rebuilds the same source from its config alone.
  config = builders.make_config(source, max_seconds=20.0)
  assert config.playlists == files["gz"] and config.playlist_sequence == "playlist"
  with flagsaver.flagsaver():
    prepare.FLAGS(["prepare", "--source=mtat", f"--source_dir={msd_dir}",
                   f"--data_dir={tmp_path / 'data'}", f"--playlists={files['gz']}"])
    with pytest.raises(app.UsageError, match="--playlists is read by --source=msd only"):
      prepare.make_source()
