"""Features that need a pass over the training split: MFCC codebook and bag-of-frames histograms.

This is MUSLSE's audio representation (Weston, Bengio & Hamel 2011, section 6.2): 39-dim MFCC
frames (13 coefficients + deltas + delta-deltas, `musemb.features.MfccConfig`), a dictionary of
typical frames learnt with k-means on frames sampled from the training split, and each song as the
sparse counts of its frames' nearest codewords. Frames are z-scored with the training split's
mean and standard deviation first (`standardize=True`), so that no coefficient dominates the
Euclidean distance.

The result is cached beside the prepared TFDS dataset:

  <dataset_dir>/derived/bof-<hash12>/
    meta.json          dataset name, version, fingerprint (split sizes + dataset_info.json hash),
                       the BofConfig, the batch size used
    codebook.npz       centroids [K, dim], mean [dim], std [dim]
    <split>.npz        track_ids [n], indptr [n+1], indices [nnz], counts [nnz] (CSR rows)

`hash12` comes from the dataset's full name and version and the canonical JSON of the config, so
a changed setting never reuses features. The directory is written under a temporary name and moved
into place with `os.replace`; a cache whose meta.json disagrees with what is asked for is refused
(and recomputed by `compute_bag_of_frames`), never silently used. The cache lives on the local
file system (os.replace); prepare datasets destined for it on local disk.

Audio comes from the TFDS dataset through tf.data (TensorFlow only reads; it does no math), MFCCs
are computed in JAX in batches: each clip is zero-padded to one of a few bucket lengths (powers of
two and 3/4 of them), and frames beyond a clip's own end are masked so that padding never becomes
a codeword. `Codebook.encode` runs new audio through the same buckets and batch shapes, so it
reproduces the stored histogram of a dataset track exactly.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterable, Iterator

from absl import logging
import numpy as np

from musemb import audio as audio_lib
from musemb import features
from musemb.data import prepared as prepared_lib

CACHE_FORMAT = 1
DERIVED_DIR = "derived"
# Buckets start at 2^14 samples (about 1 s at 16 kHz): shorter clips share one compiled shape.
_MIN_BUCKET = 1 << 14
# Cap on samples per MFCC call, so that long songs go through in smaller batches.
_MAX_BATCH_SAMPLES = 1 << 23
_LOG_EVERY_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class BofConfig:
  """Settings of the codebook and the bag-of-frames histograms.

  Attributes:
    mfcc: the frame features; `mfcc.sample_rate` must equal the dataset's.
    n_codewords: K, codebook size (MUSLSE: 2000).
    kmeans_frames: at most this many training frames (a seeded uniform sample) fit the codebook.
    kmeans_steps: mini-batch k-means updates.
    kmeans_batch: frames per k-means update.
    standardize: z-score frames with the training split's mean/std before k-means and assignment.
    seed: seeds the frame sample and k-means.
  """

  mfcc: features.MfccConfig = dataclasses.field(default_factory=features.MfccConfig)
  n_codewords: int = 2000
  kmeans_frames: int = 200_000
  kmeans_steps: int = 300
  kmeans_batch: int = 4096
  standardize: bool = True
  seed: int = 0

  def __post_init__(self):
    if self.n_codewords < 1 or self.kmeans_frames < self.n_codewords:
      raise ValueError(f"BofConfig: need 1 <= n_codewords <= kmeans_frames, got "
                       f"n_codewords={self.n_codewords}, kmeans_frames={self.kmeans_frames}.")
    if self.kmeans_steps < 0 or self.kmeans_batch < 1:
      raise ValueError(f"BofConfig: need kmeans_steps >= 0 and kmeans_batch >= 1, got "
                       f"{self.kmeans_steps} and {self.kmeans_batch}.")

  def to_dict(self) -> dict[str, Any]:
    return {"mfcc": self.mfcc.to_dict(), "n_codewords": int(self.n_codewords),
            "kmeans_frames": int(self.kmeans_frames), "kmeans_steps": int(self.kmeans_steps),
            "kmeans_batch": int(self.kmeans_batch), "standardize": bool(self.standardize),
            "seed": int(self.seed)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> BofConfig:
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"BofConfig.from_dict: unknown keys {sorted(unknown)}.")
    if "mfcc" in d:
      d["mfcc"] = features.MfccConfig.from_dict(d["mfcc"])
    return cls(**d)

  def hash(self) -> str:
    """sha256 (hex) of the canonical JSON of `to_dict()`."""
    return hashlib.sha256(_canonical_json(self.to_dict()).encode()).hexdigest()


def _canonical_json(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------
# Bags of frames and codebooks.


@dataclasses.dataclass
class BagOfFrames:
  """One split's histograms as CSR rows, in TFDS split order (`as_dataset(shuffle_files=False)`).

  Attributes:
    track_ids: [n] str, to join with other data.
    indptr: [n + 1] int64; row i is `indices[indptr[i]:indptr[i+1]]`.
    indices: [nnz] int32 codeword ids, ascending within a row.
    counts: [nnz] float32 frames per codeword.
    n_codewords: K.
  """

  track_ids: np.ndarray
  indptr: np.ndarray
  indices: np.ndarray
  counts: np.ndarray
  n_codewords: int

  def __len__(self) -> int:
    return len(self.track_ids)

  def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """`(indices [U] int32, counts [U] float32)` of track i."""
    start, stop = self.indptr[i], self.indptr[i + 1]
    return self.indices[start:stop], self.counts[start:stop]

  def nnz_per_row(self) -> np.ndarray:
    return np.diff(self.indptr)

  def padded(self, max_nnz: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-width rows for device batches: `(idx [n, P] int32, cnt [n, P] float32)`.

    Slots past a row's entries hold index 0 with count 0, which a segment sum ignores.
    P is `max_nnz`, or the longest row when None.

    Raises:
      ValueError: a row has more than `max_nnz` entries (nothing is dropped silently).
    """
    nnz = self.nnz_per_row()
    longest = int(nnz.max()) if len(nnz) else 0
    width = longest if max_nnz is None else int(max_nnz)
    if longest > width:
      i = int(np.argmax(nnz))
      raise ValueError(f"padded: track {self.track_ids[i]!r} has {longest} distinct codewords, "
                       f"more than max_nnz={width}; pass max_nnz >= {longest} (or None).")
    n = len(self)
    idx = np.zeros((n, width), np.int32)
    cnt = np.zeros((n, width), np.float32)
    rows = np.repeat(np.arange(n), nnz)
    cols = np.arange(len(self.indices)) - self.indptr[rows]
    idx[rows, cols] = self.indices
    cnt[rows, cols] = self.counts
    return idx, cnt

  def to_dense(self) -> np.ndarray:
    """`[n, K]` float32 counts. For tests and small checks: models take the sparse rows."""
    dense = np.zeros((len(self), self.n_codewords), np.float32)
    rows = np.repeat(np.arange(len(self)), self.nnz_per_row())
    dense[rows, self.indices] = self.counts
    return dense

  @classmethod
  def from_rows(cls, track_ids: list[str], rows: list[tuple[np.ndarray, np.ndarray]],
                n_codewords: int) -> BagOfFrames:
    lengths = np.array([len(i) for i, _ in rows], np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = (np.concatenate([i for i, _ in rows]) if rows else np.zeros(0)).astype(np.int32)
    counts = (np.concatenate([c for _, c in rows]) if rows else np.zeros(0)).astype(np.float32)
    return cls(track_ids=np.array(track_ids, dtype=str), indptr=indptr, indices=indices,
               counts=counts, n_codewords=int(n_codewords))


@dataclasses.dataclass
class Codebook:
  """The learnt codewords and the frame standardisation, able to encode new audio.

  Attributes:
    config: the settings it was learnt with.
    centroids: [K, dim] float32, in standardised frame space.
    mean, std: [dim] float32 (zeros and ones when `config.standardize` is False).
    batch_size: clips per MFCC call when it was built; `encode` uses the same shapes so that it
      reproduces stored histograms bit for bit.
  """

  config: BofConfig
  centroids: np.ndarray
  mean: np.ndarray
  std: np.ndarray
  batch_size: int = 16

  def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`audio: [samples]` float32 at `config.mfcc.sample_rate` -> `(indices [U], counts [U])`."""
    return self.encode_many([audio])[0]

  def encode_many(self, audios: Iterable[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Histograms of several clips (each `[samples]` float32), batched by bucket."""
    clips = []
    for i, a in enumerate(audios):
      a = np.asarray(a, np.float32)
      if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"Codebook.encode: clip {i} must be non-empty finite mono [samples] "
                         f"float32 at {self.config.mfcc.sample_rate} Hz, got shape {a.shape}.")
      clips.append((i, a))
    out: list[Any] = [None] * len(clips)
    for keys, x, lengths in _batches(iter(clips), self.batch_size):
      for key, bag in zip(keys, self._bags(x, lengths)):
        out[key] = bag
    return out

  def _bags(self, x: np.ndarray, lengths: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    frames, n_valid = _frames(self.config.mfcc, x, lengths)
    z = (frames - self.mean) / self.std
    codes = features.assign_codewords(z, self.centroids)  # [B, F]
    return [features.bag_of_frames(codes[i, :n], self.config.n_codewords)
            for i, n in enumerate(n_valid) if lengths[i] > 0]


# ------------------------------------------------------------------------------------------------
# Batching by bucket.


def bucket_length(num_samples: int) -> int:
  """The padded length of a clip: the smallest 2^k or 3 * 2^(k-2) >= num_samples (>= 2^14).

  At most a third of a padded clip is padding, and a data set compiles a handful of shapes.
  """
  n = max(int(num_samples), _MIN_BUCKET)
  power = 1 << (n - 1).bit_length()
  return 3 * power // 4 if 3 * power // 4 >= n else power


def _rows_per_batch(length: int, batch_size: int) -> int:
  return max(1, min(batch_size, _MAX_BATCH_SAMPLES // length))


def _batches(clips: Iterator[tuple[Any, np.ndarray]], batch_size: int
             ) -> Iterator[tuple[list[Any], np.ndarray, np.ndarray]]:
  """Groups `(key, audio [samples])` by bucket into `(keys, x [B, L], lengths [B])`.

  Every batch of a bucket has the same B (a full batch, padded with empty rows of length 0), so
  each bucket compiles once and a clip's features never depend on which batch it landed in.
  """
  pending: dict[int, list[tuple[Any, np.ndarray]]] = collections.defaultdict(list)

  def pack(length: int, items: list[tuple[Any, np.ndarray]]):
    rows = _rows_per_batch(length, batch_size)
    x = np.zeros((rows, length), np.float32)
    lengths = np.zeros((rows,), np.int64)
    for i, (_, a) in enumerate(items):
      x[i, :len(a)] = a
      lengths[i] = len(a)
    return [k for k, _ in items], x, lengths

  for key, a in clips:
    length = bucket_length(len(a))
    pending[length].append((key, a))
    if len(pending[length]) == _rows_per_batch(length, batch_size):
      yield pack(length, pending.pop(length))
  for length in sorted(pending):
    yield pack(length, pending[length])


def _frames(mfcc: features.MfccConfig, x: np.ndarray, lengths: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """MFCC frames of a padded batch and each row's number of real frames.

  Returns:
    frames [B, F, dim] float32 and n_valid [B] int (0 for empty rows).
  """
  frames = np.asarray(mfcc.compute(x), np.float32)
  n_valid = np.array([mfcc.n_frames(int(n)) if n > 0 else 0 for n in lengths], np.int64)
  return frames, n_valid


# ------------------------------------------------------------------------------------------------
# Computing.


def _read_split(prepared: prepared_lib.Prepared, split: str) -> Iterator[tuple[str, np.ndarray]]:
  """`(track_id, float32 audio)` in TFDS split order; tf.data does the reading on the CPU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = prepared.builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex["track_id"], ex["audio"]), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  for track_id, audio in tfds.as_numpy(ds):
    yield track_id.decode("utf-8"), audio_lib.from_int16(audio)


class _Progress:
  """Logs tracks done and the rate about every half minute, and once at the end."""

  def __init__(self, what: str, total: int):
    self.what, self.total, self.done = what, total, 0
    self.start = self.last = time.monotonic()

  def add(self, n: int) -> None:
    self.done += n
    now = time.monotonic()
    if now - self.last >= _LOG_EVERY_SECONDS or self.done >= self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      logging.info("%s: %d/%d tracks (%.1f tracks/s).", self.what, self.done, self.total, rate)


class _Reservoir:
  """A uniform sample of at most `size` rows from a stream (Vitter's algorithm R), seeded."""

  def __init__(self, size: int, dim: int, seed: int):
    self.buffer = np.zeros((size, dim), np.float32)
    self.seen = 0
    self._rng = np.random.default_rng(seed)

  def add(self, rows: np.ndarray) -> None:
    size = len(self.buffer)
    fill = min(max(size - self.seen, 0), len(rows))
    self.buffer[self.seen:self.seen + fill] = rows[:fill]
    rest = rows[fill:]
    if len(rest):
      # Row t (0-based over the stream) replaces slot j ~ U{0..t} when j < size; later rows that
      # pick the same slot overwrite earlier ones, as in the sequential algorithm.
      t = self.seen + fill + np.arange(len(rest))
      j = self._rng.integers(0, t + 1)
      keep = j < size
      self.buffer[j[keep]] = rest[keep]
    self.seen += len(rows)

  def sample(self) -> np.ndarray:
    return self.buffer[:min(self.seen, len(self.buffer))]


def _fit_codebook(prepared: prepared_lib.Prepared, config: BofConfig, batch_size: int) -> Codebook:
  """Pass over the training split: frame statistics and a frame sample, then k-means."""
  dim = config.mfcc.dim
  total = np.zeros(dim, np.float64)
  total_sq = np.zeros(dim, np.float64)
  count = 0
  reservoir = _Reservoir(config.kmeans_frames, dim, config.seed)
  progress = _Progress("Codebook frames from 'train'", prepared.split_sizes["train"])
  for keys, x, lengths in _batches(_read_split(prepared, "train"), batch_size):
    frames, n_valid = _frames(config.mfcc, x, lengths)
    for i, key in enumerate(keys):
      f = frames[i, :n_valid[i]]
      if not np.isfinite(f).all():
        raise ValueError(f"MFCC frames of track {key!r} are not finite; the audio in "
                         f"{prepared.dataset_dir} is damaged, prepare the dataset again.")
      total += f.sum(axis=0, dtype=np.float64)
      total_sq += np.square(f, dtype=np.float64).sum(axis=0)
      count += len(f)
      reservoir.add(f)
    progress.add(len(keys))
  if count < config.n_codewords:
    raise ValueError(f"The training split of {prepared.dataset_dir} has {count} MFCC frames, "
                     f"fewer than n_codewords={config.n_codewords}; lower n_codewords.")
  if config.standardize:
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    # A constant coefficient would divide by zero; leave it unscaled instead.
    std = np.where(std > 1e-6, std, 1.0)
  else:
    mean, std = np.zeros(dim), np.ones(dim)
  mean, std = mean.astype(np.float32), std.astype(np.float32)
  sample = (reservoir.sample() - mean) / std
  logging.info("k-means: %d codewords from %d of %d training frames, %d steps of %d.",
               config.n_codewords, len(sample), count, config.kmeans_steps, config.kmeans_batch)
  centroids = features.kmeans_fit(sample, config.n_codewords, batch_size=config.kmeans_batch,
                                  n_steps=config.kmeans_steps, seed=config.seed)
  return Codebook(config=config, centroids=np.asarray(centroids, np.float32), mean=mean, std=std,
                  batch_size=batch_size)


def _encode_split(prepared: prepared_lib.Prepared, codebook: Codebook, split: str) -> BagOfFrames:
  n = prepared.split_sizes[split]
  ids: list[Any] = [None] * n
  rows: list[Any] = [None] * n
  progress = _Progress(f"Bag of frames of {split!r}", n)
  positions = ((pos, audio) for pos, audio in enumerate(_read_split_with_ids(prepared, split, ids)))
  for keys, x, lengths in _batches(positions, codebook.batch_size):
    for pos, bag in zip(keys, codebook._bags(x, lengths)):  # pylint: disable=protected-access
      rows[pos] = bag
    progress.add(len(keys))
  if any(r is None for r in rows):
    raise RuntimeError(f"Split {split!r} of {prepared.dataset_dir} yielded "
                       f"{sum(r is not None for r in rows)} tracks, but dataset_info.json says "
                       f"{n}; prepare the dataset again.")
  return BagOfFrames.from_rows(ids, rows, codebook.config.n_codewords)


def _read_split_with_ids(prepared: prepared_lib.Prepared, split: str, ids: list[Any]
                         ) -> Iterator[np.ndarray]:
  for pos, (track_id, audio) in enumerate(_read_split(prepared, split)):
    if pos >= len(ids):
      raise RuntimeError(f"Split {split!r} of {prepared.dataset_dir} holds more tracks than "
                         f"dataset_info.json says ({len(ids)}); prepare the dataset again.")
    ids[pos] = track_id
    yield audio


def _compute(prepared: prepared_lib.Prepared, config: BofConfig, batch_size: int
             ) -> tuple[Codebook, dict[str, BagOfFrames]]:
  codebook = _fit_codebook(prepared, config, batch_size)
  bags = {split: _encode_split(prepared, codebook, split) for split in prepared.split_sizes}
  return codebook, bags


# ------------------------------------------------------------------------------------------------
# The cache.


def _fingerprint(prepared: prepared_lib.Prepared) -> dict[str, Any]:
  info = os.path.join(prepared.dataset_dir, "dataset_info.json")
  with open(info, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  return {"split_sizes": dict(sorted(prepared.split_sizes.items())),
          "dataset_info_sha256": digest}


def _expected_meta(prepared: prepared_lib.Prepared, config: BofConfig) -> dict[str, Any]:
  return {"kind": "bag_of_frames", "format": CACHE_FORMAT, "name": prepared.full_name,
          "version": prepared.version, "config": config.to_dict(), "config_hash": config.hash(),
          "fingerprint": _fingerprint(prepared)}


def cache_dir(dataset_dir: str, config: BofConfig) -> str:
  """`<dataset_dir>/derived/bof-<hash12>`, keyed by the dataset's name, version and the config."""
  prepared = prepared_lib.load_prepared(dataset_dir)
  return _cache_dir(prepared, config)


def _cache_dir(prepared: prepared_lib.Prepared, config: BofConfig) -> str:
  key = _canonical_json({"name": prepared.full_name, "version": prepared.version,
                         "config": config.to_dict()})
  return os.path.join(prepared.dataset_dir, DERIVED_DIR,
                      "bof-" + hashlib.sha256(key.encode()).hexdigest()[:12])


def _cache_problem(path: str, expected: dict[str, Any]) -> str | None:
  """Why the cache at `path` cannot serve `expected`, or None when it can."""
  meta_path = os.path.join(path, "meta.json")
  if not os.path.exists(meta_path):
    return "missing"
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    return f"unreadable meta.json ({e})"
  stored = {k: meta.get(k) for k in expected}
  if stored != expected:
    diff = sorted(k for k in expected if stored[k] != expected[k])
    return f"meta.json disagrees on {diff} (stored {[stored[k] for k in diff]})"
  needed = ["codebook.npz"] + [f"{s}.npz" for s in expected["fingerprint"]["split_sizes"]]
  missing = [name for name in needed if not os.path.exists(os.path.join(path, name))]
  if missing:
    return f"files {missing} are missing"
  return None


def _save(path: str, meta: dict[str, Any], codebook: Codebook,
          bags: dict[str, BagOfFrames]) -> None:
  """Writes the cache under a temporary name in the same directory, then renames it."""
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
  try:
    np.savez(os.path.join(tmp, "codebook.npz"), centroids=codebook.centroids, mean=codebook.mean,
             std=codebook.std)
    for split, bag in bags.items():
      np.savez(os.path.join(tmp, f"{split}.npz"), track_ids=bag.track_ids, indptr=bag.indptr,
               indices=bag.indices, counts=bag.counts, n_codewords=np.int64(bag.n_codewords))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump({**meta, "batch_size": codebook.batch_size}, f, indent=1, sort_keys=True)
    stale = None
    if os.path.exists(path):
      # os.replace cannot overwrite a non-empty directory: move the old one aside first.
      stale = tempfile.mkdtemp(prefix=f".stale-{os.path.basename(path)}-", dir=parent)
      os.replace(path, os.path.join(stale, "old"))
    os.replace(tmp, path)
    if stale is not None:
      shutil.rmtree(stale, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _load(path: str, config: BofConfig) -> tuple[Codebook, dict[str, BagOfFrames]]:
  with open(os.path.join(path, "meta.json")) as f:
    meta = json.load(f)
  with np.load(os.path.join(path, "codebook.npz")) as z:
    codebook = Codebook(config=config, centroids=z["centroids"], mean=z["mean"], std=z["std"],
                        batch_size=int(meta["batch_size"]))
  bags = {}
  for split in meta["fingerprint"]["split_sizes"]:
    with np.load(os.path.join(path, f"{split}.npz")) as z:
      bags[split] = BagOfFrames(track_ids=z["track_ids"], indptr=z["indptr"],
                                indices=z["indices"], counts=z["counts"],
                                n_codewords=int(z["n_codewords"]))
  return codebook, bags


# ------------------------------------------------------------------------------------------------
# Public entry points.


def _open(dataset_dir: str, config: BofConfig) -> prepared_lib.Prepared:
  prepared = prepared_lib.load_prepared(dataset_dir)
  if config.mfcc.sample_rate != prepared.sample_rate:
    raise ValueError(f"BofConfig.mfcc.sample_rate={config.mfcc.sample_rate} but "
                     f"{prepared.dataset_dir} holds audio at {prepared.sample_rate} Hz; use "
                     f"MfccConfig(sample_rate={prepared.sample_rate}).")
  if "train" not in prepared.split_sizes:
    raise ValueError(f"{prepared.dataset_dir} has no 'train' split (splits: "
                     f"{sorted(prepared.split_sizes)}); the codebook is learnt on it.")
  return prepared


def compute_bag_of_frames(dataset_dir: str, config: BofConfig, *, batch_size: int = 16,
                          recompute: bool = False) -> tuple[Codebook, dict[str, BagOfFrames]]:
  """The codebook and every split's bag of frames, from the cache when it is valid.

  Args:
    dataset_dir: a prepared dataset (`musemb.data.builders.prepare`).
    config: feature settings; part of the cache key.
    batch_size: clips per MFCC call (memory vs speed; recorded so `encode` matches).
    recompute: ignore a valid cache and rebuild it.

  Returns:
    `(codebook, {split: BagOfFrames})`, rows in TFDS split order.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1.")
  prepared = _open(dataset_dir, config)
  path = _cache_dir(prepared, config)
  expected = _expected_meta(prepared, config)
  problem = _cache_problem(path, expected)
  if problem is None and not recompute:
    logging.info("Loading bag of frames from %s.", path)
    return _load(path, config)
  if problem not in (None, "missing"):
    logging.warning("Not using the cache %s: %s. Recomputing it.", path, problem)
  start = time.monotonic()
  codebook, bags = _compute(prepared, config, batch_size)
  _save(path, expected, codebook, bags)
  logging.info("Bag of frames (K=%d) of %s computed in %.1f s and saved to %s.",
               config.n_codewords, prepared.full_name, time.monotonic() - start, path)
  return codebook, bags


def load_codebook(dataset_dir: str, config: BofConfig) -> Codebook:
  """The cached codebook for `config` (to encode new audio); refuses a stale or missing cache."""
  prepared = _open(dataset_dir, config)
  path = _cache_dir(prepared, config)
  problem = _cache_problem(path, _expected_meta(prepared, config))
  if problem is not None:
    raise FileNotFoundError(
        f"No valid bag-of-frames cache for this config at {path}: {problem}. Compute it with "
        "musemb.data.derived.compute_bag_of_frames(dataset_dir, config) or "
        "`python -m launch.prepare ... --bof`.")
  with open(os.path.join(path, "meta.json")) as f:
    batch_size = int(json.load(f)["batch_size"])
  with np.load(os.path.join(path, "codebook.npz")) as z:
    return Codebook(config=config, centroids=z["centroids"], mean=z["mean"], std=z["std"],
                    batch_size=batch_size)
