"""SampleCNN's data adapter: raw-audio crops for training, adjacent windows for evaluation.

The data object of systems that learn from waveforms (SampleCNN factor regression and tagging, the
acoustic branch of later systems). It wraps `musemb.data.pipeline.audio_batches` (tf.data over the
prepared TFRecords, seeded shuffle and random crops) behind the loop's `train_batch(step)` contract:
the stream is opened at `skip_batches=step`, so a resumed run (or a caller asking for an earlier
step) continues at the same data position. Skipping replays the reader from the start, which costs
reading, not training; runs resume once per preemption.

Per-track regression targets that are not in the records (WMF latent factors, fitted after the audio
was prepared) are joined by track id (`pipeline.TrackTargets`); tracks without one are left out of
training and counted per split, never silently (`info["coverage"]`, logged, and in metrics.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np

from musemb.data import prepared as prepared_lib
from musemb.data import pipeline


@dataclasses.dataclass
class SplitInfo:
  """Labels of one split read without decoding audio, and which tracks have targets."""

  labels: pipeline.SplitLabels
  target_rows: np.ndarray          # [n] row in the targets, -1 without one (all -1: no targets)

  @property
  def has_target(self) -> np.ndarray:
    return self.target_rows >= 0


@dataclasses.dataclass
class AudioData:
  """What the training loop and the raw-audio systems need from a prepared dataset."""

  info: dict[str, Any]
  splits: dict[str, SplitInfo]
  tables: dict[str, np.ndarray]
  prepared: prepared_lib.Prepared
  targets: dict[str, pipeline.TrackTargets]
  batch_size: int                  # global
  crop_samples: int
  seed: int
  train_requires_targets: bool     # factor regression trains only on tracks with factors
  _stream: Iterator[dict[str, np.ndarray]] | None = None
  _next_step: int = -1

  def _open(self, step: int) -> Iterator[dict[str, np.ndarray]]:
    return pipeline.audio_batches(
        self.prepared.builder, "train", batch_size=self.batch_size // jax.process_count(),
        crop_samples=self.crop_samples, seed=self.seed, skip_batches=step, targets=self.targets,
        require_targets=self.train_requires_targets)

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's share of the global batch of `step`: audio crops, tags, targets."""
    if self._stream is None or step != self._next_step:
      if step:
        logging.info("Opening the training audio stream at batch %d.", step)
      self._stream = self._open(step)
    batch = next(self._stream)
    self._next_step = step + 1
    out = {"audio": batch["audio"], "tags": batch["tags"].astype(np.float32)}
    for name in self.targets:
      out[name] = batch[name]
    return out

  def windows(self, split: str, batch_size: int, window: int, max_windows: int
              ) -> Iterator[dict[str, np.ndarray]]:
    """Every track of `split` once as its first adjacent windows (`pipeline.audio_windows`)."""
    return pipeline.audio_windows(self.prepared.builder, split, batch_size=batch_size,
                                  window=window, max_windows=max_windows, targets=self.targets)


def _target_rows(track_ids: np.ndarray, targets: pipeline.TrackTargets | None) -> np.ndarray:
  if targets is None:
    return np.full(len(track_ids), -1, np.int64)
  index = {t: i for i, t in enumerate(targets.ids.tolist())}
  return np.array([index.get(t, -1) for t in track_ids.tolist()], np.int64)


def open_prepared(config: ml_collections.ConfigDict, workdir: str) -> prepared_lib.Prepared:
  """`config.data_dir`'s dataset (or the built-in world, prepared on first use), refused when its
  audio is not at `config.data.sample_rate`: the crop length means that many seconds only there."""
  dataset_dir = prepared_lib.resolve_dataset(config, workdir)
  prepared = prepared_lib.load_prepared(dataset_dir)
  if prepared.sample_rate != config.data.sample_rate:
    raise ValueError(f"{dataset_dir} holds {prepared.sample_rate} Hz audio but "
                     f"config.data.sample_rate={config.data.sample_rate}; prepare it again at "
                     f"{config.data.sample_rate} Hz or change the config.")
  return prepared


def load_data(config: ml_collections.ConfigDict, workdir: str) -> AudioData:
  """Opens the prepared dataset (or prepares the built-in world) and joins the latent factors.

  `config.model.head == "factors"` needs `config.data.factors` (a `launch.wmf` workdir); training
  then uses the tracks that have factors. With the "tags" head every track trains.
  """
  prepared = open_prepared(config, workdir)
  dataset_dir = prepared.dataset_dir
  head = config.model.head
  targets: dict[str, pipeline.TrackTargets] = {}
  if config.data.factors:
    targets["factors"] = pipeline.load_factor_targets(config.data.factors)
  elif head == "factors":
    raise ValueError("config.model.head='factors' needs latent factors: fit them with "
                     "`python -m launch.wmf --config=configs/wmf.py:demo --workdir=W` and pass "
                     "--config.data.factors=W (or use --config.model.head=tags).")
  splits = {}
  coverage = {}
  for split in prepared.split_sizes:
    labels = pipeline.read_split(prepared.builder, split)
    info = SplitInfo(labels=labels, target_rows=_target_rows(labels.track_ids,
                                                            targets.get("factors")))
    splits[split] = info
    coverage[split] = {"tracks": len(labels), "with_factors": int(info.has_target.sum())}
  if "train" not in splits:
    raise ValueError(f"{dataset_dir} has no train split (splits: {sorted(splits)}).")
  if "factors" in targets:
    for split, c in coverage.items():
      logging.info("%s: %d of %d tracks have latent factors%s.", split, c["with_factors"],
                   c["tracks"], "" if c["with_factors"] == c["tracks"] else
                   " (the others are left out of training and factor evaluation)")
  usable = coverage["train"]["with_factors"] if head == "factors" else coverage["train"]["tracks"]
  if usable < config.train.batch_size:
    raise ValueError(f"only {usable} training tracks{' with factors' if head == 'factors' else ''} "
                     f"for batch_size={config.train.batch_size}; lower --config.train.batch_size or "
                     "check that the factors were fitted on this dataset's listeners.")
  info = {"num_tags": len(prepared.tag_names), "tag_names": prepared.tag_names,
          "num_factors": int(targets["factors"].values.shape[1]) if "factors" in targets else 0,
          "sample_rate": prepared.sample_rate, "coverage": coverage, "num_train_examples": usable,
          "dataset": prepared.full_name}
  return AudioData(info=info, splits=splits, tables={}, prepared=prepared,
                   targets=targets, batch_size=config.train.batch_size,
                   crop_samples=config.data.crop_samples, seed=config.seed,
                   train_requires_targets=head == "factors")
