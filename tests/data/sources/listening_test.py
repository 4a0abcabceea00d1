"""Tests for musemb.data.sources.listening on tiny files in the published layouts.

Fixtures are written as their publishers distribute them: TAB-separated Taste Profile triplets and
LFM-1b tables without headers, `<SEP>`-separated unique_tracks.txt, and a real SQLite
lastfm_tags.db with the tables tids, tags and tid_tag (rowid references). Each holds malformed rows.
"""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from musemb.data.sources import listening
from musemb.data.sources import records


def write(path, lines: list[str]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


# --- Taste Profile -----------------------------------------------------------------------------


def test_taste_profile_reads_triplets_sums_repeats_and_counts_bad_rows(tmp_path):
  path = write(tmp_path / "train_triplets.txt", [
      "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAKIMP12A8C130995\t3",
      "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAPDEY12A81C210A9\t1",
      "u2\tSOAKIMP12A8C130995\t5",
      "u2\tSOAKIMP12A8C130995\t2",
      "",
      "u3\tSOX",                 # bad_row
      "u3\tSOX\t0",              # bad_count
      "u3\tSOX\tmany",           # bad_count
      "u3\tSOX\t-2",             # bad_count
      "\tSOX\t4",                # bad_row: empty user
  ])
  skipped = records.SkipCounter()
  plays = list(listening.iter_taste_profile(path, skipped))
  assert plays[0] == records.Play("b80344d063b5ccb3212f76538f3d9e43d87dca9e",
                                  "SOAKIMP12A8C130995", 3)
  assert len(plays) == 4
  assert dict(skipped.counts) == {"bad_row": 2, "bad_count": 3}

  counts = listening.read_taste_profile(path)
  assert counts.users == ["b80344d063b5ccb3212f76538f3d9e43d87dca9e", "u2"]
  assert counts.items == ["SOAKIMP12A8C130995", "SOAPDEY12A81C210A9"]
  np.testing.assert_array_equal(counts.to_csr().toarray(), [[3, 1], [7, 0]])
  assert counts.nnz == 3 and counts.total_plays == 11
  assert sorted(counts.plays(), key=lambda p: (p.user, p.track_id))[-1] == records.Play(
      "u2", "SOAKIMP12A8C130995", 7)


def test_missing_files_name_the_file_and_the_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"train_triplets\.txt.*user<TAB>song<TAB>count"):
    listening.read_taste_profile(str(tmp_path / "train_triplets.txt"))
  with pytest.raises(FileNotFoundError, match=r"unique_tracks\.txt.*track_id<SEP>song_id"):
    listening.read_msd_catalogue(str(tmp_path / "unique_tracks.txt"))
  with pytest.raises(FileNotFoundError, match=r"LFM-1b_LEs\.txt.*user-id<TAB>artist-id"):
    listening.match_lfm1b_to_msd(str(tmp_path), str(tmp_path / "unique_tracks.txt"))
  db = tmp_path / "lastfm_tags.db"
  with pytest.raises(FileNotFoundError, match=r"lastfm_tags\.db.*tid_tag"):
    listening.read_lastfm_tags(str(db))
  assert not db.exists()  # no empty database left behind at a mistyped path


def test_play_counts_sum_repeated_pairs_and_check_indices():
  counts = listening.PlayCounts.from_coordinates(
      ["a", "b"], ["x", "y", "z"], np.array([1, 0, 1, 1]), np.array([2, 1, 2, 0]),
      np.array([4, 1, 5, 2]))
  np.testing.assert_array_equal(counts.rows, [0, 1, 1])
  np.testing.assert_array_equal(counts.cols, [1, 0, 2])
  np.testing.assert_array_equal(counts.counts, [1, 2, 9])
  with pytest.raises(ValueError, match="out of range"):
    listening.PlayCounts(["a"], ["x"], np.array([0]), np.array([1]), np.array([1]))
  with pytest.raises(ValueError, match="positive"):
    listening.PlayCounts(["a"], ["x"], np.array([0]), np.array([0]), np.array([0]))


# --- LFM-1b and catalogue matching ---------------------------------------------------------------


