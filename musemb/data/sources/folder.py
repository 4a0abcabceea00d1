"""Any audio collection: a folder of audio files plus one metadata table, as `Track` records.

This is the way in for data that has no importer of its own. Layout:

```
source_dir/
  metadata.csv  or  metadata.jsonl     one row per track (found automatically; or pass metadata=)
  artist_similarity.json               optional: {"artist": ["similar artist", ...], ...}
  <audio files anywhere, in any format the builder can decode>
```

Columns (CSV header names, JSONL keys; header names are case-insensitive):

* `id` (required): unique track id. In JSONL a number is read as its decimal string.
* `path` (required): the audio file, relative to source_dir or absolute.
* `artist` or `artists` (one of them is required as a column; a cell may be empty).
* `tags` (optional).
* `split` (optional): `train`, `valid` or `test` (`val` and `validation` mean `valid`; case is
  ignored). Rows without one are split by `hash_split` of their id, so each track (piece) lands in
  one split whatever the order of the rows and whatever rows are added later.
* `title`, `album` (optional).

In CSV (comma-separated, standard double quoting, UTF-8), several artists or tags share a cell,
separated by `|` or `;` (e.g. `rock|guitar;live`); neither character can therefore occur inside a
name: use JSONL for such names. In JSONL, `artists` and `tags` are lists of strings, and a plain
string is one item (it is not split). Names are stripped of surrounding spaces; repeats within a row
are dropped.

Choices, all visible in the records and in `skipped`:

* Tags: the top `top_n_tags` by the number of tracks carrying them (None keeps all), counted over
  every well-formed, non-duplicate row whether or not its audio file is present; ties go to the
  name that sorts first. `tag_names` is in that order; each track's `tags` follow it. A track with
  no kept tag stays in the data set.
* A row with an empty artist cell is kept without an artist (as in `musemb.data.sources.mtat`)
  and counted under "no_artist".
* Rows left out, counted by reason: "bad_row" (wrong number of CSV fields, invalid JSON or not an
  object, an empty id or path, a value of the wrong type, both `artist` and `artists` in one JSONL
  row), "duplicate_id" (the first row wins), "bad_split" (an unknown split value),
  "missing_audio_file".
* artist_similarity.json keeps only artists of the vocabulary; every dropped artist (a key, or a
  neighbour in a list) is counted under "similarity_unknown_artist".
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import math
import os
import re
from typing import Any, Iterator, Sequence

from musemb.data.sources import records

CSV_FILE = "metadata.csv"
JSONL_FILE = "metadata.jsonl"
SIMILARITY_FILE = "artist_similarity.json"
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                  "test": "test"}
_MULTI_SEPARATOR = re.compile(r"[|;]")
_COLUMNS = ("id", "path", "artist", "artists", "tags", "split", "title", "album")

_LAYOUT_HELP = (
    f"An audio folder holds {CSV_FILE} (comma-separated, header 'id,path,artists,tags' plus "
    f"optional 'split,title,album'; several names per cell separated by '|' or ';') or "
    f"{JSONL_FILE} (one JSON object per line with the same keys, lists for artists and tags), "
    f"with paths relative to the folder or absolute; {SIMILARITY_FILE} is optional.")


def hash_split(track_id: str, split_ratios: Sequence[float] = (0.8, 0.1, 0.1),
               seed: int = 0) -> str:
  """The split of a track without one: a pure function of (seed, id).

  SHA-256 of "<seed>:<id>" read as a number u uniform in [0, 1): train when u < ratios[0], valid
  when u < ratios[0] + ratios[1], test otherwise. Independent of Python's hash randomisation, of
  row order and of the other rows.
  """
  digest = hashlib.sha256(f"{seed}:{track_id}".encode("utf-8")).digest()
  u = int.from_bytes(digest[:8], "big") / 2.0**64
  train, valid = split_ratios[0], split_ratios[1]
  if u < train:
    return "train"
  if u < train + valid:
    return "valid"
  return "test"


def _check_ratios(split_ratios: Sequence[float]) -> tuple[float, float, float]:
  ratios = tuple(float(r) for r in split_ratios)
  if (len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios)
      or abs(sum(ratios) - 1.0) > 1e-6):
    raise ValueError(f"split_ratios={tuple(split_ratios)!r}: expected three non-negative "
                     "fractions (train, valid, test) that sum to 1, e.g. (0.8, 0.1, 0.1).")
  return ratios  # type: ignore[return-value]


def _names(value: Any, *, split_cell: bool) -> list[str] | None:
  """A cell or JSON value as a list of names; None when it has the wrong type."""
  if value is None:
    return []
  if isinstance(value, str):
    items = _MULTI_SEPARATOR.split(value) if split_cell else [value]
  elif isinstance(value, list) and all(isinstance(v, str) for v in value):
    items = value
  else:
    return None
  return list(dict.fromkeys(s.strip() for s in items if s.strip()))


def _optional_text(value: Any) -> tuple[bool, str | None]:
  """(ok, text or None) for an optional string field."""
  if value is None:
    return True, None
  if not isinstance(value, str):
    return False, None
  return True, value.strip() or None


class AudioFolder:
  """Tracks of an audio folder described by metadata.csv or metadata.jsonl; see the module doc.

  Everything is read when the object is built, so `tag_names`, `artist_names` and `skipped` are
  final from then on and `tracks()` can be iterated any number of times.
  """

  name = "folder"

  def __init__(self, source_dir: str, *, metadata: str | None = None,
               top_n_tags: int | None = None,
               split_ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0):
    if top_n_tags is not None and (isinstance(top_n_tags, bool)
                                   or not isinstance(top_n_tags, int) or top_n_tags < 1):
      raise ValueError(f"top_n_tags={top_n_tags!r}: expected a positive int, or None to keep "
                       "every tag.")
    self.split_ratios = _check_ratios(split_ratios)
    self.seed = seed
    self.top_n_tags = top_n_tags
    self.source_dir = os.path.abspath(source_dir)
    self.skipped = records.SkipCounter()
    if not os.path.isdir(self.source_dir):
      raise FileNotFoundError(f"Audio folder {self.source_dir} does not exist. {_LAYOUT_HELP}")
    self.metadata_path = self._find_metadata(metadata)

    if self.metadata_path.endswith(".csv"):
      rows = self._read_csv(self.metadata_path)
    else:
      rows = self._read_jsonl(self.metadata_path)

    usable = []
    seen: set[str] = set()
    for where, row in rows:
      if row["id"] in seen:
        self.skipped.add("duplicate_id", f"{where}: id {row['id']!r} again")
        continue
      seen.add(row["id"])
      if row["split"] is None:
        split = hash_split(row["id"], self.split_ratios, seed)
      elif row["split"].lower() in _SPLIT_ALIASES:
        split = _SPLIT_ALIASES[row["split"].lower()]
      else:
        self.skipped.add("bad_split", f"{where}: split {row['split']!r} is not one of "
                                      f"{records.SPLITS}")
        continue
      usable.append((where, row, split))

    counts = collections.Counter(tag for _, row, _ in usable for tag in row["tags"])
    self.tag_names = sorted(counts, key=lambda tag: (-counts[tag], tag))
    if top_n_tags is not None:
      self.tag_names = self.tag_names[:top_n_tags]
    rank = {tag: i for i, tag in enumerate(self.tag_names)}

    self._tracks: list[records.Track] = []
    for where, row, split in usable:
      audio_path = os.path.abspath(os.path.join(self.source_dir, row["path"]))
      if not os.path.exists(audio_path):
        self.skipped.add("missing_audio_file", audio_path)
        continue
      artists = row["artists"]
      if not artists:  # kept for tag tasks; artist-based tasks leave it out (as in mtat.py)
        self.skipped.add("no_artist", f"{where}: id {row['id']!r} kept without an artist")
      self._tracks.append(records.Track(
          id=row["id"], artists=artists,
          tags=sorted((tag for tag in row["tags"] if tag in rank), key=rank.__getitem__),
          split=split, audio_path=audio_path, title=row["title"], album=row["album"]))
    self.artist_names = sorted({a for t in self._tracks for a in t.artists})
    self._similarity = self._read_similarity()

  def _find_metadata(self, metadata: str | None) -> str:
    if metadata is not None:
      path = metadata if os.path.isabs(metadata) else os.path.join(self.source_dir, metadata)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"Metadata file {path} does not exist (a relative metadata= is "
                                f"read from {self.source_dir}).")
      if not path.endswith((".csv", ".jsonl")):
        raise ValueError(f"Metadata file {path}: expected a .csv or .jsonl file. {_LAYOUT_HELP}")
      return path
    found = [os.path.join(self.source_dir, f) for f in (CSV_FILE, JSONL_FILE)
             if os.path.isfile(os.path.join(self.source_dir, f))]
    if not found:
      raise FileNotFoundError(f"{self.source_dir} has neither {CSV_FILE} nor {JSONL_FILE}. "
                              f"{_LAYOUT_HELP}")
    if len(found) == 2:
      raise ValueError(f"{self.source_dir} has both {CSV_FILE} and {JSONL_FILE}; pass "
                       "metadata= to say which one to read.")
    return found[0]

  def _read_csv(self, path: str) -> list[tuple[str, dict]]:
    """Well-formed rows as (where, row dict); the rest are counted."""
    table = list(csv.reader(io.StringIO(records.read_text(path), newline="")))
    numbered = [(i + 1, r) for i, r in enumerate(table) if r and any(c.strip() for c in r)]
    if not numbered:
      raise ValueError(f"{path} is empty. {_LAYOUT_HELP}")
    header = [c.strip().lower() for c in numbered[0][1]]
    problems = []
    if "id" not in header or "path" not in header:
      problems.append("it needs the columns 'id' and 'path'")
    if ("artist" in header) == ("artists" in header):
      problems.append("it needs exactly one of the columns 'artist' and 'artists'")
    repeated = sorted(c for c, n in collections.Counter(header).items() if n > 1)
    if repeated:
      problems.append(f"columns {repeated} appear more than once")
    if problems:
      raise ValueError(f"{path}: header {numbered[0][1]}: {'; '.join(problems)}. {_LAYOUT_HELP}")
    at = {c: header.index(c) for c in _COLUMNS if c in header}
    artist_column = "artists" if "artists" in at else "artist"
    rows = []
    for line, cells in numbered[1:]:
      where = f"{os.path.basename(path)} line {line}"
      if len(cells) != len(header):
        self.skipped.add("bad_row", f"{where}: {len(cells)} fields, expected {len(header)}")
        continue
      cell = {column: cells[i] for column, i in at.items()}
      row = {"id": cell["id"].strip(), "path": cell["path"].strip(),
             "artists": _names(cell[artist_column], split_cell=True),
             "tags": _names(cell.get("tags"), split_cell=True),
             **{k: cell.get(k, "").strip() or None for k in ("split", "title", "album")}}
      if not row["id"] or not row["path"]:
        self.skipped.add("bad_row", f"{where}: empty id or path")
        continue
      rows.append((where, row))
    return rows

  def _read_jsonl(self, path: str) -> list[tuple[str, dict]]:
    """Well-formed rows as (where, row dict); the rest are counted."""
    rows = []
    lines = records.read_text(path).splitlines()
    for line, text in enumerate(lines, start=1):
      if not text.strip():
        continue
      where = f"{os.path.basename(path)} line {line}"
      try:
        obj = json.loads(text)
      except json.JSONDecodeError as e:
        self.skipped.add("bad_row", f"{where}: invalid JSON ({e.msg})")
        continue
      if not isinstance(obj, dict):
        self.skipped.add("bad_row", f"{where}: a JSON {type(obj).__name__}, expected an object")
        continue
      row, problem = self._json_row(obj)
      if problem:
        self.skipped.add("bad_row", f"{where}: {problem}")
        continue
      rows.append((where, row))
    return rows

  @staticmethod
  def _json_row(obj: dict) -> tuple[dict | None, str | None]:
    """One JSONL object as a row dict, or (None, what is wrong with it)."""
    track_id = obj.get("id")
    if isinstance(track_id, int) and not isinstance(track_id, bool):
      track_id = str(track_id)
    if not isinstance(track_id, str) or not track_id.strip():
      return None, f"id {obj.get('id')!r}: expected a non-empty string or an integer"
    path = obj.get("path")
    if not isinstance(path, str) or not path.strip():
      return None, f"path {path!r}: expected a non-empty string"
    if "artist" in obj and "artists" in obj:
      return None, "both 'artist' and 'artists'; give one"
    artists = _names(obj.get("artists", obj.get("artist")), split_cell=False)
    tags = _names(obj.get("tags"), split_cell=False)
    if artists is None or tags is None:
      return None, "artists and tags must be a string or a list of strings"
    fields = {}
    for key in ("split", "title", "album"):
      ok, fields[key] = _optional_text(obj.get(key))
      if not ok:
        return None, f"{key} {obj.get(key)!r}: expected a string"
    return {"id": track_id.strip(), "path": path.strip(), "artists": artists, "tags": tags,
            **fields}, None

  def _read_similarity(self) -> dict[str, list[str]]:
    """artist_similarity.json restricted to the artist vocabulary ({} when there is none)."""
    path = os.path.join(self.source_dir, SIMILARITY_FILE)
    if not os.path.isfile(path):
      return {}
    try:
      data = json.loads(records.read_text(path))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}); expected an object mapping each artist "
                       "to a list of similar artists.") from e
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values()):
      raise ValueError(f"{path}: expected an object mapping each artist to a list of similar "
                       'artists, e.g. {"Artist A": ["Artist B", "Artist C"]}.')
    known = set(self.artist_names)
    similarity = {}
    for artist, neighbours in data.items():
      if artist not in known:
        self.skipped.add("similarity_unknown_artist", artist)
        continue
      kept = []
      for other in dict.fromkeys(neighbours):
        if other in known:
          kept.append(other)
        else:
          self.skipped.add("similarity_unknown_artist", f"{artist} -> {other}")
      if kept:
        similarity[artist] = kept
    return similarity

  def tracks(self) -> Iterator[records.Track]:
    """The usable tracks, in metadata order."""
    yield from self._tracks

  def tables(self) -> records.SourceTables:
    """The artist similarity map (empty without artist_similarity.json); nothing else."""
    return records.SourceTables(
        artist_similarity={a: list(n) for a, n in self._similarity.items()})

  def description(self) -> str:
    by_split = collections.Counter(t.split for t in self._tracks)
    tag_rule = ("all tags" if self.top_n_tags is None
                else f"the top {self.top_n_tags} tags by track count")
    sizes = ", ".join(f"{split} {by_split[split]}" for split in records.SPLITS)
    return (f"Audio folder {self.source_dir} described by {os.path.basename(self.metadata_path)}: "
            f"{len(self._tracks)} tracks ({sizes}), {len(self.tag_names)} tags ({tag_rule}), {len(self.artist_names)} artists, "
            f"{len(self._similarity)} artists with similar artists; rows without a split use "
            f"hash_split(id, {self.split_ratios}, seed={self.seed}); {self.skipped.total} rows "
            f"counted in skipped ({dict(self.skipped.counts)}).")
