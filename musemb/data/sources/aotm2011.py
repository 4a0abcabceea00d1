r"""Art of the Mix 2011 (AotM-2011) playlists as `records.Playlist` sequences of MSD track ids.

AotM-2011 (McFee and Lanckriet, "Hypergraph models of playlist dialects", ISMIR 2012) holds the
101,343 playlists that users posted to artofthemix.org from 1998 to 2011, their songs matched to the
Million Song Dataset (MSD). Lin, Chung and Chen (`002_*` paper, section IV.B) propagate tags between
neighbouring songs of these playlists: a song's tags pass to a song d positions away with a
probability that decays with d, so what this module must get right is which songs a playlist holds
and how far apart they are.

Layout read here, exactly as published (aotm2011_playlists.json.gz on Brian McFee's AotM-2011 page,
https://bmcfee.github.io/data/aotm2011.html; gzipped or not, told apart by the gzip magic bytes):
one JSON array of playlist objects,

```
{"mix_id": 89567,                          a unique integer
 "category": "Mixed Genre",                about 40 categories
 "timestamp": "2005-03-27T10:53:00",       when it was posted
 "user": {"name": "pulmotor", "member_since": "2004-03-21T00:00:00", "mixes_posted": "23"},
 "playlist": [[["peter murphy", "marlene dietrich's favourite poem"], null],
              [["the walker brothers", "the sun ain't gonna shine anymore"], "SOFDPDC12A58A7D198"],
              ...],                         every entry as posted:
                                            [[artist, title], song id or null]
 "filtered_lists": [["SOFDPDC12A58A7D198"], ["SOPIEQP12A8C13F268", "SOKMCJK12A6D4F6105"], ...]}
                                            the runs of consecutive entries matched to the MSD
```

Song ids are MSD *song* ids ("SO" and 16 capitals or digits); the MSD's audio and Last.fm tags are
keyed by *track* id ("TR..."), so songs are mapped to tracks through the MSD catalogue
unique_tracks.txt (`track_id<SEP>song_id<SEP>artist name<SEP>title`, see
`musemb.data.sources.listening.read_msd_catalogue`).

Choices, all visible in the records and in `skipped`:

* Song to track: a song with several tracks becomes the first of them in unique_tracks.txt order;
  when the caller passes `available` (the track ids that have audio and tags in the collection),
  the first of its tracks that is available, so a song is only lost when none of its tracks can be
  used. This is the rule `listening` applies to Taste Profile songs.
* `sequence` says which sequence a playlist contributes; the trade is between distances and gaps:

  - "filtered" (the default): each run of `filtered_lists` is its own sequence, id
    "<mix_id>/<k>" (k the run's index in `filtered_lists`, kept when earlier runs are dropped).
    No sequence crosses an entry the MSD did not match, so two songs are only ever neighbours if
    nothing unknown stood between them; but songs of one playlist in different runs are not
    related at all, and runs are short (the published example has runs of 1, 2 and 4 songs out of
    14 entries). Songs dropped inside a run (unknown, not available, repeated) close ranks: the
    songs around them become neighbours, as when the paper "excluded" songs without tags (its
    80,578 playlists average 6 songs).
  - "playlist": the whole `playlist` is one sequence, id "<mix_id>", position i of `track_ids`
    being entry i of the published playlist. An entry without a usable track (null song id,
    unknown, not available, repeated, malformed) stays as a gap, `None`, so distances count every
    song the author put between two tracks (a walk along the playlist counts a gap as a step and
    finds no tags there). More of each playlist is used, at the price of relating songs across
    entries we know nothing about.

* A song that comes again in the same sequence (same track) is not used again: in "playlist" mode
  the repeat is a gap, in "filtered" mode it is dropped. Propagating a song's tags to itself adds
  nothing, and a song's position in a playlist should be one position.
* A sequence keeps at least `MIN_SONGS` (2) tracks, so every song in it has a neighbour to take
  tags from; shorter ones are left out (counted once as "short_sequence", their songs not again).
* The first playlist of a `mix_id` wins; a later one is "duplicate_mix_id".
* A playlist is checked against the published layout in both modes, so both modes read the same
  playlists: it must be an object with all of `REQUIRED_KEYS`, `mix_id` an integer, `user` an
  object whose `name` is a string (the playlist's `user`; an empty name becomes None), `playlist`
  and `filtered_lists` lists. `category`, `timestamp` and the user's other fields are not used and
  not checked (the published example has `mixes_posted` as a string).
* `filtered_lists` is trusted as published; it is not checked against `playlist` (its publisher
  says it can be reconstructed from it).

Left out, counted by reason in `skipped` (one count per item; in "playlist" mode every gap is one
count, so each position of a published playlist that holds no track is accounted for):
"malformed_playlist" (not an object, a missing key, a wrong type), "duplicate_mix_id",
"malformed_entry" ("playlist" mode: an entry that is not `[[artist, title], song id or null]`;
"filtered" mode: a run that is not a list, an element that is not a song id), "unmatched_song"
("playlist" mode: a null song id, the entries AotM-2011 could not match), "unknown_song" (a song id
that unique_tracks.txt lacks), "not_in_collection" (a song none of whose tracks is in `available`,
only when it is given), "repeated_song", "short_sequence". Rows of unique_tracks.txt that cannot
be used, when this module reads it, are counted with the prefix "catalogue_".

Cost: the published file is read whole (about 50 MB gzipped); Python's JSON objects of 101,343
playlists take a few GB for the moment of the import.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
from typing import Any, Collection, Iterable, Mapping, Sequence

from absl import logging

from musemb.data.sources import listening
from musemb.data.sources import records

PLAYLISTS_FILE = "aotm2011_playlists.json.gz"
SEQUENCES = ("filtered", "playlist")
MIN_SONGS = 2
REQUIRED_KEYS = ("mix_id", "category", "timestamp", "user", "playlist", "filtered_lists")
PAGE = "https://bmcfee.github.io/data/aotm2011.html"
_SONG_ID = re.compile(r"SO[0-9A-Z]{16}")
_TRACK_ID = re.compile(r"TR[0-9A-Z]{16}")
_GZIP_MAGIC = b"\x1f\x8b"
_LAYOUT = ("one JSON array of playlist objects with the keys " + ", ".join(REQUIRED_KEYS)
           + f", as published in {PLAYLISTS_FILE} ({PAGE})")


def is_song_id(value: Any) -> bool:
  """Whether `value` is an MSD song id: "SO" and 16 capitals or digits (SOFDPDC12A58A7D198)."""
  return isinstance(value, str) and _SONG_ID.fullmatch(value) is not None


def check_sequence(sequence: str) -> str:
  """Returns `sequence` if it is one of `SEQUENCES`; raises ValueError naming them otherwise."""
  if sequence not in SEQUENCES:
    raise ValueError(f"sequence={sequence!r}: expected one of {SEQUENCES} ('filtered': each run "
                     "of filtered_lists is a sequence; 'playlist': the whole playlist, unmatched "
                     "entries kept as gaps).")
  return sequence


def song_tracks(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
  """{song id: its track ids in the given order} from (track id, song id) pairs."""
  tracks: dict[str, list[str]] = {}
  for track_id, song_id in pairs:
    tracks.setdefault(song_id, []).append(track_id)
  return {song: tuple(ids) for song, ids in tracks.items()}


def read_song_tracks(path: str, skipped: records.SkipCounter | None = None
                     ) -> dict[str, tuple[str, ...]]:
  """{song id: track ids in file order} from the MSD's unique_tracks.txt.

  Rows `listening.read_msd_catalogue` refuses are counted there ("bad_row", "duplicate_id"); a
  track id that is not "TR" and 16 capitals or digits is counted as "bad_track_id".

  Raises:
    FileNotFoundError: `path` does not exist; the message says what the file is and where it
      comes from.
  """
  skipped = skipped if skipped is not None else records.SkipCounter()
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"MSD catalogue {path} does not exist. AotM-2011 names songs by MSD song id (SO...), and "
        "musemb maps them to MSD track ids (TR...) through the MSD's "
        f"{listening.MSD_CATALOGUE_FILE} (track_id<SEP>song_id<SEP>artist name<SEP>title, one "
        "line per track, from the MSD's AdditionalFiles): pass its path (catalogue=..., or put "
        "it in the MSD --source_dir).")
  catalogue = listening.read_msd_catalogue(path, skipped)
  pairs = []
  for track_id, song_id in zip(catalogue.track_ids, catalogue.song_ids):
    if _TRACK_ID.fullmatch(track_id) is None:
      skipped.add("bad_track_id", f"{os.path.basename(path)}: {track_id!r} is not an MSD track id")
      continue
    pairs.append((track_id, song_id))
  return song_tracks(pairs)


def file_digest(path: str) -> str:
  """8 hex digits of a file's content, so that a changed playlists file names a new config."""
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  except OSError as e:
    raise FileNotFoundError(f"AotM-2011 playlists file {path!r} cannot be read ({e}); pass the "
                            f"path of {PLAYLISTS_FILE} (or the .json inside it).") from e
  return digest.hexdigest()[:8]


