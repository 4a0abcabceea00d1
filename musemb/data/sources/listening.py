"""Listening data and the Million Song Dataset catalogue, in their published layouts.

The recommendation side of Platt's thesis (`004_*` paper, "Content-based music recommendation with
the LFM-1b dataset and sample-level deep convolutional neural networks", chapter 3) fits latent
factors to user play counts and ties them to Million Song Dataset (MSD) tracks, whose audio and
Last.fm tags the rest of the system uses. This module reads every input of that chain and returns
the play counts in a CSR-ready `PlayCounts`, which the ALS step (`musemb.systems.wmf.als`) consumes.

Layouts read here, as their publishers distribute them (no header lines anywhere):

```
train_triplets.txt       Echo Nest Taste Profile Subset (Bertin-Mahieux et al., ISMIR 2011):
                         user<TAB>song<TAB>count, song an MSD song id (SO...).
LFM-1b_LEs.txt           LFM-1b listening events (Schedl, ICMR 2016): user-id<TAB>artist-id<TAB>
                         album-id<TAB>track-id<TAB>timestamp, all integers.
LFM-1b_tracks.txt        track-id<TAB>track-name<TAB>artist-id
LFM-1b_artists.txt       artist-id<TAB>artist-name
unique_tracks.txt        MSD catalogue: track_id<SEP>song_id<SEP>artist name<SEP>title
lastfm_tags.db           Last.fm tags of the MSD (SQLite): tids(tid), tags(tag), tid_tag(tid, tag,
                         val) where tid_tag.tid and tid_tag.tag are rowids of tids and tags, val the
                         tag's score in [0, 100].
```

Choices, all visible in the return values and in the `SkipCounter`s:

* Catalogue matching follows the thesis' chapter 3: an LFM-1b track matches every MSD track with the
  same (artist name, title) compared case-insensitively (`str.casefold`) and otherwise exactly: no
  trimming, no fuzzy matching. Several LFM-1b tracks that fall on the same key are duplicates of one
  song; they become one column whose play counts are the sums (the thesis' Table 5.3 merge). A key
  can name several MSD tracks (the MSD distinguishes songs from tracks); the column then stands for
  all of them, listed in `CatalogueMatch.msd_tracks` and in `PlayCounts.item_tracks`, so that every
  one of them gets the column's factors (the thesis matched an MSD track to one arbitrary factor).
* Popular tracks (`top_n_tracks`, the thesis' chapter 5.3): LFM-1b's 30M tracks are too many to fit,
  so a fit can keep the N tracks with the most listening events (ties: the smaller track id). For
  `match_lfm1b_to_msd` they come on top of the matched ones (the thesis' final factors: the matched
  tracks plus the 2M most played, an overlap of ~300k counted once); an unmatched one is its own
  column named by its LFM-1b id. That path counts every (user, track) pair before choosing, so its
  memory grows like `read_lfm1b_plays`', not like the matched tracks'.
* Play counts: a Taste Profile line is one (user, song, count); LFM-1b events are counted per (user,
  track). A (user, item) pair that occurs several times is summed.
* Tags: a track carries a tag when its score is above `min_score` (50, the split of Choi et al.'s
  MSD tagging benchmark); the vocabulary is the `top_n` (50) tags carried by the most tracks, ties
  going to the name that sorts first.
* Rows left out are counted by reason: "bad_row" (wrong number of fields, an id that is empty or not
  an integer where the layout has integers), "bad_count" (a play count that is not a positive
  integer), "duplicate_id" (the first row of an id wins), "unknown_artist" (an LFM-1b track whose
  artist is not in the artists file: kept, but unmatched), "unknown_track" (an event whose track
  is not in the tracks file), "bad_tag_row" (a tid_tag row pointing at no tids/tags row),
  "bad_score" (a tag score that is not a number).

LFM-1b holds about a billion events: they are parsed line by line but aggregated in numpy chunks of
`chunk_rows` events, so memory grows with the number of distinct (user, track) pairs, not events.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sqlite3
from typing import Any, Collection, Iterable, Iterator

from absl import logging
import numpy as np
import scipy.sparse

from musemb.data.sources import records

TASTE_PROFILE_FILE = "train_triplets.txt"
LFM1B_EVENTS_FILE = "LFM-1b_LEs.txt"
LFM1B_TRACKS_FILE = "LFM-1b_tracks.txt"
LFM1B_ARTISTS_FILE = "LFM-1b_artists.txt"
MSD_CATALOGUE_FILE = "unique_tracks.txt"
LASTFM_TAGS_FILE = "lastfm_tags.db"
MSD_SEP = "<SEP>"

_LAYOUTS = {
    TASTE_PROFILE_FILE: "one 'user<TAB>song<TAB>count' line per pair (Echo Nest Taste Profile "
                        "Subset)",
    LFM1B_EVENTS_FILE: "one 'user-id<TAB>artist-id<TAB>album-id<TAB>track-id<TAB>timestamp' line "
                       "per listening event, all integers (LFM-1b)",
    LFM1B_TRACKS_FILE: "one 'track-id<TAB>track-name<TAB>artist-id' line per track (LFM-1b)",
    LFM1B_ARTISTS_FILE: "one 'artist-id<TAB>artist-name' line per artist (LFM-1b)",
    MSD_CATALOGUE_FILE: "one 'track_id<SEP>song_id<SEP>artist name<SEP>title' line per track "
                        "(Million Song Dataset)",
    LASTFM_TAGS_FILE: "the SQLite database of the Last.fm dataset of the MSD, with tables "
                      "tids(tid), tags(tag) and tid_tag(tid, tag, val)",
}


def _require_file(path: str, layout_of: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; expected {_LAYOUTS[layout_of]}. Point the "
                            "importer at the file as its publisher distributes it.")


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """(line number, text without its line ending) for each non-blank line.

  Names in these releases are mostly UTF-8 with a few legacy bytes; such a line is read as Latin-1
  rather than stopping the import.
  """
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      raw = raw.rstrip(b"\r\n")
      if not raw.strip():
        continue
      try:
        yield number, raw.decode("utf-8")
      except UnicodeDecodeError:
        yield number, raw.decode("latin-1")


def _int_or_none(text: str) -> int | None:
  try:
    return int(text)
  except ValueError:
    return None


def _positive_int(text: str) -> int | None:
  try:
    value = int(text)
  except ValueError:
    return None
  return value if value > 0 else None


def match_key(artist: str, title: str) -> tuple[str, str]:
  """The case-insensitive (artist, title) key of the thesis' catalogue matching."""
  return artist.casefold(), title.casefold()


