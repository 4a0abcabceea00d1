"""MagnaTagATune (MTAT) in its published layout, as `Track` records.

MagnaTagATune (Law, West, Mandel, Bay and Downie, "Evaluation of algorithms using games: the case of
music tagging", ISMIR 2009) is about 25,900 clips of ~29 s cut from Magnatune songs, each annotated
with 188 binary tags collected through the TagATune game. MUSLSE (Weston, Bengio and Hamel; the
`000_*` paper) evaluates tag prediction on it.

Layout read here (as distributed by the dataset's authors):

```
source_dir/
  annotations_final.csv   TAB-separated, every field in double quotes. Header: "clip_id", the 188
                          tag columns ("no voice", "singer", ..., "guitar", ...), "mp3_path".
                          Values "0"/"1"; mp3_path like "f/american_bach_soloists-...-30-59.mp3".
  clip_info_final.csv     TAB-separated, all fields quoted. Header: "clip_id" "track_number" "title"
                          "artist" "album" "url" "segmentStart" "segmentEnd" "original_url"
                          "mp3_path".
  0/ 1/ ... f/            the MP3s at their mp3_path (or under `audio_dir` instead of source_dir).
```

Choices, all visible in the records and in `skipped`:

* Tags: the top `top_n_tags` by the number of clips carrying them, counted over every well-formed,
  non-duplicate row of annotations_final.csv (whether or not its audio is on disk, so that the
  vocabulary is the same for everyone who has the metadata); ties go to the name that sorts first.
  `top_n_tags=None` keeps every tag. `tag_names` is in that order (frequency, then name), and each
  track's `tags` follow it. Tags are kept as published: the release has near-synonyms and typos
  ("female" / "woman", "clasical"), which musemb does not merge.
* A clip with no tag among the kept ones stays in the data set: it still has audio and an artist.
* Artist, title and album come from clip_info_final.csv, joined on clip_id. A clip without a usable
  artist there is kept (tag tasks can still use it) without an artist (artist-based tasks leave it
  out), and counted in `skipped` under "no_artist" so that the gap is visible.
* Split: by default the convention of the MTAT literature, by the folder (the first hex digit of
  mp3_path): 0-b train, c valid, d-f test. The folders come from the release itself, so clips of
  one song stay together, but an artist may appear in several splits. `split_file` replaces it; see
  `read_split_file` for the accepted format. MUSLSE used the MIREX 2009 tag set (160 tags) and
  train/test split, which are not part of this release; supply them through `split_file` and
  `top_n_tags` to get close to that setting.
* Rows left out, counted by reason in `skipped`: "bad_row" (wrong number of columns, empty
  clip_id, a tag value other than 0/1, an empty or non-relative mp3_path), "duplicate_id" (the
  first row of a clip_id wins), "bad_path" (mp3_path not under a single hex-digit folder, when
  splitting by folder), "not_in_split_file", "missing_audio_file". Unusable clip_info rows are
  counted as "bad_clip_info_row" (and "duplicate_clip_info").

Nothing here decodes audio: a file that exists but does not decode (the release has a few empty
MP3s) is the builder's to count.
"""

from __future__ import annotations

import collections
import csv
import io
import os
from typing import Iterator

from musemb.data.sources import records

ANNOTATIONS_FILE = "annotations_final.csv"
CLIP_INFO_FILE = "clip_info_final.csv"
CLIP_INFO_HEADER = ("clip_id", "track_number", "title", "artist", "album", "url", "segmentStart",
                    "segmentEnd", "original_url", "mp3_path")
# The artist of a clip that clip_info_final.csv does not name.
# The conventional split by the release's 16 folders (0-f): 12 train, 1 valid, 3 test.
FOLDER_SPLITS = {**{d: "train" for d in "0123456789ab"}, "c": "valid",
                 **{d: "test" for d in "def"}}
# Spellings of the validation split accepted in a split file.
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                  "test": "test"}

