"""Text to words: the tokenizer shared by word2vec training, tag resolution and text encoders.

`tokenize` lowercases and keeps "hip-hop", "r&b" and "drum'n'bass" whole while punctuation goes;
`split_sentences` splits at sentence ends first, so phrases and word2vec windows never span two
sentences; `corpus_from_reviews` takes the texts of `records.Review`s.
"""

from __future__ import annotations

import re
import unicodedata




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
