r"""Million Song Dataset (MSD) audio previews with Last.fm tags, as `Track` records.

The MSD (Bertin-Mahieux, Ellis, Whitman and Lamere, ISMIR 2011) lists a million tracks; their audio
is not part of the release, but 30-60 s previews were fetched from 7digital by many groups and are
passed around as a folder tree named by MSD track id. Platt's thesis (`004_*` paper, chapters 3 and
6.1) trains on those previews, stored at 16 kHz, 20 s per track, with the Last.fm tags of the MSD as
the tagging target and Choi et al.'s train/valid/test split of the tagged tracks.

Layout read here (the catalogue and the tag database exactly as published; see
`musemb.data.sources.listening`, whose readers this module uses):

```
source_dir/
  unique_tracks.txt   MSD catalogue, no header: track_id<SEP>song_id<SEP>artist name<SEP>title,
                      e.g. TRAAAAK128F9318786<SEP>SOBLFFE12AF72AA5BA<SEP>Adelitas Way<SEP>Scream
  lastfm_tags.db      the Last.fm dataset's SQLite tags: tids(tid), tags(tag), tid_tag(tid, tag,
                      val), tid_tag's tid/tag the rowids of tids/tags, val a score in [0, 100]
  A/A/A/TRAAAAK128F9318786.mp3   the previews at `path_pattern` (under audio_dir= when elsewhere)
```

`path_pattern` is a `str.format` pattern with the named fields `{root}` (the audio directory),
`{tid}` (the MSD track id, required) and `{song_id}`; a field may be indexed, `{tid[2]}` being the
id's third character. The default, `DEFAULT_PATH_PATTERN` = `{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}
.mp3`, is the common 7digital-preview layout (TRAAAAK128F9318786 at A/A/A/TRAAAAK128F9318786.mp3);
`{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.clip.mp3` reads the `.clip.mp3` variant, and any extension
the builder decodes (WAV, FLAC, OGG, MP3) works. A pattern that expands to a relative path is read
from the audio directory.

Choices, all visible in the records, in `skipped` and in `coverage`:

* Tags: a track carries a Last.fm tag when its score is above `min_tag_score` (50, as in Choi et
  al.'s MSD_split_for_tagging, whose README counts a tag "if the ground truth > 50"); the
  vocabulary is the `top_n_tags` (50) tags carried by the most tracks of the whole lastfm_tags.db
  (ties: the name that sorts first), so it is the same whatever audio one holds
  (`listening.select_tags`). Choi et al. then dropped a few tags unrelated to audio content, so
  their 50 differ slightly. A catalogue track carrying none of the vocabulary is kept, its tags all
  false, unless `tagged_only`.
* Artist and title come from unique_tracks.txt; the artist name (stripped, otherwise as published,
  so "Björk" and "BJÖRK" are two artists) is the track's one artist. A track with an empty artist
  name is kept without an artist and counted under "no_artist". The MSD has no album in the
  catalogue: `album` is None.
* Split: `split_file` when given (see `read_split_file`; Choi et al.'s published lists are read as
  they are); catalogue tracks absent from it are left out. Otherwise a seeded split by artist:
  `folder.hash_split("artist:" + casefolded artist name, split_ratios, seed)`, so every track of an
  artist (compared case-insensitively) lands in the same split and no artist is in two splits; the
  fractions are fractions of artists, so the track fractions only approximate them. A track
  without an artist is split by its own id.
* Audio: the builder stores the FIRST `max_seconds` of each preview (`musemb.audio.load_audio`
  decodes from the start); the thesis stored 20 s per track (`DEFAULT_CLIP_SECONDS`, what
  `launch.prepare --source=msd` and the `MusembMsd` builder's default config use) without saying
  which 20 s. A preview shorter than that is stored whole.
* Left out, counted by reason in `skipped`: from unique_tracks.txt "bad_row" (not four
  `<SEP>`-separated fields, or an empty id) and "duplicate_id" (the first row wins), then
  "bad_track_id" (not an MSD track id, "TR" and 16 capitals or digits); from lastfm_tags.db
  "bad_tag_row" and "bad_score" (see `listening.read_lastfm_tags`); then per catalogue track, in
  this order, "not_in_split_file", "untagged" (only with `tagged_only`), "missing_preview" (no file
  at the pattern's path). Ids of the split file that name no usable catalogue track are counted as
  "split_file_unknown_track".
* "missing_preview" is not held to the builder's `max_bad_fraction` (which applies to the reason
  "missing_audio_file"): a preview collection covering part of the million tracks is the normal
  case, and `coverage` records how much of the catalogue had a preview. A source in which no
  catalogue track has a preview is an error naming the paths that were looked for.

Playlists: with `playlists=` (aotm2011_playlists.json[.gz] as published), the AotM-2011 playlists
are read by `musemb.data.sources.aotm2011.read_playlists` and become the source's playlist table,
in the `playlist_sequence` mode ("filtered" or "playlist"; see that module for the trade). Their
songs map to tracks through the same unique_tracks.txt, and only tracks this source yields count
as available, so a playlist never names a track the prepared dataset cannot hold; with
`tagged_only` that means audio and a vocabulary tag, as in Lin et al. (`002_*` paper, section
IV.B: "songs without tags were excluded"). A track can still miss from the prepared splits if its
preview does not decode at build time (the builder's audio skips), so consumers join playlists to
the splits by track id. The playlists' own skip counts are kept apart from `skipped` (their units
are playlists and entries, not catalogue rows) in `playlist_report`, which the builder writes to
metadata.json under "playlists".

Cost: `listening.read_lastfm_tags` holds every scored pair of lastfm_tags.db in Python objects (the
release has about 8.6M pairs, so several GB), and checking the previews stats one file per catalogue
track (a million).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import string
from typing import Iterator, Sequence

from musemb.data.sources import aotm2011
from musemb.data.sources import folder
from musemb.data.sources import listening
from musemb.data.sources import records

CATALOGUE_FILE = listening.MSD_CATALOGUE_FILE
TAGS_FILE = listening.LASTFM_TAGS_FILE
DEFAULT_PATH_PATTERN = "{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.mp3"
PATTERN_FIELDS = ("root", "tid", "song_id")
# The thesis (section 6.1) stored 20 s of audio per track, at 16 kHz.
DEFAULT_CLIP_SECONDS = 20.0
DEFAULT_SAMPLE_RATE = 16000
# A split directory holds one id list per split, under one of these sets of names.
SPLIT_LIST_NAMES = (
    {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
    # github.com/keunwoochoi/MSD_split_for_tagging, as published.
    {"train": "train_x_msd_id.txt", "valid": "valid_x_msd_id.txt", "test": "test_x_msd_id.txt"},
)
_TRACK_ID = re.compile(r"TR[0-9A-Z]{16}")
_PATTERN_FIELD = re.compile(r"(?:root|tid|song_id)(?:\[\d+\])*")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                  "test": "test"}
_EXAMPLE_TRACK = ("TRAAAAK128F9318786", "SOBLFFE12AF72AA5BA")

_LAYOUT_HELP = (
    f"An MSD directory holds {CATALOGUE_FILE} (track_id<SEP>song_id<SEP>artist name<SEP>title, as "
    f"published), {TAGS_FILE} (the Last.fm dataset's SQLite tags) and the audio previews at "
    f"path_pattern (default {DEFAULT_PATH_PATTERN!r}); pass catalogue=, tags_db= or audio_dir= "
    "for files kept elsewhere.")


def is_track_id(text: str) -> bool:
  """Whether `text` is an MSD track id: "TR" and 16 capitals or digits (TRAAAAK128F9318786)."""
  return _TRACK_ID.fullmatch(text) is not None


def check_path_pattern(pattern: str) -> None:
  """Raises ValueError unless `pattern` is a usable preview path pattern (module docstring)."""
  if not isinstance(pattern, str) or not pattern:
    raise ValueError(f"path_pattern={pattern!r}: expected a non-empty format string such as "
                     f"{DEFAULT_PATH_PATTERN!r}.")
  try:
    fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
  except ValueError as e:
    raise ValueError(f"path_pattern={pattern!r} is not a valid format string ({e}); write fields "
                     f"as {{tid}} or {{tid[2]}} and a literal brace as {{{{ or }}}}.") from e
  unknown = sorted({f for f in fields if not _PATTERN_FIELD.fullmatch(f)})
  if unknown:
    raise ValueError(f"path_pattern={pattern!r} has the fields {unknown}; a field is one of "
                     f"{PATTERN_FIELDS}, optionally indexed as in {{tid[2]}} (no positional "
                     f"fields or attributes), e.g. {DEFAULT_PATH_PATTERN!r}.")
  bases = [re.split(r"\[", f, maxsplit=1)[0] for f in fields]
  if "tid" not in bases:
    raise ValueError(f"path_pattern={pattern!r} does not use {{tid}}, so every track would have "
                     f"the same file; e.g. {DEFAULT_PATH_PATTERN!r}.")
  try:
    pattern.format(root="", tid=_EXAMPLE_TRACK[0], song_id=_EXAMPLE_TRACK[1])
  except (IndexError, KeyError, AttributeError, TypeError, ValueError) as e:
    raise ValueError(f"path_pattern={pattern!r} cannot be expanded for the track id "
                     f"{_EXAMPLE_TRACK[0]} ({type(e).__name__}: {e}); index only within the 18 "
                     f"characters of a track id, as in {DEFAULT_PATH_PATTERN!r}.") from e


def preview_path(pattern: str, root: str, track_id: str, song_id: str = "") -> str:
  """The preview file of a track: `pattern` expanded, read from `root` when it is relative."""
  path = pattern.format(root=root, tid=track_id, song_id=song_id)
  return os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))


def artist_split(artist: str | None, track_id: str, split_ratios: Sequence[float],
                 seed: int) -> str:
  """The split of a track under the artist-level split (module docstring)."""
  key = f"artist:{artist.casefold()}" if artist else f"track:{track_id}"
  return folder.hash_split(key, split_ratios, seed)


def _check_ratios(split_ratios: Sequence[float]) -> tuple[float, float, float]:
  ratios = tuple(float(r) for r in split_ratios)
  if (len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios)
      or abs(sum(ratios) - 1.0) > 1e-6):
    raise ValueError(f"split_ratios={tuple(split_ratios)!r}: expected three non-negative "
                     "fractions of artists (train, valid, test) that sum to 1, e.g. "
                     "(0.8, 0.1, 0.1).")
  return ratios  # type: ignore[return-value]


def _split_lists(directory: str) -> dict[str, str]:
  """{split: list file} of a split directory, under one of `SPLIT_LIST_NAMES`."""
  for names in SPLIT_LIST_NAMES:
    paths = {split: os.path.join(directory, name) for split, name in names.items()}
    present = [p for p in paths.values() if os.path.isfile(p)]
    if len(present) == len(paths):
      return paths
    if present:
      missing = sorted(os.path.basename(p) for p in paths.values() if not os.path.isfile(p))
      found = sorted(os.path.basename(p) for p in present)
      raise FileNotFoundError(f"MSD split directory {directory} has {found} but not {missing}; a "
                              "split directory needs all three lists.")
  options = " or ".join(", ".join(names.values()) for names in SPLIT_LIST_NAMES)
  raise FileNotFoundError(f"MSD split directory {directory} holds none of the split lists; "
                          f"expected {options} (one track id per line).")


def _read_lines(path: str) -> list[tuple[int, str]]:
  return [(n, line.strip()) for n, line in enumerate(records.read_text(path).splitlines(), start=1)
          if line.strip() and not line.lstrip().startswith("#")]


def _check_track_id(track_id: str, path: str, line: int) -> None:
  if not is_track_id(track_id):
    raise ValueError(f"MSD split file {path}, line {line}: {track_id!r} is not an MSD track id "
                     "(TR and 16 capitals or digits, e.g. TRAAAAK128F9318786). Lists of 7digital "
                     "ids or file names cannot be used: take the *_msd_id.txt lists.")


def read_split_file(path: str) -> dict[str, str]:
  """Reads a split assignment of MSD tracks: {track id: split}.

  Two forms are read:

  * A file with one `track_id<TAB>split` line per track, split `train`, `valid` or `test` (`val`
    and `validation` are read as `valid`; case and spaces around fields are ignored). Blank lines
    and lines starting with `#` are skipped; a first line `track_id<TAB>split` is a header.
  * A directory with one list per split, one track id per line: `train.txt`, `valid.txt` and
    `test.txt`, or the `train_x_msd_id.txt`, `valid_x_msd_id.txt` and `test_x_msd_id.txt` of
    Choi et al.'s github.com/keunwoochoi/MSD_split_for_tagging, as published (pass the cloned
    repository itself).

  Converting other forms: Choi et al.'s lists to one file,
  `for s in train valid test; do sed "s/$/\t$s/" ${s}_x_msd_id.txt; done > msd_split.tsv`; the
  pickled lists of minzwon/sota-music-tagging-models (split/msd: `filtered_list_train.cP`, whose
  first 201,680 ids are train and the rest valid, and `filtered_list_test.cP`) by writing
  `ids[:201680]`, `ids[201680:]` and the test list to train.txt, valid.txt and test.txt.

  Raises:
    FileNotFoundError, ValueError: naming the file (and line) that cannot be used, including a
      track put in two splits and an id that is not an MSD track id.
  """
  if os.path.isdir(path):
    assignment: dict[str, str] = {}
    for split, list_path in _split_lists(path).items():
      for line, track_id in _read_lines(list_path):
        _check_track_id(track_id, list_path, line)
        if assignment.setdefault(track_id, split) != split:
          raise ValueError(f"MSD split file {list_path}, line {line}: track {track_id} is also in "
                           f"the {assignment[track_id]!r} list; a track belongs to one split.")
    return assignment
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MSD split file {path} does not exist; pass a track_id<TAB>split "
                            "file or a directory of train/valid/test id lists.")
  assignment = {}
  lines = _read_lines(path)
  for index, (line, text) in enumerate(lines):
    fields = [f.strip() for f in text.split("\t")]
    if index == 0 and [f.lower() for f in fields] == ["track_id", "split"]:
      continue
    if len(fields) != 2:
      raise ValueError(f"MSD split file {path}, line {line}: {len(fields)} TAB-separated fields, "
                       "expected track_id<TAB>split.")
    track_id, value = fields[0], fields[1].lower()
    _check_track_id(track_id, path, line)
    if value not in _SPLIT_ALIASES:
      raise ValueError(f"MSD split file {path}, line {line}: split {fields[1]!r} is not one of "
                       f"{records.SPLITS} (or 'val'/'validation').")
    split = _SPLIT_ALIASES[value]
    if assignment.setdefault(track_id, split) != split:
      raise ValueError(f"MSD split file {path}, line {line}: track {track_id} is put in both "
                       f"{assignment[track_id]!r} and {split!r}; a track belongs to one split.")
  if not assignment:
    raise ValueError(f"MSD split file {path} assigns no track; expected track_id<TAB>split lines.")
  return assignment


def split_file_digest(path: str) -> str:
  """8 hex digits of a split file's content (a directory: of its three lists), for config names."""
  digest = hashlib.sha256()
  try:
    if os.path.isdir(path):
      for split, list_path in _split_lists(path).items():
        with open(list_path, "rb") as f:
          digest.update(f"{split}\0".encode() + hashlib.sha256(f.read()).digest())
    else:
      with open(path, "rb") as f:
        digest.update(f.read())
  except OSError as e:
    raise FileNotFoundError(f"MSD split file {path!r} cannot be read ({e}); pass an existing file "
                            "or directory, or no split file.") from e
  return digest.hexdigest()[:8]


