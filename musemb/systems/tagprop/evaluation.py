"""The tag-propagation system's evaluation (§IV.C of Lin et al.) and Fig. 2's playlist statistic.

`tagging_metrics(scores, tags)`, on the test songs' window-averaged tag probabilities:

* annotation MAP: each song ranks the tags; the mean of the songs' average precision over the
  songs with at least one tag (AP has no value without a relevant item);
* retrieval MAP and retrieval ROC-AUC: each tag ranks the songs; both are means over the same tags,
  those with at least one positive and one negative test song. AUC has no value otherwise, and a
  tag every song carries has AP 1 whatever the model does, so keeping one set of tags makes the
  two columns of Table I (and the per-tag pairs the report bootstraps) comparable.

The per-song and per-tag values come back too (NaN where left out), for the paired intervals.

`validation_bce`: eq. (1) on the validation songs, the loss the learning rate and the stop watch.

`tag_similarity_by_distance` (Fig. 2, from the data alone): the mean cosine similarity of the tag
vectors of two songs at distance d in a playlist, over every pair of tagged songs d positions
apart in one playlist (gaps counted in d, never a member of a pair), next to the mean over random
pairs of tagged playlist songs as the level distance makes no difference to.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from musemb import metrics as metrics_lib


def metrics_key(config: Mapping[str, Any]) -> str:
  """The metrics.json prefix of a run (a ConfigDict or its config.json): `tagprop_baseline`
  (eq. (1)), `tagprop` (eq. (3), single head) or `tagprop_separate` (eq. (3), separate head);
  `_category_r` follows a proposed key with a search range per tag category, and `_shortchunk`
  ends the key of a short-chunk CNN run (`model.name`). Configs written before these options
  existed read as the paper's SampleCNN with one search range."""
  if config["objective"]["name"] == "baseline":
    key = "tagprop_baseline"
  else:
    key = "tagprop_separate" if config["model"]["head"] == "separate" else "tagprop"
    if str(config["objective"].get("category_r", "") or "").strip():
      key += "_category_r"
  model = config["model"].get("name", "samplecnn") or "samplecnn"
  return key if model == "samplecnn" else f"{key}_{model}"


def tagging_metrics(scores: np.ndarray, tags: np.ndarray
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Annotation and retrieval metrics of `scores: [songs, tags]` against `tags: [songs, tags]`.

  Returns:
    means: {"annotation/map", "annotation/num_songs", "retrieval/map", "retrieval/roc_auc",
      "retrieval/num_tags"} (NaN when no song or tag qualifies).
    per_query: {"annotation_ap": [songs], "retrieval_ap": [tags], "retrieval_auc": [tags]},
      NaN where a song or a tag is left out.
  """
  scores = np.asarray(scores, np.float64)
  tags = np.asarray(tags, bool)
  if scores.shape != tags.shape or scores.ndim != 2:
    raise ValueError(f"tagging_metrics: scores {scores.shape} and tags {tags.shape} must both be "
                     "[songs, tags].")
  annotation = metrics_lib.average_precision(scores, tags, reduce="none")
  retrieval_ap = metrics_lib.per_label_average_precision(scores, tags, reduce="none")
  retrieval_auc = metrics_lib.per_label_roc_auc(scores, tags, reduce="none")
  positives = tags.sum(axis=0)
  both = (positives > 0) & (positives < tags.shape[0])
  retrieval_ap = np.where(both, retrieval_ap, np.nan)
  retrieval_auc = np.where(both, retrieval_auc, np.nan)
  mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
  means = {"annotation/map": mean(annotation),
           "annotation/num_songs": float(np.isfinite(annotation).sum()),
           "retrieval/map": mean(retrieval_ap), "retrieval/roc_auc": mean(retrieval_auc),
           "retrieval/num_tags": float(both.sum())}
  return means, {"annotation_ap": annotation, "retrieval_ap": retrieval_ap,
                 "retrieval_auc": retrieval_auc}


def validation_bce(probabilities: np.ndarray, tags: np.ndarray, eps: float = 1e-7) -> float:
  """Eq. (1) as a cross-entropy, averaged over songs and tags, of window-averaged probabilities."""
  p = np.clip(np.asarray(probabilities, np.float64), eps, 1.0 - eps)
  y = np.asarray(tags, np.float64)
  return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def tag_similarity_by_distance(sequences: Sequence[Sequence[int]], tags: np.ndarray,
                               max_distance: int, *, random_pairs: int = 100_000, seed: int = 0
                               ) -> dict[str, np.ndarray]:
  """Fig. 2: mean cosine similarity of two playlist songs' tag vectors against their distance.

  Args:
    sequences: playlists as song indices into `tags`' rows, -1 at a gap.
    tags: [songs, tags] bool; songs without a tag take part in no pair (no cosine).
    max_distance: distances 1..max_distance.
    random_pairs: pairs of tagged playlist songs drawn at random (any playlists) for the level.
    seed: of the random pairs.

  Returns:
    {"distance": [D] int, "mean_cosine": [D] (NaN without pairs), "pairs": [D] int,
     "random_mean_cosine": [] (NaN without two tagged songs)}.
  """
  tags = np.asarray(tags, np.float32)
  norms = np.linalg.norm(tags, axis=1)
  unit = np.divide(tags, norms[:, None], out=np.zeros_like(tags), where=norms[:, None] > 0)
  lengths = np.array([len(s) for s in sequences], np.int64)
  flat = (np.concatenate([np.asarray(s, np.int64) for s in sequences]) if lengths.sum()
          else np.zeros(0, np.int64))
  owner = np.repeat(np.arange(len(lengths)), lengths)
  tagged = np.zeros(flat.shape, bool)
  tagged[flat >= 0] = norms[flat[flat >= 0]] > 0
  distances = np.arange(1, max_distance + 1)
  means, counts = np.full(max_distance, np.nan), np.zeros(max_distance, np.int64)
  for k, d in enumerate(distances):
    if d >= flat.size:
      break
    ok = (owner[:-d] == owner[d:]) & tagged[:-d] & tagged[d:]
    a, b = flat[:-d][ok], flat[d:][ok]
    counts[k] = a.size
    if a.size:
      means[k] = _mean_cosine(unit, a, b)
  pool = np.unique(flat[tagged])
  level = float("nan")
  if pool.size >= 2:
    rng = np.random.default_rng(seed)
    a, b = rng.choice(pool, random_pairs), rng.choice(pool, random_pairs)
    keep = a != b
    level = _mean_cosine(unit, a[keep], b[keep])
  return {"distance": distances, "mean_cosine": means, "pairs": counts,
          "random_mean_cosine": np.asarray(level)}


def _mean_cosine(unit: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> float:
  """Mean of the dot products of rows a[i] and b[i] of `unit`, a chunk of pairs at a time (a
  million pairs of 1000-tag rows would be gigabytes at once)."""
  total = 0.0
  for start in range(0, a.size, chunk):
    ia, ib = a[start:start + chunk], b[start:start + chunk]
    total += float(np.einsum("pt,pt->", unit[ia], unit[ib], dtype=np.float64))
  return total / a.size
