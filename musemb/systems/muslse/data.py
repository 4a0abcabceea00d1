"""MUSLSE's data adapter: the bag-of-frames data MUSLSE and its one-vs-rest baseline train on.

`load_data(config, workdir)` resolves the prepared dataset (`musemb.data.prepared.resolve_dataset`:
`config.data_dir`, or the built-in synthetic world prepared under `<workdir>/data`), computes or loads the cached MFCC k-means
bag-of-frames (`musemb.data.derived`), reads labels per split (`musemb.data.pipeline.read_split`)
and returns a `BofData` with:

* `splits[name]`: per-track sparse song vectors padded to a common width P (`idx`, `val` [n, P];
  padding has value 0 and so contributes nothing), primary artist ids and multi-hot tags;
* `tables` (`BofTables`): device-resident lookups the jitted loss needs to score sampled negatives:
  the training songs' bags (`song_idx`, `song_val`), their artists, each artist's training songs
  (for similar-song positives; at most `MAX_SONGS_PER_ARTIST`, a seeded sample, per artist) and
  each artist's training-split similar artists; the tasks the data supports ride along as static
  metadata (`task_names`), so the loss knows them without a Python argument;
* `train_batch(step)`: a deterministic batch for a step (`EpochBatcher`), so resuming is exact;
* `task_names`: the configured tasks this data supports; the others are skipped with a log line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import flax
import ml_collections
import numpy as np

from musemb import features as features_lib
from musemb.data import derived
from musemb.data import pipeline
from musemb.data import prepared as prepared_lib

# The tasks a bag-of-frames dataset can supervise (MUSLSE §2); `supported_tasks` says which a
# given dataset has the data for.
TASKS = ("artist_prediction", "song_prediction", "similar_songs", "tag_prediction",
         "similar_artists")
MAX_SONGS_PER_ARTIST = 256
SIMILAR_EDGE_SPLIT = (0.6, 0.2, 0.2)   # train / valid / test share of the similar-artist pairs


@dataclasses.dataclass
class SplitBof:
  track_ids: np.ndarray      # [n] str
  idx: np.ndarray            # [n, P] int32 codeword ids
  val: np.ndarray            # [n, P] float32 normalised counts (0 = padding)
  artist: np.ndarray         # [n] int32 primary artist, -1 if none
  tags: np.ndarray           # [n, T] bool

  def __len__(self) -> int:
    return len(self.track_ids)


@flax.struct.dataclass
class BofTables:
  """What the jitted loss reads beside the batch (all training split; -1 pads id lists)."""

  song_idx: Any           # [songs, P] int32 codeword ids
  song_val: Any           # [songs, P] float32 normalised counts
  song_artist: Any        # [songs] int32 primary artist, -1 if none
  song_tags: Any          # [songs, T] bool
  song_tag_ids: Any       # [songs, M] int32 the tags of each song (M: the most any song has)
  artist_songs: Any       # [artists, K] int32 training songs of each artist
  artist_similar: Any     # [artists, K'] int32 training-split similar artists
  task_names: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())


@dataclasses.dataclass
class BofData:
  info: dict[str, Any]
  task_names: tuple[str, ...]
  splits: dict[str, SplitBof]
  tables: BofTables
  similar_edges: dict[str, list[np.ndarray]]   # split -> per-artist similar artist ids
  codebook: derived.Codebook
  batcher: pipeline.EpochBatcher
  prepared: Any

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """{"song": [B] int32} training-song rows; the step gathers their features from `tables`, so
    the host ships a few bytes per step instead of the bags."""
    return {"song": self.batcher.indices(step).astype(np.int32)}






def bof_config(config: ml_collections.ConfigDict, sample_rate: int) -> derived.BofConfig:
  f = config.features
  return derived.BofConfig(
      mfcc=features_lib.MfccConfig(sample_rate=sample_rate, n_mels=f.n_mels),
      n_codewords=f.n_codewords, kmeans_frames=f.kmeans_frames, kmeans_steps=f.kmeans_steps,
      standardize=f.standardize, seed=f.seed)


def normalise(counts: np.ndarray, how: str) -> np.ndarray:
  """Scales one song's counts: l2 (unit norm), l1 (frequencies) or none (raw counts)."""
  if how == "none":
    return counts.astype(np.float32)
  norm = np.linalg.norm(counts) if how == "l2" else np.abs(counts).sum() if how == "l1" else None
  if norm is None:
    raise ValueError(f"features.normalize={how!r}; expected l2, l1 or none.")
  return (counts / max(norm, 1e-12)).astype(np.float32)


