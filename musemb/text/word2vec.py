"""Domain-specific word2vec with phrase tokens (Won et al., ICASSP 2021, section 4.3).

Won et al. compare a general embedding (word2vec on Google News) with word2vec trained on a music
corpus (SemEval-2018 task 9, subtask 2B; window 10) whose vocabulary includes frequent bigrams and
trigrams (*deep_house*, *smooth_jazz*). `train_word2vec` does the same on any corpus (here the
dataset's reviews): texts are split into sentences and tokenised (`musemb.text.tokenize`);
frequent bigrams are joined with "_" by gensim's `Phrases` (Mikolov et al., NIPS 2013, section 4:
score (count(ab) - min_count) / (count(a) count(b)) * |V| above a threshold), then a second pass
over the joined text finds trigrams ("deep_house" + "music"); gensim's `Word2Vec` (skip-gram with
negative sampling by default) is trained on the result, plus (`keep_unigrams`) each changed
sentence in its original words, so that the vocabulary holds "unigrams, frequent bigrams and
trigrams" as the paper's does (otherwise a word seen mostly inside phrases, like "acoustic" in
"acoustic_guitar", loses its own vector). With `workers=1` and a seed the result is deterministic,
also across interpreter launches (a stable hash replaces Python's salted `hash` for gensim's
`hashfxn`).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Sequence

from absl import logging
import numpy as np

from musemb.text.tokenize import split_sentences
from musemb.text.vectors import PHRASE_DELIMITER, WordVectors


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
