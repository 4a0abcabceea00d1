"""Precomputed sentence features keyed by review id: the text side of Rush et al.'s "BERT" row.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings* (section 4.3,
Table 1): "instead of learning text features on the fly, we try using feature extraction from a
pre-trained BERT model". musemb downloads no model: the features are computed elsewhere (any
sentence encoder) and read here, one row per review, and the two-branch network's text branch takes
them as its input vectors (no text encoder).

Files (written atomically by `save_sentence_features`, or by any tool that writes the same keys):

* `.npz` with `ids` ([texts] str, the review ids) and `features` ([texts, dim] float), and
  optionally `description` (a str: what made the vectors);
* `.npy` holding the [texts, dim] matrix alone: then the caller passes the review ids in the
  order its rows were written (`ids=`), since the file has none.

`mean_word_vectors(texts, vectors)` makes such rows from word vectors (the mean of the vectors of a
text's words, as the paper's CCA baseline reads GloVe): a sentence representation computed without
downloading anything, e.g. from word2vec trained on the training reviews (`make demo-reviews`'s
stand-in for the BERT row, `musemb.systems.rush.data.word2vec_sentence_features`).

Every row must be finite and every id unique; `SentenceFeatures.lookup(review_ids)` returns the rows
of the requested reviews in the requested order and stops, naming examples, when some have no row
(a features file made for another split or dataset version), rather than inventing zeros.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from musemb import utils
from musemb.text import tokenize as tokenize_lib
from musemb.text.vectors import WordVectors


@dataclasses.dataclass(frozen=True, eq=False)
class SentenceFeatures:
  """Review ids and their feature rows.

  Attributes:
    ids: the review ids, unique.
    features: [len(ids), dim] float32; row i belongs to ids[i].
    path: the file they came from ("" when built in memory), for error messages.
    description: what made the vectors, in words (an optional `description` string in the .npz),
      so that a report can say what the "BERT features" row read.
    index: id -> row, built on construction.
  """
  ids: tuple[str, ...]
  features: np.ndarray
  path: str = ""
  description: str = ""
  index: dict[str, int] = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    where = self.path or "SentenceFeatures"
    ids = tuple(str(i) for i in self.ids)
    features = np.asarray(self.features)
    if features.ndim != 2 or features.shape[1] < 1:
      raise ValueError(f"{where}: features must be [texts, dim] with dim >= 1; got shape "
                       f"{features.shape}.")
    if not np.issubdtype(features.dtype, np.number):
      raise ValueError(f"{where}: features must be numbers, got dtype {features.dtype}.")
    features = np.ascontiguousarray(features, np.float32)
    if len(ids) != features.shape[0]:
      raise ValueError(f"{where}: {len(ids)} ids but {features.shape[0]} feature rows; row i must "
                       "be the features of ids[i].")
    index = {r: i for i, r in enumerate(ids)}
    if len(index) != len(ids):
      dups = [r for r, n in _counts(ids).items() if n > 1]
      raise ValueError(f"{where}: {len(dups)} review id(s) occur more than once, e.g. {dups[:5]}.")
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
      rows = np.flatnonzero(bad)
      raise ValueError(f"{where}: {rows.size} feature row(s) hold NaN or inf, e.g. review "
                       f"{ids[rows[0]]!r} (row {rows[0]}); recompute them.")
    object.__setattr__(self, "ids", ids)
    object.__setattr__(self, "features", features)
    object.__setattr__(self, "index", index)

  @property
  def dim(self) -> int:
    return int(self.features.shape[1])

  def __len__(self) -> int:
    return len(self.ids)

  def lookup(self, review_ids: Sequence[str]) -> np.ndarray:
    """[len(review_ids), dim] float32: the rows of `review_ids`, in that order."""
    rows = [self.index.get(str(r), -1) for r in review_ids]
    missing = [str(r) for r, i in zip(review_ids, rows) if i < 0]
    if missing:
      raise KeyError(f"{self.path or 'SentenceFeatures'}: {len(missing)} of {len(rows)} reviews "
                     f"have no features, e.g. {missing[:5]}; compute the features for the same "
                     "reviews (and dataset version) as the run uses.")
    return self.features[np.asarray(rows, np.int64)]


def mean_word_vectors(texts: Sequence[str], vectors: WordVectors) -> tuple[np.ndarray, int]:
  """([len(texts), dim] float32 means of the vectors of each text's words, texts with none).

  Words are `musemb.text.tokenize.tokenize`'s; words without a vector are left out of the mean,
  and a text with no word that has one gets the zero row (counted in the second value, so a caller
  can tell a wrong vector file from a few odd texts).
  """
  out = np.zeros((len(texts), vectors.dim), np.float32)
  empty = 0
  for i, text in enumerate(texts):
    rows = [vectors.index[w] for w in tokenize_lib.tokenize(text) if w in vectors.index]
    if rows:
      out[i] = vectors.vectors[np.asarray(rows, np.int64)].mean(axis=0)
    else:
      empty += 1
  return out, empty


def _counts(ids: Sequence[str]) -> dict[str, int]:
  out: dict[str, int] = {}
  for r in ids:
    out[r] = out.get(r, 0) + 1
  return out


def load_sentence_features(path: str, ids: Sequence[str] | None = None) -> SentenceFeatures:
  """Reads a `.npz` (ids + features) or a `.npy` (features; `ids` given) file; see the module."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Sentence-feature file {path!r} does not exist (or is not a file).")
  suffix = os.path.splitext(path)[1].lower()
  if suffix == ".npz":
    if ids is not None:
      raise ValueError(f"{path}: an .npz holds its own review ids; do not pass ids=.")
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k in ("ids", "features")}
        description = str(data["description"]) if "description" in data.files else ""
        names = sorted(data.files)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: cannot read as .npz ({e}).") from e
    if set(arrays) != {"ids", "features"}:
      raise ValueError(f"{path}: holds the arrays {names}; an .npz of sentence features needs "
                       "'ids' [texts] and 'features' [texts, dim].")
    file_ids, features = arrays["ids"], arrays["features"]
    if file_ids.ndim != 1:
      raise ValueError(f"{path}: 'ids' must be 1-D [texts], got shape {file_ids.shape}.")
    return SentenceFeatures(tuple(file_ids.tolist()), features, path, description)
  if suffix == ".npy":
    if ids is None:
      raise ValueError(f"{path}: an .npy holds the feature matrix only; pass ids= (the review ids "
                       "in the order its rows were written), or save an .npz with ids.")
    try:
      features = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: cannot read as .npy ({e}).") from e
    return SentenceFeatures(tuple(ids), features, path)
  raise ValueError(f"{path}: unknown suffix {suffix!r}; sentence features are read from .npz (ids "
                   "+ features) or .npy (features, with ids= given).")


def save_sentence_features(path: str, ids: Sequence[str], features: np.ndarray,
                           description: str = "") -> str:
  """Writes an `.npz` that `load_sentence_features` reads (checked first, written atomically);
  `description` says what made the vectors (kept in the file, shown by reports)."""
  if not path.lower().endswith(".npz"):
    raise ValueError(f"save_sentence_features({path!r}): write an .npz (it keeps the ids).")
  checked = SentenceFeatures(tuple(ids), features, path, description)
  arrays = {"ids": np.asarray(checked.ids, dtype=str), "features": checked.features}
  if description:
    arrays["description"] = np.asarray(description)
  utils.save_npz_atomic(path, arrays)
  return path
