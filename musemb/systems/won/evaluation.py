"""Won et al.'s evaluation (section 4): song embeddings of a split, cosine scores, per-tag AP and
P@10, MAP per category (Fig. 2), zero-shot MAP against the exact chance level, multi-tag queries."""

from __future__ import annotations

from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from musemb import metrics as metrics_lib
from musemb import utils
from musemb.systems.won import data as tag_data
from musemb.systems.won import model as won_model
from musemb.text import tags as text_tags

CATEGORIES = tag_data.CATEGORIES


def _split_titles(data: tag_data.TagData, split: str) -> dict[str, str]:
  ds = data.prepared.builder.as_dataset(
      split=split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1),
      decoders=tfds.decode.PartialDecoding({"track_id": True, "title": True}))
  return {ex["track_id"].decode("utf-8"): ex["title"].decode("utf-8")
          for ex in ds.as_numpy_iterator()}


def embed_split(variables: Any, data: tag_data.TagData, config: ml_collections.ConfigDict,
                split: str) -> dict[str, np.ndarray]:
  """Song embeddings of a split's evaluated songs (all, or those with factors for the cultural and
  hybrid branches): track_ids, titles, embeddings [S, d] (late fusion [S, 2, d]), tags [S, T],
  has_factors [S]."""
  branch = config.model.branch
  s = data.splits[split]
  keep = s.has_factors if branch in ("cultural", "hybrid") else np.ones(len(s), bool)
  factors = data.song_factors(split)
  module = won_model.make_song_branch(config, data.info["num_factors"])
  embed = won_model.chunk_embedder(module, branch)
  song_vars = won_model.sub(variables, "song_branch")
  bsz = int(config.eval.batch_size)
  out: list[np.ndarray] = []
  titles: dict[str, str] = {}
  if branch == "cultural":
    rows = np.flatnonzero(keep)
    for start in range(0, len(rows), bsz):
      idx = rows[start:start + bsz]
      f = np.zeros((bsz, factors.shape[1]), np.float32)
      f[:len(idx)] = factors[idx]
      out.append(np.asarray(embed(song_vars, None, f))[:len(idx)])
    titles = _split_titles(data, split)
  else:
    crop, n_chunks = int(config.data.crop_samples), int(config.eval.chunks)
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
      chunks = np.zeros((bsz, n_chunks, crop), np.float32)
      f = np.zeros((bsz, max(factors.shape[1], 1)), np.float32)
      for i, (row, c) in enumerate(pending):
        chunks[i] = c
        if factors.shape[1]:
          f[i] = factors[row]
      emb = np.asarray(embed(song_vars, chunks, f if branch != "acoustic" else None))
      out.append(emb[:len(pending)])
      pending.clear()

    for row, (track_id, title, audio) in enumerate(tag_data.split_audio(data.prepared, split)):
      if track_id != s.track_ids[row]:
        raise ValueError(f"{data.prepared.dataset_dir}: split {split} audio is out of order with "
                         "its labels; prepare the dataset again.")
      titles[track_id] = title
      if not keep[row]:
        continue
      pending.append((row, won_model.audio_chunks(audio, crop, n_chunks)))
      if len(pending) == bsz:
        flush()
    if pending:
      flush()
  emb_dim = int(config.model.embed_dim)
  shape = (0, 2, emb_dim) if branch == "late_fusion" else (0, emb_dim)
  embeddings = np.concatenate(out).astype(np.float32) if out else np.zeros(shape, np.float32)
  ids = s.track_ids[keep]
  artist_names = data.info.get("artist_names", [])
  artists = np.array([", ".join(artist_names[a] for a in s.artists[i] if a < len(artist_names))
                      for i in np.flatnonzero(keep)], str)
  return {"track_ids": ids, "titles": np.array([titles.get(t, "") for t in ids], str),
          "artists": artists, "embeddings": embeddings, "tags": s.tags[keep],
          "has_factors": s.has_factors[keep]}


def score(tag_emb: np.ndarray, song_emb: np.ndarray, config: ml_collections.ConfigDict,
          has_factors: np.ndarray | None = None) -> np.ndarray:
  """Cosine scores [songs, queries] of query embeddings [Q, d] against song embeddings.

  P@k in `retrieval_metrics` uses k = min(config.eval.k, songs).

  Late fusion ([S, 2, d]): `w cos_acoustic + (1 - w) cos_cultural` with w =
  `config.model.late_fusion_weight`, and the acoustic cosine alone for songs without factors.
  """
  t, s = utils.normalize_rows(tag_emb), utils.normalize_rows(song_emb)
  if s.ndim == 2:
    return (s.astype(np.float64) @ t.T.astype(np.float64))
  cos = np.einsum("smd,qd->msq", s.astype(np.float64), t.astype(np.float64))
  w = float(config.model.late_fusion_weight)
  fused = w * cos[0] + (1.0 - w) * cos[1]
  if has_factors is not None:
    fused = np.where(np.asarray(has_factors, bool)[:, None], fused, cos[0])
  return fused


