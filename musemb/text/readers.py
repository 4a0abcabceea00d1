"""Readers for word embeddings as published: the word2vec C tool's binary and text formats, GloVe.

`load_word_vectors(path)` picks the reader from the file (our .npz, word2vec binary or text with or
without the "count dim" header, GloVe's headerless text). The readers are our own (no gensim) so
that a malformed file stops with its name, the line (or binary entry) and what was expected.
Duplicate words keep their first vector, as in gensim and the C tool, and are counted in a log line.
"""

from __future__ import annotations


from absl import logging
import numpy as np

from musemb.text.vectors import WordVectorFormatError, WordVectors, check_file, load_npz

# Bytes read at a time from binary word2vec files.
_CHUNK_BYTES = 1 << 20
# A binary entry's word longer than this means the header's dimension (or the file) is wrong.
_MAX_WORD_BYTES = 4096



def load_word_vectors(path: str, *, limit: int | None = None) -> WordVectors:
  """Loads by suffix: `.npz` with `load_npz`, anything else with `load_word2vec` (which detects
  binary vs text and header vs none, so GloVe files load too)."""
  if path.lower().endswith(".npz"):
    if limit is not None:
      raise ValueError(f"load_word_vectors({path!r}): limit is not supported for .npz files.")
    return load_npz(path)
  return load_word2vec(path, limit=limit)


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
  check_file(path)
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
  check_file(path)
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