def require_file(path: str) -> None:
  """Raises FileNotFoundError, saying where the file comes from, unless `path` is a file.

  Sources call it before their long reads, so a mistyped path fails at once.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"AotM-2011 playlists file {path} does not exist; download "
                            f"{PLAYLISTS_FILE} from {PAGE} and pass its path (gzipped or not, "
                            "e.g. launch.prepare --playlists=...).")


def load_json(path: str) -> list:
  """The published file's array, gzipped or not.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not gzip-decodable although it starts like gzip, not JSON, or not an array; the
      message names the file and what to do.
  """
  require_file(path)
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(_GZIP_MAGIC):
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise ValueError(f"{path} starts like a gzip file but cannot be decompressed ({e}); the "
                       f"download is probably truncated: fetch {PLAYLISTS_FILE} from {PAGE} again "
                       "and compare it with its .md5.") from e
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError:
    # Like records.read_text: one legacy byte in a title must not stop the import.
    logging.warning("%s is not UTF-8; reading it as Latin-1.", path)
    text = data.decode("latin-1")
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                     f"expected {_LAYOUT}. A truncated download fails like this: fetch it again "
                     "and compare it with its .md5.") from e
  if not isinstance(value, list):
    raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an array; expected "
                     f"{_LAYOUT}.")
  return value


@dataclasses.dataclass
class Aotm2011Playlists:
  """What `read_playlists` made of a file.

  Attributes:
    path: the playlists file.
    sequence: "filtered" or "playlist" (module docstring).
    playlists: the sequences, in file order; `track_ids` holds None at gaps ("playlist" mode).
    skipped: what was left out and why (module docstring).
    playlists_read: well-formed playlists with a new mix_id (before "short_sequence").
  """

  path: str
  sequence: str
  playlists: list[records.Playlist]
  skipped: records.SkipCounter
  playlists_read: int = 0

  def as_dict(self) -> dict:
    """Plain JSON values for the prepared dataset's metadata."""
    tracks = [t for p in self.playlists for t in p.track_ids if t is not None]
    return {"file": self.path, "sequence": self.sequence, "playlists_read": self.playlists_read,
            "sequences": len(self.playlists), "songs": len(tracks),
            "distinct_tracks": len(set(tracks)),
            "gaps": sum(t is None for p in self.playlists for t in p.track_ids),
            "skipped": self.skipped.as_dict()}


