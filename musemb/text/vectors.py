"""One in-memory type for word embeddings, `WordVectors` (words + a float32 matrix), and its .npz.

The readers of published formats (`musemb.text.readers`), domain word2vec training
(`musemb.text.word2vec`) and the tag and query vectors (`musemb.text.tags`) all produce or consume
this type; a run saves the vectors it used as `words.npz` (`WordVectors.save` / `load_npz`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np



PHRASE_DELIMITER = "_"


@dataclasses.dataclass(frozen=True, eq=False)
class WordVectors:
  """Words and their vectors, with cosine nearest neighbours.

  Attributes:
    words: the vocabulary, unique, in file (for trained vectors: descending frequency) order.
    vectors: float32 [len(words), dim]; row i is the vector of words[i].
    phrases: the multi-word tokens (joined with "_") that training learned and kept, best scoring
      first; empty for loaded embeddings, whose phrases (if any) are simply words of the file.
    index: word -> row, built on construction.
  """

  words: tuple[str, ...]
  vectors: np.ndarray
  phrases: tuple[str, ...] = ()
  index: dict[str, int] = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    words = tuple(self.words)
    vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
    if vectors.ndim != 2:
      raise ValueError(f"WordVectors: vectors must be [words, dim], got shape {vectors.shape}.")
    if len(words) != vectors.shape[0]:
      raise ValueError(f"WordVectors: {len(words)} words but {vectors.shape[0]} vector rows.")
    if vectors.shape[1] < 1:
      raise ValueError("WordVectors: vectors must have at least one dimension.")
    for w in words:
      if not isinstance(w, str) or not w or "\n" in w:
        raise ValueError(f"WordVectors: every word must be a non-empty str without newlines, "
                         f"got {w!r}.")
    index = {w: i for i, w in enumerate(words)}
    if len(index) != len(words):
      seen, dups = set(), []
      for w in words:
        if w in seen:
          dups.append(w)
        seen.add(w)
      raise ValueError(f"WordVectors: {len(dups)} duplicate word(s), e.g. {dups[:5]}; words must "
                       "be unique (the loaders keep the first vector of each).")
    bad = _first_non_finite_row(vectors)
    if bad is not None:
      raise ValueError(f"WordVectors: the vector of {words[bad]!r} (row {bad}) is not finite.")
    object.__setattr__(self, "words", words)
    object.__setattr__(self, "vectors", vectors)
    object.__setattr__(self, "phrases", tuple(self.phrases))
    object.__setattr__(self, "index", index)
    object.__setattr__(self, "_unit", None)

  @property
  def dim(self) -> int:
    return int(self.vectors.shape[1])

  def __len__(self) -> int:
    return len(self.words)

  def __contains__(self, word: object) -> bool:
    return word in self.index

  def __getitem__(self, word: str) -> np.ndarray:
    if word not in self.index:
      raise KeyError(f"{word!r} is not in the vocabulary ({len(self)} words); use get() or "
                     "tag_vector() for tags that may be out of vocabulary.")
    return self.vectors[self.index[word]]

  def get(self, word: str, default: np.ndarray | None = None) -> np.ndarray | None:
    """The vector of `word` ([dim] float32), or `default` when it is not in the vocabulary."""
    i = self.index.get(word)
    return default if i is None else self.vectors[i]

  def __repr__(self) -> str:
    return (f"WordVectors({len(self)} words, dim {self.dim}"
            + (f", {len(self.phrases)} learned phrases" if self.phrases else "") + ")")

  def norms(self) -> np.ndarray:
    """Euclidean norm of every row: [words] float32."""
    return np.linalg.norm(self.vectors, axis=1)

  def unit_vectors(self) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): [words, dim] float32, computed once."""
    if self._unit is None:
      norms = self.norms()
      unit = self.vectors / np.where(norms > 0, norms, 1.0)[:, None]
      object.__setattr__(self, "_unit", unit.astype(np.float32))
    return self._unit

  def nearest(self, query: str | np.ndarray, k: int = 10,
              exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """The `k` words with the highest cosine similarity to `query`, best first.

    Args:
      query: a word of the vocabulary (itself excluded from the answer) or a vector [dim].
      k: how many neighbours (fewer when the vocabulary, less exclusions, is smaller).
      exclude: words never returned (those not in the vocabulary are ignored).

    Returns:
      [(word, cosine similarity)], similarity descending; ties go to the earlier word.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"nearest: k must be a positive int, got {k!r}.")
    excluded = {self.index[w] for w in exclude if w in self.index}
    if isinstance(query, str):
      if query not in self.index:
        raise KeyError(f"nearest: {query!r} is not in the vocabulary; pass its vector (e.g. from "
                       "tag_vector) instead.")
      excluded.add(self.index[query])
      q = self.vectors[self.index[query]]
    else:
      q = np.asarray(query, np.float32)
      if q.shape != (self.dim,):
        raise ValueError(f"nearest: the query vector has shape {q.shape}, expected ({self.dim},).")
      if not np.all(np.isfinite(q)):
        raise ValueError("nearest: the query vector is not finite.")
    q_norm = float(np.linalg.norm(q))
    if q_norm == 0.0:
      raise ValueError("nearest: the query vector is zero, so it has no cosine neighbours (an "
                       "out-of-vocabulary tag gives one; see tag_vector's `how`).")
    sims = self.unit_vectors() @ (q / q_norm)
    keep = np.ones(len(self), bool)
    keep[list(excluded)] = False
    candidates = np.flatnonzero(keep)
    if candidates.size == 0:
      return []
    k = min(int(k), candidates.size)
    cand_sims = sims[candidates]
    # Everything at least as similar as the k-th best, then an exact (similarity, index) sort, so
    # that ties at the cut are broken by index, not by argpartition's arbitrary order.
    kth = np.partition(cand_sims, cand_sims.size - k)[cand_sims.size - k]
    top = candidates[cand_sims >= kth]
    order = np.lexsort((top, -sims[top]))[:k]
    return [(self.words[int(i)], float(sims[i])) for i in top[order]]

  def save(self, path: str) -> str:
    """Writes atomically (temp file + rename); the format follows the suffix.

    `.npz`: our format (words, vectors and learned phrases; `load_npz`). `.bin`: word2vec binary.
    `.txt` or `.vec`: word2vec text with the "count dim" header. Returns `path`.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".npz", ".bin", ".txt", ".vec"):
      raise ValueError(f"WordVectors.save({path!r}): unknown suffix {suffix!r}; use .npz (ours, "
                       "keeps learned phrases), .bin (word2vec binary) or .txt/.vec (word2vec "
                       "text).")
    if suffix != ".npz":
      for w in self.words:
        if any(c.isspace() for c in w):
          raise ValueError(f"WordVectors.save({path!r}): the word {w!r} holds whitespace, which "
                           "the word2vec formats cannot store; save as .npz instead.")

    def write(f):
      if suffix == ".npz":
        np.savez(f, words=_join_words(self.words), vectors=self.vectors,
                 phrases=_join_words(self.phrases))
        return
      f.write(f"{len(self)} {self.dim}\n".encode("utf-8"))
      little = self.vectors.astype("<f4", copy=False)
      for w, row, lrow in zip(self.words, self.vectors, little):
        if suffix == ".bin":
          f.write(w.encode("utf-8") + b" " + lrow.tobytes() + b"\n")
        else:
          # 9 significant digits round-trip every float32 exactly.
          f.write((w + " " + " ".join(f"{v:.9g}" for v in row.tolist()) + "\n").encode("utf-8"))

    _write_atomic(path, write)
    return path

  @classmethod
  def from_gensim(cls, kv, phrases: Sequence[str] = ()) -> WordVectors:
    """Copies a gensim `KeyedVectors` (e.g. `Word2Vec(...).wv`)."""
    return cls(words=tuple(kv.index_to_key), vectors=np.array(kv.vectors, np.float32),
               phrases=tuple(phrases))