@pytest.fixture
def lfm1b_dir(tmp_path):
  root = tmp_path / "lfm1b"
  root.mkdir()
  write(root / "LFM-1b_artists.txt", [
      "1\tThe Beatles",
      "2\tBjörk",
      "3\tNobody Known",
      "x\tNot An Id",        # bad_row
      "1\tThe Beatles Again",  # duplicate_id
      "4",                   # bad_row
  ])
  write(root / "LFM-1b_tracks.txt", [
      "10\tYesterday\t1",
      "11\tYESTERDAY\t1",      # same song by case: merged into 10's column
      "12\tHyperballad\t2",
      "13\tUnmatched Song\t3",
      "14\tYesterday \t1",     # trailing space: exact matching leaves it unmatched
      "15\tGhost\t99",         # unknown_artist: kept, unmatched
      "16\tNo Artist Field",   # bad_row
      "abc\tX\t1",             # bad_row
      "10\tOther\t2",          # duplicate_id
  ])
  events = []
  def listen(user, artist, track, times):
    events.extend(f"{user}\t{artist}\t0\t{track}\t{1356994800 + i}" for i in range(times))
  listen(5, 1, 10, 2)
  listen(5, 1, 11, 3)
  listen(5, 2, 12, 1)
  listen(6, 3, 13, 1)
  listen(5, 3, 13, 4)
  listen(6, 1, 14, 2)
  listen(7, 2, 12, 2)
  listen(7, 99, 15, 1)
  listen(7, 1, 999, 2)        # unknown_track
  events += ["5\t1\t0\t10", "5\t1\t0\tten\t1356994800"]  # bad_row x2
  write(root / "LFM-1b_LEs.txt", events)
  return str(root)


@pytest.fixture
def catalogue_path(tmp_path):
  return write(tmp_path / "unique_tracks.txt", [
      "TRMMMYQ128F932D901<SEP>SOQMMHC12AB0180CB8<SEP>The Beatles<SEP>Yesterday",
      "TRBJORK128F000001<SEP>SOBJORK12A0000001<SEP>Björk<SEP>Hyperballad",
      "TRBJORK128F000002<SEP>SOBJORK12A0000002<SEP>BJÖRK<SEP>hyperballad",
      "TRSOMEO128F000003<SEP>SOSOMEO12A0000003<SEP>Someone<SEP>Else",
      "TRBROKEN<SEP>SOBROKEN<SEP>only three fields",                 # bad_row
      "TRMMMYQ128F932D901<SEP>SODUP<SEP>The Beatles<SEP>Yesterday",  # duplicate_id
  ])


def test_msd_catalogue(catalogue_path):
  skipped = records.SkipCounter()
  catalogue = listening.read_msd_catalogue(catalogue_path, skipped)
  assert catalogue.track_ids[1] == "TRBJORK128F000001"
  assert catalogue.song_ids[1] == "SOBJORK12A0000001"
  assert catalogue.artists[2] == "BJÖRK" and catalogue.titles[2] == "hyperballad"
  assert len(catalogue.track_ids) == 4
  assert dict(skipped.counts) == {"bad_row": 1, "duplicate_id": 1}


@pytest.mark.parametrize("chunk_rows", [3, 1000])
def test_matching_merges_duplicates_and_reports_coverage(lfm1b_dir, catalogue_path, chunk_rows):
  skipped = records.SkipCounter()
  match = listening.match_lfm1b_to_msd(lfm1b_dir, catalogue_path, skipped, chunk_rows=chunk_rows)
  plays = match.plays
  # User 6 played only unmatched tracks; columns follow the first matched LFM-1b track.
  assert plays.users == ["5", "7"]
  assert plays.items == ["TRMMMYQ128F932D901", "TRBJORK128F000001"]
  assert match.msd_tracks == [("TRMMMYQ128F932D901",), ("TRBJORK128F000001", "TRBJORK128F000002")]
  assert match.lfm1b_tracks == [(10, 11), (12,)]
  # Tracks 10 and 11 merged: 2 + 3 plays of user 5.
  np.testing.assert_array_equal(plays.to_csr().toarray(), [[5, 1], [0, 2]])
  assert match.coverage == listening.CoverageReport(
      lfm1b_tracks=6, lfm1b_tracks_matched=3, lfm1b_tracks_unmatched=3, duplicates_merged=1,
      items=2, msd_tracks=4, msd_tracks_matched=3, plays=16, plays_covered=8, users=3,
      users_kept=2)
  assert match.coverage.plays_covered_fraction == pytest.approx(0.5)
  assert match.coverage.as_dict()["plays_covered_fraction"] == pytest.approx(0.5)
  assert dict(skipped.counts) == {"bad_row": 2 + 2 + 2 + 1, "duplicate_id": 1 + 1 + 1,
                                  "unknown_artist": 1, "unknown_track": 2}
  assert any("999" in e for e in skipped.examples["unknown_track"])


