"""MARD (the Multimodal Album Reviews Dataset) from disk: album reviews and AcousticBrainz vectors.

MARD (Oramas, Espinosa-Anke, Lawlor, Serra and Saggion, "Exploring customer reviews for music genre
classification and evolutionary studies", ISMIR 2016) joins Amazon customer reviews of albums
(from Julian McAuley's Amazon dataset) to MusicBrainz and AcousticBrainz: 65,566 albums and
263,525 reviews, of which 8,683 albums (84,747 reviews) have a descriptor file. Rush et al. (the
`003_*` paper) embed the descriptor vectors and the review texts in one space and retrieve albums
from reviews.

Layout read here (as described by the dataset's README):

```
source_dir/
  mard_metadata.json          one JSON object per line, one per album: `amazon-id` (the Amazon
                              product id), `artist`, `title`, `root-genre`, `songs`, ... (fields
                              may be absent)
  mard_reviews.json           one JSON object per line, one per review: the album key, `reviewText`,
                              `reviewerID`, `summary`, `overall`, ...
  acousticbrainz_descriptors/ one AcousticBrainz low-level JSON document per file, named
                              `<amazon-id>_<mbid>.json` (the album and the MusicBrainz recording
                              whose descriptors it holds: MARD ships one, the album's first track)
```

Spellings accepted, because the README and the code that reads MARD disagree:

* The album key of a review or album: `amazon-id` (what the files hold and every reader of MARD
  uses), `product-id` (the README's list of review fields) or `asin` (McAuley's Amazon dumps,
  from which MARD's reviews come). Two different values under two of them make the line unusable.
* The review text: `reviewText` (the README and every reader), or `text` (the later Amazon Reviews
  releases, for files re-derived from them); the first present wins.
* A line that is not JSON is parsed as a Python literal (the README loads each line with `eval`;
  `ast.literal_eval` gives the same dict without executing anything).

Every input left out is counted in `skipped` under its reason, each review and album once, under
the first reason that applies in this order:

* metadata lines: "bad_metadata_line" (not JSON, not an object, no or an empty album key),
  "duplicate_album" (the first line of an amazon-id wins);
* descriptor files (`*.json` in the folder; other files are ignored): "bad_descriptor_name" (not
  `<amazon-id>_<mbid>.json`), "descriptor_unknown_album" (an amazon-id not in the metadata),
  "bad_descriptor_file" (not JSON, or a field of the vector missing, ill-shaped or not finite:
  `musemb.features.descriptors_from_acousticbrainz`);
* review lines: "bad_review_line" (not JSON, not an object, no album key or conflicting ones, a text
  that is not a string), "review_unknown_album", "empty_text" (missing, null or only whitespace),
  "review_album_without_descriptors", "review_not_in_split_file";
* albums of the metadata: "album_without_descriptors", "album_not_in_split_file",
  "album_without_reviews" (every review of it was skipped, or it has none).

Split: whole albums, so that an album's reviews (and tracks) never sit on both sides. By default
`split_albums`: albums in a seeded random order go to test until they hold `test_fraction` of the
reviews (the paper's "10% of the album-review matches" held out as its development set, on which
it reports), then to valid (`valid_fraction`, 0 by default: the paper has no third split), the rest
to train. `split_file` replaces it (see `read_split_file`).

The result is an `AlbumReviews`: the record and array structure a text-audio system trains on.
The built-in world goes through the same structure (`from_reviews`, with descriptor vectors that
`musemb.features.audio_descriptors` computes from its audio), so one system reads both. A system
uses it this way:

* `features[t]` is the AcousticBrainz-layout descriptor vector (`feature_names`, see
  `musemb.features.descriptor_names`) of audio item t, which belongs to album `track_album[t]`;
  MARD has one item per album (its first track), expanded collections several.
* `reviews[r]` is a `records.Review` (the synthetic world's record type: `album` is the album id,
  `track_ids` the album's items) whose album is `albums[review_album[r]]`.
* `data.split("train")` gives the training albums with their items and reviews; the system fits
  `musemb.features.Standardizer` on its `features` and saves it with the run; true pairs are
  (review r, an item of album review_album[r]); negatives are masked where the albums are equal.
* Evaluation embeds every item of `data.split("test")` (an album is its items' embeddings) and
  every review, and ranks the test albums for each review (review -> album) and the reviews for
  each album (album -> review).
"""