# --------------------------------------------------------------------------------------------------
# Play counts.


@dataclasses.dataclass
class PlayCounts:
  """Play counts of users on items, as the coordinates of a sparse [users, items] matrix.

  Attributes:
    users: user ids, in row order.
    items: item ids, in column order.
    rows: [nnz] int32 row (user) index of each non-zero.
    cols: [nnz] int32 column (item) index of each non-zero.
    counts: [nnz] int64 positive play counts; each (row, col) pair occurs once, sorted by row then
      column.
    item_tracks: [items] the track ids each item stands for, or None when every item is one track
      (its id). An LFM-1b column matched to the MSD stands for every MSD track of its (artist,
      title) key, a Taste Profile song for every MSD track of the song: all of them get the item's
      factors (`track_items`).
  """

  users: list[str]
  items: list[str]
  rows: np.ndarray
  cols: np.ndarray
  counts: np.ndarray
  item_tracks: list[tuple[str, ...]] | None = None

  def __post_init__(self):
    n = len(self.counts)
    if len(self.rows) != n or len(self.cols) != n:
      raise ValueError(f"PlayCounts: rows ({len(self.rows)}), cols ({len(self.cols)}) and counts "
                       f"({n}) must have one entry per non-zero.")
    if n and (self.rows.min() < 0 or self.rows.max() >= len(self.users) or self.cols.min() < 0
              or self.cols.max() >= len(self.items)):
      raise ValueError(f"PlayCounts: indices out of range for {len(self.users)} users and "
                       f"{len(self.items)} items.")
    if n and self.counts.min() < 1:
      raise ValueError("PlayCounts: play counts must be positive; leave zero pairs out.")
    if self.item_tracks is not None and len(self.item_tracks) != len(self.items):
      raise ValueError(f"PlayCounts: item_tracks has {len(self.item_tracks)} entries for "
                       f"{len(self.items)} items.")

  @classmethod
  def from_coordinates(cls, users: list[str], items: list[str], rows: np.ndarray,
                       cols: np.ndarray, counts: np.ndarray) -> PlayCounts:
    """Sorts the coordinates and sums the counts of repeated (row, col) pairs."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    counts = np.asarray(counts, np.int64)
    keys = rows * max(len(items), 1) + cols
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, int)
    summed = np.add.reduceat(counts, starts) if len(keys) else counts
    keys = keys[starts]
    width = max(len(items), 1)
    return cls(list(users), list(items), (keys // width).astype(np.int32),
               (keys % width).astype(np.int32), summed.astype(np.int64))

  @classmethod
  def from_plays(cls, plays: Iterable[records.Play]) -> PlayCounts:
    """Users and items in order of first appearance; repeated pairs summed."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    rows, cols, counts = [], [], []
    for play in plays:
      rows.append(user_index.setdefault(play.user, len(user_index)))
      cols.append(item_index.setdefault(play.track_id, len(item_index)))
      counts.append(play.count)
    return cls.from_coordinates(list(user_index), list(item_index), np.array(rows, np.int64),
                                np.array(cols, np.int64), np.array(counts, np.int64))

  @property
  def nnz(self) -> int:
    return len(self.counts)

  @property
  def total_plays(self) -> int:
    return int(self.counts.sum())

  def to_csr(self) -> scipy.sparse.csr_matrix:
    """The [users, items] matrix of play counts (int64)."""
    return scipy.sparse.csr_matrix((self.counts, (self.rows, self.cols)),
                                   shape=(len(self.users), len(self.items)))

  def track_items(self) -> tuple[list[str], np.ndarray]:
    """(track ids [T], their item [T] int64): every track an item stands for, items in order.

    Without `item_tracks` these are the items themselves. A track named by two items (it cannot
    happen with the readers here) is an error: its factors would be ambiguous.
    """
    if self.item_tracks is None:
      return list(self.items), np.arange(len(self.items), dtype=np.int64)
    tracks, owners = [], []
    for i, (item, names) in enumerate(zip(self.items, self.item_tracks)):
      names = names or (item,)
      tracks += names
      owners += [i] * len(names)
    if len(set(tracks)) != len(tracks):
      raise ValueError("PlayCounts: a track id is listed under two items in item_tracks.")
    return tracks, np.asarray(owners, np.int64)

  def plays(self) -> Iterator[records.Play]:
    for r, c, n in zip(self.rows.tolist(), self.cols.tolist(), self.counts.tolist()):
      yield records.Play(self.users[r], self.items[c], n)