@dataclasses.dataclass
class MsdCoverage:
  """How much of the catalogue the source could use.

  Attributes:
    catalogue_tracks: usable rows of unique_tracks.txt (after "bad_row", "duplicate_id" and
      "bad_track_id").
    with_preview: those whose preview file exists at the pattern's path.
    with_lastfm_tags: those with any scored tag in lastfm_tags.db.
    with_vocabulary_tags: those carrying a vocabulary tag (score above min_tag_score).
    with_preview_and_vocabulary_tags: both.
    tracks: the tracks the source yields (after the split file, `tagged_only` and the previews).
    tracks_with_vocabulary_tags: those of `tracks` carrying a vocabulary tag.
    by_split: {split: tracks yielded}.
  """

  catalogue_tracks: int = 0
  with_preview: int = 0
  with_lastfm_tags: int = 0
  with_vocabulary_tags: int = 0
  with_preview_and_vocabulary_tags: int = 0
  tracks: int = 0
  tracks_with_vocabulary_tags: int = 0
  by_split: dict[str, int] = dataclasses.field(
      default_factory=lambda: {split: 0 for split in records.SPLITS})

  def as_dict(self) -> dict:
    return {**dataclasses.asdict(self), "by_split": dict(self.by_split)}


class MillionSongDataset:
  """MSD previews with catalogue artist/title and Last.fm tags; see the module docstring.

  Everything is read when the object is built, so `tag_names`, `artist_names`, `skipped` and
  `coverage` are final from then on and `tracks()` can be iterated any number of times.
  """

  name = "msd"

  def __init__(self, source_dir: str, *, audio_dir: str | None = None,
               catalogue: str | None = None, tags_db: str | None = None,
               path_pattern: str = DEFAULT_PATH_PATTERN, top_n_tags: int | None = 50,
               min_tag_score: float = 50.0, tagged_only: bool = False,
               split_file: str | None = None,
               split_ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
               playlists: str | None = None, playlist_sequence: str = "filtered"):
    """Args:
      source_dir: directory holding unique_tracks.txt, lastfm_tags.db and (by default) the audio.
      audio_dir: where the previews are, `{root}` of the pattern (default: source_dir).
      catalogue: unique_tracks.txt elsewhere (default: in source_dir).
      tags_db: lastfm_tags.db elsewhere (default: in source_dir).
      path_pattern: where a track's preview is; see the module docstring.
      top_n_tags: size of the tag vocabulary (None keeps every tag above min_tag_score).
      min_tag_score: a track carries a tag whose score is strictly above this.
      tagged_only: leave out tracks that carry no vocabulary tag (counted as "untagged").
      split_file: a split file or directory (`read_split_file`); None splits by artist.
      split_ratios: (train, valid, test) fractions of artists for the artist-level split.
      seed: seed of the artist-level split.
      playlists: AotM-2011's aotm2011_playlists.json[.gz] to attach as the playlist table (None:
        no playlists).
      playlist_sequence: "filtered" or "playlist", the sequence each AotM-2011 playlist
        contributes (`musemb.data.sources.aotm2011`).
    """
    check_path_pattern(path_pattern)
    aotm2011.check_sequence(playlist_sequence)
    if playlists is not None:
      aotm2011.require_file(playlists)
    if not isinstance(min_tag_score, (int, float)) or not math.isfinite(min_tag_score):
      raise ValueError(f"min_tag_score={min_tag_score!r}: expected a finite number (Last.fm "
                       "scores lie in [0, 100]; 50 is the usual threshold).")
    self.source_dir = os.path.abspath(source_dir)
    if not os.path.isdir(self.source_dir):
      raise FileNotFoundError(f"MSD directory {self.source_dir} does not exist. {_LAYOUT_HELP}")
    self.audio_dir = os.path.abspath(audio_dir if audio_dir is not None else source_dir)
    if not os.path.isdir(self.audio_dir):
      raise FileNotFoundError(f"MSD audio directory {self.audio_dir} does not exist; it should "
                              f"hold the previews at path_pattern={path_pattern!r}.")
    self.catalogue_path = os.path.abspath(catalogue or os.path.join(source_dir, CATALOGUE_FILE))
    self.tags_db_path = os.path.abspath(tags_db or os.path.join(source_dir, TAGS_FILE))
    self.path_pattern = path_pattern
    self.top_n_tags = top_n_tags
    self.min_tag_score = float(min_tag_score)
    self.tagged_only = bool(tagged_only)
    self.split_file = split_file
    self.split_ratios = _check_ratios(split_ratios)
    self.seed = int(seed)
    self.playlists = None if playlists is None else os.path.abspath(playlists)
    self.playlist_sequence = playlist_sequence
    self.skipped = records.SkipCounter()
    self.coverage = MsdCoverage()
    self.playlist_report: aotm2011.Aotm2011Playlists | None = None

    catalogue = listening.read_msd_catalogue(self.catalogue_path, self.skipped)
    split_of = read_split_file(split_file) if split_file is not None else None
    scored = listening.read_lastfm_tags(self.tags_db_path, self.skipped)
    self.tag_names, carried = listening.select_tags(scored, top_n=top_n_tags,
                                                    min_score=self.min_tag_score)

    self._tracks: list[records.Track] = []
    usable: set[str] = set()
    looked_for: list[str] = []
    for track_id, song_id, artist, title in zip(catalogue.track_ids, catalogue.song_ids,
                                                catalogue.artists, catalogue.titles):
      if not is_track_id(track_id):
        self.skipped.add("bad_track_id", f"{CATALOGUE_FILE}: {track_id!r} is not an MSD track id "
                                         "(TR and 16 capitals or digits)")
        continue
      usable.add(track_id)
      tags = carried.get(track_id, [])
      audio_path = preview_path(path_pattern, self.audio_dir, track_id, song_id)
      has_preview = os.path.isfile(audio_path)
      self._count_coverage(has_preview, track_id in scored, bool(tags))
      if len(looked_for) < 3:
        looked_for.append(audio_path)
      if split_of is not None:
        split = split_of.get(track_id)
        if split is None:
          self.skipped.add("not_in_split_file", track_id)
          continue
      if self.tagged_only and not tags:
        self.skipped.add("untagged", f"{track_id}: no tag of the vocabulary above score "
                                     f"{self.min_tag_score:g}")
        continue
      if not has_preview:
        self.skipped.add("missing_preview", audio_path)
        continue
      artist = artist.strip()
      if not artist:
        self.skipped.add("no_artist", f"{track_id}: kept without an artist")
      if split_of is None:
        split = artist_split(artist, track_id, self.split_ratios, self.seed)
      self._tracks.append(records.Track(
          id=track_id, artists=[artist] if artist else [], tags=list(tags), split=split,
          audio_path=audio_path, title=title.strip() or None))
      self.coverage.tracks += 1
      self.coverage.tracks_with_vocabulary_tags += bool(tags)
      self.coverage.by_split[split] += 1

    if not usable:
      raise ValueError(f"{self.catalogue_path} has no usable row ({dict(self.skipped.counts)}). "
                       f"{_LAYOUT_HELP}")
    if not self.coverage.with_preview:
      raise FileNotFoundError(
          f"No preview of the {len(usable)} catalogue tracks exists under {self.audio_dir} at "
          f"path_pattern={path_pattern!r}; looked for e.g. {looked_for}. Check audio_dir "
          "(--source_dir) and the pattern (e.g. '.clip.mp3' previews need "
          "'{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.clip.mp3').")
    if split_of is not None:
      unknown = [t for t in split_of if t not in usable]
      self.skipped.add_many("split_file_unknown_track", len(unknown), unknown)
    self.artist_names = sorted({a for t in self._tracks for a in t.artists})
    if self.playlists is not None:
      songs = aotm2011.song_tracks(
          (t, s) for t, s in zip(catalogue.track_ids, catalogue.song_ids) if is_track_id(t))
      self.playlist_report = aotm2011.read_playlists(
          self.playlists, songs, sequence=playlist_sequence,
          available={t.id for t in self._tracks})

  def _count_coverage(self, has_preview: bool, has_lastfm_tags: bool, tagged: bool) -> None:
    self.coverage.catalogue_tracks += 1
    self.coverage.with_preview += has_preview
    self.coverage.with_lastfm_tags += has_lastfm_tags
    self.coverage.with_vocabulary_tags += tagged
    self.coverage.with_preview_and_vocabulary_tags += has_preview and tagged

  def tracks(self) -> Iterator[records.Track]:
    """The usable tracks, in unique_tracks.txt order."""
    yield from self._tracks

  def tables(self) -> records.SourceTables:
    """The AotM-2011 playlists when `playlists` was given; no plays, reviews or artist similarity
    (see `listening` for plays)."""
    if self.playlist_report is None:
      return records.SourceTables()
    return records.SourceTables(playlists=list(self.playlist_report.playlists))

  def description(self) -> str:
    sizes = ", ".join(f"{split} {self.coverage.by_split[split]}" for split in records.SPLITS)
    tag_rule = (f"{'every tag' if self.top_n_tags is None else f'the top {self.top_n_tags} tags'} "
                f"by track count with score > {self.min_tag_score:g}"
                + (", tagged tracks only" if self.tagged_only else ""))
    split_rule = (f"split from {self.split_file}" if self.split_file is not None
                  else f"split by artist, hash_split(artist, {self.split_ratios}, "
                       f"seed={self.seed})")
    c = self.coverage
    return (f"Million Song Dataset previews under {self.audio_dir} ({self.path_pattern}) with "
            f"{self.catalogue_path} and {self.tags_db_path}: {c.tracks} tracks ({sizes}), "
            f"{len(self.tag_names)} tags ({tag_rule}), {len(self.artist_names)} artists; "
            f"{split_rule}; of {c.catalogue_tracks} catalogue tracks {c.with_preview} have a "
            f"preview and {c.with_vocabulary_tags} a vocabulary tag; {self.skipped.total} "
            f"inputs counted in skipped ({dict(self.skipped.counts)})" + self._playlist_note())

  def _playlist_note(self) -> str:
    report = self.playlist_report
    if report is None:
      return "."
    return (f"; AotM-2011 playlists from {report.path} ({report.sequence} sequences): "
            f"{len(report.playlists)} sequences of {report.playlists_read} playlists, "
            f"{report.skipped.total} items skipped ({dict(report.skipped.counts)}).")