from __future__ import annotations

import ast
import collections
import csv
import dataclasses
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from musemb import features as features_lib
from musemb.data.sources import records

METADATA_FILE = "mard_metadata.json"
REVIEWS_FILE = "mard_reviews.json"
DESCRIPTORS_DIR = "acousticbrainz_descriptors"
# Spellings of an album's key, in the order they are looked up (see the module docstring).
ALBUM_KEYS = ("amazon-id", "product-id", "asin")
# Spellings of a review's text.
TEXT_KEYS = ("reviewText", "text")
# The paper holds out 10% of the album-review matches (section 5).
DEFAULT_TEST_FRACTION = 0.1
# Column names of a split file's album column, in order of preference.
SPLIT_FILE_KEYS = ("amazon-id", "album_id", "album", "product-id", "asin")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                  "dev": "valid", "test": "test"}

_LAYOUT_HELP = (
    f"A MARD folder holds {METADATA_FILE} and {REVIEWS_FILE} (one JSON object per line) and "
    f"{DESCRIPTORS_DIR}/ with one AcousticBrainz low-level file per album, named "
    "<amazon-id>_<mbid>.json, as in the MARD release (https://www.upf.edu/web/mtg/mard).")


# ------------------------------------------------------------------------------------------------
# The structure a text-audio system reads.


@dataclasses.dataclass(frozen=True)
class Album:
  """One album: its id (MARD: the amazon-id), split and what the metadata says about it."""

  id: str
  split: str
  title: str | None = None
  artist: str | None = None
  genre: str | None = None

  def __post_init__(self):
    if self.split not in records.SPLITS:
      raise ValueError(f"Album {self.id!r}: split {self.split!r} is not one of {records.SPLITS}.")