def _playlist_problem(item: Any) -> str | None:
  """What makes `item` not a playlist of the published layout, or None."""
  if not isinstance(item, dict):
    return f"a JSON {type(item).__name__}, not an object"
  missing = [k for k in REQUIRED_KEYS if k not in item]
  if missing:
    return f"missing {missing}"
  if not isinstance(item["mix_id"], int) or isinstance(item["mix_id"], bool):
    return f"mix_id {item['mix_id']!r} is not an integer"
  if not isinstance(item["user"], dict) or not isinstance(item["user"].get("name"), str):
    return f"user {item['user']!r} is not an object with a string name"
  for key in ("playlist", "filtered_lists"):
    if not isinstance(item[key], list):
      return f"{key} is a JSON {type(item[key]).__name__}, not an array"
  return None


def _entry_song(entry: Any) -> tuple[bool, str | None]:
  """(well formed, song id or None) of a `playlist` entry `[[artist, title], song id or null]`."""
  if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], list)
      or len(entry[0]) != 2 or not all(isinstance(x, str) for x in entry[0])):
    return False, None
  song = entry[1]
  if song is None:
    return True, None
  return is_song_id(song), song if is_song_id(song) else None


class _Resolver:
  """Song id -> (track id, None) or (None, reason), per the module docstring's rule, cached."""

  def __init__(self, songs: Mapping[str, Sequence[str]], available: Collection[str] | None):
    self._songs = songs
    self._available = None if available is None else frozenset(available)
    self._cache: dict[str, tuple[str | None, str | None]] = {}

  def __call__(self, song: str) -> tuple[str | None, str | None]:
    if song not in self._cache:
      tracks = self._songs.get(song) or ()
      if not tracks:
        self._cache[song] = (None, "unknown_song")
      elif self._available is None:
        self._cache[song] = (tracks[0], None)
      else:
        usable = [t for t in tracks if t in self._available]
        self._cache[song] = (usable[0], None) if usable else (None, "not_in_collection")
    return self._cache[song]


