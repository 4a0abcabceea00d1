"""Rush et al.'s data adapter: albums, descriptor vectors, tokenised reviews, training pairs.

`load_data(config, workdir)` returns a `ReviewData` for the shared loop (`musemb.systems.rush`):

* **Albums and reviews** (`musemb.data.sources.mard.AlbumReviews`): MARD read from disk
  (`config.data.source = "mard"`, `config.data.path`; `config.data.split_file` optional), or the
  built-in world (`"synthetic"`: the prepared dataset of `config.data_dir`, or the synthetic world
  prepared under `<workdir>/data`), whose album reviews go through `mard.from_reviews`. Both are
  split by whole albums, `config.data.test_fraction` of the reviews held out for testing (the
  paper's 10%).
* **Validation**: the valid split when the split has one (a split file naming it); otherwise
  `config.data.valid_fraction` of the training reviews, by whole albums, are held out of training
  for early stopping (`hold_out_valid`). The paper has no third split and reports on its
  development set; here the test albums are never looked at before the final evaluation.
* **Audio features**: MARD's AcousticBrainz vectors, or for the built-in world the same layout
  computed by `musemb.features.audio_descriptors` from each track's audio, once, and cached in
  `<cache>/descriptors-<hash>.npz` (keyed by the dataset and the `DescriptorConfig`; `<cache>` is
  `config.data.cache_dir`, by default the workdir, so runs on one dataset may share it). Fitted
  `features.Standardizer` on the training items only, saved as `<workdir>/standardizer.json` with
  the `DescriptorConfig` in `info.json`, so that a predictor z-scores an upload the same way.
* **Text**: the `config.text.vocab_size` most frequent words of the training reviews
  (`musemb.text.vocabulary`, saved as `<workdir>/vocabulary.json`), every review encoded to
  `config.text.max_length` ids, the word-embedding table optionally started from
  `config.text.word_vectors` (word2vec/GloVe, `<workdir>/embedding_init.npz`); or, with `config.model.text = "features"`, precomputed sentence
  vectors (`config.text.features_path`, `musemb.text.sentence_features`), the paper's BERT row.
* **Pairs and batches**: a true pair is (review r, audio item t of r's album); MARD has one item
  per album, so its pairs are its reviews, while the built-in world's albums have several tracks.
  `train_batch(step)` gives the step's B pair indices, a pure function of (seed, step): with
  `config.sampling.neighbourhood` from `samplers.neighbourhood.NeighbourhoodSampler` (every pair
  has a partner of its album in the batch, section 6.2), else B pairs drawn uniformly. The
  training items' z-scored features and the reviews' ids live on the device in `tables` when they
  fit in `config.data.max_table_gb` (MARD's 76k training reviews x 400 ids are 0.12 GB); above
  that the host gathers each batch's rows and ships them in the batch instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from musemb import features as features_lib
from musemb import utils
from musemb.data import pipeline
from musemb.data import prepared as prepared_lib
from musemb.data.sources import mard
from musemb.samplers import neighbourhood
from musemb.text import sentence_features
from musemb.text import vocabulary as vocabulary_lib

SOURCES = ("synthetic", "mard")
# Seed stream of the random (non-neighbourhood) pair draws, apart from the model's keys.
_PAIR_STREAM = 0x72757368
_DESCRIPTOR_BATCH = 32


def hold_out_valid(data: mard.AlbumReviews, fraction: float, seed: int) -> mard.AlbumReviews:
  """Moves whole training albums to valid until valid holds `fraction` of the training reviews.

  Left as it is when the data already has valid albums or `fraction` is 0. The albums are taken in
  `mard.split_albums`'s seeded order, so the held-out slice is a pure function of the seed.
  """
  splits = data.album_splits
  if fraction <= 0.0 or "valid" in splits.values():
    return data
  train = [a for a, s in splits.items() if s == "train"]
  counts = np.bincount(data.review_album, minlength=len(data.albums))
  by_id = {a.id: int(n) for a, n in zip(data.albums, counts) if a.id in set(train)}
  moved = mard.split_albums(by_id, test_fraction=fraction, seed=seed)
  albums = tuple(dataclasses.replace(a, split="valid") if moved.get(a.id) == "test" else a
                 for a in data.albums)
  if all(a.split != "train" for a in albums):
    raise ValueError(f"config.data.valid_fraction={fraction} leaves no training album.")
  return dataclasses.replace(
      data, albums=albums,
      split_rule=f"{data.split_rule}; valid = {fraction:g} of the training reviews (seed {seed})")


# ----------------------------------------------------------------------------- the built-in world


def _split_audio(prepared: prepared_lib.Prepared, split: str):
  """(track id, float32 waveform in [-1, 1]) of every track of a prepared split."""
  ds = prepared.builder.as_dataset(split=split, shuffle_files=False,
                                   read_config=tfds.ReadConfig(interleave_cycle_length=1),
                                   decoders=tfds.decode.PartialDecoding(
                                       {"track_id": True, "audio": True}))
  for ex in ds.as_numpy_iterator():
    yield ex["track_id"].decode("utf-8"), np.asarray(ex["audio"], np.float32) / 32768.0


def descriptor_config(config: ml_collections.ConfigDict, sample_rate: int
                      ) -> features_lib.DescriptorConfig:
  """AcousticBrainz's framing scaled to the dataset's rate (`DescriptorConfig.for_sample_rate`)."""
  return features_lib.DescriptorConfig.for_sample_rate(sample_rate,
                                                       n_mfcc=int(config.features.n_mfcc))


def compute_descriptors(waves: list[np.ndarray], dconfig: features_lib.DescriptorConfig
                        ) -> np.ndarray:
  """[n, dim] descriptor vectors of mono clips, batched by clip length (one compile per length)."""
  out = np.zeros((len(waves), dconfig.dim), np.float32)
  by_length: dict[int, list[int]] = {}
  for i, w in enumerate(waves):
    by_length.setdefault(len(w), []).append(i)
  for rows in by_length.values():
    for start in range(0, len(rows), _DESCRIPTOR_BATCH):
      chunk = rows[start:start + _DESCRIPTOR_BATCH]
      out[chunk] = np.asarray(features_lib.audio_descriptors(
          np.stack([waves[i] for i in chunk]), dconfig))
  return out


def _synthetic_albums(config: ml_collections.ConfigDict, workdir: str
                      ) -> tuple[mard.AlbumReviews, features_lib.DescriptorConfig, str]:
  dataset_dir = prepared_lib.resolve_dataset(config, workdir)
  prepared = prepared_lib.load_prepared(dataset_dir)
  dconfig = descriptor_config(config, prepared.sample_rate)
  key = json.dumps({"dataset": prepared.full_name, "dir": os.path.abspath(dataset_dir),
                    "descriptors": dconfig.to_dict()}, sort_keys=True)
  cache_dir = config.data.get("cache_dir", "") or workdir
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, f"descriptors-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz")
  if os.path.exists(path):
    cached = np.load(path)
    track_ids, vectors = [str(t) for t in cached["track_ids"]], cached["features"]
    logging.info("Loaded %d cached descriptor vectors from %s.", len(track_ids), path)
  else:
    track_ids, waves = [], []
    for split in prepared.split_sizes:
      for track_id, wave in _split_audio(prepared, split):
        track_ids.append(track_id)
        waves.append(wave)
    vectors = compute_descriptors(waves, dconfig)
    if jax.process_index() == 0:
      utils.save_npz_atomic(path, {"track_ids": np.array(track_ids, str), "features": vectors})
    logging.info("Computed %d descriptor vectors (%d values each) into %s.", len(track_ids),
                 dconfig.dim, path)
  reviews = prepared.tables().reviews
  if not reviews:
    raise ValueError(f"{dataset_dir} holds no reviews (tables/reviews.jsonl); Rush et al.'s system "
                     "needs album reviews: use the built-in world or data.source=mard.")
  # An album's artist: its first track's first artist (the built-in world's albums have one).
  artist_of = {}
  for split in prepared.split_sizes:
    labels = pipeline.read_split(prepared.builder, split)
    for track_id, artists in zip(labels.track_ids, labels.artists):
      if len(artists):
        artist_of[str(track_id)] = prepared.artist_names[int(artists[0])]
  album_info = {r.album: {"title": r.album, "artist": artist_of.get(r.track_ids[0])}
                for r in reviews if r.album and r.track_ids}
  data = mard.from_reviews(track_ids, vectors, dconfig.names, reviews,
                           test_fraction=float(config.data.test_fraction),
                           seed=int(config.data.split_seed), album_info=album_info,
                           source=prepared.source)
  return data, dconfig, prepared.full_name


def load_albums(config: ml_collections.ConfigDict, workdir: str
                ) -> tuple[mard.AlbumReviews, features_lib.DescriptorConfig, str]:
  """(albums with train/valid/test splits, the descriptor settings of their vectors, dataset)."""
  source = config.data.source
  if source not in SOURCES:
    raise ValueError(f"config.data.source={source!r}; expected one of {SOURCES}.")
  if source == "mard":
    if not config.data.path:
      raise ValueError("config.data.source='mard' needs config.data.path: the folder holding "
                       "mard_metadata.json, mard_reviews.json and acousticbrainz_descriptors/.")
    data = mard.read(config.data.path, split_file=config.data.split_file or None,
                     test_fraction=float(config.data.test_fraction),
                     seed=int(config.data.split_seed))
    # AcousticBrainz computes its descriptors at 44.1 kHz; an upload is analysed the same way.
    dconfig = features_lib.DescriptorConfig(n_mfcc=int(config.features.n_mfcc))
    dataset = f"mard:{os.path.abspath(config.data.path)}"
  else:
    data, dconfig, dataset = _synthetic_albums(config, workdir)
  data = hold_out_valid(data, float(config.data.valid_fraction), int(config.data.split_seed))
  return data, dconfig, dataset


def word2vec_sentence_features(config: ml_collections.ConfigDict, workdir: str, path: str, *,
                               dim: int = 100, epochs: int = 20, min_count: int = 2) -> dict:
  """Writes `path`, a sentence-features file (`musemb.text.sentence_features`) of every review of
  the config's data: the mean of word2vec vectors (`musemb.text.word2vec`, skip-gram, no phrases,
  one worker and seed `config.seed`: deterministic) trained on the training reviews alone, so that
  no held-out text shapes them.

  This is what a run with `model.text=features` reads when no pretrained sentence encoder is at
  hand: a frozen, unsupervised text representation computed here instead of downloaded BERT
  features (section 4.3). It stands in for the BERT row's *kind* of input (fixed vectors the text
  branch cannot tune), not for BERT's quality. `workdir` holds the load's caches (the descriptor
  cache of the built-in world unless `config.data.cache_dir` names one).

  Returns:
    {"reviews", "train_reviews", "words", "dim", "texts_without_vectors"}.
  """
  from musemb.text import word2vec  # pylint: disable=g-import-not-at-top  (gensim)
  albums, _, _ = load_albums(config, workdir)
  train = albums.split("train")
  vectors = word2vec.train_word2vec([r.text for r in train.reviews], dim=dim, epochs=epochs,
                                    min_count=min_count, phrase_passes=0,
                                    seed=int(config.seed), workers=1)
  features, empty = sentence_features.mean_word_vectors([r.text for r in albums.reviews], vectors)
  sentence_features.save_sentence_features(
      path, [r.id for r in albums.reviews], features,
      description=f"mean of {vectors.dim}-d word2vec vectors trained on the {len(train.reviews)} "
                  "training reviews")
  return {"reviews": len(albums.reviews), "train_reviews": len(train.reviews),
          "words": len(vectors.words), "dim": vectors.dim, "texts_without_vectors": empty}


# ----------------------------------------------------------------------------- the data object


@dataclasses.dataclass
class SplitData:
  """One split: its albums, z-scored items and encoded reviews."""

  albums: mard.AlbumReviews       # the split's view (indices renumbered)
  audio: np.ndarray               # [T, D] float32 z-scored descriptor vectors
  text_ids: np.ndarray            # [R, L] int32 (empty [R, 0] for sentence features)
  text_lengths: np.ndarray        # [R] int32
  text_features: np.ndarray       # [R, F] float32 (empty [R, 0] unless model.text=features)

  @property
  def num_albums(self) -> int:
    return len(self.albums.albums)

  def text_inputs(self, rows: Any = slice(None)) -> tuple[np.ndarray, np.ndarray | None]:
    """(text, lengths or None) as `TwoBranch.embed_text` takes them, for review rows `rows`."""
    if self.text_features.shape[1]:
      return self.text_features[rows], None
    return self.text_ids[rows], self.text_lengths[rows]


@dataclasses.dataclass
class ReviewData:
  """What `musemb.systems.rush` and the loop need (see the module docstring)."""

  info: dict[str, Any]
  splits: dict[str, SplitData]
  tables: dict[str, np.ndarray]
  vocab: vocabulary_lib.Vocabulary | None
  standardizer: features_lib.Standardizer
  descriptor_config: features_lib.DescriptorConfig
  pair_review: np.ndarray         # [P] int64 training review row of each pair
  pair_item: np.ndarray           # [P] int64 training item row
  pair_album: np.ndarray          # [P] int32 training album
  batch_size: int
  seed: int
  sampler: neighbourhood.NeighbourhoodSampler | None
  resident: bool                  # tables on the device (else rows ride in the batch)

  def pair_indices(self, step: int) -> np.ndarray:
    """[B] pair indices of the step (global batch)."""
    if self.sampler is not None:
      return self.sampler.batch(step)
    rng = np.random.default_rng([self.seed, _PAIR_STREAM, int(step)])
    n = len(self.pair_album)
    return rng.choice(n, self.batch_size, replace=n < self.batch_size)

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's share of the step's pairs: `item`, `review` rows and `album` [B] int32,
    plus the rows' `audio`, `text` (and `text_lengths`) when the tables are not resident."""
    pairs = self.pair_indices(step)
    share = self.batch_size // jax.process_count()
    pairs = pairs[jax.process_index() * share:(jax.process_index() + 1) * share]
    batch = {"item": self.pair_item[pairs].astype(np.int32),
             "review": self.pair_review[pairs].astype(np.int32),
             "album": self.pair_album[pairs].astype(np.int32)}
    if not self.resident:
      train = self.splits["train"]
      batch["audio"] = train.audio[batch["item"]]
      text, lengths = train.text_inputs(batch["review"])
      batch["text"] = text
      if lengths is not None:
        batch["text_lengths"] = lengths
    return batch


