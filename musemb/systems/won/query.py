"""Querying a finished Won et al. run: its song index, free text -> songs, audio -> tags.

`song_index.npz` (written by `write_outputs`) holds the test songs' embeddings and the tags'; a
query is embedded by the run's tag branch (`model.embed_query`) and ranked against the index by
cosine; late-fusion runs fuse the acoustic and cultural cosines with the acoustic weight w.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from musemb import utils

from musemb.reports import runs as runs_lib
from musemb.text import tags as text_tags
from musemb.text import vectors as text_vectors

# Where a config may hold late fusion's acoustic weight (the first found wins).


# Config keys (first found wins) of the late-fusion acoustic weight, else late_fusion_scores' 0.5.
LATE_FUSION_WEIGHT_KEYS = ("model.late_fusion_weight", "eval.acoustic_weight",
                           "model.acoustic_weight")


DEFAULT_LATE_FUSION_WEIGHT = 0.5


@dataclasses.dataclass(frozen=True)
class SongIndex:
  """What `song_index.npz` holds.

  Attributes:
    track_ids: [S] str.
    titles, artists: [S] str, or None when the index has none.
    song_embeddings: [S, d] float32, or [S, 2, d] (acoustic, cultural) for late fusion.
    tag_names: [T] str.
    tag_embeddings: [T, d] float32.
    has_factors: [S] bool (late fusion: songs with WMF factors), or None (all have).
  """

  track_ids: np.ndarray
  titles: np.ndarray | None
  artists: np.ndarray | None
  song_embeddings: np.ndarray
  tag_names: np.ndarray
  tag_embeddings: np.ndarray
  has_factors: np.ndarray | None = None

  @property
  def late_fusion(self) -> bool:
    return self.song_embeddings.ndim == 3


def load_song_index(workdir: str) -> SongIndex:
  """Reads and checks `<workdir>/song_index.npz` (song embeddings under `embeddings`, as the won
  system writes them, or `song_embeddings`)."""
  path = os.path.join(workdir, "song_index.npz")
  arrays = runs_lib.read_npz(path)  # pylint: disable=protected-access
  if arrays is None:
    raise FileNotFoundError(f"{path} does not exist: the query tool needs the song index a won "
                            "run writes after training; train/evaluate into this workdir first.")
  if "embeddings" in arrays and "song_embeddings" not in arrays:
    arrays["song_embeddings"] = arrays.pop("embeddings")
  missing = {"track_ids", "song_embeddings", "tag_names", "tag_embeddings"} - set(arrays)
  if missing:
    raise ValueError(f"{path} lacks {sorted(missing)}; rerun the won evaluation that writes it.")
  ids = np.asarray(arrays["track_ids"]).astype(str).reshape(-1)
  songs = np.asarray(arrays["song_embeddings"], np.float32)
  tags = np.asarray(arrays["tag_embeddings"], np.float32)
  names = np.asarray(arrays["tag_names"]).astype(str).reshape(-1)
  if songs.ndim not in (2, 3) or songs.shape[0] != ids.size or (
      songs.ndim == 3 and songs.shape[1] != 2):
    raise ValueError(f"{path}: song_embeddings has shape {songs.shape}; expected [{ids.size}, d] "
                     f"or, for late fusion, [{ids.size}, 2, d] (one row per track id).")
  if tags.ndim != 2 or tags.shape[0] != names.size or tags.shape[1] != songs.shape[-1]:
    raise ValueError(f"{path}: tag_embeddings has shape {tags.shape}; expected [{names.size}, "
                     f"{songs.shape[-1]}] (one row per tag name, the songs' width).")
  extra = {}
  for key, dtype in (("titles", str), ("artists", str), ("has_factors", bool)):
    if key in arrays:
      value = np.asarray(arrays[key]).astype(dtype).reshape(-1)
      if value.size != ids.size:
        raise ValueError(f"{path}: {key} has {value.size} entries for {ids.size} track ids.")
      extra[key] = value
  return SongIndex(ids, extra.get("titles"), extra.get("artists"), songs, names, tags,
                   extra.get("has_factors"))




def _check_k(k: int) -> int:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}.")
  return int(k)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  # Stable sort on -score: ties keep index order, so the answer does not depend on numpy's pivots.
  order = np.argsort(-scores, kind="stable")[:k]
  return order, scores[order]


def _check_query(query_vec: np.ndarray, dim: int) -> np.ndarray:
  q = np.asarray(query_vec, np.float32).reshape(-1)
  if q.shape != (dim,):
    raise ValueError(f"the query embedding has {q.size} values, the index's embeddings {dim}.")
  if not np.all(np.isfinite(q)) or not np.any(q):
    raise ValueError("the query embedding is zero or not finite: nothing to rank by.")
  return q


def rank_songs(query_vec: np.ndarray, song_embeddings: np.ndarray, k: int,
               late_fusion_weight: float | None = None, *,
               has_factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The `k` songs nearest a query embedding, best first.

  Args:
    query_vec: [d] the query's tag-branch embedding.
    song_embeddings: [S, d] (cosine similarity) or [S, 2, d] late-fusion outputs (acoustic,
      cultural), scored by `late_fusion_scores` with acoustic weight `late_fusion_weight`.
    k: how many (fewer when the index is smaller).
    late_fusion_weight: w in [0, 1] for a late-fusion index (None: 0.5); not allowed otherwise.
    has_factors: late fusion: [S] bool; songs without WMF factors (whose cultural embedding means
      nothing) are scored by the acoustic cosine alone, as the won system's evaluation does.

  Returns:
    (indices [k'] int, scores [k'] float32), score descending, ties by index.
  """
  k = _check_k(k)
  songs = np.asarray(song_embeddings, np.float32)
  q = _check_query(query_vec, songs.shape[-1])
  if songs.ndim == 3:
    from musemb.models import branches  # pylint: disable=g-import-not-at-top
    w = DEFAULT_LATE_FUSION_WEIGHT if late_fusion_weight is None else float(late_fusion_weight)
    scores = np.asarray(branches.late_fusion_scores(q[None], songs, w))[0]
    if has_factors is not None:
      has_factors = np.asarray(has_factors, bool).reshape(-1)
      if has_factors.shape != (songs.shape[0],):
        raise ValueError(f"has_factors has {has_factors.size} entries for {songs.shape[0]} songs.")
      if not has_factors.all():
        acoustic = np.asarray(branches.late_fusion_scores(q[None], songs, 1.0))[0]
        scores = np.where(has_factors, scores, acoustic)
  elif songs.ndim == 2:
    if late_fusion_weight is not None or has_factors is not None:
      raise ValueError("late_fusion_weight and has_factors only apply to a late-fusion index "
                       f"([S, 2, d] song embeddings); this one is {songs.shape}.")
    scores = utils.normalize_rows(songs) @ utils.normalize_rows(q)
  else:
    raise ValueError(f"song_embeddings must be [S, d] or [S, 2, d], got {songs.shape}.")
  return _top(np.asarray(scores, np.float32), k)