def test_lfm1b_plays_per_track(lfm1b_dir):
  skipped = records.SkipCounter()
  plays = listening.read_lfm1b_plays(lfm1b_dir, skipped, chunk_rows=4)
  assert plays.users == ["5", "6", "7"]
  assert plays.items == ["10", "11", "12", "13", "14", "15"]
  np.testing.assert_array_equal(plays.to_csr().toarray(), [
      [2, 3, 1, 4, 0, 0],
      [0, 0, 0, 1, 2, 0],
      [0, 0, 2, 0, 0, 1],
  ])
  assert dict(skipped.counts) == {"bad_row": 2 + 2, "duplicate_id": 1, "unknown_track": 2}


def test_lfm1b_artists(lfm1b_dir):
  skipped = records.SkipCounter()
  artists = listening.read_lfm1b_artists(os.path.join(lfm1b_dir, "LFM-1b_artists.txt"), skipped)
  assert artists == {1: "The Beatles", 2: "Björk", 3: "Nobody Known"}
  assert dict(skipped.counts) == {"bad_row": 2, "duplicate_id": 1}


# --- Last.fm tags ---------------------------------------------------------------------------------


SCORES = {
    "TRA": {"rock": 100, "pop": 60, "80s": 50, "jazz": 10},
    "TRB1": {"rock": 80, "indie": 90, "pop": 51},
    "TRB2": {"indie": 100, "jazz": 70},
    "TRC": {"pop": 55, "80s": 49},
}


@pytest.fixture
def tags_db(tmp_path):
  path = str(tmp_path / "lastfm_tags.db")
  connection = sqlite3.connect(path)
  connection.execute("CREATE TABLE tids (tid TEXT)")
  connection.execute("CREATE TABLE tags (tag TEXT)")
  connection.execute("CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT)")
  tids = list(SCORES)
  tags = sorted({tag for scores in SCORES.values() for tag in scores})
  connection.executemany("INSERT INTO tids VALUES (?)", [(t,) for t in tids])
  connection.executemany("INSERT INTO tags VALUES (?)", [(t,) for t in tags])
  rows = [(tids.index(tid) + 1, tags.index(tag) + 1, float(val))
          for tid, scores in SCORES.items() for tag, val in scores.items()]
  rows += [(99, 1, 100.0), (1, 99, 100.0)]          # bad_tag_row: no such tids / tags row
  rows += [(3, 1, "lots"), (3, 2, None)]            # bad_score
  connection.executemany("INSERT INTO tid_tag VALUES (?, ?, ?)", rows)
  connection.commit()
  connection.close()
  return path


def test_lastfm_tags_scores(tags_db):
  skipped = records.SkipCounter()
  tags = listening.read_lastfm_tags(tags_db, skipped)
  assert tags["TRA"] == [("rock", 100.0), ("pop", 60.0), ("80s", 50.0), ("jazz", 10.0)]
  assert tags["TRB2"] == [("indie", 100.0), ("jazz", 70.0)]
  assert set(tags) == set(SCORES)
  assert dict(skipped.counts) == {"bad_tag_row": 2, "bad_score": 2}
  assert set(listening.read_lastfm_tags(tags_db, track_ids={"TRC"})) == {"TRC"}