def _first_non_finite_row(vectors: np.ndarray, rows: int = 1 << 16) -> int | None:
  """Index of the first row with a NaN or inf, checked in chunks to bound the temporary memory."""
  for start in range(0, vectors.shape[0], rows):
    ok = np.isfinite(vectors[start:start + rows]).all(axis=1)
    if not ok.all():
      return start + int(np.argmin(ok))
  return None


def _join_words(words: Sequence[str]) -> np.ndarray:
  """Words as one uint8 array of "\\n"-joined UTF-8 (compact, and loads without pickle)."""
  return np.frombuffer("\n".join(words).encode("utf-8"), np.uint8)


def _split_words(data: np.ndarray) -> tuple[str, ...]:
  text = data.tobytes().decode("utf-8")
  return tuple(text.split("\n")) if text else ()


def _write_atomic(path: str, write) -> None:
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def load_npz(path: str) -> WordVectors:
  """Loads what `WordVectors.save(path.npz)` wrote."""
  check_file(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = {"words", "vectors"} - set(data.files)
      if missing:
        raise WordVectorFormatError(f"{path}: not a musemb word-vector .npz (missing "
                                    f"{sorted(missing)}); write one with WordVectors.save().")
      words = _split_words(data["words"])
      vectors = data["vectors"]
      phrases = _split_words(data["phrases"]) if "phrases" in data.files else ()
  except (OSError, ValueError) as e:
    if isinstance(e, WordVectorFormatError):
      raise
    raise WordVectorFormatError(f"{path}: cannot read as .npz ({e}).") from e
  try:
    return WordVectors(words, vectors, phrases)
  except ValueError as e:
    raise WordVectorFormatError(f"{path}: {e}") from e


class WordVectorFormatError(ValueError):
  """A word-vector file does not hold what its format promises; the message names file and line."""


def check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Word-vector file {path!r} does not exist (or is not a file).")
  if os.path.getsize(path) == 0:
    raise WordVectorFormatError(f"{path}: the file is empty.")