def read_playlists(path: str, songs: Mapping[str, Sequence[str]], *, sequence: str = "filtered",
                   available: Collection[str] | None = None) -> Aotm2011Playlists:
  """Reads AotM-2011 playlists as sequences of MSD track ids; see the module docstring.

  Args:
    path: aotm2011_playlists.json or aotm2011_playlists.json.gz, as published.
    songs: {MSD song id: its track ids in catalogue order} (`read_song_tracks`, `song_tracks`).
    sequence: "filtered" (each filtered_lists run a sequence) or "playlist" (the whole playlist,
      unusable entries as None gaps).
    available: track ids that have audio and tags in the collection; None uses every track.

  Returns:
    The sequences and the skip counts by reason.

  Raises:
    FileNotFoundError, ValueError: the file is missing, not JSON or not an array (`load_json`), or
      `sequence` is not one of `SEQUENCES`.
  """
  check_sequence(sequence)
  items = load_json(path)
  resolve = _Resolver(songs, available)
  skipped = records.SkipCounter()
  result = Aotm2011Playlists(path=os.fspath(path), sequence=sequence, playlists=[],
                             skipped=skipped)
  seen_mix_ids: set[int] = set()

  def emit(playlist_id: str, track_ids: list[str | None], user: str | None) -> None:
    usable = sum(t is not None for t in track_ids)
    if usable < MIN_SONGS:
      skipped.add("short_sequence", f"{playlist_id}: {usable} usable song(s)")
    else:
      result.playlists.append(records.Playlist(id=playlist_id, track_ids=tuple(track_ids),
                                               user=user))

  for index, item in enumerate(items):
    problem = _playlist_problem(item)
    if problem is not None:
      mix = item.get("mix_id") if isinstance(item, dict) else None
      skipped.add("malformed_playlist", f"array element {index} (mix_id {mix!r}): {problem}")
      continue
    mix_id = item["mix_id"]
    if mix_id in seen_mix_ids:
      skipped.add("duplicate_mix_id", f"array element {index}: mix_id {mix_id} again")
      continue
    seen_mix_ids.add(mix_id)
    result.playlists_read += 1
    user = item["user"]["name"] or None

    if sequence == "playlist":
      track_ids: list[str | None] = []
      used: set[str] = set()
      for position, entry in enumerate(item["playlist"]):
        where = f"mix {mix_id} entry {position}"
        well_formed, song = _entry_song(entry)
        track, reason = None, None
        if not well_formed:
          reason, detail = "malformed_entry", f"{where}: {json.dumps(entry)[:80]}"
        elif song is None:
          reason, detail = "unmatched_song", f"{where}: {entry[0][0]} - {entry[0][1]}"
        else:
          track, reason = resolve(song)
          detail = f"{where}: {song}"
          if reason is None and track in used:
            track, reason = None, "repeated_song"
        if reason is not None:
          skipped.add(reason, detail)
        else:
          used.add(track)
        track_ids.append(track)
      emit(str(mix_id), track_ids, user)
      continue

    for k, run in enumerate(item["filtered_lists"]):
      run_id = f"{mix_id}/{k}"
      if not isinstance(run, list):
        skipped.add("malformed_entry", f"{run_id}: a JSON {type(run).__name__}, not an array")
        continue
      track_ids = []
      in_run: set[str] = set()
      for position, song in enumerate(run):
        where = f"{run_id} song {position}"
        if not is_song_id(song):
          skipped.add("malformed_entry", f"{where}: {json.dumps(song)[:80]}")
          continue
        track, reason = resolve(song)
        if reason is None and track in in_run:
          reason = "repeated_song"
        if reason is not None:
          skipped.add(reason, f"{where}: {song}")
          continue
        in_run.add(track)
        track_ids.append(track)
      emit(run_id, track_ids, user)

  logging.info("AotM-2011 %s (%s sequences): %d playlists read, %d sequences kept; skipped %s.",
               path, sequence, result.playlists_read, len(result.playlists),
               dict(skipped.counts))
  return result


def read_aotm2011(path: str, catalogue: str, *, sequence: str = "filtered",
                  available: Collection[str] | None = None) -> Aotm2011Playlists:
  """`read_playlists` with the song-to-track map read from unique_tracks.txt at `catalogue`.

  Catalogue rows that cannot be used are counted in the result's `skipped` as "catalogue_<reason>".
  """
  check_sequence(sequence)
  catalogue_skipped = records.SkipCounter()
  songs = read_song_tracks(catalogue, catalogue_skipped)
  result = read_playlists(path, songs, sequence=sequence, available=available)
  for reason, count in catalogue_skipped.counts.items():
    result.skipped.add_many(f"catalogue_{reason}", count, catalogue_skipped.examples[reason])
  return result