def _padded_song_vectors(bof: derived.BagOfFrames, width: int, how: str
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Fixed-width (idx, val) rows with each song's counts normalised (`normalise`)."""
  idx, cnt = bof.padded(width)
  if how == "none":
    return idx, cnt
  if how == "l2":
    norms = np.sqrt((cnt.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
  elif how == "l1":
    norms = np.abs(cnt.astype(np.float64)).sum(axis=1, keepdims=True)
  else:
    raise ValueError(f"features.normalize={how!r}; expected l2, l1 or none.")
  return idx, (cnt / np.maximum(norms, 1e-12)).astype(np.float32)


def _split_similarity(similarity: dict[str, list[str]], artist_names: list[str], seed: int
                      ) -> dict[str, list[np.ndarray]]:
  """Similar-artist ids per artist and split: unordered pairs are split 60/20/20, seeded.

  Splitting unordered pairs (not each artist's list) keeps A-B and B-A in the same split: the score
  A_a . A_b is symmetric, so a training edge B->A would otherwise leak its test twin A->B.
  """
  index = {a: i for i, a in enumerate(artist_names)}
  pairs = sorted({(min(index[a], index[b]), max(index[a], index[b]))
                  for a, others in similarity.items() if a in index
                  for b in others if b in index and b != a})
  order = np.random.default_rng(seed).permutation(len(pairs))
  n_train = int(round(SIMILAR_EDGE_SPLIT[0] * len(pairs)))
  n_valid = int(round(SIMILAR_EDGE_SPLIT[1] * len(pairs)))
  which = {}
  for rank, i in enumerate(order):
    which[pairs[i]] = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
  lists = {s: [[] for _ in artist_names] for s in ("train", "valid", "test")}
  for (a, b), split in which.items():
    lists[split][a].append(b)
    lists[split][b].append(a)
  return {s: [np.array(sorted(x), np.int32) for x in per_artist] for s, per_artist in lists.items()}


def _padded_lists(lists: list[np.ndarray], cap: int | None = None, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  lists = [rng.choice(x, cap, replace=False) if cap and len(x) > cap else x for x in lists]
  width = max([len(x) for x in lists] + [1])
  out = np.full((len(lists), width), -1, np.int32)
  for i, x in enumerate(lists):
    out[i, :len(x)] = x
  return out


def tag_id_lists(tags: np.ndarray) -> np.ndarray:
  """[songs, T] bool -> [songs, M] int32 each song's tag ids, -1 padded (M: the most tags of a
  song, at least 1), for a step that trains every tag of its songs (`loss.positives=all`)."""
  return _padded_lists([np.flatnonzero(row).astype(np.int32) for row in np.asarray(tags)])


def supported_tasks(config_tasks: tuple[str, ...], train: SplitBof, num_tags: int,
                    similar_train: list[np.ndarray]) -> tuple[str, ...]:
  """Keeps the configured tasks the data can train; logs why each other one is skipped."""
  songs_per_artist = np.bincount(train.artist[train.artist >= 0], minlength=1)
  why = {
      "tag_prediction": None if num_tags and train.tags.any() else "the dataset has no tags",
      "artist_prediction": None if (train.artist >= 0).any() else "the dataset has no artists",
      "song_prediction": None if (train.artist >= 0).any() else "the dataset has no artists",
      "similar_songs": (None if (songs_per_artist >= 2).any()
                        else "no artist has two training songs"),
      "similar_artists": (None if any(len(x) for x in similar_train)
                          else "the source has no artist-artist similarity data"),
  }
  unknown = [t for t in config_tasks if t not in why]
  if unknown:
    raise ValueError(f"config.tasks.names has unknown tasks {unknown}; expected some of "
                     f"{sorted(why)}.")
  kept = []
  for t in config_tasks:
    if why.get(t):
      logging.warning("Skipping task %s: %s.", t, why[t])
    else:
      kept.append(t)
  if not kept:
    raise ValueError(f"none of the configured tasks {config_tasks} can be trained on this dataset "
                     f"({', '.join(f'{t}: {why[t]}' for t in config_tasks if why.get(t))}).")
  return tuple(kept)


def load_data(config: ml_collections.ConfigDict, workdir: str) -> BofData:
  dataset_dir = prepared_lib.resolve_dataset(config, workdir)
  prepared = prepared_lib.load_prepared(dataset_dir)
  codebook, bofs = prepared_lib.process_zero_first(lambda: derived.compute_bag_of_frames(
      dataset_dir, bof_config(config, prepared.sample_rate)))
  width = max(int(np.diff(b.indptr).max(initial=1)) for b in bofs.values())
  splits = {}
  for name, bof in bofs.items():
    labels = pipeline.read_split(prepared.builder, name)
    if list(labels.track_ids) != list(bof.track_ids):
      raise ValueError(f"{dataset_dir}: derived features of split {name!r} are out of order with the "
                       "dataset; delete its derived/ folder and rerun to recompute them.")
    idx, val = _padded_song_vectors(bof, width, config.features.normalize)
    splits[name] = SplitBof(track_ids=np.asarray(labels.track_ids), idx=idx, val=val,
                            artist=labels.primary_artist, tags=labels.tags)
  if "train" not in splits:
    raise ValueError(f"{dataset_dir} has no train split (splits: {sorted(splits)}).")
  train = splits["train"]
  artist_names = list(prepared.artist_names)
  similar = _split_similarity(prepared.artist_similarity or {}, artist_names, config.data.split_seed)
  configured = tuple(t.strip() for t in config.tasks.names.split(",") if t.strip())
  tasks = supported_tasks(configured, train, len(prepared.tag_names), similar["train"])

  artist_songs = [np.flatnonzero(train.artist == a).astype(np.int32) for a in range(len(artist_names))]
  tables = BofTables(
      song_idx=train.idx, song_val=train.val, song_artist=train.artist, song_tags=train.tags,
      song_tag_ids=tag_id_lists(train.tags),
      artist_songs=_padded_lists(artist_songs, MAX_SONGS_PER_ARTIST, config.data.split_seed),
      artist_similar=_padded_lists(similar["train"]), task_names=tasks)
  info = {
      "num_features": codebook.centroids.shape[0], "num_artists": len(artist_names),
      "num_tags": len(prepared.tag_names), "num_train_songs": len(train),
      # An epoch is every task over the training songs once: with one task drawn per step
      # (tasks.mode=random) that is len(tasks) x the songs, so a duration or a validation interval
      # in epochs gives each task as many updates however many tasks share the steps.
      "num_train_examples": len(train) * (len(tasks) if config.tasks.mode == "random" else 1),
      "tag_names": list(prepared.tag_names), "artist_names": artist_names,
      "dataset_dir": dataset_dir, "bag_width": width,
      "avg_nonzero_features": float(np.mean([np.diff(b.indptr).mean() for b in bofs.values()])),
  }
  logging.info("Data %s: %s songs per split, %d tags, %d artists, %d codewords; tasks %s.",
               dataset_dir, {k: len(v) for k, v in splits.items()}, info["num_tags"],
               info["num_artists"], info["num_features"], ", ".join(tasks))
  batcher = pipeline.EpochBatcher(len(train), config.train.batch_size, config.seed)
  return BofData(info=info, task_names=tasks, splits=splits, tables=tables, similar_edges=similar,
                 codebook=codebook, batcher=batcher, prepared=prepared)