def test_top_tags_above_score_50(tags_db):
  # Carried (score > 50): pop 3 tracks, indie 2, rock 2, jazz 1; "80s" never (50 is not above 50).
  vocabulary, per_track = listening.msd_track_tags(tags_db, top_n=2)
  assert vocabulary == ["pop", "indie"]  # indie and rock tie at 2: the name that sorts first
  assert per_track == {"TRA": ["pop"], "TRB1": ["pop", "indie"], "TRB2": ["indie"],
                       "TRC": ["pop"]}
  vocabulary, per_track = listening.msd_track_tags(tags_db, top_n=None)
  assert vocabulary == ["pop", "indie", "rock", "jazz"]
  assert per_track["TRA"] == ["pop", "rock"]
  vocabulary, _ = listening.msd_track_tags(tags_db, track_ids={"TRB2"})
  assert vocabulary == ["indie", "jazz"]
  vocabulary, per_track = listening.msd_track_tags(tags_db, min_score=0.0)
  # Every score counts now: pop 3, then four tags at 2 tracks in name order.
  assert vocabulary == ["pop", "80s", "indie", "jazz", "rock"]
  assert per_track["TRA"] == ["pop", "80s", "jazz", "rock"]
  with pytest.raises(ValueError, match="top_n"):
    listening.select_tags({}, top_n=0)


def test_tags_db_without_the_tables_is_a_clear_error(tmp_path):
  path = str(tmp_path / "lastfm_tags.db")
  connection = sqlite3.connect(path)
  connection.execute("CREATE TABLE tids (tid TEXT)")
  connection.close()
  with pytest.raises(ValueError, match=r"lacks the tables \['tags', 'tid_tag'\]"):
    listening.read_lastfm_tags(path)


def test_wmf_sources_keyed_by_msd_track_ids(lfm1b_dir, catalogue_path, tmp_path):
  """lfm1b_msd items are MSD track ids (the MSD audio's keys); Taste Profile songs map to tracks."""
  from configs import wmf as wmf_config
  config = wmf_config.get_config("lfm1b_msd")
  config.data.path = lfm1b_dir
  config.data.msd_catalogue = catalogue_path
  config.data.top_n_tracks = 0      # the matched tracks only (the variant adds the 2M most played)
  plays = listening.load_plays(config.data)
  assert plays.items == ["TRMMMYQ128F932D901", "TRBJORK128F000001"]
  assert plays.item_tracks == [("TRMMMYQ128F932D901",), ("TRBJORK128F000001", "TRBJORK128F000002")]
  dense = dict(zip(zip(plays.rows.tolist(), plays.cols.tolist()), plays.counts.tolist()))
  # user 5: Yesterday 2 + YESTERDAY 3 merged; Hyperballad once.
  assert dense[(plays.users.index("5"), 0)] == 5
  config.data.msd_catalogue = ""
  with pytest.raises(ValueError, match="msd_catalogue"):
    listening.load_plays(config.data)

  triplets = write(tmp_path / "train_triplets.txt", [
      "u1\tSOQMMHC12AB0180CB8\t3", "u1\tSOBJORK12A0000002\t1", "u2\tSONOTINCATALOGUE\t2"])
  config = wmf_config.get_config("taste_profile")
  config.data.path = triplets
  config.data.msd_catalogue = catalogue_path
  plays = listening.load_plays(config.data)
  assert sorted(plays.items) == ["SONOTINCATALOGUE", "TRBJORK128F000002", "TRMMMYQ128F932D901"]
  assert sorted(plays.track_items()[0]) == sorted(plays.items)   # one track per song here


