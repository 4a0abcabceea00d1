"""Records that every source yields, whatever its published layout.

A source turns data in its published layout into these plain records; the TFDS builders in
`musemb.data.builders` turn the records into a prepared dataset. Nothing here decodes audio.

Contract (see DESIGN.md, "Contracts"):

* `Track`: one song or clip. `split` is one of `SPLITS`; sources split by artist or by piece as their
  paper says, so that nothing leaks between splits.
* Side tables keyed by track id (`Playlist`, `Play`, `Review`) and the artist-artist similarity
  map travel in `SourceTables`; a source that lacks one leaves it empty and the tasks that need it
  are skipped with a log line.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterator, Protocol

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Track:
  """One song or clip.

  Exactly one of `audio_path` (a file on disk, decoded at prepare time) and `audio` (float32 mono
  samples in [-1, 1] at `sample_rate`, for generated worlds) is set.
  """

  id: str
  artists: list[str]
  tags: list[str]
  split: str
  audio_path: str | None = None
  audio: np.ndarray | None = None
  sample_rate: int | None = None
  title: str | None = None
  album: str | None = None

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"Track {self.id!r}: split {self.split!r} is not one of {SPLITS}.")
    if (self.audio_path is None) == (self.audio is None):
      raise ValueError(f"Track {self.id!r}: set exactly one of audio_path and audio.")
    if self.audio is not None and not self.sample_rate:
      raise ValueError(f"Track {self.id!r}: in-memory audio needs its sample_rate.")


@dataclasses.dataclass(frozen=True)
class Playlist:
  """An ordered sequence of tracks, as one listener made it.

  `track_ids` may hold None at a gap: a position of the published playlist whose song has no
  track in the collection (AotM-2011 read with `sequence="playlist"`), kept so that positions, and
  the distances between songs that playlist propagation draws on, stay those of the playlist.
  A gap counts for distance and has no track, so no tags, to pass on; sources that know every song
  (the synthetic world) never write one. Gaps travel through `tables/playlists.jsonl` as JSON
  null.
  """

  id: str
  track_ids: tuple[str | None, ...]
  user: str | None = None


@dataclasses.dataclass(frozen=True)
class Play:
  user: str
  track_id: str
  count: int


@dataclasses.dataclass(frozen=True)
class Review:
  """A short text about a track's album (or the track itself), e.g. an album review."""

  id: str
  track_ids: tuple[str, ...]
  text: str
  album: str | None = None


@dataclasses.dataclass
class SourceTables:
  """Everything a source knows besides the tracks; any of it may be empty."""

  artist_similarity: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  playlists: list[Playlist] = dataclasses.field(default_factory=list)
  plays: list[Play] = dataclasses.field(default_factory=list)
  reviews: list[Review] = dataclasses.field(default_factory=list)


class SkipCounter:
  """Counts inputs left out and why, so that nothing is dropped silently.

  `examples` keeps the first few offending items per reason, for the log and the metadata.
  """

  def __init__(self, max_examples: int = 5):
    self.counts: collections.Counter[str] = collections.Counter()
    self.examples: dict[str, list[str]] = collections.defaultdict(list)
    self._max_examples = max_examples

  def add(self, reason: str, item: str) -> None:
    self.counts[reason] += 1
    if len(self.examples[reason]) < self._max_examples:
      self.examples[reason].append(item)

  def add_many(self, reason: str, n: int, examples) -> None:
    """Counts `n` skips under `reason`, keeping the first few of `examples` as `add` does."""
    if n <= 0:
      return
    examples = list(examples)[:n]
    for example in examples:
      self.add(reason, example)
    self.counts[reason] += n - len(examples)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def as_dict(self) -> dict:
    return {"total": self.total, "by_reason": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()}}


class Source(Protocol):
  """What a source module offers to the builders (see `musemb.data.builders`)."""

  name: str                 # e.g. "synthetic", "mtat", "folder"
  tag_names: list[str]      # the tag vocabulary, in multi-hot order
  artist_names: list[str]   # the artist vocabulary, in ClassLabel order
  skipped: SkipCounter      # metadata rows left out while reading the layout

  def tracks(self) -> Iterator[Track]: ...

  def tables(self) -> SourceTables: ...

  def description(self) -> str: ...


def read_text(path: str) -> str:
  """A metadata file's text, never refused for its encoding.

  Each line is decoded as UTF-8 (a leading byte-order mark dropped); a line that is not UTF-8
  (a Latin-1 or cp1252 byte in an artist's name) is decoded as Latin-1, which maps every byte, and
  the file and line numbers are logged, so one legacy byte never aborts an import.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  lines, fallback = [], []
  for number, raw in enumerate(data.splitlines(keepends=True), start=1):
    try:
      lines.append(raw.decode("utf-8"))
    except UnicodeDecodeError:
      lines.append(raw.decode("latin-1"))
      fallback.append(number)
  if fallback:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning("%s: %d line(s) are not UTF-8 and were read as Latin-1: line %s.", path,
                    len(fallback), ", ".join(map(str, fallback[:10])) +
                    (" ..." if len(fallback) > 10 else ""))
  return "".join(lines)
