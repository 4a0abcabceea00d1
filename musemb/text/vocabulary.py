"""Word ids for the text encoders: the N most frequent training words, padding and unknown tokens.

Rush, Yang, Hsu, Rybicki, Le & Lin, *Learning to Rank with Text-Music Embeddings* (section 6.2):
"We used a vocab size of 60000, all other words beyond that were tagged with an unknown token"
(the authors' code, noah-rush/Joint-Music-Text-Embeddings `Data.py`, trains a 30,000-word one).
`Vocabulary.build(train_texts)` keeps the `size` most frequent words of the training texts (their
words come from `musemb.text.tokenize.tokenize`, the tokenizer every text path shares), and
`Vocabulary.encode(texts, max_length)` turns texts into the padded int arrays the encoders of
`musemb.models.text` read:

    ids      [texts, max_length] int32, PAD_ID (0) after the text's end
    lengths  [texts] int32, the number of real tokens (unknown words count: they are words)

Choices, each for a reason:

* Id 0 is padding and id 1 unknown, so a table of `len(vocab)` rows covers every id, and padding
  is recognisable without the lengths (the encoders still use the lengths, which also cover an
  unknown token at the end).
* Ties in frequency are broken alphabetically, so the vocabulary depends on the texts' words and
  counts only, not on the order the reviews were read in.
* Texts longer than `max_length` keep their first `max_length` tokens (static shapes; the authors'
  code cuts reviews at 400 tokens and pads them on the left), and how many were cut is reported.
  An empty text has length 0; the encoders map it to the zero vector.
* Only training texts build the vocabulary: words of held-out reviews that the training texts do
  not contain are unknown, as they would be for a new review.

`vectors_for_vocabulary` initialises an embedding table from loaded word vectors
(`musemb.text.readers.load_word_vectors`): words the vectors lack get random rows on the vectors'
scale, and are counted and logged, since a vocabulary mostly missing from its vectors means the
wrong file (or a cased file for our lowercase tokens).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Iterable, Sequence

from absl import logging
import numpy as np

from musemb import utils
from musemb.text import tokenize as tokenize_lib
from musemb.text import vectors as vectors_lib

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
NUM_SPECIAL = 2
DEFAULT_SIZE = 60_000  # section 6.2


@dataclasses.dataclass(frozen=True)
class EncodedTexts:
  """Texts as padded ids.

  Attributes:
    ids: [texts, max_length] int32; PAD_ID after each text's end.
    lengths: [texts] int32 real tokens per text (0 for an empty text).
    num_truncated: texts longer than max_length, cut to their first max_length tokens.
    num_unknown: tokens mapped to UNK_ID (within the kept max_length tokens).
    num_tokens: real tokens kept in all (the sum of lengths).
  """
  ids: np.ndarray
  lengths: np.ndarray
  num_truncated: int
  num_unknown: int
  num_tokens: int


@dataclasses.dataclass(frozen=True, eq=False)
class Vocabulary:
  """The words of the training texts that get their own id; every other word is UNK_ID.

  Attributes:
    words: the kept words, most frequent first (ties alphabetical); word i has id i + NUM_SPECIAL.
    counts: their counts in the training texts.
    index: word -> id, built on construction.
  """
  words: tuple[str, ...]
  counts: tuple[int, ...]
  index: dict[str, int] = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    words, counts = tuple(self.words), tuple(int(c) for c in self.counts)
    if len(words) != len(counts):
      raise ValueError(f"Vocabulary: {len(words)} words but {len(counts)} counts.")
    if PAD in words or UNK in words:
      raise ValueError(f"Vocabulary: {PAD!r} and {UNK!r} are reserved for padding and unknown "
                       "words; they cannot be vocabulary words.")
    index = {w: i + NUM_SPECIAL for i, w in enumerate(words)}
    if len(index) != len(words):
      raise ValueError("Vocabulary: the words are not unique.")
    object.__setattr__(self, "words", words)
    object.__setattr__(self, "counts", counts)
    object.__setattr__(self, "index", index)

  @classmethod
  def build(cls, texts: Iterable[str], size: int = DEFAULT_SIZE, min_count: int = 1) -> Vocabulary:
    """The `size` most frequent words (occurring at least `min_count` times) of `texts`.

    Args:
      texts: the training texts (raw strings; tokenised with `musemb.text.tokenize.tokenize`).
      size: how many words get an id (60,000 in the paper); fewer when the texts have fewer.
      min_count: words rarer than this are left out even when there is room.
    """
    for name, value in (("size", size), ("min_count", min_count)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Vocabulary.build: {name} must be a positive int, got {value!r}.")
    counter: collections.Counter[str] = collections.Counter()
    num_texts = 0
    for text in texts:
      counter.update(tokenize_lib.tokenize(text))
      num_texts += 1
    if not counter:
      raise ValueError(f"Vocabulary.build: the {num_texts} texts hold no words; pass the training "
                       "reviews' texts (e.g. tokenize.corpus_from_reviews(reviews)).")
    counter.pop(PAD, None)
    counter.pop(UNK, None)
    ranked = sorted((item for item in counter.items() if item[1] >= min_count),
                    key=lambda item: (-item[1], item[0]))[:int(size)]
    kept = sum(c for _, c in ranked)
    logging.info("Vocabulary: %d of %d distinct words kept (size=%d, min_count=%d), covering "
                 "%.1f%% of %d training tokens.", len(ranked), len(counter), size, min_count,
                 100.0 * kept / sum(counter.values()), sum(counter.values()))
    return cls(tuple(w for w, _ in ranked), tuple(c for _, c in ranked))

  def __len__(self) -> int:
    """Rows an embedding table needs: the words plus padding and unknown."""
    return len(self.words) + NUM_SPECIAL

  def __contains__(self, word: object) -> bool:
    return word in self.index

  def token_ids(self, tokens: Sequence[str]) -> list[int]:
    """Ids of already tokenised words (UNK_ID for words without one)."""
    return [self.index.get(t, UNK_ID) for t in tokens]

  def encode(self, texts: Sequence[str], max_length: int) -> EncodedTexts:
    """Tokenises `texts` and pads (or cuts) them to `max_length` ids; see the module docstring."""
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
        or max_length < 1:
      raise ValueError(f"Vocabulary.encode: max_length must be a positive int, got "
                       f"{max_length!r}.")
    if isinstance(texts, str):
      raise TypeError("Vocabulary.encode: pass a sequence of texts, not one str (wrap it: "
                      "[text]).")
    ids = np.full((len(texts), int(max_length)), PAD_ID, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    truncated = unknown = 0
    for i, text in enumerate(texts):
      row = self.token_ids(tokenize_lib.tokenize(text))
      if len(row) > max_length:
        truncated += 1
        row = row[:max_length]
      ids[i, :len(row)] = row
      lengths[i] = len(row)
      unknown += row.count(UNK_ID)
    if truncated:
      logging.info("Vocabulary.encode: %d of %d texts were longer than max_length=%d tokens and "
                   "keep their first %d.", truncated, len(texts), max_length, max_length)
    return EncodedTexts(ids, lengths, truncated, unknown, int(lengths.sum()))

  def decode(self, ids: Sequence[int], length: int | None = None) -> list[str]:
    """The words of an id row (PAD and UNK as their tokens), up to `length` when given."""
    table = (PAD, UNK) + self.words
    row = list(ids)[:length] if length is not None else list(ids)
    return [table[int(i)] for i in row]

  def save(self, path: str) -> str:
    """Writes the vocabulary as JSON (atomically), so a trained model reads texts as in training."""
    payload = {"format": "musemb.vocabulary/1", "words": list(self.words),
               "counts": list(self.counts)}
    utils.write_text_atomic(path, json.dumps(payload) + "\n")
    return path

  @classmethod
  def load(cls, path: str) -> Vocabulary:
    """Reads what `save` wrote."""
    with open(path, encoding="utf-8") as f:
      try:
        payload = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a vocabulary JSON file ({e}).") from e
    if not isinstance(payload, dict) or payload.get("format") != "musemb.vocabulary/1":
      raise ValueError(f"{path}: not a musemb vocabulary (no format 'musemb.vocabulary/1'); write "
                       "one with Vocabulary.save().")
    return cls(tuple(payload["words"]), tuple(payload["counts"]))


@dataclasses.dataclass(frozen=True)
class EmbeddingInit:
  """An embedding table made from word vectors, and what it lacked.

  Attributes:
    matrix: [len(vocab), dim] float32; row PAD_ID is zero, rows of words found in the vectors are
      their vectors, the others (UNK_ID included) random.
    num_found: vocabulary words with a vector.
    missing: the vocabulary words without one, most frequent first.
  """
  matrix: np.ndarray
  num_found: int
  missing: tuple[str, ...]


def vectors_for_vocabulary(vocab: Vocabulary, vectors: vectors_lib.WordVectors,
                           seed: int = 0) -> EmbeddingInit:
  """An initial embedding table for `vocab` from loaded word vectors (word2vec, GloVe, ours).

  Words are looked up exactly as the tokenizer writes them (lowercase): a cased file such as the
  Google News word2vec finds fewer of them, which the count of missing words shows. Missing words
  (and UNK) get rows drawn from N(0, s^2), s the standard deviation of the entries of the rows that
  were found (of all the file's vectors if none was), so the random rows are on the same scale as
  the loaded ones; padding gets a zero row (the encoders never read it).

  Args:
    vocab: the vocabulary the table is for.
    vectors: loaded word vectors; their dimension is the table's.
    seed: seeds the random rows.

  Returns:
    The table, how many words were found, and the missing words.
  """
  rows = [vectors.index.get(w, -1) for w in vocab.words]
  found = np.array([r for r in rows if r >= 0], np.int64)
  missing = tuple(w for w, r in zip(vocab.words, rows) if r < 0)
  scale_from = vectors.vectors[found] if found.size else vectors.vectors
  std = float(scale_from.std()) or 1.0
  rng = np.random.default_rng(seed)
  matrix = rng.normal(0.0, std, (len(vocab), vectors.dim)).astype(np.float32)
  matrix[PAD_ID] = 0.0
  is_found = np.array([r >= 0 for r in rows], bool)
  matrix[NUM_SPECIAL:][is_found] = vectors.vectors[found]
  logging.info("vectors_for_vocabulary: %d of %d vocabulary words found in the %d-d vectors; %d "
               "got random rows (e.g. %s).", found.size, len(vocab.words), vectors.dim,
               len(missing), list(missing[:5]))
  if vocab.words and found.size == 0:
    logging.warning("vectors_for_vocabulary: none of the %d vocabulary words is in the vectors; "
                    "is this the right file (our tokens are lowercase)?", len(vocab.words))
  return EmbeddingInit(matrix, int(found.size), missing)