@dataclasses.dataclass(frozen=True, eq=False)
class AlbumReviews:
  """Albums, their audio items' descriptor vectors and their reviews (see the module docstring).

  Albums are sorted by id; items are grouped by album (albums' order, then the order they were
  given in); reviews keep their input order. Every album has at least one item and one review.

  Attributes:
    albums: `[A]` `Album` records.
    track_ids: `[T]` item ids (MARD: the descriptor file's name without `.json`).
    track_album: int32 `[T]`, the index into `albums` of each item's album.
    features: float32 `[T, D]`, one descriptor vector per item.
    feature_names: `[D]` column names.
    reviews: `[R]` `records.Review`, `album` the album id and `track_ids` the album's items.
    review_album: int32 `[R]`, the index into `albums` of each review's album.
    source: where the data came from ("mard", "synthetic", ...).
    skipped: inputs left out and why (shared by the `split` views).
    split_rule: how the albums were split, in words.
  """

  albums: tuple[Album, ...]
  track_ids: tuple[str, ...]
  track_album: np.ndarray
  features: np.ndarray
  feature_names: tuple[str, ...]
  reviews: tuple[records.Review, ...]
  review_album: np.ndarray
  source: str
  skipped: records.SkipCounter = dataclasses.field(default_factory=records.SkipCounter)
  split_rule: str = ""

  def __post_init__(self):
    a, t, r = len(self.albums), len(self.track_ids), len(self.reviews)
    ids = [album.id for album in self.albums]
    if ids != sorted(set(ids)):
      raise ValueError("AlbumReviews: album ids must be unique and sorted.")
    if self.features.shape != (t, len(self.feature_names)) or self.features.dtype != np.float32:
      raise ValueError(f"AlbumReviews: features {self.features.shape} {self.features.dtype} must "
                       f"be float32 [{t} items, {len(self.feature_names)} names].")
    for name, index, n in (("track_album", self.track_album, t),
                           ("review_album", self.review_album, r)):
      if index.shape != (n,) or index.dtype != np.int32 or (n and not (
          0 <= index.min() and index.max() < a)):
        raise ValueError(f"AlbumReviews: {name} must be int32 [{n}] indices into the {a} albums.")
    if a and (np.bincount(self.track_album, minlength=a).min() == 0
              or np.bincount(self.review_album, minlength=a).min() == 0):
      raise ValueError("AlbumReviews: every album needs at least one item and one review.")
    for review, k in zip(self.reviews, self.review_album):
      if review.album != ids[k]:
        raise ValueError(f"AlbumReviews: review {review.id!r} is of album {review.album!r} but "
                         f"indexed to {ids[k]!r}.")

  @property
  def album_ids(self) -> tuple[str, ...]:
    return tuple(album.id for album in self.albums)

  @property
  def album_splits(self) -> dict[str, str]:
    return {album.id: album.split for album in self.albums}

  def split(self, name: str) -> AlbumReviews:
    """The albums of split `name` with their items and reviews, indices renumbered."""
    if name not in records.SPLITS:
      raise ValueError(f"AlbumReviews.split: {name!r} is not one of {records.SPLITS}.")
    keep = np.array([album.split == name for album in self.albums], bool)
    renumber = np.cumsum(keep, dtype=np.int64) - 1
    tracks = np.flatnonzero(keep[self.track_album])
    reviews = np.flatnonzero(keep[self.review_album])
    return dataclasses.replace(
        self,
        albums=tuple(album for album, k in zip(self.albums, keep) if k),
        track_ids=tuple(self.track_ids[i] for i in tracks),
        track_album=renumber[self.track_album[tracks]].astype(np.int32),
        features=self.features[tracks],
        reviews=tuple(self.reviews[i] for i in reviews),
        review_album=renumber[self.review_album[reviews]].astype(np.int32))

  def split_sizes(self) -> dict[str, tuple[int, int, int]]:
    """{split: (albums, items, reviews)}."""
    splits = np.array([records.SPLITS.index(album.split) for album in self.albums], np.int64)
    out = {}
    for s, name in enumerate(records.SPLITS):
      keep = splits == s
      out[name] = (int(keep.sum()), int(keep[self.track_album].sum()),
                   int(keep[self.review_album].sum()))
    return out

  def tables(self) -> records.SourceTables:
    """The reviews as the side table every source offers."""
    return records.SourceTables(reviews=list(self.reviews))

  def description(self) -> str:
    sizes = self.split_sizes()
    per_split = "; ".join(f"{name} {a} albums, {t} items, {r} reviews"
                          for name, (a, t, r) in sizes.items())
    return (f"{self.source}: {len(self.albums)} albums with {len(self.track_ids)} audio items "
            f"({len(self.feature_names)} descriptor values each) and {len(self.reviews)} reviews; "
            f"{self.split_rule or 'split by album'}: {per_split}; {self.skipped.total} inputs "
            "skipped (see skipped).")


# ------------------------------------------------------------------------------------------------
# Splits.


def _check_fractions(test_fraction: float, valid_fraction: float) -> None:
  for name, value in (("test_fraction", test_fraction), ("valid_fraction", valid_fraction)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and 0.0 <= value < 1.0):
      raise ValueError(f"{name}={value!r}: expected a fraction of the reviews in [0, 1).")
  if test_fraction + valid_fraction >= 1.0:
    raise ValueError(f"test_fraction={test_fraction} and valid_fraction={valid_fraction} leave "
                     "no reviews for training; their sum must be below 1.")


def split_albums(review_counts: Mapping[str, int],
                 test_fraction: float = DEFAULT_TEST_FRACTION,
                 valid_fraction: float = 0.0,
                 seed: int = 0) -> dict[str, str]:
  """Splits whole albums so that test (then valid) holds a given fraction of the reviews.

  The albums, sorted by id, are shuffled by `numpy.random.default_rng(seed)`; in that order each
  goes to test while test holds fewer than `test_fraction` of all reviews, then to valid while
  valid holds fewer than `valid_fraction`, then to train. So test holds at least `test_fraction`
  of the reviews and less than that plus one album's reviews (the same for valid), the result is a
  pure function of (album ids, counts, fractions, seed), and a fraction above 0 always gets an
  album.

  Args:
    review_counts: {album id: number of its reviews (>= 1)}.
    test_fraction, valid_fraction: shares of the reviews held out.
    seed: shuffling seed.

  Returns:
    {album id: "train" | "valid" | "test"}.

  Raises:
    ValueError: bad fractions, or fractions that leave no album for training.
  """
  _check_fractions(test_fraction, valid_fraction)
  ids = sorted(review_counts)
  counts = np.array([int(review_counts[album]) for album in ids], np.int64)
  if counts.size and counts.min() < 1:
    raise ValueError("split_albums: every album needs at least one review.")
  total = int(counts.sum())
  order = np.random.default_rng(seed).permutation(len(ids))
  held = {"test": 0, "valid": 0}
  targets = {"test": test_fraction * total, "valid": valid_fraction * total}
  assignment = {}
  for k in order:
    split = next((s for s in ("test", "valid") if held[s] < targets[s]), "train")
    if split != "train":
      held[split] += int(counts[k])
    assignment[ids[k]] = split
  if ids and "train" not in assignment.values():
    raise ValueError(
        f"split_albums: test_fraction={test_fraction} and valid_fraction={valid_fraction} take "
        f"all {len(ids)} albums ({total} reviews); lower them or add albums.")
  return assignment