def random_ranking_ap(num_items: int, num_relevant: int) -> float:
  """Expected AP of a uniformly random ranking of `num_items` items, `num_relevant` relevant.

  E[AP] = (1/R) sum_k P(item k relevant) E[P@k | item k relevant]
        = (1/N) sum_{k=1..N} (1 + (k - 1)(R - 1)/(N - 1)) / k.
  """
  n, r = int(num_items), int(num_relevant)
  if r < 1 or r > n:
    raise ValueError(f"random_ranking_ap: need 1 <= num_relevant <= num_items, got {r}, {n}.")
  if n == 1:
    return 1.0
  k = np.arange(1, n + 1, dtype=np.float64)
  return float(np.sum((1.0 + (k - 1.0) * (r - 1.0) / (n - 1.0)) / k) / n)


def multi_tag_queries(tags: np.ndarray, usable: np.ndarray, max_queries: int, min_songs: int
                      ) -> tuple[list[tuple[int, int]], np.ndarray]:
  """Pairs of usable tags carried together by at least `min_songs` songs, most frequent first
  (ties by tag index), at most `max_queries`; and their relevance [songs, pairs] = the AND."""
  tags = np.asarray(tags, bool)
  cols = np.flatnonzero(np.asarray(usable, bool))
  t = tags[:, cols].astype(np.int64)
  co = t.T @ t
  pairs = [(int(co[a, b]), int(cols[a]), int(cols[b])) for a in range(len(cols))
           for b in range(a + 1, len(cols)) if co[a, b] >= max(int(min_songs), 1)]
  pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
  chosen = [(i, j) for _, i, j in pairs[:max(int(max_queries), 0)]]
  relevance = np.stack([tags[:, i] & tags[:, j] for i, j in chosen], axis=1) if chosen else (
      np.zeros((len(tags), 0), bool))
  return chosen, relevance


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if len(x) else float("nan")


def retrieval_metrics(emb: dict[str, np.ndarray], tag_emb: np.ndarray, data: tag_data.TagData,
                      config: ml_collections.ConfigDict, variables: Any | None = None,
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """All metrics of one split's embeddings (unprefixed keys) and the per-tag arrays."""
  tags = emb["tags"]
  num_songs = len(tags)
  if num_songs == 0:
    raise ValueError("no songs to evaluate (for the cultural/hybrid branch: no song of the split "
                     "has WMF factors; check config.data.factors).")
  k = min(int(config.eval.k), num_songs)
  scores = score(tag_emb, emb["embeddings"], config, emb["has_factors"])
  ap = np.asarray(metrics_lib.per_label_average_precision(scores, tags, reduce="none"))
  p10 = np.asarray(metrics_lib.per_label_precision_at_k(scores, tags, k, reduce="none"))
  seen = data.seen
  has_pos = tags.any(axis=0)
  names = data.tag_names
  out: dict[str, float] = {}
  ok = seen & has_pos
  out["retrieval/map"] = _nanmean(ap[ok])
  out["retrieval/p@10"] = _nanmean(p10[ok])
  out["retrieval/num_tags"] = float(ok.sum())
  excluded = [names[i] for i in np.flatnonzero(seen & ~has_pos)]
  if excluded:
    logging.info("%d seen tags have no positive song in the split and are excluded: %s",
                 len(excluded), excluded[:20])
  for cat in CATEGORIES:
    in_cat = ok & np.array([data.taxonomy.get(t) == cat for t in names], bool)
    out[f"category/{cat}/num_tags"] = float(in_cat.sum())
    if in_cat.any():
      out[f"category/{cat}/map"] = _nanmean(ap[in_cat])
  zs = ~seen & has_pos
  out["zero_shot/map"] = _nanmean(ap[zs])
  out["zero_shot/p@10"] = _nanmean(p10[zs])
  out["zero_shot/random_map"] = _nanmean([random_ranking_ap(num_songs, int(tags[:, i].sum()))
                                          for i in np.flatnonzero(zs)])
  out["zero_shot/num_tags"] = float(zs.sum())
  if variables is not None:
    pairs, relevance = multi_tag_queries(tags, ok, config.eval.multi_tag_max_queries,
                                         config.eval.multi_tag_min_songs)
    vectors, kept = [], []
    for q, (i, j) in enumerate(pairs):
      v, how = text_tags.query_vector(data.words, f"{names[i]} {names[j]}")
      if how != "oov":
        vectors.append(v)
        kept.append(q)
    if kept:
      q_emb = won_model.embed_tag_vectors(variables, config, np.stack(vectors))
      q_scores = score(q_emb, emb["embeddings"], config, emb["has_factors"])
      rel = relevance[:, kept]
      out["multi_tag/map"] = float(metrics_lib.per_label_average_precision(q_scores, rel))
      out["multi_tag/p@10"] = float(metrics_lib.per_label_precision_at_k(q_scores, rel, k))
    else:
      out["multi_tag/map"] = out["multi_tag/p@10"] = float("nan")
    out["multi_tag/num_queries"] = float(len(kept))
  per_tag = {"tag_names": np.array(names, str), "ap": ap.astype(np.float64),
             "p10": p10.astype(np.float64), "seen": seen.copy()}
  return out, per_tag