def most_played(plays: np.ndarray, n: int) -> np.ndarray:
  """Increasing indices of the `n` largest of `plays` [tracks] (ties: the smaller index).

  Args:
    plays: [tracks] listening events per track.
    n: how many to keep, >= 1; all of them when there are fewer.
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"top_n_tracks={n!r} must be a positive integer (0 in a config keeps all).")
  plays = np.asarray(plays)
  order = np.lexsort((np.arange(len(plays)), -plays))
  return np.sort(order[:n])


def keep_most_played(plays: PlayCounts, n: int) -> PlayCounts:
  """The `n` items with the most plays (ties: the earlier column), in their column order; users
  left without a play are dropped."""
  per_item = np.bincount(plays.cols, weights=plays.counts, minlength=len(plays.items))
  keep = most_played(per_item, n)
  new_col = np.full(len(plays.items), -1, np.int64)
  new_col[keep] = np.arange(len(keep))
  hit = new_col[plays.cols] >= 0
  users, rows = np.unique(plays.rows[hit], return_inverse=True)
  out = PlayCounts.from_coordinates([plays.users[u] for u in users.tolist()],
                                    [plays.items[i] for i in keep.tolist()], rows.ravel(),
                                    new_col[plays.cols[hit]], plays.counts[hit])
  if plays.item_tracks is not None:
    out.item_tracks = [plays.item_tracks[i] for i in keep.tolist()]
  return out


# --------------------------------------------------------------------------------------------------
# Taste Profile Subset.


def iter_taste_profile(path: str, skipped: records.SkipCounter) -> Iterator[records.Play]:
  """The (user, song, count) lines of train_triplets.txt as `Play`s; bad lines go to `skipped`."""
  _require_file(path, TASTE_PROFILE_FILE)
  name = os.path.basename(path)
  for number, line in _lines(path):
    fields = line.split("\t")
    if len(fields) != 3 or not fields[0] or not fields[1]:
      skipped.add("bad_row", f"{name} line {number}: {len(fields)} fields or an empty id, "
                             "expected user<TAB>song<TAB>count")
      continue
    count = _positive_int(fields[2])
    if count is None:
      skipped.add("bad_count", f"{name} line {number}: count {fields[2]!r} is not a positive "
                               "integer")
      continue
    yield records.Play(fields[0], fields[1], count)


def read_taste_profile(path: str, skipped: records.SkipCounter | None = None) -> PlayCounts:
  """train_triplets.txt as `PlayCounts` (items are MSD song ids)."""
  skipped = skipped if skipped is not None else records.SkipCounter()
  return PlayCounts.from_plays(iter_taste_profile(path, skipped))


# --------------------------------------------------------------------------------------------------
# LFM-1b.


def read_lfm1b_artists(path: str, skipped: records.SkipCounter) -> dict[int, str]:
  """LFM-1b_artists.txt as {artist-id: artist-name}."""
  _require_file(path, LFM1B_ARTISTS_FILE)
  name = os.path.basename(path)
  artists: dict[int, str] = {}
  for number, line in _lines(path):
    fields = line.split("\t")
    artist_id = _int_or_none(fields[0]) if len(fields) == 2 else None
    if artist_id is None:
      skipped.add("bad_row", f"{name} line {number}: expected artist-id<TAB>artist-name with an "
                             "integer id")
      continue
    if artist_id in artists:
      skipped.add("duplicate_id", f"{name} line {number}: artist {artist_id} again")
      continue
    artists[artist_id] = fields[1]
  return artists


def iter_lfm1b_tracks(path: str, artists: dict[int, str],
                      skipped: records.SkipCounter) -> Iterator[tuple[int, str | None, str]]:
  """(track-id, artist name, track name) for each usable line of LFM-1b_tracks.txt.

  A track whose artist-id is not in `artists` is still yielded (its events are real plays), with
  artist None, and counted as "unknown_artist": it cannot be matched by name.
  """
  _require_file(path, LFM1B_TRACKS_FILE)
  name = os.path.basename(path)
  seen: set[int] = set()
  for number, line in _lines(path):
    fields = line.split("\t")
    if len(fields) != 3:
      skipped.add("bad_row", f"{name} line {number}: {len(fields)} fields, expected "
                             "track-id<TAB>track-name<TAB>artist-id")
      continue
    track_id, artist_id = _int_or_none(fields[0]), _int_or_none(fields[2])
    if track_id is None or artist_id is None:
      skipped.add("bad_row", f"{name} line {number}: track-id {fields[0]!r} or artist-id "
                             f"{fields[2]!r} is not an integer")
      continue
    if track_id in seen:
      skipped.add("duplicate_id", f"{name} line {number}: track {track_id} again")
      continue
    seen.add(track_id)
    artist = artists.get(artist_id)
    if artist is None:
      skipped.add("unknown_artist", f"{name} line {number}: track {track_id} names artist "
                                    f"{artist_id}, absent from {LFM1B_ARTISTS_FILE}; kept "
                                    "unmatched")
    yield track_id, artist, fields[1]


def _count_events(path: str, skipped: records.SkipCounter, known_tracks: np.ndarray,
                  column_tracks: np.ndarray, column_of: np.ndarray,
                  chunk_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
  """Counts LFM-1b events per (user, column).

  Args:
    known_tracks: sorted LFM-1b track ids of the tracks file; events on others are "unknown_track".
    column_tracks: sorted LFM-1b track ids that have a column.
    column_of: [len(column_tracks)] the column of each.

  Returns:
    (user ids, columns, counts) of the distinct pairs, and totals: "events" (well-formed events on
    known tracks), "covered" (those on a track with a column), "users" (distinct users among
    "events"), "users_kept" (distinct users among "covered").
  """
  _require_file(path, LFM1B_EVENTS_FILE)
  name = os.path.basename(path)
  pair_parts: list[tuple[np.ndarray, np.ndarray]] = []
  user_parts: list[np.ndarray] = []
  kept_user_parts: list[np.ndarray] = []
  totals = collections.Counter()
  users: list[int] = []
  tracks: list[int] = []

  def flush():
    u = np.array(users, np.int64)
    t = np.array(tracks, np.int64)
    users.clear()
    tracks.clear()
    known = np.isin(t, known_tracks, assume_unique=False)
    skipped.add_many("unknown_track", int((~known).sum()),
              (f"{name}: event of user {a} on track {b}, absent from {LFM1B_TRACKS_FILE}"
               for a, b in zip(u[~known][:5].tolist(), t[~known][:5].tolist())))
    u, t = u[known], t[known]
    totals["events"] += len(t)
    user_parts.append(np.unique(u))
    at = np.minimum(np.searchsorted(column_tracks, t), max(len(column_tracks) - 1, 0))
    hit = column_tracks[at] == t if len(column_tracks) else np.zeros(len(t), bool)
    totals["covered"] += int(hit.sum())
    u, c = u[hit], column_of[at[hit]]
    kept_user_parts.append(np.unique(u))
    # Users fit in 32 bits (LFM-1b has ~120k), so one int64 key per pair sorts and counts fast.
    keys, n = np.unique((u << 32) | c, return_counts=True)
    pair_parts.append((keys, n))

  for number, line in _lines(path):
    fields = line.split("\t")
    values = [_int_or_none(f) for f in fields] if len(fields) == 5 else None
    if values is None or None in values or not 0 <= values[0] < 2**31:
      skipped.add("bad_row", f"{name} line {number}: expected five integers user-id<TAB>"
                             "artist-id<TAB>album-id<TAB>track-id<TAB>timestamp")
      continue
    users.append(values[0])
    tracks.append(values[3])
    if len(users) >= chunk_rows:
      flush()
  if users or not pair_parts:
    flush()

  keys = np.concatenate([k for k, _ in pair_parts])
  counts = np.concatenate([n for _, n in pair_parts])
  keys, inverse = np.unique(keys, return_inverse=True)
  counts = np.bincount(inverse.ravel(), weights=counts, minlength=len(keys)).astype(np.int64)
  totals["users"] = len(np.unique(np.concatenate(user_parts)))
  totals["users_kept"] = len(np.unique(np.concatenate(kept_user_parts)))
  return keys >> 32, keys & 0xFFFFFFFF, counts, dict(totals)


def read_lfm1b_plays(lfm1b_dir: str, skipped: records.SkipCounter | None = None, *,
                     chunk_rows: int = 1_000_000) -> PlayCounts:
  """LFM-1b events counted per (user, track), every track of the tracks file its own item.

  Users and items are the LFM-1b ids as strings, in increasing numeric order. Events on tracks
  absent from LFM-1b_tracks.txt are counted as "unknown_track".
  """
  skipped = skipped if skipped is not None else records.SkipCounter()
  track_ids = _lfm1b_track_ids(os.path.join(lfm1b_dir, LFM1B_TRACKS_FILE), skipped)
  users, cols, counts, _ = _count_events(os.path.join(lfm1b_dir, LFM1B_EVENTS_FILE), skipped,
                                         track_ids, track_ids, np.arange(len(track_ids)),
                                         chunk_rows)
  user_ids, rows = np.unique(users, return_inverse=True)
  return PlayCounts.from_coordinates([str(u) for u in user_ids.tolist()],
                                     [str(t) for t in track_ids.tolist()], rows.ravel(), cols,
                                     counts)


def _lfm1b_track_ids(path: str, skipped: records.SkipCounter) -> np.ndarray:
  """Sorted ids of the well-formed, distinct rows of LFM-1b_tracks.txt (artists not needed)."""
  _require_file(path, LFM1B_TRACKS_FILE)
  name = os.path.basename(path)
  ids: set[int] = set()
  for number, line in _lines(path):
    fields = line.split("\t")
    track_id = _int_or_none(fields[0]) if len(fields) == 3 else None
    if track_id is None or _int_or_none(fields[2]) is None:
      skipped.add("bad_row", f"{name} line {number}: expected track-id<TAB>track-name<TAB>"
                             "artist-id with integer ids")
      continue
    if track_id in ids:
      skipped.add("duplicate_id", f"{name} line {number}: track {track_id} again")
      continue
    ids.add(track_id)
  return np.array(sorted(ids), np.int64)


# --------------------------------------------------------------------------------------------------
# MSD catalogue and catalogue matching.


@dataclasses.dataclass
class MsdCatalogue:
  """unique_tracks.txt: parallel lists, in file order."""

  track_ids: list[str]
  song_ids: list[str]
  artists: list[str]
  titles: list[str]


def read_msd_catalogue(path: str, skipped: records.SkipCounter | None = None) -> MsdCatalogue:
  """unique_tracks.txt (`track_id<SEP>song_id<SEP>artist name<SEP>title`)."""
  skipped = skipped if skipped is not None else records.SkipCounter()
  _require_file(path, MSD_CATALOGUE_FILE)
  name = os.path.basename(path)
  catalogue = MsdCatalogue([], [], [], [])
  seen: set[str] = set()
  for number, line in _lines(path):
    fields = line.split(MSD_SEP)
    if len(fields) != 4 or not fields[0] or not fields[1]:
      skipped.add("bad_row", f"{name} line {number}: {len(fields)} fields or an empty id, "
                             "expected track_id<SEP>song_id<SEP>artist name<SEP>title")
      continue
    if fields[0] in seen:
      skipped.add("duplicate_id", f"{name} line {number}: track {fields[0]} again")
      continue
    seen.add(fields[0])
    catalogue.track_ids.append(fields[0])
    catalogue.song_ids.append(fields[1])
    catalogue.artists.append(fields[2])
    catalogue.titles.append(fields[3])
  return catalogue


@dataclasses.dataclass
class CoverageReport:
  """How much of LFM-1b the catalogue matching keeps.

  Attributes:
    lfm1b_tracks: usable rows of LFM-1b_tracks.txt.
    lfm1b_tracks_matched: those whose (artist, title) names an MSD track.
    lfm1b_tracks_unmatched: the others.
    duplicates_merged: matched LFM-1b tracks folded into another one's column.
    items: columns of the play counts (distinct matched keys, plus `popular_tracks_added`).
    msd_tracks: usable rows of unique_tracks.txt.
    msd_tracks_matched: MSD tracks that some column stands for.
    plays: well-formed events on known tracks.
    plays_covered: those on a track with a column (matched, or among the `top_n_tracks`).
    users: distinct users among `plays`.
    users_kept: users with at least one covered play (the rows of the play counts).
    popular_tracks_added: unmatched LFM-1b tracks among the `top_n_tracks` most played, each its
      own column (0 without `top_n_tracks`).
  """

  lfm1b_tracks: int
  lfm1b_tracks_matched: int
  lfm1b_tracks_unmatched: int
  duplicates_merged: int
  items: int
  msd_tracks: int
  msd_tracks_matched: int
  plays: int
  plays_covered: int
  users: int
  users_kept: int
  popular_tracks_added: int = 0

  @property
  def plays_covered_fraction(self) -> float:
    return self.plays_covered / self.plays if self.plays else 0.0

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "plays_covered_fraction": self.plays_covered_fraction}


@dataclasses.dataclass
class CatalogueMatch:
  """LFM-1b play counts on MSD tracks.

  Attributes:
    plays: users are LFM-1b user ids; items are the first MSD track id (in unique_tracks.txt order)
      of each matched (artist, title) key, then the LFM-1b id of each unmatched popular track
      (`top_n_tracks`), increasing; `plays.item_tracks` lists every track an item stands for.
    msd_tracks: [items] every MSD track id the column stands for (the item id first); empty for a
      popular unmatched track.
    lfm1b_tracks: [items] the LFM-1b track ids merged into the column, increasing.
    coverage: the counts of `CoverageReport`.
  """

  plays: PlayCounts
  msd_tracks: list[tuple[str, ...]]
  lfm1b_tracks: list[tuple[int, ...]]
  coverage: CoverageReport


def match_lfm1b_to_msd(lfm1b_dir: str, msd_catalogue_path: str,
                       skipped: records.SkipCounter | None = None, *,
                       chunk_rows: int = 1_000_000, top_n_tracks: int = 0) -> CatalogueMatch:
  """Matches LFM-1b tracks to the MSD and counts plays per (user, matched song).

  `lfm1b_dir` holds LFM-1b_LEs.txt, LFM-1b_tracks.txt and LFM-1b_artists.txt; see the module
  docstring for the matching rule. With `top_n_tracks` > 0 the `top_n_tracks` most-played LFM-1b
  tracks are kept too, the unmatched ones as columns of their own after the matched ones (the
  thesis' final factors, chapter 5.3). Users without a play on a kept track are left out of the
  play counts (and counted in `coverage`).
  """
  skipped = skipped if skipped is not None else records.SkipCounter()
  for file in (LFM1B_EVENTS_FILE, LFM1B_TRACKS_FILE, LFM1B_ARTISTS_FILE):
    _require_file(os.path.join(lfm1b_dir, file), file)
  catalogue = read_msd_catalogue(msd_catalogue_path, skipped)
  msd_of_key: dict[tuple[str, str], list[str]] = {}
  for track_id, artist, title in zip(catalogue.track_ids, catalogue.artists, catalogue.titles):
    msd_of_key.setdefault(match_key(artist, title), []).append(track_id)

  artists = read_lfm1b_artists(os.path.join(lfm1b_dir, LFM1B_ARTISTS_FILE), skipped)
  column_of_key: dict[tuple[str, str], int] = {}
  keys_in_order: list[tuple[str, str]] = []
  known: list[int] = []
  matched_tracks: list[int] = []
  matched_columns: list[int] = []
  for track_id, artist, title in iter_lfm1b_tracks(
      os.path.join(lfm1b_dir, LFM1B_TRACKS_FILE), artists, skipped):
    known.append(track_id)
    key = match_key(artist, title) if artist is not None else None
    if key not in msd_of_key:
      continue
    if key not in column_of_key:
      column_of_key[key] = len(keys_in_order)
      keys_in_order.append(key)
    matched_tracks.append(track_id)
    matched_columns.append(column_of_key[key])
  del artists

  known_sorted = np.unique(np.array(known, np.int64))
  order = np.argsort(np.array(matched_tracks, np.int64), kind="stable")
  column_tracks = np.array(matched_tracks, np.int64)[order]
  column_of = np.array(matched_columns, np.int64)[order]
  events = os.path.join(lfm1b_dir, LFM1B_EVENTS_FILE)
  popular: list[int] = []
  if top_n_tracks:
    # Which tracks are the most played is known only after the last event: count every (user,
    # track) pair, then give the popular unmatched tracks their columns and fold the rest away.
    users, track_rows, counts, totals = _count_events(
        events, skipped, known_sorted, known_sorted, np.arange(len(known_sorted)), chunk_rows)
    top = most_played(np.bincount(track_rows, weights=counts, minlength=len(known_sorted)),
                      int(top_n_tracks))
    column_of_row = np.full(len(known_sorted), -1, np.int64)
    column_of_row[np.searchsorted(known_sorted, column_tracks)] = column_of
    popular = [int(t) for t in known_sorted[top[column_of_row[top] < 0]].tolist()]
    column_of_row[np.searchsorted(known_sorted, popular)] = len(keys_in_order) + np.arange(
        len(popular))
    cols = column_of_row[track_rows]
    hit = cols >= 0
    users, cols, counts = users[hit], cols[hit], counts[hit]
    totals["covered"] = int(counts.sum())
    totals["users_kept"] = len(np.unique(users))
  else:
    users, cols, counts, totals = _count_events(events, skipped, known_sorted, column_tracks,
                                                column_of, chunk_rows)

  user_ids, rows = np.unique(users, return_inverse=True)
  msd_tracks = [tuple(msd_of_key[key]) for key in keys_in_order] + [()] * len(popular)
  lfm1b_of_column: list[list[int]] = [[] for _ in keys_in_order] + [[t] for t in popular]
  for track_id, column in zip(column_tracks.tolist(), column_of.tolist()):
    lfm1b_of_column[column].append(track_id)
  items = [tracks[0] for tracks in msd_tracks[:len(keys_in_order)]] + [str(t) for t in popular]
  plays = PlayCounts.from_coordinates([str(u) for u in user_ids.tolist()], items, rows.ravel(),
                                      cols, counts)
  plays.item_tracks = [tracks or (item,) for tracks, item in zip(msd_tracks, items)]
  coverage = CoverageReport(
      lfm1b_tracks=len(known_sorted),
      lfm1b_tracks_matched=len(matched_tracks),
      lfm1b_tracks_unmatched=len(known_sorted) - len(matched_tracks),
      duplicates_merged=len(matched_tracks) - len(keys_in_order),
      items=len(items),
      msd_tracks=len(catalogue.track_ids),
      msd_tracks_matched=sum(len(tracks) for tracks in msd_tracks),
      plays=totals["events"],
      plays_covered=totals["covered"],
      users=totals["users"],
      users_kept=totals["users_kept"],
      popular_tracks_added=len(popular))
  return CatalogueMatch(plays, msd_tracks, [tuple(t) for t in lfm1b_of_column], coverage)


# --------------------------------------------------------------------------------------------------
# Last.fm tags of the MSD.


def read_lastfm_tags(db_path: str, skipped: records.SkipCounter | None = None, *,
                     track_ids: Collection[str] | None = None
                     ) -> dict[str, list[tuple[str, float]]]:
  """{MSD track id: [(tag, score)]} from lastfm_tags.db, each list by decreasing score then name.

  `track_ids` restricts the result to those tracks. The database is opened read-only.
  """
  skipped = skipped if skipped is not None else records.SkipCounter()
  _require_file(db_path, LASTFM_TAGS_FILE)
  name = os.path.basename(db_path)
  # A plain connect() would create an empty database at a mistyped path; mode=ro never writes.
  connection = sqlite3.connect(f"file:{os.path.abspath(db_path)}?mode=ro", uri=True)
  try:
    tables = {row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = sorted({"tids", "tags", "tid_tag"} - tables)
    if missing:
      raise ValueError(f"{db_path} lacks the tables {missing} (it has {sorted(tables)}); expected "
                       f"{_LAYOUTS[LASTFM_TAGS_FILE]}.")
    rows = connection.execute(
        "SELECT tid_tag.ROWID, tids.tid, tags.tag, tid_tag.val FROM tid_tag "
        "LEFT JOIN tids ON tids.ROWID = tid_tag.tid LEFT JOIN tags ON tags.ROWID = tid_tag.tag")
    wanted = set(track_ids) if track_ids is not None else None
    result: dict[str, list[tuple[str, float]]] = {}
    for rowid, tid, tag, val in rows:
      if tid is None or tag is None:
        skipped.add("bad_tag_row", f"{name} tid_tag row {rowid}: tid or tag points at no row of "
                                   "tids/tags")
        continue
      if wanted is not None and tid not in wanted:
        continue
      try:
        score = float(val)
      except (TypeError, ValueError):
        score = float("nan")
      if not np.isfinite(score):
        skipped.add("bad_score", f"{name} tid_tag row {rowid}: score {val!r} for {tid} is not a "
                                 "number")
        continue
      result.setdefault(str(tid), []).append((str(tag), score))
  finally:
    connection.close()
  for tags in result.values():
    tags.sort(key=lambda pair: (-pair[1], pair[0]))
  return result


def select_tags(track_tags: dict[str, list[tuple[str, float]]], *, top_n: int | None = 50,
                min_score: float = 50.0) -> tuple[list[str], dict[str, list[str]]]:
  """The tag vocabulary and each track's tags, from scored tags.

  A track carries a tag when its score is strictly above `min_score`. The vocabulary is the `top_n`
  tags carried by the most tracks (ties: the name that sorts first; None keeps all).

  Returns:
    (vocabulary by decreasing track count, {track id: its carried tags in vocabulary order}); every
    track of `track_tags` is in the dict, with an empty list when it carries none of the vocabulary.
  """
  if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
    raise ValueError(f"top_n={top_n!r}: expected a positive int, or None to keep every tag.")
  carried = {tid: {tag for tag, score in tags if score > min_score}
             for tid, tags in track_tags.items()}
  counts = collections.Counter(tag for tags in carried.values() for tag in tags)
  vocabulary = sorted(counts, key=lambda tag: (-counts[tag], tag))
  if top_n is not None:
    vocabulary = vocabulary[:top_n]
  rank = {tag: i for i, tag in enumerate(vocabulary)}
  return vocabulary, {tid: sorted((t for t in tags if t in rank), key=rank.__getitem__)
                      for tid, tags in carried.items()}


def msd_track_tags(db_path: str, skipped: records.SkipCounter | None = None, *,
                   top_n: int | None = 50, min_score: float = 50.0,
                   track_ids: Collection[str] | None = None
                   ) -> tuple[list[str], dict[str, list[str]]]:
  """`select_tags` of `read_lastfm_tags`: the top-N tags above `min_score` and each track's list.

  With `track_ids`, the vocabulary is counted over those tracks only (e.g. the matched ones).
  """
  return select_tags(read_lastfm_tags(db_path, skipped, track_ids=track_ids), top_n=top_n,
                     min_score=min_score)


def load_plays(data: Any) -> PlayCounts:
  """The play counts named by a config's `data` block (`configs/wmf.py`: source, path,
  msd_catalogue, top_n_tracks, synthetic_size, synthetic_seed).

  Sources: `synthetic` (the built-in world's listeners), `taste_profile` (train_triplets.txt; with
  `data.msd_catalogue` its MSD song ids become the first MSD track id of each song, so the factors
  join the MSD audio, and `item_tracks` lists all the song's tracks), `lfm1b` (LFM-1b track ids)
  and `lfm1b_msd` (LFM-1b matched to the MSD by case-insensitive artist and title, duplicates
  merged, items are MSD track ids: the thesis' data). `data.top_n_tracks` > 0 keeps the most-played
  items only; for `lfm1b_msd` the most-played LFM-1b tracks join the matched ones instead
  (`match_lfm1b_to_msd`).
  """
  source = data.source
  # config.json files written before the key existed reload with every track.
  top_n = int(data.get("top_n_tracks", 0))
  if source == "synthetic":
    from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
    world = synthetic.SyntheticWorld(data.synthetic_size, seed=data.synthetic_seed)
    plays = PlayCounts.from_plays(world.tables().plays)
    return keep_most_played(plays, top_n) if top_n else plays
  if not data.path:
    raise ValueError(f"data.source={source!r} needs data.path: the Taste Profile's "
                     "train_triplets.txt file, or the LFM-1b folder (--data.path=...).")
  skipped = records.SkipCounter()
  catalogue_path = data.get("msd_catalogue", "")
  if source == "taste_profile":
    plays = read_taste_profile(data.path, skipped)
    if catalogue_path:
      plays = _song_ids_to_track_ids(plays, read_msd_catalogue(catalogue_path, skipped))
  elif source == "lfm1b":
    plays = read_lfm1b_plays(data.path, skipped)
  elif source == "lfm1b_msd":
    if not catalogue_path:
      raise ValueError("data.source='lfm1b_msd' needs --data.msd_catalogue=<the MSD's "
                       "unique_tracks.txt> to match LFM-1b tracks to MSD tracks.")
    match = match_lfm1b_to_msd(data.path, catalogue_path, skipped, top_n_tracks=top_n)
    logging.info("wmf: LFM-1b matched to the MSD: %s", match.coverage)
    plays = match.plays
  else:
    raise ValueError(f"data.source={source!r} is not one of synthetic, taste_profile, "
                     "lfm1b, lfm1b_msd.")
  if skipped.counts:
    logging.warning("wmf: rows skipped while reading %s: %s", data.path,
                    dict(skipped.counts))
  if top_n and source != "lfm1b_msd":
    plays = keep_most_played(plays, top_n)
    logging.info("wmf: kept the %d most-played of the items (data.top_n_tracks=%d).",
                 len(plays.items), top_n)
  return plays


def _song_ids_to_track_ids(plays: PlayCounts,
                           catalogue: MsdCatalogue) -> PlayCounts:
  """Renames MSD song ids (SO...) to their first track id (TR...) in catalogue order, listing all
  the song's tracks in `item_tracks`; songs the catalogue lacks keep their song id (counted in the
  log)."""
  tracks_of: dict[str, list[str]] = {}
  for track_id, song_id in zip(catalogue.track_ids, catalogue.song_ids):
    tracks_of.setdefault(song_id, []).append(track_id)
  item_tracks = [tuple(tracks_of.get(song, (song,))) for song in plays.items]
  unmapped = sum(song not in tracks_of for song in plays.items)
  logging.info("wmf: %d of %d Taste Profile songs mapped to MSD track ids (%d not in the "
               "catalogue keep their song id).", len(item_tracks) - unmapped, len(item_tracks),
               unmapped)
  return dataclasses.replace(plays, items=[t[0] for t in item_tracks], item_tracks=item_tracks)