_LAYOUT_HELP = (
    f"A MagnaTagATune directory holds {ANNOTATIONS_FILE} and {CLIP_INFO_FILE} (both TAB-separated, "
    "fields in double quotes, as released by the dataset's authors) and the audio folders 0/ .. f/ "
    "with the MP3s at each row's mp3_path (or pass audio_dir= where the folders live elsewhere).")


def _tsv_rows(path: str) -> list[list[str]]:
  """Rows of a TAB-separated file with double-quoted fields; blank lines are dropped."""
  reader = csv.reader(io.StringIO(records.read_text(path), newline=""), delimiter="\t", quotechar='"')
  return [row for row in reader if row and any(cell.strip() for cell in row)]


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MagnaTagATune metadata file {path} does not exist. {_LAYOUT_HELP}")


def _check_top_n(top_n_tags: int | None) -> None:
  if top_n_tags is not None and (isinstance(top_n_tags, bool) or not isinstance(top_n_tags, int)
                                 or top_n_tags < 1):
    raise ValueError(f"top_n_tags={top_n_tags!r}: expected a positive int, or None to keep "
                     "every tag.")


def top_tags(counts: collections.Counter[str], all_tags: list[str],
             top_n: int | None) -> list[str]:
  """The `top_n` tags by count (ties: the name that sorts first); None keeps all of `all_tags`."""
  ordered = sorted(all_tags, key=lambda tag: (-counts[tag], tag))
  return ordered if top_n is None else ordered[:top_n]