def rank_tags(audio_vec: np.ndarray, tag_embeddings: np.ndarray, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """The `k` tags nearest a song embedding by cosine, best first: (indices [k'], scores [k'])."""
  k = _check_k(k)
  tags = np.asarray(tag_embeddings, np.float32)
  if tags.ndim != 2:
    raise ValueError(f"tag_embeddings must be [T, d], got {tags.shape}.")
  a = _check_query(audio_vec, tags.shape[1])
  return _top(np.asarray(utils.normalize_rows(tags) @ utils.normalize_rows(a), np.float32), k)


@dataclasses.dataclass(frozen=True)
class QueryWords:
  """A free-text query checked against the run's word vectors.

  Attributes:
    query: the text as given.
    text: what is embedded: the query itself, or its in-vocabulary pieces when some words are
      out of vocabulary.
    tokens: the vocabulary entries whose vectors make the query's (`musemb.text.tags.resolve_tag`).
    oov: the query's words with no vector (dropped).
  """

  query: str
  text: str
  tokens: tuple[str, ...]
  oov: tuple[str, ...]


def split_query(wv: text_vectors.WordVectors, query: str) -> QueryWords:
  """Resolves `query` as `musemb.text.tags.query_vector` does and drops its out-of-vocabulary words.

  Raises:
    text_tags.OutOfVocabularyError: no word of the query has a vector (the message lists them).
    ValueError: the query holds no words.
  """
  if not isinstance(query, str) or not query.strip():
    raise ValueError(f"empty query {query!r}: give some words, e.g. "
                     "--query=\"dark ambient piano\".")
  r = text_tags.resolve_tag(wv, query)
  if r.how == "oov":
    raise text_tags.OutOfVocabularyError(
        f"no word of the query {query!r} is in the run's word vectors ({len(wv):,} words): "
        f"{list(r.missing)}. Try other words, e.g. tags of the data set.", r.missing)
  if r.missing:
    # The remaining pieces, as words: query_vector resolves them to the same entries.
    text = " ".join(t.replace(text_vectors.PHRASE_DELIMITER, " ") for t in r.tokens)
    return QueryWords(query, text, r.tokens, r.missing)
  return QueryWords(query, query, r.tokens, ())


def song_results(index: SongIndex, indices: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
  """JSON-ready [{"track_id", "title"?, "artist"?, "score"}] in the given order."""
  out = []
  for i, s in zip(indices, scores):
    entry: dict[str, Any] = {"track_id": str(index.track_ids[i])}
    if index.titles is not None:
      entry["title"] = str(index.titles[i])
    if index.artists is not None:
      entry["artist"] = str(index.artists[i])
    entry["score"] = float(s)
    out.append(entry)
  return out


def answer_queries(index: SongIndex, queries: Sequence[QueryWords],
                   embed: Callable[[str], np.ndarray], k: int,
                   late_fusion_weight: float | None = None) -> dict[str, dict[str, Any]]:
  """Top songs per query: {query: {"words": tokens, "oov": dropped words, "songs": [...]}}.

  `embed(text) -> [d]` is the run's tag branch (`won.embed_query`); late-fusion indexes are ranked
  with `late_fusion_weight` (None: 0.5), songs without factors by their acoustic cosine.
  """
  weight = late_fusion_weight if index.late_fusion else None
  results = {}
  for q in queries:
    indices, scores = rank_songs(embed(q.text), index.song_embeddings, k, weight,
                                 has_factors=index.has_factors if index.late_fusion else None)
    results[q.query] = {"words": list(q.tokens), "oov": list(q.oov),
                        "songs": song_results(index, indices, scores)}
  return results


def late_fusion_weight(config: Mapping[str, Any] | None) -> float:
  """The acoustic weight of late fusion from the config (`LATE_FUSION_WEIGHT_KEYS`), else 0.5."""
  for key in LATE_FUSION_WEIGHT_KEYS:
    value = runs_lib.config_get(config, key)
    if value is not None:
      return float(value)
  return DEFAULT_LATE_FUSION_WEIGHT
