"""Word vectors for tags and text queries: pretrained embeddings, domain-specific word2vec, tags.

Follows Won, Oramas, Nieto, Gouyon & Serra, "Multimodal metric learning for tag-based music
retrieval" (ICASSP 2021), sections 2.2.2 and 4.3. The tag branch of their model starts from a
300-dimensional pretrained word embedding, so that a query the tagger never saw (a synonym, a
plural, an unseen genre such as *jungle*) still lands somewhere sensible. They compare a general
embedding (word2vec trained on Google News) with a domain-specific one: word2vec trained on a
100M-word music corpus (SemEval-2018 task 9, subtask 2B) with a window of 10 words, whose
vocabulary includes frequent bigrams and trigrams (*deep_house*, *smooth_jazz*). Table 3 shows the
difference by nearest neighbours. Choi et al. (ISMIR 2019), which they build on, use GloVe.

This module provides the three pieces that takes:

* **One in-memory type**, `WordVectors` (words + a float32 matrix), loaded from the formats
  embeddings are published in: the word2vec C tool's binary and text formats (`load_word2vec`,
  binary or text detected from the content; text with or without the "count dim" header line),
  GloVe's headerless text (`load_glove`) and our own `.npz` (`WordVectors.save` / `load_npz`).
  The readers are our own (no gensim) so that a malformed file stops with its name, the line (or
  binary entry) and what was expected. Duplicate words keep their first vector, as in gensim and
  the C tool, and are counted in a log line.
* **Domain-specific training** (`train_word2vec`): texts are split into sentences and tokenised
  (`tokenize`: lowercase, "hip-hop", "r&b" and "drum'n'bass" stay whole, punctuation goes);
  frequent bigrams are joined with "_" by gensim's `Phrases` (Mikolov et al., NIPS 2013, section
  4: score (count(ab) - min_count) / (count(a) count(b)) * |V| above a threshold), then a second
  pass over the joined text finds trigrams ("deep_house" + "music"); gensim's `Word2Vec` (skip-gram
  with negative sampling by default) is trained on the result, plus (`keep_unigrams`) each changed
  sentence in its original words, so that the vocabulary holds "unigrams, frequent bigrams and
  trigrams" as the paper's does (otherwise a word seen mostly inside phrases, like "acoustic" in
  "acoustic_guitar", loses its own vector). With `workers=1` and a seed, the result is
  deterministic, also across interpreter launches (a stable hash replaces Python's salted `hash`
  for gensim's `hashfxn`).
* **Tags and queries to vectors** (`tag_vector`, `query_vector`, `tag_matrix`): a tag is
  lowercased and split into words; its phrase token ("deep_house", also "hip-hop" for "hip hop")
  is tried first, then the tag as one word, then the mean of the vectors of its longest in-
  vocabulary pieces (greedy longest n-gram first, so "dark ambient piano" averages "dark_ambient"
  and "piano" when the phrase exists); a tag with nothing in the vocabulary is out of vocabulary
  (OOV). `tag_matrix` embeds a tag vocabulary and counts how each tag was resolved; OOV rows are
  zeros, seeded random vectors, or an error naming the tags, as the caller chooses. Averaging raw
  (not unit-normalised) vectors follows common practice for multi-word GloVe/word2vec queries; the
  paper does not say how it embeds multi-word tags.

`nearest_words` and `neighbours_table` print Table 3 (nearest words under several embeddings).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import unicodedata
import zlib
from typing import Iterable, Mapping, Sequence

from absl import logging
import numpy as np

TAG_HOWS = ("phrase", "word", "mean", "oov")
OOV_POLICIES = ("zeros", "random", "error")
PHRASE_DELIMITER = "_"
# Longest tag n-gram (in words) tried as one phrase token; two Phrases passes make at most 4-grams.
MAX_PHRASE_WORDS = 4
# Bytes read at a time from binary word2vec files.
_CHUNK_BYTES = 1 << 20
# A binary entry's word longer than this means the header's dimension (or the file) is wrong.
_MAX_WORD_BYTES = 4096


# ------------------------------------------------------------------------------------------------
# The in-memory type.


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


# ------------------------------------------------------------------------------------------------
# Loading.


class WordVectorFormatError(ValueError):
  """A word-vector file does not hold what its format promises; the message names file and line."""


def load_word_vectors(path: str, *, limit: int | None = None) -> WordVectors:
  """Loads by suffix: `.npz` with `load_npz`, anything else with `load_word2vec` (which detects
  binary vs text and header vs none, so GloVe files load too)."""
  if path.lower().endswith(".npz"):
    if limit is not None:
      raise ValueError(f"load_word_vectors({path!r}): limit is not supported for .npz files.")
    return load_npz(path)
  return load_word2vec(path, limit=limit)


def load_npz(path: str) -> WordVectors:
  """Loads what `WordVectors.save(path.npz)` wrote."""
  _check_file(path)
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


def load_word2vec(path: str, binary: bool | None = None, *, limit: int | None = None,
                  unicode_errors: str = "strict") -> WordVectors:
  """Loads word2vec vectors in the C tool's binary or text format.

  Args:
    path: the file. Text may lack the "count dim" header line (then it is GloVe's format, and the
      dimension is read off the first line); binary always has it.
    binary: None detects the format from the content (after the header, a text file's first entry
      is a line of `dim` numbers; a binary one is raw little-endian float32). True/False state it,
      and a file whose content says otherwise is an error rather than silent garbage.
    limit: read only the first `limit` words (files are usually sorted by frequency).
    unicode_errors: how to decode words that are not valid UTF-8 ("strict", or "replace" /
      "ignore" for files whose words were cut inside a multi-byte character).

  Returns:
    The vectors; a word that occurs twice keeps its first vector (counted in a log line).

  Raises:
    WordVectorFormatError: the content is malformed; the message names the file and the line (text)
      or entry and byte offset (binary) and what was expected.
  """
  limit = _check_limit(limit)
  _check_file(path)
  with open(path, "rb") as f:
    first = f.readline(1 << 20)
    header = _parse_header(first)
    if header is None:
      if binary:
        raise WordVectorFormatError(
            f"{path}: line 1 {_show(first)} is not a 'count dim' header, which binary word2vec "
            "files start with; is this a text file? Pass binary=None to detect the format.")
      f.seek(0)
      return _read_text(f, path, None, limit, unicode_errors, first_line=1)
    count, dim = header
    if count < 1 or dim < 1:
      raise WordVectorFormatError(f"{path}: line 1: the header says {count} vectors of dimension "
                                  f"{dim}; both must be positive.")
    start = f.tell()
    if not f.read(4096).strip():
      raise WordVectorFormatError(f"{path}: holds the header {_show(first)} but no vectors.")
    f.seek(start)
    detected = _looks_binary(f, dim)
    if binary is not None and bool(binary) != detected:
      raise WordVectorFormatError(
          f"{path}: binary={binary} but the first entry after the header looks "
          f"{'binary' if detected else 'like text'}; pass binary=None to detect the format.")
    if detected:
      return _read_binary(f, path, count, dim, limit, unicode_errors)
    return _read_text(f, path, (count, dim), limit, unicode_errors, first_line=2)


def load_glove(path: str, *, limit: int | None = None) -> WordVectors:
  """Loads GloVe's text format: one "word x1 ... xd" line per word, no header line.

  Words that hold spaces (a few in glove.840B, e.g. ". . .") are read whole: every field before
  the last `d` numbers belongs to the word.
  """
  limit = _check_limit(limit)
  _check_file(path)
  with open(path, "rb") as f:
    first = f.readline(1 << 20)
    if _parse_header(first) is not None:
      raise WordVectorFormatError(
          f"{path}: line 1 {_show(first)} is a word2vec 'count dim' header, which GloVe files do "
          "not have; load it with load_word2vec().")
    f.seek(0)
    return _read_text(f, path, None, limit, "strict", first_line=1)


def _check_limit(limit):
  if limit is None:
    return None
  if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
    raise ValueError(f"limit must be a positive int or None, got {limit!r}.")
  return int(limit)


def _check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Word-vector file {path!r} does not exist (or is not a file).")
  if os.path.getsize(path) == 0:
    raise WordVectorFormatError(f"{path}: the file is empty.")


def _show(line: bytes, n: int = 60) -> str:
  text = line.rstrip(b"\r\n").decode("utf-8", "replace")
  return repr(text if len(text) <= n else text[:n] + "...")


def _parse_header(line: bytes) -> tuple[int, int] | None:
  """(count, dim) if `line` is a word2vec header, else None. A first line of exactly two integers
  is read as the header (a headerless file whose first word is a number and dim is 1 would be
  misread; no published embedding looks like that)."""
  try:
    fields = line.decode("ascii").split()
  except UnicodeDecodeError:
    return None
  if len(fields) != 2 or not all(f.isdigit() for f in fields):
    return None
  return int(fields[0]), int(fields[1])


def _looks_binary(f, dim: int) -> bool:
  """Whether the entry after the header is binary: a text entry is a line of `dim` numbers."""
  start = f.tell()
  size = 16 * dim + 4096
  chunk = f.read(size)
  f.seek(start)
  stripped = chunk.lstrip(b"\n")
  end = stripped.find(b"\n")
  if end == -1:
    if len(chunk) == size:
      return True                 # no newline within the longest plausible text line
    end = len(stripped)           # a one-line text file without a final newline
  chunk = stripped
  try:
    parts = [p for p in chunk[:end].decode("utf-8").rstrip("\r ").split(" ") if p]
    if len(parts) < dim + 1:
      return True
    np.asarray(parts[len(parts) - dim:], np.float32)
    return False
  except (UnicodeDecodeError, ValueError):
    return True


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def _finish(path: str, words: list[str], vectors: np.ndarray, duplicates: list[str]) -> WordVectors:
  if duplicates:
    logging.warning("%s: %d duplicate word(s) kept their first vector, e.g. %s.", path,
                    len(duplicates), duplicates[:5])
  if not words:
    raise WordVectorFormatError(f"{path}: holds no vectors.")
  return WordVectors(tuple(words), vectors)


def _read_text(f, path: str, header: tuple[int, int] | None, limit: int | None,
               unicode_errors: str, first_line: int) -> WordVectors:
  """Reads "word x1 ... xd" lines from `f` (positioned after the header, if any)."""
  if header is not None:
    count, dim = header
    if count < 1 or dim < 1:
      raise WordVectorFormatError(f"{path}: line 1: the header says {count} vectors of dimension "
                                  f"{dim}; both must be positive.")
  else:
    count, dim = None, None
  # Entries to read: the header's count and the limit, whichever is smaller (None: to the end).
  n_max = min(n for n in (count, limit) if n is not None) if (count or limit) else None
  words: list[str] = []
  rows: list[np.ndarray] = []
  seen: set[str] = set()
  duplicates: list[str] = []
  line_no, dim_line = first_line - 1, first_line
  for raw in f:
    line_no += 1
    try:
      line = raw.decode("utf-8", unicode_errors)
    except UnicodeDecodeError as e:
      raise WordVectorFormatError(
          f"{path}: line {line_no}: not valid UTF-8 ({e.reason} at byte {e.start}); pass "
          "unicode_errors='replace' to load it anyway, or binary=True if the file is "
          "binary.") from e
    parts = [p for p in line.rstrip("\r\n\t ").split(" ") if p]
    if not parts:
      continue                    # blank lines carry nothing
    if n_max is not None and len(words) + len(duplicates) >= n_max:
      if count is not None and (limit is None or limit >= count):
        raise WordVectorFormatError(
            f"{path}: line {line_no}: the header promises {count} vectors but more lines "
            "follow; fix the header's count.")
      break                       # the limit is reached
    if dim is None:
      dim, dim_line = len(parts) - 1, line_no
      if dim < 1:
        raise WordVectorFormatError(f"{path}: line {line_no}: {_show(raw)} holds a word but no "
                                    "numbers; expected 'word x1 ... xd'.")
    if len(parts) - 1 < dim or (len(parts) - 1 > dim and _is_number(parts[-dim - 1])):
      where = "the header's" if header is not None else f"line {dim_line}'s"
      raise WordVectorFormatError(
          f"{path}: line {line_no}: {len(parts) - 1} fields after the word {parts[0]!r}, but "
          f"{where} dimension is {dim}; every line must be 'word x1 ... x{dim}'.")
    # Fields before the last `dim` numbers are the word (GloVe 840B has words with spaces).
    word = " ".join(parts[:len(parts) - dim])
    try:
      vector = np.asarray(parts[len(parts) - dim:], np.float32)
    except ValueError:
      bad = next(p for p in parts[len(parts) - dim:] if not _is_number(p))
      raise WordVectorFormatError(f"{path}: line {line_no}: {bad!r} (in the vector of {word!r}) "
                                  "is not a number.") from None
    if not np.all(np.isfinite(vector)):
      raise WordVectorFormatError(f"{path}: line {line_no}: the vector of {word!r} holds NaN or "
                                  "inf.")
    if word in seen:
      duplicates.append(word)
      continue
    seen.add(word)
    words.append(word)
    rows.append(vector)
  n_read = len(words) + len(duplicates)
  if count is not None and n_read < (count if limit is None else min(count, limit)):
    raise WordVectorFormatError(f"{path}: the file ends at line {line_no} after {n_read} vectors, "
                                f"but its header promises {count}; the file is truncated or the "
                                "header's count is wrong.")
  vectors = np.stack(rows) if rows else np.zeros((0, dim or 1), np.float32)
  return _finish(path, words, vectors, duplicates)


def _read_binary(f, path: str, count: int, dim: int, limit: int | None,
                 unicode_errors: str) -> WordVectors:
  """Reads `count` entries of "word<space><dim little-endian float32>" (an optional "\\n" ends
  each entry: the C tool writes one, gensim does not)."""
  if count < 1 or dim < 1:
    raise WordVectorFormatError(f"{path}: line 1: the header says {count} vectors of dimension "
                                f"{dim}; both must be positive.")
  n = count if limit is None else min(count, limit)
  nbytes = 4 * dim
  vectors = np.empty((n, dim), np.float32)
  words: list[str] = []
  seen: set[str] = set()
  duplicates: list[str] = []
  buf, pos, offset = b"", 0, f.tell()       # offset: file position of buf[0]
  for i in range(n):
    while True:
      space = buf.find(b" ", pos)
      if space != -1 and len(buf) - space - 1 >= nbytes:
        break
      if (space == -1 and len(buf) - pos > _MAX_WORD_BYTES) or space - pos > _MAX_WORD_BYTES:
        raise WordVectorFormatError(
            f"{path}: binary entry {i + 1} (byte {offset + pos}): no word ends within "
            f"{_MAX_WORD_BYTES} bytes; the header's dimension {dim} is probably wrong.")
      more = f.read(_CHUNK_BYTES)
      if not more:
        raise WordVectorFormatError(
            f"{path}: the file ends inside binary entry {i + 1} of the {count} its header "
            f"promises (byte {offset + len(buf)}); it is truncated, or the header's count or "
            f"dimension ({dim}) is wrong.")
      offset += pos
      buf, pos = buf[pos:] + more, 0
    raw_word = buf[pos:space].lstrip(b"\n")
    try:
      word = raw_word.decode("utf-8", unicode_errors)
    except UnicodeDecodeError as e:
      raise WordVectorFormatError(
          f"{path}: binary entry {i + 1} (byte {offset + pos}): the word is not valid UTF-8 "
          f"({e.reason}); if the header's dimension {dim} is right, pass unicode_errors='replace'"
          ".") from e
    if not word or "\n" in word or " " in word:
      raise WordVectorFormatError(
          f"{path}: binary entry {i + 1} (byte {offset + pos}): {word!r} is not a word; the "
          f"header's dimension {dim} is probably wrong.")
    vector = np.frombuffer(buf, "<f4", dim, space + 1)
    pos = space + 1 + nbytes
    if not np.all(np.isfinite(vector)):
      raise WordVectorFormatError(f"{path}: binary entry {i + 1}: the vector of {word!r} holds "
                                  "NaN or inf.")
    if word in seen:
      duplicates.append(word)
      continue
    seen.add(word)
    vectors[len(words)] = vector
    words.append(word)
  if limit is None or limit >= count:
    rest = buf[pos:] + f.read(_CHUNK_BYTES)
    if rest.strip():
      raise WordVectorFormatError(
          f"{path}: {len(rest.strip())}+ bytes follow the {count} binary entries the header "
          "promises; fix the header's count.")
  return _finish(path, words, vectors[:len(words)], duplicates)


# ------------------------------------------------------------------------------------------------
# Text and domain-specific training.

# A word: letters/digits, possibly joined by hyphens, ampersands or apostrophes ("hip-hop", "r&b",
# "drum'n'bass"). Underscores count as separators, so our phrase tokens never come from raw text.
_TOKEN_RE = re.compile(r"[^\W_]+(?:['&-][^\W_]+)*")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s+|\n+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2010": "-",
                              "\u2011": "-"})


def tokenize(text: str) -> list[str]:
  """Lowercase words of `text`: punctuation dropped; "hip-hop", "r&b", "rock'n'roll" kept whole."""
  if not isinstance(text, str):
    raise TypeError(f"tokenize: expected a str, got {type(text).__name__}.")
  text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
  return _TOKEN_RE.findall(text)


def split_sentences(text: str) -> list[list[str]]:
  """`text` split at sentence ends (. ! ? ; then whitespace, or newlines) and tokenised; empty
  sentences are left out. Phrases and word2vec windows then never span two sentences."""
  out = []
  for sentence in _SENTENCE_END_RE.split(text):
    tokens = tokenize(sentence)
    if tokens:
      out.append(tokens)
  return out


def corpus_from_reviews(reviews) -> list[str]:
  """The texts of `musemb.data.sources.records.Review`s (anything with a str `.text`), in order."""
  texts = []
  for i, r in enumerate(reviews):
    text = getattr(r, "text", None)
    if not isinstance(text, str):
      raise TypeError(f"corpus_from_reviews: item {i} ({type(r).__name__}) has no str .text; "
                      "pass Review records, e.g. SyntheticWorld(...).tables().reviews.")
    texts.append(text)
  if not texts:
    raise ValueError("corpus_from_reviews: no reviews given; the source's tables() has none (a "
                     "world with reviews_per_album=0, or a source without reviews).")
  return texts


def _as_sentences(corpus) -> list[list[str]]:
  """Texts (str) are split and tokenised; token lists are used as given (already tokenised)."""
  if isinstance(corpus, str):
    raise TypeError("train_word2vec: pass a list of texts (or of token lists), not one str.")
  sentences: list[list[str]] = []
  kinds = set()
  for i, item in enumerate(corpus):
    if isinstance(item, str):
      kinds.add("text")
      sentences.extend(split_sentences(item))
    elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
      kinds.add("tokens")
      if item:
        sentences.append(list(item))
    else:
      raise TypeError(f"train_word2vec: corpus item {i} is a {type(item).__name__}; expected a "
                      "text (str) or a sentence (list of str tokens).")
  if len(kinds) > 1:
    raise TypeError("train_word2vec: the corpus mixes texts and token lists; pass one kind.")
  if not sentences:
    raise ValueError("train_word2vec: the corpus holds no words.")
  return sentences


def learn_phrases(sentences: Sequence[Sequence[str]], *, passes: int = 2, min_count: int = 5,
                  threshold: float = 10.0, scoring: str = "default",
                  connector_words: Iterable[str] | None = None,
                  ) -> tuple[list[list[str]], dict[str, float]]:
  """Joins frequent n-grams with "_" by `passes` rounds of gensim `Phrases` (2: bi- then trigrams).

  Args:
    sentences: tokenised sentences.
    passes: rounds; each may join two tokens (possibly phrases already) into one.
    min_count: n-grams (and words) rarer than this are never joined.
    threshold: score above which an n-gram becomes a phrase (see gensim's `scoring`; "default" is
      Mikolov et al.'s, "npmi" is in [-1, 1]).
    scoring: "default" or "npmi".
    connector_words: words allowed inside but not at the ends of a phrase ("rock and roll"); None
      is gensim's English set (articles, common prepositions, "and", "or").

  Returns:
    (the sentences with phrases joined, {phrase token: its score in the pass that made it}), for
    the phrases that occur in the returned sentences.
  """
  from gensim.models import phrases as gensim_phrases  # pylint: disable=g-import-not-at-top
  if passes < 0:
    raise ValueError(f"learn_phrases: passes must be >= 0, got {passes}.")
  if connector_words is None:
    connector_words = gensim_phrases.ENGLISH_CONNECTOR_WORDS
  current = [list(s) for s in sentences]
  learned: dict[str, float] = {}
  for _ in range(passes):
    model = gensim_phrases.Phrases(current, min_count=min_count, threshold=threshold,
                                   scoring=scoring, delimiter=PHRASE_DELIMITER,
                                   connector_words=frozenset(connector_words))
    # Phrases found by applying the model (not export_phrases, which misreads phrase tokens of
    # an earlier pass as separate words).
    joined = []
    for sentence in current:
      out = []
      for token, score in model.analyze_sentence(sentence):
        if score is not None:
          learned[token] = float(score)
        out.append(token)
      joined.append(out)
    current = joined
  present = {t for s in current for t in s}
  return current, {p: s for p, s in learned.items() if p in present}


def _stable_hash(text: str) -> int:
  """A hash that, unlike `hash(str)`, is the same in every interpreter (gensim's `hashfxn`)."""
  return zlib.crc32(text.encode("utf-8"))


def train_word2vec(corpus: Iterable[str] | Iterable[Sequence[str]], *, dim: int = 300,
                   window: int = 10, min_count: int = 5, epochs: int = 5, skipgram: bool = True,
                   negative: int = 5, sample: float = 1e-3, alpha: float = 0.025,
                   phrase_passes: int = 2, phrase_min_count: int = 5,
                   phrase_threshold: float = 10.0, phrase_scoring: str = "default",
                   connector_words: Iterable[str] | None = None, keep_unigrams: bool = True,
                   seed: int = 0, workers: int = 1) -> WordVectors:
  """Trains domain-specific word2vec with phrases, as Won et al. (section 4.3) do on music text.

  Args:
    corpus: texts (each split into sentences and tokenised with `tokenize`) or already tokenised
      sentences (lists of str, used as given).
    dim: vector size (300 in the paper, as Google News word2vec).
    window: context window (10 in the paper).
    min_count: words (and phrases) rarer than this get no vector.
    epochs: passes over the corpus.
    skipgram: skip-gram (True) or CBOW (False); negative sampling with `negative` noise words.
    negative, sample, alpha: gensim's negative samples, frequent-word downsampling threshold and
      initial learning rate.
    phrase_passes, phrase_min_count, phrase_threshold, phrase_scoring, connector_words: see
      `learn_phrases`; phrase_passes=0 trains on single words only.
    keep_unigrams: also train on every sentence that phrases changed in its original words, so a
      word keeps its own vector even where it mostly occurs inside phrases ("acoustic" next to
      "acoustic_guitar"); the paper's embedding has "unigrams, frequent bigrams and trigrams".
    seed: initialisation and sampling seed.
    workers: threads; 1 (default) makes training deterministic given the seed.

  Returns:
    WordVectors in descending frequency order; `phrases` lists the learned phrase tokens that got
    a vector, best scoring first.
  """
  from gensim.models import word2vec  # pylint: disable=g-import-not-at-top
  for name, value in (("dim", dim), ("window", window), ("min_count", min_count),
                      ("epochs", epochs), ("workers", workers), ("phrase_min_count",
                                                                 phrase_min_count)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"train_word2vec: {name} must be a positive int, got {value!r}.")
  words = _as_sentences(corpus)
  sentences, phrases = learn_phrases(
      words, passes=phrase_passes, min_count=phrase_min_count, threshold=phrase_threshold,
      scoring=phrase_scoring, connector_words=connector_words)
  if keep_unigrams:
    # Each phrased sentence is followed by its original words (order fixed: deterministic).
    sentences = [x for joined, plain in zip(sentences, words)
                 for x in ((joined, plain) if joined != plain else (joined,))]
  counts: dict[str, int] = {}
  for s in sentences:
    for t in s:
      counts[t] = counts.get(t, 0) + 1
  kept = sum(1 for c in counts.values() if c >= min_count)
  if kept == 0:
    raise ValueError(f"train_word2vec: no word occurs min_count={min_count} times in the corpus "
                     f"({sum(counts.values())} tokens, {len(counts)} distinct); lower min_count or "
                     "give a larger corpus.")
  model = word2vec.Word2Vec(
      sentences=sentences, vector_size=int(dim), window=int(window), min_count=int(min_count),
      sg=1 if skipgram else 0, hs=0, negative=int(negative), sample=float(sample),
      alpha=float(alpha), epochs=int(epochs), seed=int(seed), workers=int(workers),
      hashfxn=_stable_hash)
  vocab = set(model.wv.index_to_key)
  kept_phrases = sorted((p for p in phrases if p in vocab), key=lambda p: (-phrases[p], p))
  logging.info("word2vec: %d sentences, %d tokens, %d words with vectors (min_count=%d); %d "
               "phrases learned, %d with vectors, e.g. %s.", len(sentences),
               sum(counts.values()), len(vocab), min_count, len(phrases), len(kept_phrases),
               kept_phrases[:8])
  return WordVectors.from_gensim(model.wv, phrases=kept_phrases)


# ------------------------------------------------------------------------------------------------
# Tags and queries.


@dataclasses.dataclass(frozen=True)
class TagResolution:
  """How a tag maps onto a vocabulary.

  Attributes:
    how: "phrase" (one "_"/"-"-joined token), "word" (the tag is one word of the vocabulary),
      "mean" (the mean of `tokens`), or "oov" (nothing found).
    tokens: the vocabulary entries whose vectors make the tag's vector.
    missing: words of the tag that no entry covered (for "mean" and "oov").
  """

  how: str
  tokens: tuple[str, ...]
  missing: tuple[str, ...] = ()


def _tag_words(tag: str) -> list[str]:
  if not isinstance(tag, str):
    raise TypeError(f"Tags and queries must be str, got {type(tag).__name__} {tag!r}.")
  words = tokenize(tag.replace(PHRASE_DELIMITER, " "))
  if not words:
    raise ValueError(f"The tag or query {tag!r} holds no words (letters or digits).")
  return words


def _parts(word: str) -> list[str]:
  return [p for p in word.split("-") if p]


def resolve_tag(wv: WordVectors, tag: str) -> TagResolution:
  """Which vocabulary entries make `tag`'s vector (see `tag_vector`)."""
  words = _tag_words(tag)
  flat = [p for w in words for p in _parts(w)]
  if len(flat) > 1:
    for delimiter in (PHRASE_DELIMITER, "-"):
      phrase = delimiter.join(flat)
      if phrase in wv:
        return TagResolution("phrase", (phrase,))
  if len(words) == 1 and words[0] in wv:
    return TagResolution("word", (words[0],))
  # Greedy left-to-right segmentation into the longest in-vocabulary pieces.
  tokens: list[str] = []
  missing: list[str] = []
  i = 0
  while i < len(words):
    for n in range(min(MAX_PHRASE_WORDS, len(words) - i), 1, -1):
      piece = PHRASE_DELIMITER.join(p for w in words[i:i + n] for p in _parts(w))
      if piece in wv:
        tokens.append(piece)
        i += n
        break
    else:
      word, parts = words[i], _parts(words[i])
      if word in wv:
        tokens.append(word)
      elif len(parts) > 1 and PHRASE_DELIMITER.join(parts) in wv:
        tokens.append(PHRASE_DELIMITER.join(parts))
      else:
        for p in parts:
          (tokens if p in wv else missing).append(p)
      i += 1
  if not tokens:
    return TagResolution("oov", (), tuple(flat))
  return TagResolution("mean", tuple(tokens), tuple(missing))


def tag_vector(wv: WordVectors, tag: str) -> tuple[np.ndarray, str]:
  """`tag`'s vector and how it was found.

  The tag is lowercased and split into words ("_" and spaces separate words; "-" joins parts).
  In order: its phrase token ("deep house" -> "deep_house", else "deep-house"), the tag as one
  word ("jungle", "hip-hop", "r&b"), the mean of the vectors of its longest in-vocabulary pieces
  ("dark ambient piano" -> mean of "dark_ambient" and "piano", or of the three words), else OOV.

  Returns:
    (vector [dim] float32, how): how is one of TAG_HOWS; an OOV tag's vector is zeros.
  """
  r = resolve_tag(wv, tag)
  if r.how == "oov":
    return np.zeros(wv.dim, np.float32), r.how
  if len(r.tokens) == 1:
    return wv[r.tokens[0]].copy(), r.how
  return np.mean([wv[t] for t in r.tokens], axis=0).astype(np.float32), r.how


def query_vector(wv: WordVectors, query: str) -> tuple[np.ndarray, str]:
  """A free-text query ("dark ambient piano") embedded exactly as a tag is (`tag_vector`)."""
  return tag_vector(wv, query)


@dataclasses.dataclass(frozen=True)
class TagReport:
  """How `tag_matrix` embedded each tag.

  Attributes:
    how: one of TAG_HOWS per tag, in input order.
    counts: tags per way, every key of TAG_HOWS present.
    oov_tags: the out-of-vocabulary tags, in input order.
    partial: "mean" tags with words no entry covered: tag -> those words.
    oov_policy: what OOV rows hold ("zeros", "random").
  """

  how: tuple[str, ...]
  counts: dict[str, int]
  oov_tags: tuple[str, ...]
  partial: dict[str, tuple[str, ...]]
  oov_policy: str

  def summary(self) -> str:
    counts = ", ".join(f"{self.counts[h]} {h}" for h in TAG_HOWS)
    out = f"{len(self.how)} tags: {counts}"
    if self.oov_tags:
      out += f"; OOV ({self.oov_policy}): {list(self.oov_tags[:10])}"
      if len(self.oov_tags) > 10:
        out += f" and {len(self.oov_tags) - 10} more"
    if self.partial:
      out += f"; {len(self.partial)} averaged without some words, e.g. " + ", ".join(
          f"{t!r} (no {list(m)})" for t, m in list(self.partial.items())[:5])
    return out


class OutOfVocabularyError(ValueError):
  """Tags with no vector under oov="error"; `tags` lists them."""

  def __init__(self, message: str, tags: Sequence[str]):
    super().__init__(message)
    self.tags = tuple(tags)


def random_oov_vector(wv: WordVectors, tag: str, seed: int) -> np.ndarray:
  """A seeded random direction for `tag`, scaled to the median norm of the vocabulary's vectors.

  Seeded by (seed, crc32 of the tag), so a tag gets the same vector wherever it sits in a list.
  """
  rng = np.random.default_rng([int(seed), zlib.crc32(tag.encode("utf-8"))])
  v = rng.standard_normal(wv.dim)
  scale = float(np.median(wv.norms())) or 1.0
  return (v / np.linalg.norm(v) * scale).astype(np.float32)


def tag_matrix(wv: WordVectors, tags: Sequence[str], *, oov: str = "zeros",
               seed: int = 0) -> tuple[np.ndarray, TagReport]:
  """Embeds a tag vocabulary: row i is `tag_vector(wv, tags[i])`.

  Args:
    wv: the word vectors.
    tags: the tags, e.g. a dataset's tag names.
    oov: what an out-of-vocabulary tag's row holds: "zeros"; "random" (`random_oov_vector`:
      seeded, with the vocabulary's median norm); or "error" (raise, naming the tags).
    seed: seed of the "random" rows.

  Returns:
    (matrix [len(tags), dim] float32, TagReport); the report's summary is also logged.

  Raises:
    OutOfVocabularyError: oov="error" and some tags have no vector.
  """
  if oov not in OOV_POLICIES:
    raise ValueError(f"tag_matrix: oov={oov!r} is not one of {OOV_POLICIES}.")
  if isinstance(tags, str):
    raise TypeError("tag_matrix: pass a sequence of tags, not one str.")
  tags = list(tags)
  matrix = np.zeros((len(tags), wv.dim), np.float32)
  hows, oov_tags, partial = [], [], {}
  for i, tag in enumerate(tags):
    r = resolve_tag(wv, tag)
    hows.append(r.how)
    if r.how == "oov":
      oov_tags.append(tag)
      if oov == "random":
        matrix[i] = random_oov_vector(wv, tag, seed)
      continue
    if r.how == "mean" and r.missing:
      partial[tag] = r.missing
    matrix[i] = np.mean([wv[t] for t in r.tokens], axis=0)
  if oov_tags and oov == "error":
    shown = ", ".join(repr(t) for t in oov_tags[:20])
    more = f" and {len(oov_tags) - 20} more" if len(oov_tags) > 20 else ""
    raise OutOfVocabularyError(
        f"{len(oov_tags)} of {len(tags)} tags have no word vector ({shown}{more}) in "
        f"{wv!r}. Train domain-specific vectors on a corpus that mentions them "
        "(musemb.wordvec.train_word2vec, e.g. on the source's reviews), load an embedding that "
        "covers them, or pass oov='zeros' or oov='random'.", oov_tags)
  report = TagReport(how=tuple(hows), counts={h: hows.count(h) for h in TAG_HOWS},
                     oov_tags=tuple(oov_tags), partial=partial, oov_policy=oov)
  logging.info("tag_matrix: %s", report.summary())
  return matrix, report


# ------------------------------------------------------------------------------------------------
# Table 3: nearest words.


def nearest_words(wv: WordVectors, word: str, k: int = 10) -> list[tuple[str, float]]:
  """The `k` nearest vocabulary entries to a word, tag or phrase by cosine, best first.

  `word` is embedded by `tag_vector` ("deep house" finds "deep_house"); the entries it was built
  from are left out of the answer.

  Raises:
    KeyError: `word` is out of vocabulary.
  """
  r = resolve_tag(wv, word)
  if r.how == "oov":
    raise KeyError(f"nearest_words: {word!r} is out of vocabulary ({wv!r}).")
  vector, _ = tag_vector(wv, word)
  return wv.nearest(vector, k, exclude=r.tokens)


def neighbours_table(embeddings: Mapping[str, WordVectors], words: Sequence[str],
                     k: int = 10) -> str:
  """A markdown table like the paper's Table 3: one row per word, one column per embedding."""
  names = list(embeddings)
  lines = ["| Tag | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for word in words:
    cells = []
    for name in names:
      try:
        cells.append(", ".join(w for w, _ in nearest_words(embeddings[name], word, k)))
      except KeyError:
        cells.append("(out of vocabulary)")
    lines.append(f"| {word} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