def test_proxy_tags_for_msd_items_come_from_the_lastfm_database(tags_db):
  from configs import wmf as wmf_config
  from musemb.systems.wmf import data as wmf_data
  config = wmf_config.get_config("lfm1b_msd")
  config.proxy.lastfm_tags = tags_db
  config.proxy.top_n_tags = 3
  items = ["TRA", "TRB1", "TRC", "TRNOTAGS"]
  tags, names, labelled = wmf_data.proxy_tags(config, items)
  # Counted over the given items: pop on 3, rock on 2, indie on 1 (TRB2 is not among them).
  assert names == ["pop", "rock", "indie"]
  np.testing.assert_array_equal(tags, [[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
  # An item the database does not know is not a negative for every tag: left out.
  np.testing.assert_array_equal(labelled, [True, True, True, False])
  config.proxy.lastfm_tags = ""
  assert wmf_data.proxy_tags(config, items) is None


def test_every_msd_track_of_a_matched_key_gets_the_factors(lfm1b_dir, catalogue_path, tmp_path):
  """Björk's Hyperballad is two MSD tracks (TRBJORK...1 and ...2, one key): the factor file must
  give both the column's factors, so either one's audio trains SampleCNN and the cultural branch."""
  from configs import wmf as wmf_config
  from musemb.data import pipeline
  from musemb.systems.wmf import fit as wmf_run
  config = wmf_config.get_config("lfm1b_msd,factors=2,iterations=2")
  config.data.path = lfm1b_dir
  config.data.msd_catalogue = catalogue_path
  workdir = str(tmp_path / "w")
  wmf_run.fit_and_save(config, workdir)
  targets = pipeline.load_factor_targets(workdir)
  row = {t: i for i, t in enumerate(targets.ids.tolist())}
  assert {"TRMMMYQ128F932D901", "TRBJORK128F000001", "TRBJORK128F000002"} <= set(row)
  np.testing.assert_array_equal(targets.values[row["TRBJORK128F000002"]],
                                targets.values[row["TRBJORK128F000001"]])
  assert not np.array_equal(targets.values[row["TRBJORK128F000001"]],
                            targets.values[row["TRMMMYQ128F932D901"]])


def test_most_played_keeps_the_top_n_ties_to_the_first():
  plays = np.array([2, 3, 3, 5, 2, 1])
  np.testing.assert_array_equal(listening.most_played(plays, 2), [1, 3])
  np.testing.assert_array_equal(listening.most_played(plays, 4), [0, 1, 2, 3])
  np.testing.assert_array_equal(listening.most_played(plays, 99), np.arange(6))


def test_top_n_tracks_keeps_the_most_played_plus_every_matched_one(lfm1b_dir, catalogue_path):
  """The thesis' final factors: the matched tracks plus the 2M most-played LFM-1b tracks (an
  overlap counted once). Plays per LFM-1b track in the fixture: 13: 5, 11: 3, 12: 3, 10: 2, 14: 2,
  15: 1; matched: 10 and 11 (Yesterday) and 12 (Hyperballad)."""
  match = listening.match_lfm1b_to_msd(lfm1b_dir, catalogue_path, top_n_tracks=2)
  # Top 2: 13 and 11 (11 and 12 tie at 3: the smaller id). 11 is matched already: one new column.
  assert match.plays.items == ["TRMMMYQ128F932D901", "TRBJORK128F000001", "13"]
  assert match.msd_tracks[2] == () and match.lfm1b_tracks[2] == (13,)
  assert match.plays.users == ["5", "6", "7"]   # user 6's play of track 13 now counts
  np.testing.assert_array_equal(match.plays.to_csr().toarray(), [[5, 1, 4], [0, 0, 1], [0, 2, 0]])
  assert match.coverage.items == 3 and match.coverage.popular_tracks_added == 1
  assert match.coverage.plays_covered == 13 and match.coverage.users_kept == 3
  # Top 5 adds 10 (matched) and 14 (2 plays, beating 15's one).
  five = listening.match_lfm1b_to_msd(lfm1b_dir, catalogue_path, top_n_tracks=5)
  assert five.plays.items == ["TRMMMYQ128F932D901", "TRBJORK128F000001", "13", "14"]
  # 0 keeps the matched tracks only, as before.
  assert listening.match_lfm1b_to_msd(lfm1b_dir, catalogue_path).plays.items == [
      "TRMMMYQ128F932D901", "TRBJORK128F000001"]


def test_top_n_tracks_of_plain_lfm1b(lfm1b_dir):
  from configs import wmf as wmf_config
  config = wmf_config.get_config("lfm1b")
  config.data.path = lfm1b_dir
  config.data.top_n_tracks = 2
  plays = listening.load_plays(config.data)
  assert plays.items == ["11", "13"] and plays.users == ["5", "6"]   # user 7 played neither
  np.testing.assert_array_equal(plays.to_csr().toarray(), [[3, 4], [0, 1]])
