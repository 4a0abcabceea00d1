"""Tags and free-text queries to word vectors, and Table 3's nearest words (Won et al. 2021).

The tag branch of Won et al. starts from a pretrained word embedding, so that a query the tagger
never saw (a synonym, a plural, an unseen genre) still lands somewhere sensible. A tag is
lowercased and split into words; its phrase token ("deep_house", also "hip-hop" for "hip hop") is
tried first, then the tag as one word, then the mean of the vectors of its longest in-vocabulary
pieces (greedy longest n-gram first, so "dark ambient piano" averages "dark_ambient" and "piano"
when the phrase exists); a tag with nothing in the vocabulary is out of vocabulary (OOV).
`tag_matrix` embeds a tag vocabulary and counts how each tag was resolved; OOV rows are zeros,
seeded random vectors, or an error naming the tags, as the caller chooses. Averaging raw (not
unit-normalised) vectors follows common practice for multi-word GloVe/word2vec queries; the paper
does not say how it embeds multi-word tags. `nearest_words` and `neighbours_table` print Table 3.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Mapping, Sequence

from absl import logging
import numpy as np

from musemb.text.tokenize import tokenize
from musemb.text.vectors import PHRASE_DELIMITER, WordVectors

TAG_HOWS = ("phrase", "word", "mean", "oov")
OOV_POLICIES = ("zeros", "random", "error")
# Longest tag n-gram (in words) tried as one phrase token; two Phrases passes make at most 4-grams.
MAX_PHRASE_WORDS = 4


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
        "(musemb.text.word2vec.train_word2vec, e.g. on the source's reviews), load an embedding that "
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
