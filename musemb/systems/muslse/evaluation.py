"""MUSLSE's evaluation: song and label embeddings, precision@k of the five tasks, the cosine
similar-songs baseline (§6.3), Table 7's model size and prediction time, one clip's predictions."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musemb import evaluate as evaluate_lib
from musemb import utils
from musemb.models import linear
from musemb.systems.muslse import data as bof_data


@jax.jit
def _embed_members(V: jax.Array, idx: jax.Array, val: jax.Array) -> jax.Array:
  """V [M, |S|, d], bags [n, P] -> [n, M*d]: the ensemble's song embeddings, concatenated.

  Evaluation embeds many songs at once, so the bags are scattered into dense [n, |S|] rows and
  multiplied (memory n*|S| instead of the gather's n*P*M*d)."""
  dense = linear.densify(idx, val, V.shape[1])                        # [n, |S|]
  e = jnp.einsum("nf,mfd->nmd", dense, V)
  return e.reshape(idx.shape[0], -1)


def song_embeddings(params: dict, idx: np.ndarray, val: np.ndarray, chunk: int = 1024) -> np.ndarray:
  out = []
  for lo in range(0, len(idx), chunk):
    hi = min(lo + chunk, len(idx))
    pad = chunk - (hi - lo) if len(idx) > chunk else 0   # fixed chunk shape: one compilation
    i = np.pad(idx[lo:hi], ((0, pad), (0, 0)))
    v = np.pad(val[lo:hi], ((0, pad), (0, 0)))
    out.append(np.asarray(_embed_members(params["V"], i, v))[:hi - lo])
  return np.concatenate(out) if out else np.zeros((0, params["V"].shape[0] * params["V"].shape[2]))


def label_embeddings(params: dict, name: str) -> np.ndarray:
  """A [|A|, M*d] or T [|T|, M*d]: members concatenated, matching `song_embeddings`."""
  x = np.asarray(params[name])
  return np.moveaxis(x, 0, 1).reshape(x.shape[1], -1)


def label_bias(params: dict, name: str) -> np.ndarray | None:
  """The per-label bias [|labels|] of table `name` (`model.label_bias`; members' biases summed,
  as their scores are), or None when the run has none (the paper's model)."""
  bias = params.get(f"{name}_bias")
  return None if bias is None else np.asarray(bias).sum(0)


def with_bias(queries: np.ndarray, labels: np.ndarray, bias: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(queries, labels) with a column of ones and the bias appended, so queries @ labels.T adds
  the bias to every query's label scores (the training step's form, `tasks.with_label_bias`)."""
  if bias is None:
    return queries, labels
  return (np.concatenate([queries, np.ones((len(queries), 1), queries.dtype)], axis=1),
          np.concatenate([labels, np.asarray(bias, labels.dtype)[:, None]], axis=1))


def evaluate_tasks(params: dict, data, config: ml_collections.ConfigDict, split: str,
                   tasks: tuple[str, ...] | None = None
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Precision@k of each task on `split` (songs not seen in training); per-query p@k as well."""
  s = data.splits[split]
  ks = tuple(config.eval.ks)
  songs = song_embeddings(params, s.idx, s.val)
  A, T = label_embeddings(params, "A"), label_embeddings(params, "T")
  chunking = dict(query_chunk=config.eval.query_chunk, item_chunk=config.eval.item_chunk or None)
  means, per_query = {}, {}

  def record(task, result, query_ids):
    m, pq = result
    means.update({f"{task}/{k}": v for k, v in m.items()})
    per_query.update({f"{task}/{k}": v for k, v in pq.items()})
    per_query[f"{task}/query_ids"] = np.asarray(query_ids)

  for task in tasks or data.task_names:
    if task == "tag_prediction":
      relevant = [np.flatnonzero(row) for row in s.tags]
      record(task, evaluate_lib.retrieval_metrics(*with_bias(songs, T, label_bias(params, "T")),
                                                  relevant, ks, **chunking), s.track_ids)
    elif task == "artist_prediction":
      relevant = [np.array([a]) if a >= 0 else np.zeros(0, np.int64) for a in s.artist]
      record(task, evaluate_lib.retrieval_metrics(songs, A, relevant, ks, **chunking), s.track_ids)
    elif task == "song_prediction":
      artists = np.unique(s.artist[s.artist >= 0])
      relevant = [np.flatnonzero(s.artist == a) for a in artists]
      record(task, evaluate_lib.retrieval_metrics(A[artists], songs, relevant, ks, **chunking),
             np.asarray(data.info["artist_names"], dtype=object)[artists])
    elif task == "similar_songs":
      relevant = evaluate_lib.relevant_by_group(s.artist, exclude_self=True)
      record(task, evaluate_lib.retrieval_metrics(songs, songs, relevant, ks,
                                                  exclude=np.arange(len(songs)), **chunking),
             s.track_ids)
    elif task == "similar_artists":
      edges = data.similar_edges[split]
      queries = np.array([a for a, e in enumerate(edges) if len(e)], np.int64)
      # Known edges are not ranked: training edges, and validation edges when testing.
      known = ("train",) if split == "valid" else ("train", "valid")
      excluded = [np.concatenate([data.similar_edges[k][a] for k in known] + [[a]]).astype(np.int64)
                  for a in queries]
      record(task, evaluate_lib.masked_retrieval_metrics(A[queries], A, [edges[a] for a in queries],
                                                         excluded, ks),
             np.asarray(data.info["artist_names"], dtype=object)[queries])
  return means, per_query


def cosine_similar_songs(data, config: ml_collections.ConfigDict, split: str
                         ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """The similar-songs baseline of §6.3: cosine similarity of the raw bag-of-frames vectors."""
  s = data.splits[split]
  dense = np.zeros((len(s), data.info["num_features"]), np.float32)
  np.add.at(dense, (np.repeat(np.arange(len(s)), s.idx.shape[1]), s.idx.ravel()), s.val.ravel())
  dense = utils.normalize_rows(dense)
  relevant = evaluate_lib.relevant_by_group(s.artist, exclude_self=True)
  return evaluate_lib.retrieval_metrics(dense, dense, relevant, tuple(config.eval.ks),
                                        exclude=np.arange(len(s)),
                                        query_chunk=config.eval.query_chunk)


def prediction_seconds_per_song(params: dict, data, task: str) -> float:
  """Table 7: time to embed one test song and return its top label (tags or artists)."""
  name = "T" if task == "tag_prediction" else "A"
  labels = jnp.asarray(label_embeddings(params, name))
  bias = label_bias(params, name)
  bias = 0.0 if bias is None else jnp.asarray(bias)
  top1 = jax.jit(lambda i, v: jnp.argmax(labels @ _embed_members(params["V"], i, v)[0] + bias))
  return evaluate_lib.seconds_per_song(top1, data.splits[evaluate_lib.timing_split(data)])


def model_stats(params: dict, data, tasks: tuple[str, ...]) -> dict[str, Any]:
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  m, _, d = params["V"].shape
  return {
      "num_params": num_params, "bytes": num_params * 4, "embed_dim": int(m * d),
      "num_features": int(data.info["num_features"]),
      "avg_nonzero_features": float(data.info["avg_nonzero_features"]),
      "labels": {"tag_prediction": int(data.info["num_tags"]),
                 "artist_prediction": int(data.info["num_artists"])},
      "seconds_per_song": {t: prediction_seconds_per_song(params, data, t)
                           for t in ("tag_prediction", "artist_prediction") if t in tasks},
  }


def predict(params: dict, data, waveform: np.ndarray, config: ml_collections.ConfigDict,
            top: int = 10, train_embeddings: np.ndarray | None = None) -> dict[str, Any]:
  """Top tags, likely artists and most similar training songs for one clip (at the data's rate)."""
  indices, counts = data.codebook.encode(waveform)
  width = max(len(indices), 1)
  idx = np.zeros((1, width), np.int32)
  val = np.zeros((1, width), np.float32)
  idx[0, :len(indices)] = indices
  val[0, :len(indices)] = bof_data.normalise(np.asarray(counts), config.features.normalize)
  song = song_embeddings(params, idx, val)[0]
  if train_embeddings is None:
    train_embeddings = song_embeddings(params, data.splits["train"].idx, data.splits["train"].val)

  def ranked(scores, names):
    order = np.argsort(-scores, kind="stable")[:top]
    return [{"name": str(names[i]), "score": float(scores[i])} for i in order]

  return {
      "tags": ranked(label_embeddings(params, "T") @ song
                     + (label_bias(params, "T") if "T_bias" in params else 0.0),
                     data.info["tag_names"]),
      "artists": ranked(label_embeddings(params, "A") @ song, data.info["artist_names"]),
      "similar_songs": ranked(train_embeddings @ song, data.splits["train"].track_ids),
  }
