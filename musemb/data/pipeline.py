"""Input pipelines: prepared TFDS datasets -> host batches (dicts of numpy arrays).

Two readers, one for each kind of system:

* `read_split` + `EpochBatcher`, for systems whose per-track inputs are small (MUSLSE's sparse
  bag-of-frames, artist ids, multi-hot tags): the split's labels are read once through tf.data
  (audio left undecoded) and batches are drawn from a permutation that is a pure function of
  `(seed, epoch)`. The data position is then just the step, which makes resuming after preemption
  exact and makes the global batch independent of the number of devices and processes: each process
  takes its contiguous share of every global batch (`EpochBatcher(process_index=..., process_count=...)`).
* `audio_batches`, for systems that train on raw audio: tf.data over the TFRecord shards with the split
  shared out per process (`tfds.split_for_jax_process`), seeded shuffle, random crops, batching with
  `drop_remainder`, prefetch, and `deterministic=True` order by default. Resuming skips the batches
  already consumed (`skip_batches`).

TensorFlow stays on the CPU: the launchers hide accelerators from it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


@dataclasses.dataclass
class SplitLabels:
  """Per-track labels of one split, in the split's TFDS order."""

  track_ids: np.ndarray          # [n] str
  artists: list[np.ndarray]      # n arrays of artist ids (usually one each)
  tags: np.ndarray               # [n, num_tags] bool

  def __len__(self) -> int:
    return len(self.track_ids)

  @property
  def primary_artist(self) -> np.ndarray:
    """[n] int32: the first listed artist, -1 when a track has none."""
    return np.array([a[0] if len(a) else -1 for a in self.artists], np.int32)


def read_split(builder: tfds.core.DatasetBuilder, split: str, *, per_process: bool = False
               ) -> SplitLabels:
  """Reads track ids, artists and tags of `split` without decoding audio."""
  split_arg = tfds.split_for_jax_process(split) if per_process else split
  decoders = tfds.decode.PartialDecoding({"track_id": True, "artists": True, "tags": True})
  ds = builder.as_dataset(split=split_arg, shuffle_files=False, decoders=decoders)
  ids, artists, tags = [], [], []
  for ex in ds.as_numpy_iterator():
    ids.append(ex["track_id"].decode("utf-8"))
    artists.append(np.asarray(ex["artists"], np.int32))
    tags.append(np.asarray(ex["tags"], bool))
  num_tags = builder.info.features["tags"].shape[0]
  return SplitLabels(track_ids=np.asarray(ids, dtype=object), artists=artists,
                     tags=np.stack(tags) if tags else np.zeros((0, num_tags), bool))