def read_split_file(path: str) -> dict[str, tuple[str, int]]:
  """Reads a split of albums: {album id: (split, line number)}.

  Format: a CSV (comma) or TSV (TAB; chosen when the header line holds a TAB) file with a header
  naming a `split` column and an album column, the first of `SPLIT_FILE_KEYS` present
  (`amazon-id`, `album_id`, `album`, `product-id`, `asin`). Split values are `train`, `valid` or
  `test` (`val`, `validation` and `dev` are read as `valid`; case and surrounding spaces are
  ignored). Fields may be double-quoted; blank lines are ignored.

  Raises:
    FileNotFoundError, ValueError: naming the file (and line) when it cannot be used as a split.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"MARD split file {path} does not exist.")
  text = records.read_text(path)
  delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
  rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"'))
  numbered = [(i + 1, row) for i, row in enumerate(rows) if row and any(c.strip() for c in row)]
  if not numbered:
    raise ValueError(f"MARD split file {path} is empty; expected a header line such as "
                     "'amazon-id,split' followed by one line per album.")
  header = [cell.strip().lower() for cell in numbered[0][1]]
  key_column = next((k for k in SPLIT_FILE_KEYS if k in header), None)
  if key_column is None or "split" not in header:
    raise ValueError(f"MARD split file {path}: header {numbered[0][1]} needs a 'split' column and "
                     f"an album column (one of {', '.join(SPLIT_FILE_KEYS)}), e.g. "
                     "'amazon-id,split'.")
  key_at, split_at = header.index(key_column), header.index("split")
  assignment: dict[str, tuple[str, int]] = {}
  for line, row in numbered[1:]:
    if len(row) != len(header):
      raise ValueError(f"MARD split file {path}, line {line}: {len(row)} fields where the header "
                       f"has {len(header)}.")
    key, value = row[key_at].strip(), row[split_at].strip().lower()
    if not key:
      raise ValueError(f"MARD split file {path}, line {line}: empty {key_column}.")
    if value not in _SPLIT_ALIASES:
      raise ValueError(f"MARD split file {path}, line {line}: split {row[split_at]!r} is not one "
                       f"of {records.SPLITS} (or 'val'/'validation'/'dev').")
    split = _SPLIT_ALIASES[value]
    if key in assignment and assignment[key][0] != split:
      raise ValueError(f"MARD split file {path}, line {line}: album {key!r} is put in both "
                       f"{assignment[key][0]!r} (line {assignment[key][1]}) and {split!r}; an "
                       "album belongs to one split.")
    assignment.setdefault(key, (split, line))
  return assignment


# ------------------------------------------------------------------------------------------------
# Building the structure from reviews and per-item vectors (the built-in world, and MARD below).


def from_reviews(track_ids: Sequence[str],
                 features: Any,
                 feature_names: Sequence[str],
                 reviews: Sequence[records.Review],
                 *,
                 split_of: Mapping[str, str] | None = None,
                 test_fraction: float = DEFAULT_TEST_FRACTION,
                 valid_fraction: float = 0.0,
                 seed: int = 0,
                 album_info: Mapping[str, Mapping[str, Any]] | None = None,
                 source: str = "synthetic",
                 skipped: records.SkipCounter | None = None,
                 split_rule: str | None = None) -> AlbumReviews:
  """Albums from reviews that name them, with one descriptor vector per audio item.

  An album is the `album` of its reviews; its items are the union of those reviews' `track_ids`
  (the built-in world's reviews list every track of their album). Albums are split whole: by
  `split_of` when given (it must cover every album), else by `split_albums`, never by the items'
  own splits, which the built-in world draws per piece, so an album's songs sit in several.

  Args:
    track_ids: `[T]` item ids, unique.
    features: `[T, D]` finite descriptor vectors, one per item.
    feature_names: `[D]` column names (e.g. `musemb.features.descriptor_names()`).
    reviews: reviews with `album` set; a review with an empty text is counted as "empty_text"
      and one naming no item or an item without a vector as "review_without_features".
    split_of: {album id: split} for every album, or None to use `split_albums`.
    test_fraction, valid_fraction, seed: `split_albums`'s arguments.
    album_info: optional {album id: {"title", "artist", "genre"}}.
    source: recorded in the result.
    skipped: a counter to add to (MARD's reader passes its own).
    split_rule: how the split was made, in words (default: said from the arguments).

  Returns:
    An `AlbumReviews`. Items that no kept review names are left out, counted as
    "track_without_reviews".

  Raises:
    ValueError: a review without an album, an item claimed by two albums, duplicate item ids,
      features of the wrong shape or not finite, an album missing from `split_of`.
  """
  skipped = skipped if skipped is not None else records.SkipCounter()
  track_ids = tuple(track_ids)
  index = {t: i for i, t in enumerate(track_ids)}
  if len(index) != len(track_ids):
    dup = next(t for t, n in collections.Counter(track_ids).items() if n > 1)
    raise ValueError(f"from_reviews: item id {dup!r} appears more than once.")
  vectors = np.asarray(features, np.float32)
  if vectors.shape != (len(track_ids), len(feature_names)):
    raise ValueError(f"from_reviews: features of shape {vectors.shape}, expected "
                     f"({len(track_ids)} items, {len(feature_names)} names).")
  if not np.isfinite(vectors).all():
    bad = track_ids[int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])]
    raise ValueError(f"from_reviews: the vector of item {bad!r} holds NaN or inf.")

  owner: dict[str, str] = {}
  album_items: dict[str, list[int]] = {}
  kept: list[records.Review] = []
  for review in reviews:
    if not review.album:
      raise ValueError(f"from_reviews: review {review.id!r} names no album; album reviews need "
                       "their album's id in Review.album.")
    if not review.text or not review.text.strip():
      skipped.add("empty_text", f"{review.id} (album {review.album})")
      continue
    if not review.track_ids or any(t not in index for t in review.track_ids):
      skipped.add("review_without_features", f"{review.id} (album {review.album})")
      continue
    items = album_items.setdefault(review.album, [])
    for t in review.track_ids:
      if owner.setdefault(t, review.album) != review.album:
        raise ValueError(f"from_reviews: item {t!r} is named by reviews of album {owner[t]!r} "
                         f"and of album {review.album!r}; an item belongs to one album.")
      if index[t] not in items:
        items.append(index[t])
    kept.append(review)

  counts = collections.Counter(review.album for review in kept)
  if split_of is None:
    split_of = split_albums(counts, test_fraction, valid_fraction, seed)
    rule = (f"whole albums split by review share (test {test_fraction:g}, valid "
            f"{valid_fraction:g}, seed {seed})")
  else:
    missing = sorted(set(counts) - set(split_of))
    if missing:
      raise ValueError(f"from_reviews: split_of has no split for {len(missing)} album(s), e.g. "
                       f"{missing[0]!r}.")
    rule = "split given per album"
  album_ids = sorted(counts)
  info = album_info or {}
  albums = tuple(Album(id=a, split=split_of[a], title=info.get(a, {}).get("title"),
                       artist=info.get(a, {}).get("artist"), genre=info.get(a, {}).get("genre"))
                 for a in album_ids)
  album_at = {a: k for k, a in enumerate(album_ids)}
  order = [i for a in album_ids for i in album_items[a]]
  unused = [t for t in track_ids if t not in owner]
  skipped.add_many("track_without_reviews", len(unused), unused)
  items_of = {a: tuple(track_ids[i] for i in album_items[a]) for a in album_ids}
  # Every review lists its album's items in one order, whichever subset it named itself.
  reviews_out = tuple(dataclasses.replace(review, track_ids=items_of[review.album])
                      for review in kept)
  return AlbumReviews(
      albums=albums,
      track_ids=tuple(track_ids[i] for i in order),
      track_album=np.array([album_at[owner[track_ids[i]]] for i in order], np.int32),
      features=vectors[np.array(order, np.int64)] if order else vectors[:0],
      feature_names=tuple(feature_names),
      reviews=reviews_out,
      review_album=np.array([album_at[review.album] for review in kept], np.int32),
      source=source,
      skipped=skipped,
      split_rule=split_rule or rule)


# ------------------------------------------------------------------------------------------------
# Reading MARD.


def _parse_line(line: str) -> Any:
  """A line's JSON value, or the Python literal the README's `eval` would give; None if neither."""
  try:
    return json.loads(line)
  except (ValueError, RecursionError):
    pass
  try:
    return ast.literal_eval(line.strip())
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return None


def _album_key(obj: dict) -> tuple[str | None, str]:
  """(album id, "") or (None, why not)."""
  present = [(k, obj[k]) for k in ALBUM_KEYS if k in obj]
  if not present:
    return None, f"no album key ({' / '.join(ALBUM_KEYS)})"
  values = {v.strip() if isinstance(v, str) else repr(v) for _, v in present}
  if len(values) > 1:
    return None, "conflicting album keys " + ", ".join(f"{k}={v!r}" for k, v in present)
  value = present[0][1]
  if not isinstance(value, str) or not value.strip():
    return None, f"{present[0][0]}={value!r} is not an id"
  return value.strip(), ""


def _lines(path: str) -> list[tuple[int, str]]:
  """(line number, text) of the non-blank lines of a one-object-per-line file."""
  return [(number, line) for number, line in enumerate(records.read_text(path).splitlines(), 1)
          if line.strip()]


def _optional_str(value: Any) -> str | None:
  return (value.strip() or None) if isinstance(value, str) else None


def read(source_dir: str,
         *,
         split_file: str | None = None,
         test_fraction: float = DEFAULT_TEST_FRACTION,
         valid_fraction: float = 0.0,
         seed: int = 0,
         descriptors_dir: str | None = None) -> AlbumReviews:
  """Reads MARD in its published layout (see the module docstring) into an `AlbumReviews`.

  Args:
    source_dir: the folder holding mard_metadata.json and mard_reviews.json.
    split_file: a split of albums (`read_split_file`) instead of `split_albums`.
    test_fraction, valid_fraction, seed: `split_albums`'s arguments (ignored with split_file).
    descriptors_dir: the descriptor files' folder; defaults to source_dir/acousticbrainz_descriptors
      (pass another for an expanded collection with several files per album, named the same way).

  Returns:
    The albums that have a usable descriptor file and a usable review, their descriptor vectors
    (`musemb.features.descriptor_names()` layout), their reviews (ids `review<line>` after the
    line of mard_reviews.json) and the skip counts.

  Raises:
    FileNotFoundError: a file or the folder of the layout is missing (the message gives the layout).
    ValueError: a bad split file (naming the file and line), including an album it names that is
      not in the metadata; fractions that leave nothing to train on.
  """
  _check_fractions(test_fraction, valid_fraction)
  metadata_path = os.path.join(source_dir, METADATA_FILE)
  reviews_path = os.path.join(source_dir, REVIEWS_FILE)
  descriptors_dir = descriptors_dir or os.path.join(source_dir, DESCRIPTORS_DIR)
  for path in (metadata_path, reviews_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"MARD file {path} does not exist. {_LAYOUT_HELP}")
  if not os.path.isdir(descriptors_dir):
    raise FileNotFoundError(f"MARD descriptor folder {descriptors_dir} does not exist. "
                            f"{_LAYOUT_HELP}")
  skipped = records.SkipCounter()

  info: dict[str, dict[str, str | None]] = {}
  for line, text in _lines(metadata_path):
    obj = _parse_line(text)
    if not isinstance(obj, dict):
      skipped.add("bad_metadata_line", f"{METADATA_FILE}:{line}: not a JSON object")
      continue
    album, why = _album_key(obj)
    if album is None:
      skipped.add("bad_metadata_line", f"{METADATA_FILE}:{line}: {why}")
      continue
    if album in info:
      skipped.add("duplicate_album", f"{METADATA_FILE}:{line}: {album}")
      continue
    info[album] = {"title": _optional_str(obj.get("title")),
                   "artist": _optional_str(obj.get("artist")),
                   "genre": _optional_str(obj.get("root-genre"))}

  names = features_lib.descriptor_names()
  items: dict[str, list[tuple[str, np.ndarray]]] = {}
  for name in sorted(os.listdir(descriptors_dir)):
    if not name.endswith(".json") or not os.path.isfile(os.path.join(descriptors_dir, name)):
      continue
    stem = name[:-len(".json")]
    album, _, mbid = stem.partition("_")
    if not album or not mbid:
      skipped.add("bad_descriptor_name", f"{name}: expected <amazon-id>_<mbid>.json")
      continue
    if album not in info:
      skipped.add("descriptor_unknown_album", name)
      continue
    try:
      with open(os.path.join(descriptors_dir, name), "rb") as f:
        doc = json.loads(f.read().decode("utf-8", errors="replace"))
      vector = features_lib.descriptors_from_acousticbrainz(doc)
    except (OSError, ValueError, RecursionError) as e:
      skipped.add("bad_descriptor_file", f"{name}: {e}")
      continue
    items.setdefault(album, []).append((stem, vector))

  split_of: dict[str, str] | None = None
  if split_file is not None:
    listed = read_split_file(split_file)
    for album, (_, line) in listed.items():
      if album not in info:
        raise ValueError(f"MARD split file {split_file}, line {line}: album {album!r} is not in "
                         f"{metadata_path}; is the split file for this copy of MARD?")
    split_of = {album: split for album, (split, _) in listed.items()}

  reviews: list[records.Review] = []
  for line, text in _lines(reviews_path):
    where = f"{REVIEWS_FILE}:{line}"
    obj = _parse_line(text)
    if not isinstance(obj, dict):
      skipped.add("bad_review_line", f"{where}: not a JSON object")
      continue
    album, why = _album_key(obj)
    if album is None:
      skipped.add("bad_review_line", f"{where}: {why}")
      continue
    body = next((obj[k] for k in TEXT_KEYS if k in obj), None)
    if body is not None and not isinstance(body, str):
      skipped.add("bad_review_line", f"{where}: the text is {type(body).__name__}, not a string")
      continue
    if album not in info:
      skipped.add("review_unknown_album", f"{where}: {album}")
    elif not body or not body.strip():
      skipped.add("empty_text", f"{where}: album {album}")
    elif album not in items:
      skipped.add("review_album_without_descriptors", f"{where}: album {album}")
    elif split_of is not None and album not in split_of:
      skipped.add("review_not_in_split_file", f"{where}: album {album}")
    else:
      reviews.append(records.Review(id=f"review{line:07d}", track_ids=(), text=body, album=album))

  reviewed = {review.album for review in reviews}
  for album in sorted(info):
    if album not in items:
      skipped.add("album_without_descriptors", album)
    elif split_of is not None and album not in split_of:
      skipped.add("album_not_in_split_file", album)
    elif album not in reviewed:
      skipped.add("album_without_reviews", album)

  kept = sorted(reviewed)
  track_ids = [stem for album in kept for stem, _ in items[album]]
  vectors = [vector for album in kept for _, vector in items[album]]
  item_ids = {album: tuple(stem for stem, _ in items[album]) for album in kept}
  reviews = [dataclasses.replace(review, track_ids=item_ids[review.album]) for review in reviews]
  if split_file is not None:
    rule = f"whole albums split by {split_file}"
  else:
    rule = (f"whole albums split by review share (test {test_fraction:g}, valid "
            f"{valid_fraction:g}, seed {seed})")
  data = from_reviews(
      track_ids,
      np.stack(vectors) if vectors else np.zeros((0, len(names)), np.float32),
      names,
      reviews,
      split_of=split_of,
      test_fraction=test_fraction,
      valid_fraction=valid_fraction,
      seed=seed,
      album_info=info,
      source="mard",
      skipped=skipped,
      split_rule=rule)
  logging.info("%s", data.description())
  if skipped.total:
    logging.warning("MARD %s: skipped %s", source_dir, dict(skipped.counts))
  return data
