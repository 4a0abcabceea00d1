"""Album retrieval from reviews and back (Rush et al., section 7), for any embedding of both sides.

Review -> album: each review ranks every album of the split by its distance to the album's
nearest audio item (MARD has one item per album, so that is the album's vector; the built-in
world's albums have several tracks, and an album is as near as its nearest track, the reading of
"an album is its items' embeddings" that needs no pooling choice). The rank of its own album gives
recall@1/5/10, MRR and the median rank (`musemb.metrics.first_rank_metrics`). Album -> review: each
album ranks every review of the split, and is found at the rank of the first of its own reviews.
Chance levels are exact (`chance_first_rank_metrics`): 1 relevant of A albums, and each album's
own number of reviews among R.

Ties count against the query (`first_relevant_rank`'s pessimistic rule), so a collapsed embedding
scores at or below chance, never at the top. Distances are computed in chunks of reviews, so the
reviews x items matrix never exists whole.
"""

from __future__ import annotations

import numpy as np

from musemb import metrics as metrics_lib

KS = (1, 5, 10)
_CHUNK = 2048


def album_distances(review_emb: np.ndarray, item_emb: np.ndarray, item_album: np.ndarray,
                    num_albums: int) -> np.ndarray:
  """[R, A] Euclidean distance of each review to each album's nearest item."""
  review_emb = np.asarray(review_emb, np.float32)
  item_emb = np.asarray(item_emb, np.float32)
  order = np.argsort(item_album, kind="stable")
  starts = np.searchsorted(item_album[order], np.arange(num_albums))
  out = np.empty((len(review_emb), num_albums), np.float32)
  sq_items = np.sum(item_emb * item_emb, axis=1)
  for lo in range(0, len(review_emb), _CHUNK):
    q = review_emb[lo:lo + _CHUNK]
    sq = np.sum(q * q, axis=1)[:, None] + sq_items[None, :] - 2.0 * q @ item_emb.T
    d = np.sqrt(np.maximum(sq, 0.0))[:, order]
    out[lo:lo + _CHUNK] = np.minimum.reduceat(d, starts, axis=1)
  return out


def retrieval_metrics(distances: np.ndarray, review_album: np.ndarray
                      ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Both directions and their chance levels from [R, A] review-album distances.

  Returns:
    (metrics, ranks): metrics `review_to_album/{r@1,r@5,r@10,mrr,median_rank,num_queries}`, the
    same under `album_to_review/`, and each direction's `chance/...`; ranks {"review_to_album" [R],
    "album_to_review" [A]}.
  """
  num_reviews, num_albums = distances.shape
  relevance = np.zeros((num_reviews, num_albums), bool)
  relevance[np.arange(num_reviews), review_album] = True
  ranks = {"review_to_album": metrics_lib.first_relevant_rank(-distances, relevance),
           "album_to_review": metrics_lib.first_relevant_rank(-distances.T, relevance.T)}
  chance = {"review_to_album": metrics_lib.chance_first_rank_metrics(num_albums, 1, KS),
            "album_to_review": metrics_lib.chance_first_rank_metrics(
                num_reviews, np.bincount(review_album, minlength=num_albums).astype(np.int64),
                KS)}
  out = {}
  for direction, r in ranks.items():
    for k, v in metrics_lib.first_rank_metrics(r, KS).items():
      out[f"{direction}/{k}"] = v
    for k, v in chance[direction].items():
      out[f"{direction}/chance/{k}"] = v
  out["num_albums"], out["num_reviews"] = float(num_albums), float(num_reviews)
  return out, ranks


def nearest_reviews(distances: np.ndarray, album: int, top: int) -> list[tuple[int, float]]:
  """(review row, distance) of the `top` reviews nearest album `album` (a column of distances)."""
  column = distances[:, album]
  rows = np.argsort(column, kind="stable")[:top]
  return [(int(r), float(column[r])) for r in rows]