class EpochBatcher:
  """Deterministic batches of example indices: `indices(step)` depends only on (seed, step).

  Each epoch is a fresh permutation drawn from `np.random.default_rng([seed, epoch])`; the last
  partial batch of an epoch is dropped so shapes are static. With several processes, process p takes
  rows `[p*B/P, (p+1)*B/P)` of every global batch of size B.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int, *,
               process_index: int | None = None, process_count: int | None = None):
    if num_examples < batch_size:
      raise ValueError(f"the training split has {num_examples} examples, fewer than "
                       f"batch_size={batch_size}; lower --config.train.batch_size.")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if batch_size % self.process_count:
      raise ValueError(f"batch_size {batch_size} is not divisible by {self.process_count} processes.")
    self.steps_per_epoch = num_examples // batch_size
    self._cache: tuple[int, np.ndarray] | None = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._cache is None or self._cache[0] != epoch:
      self._cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_examples))
    return self._cache[1]

  def indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(step, self.steps_per_epoch)
    rows = self._permutation(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]
    share = self.batch_size // self.process_count
    return rows[self.process_index * share:(self.process_index + 1) * share]


@dataclasses.dataclass(frozen=True)
class TrackTargets:
  """Per-track regression targets kept outside the TFRecords, joined by track id at read time.

  `ids` [n] str, `values` [n, ...] float32. Keeping them apart from the audio means refitting the
  listening-data factors never re-prepares the audio (a departure from DESIGN.md's "factors in the
  records": the join is a hash-table lookup inside tf.data, so it scales the same way).
  """

  ids: np.ndarray
  values: np.ndarray

  def __post_init__(self):
    if len(self.ids) != len(self.values):
      raise ValueError(f"TrackTargets: {len(self.ids)} ids but {len(self.values)} rows of values.")
    if len(set(self.ids.tolist())) != len(self.ids):
      raise ValueError("TrackTargets: track ids are not unique.")

  def table(self) -> tf.lookup.StaticHashTable:
    """track id -> row (-1 when the track has no target)."""
    keys = tf.constant(np.asarray(self.ids, dtype=object).astype(str))
    rows = tf.range(len(self.ids), dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, rows), -1)


def _with_targets(ds: tf.data.Dataset, targets: dict[str, TrackTargets] | None,
                  require: bool) -> tuple[tf.data.Dataset, dict]:
  """Filters to tracks with every target (when `require`) and returns the lookup tables."""
  tables = {name: (t.table(), tf.constant(np.asarray(t.values, np.float32)))
            for name, t in (targets or {}).items()}
  if require and tables:
    def has_all(ex):
      found = [table.lookup(ex["track_id"]) >= 0 for table, _ in tables.values()]
      return tf.reduce_all(tf.stack(found))
    ds = ds.filter(has_all)
  return ds, tables


def _lookup(tables: dict, track_id: tf.Tensor) -> dict[str, tf.Tensor]:
  out = {}
  for name, (table, values) in tables.items():
    row = table.lookup(track_id)
    out[name] = tf.gather(values, tf.maximum(row, 0))
    out[f"has_{name}"] = row >= 0
  return out


def audio_batches(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int,
                  crop_samples: int | None, seed: int, shuffle: bool = True, repeat: bool = True,
                  skip_batches: int = 0, shuffle_buffer: int = 2048, deterministic: bool = True,
                  per_process: bool = True, targets: dict[str, TrackTargets] | None = None,
                  require_targets: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """Batches of float32 audio crops plus labels from the prepared TFRecords.

  Shuffle happens before repeat and crops are seeded per (seed, epoch, example), so a given seed gives
  the same stream on every run; `skip_batches` resumes a stream. `batch_size` is per process.
  Audio shorter than the crop is zero-padded (the builder already dropped clips below its minimum).
  `targets` join per-track values by id (batch keys `<name>` and `has_<name>`); with
  `require_targets` tracks lacking one are left out before shuffling.
  """
  split_arg = tfds.split_for_jax_process(split) if per_process else split
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1 if deterministic else 16)
  ds = builder.as_dataset(split=split_arg, shuffle_files=shuffle, read_config=read_config)
  ds, tables = _with_targets(ds, targets, require_targets)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()

  def convert(index, ex):
    audio = tf.cast(ex["audio"], tf.float32) / 32768.0
    if crop_samples:
      length = tf.shape(audio)[0]
      audio = tf.pad(audio, [[0, tf.maximum(crop_samples - length, 0)]])
      max_start = tf.maximum(tf.shape(audio)[0] - crop_samples, 0)
      if shuffle:
        start = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), index]),
                                            maxval=max_start + 1, dtype=tf.int32)
      else:
        start = 0
      audio = audio[start:start + crop_samples]
    return {"audio": audio, "tags": ex["tags"], "artist": ex["artists"][0] if "artists" in ex else -1,
            "track_id": ex["track_id"], **_lookup(tables, ex["track_id"])}

  ds = ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
  ds = ds.batch(batch_size, drop_remainder=True)
  if skip_batches:
    ds = ds.skip(skip_batches)
  options = tf.data.Options()
  options.deterministic = deterministic
  ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()


def num_windows(num_samples: int, window: int, max_windows: int) -> int:
  """Whole adjacent windows from the start of a clip, at least one and at most `max_windows`."""
  return int(min(max(num_samples // window, 1), max_windows))


def audio_windows(builder: tfds.core.DatasetBuilder, split: str, *, batch_size: int, window: int,
                  max_windows: int, targets: dict[str, TrackTargets] | None = None,
                  require_targets: bool = False, per_process: bool = False
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Evaluation reader: every track of `split` once, in order, as its first adjacent windows.

  Platt §6.1: "at evaluation time we took predictions for the first 5 adjacent 59049 sample windows
  and averaged them". Batches hold `windows` [B, max_windows, window] float32, `num_windows` [B] (the
  whole windows that fit in the clip, at least one: a clip shorter than a window is zero-padded),
  `valid` [B] bool (False on the padding rows of the last batch, which keeps every batch's shape),
  tags, track ids and the joined `targets`.
  """
  split_arg = tfds.split_for_jax_process(split) if per_process else split
  ds = builder.as_dataset(split=split_arg, shuffle_files=False,
                          read_config=tfds.ReadConfig(interleave_cycle_length=1))
  ds, tables = _with_targets(ds, targets, require_targets)
  span = window * max_windows

  def convert(ex):
    audio = tf.cast(ex["audio"], tf.float32) / 32768.0
    length = tf.shape(audio)[0]
    count = tf.clip_by_value(length // window, 1, max_windows)
    audio = tf.pad(audio, [[0, tf.maximum(span - length, 0)]])[:span]
    mask = tf.repeat(tf.range(max_windows) < count, window)
    audio = tf.where(mask, audio, 0.0)   # windows past the clip's whole ones are unused: zero them
    return {"windows": tf.reshape(audio, [max_windows, window]), "num_windows": count,
            "tags": ex["tags"], "track_id": ex["track_id"], "valid": True,
            **_lookup(tables, ex["track_id"])}

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for batch in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
    n = len(batch["valid"])
    if n < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield batch


FACTORS_FILE = "factors.npz"


def load_factor_targets(path: str) -> TrackTargets:
  """Item factors fitted by `launch.wmf`: a workdir holding factors.npz, or the file itself.

  One row per track: a file that lists `track_ids` / `track_items` (every MSD track of a matched
  (artist, title) key, or of a Taste Profile song) gives each of them its item's factors, so any of
  the MSD's copies of a song trains and evaluates; older files and hand-made ones hold one row per
  item id.
  """
  file = os.path.join(path, FACTORS_FILE) if os.path.isdir(path) else path
  if not os.path.exists(file):
    raise FileNotFoundError(
        f"no latent factors at {file}. Fit them first: `python -m launch.wmf "
        f"--config=configs/wmf.py:demo --workdir=W`, then pass --config.data.factors=W.")
  with np.load(file, allow_pickle=False) as z:
    missing = {"item_ids", "item_factors"} - set(z.files)
    if missing:
      raise ValueError(f"{file} lacks {sorted(missing)}: not a factors.npz written by launch.wmf.")
    ids, values = z["item_ids"].astype(str), z["item_factors"].astype(np.float32)
    if "track_ids" in z.files:
      rows = z["track_items"].astype(np.int64)
      if rows.shape != z["track_ids"].shape or (len(rows) and not 0 <= rows.min() <= rows.max()
                                                  < len(ids)):
        raise ValueError(f"{file}: track_items must hold one row of item_factors per track id.")
      ids, values = z["track_ids"].astype(str), values[rows]
  if not np.isfinite(values).all():
    raise ValueError(f"{file} holds non-finite factors; refit them with launch.wmf.")
  return TrackTargets(ids=ids, values=values)