def read_split_file(path: str) -> tuple[str, dict[str, str]]:
  """Reads a split assignment for MTAT clips.

  Format: a CSV (comma) or TSV (TAB; chosen when the header line holds a TAB) file with a header
  row naming a `split` column and a key column, `clip_id` (preferred when both are present) or
  `mp3_path` (as written in annotations_final.csv, e.g. `c/artist-album-01-song-0-29.mp3`). Split
  values are `train`, `valid` or `test` (`val` and `validation` are read as `valid`; case and
  surrounding spaces are ignored). Fields may be double-quoted; blank lines are ignored. The
  headerless `index<TAB>path` lists of some repositories are not read: add a header line.

  Returns:
    (key column name, {key: split}).

  Raises:
    FileNotFoundError, ValueError: naming the file (and line) when it cannot be used as a split.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MTAT split file {path} does not exist.")
  text = records.read_text(path)
  first_line = text.split("\n", 1)[0]
  delimiter = "\t" if "\t" in first_line else ","
  rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"'))
  numbered = [(i + 1, row) for i, row in enumerate(rows) if row and any(c.strip() for c in row)]
  if not numbered:
    raise ValueError(f"MTAT split file {path} is empty; expected a header line such as "
                     "'clip_id,split' followed by one line per clip.")
  header = [cell.strip().lower() for cell in numbered[0][1]]
  key_column = "clip_id" if "clip_id" in header else "mp3_path"
  if key_column not in header or "split" not in header:
    raise ValueError(f"MTAT split file {path}: header {numbered[0][1]} needs a 'split' column and "
                     "a 'clip_id' or 'mp3_path' column, e.g. 'clip_id,split'.")
  key_at, split_at = header.index(key_column), header.index("split")
  assignment: dict[str, str] = {}
  for line, row in numbered[1:]:
    if len(row) != len(header):
      raise ValueError(f"MTAT split file {path}, line {line}: {len(row)} fields where the header "
                       f"has {len(header)}.")
    key, value = row[key_at].strip(), row[split_at].strip().lower()
    if not key:
      raise ValueError(f"MTAT split file {path}, line {line}: empty {key_column}.")
    if value not in _SPLIT_ALIASES:
      raise ValueError(f"MTAT split file {path}, line {line}: split {row[split_at]!r} is not one "
                       f"of {records.SPLITS} (or 'val'/'validation').")
    split = _SPLIT_ALIASES[value]
    if assignment.setdefault(key, split) != split:
      raise ValueError(f"MTAT split file {path}, line {line}: {key_column} {key!r} is put in both "
                       f"{assignment[key]!r} and {split!r}; a clip belongs to one split.")
  return key_column, assignment


class MagnaTagATune:
  """MagnaTagATune clips with their tags, artist and split; see the module docstring.

  Everything is read when the object is built, so `tag_names`, `artist_names` and `skipped` are
  final from then on and `tracks()` can be iterated any number of times.
  """

  name = "mtat"

  def __init__(self, source_dir: str, *, top_n_tags: int | None = 50,
               split_file: str | None = None, audio_dir: str | None = None):
    _check_top_n(top_n_tags)
    self.source_dir = os.path.abspath(source_dir)
    self.audio_dir = os.path.abspath(audio_dir if audio_dir is not None else source_dir)
    self.top_n_tags = top_n_tags
    self.split_file = split_file
    self.skipped = records.SkipCounter()
    if not os.path.isdir(self.source_dir):
      raise FileNotFoundError(f"MagnaTagATune directory {self.source_dir} does not exist. "
                              f"{_LAYOUT_HELP}")
    if not os.path.isdir(self.audio_dir):
      raise FileNotFoundError(f"MagnaTagATune audio directory {self.audio_dir} does not exist; "
                              "it should hold the folders 0/ .. f/ of the release.")
    annotations_path = os.path.join(self.source_dir, ANNOTATIONS_FILE)
    clip_info_path = os.path.join(self.source_dir, CLIP_INFO_FILE)
    _require_file(annotations_path)
    _require_file(clip_info_path)

    all_tags, clips = self._read_annotations(annotations_path)
    clip_info = self._read_clip_info(clip_info_path)
    split_key, split_of = (read_split_file(split_file) if split_file is not None
                           else (None, None))

    counts = collections.Counter(tag for _, tags, _ in clips for tag in tags)
    self.tag_names = top_tags(counts, all_tags, top_n_tags)
    kept = set(self.tag_names)
    rank = {tag: i for i, tag in enumerate(self.tag_names)}

    self._tracks: list[records.Track] = []
    for clip_id, tags, mp3_path in clips:
      if split_of is None:
        folder = mp3_path.split("/", 1)[0].lower()
        if folder not in FOLDER_SPLITS:
          self.skipped.add("bad_path", f"clip {clip_id}: {mp3_path!r} is not under a hex-digit "
                                       "folder 0-f")
          continue
        split = FOLDER_SPLITS[folder]
      else:
        split = split_of.get(clip_id if split_key == "clip_id" else mp3_path)
        if split is None:
          self.skipped.add("not_in_split_file", f"clip {clip_id} ({mp3_path})")
          continue
      audio_path = os.path.join(self.audio_dir, *mp3_path.split("/"))
      if not os.path.exists(audio_path):
        self.skipped.add("missing_audio_file", audio_path)
        continue
      info = clip_info.get(clip_id)
      if info is None or not info["artist"]:
        # Kept for the tag tasks, with no artist: pooling such clips under one made-up artist
        # would make them each other's "same artist" positives.
        self.skipped.add("no_artist", f"clip {clip_id}: kept without an artist")
        artists = []
      else:
        artists = [info["artist"]]
      self._tracks.append(records.Track(
          id=clip_id,
          artists=artists,
          tags=sorted((tag for tag in tags if tag in kept), key=rank.__getitem__),
          split=split,
          audio_path=audio_path,
          title=(info or {}).get("title") or None,
          album=(info or {}).get("album") or None))
    self.artist_names = sorted({a for t in self._tracks for a in t.artists})

  def _read_annotations(self, path: str) -> tuple[list[str], list[tuple[str, list[str], str]]]:
    """Returns (tag columns in file order, [(clip_id, tags, mp3_path)] of the usable rows)."""
    rows = _tsv_rows(path)
    if not rows:
      raise ValueError(f"{path} is empty. {_LAYOUT_HELP}")
    header = [cell.strip() for cell in rows[0]]
    if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
      raise ValueError(
          f"{path}: the header should be TAB-separated \"clip_id\", the tag columns, then "
          f"\"mp3_path\"; found {rows[0][:3]}...{rows[0][-1:]} ({len(header)} fields). "
          f"{_LAYOUT_HELP}")
    tags = header[1:-1]
    repeated = sorted(tag for tag, n in collections.Counter(tags).items() if n > 1)
    if repeated:
      raise ValueError(f"{path}: tag columns {repeated} appear more than once in the header.")
    clips: list[tuple[str, list[str], str]] = []
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
      where = f"{ANNOTATIONS_FILE} line {line}"
      if len(row) != len(header):
        self.skipped.add("bad_row", f"{where}: {len(row)} fields, expected {len(header)}")
        continue
      clip_id, values, mp3_path = row[0].strip(), row[1:-1], row[-1].strip()
      if not clip_id:
        self.skipped.add("bad_row", f"{where}: empty clip_id")
        continue
      if any(v.strip() not in ("0", "1") for v in values):
        self.skipped.add("bad_row", f"{where}: clip {clip_id} has a tag value other than 0/1")
        continue
      if (not mp3_path or mp3_path.startswith("/") or os.path.isabs(mp3_path)
          or ".." in mp3_path.split("/")):
        self.skipped.add("bad_row", f"{where}: clip {clip_id} has mp3_path {mp3_path!r}, "
                                    "expected a path relative to the audio directory")
        continue
      if clip_id in seen:
        self.skipped.add("duplicate_id", f"{where}: clip {clip_id} again")
        continue
      seen.add(clip_id)
      clips.append((clip_id, [t for t, v in zip(tags, values) if v.strip() == "1"], mp3_path))
    return tags, clips

  def _read_clip_info(self, path: str) -> dict[str, dict[str, str]]:
    """Returns {clip_id: {"artist", "title", "album"}} from clip_info_final.csv."""
    rows = _tsv_rows(path)
    header = tuple(cell.strip() for cell in rows[0]) if rows else ()
    missing = [c for c in ("clip_id", "title", "artist", "album") if c not in header]
    if missing:
      raise ValueError(f"{path}: the header lacks {missing}; expected the TAB-separated columns "
                       f"{list(CLIP_INFO_HEADER)}. {_LAYOUT_HELP}")
    at = {column: header.index(column) for column in ("clip_id", "title", "artist", "album")}
    info: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
      where = f"{CLIP_INFO_FILE} line {line}"
      if len(row) != len(header) or not row[at["clip_id"]].strip():
        self.skipped.add("bad_clip_info_row",
                         f"{where}: {len(row)} fields (expected {len(header)}) or no clip_id")
        continue
      clip_id = row[at["clip_id"]].strip()
      if clip_id in info:
        self.skipped.add("duplicate_clip_info", f"{where}: clip {clip_id} again")
        continue
      info[clip_id] = {k: row[at[k]].strip() for k in ("title", "artist", "album")}
    return info

  def tracks(self) -> Iterator[records.Track]:
    """The usable clips, in annotations_final.csv order."""
    yield from self._tracks

  def tables(self) -> records.SourceTables:
    """MTAT has no playlists, plays, reviews or artist similarity: all empty."""
    return records.SourceTables()

  def description(self) -> str:
    by_split = collections.Counter(t.split for t in self._tracks)
    tag_rule = ("all tags" if self.top_n_tags is None
                else f"the top {self.top_n_tags} tags by clip count")
    split_rule = (f"split from {self.split_file}" if self.split_file is not None
                  else "split by folder (0-b train, c valid, d-f test)")
    sizes = ", ".join(f"{split} {by_split[split]}" for split in records.SPLITS)
    return (f"MagnaTagATune (Law et al., ISMIR 2009) from {self.source_dir}: "
            f"{len(self._tracks)} clips ({sizes}), "
            f"{len(self.tag_names)} tags ({tag_rule}), {len(self.artist_names)} artists; "
            f"{split_rule}; {self.skipped.total} rows counted in skipped "
            f"({dict(self.skipped.counts)}).")