def _encode(split: mard.AlbumReviews, standardizer, vocab, max_length, features
            ) -> SplitData:
  texts = [r.text for r in split.reviews]
  if vocab is not None:
    encoded = vocab.encode(texts, max_length)
    ids, lengths = encoded.ids, encoded.lengths
    text_features = np.zeros((len(texts), 0), np.float32)
  else:
    ids = np.zeros((len(texts), 0), np.int32)
    lengths = np.zeros(len(texts), np.int32)
    text_features = features.lookup([r.id for r in split.reviews]).astype(np.float32)
  return SplitData(albums=split, audio=np.asarray(standardizer(split.features), np.float32),
                   text_ids=ids, text_lengths=lengths, text_features=text_features)


def training_pairs(train: mard.AlbumReviews) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(review row, item row, album) of every (review, item of its album) pair, album by album."""
  items_of = [np.flatnonzero(train.track_album == a) for a in range(len(train.albums))]
  reviews, items = [], []
  for r, a in enumerate(train.review_album):
    reviews.append(np.full(len(items_of[a]), r, np.int64))
    items.append(items_of[a])
  review = np.concatenate(reviews)
  item = np.concatenate(items).astype(np.int64)
  return review, item, train.track_album[item].astype(np.int32)


def _embedding_init(config: ml_collections.ConfigDict, vocab: vocabulary_lib.Vocabulary,
                    workdir: str) -> dict[str, Any]:
  """The initial word-embedding table from `config.text.word_vectors` (word2vec binary or text,
  GloVe text, or our .npz, read by `musemb.text.readers.load_word_vectors`), saved as
  `<workdir>/embedding_init.npz` for `init`; the info keys that point `init` at it."""
  from musemb.text import readers  # pylint: disable=g-import-not-at-top
  path = config.text.word_vectors
  vectors = readers.load_word_vectors(path)
  made = vocabulary_lib.vectors_for_vocabulary(vocab, vectors, seed=int(config.seed))
  if made.num_found == 0:
    raise ValueError(f"config.text.word_vectors={path!r}: none of the {len(vocab)} vocabulary "
                     "words has a vector (our tokens are lowercase); is it the right file?")
  out = os.path.abspath(os.path.join(workdir, "embedding_init.npz"))
  # Process 0 writes; the others pass the barrier only once the file is there (init reads it).
  prepared_lib.process_zero_first(
      lambda: jax.process_index() == 0 and utils.save_npz_atomic(out, {"matrix": made.matrix}),
      name="musemb.rush.embedding_init")
  return {"embed_dim": int(vectors.dim), "embedding_init": out,
          "embedding_init_found": int(made.num_found)}


def load_data(config: ml_collections.ConfigDict, workdir: str) -> ReviewData:
  """Albums, features, vocabulary, encoded splits, training pairs and their sampler."""
  os.makedirs(workdir, exist_ok=True)
  albums, dconfig, dataset = load_albums(config, workdir)
  splits_view = {s: albums.split(s) for s in ("train", "valid", "test")}
  train = splits_view["train"]
  if len(train.albums) < 2:
    raise ValueError(f"{albums.description()}: fewer than 2 training albums; lower "
                     "config.data.test_fraction / valid_fraction or use more data.")
  standardizer = features_lib.Standardizer.fit(train.features, tuple(albums.feature_names))
  kind = config.model.text
  vocab, features = None, None
  if kind == "features":
    if not config.text.features_path:
      raise ValueError("config.model.text='features' needs config.text.features_path: a file of "
                       "precomputed sentence vectors per review id (musemb.text.sentence_features)."
                       )
    features = sentence_features.load_sentence_features(config.text.features_path)
  else:
    vocab = vocabulary_lib.Vocabulary.build([r.text for r in train.reviews],
                                            size=int(config.text.vocab_size))
  embedding = {}
  if vocab is not None and config.text.get("word_vectors", ""):
    embedding = _embedding_init(config, vocab, workdir)
  max_length = int(config.text.max_length)
  splits = {s: _encode(v, standardizer, vocab, max_length, features)
            for s, v in splits_view.items() if len(v.albums)}
  if jax.process_index() == 0:
    standardizer.save(os.path.join(workdir, "standardizer.json"))
    if vocab is not None:
      vocab.save(os.path.join(workdir, "vocabulary.json"))

  review, item, album = training_pairs(train)
  batch_size = int(config.train.batch_size)
  sampler = None
  if config.sampling.neighbourhood:
    sampler = neighbourhood.NeighbourhoodSampler(album, batch_size, seed=int(config.seed),
                                                 group_size=int(config.sampling.group_size))
  tr = splits["train"]
  text, _ = tr.text_inputs()
  table_gb = (tr.audio.nbytes + text.nbytes + tr.text_lengths.nbytes) / 1e9
  resident = table_gb <= float(config.data.max_table_gb)
  tables: dict[str, np.ndarray] = {}
  if resident:
    tables = {"audio": tr.audio, "text": text}
    if kind != "features":
      tables["text_lengths"] = tr.text_lengths
  else:
    logging.info("Training tables take %.2f GB > config.data.max_table_gb: batches carry rows.",
                 table_gb)
  info = {"audio_dim": int(albums.features.shape[1]),
          "vocab_size": len(vocab) if vocab is not None else 0,
          "text_dim": int(features.dim) if features is not None else 0,
          "max_length": max_length, "num_train_examples": int(len(album)),
          "text_features": ("" if features is None else
                            f"{features.path}: {features.description or 'no description'}"),
          "dataset": dataset, "descriptor_config": dconfig.to_dict(),
          "feature_names": list(albums.feature_names), "source": albums.source,
          "split_rule": albums.split_rule,
          "split_sizes": {k: list(v) for k, v in albums.split_sizes().items()},
          "skipped": albums.skipped.total, **embedding}
  logging.info("Rush data: %s %d training pairs%s.", albums.description(), len(album),
               f", neighbourhood sampling ({sampler.num_batches} batches an epoch)"
               if sampler else ", random pairs")
  return ReviewData(info=info, splits=splits, tables=tables, vocab=vocab,
                    standardizer=standardizer, descriptor_config=dconfig, pair_review=review,
                    pair_item=item, pair_album=album, batch_size=batch_size,
                    seed=int(config.seed), sampler=sampler, resident=resident)
