"""Won et al.'s data adapter (ICASSP 2021): tags, word vectors, audio, factors, anchors.

`load_data(config, workdir)` returns a `TagData` for the shared training loop
(`musemb.systems.won`):

* **Songs and tags**: the prepared dataset (`config.data_dir`, or the built-in synthetic world
  prepared at `config.data.sample_rate` = 22,050 Hz under `<workdir>/data`), its splits
  (`pipeline.read_split`) and multi-hot tags.
* **Word vectors** for the tag vocabulary (`musemb.text.tags.tag_matrix`): from a file
  (`config.words.source = "file"`, `config.words.path`: word2vec binary/text, GloVe or our .npz),
  or word2vec trained with gensim (phrases included) on the dataset's own review corpus
  (`Prepared.tables().reviews`) when `config.words.source = "domain"` -- the paper's section 4.3,
  with the dataset's reviews standing in for the SemEval music corpus. Trained vectors are cached
  in `<workdir>/words_domain-<hash>.npz`, keyed by the dataset and the training options;
  `train_word2vec` with one worker and the seed makes them deterministic. OOV tags get the
  `config.words.oov` policy (seeded random directions by default) and are counted.
* **Zero-shot tags** (`config.zero_shot.tags`): removed from the training annotations entirely
  (their columns are cleared before the sampler's index is built), so they are never an anchor and
  never decide a negative; at test time they are queried through their word vectors only. On the
  built-in world the default is the rarer word of each of its synonym pairs (`synthetic.SYNONYMS`:
  "classic", "rap", "electro", "guitars", "violin", "vocals", "female", "male", "soft") that is a
  tag of the prepared dataset: its partner was trained, so a useful word space maps the held-out
  word near it.
* **WMF item factors** (`config.data.factors`, a `launch.wmf` workdir) joined by track id for the
  cultural, hybrid and late-fusion branches. Songs without factors are counted per split
  (`info["coverage"]`); they are left out of the cultural and hybrid branches' training triplets
  and evaluation, and the late-fusion branch trains and scores them by audio alone.
* **Training audio on the device**: for the branches that hear audio the training split's int16
  samples are read once and kept in `tables["audio"]` ([songs, longest clip], zero padded, with
  `tables["lengths"]`), so the step crops its random chunks on the device (`jax.lax.dynamic_slice`)
  and the rest of the step -- crops, in-batch negatives, the loss -- is one jitted function.
* **Batches** (`train_batch(step)`): the step's B (anchor tag, positive song) pairs drawn on the
  host by `config.sampling.anchors` (`triplet_sampler.sample_anchors_host`) from
  `np.random.default_rng([seed, step])`, a pure function of the step (exact resume); each process
  keeps its share of the global batch, which the loop shards over the mesh's `data` axis.
  The limit is memory: 2 bytes per sample, e.g. the demo world's train split is about 0.1 GB, the
  MSD100's 80k training songs at 30 s about 106 GB. Above `config.data.max_audio_gb` loading stops
  with the estimate and the options (shorter clips with `launch.prepare --max_seconds`, a bigger
  device, or raising the limit). A streaming variant would read the host-drawn pairs' audio with
  tf.data over the TFRecords (random crops as `pipeline.audio_batches`) and ship the crops in the
  batch; the in-batch negative sampling on the device needs nothing but the batch.

Evaluation splits are streamed from the TFRecords (`split_audio`), not kept in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from musemb.text import readers as text_readers
from musemb.text import tags as text_tags
from musemb.text import tokenize as text_tokenize
from musemb.text import vectors as text_vectors
from musemb.text import word2vec as text_word2vec
from musemb.data import pipeline
from musemb.data import prepared as prepared_lib
from musemb.samplers import triplet as triplet_sampler

# The seven categories of the MSD500 taxonomy (section 3).
CATEGORIES = ("genre", "mood", "location", "language", "instrument", "activity", "decade")
AUDIO_BRANCHES = ("acoustic", "hybrid", "late_fusion")
FACTOR_BRANCHES = ("cultural", "hybrid", "late_fusion")
# Seed stream of the host-drawn anchors (apart from the model's init and step keys).
_ANCHOR_STREAM = 0x616E63

# The built-in world's tag vocabulary (`synthetic.TAG_VOCABULARY`) in the seven categories. The
# world has no location, language or decade tags; "dance" is read as an activity (dancing), and
# tempo, loudness, register and texture words are mood descriptors.
_BUILTIN_GROUPS = {
    "genre": ("ambient", "techno", "rock", "folk", "jazz", "classical", "classic", "hip hop", "rap",
              "metal", "pop", "blues", "electronic", "electro", "acoustic"),
    "mood": ("happy", "sad", "atmospheric", "heavy", "fast", "slow", "loud", "quiet", "soft", "low",
             "high"),
    "instrument": ("piano", "guitar", "guitars", "synth", "flute", "strings", "violin", "organ",
                   "bells", "sax", "bass", "vocal", "vocals", "female vocal", "female",
                   "male vocal", "male", "no vocals", "drums", "no drums"),
    "activity": ("dance",),
}
BUILTIN_TAXONOMY: dict[str, str] = {t: cat for cat, tags in _BUILTIN_GROUPS.items() for t in tags}


def builtin_taxonomy() -> dict[str, str]:
  """Tag -> category for the built-in world's vocabulary (every word of TAG_VOCABULARY)."""
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  missing = [t for t in synthetic.TAG_VOCABULARY if t not in BUILTIN_TAXONOMY]
  if missing:
    raise ValueError(f"musemb/systems/won/data.py: the built-in taxonomy lacks tags {missing} of the "
                     "synthetic world; add them to _BUILTIN_GROUPS.")
  return dict(BUILTIN_TAXONOMY)


def load_taxonomy(path: str) -> dict[str, str]:
  """A taxonomy file: JSON `{tag: category}` or TSV lines `tag<TAB>category` (# comments)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.eval.taxonomy={path!r} does not exist; pass a JSON "
                            "{tag: category} or TSV tag<TAB>category file, or '' for the built-in "
                            "world's taxonomy.")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.lower().endswith(".json"):
    raw = json.loads(text)
    if not isinstance(raw, dict):
      raise ValueError(f"{path}: expected a JSON object {{tag: category}}.")
    pairs = list(raw.items())
  else:
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.split("\t")
      if len(parts) != 2:
        raise ValueError(f"{path}:{n}: expected 'tag<TAB>category', got {line!r}.")
      pairs.append((parts[0].strip(), parts[1].strip()))
  out = {}
  for tag, cat in pairs:
    cat = str(cat).strip().lower()
    if cat not in CATEGORIES:
      raise ValueError(f"{path}: tag {tag!r} has category {cat!r}; expected one of {CATEGORIES}.")
    out[str(tag)] = cat
  return out


def default_zero_shot(tag_names: list[str], source: str) -> list[str]:
  """The built-in world's default zero-shot tags: the rarer word of each synonym pair."""
  if source != "synthetic":
    return []
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  present = set(tag_names)
  return [rare for common, rare in synthetic.SYNONYMS if rare in present and common in present]


def zero_shot_tags(config: ml_collections.ConfigDict, tag_names: list[str], source: str
                   ) -> list[str]:
  spec = str(config.zero_shot.tags or "").strip()
  if spec == "default":
    return default_zero_shot(tag_names, source)
  tags = [t.strip() for t in spec.split(",") if t.strip()]
  unknown = [t for t in tags if t not in tag_names]
  if unknown:
    raise ValueError(f"config.zero_shot.tags names {unknown}, which are not tags of the dataset "
                     f"(tags: {tag_names[:20]}{' ...' if len(tag_names) > 20 else ''}).")
  if len(tags) >= len(tag_names):
    raise ValueError("config.zero_shot.tags holds every tag; leave some to train on.")
  return tags


# ----------------------------------------------------------------------------- word vectors


def _domain_cache_path(config: ml_collections.ConfigDict, prepared: prepared_lib.Prepared,
                       workdir: str) -> str:
  w = config.words
  key = json.dumps({"dataset": prepared.full_name, "dir": prepared.dataset_dir,
                    "dim": int(w.dim), "window": int(w.window), "min_count": int(w.min_count),
                    "epochs": int(w.epochs), "phrase_min_count": int(w.phrase_min_count),
                    "seed": int(config.seed)}, sort_keys=True)
  digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
  return os.path.join(workdir, f"words_domain-{digest}.npz")


def load_words(config: ml_collections.ConfigDict, prepared: prepared_lib.Prepared,
               workdir: str) -> text_vectors.WordVectors:
  """The word vectors `config.words` names (see the module docstring)."""
  w = config.words
  if w.source == "file":
    if not w.path:
      raise ValueError("config.words.source='file' needs config.words.path (a word2vec .bin/.txt, "
                       "GloVe .txt or .npz file); or use words=domain to train on the reviews.")
    return text_readers.load_word_vectors(w.path)
  if w.source != "domain":
    raise ValueError(f"config.words.source={w.source!r}; expected 'domain' or 'file'.")
  path = _domain_cache_path(config, prepared, workdir)
  if os.path.exists(path):
    logging.info("Loading cached domain word vectors %s.", path)
    return text_vectors.load_npz(path)
  reviews = prepared.tables().reviews
  if not reviews:
    raise ValueError(f"{prepared.dataset_dir} has no reviews to train domain word vectors on; "
                     "pass a word-vector file with words=<path> (config.words.source='file').")
  corpus = text_tokenize.corpus_from_reviews(reviews)
  wv = text_word2vec.train_word2vec(
      corpus, dim=int(w.dim), window=int(w.window), min_count=int(w.min_count),
      epochs=int(w.epochs), phrase_min_count=int(w.phrase_min_count), seed=int(config.seed),
      workers=1)
  if jax.process_index() == 0:
    wv.save(path)
  return wv


# ----------------------------------------------------------------------------- audio


def split_audio(prepared: prepared_lib.Prepared, split: str
                ) -> Iterator[tuple[str, str, np.ndarray]]:
  """(track id, title, int16 samples) of every track of `split`, in the split's order."""
  ds = prepared.builder.as_dataset(split=split, shuffle_files=False,
                                   read_config=tfds.ReadConfig(interleave_cycle_length=1),
                                   decoders=tfds.decode.PartialDecoding(
                                       {"track_id": True, "title": True, "audio": True}))
  for ex in ds.as_numpy_iterator():
    yield (ex["track_id"].decode("utf-8"), ex["title"].decode("utf-8"),
           np.asarray(ex["audio"], np.int16))


def estimate_audio_gb(prepared: prepared_lib.Prepared, split: str) -> float:
  """The split's audio size in GB, from its TFRecord bytes (raw int16: 2 bytes a sample)."""
  info = prepared.builder.info.splits[split]
  return float(info.num_bytes) / 1e9


def _load_train_audio(prepared: prepared_lib.Prepared, track_ids: np.ndarray, crop: int,
                      max_gb: float) -> tuple[np.ndarray, np.ndarray]:
  estimate = estimate_audio_gb(prepared, "train")
  if estimate > max_gb:
    raise ValueError(
        f"the train split's audio is about {estimate:.1f} GB ({prepared.dataset_dir}), above "
        f"config.data.max_audio_gb={max_gb:g}: the won system keeps the training audio on the "
        "device. Prepare shorter clips (launch.prepare --max_seconds=...), use a device with more "
        "memory and raise --config.data.max_audio_gb, or train a cultural branch.")
  clips, ids = [], []
  for track_id, _, audio in split_audio(prepared, "train"):
    ids.append(track_id)
    clips.append(audio)
  if ids != list(track_ids):
    raise ValueError(f"{prepared.dataset_dir}: the train split's audio is out of order with its "
                     "labels; prepare the dataset again.")
  lengths = np.array([len(c) for c in clips], np.int32)
  width = max(int(lengths.max()), crop)
  padded_gb = len(clips) * width * 2 / 1e9
  if padded_gb > max_gb:
    raise ValueError(
        f"the train split's audio padded to its longest clip ({width} samples) takes "
        f"{padded_gb:.1f} GB, above config.data.max_audio_gb={max_gb:g}; prepare clips of one "
        "length (launch.prepare --max_seconds=...) or raise the limit.")
  audio = np.zeros((len(clips), width), np.int16)
  for i, c in enumerate(clips):
    audio[i, :len(c)] = c
  logging.info("Training audio on the device: %d clips x %d samples (%.2f GB int16).",
               len(clips), width, audio.nbytes / 1e9)
  return audio, lengths


# ----------------------------------------------------------------------------- the data object


@dataclasses.dataclass
class SplitTags:
  """One split's songs: ids, multi-hot tags and the factor join."""

  track_ids: np.ndarray          # [n] str
  artists: list[np.ndarray]      # n arrays of artist ids
  tags: np.ndarray               # [n, T] bool (all tags, zero-shot ones included)
  factor_rows: np.ndarray        # [n] row of the factors, -1 without

  @property
  def has_factors(self) -> np.ndarray:
    return self.factor_rows >= 0

  def __len__(self) -> int:
    return len(self.track_ids)


@dataclasses.dataclass
class TagData:
  """What `musemb.systems.won` and the loop need (see the module docstring)."""

  info: dict[str, Any]
  splits: dict[str, SplitTags]
  tables: dict[str, Any]
  prepared: prepared_lib.Prepared
  words: text_vectors.WordVectors
  tag_vectors: np.ndarray        # [T, word dim]
  tag_report: text_tags.TagReport
  seen: np.ndarray               # [T] bool; False for zero-shot tags
  factors: pipeline.TrackTargets | None
  taxonomy: dict[str, str]
  batch_size: int                # global
  anchors: str                   # config.sampling.anchors
  seed: int
  annotations: triplet_sampler.Annotations   # host copy of tables["annotations"]

  @property
  def tag_names(self) -> list[str]:
    return list(self.info["tag_names"])

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """{"anchor", "positive": [B / processes] int32}: this process's rows of the step's pairs."""
    rng = np.random.default_rng([self.seed, _ANCHOR_STREAM, step])
    anchor, positive = triplet_sampler.sample_anchors_host(rng, self.anchors, self.annotations,
                                                           self.batch_size)
    share = self.batch_size // jax.process_count()
    rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
    return {"anchor": anchor[rows], "positive": positive[rows]}

  def song_factors(self, split: str) -> np.ndarray:
    """[n, f] factors of the split's songs (zeros where missing)."""
    s = self.splits[split]
    if self.factors is None:
      return np.zeros((len(s), 0), np.float32)
    out = self.factors.values[np.maximum(s.factor_rows, 0)].astype(np.float32)
    out[~s.has_factors] = 0.0
    return out


def _factor_rows(track_ids: np.ndarray, factors: pipeline.TrackTargets | None) -> np.ndarray:
  if factors is None:
    return np.full(len(track_ids), -1, np.int64)
  index = {t: i for i, t in enumerate(factors.ids.tolist())}
  return np.array([index.get(t, -1) for t in track_ids.tolist()], np.int64)


def load_data(config: ml_collections.ConfigDict, workdir: str) -> TagData:
  """Prepared dataset, word vectors, zero-shot split of the tags, factors and training tables."""
  branch = config.model.branch
  if branch not in AUDIO_BRANCHES + ("cultural",):
    raise ValueError(f"config.model.branch={branch!r}; expected one of "
                     f"{('cultural',) + AUDIO_BRANCHES}.")
  dataset_dir = prepared_lib.resolve_dataset(config, workdir)
  prepared = prepared_lib.load_prepared(dataset_dir)
  if branch in AUDIO_BRANCHES and prepared.sample_rate != config.data.sample_rate:
    raise ValueError(f"{dataset_dir} holds {prepared.sample_rate} Hz audio but the acoustic branch "
                     f"expects config.data.sample_rate={config.data.sample_rate}; prepare it at "
                     f"{config.data.sample_rate} Hz (launch.prepare --sample_rate=22050).")
  tag_names = list(prepared.tag_names)
  factors = None
  if config.data.factors:
    factors = pipeline.load_factor_targets(config.data.factors)
  elif branch in FACTOR_BRANCHES:
    raise ValueError(f"config.model.branch={branch!r} needs WMF item factors: fit them with "
                     "`python -m launch.wmf --config=configs/wmf.py:demo --workdir=W` and pass "
                     "--config.data.factors=W (or use branch=acoustic).")

  splits: dict[str, SplitTags] = {}
  coverage = {}
  for split in prepared.split_sizes:
    labels = pipeline.read_split(prepared.builder, split)
    s = SplitTags(track_ids=np.asarray(labels.track_ids, str), artists=labels.artists,
                  tags=labels.tags.astype(bool), factor_rows=_factor_rows(
                      np.asarray(labels.track_ids, str), factors))
    splits[split] = s
    coverage[split] = {"tracks": len(s), "with_factors": int(s.has_factors.sum())}
    if factors is not None and coverage[split]["with_factors"] < len(s):
      logging.warning("%s: %d of %d tracks have no WMF factors; %s.", split,
                      len(s) - coverage[split]["with_factors"], len(s),
                      "late fusion scores them by audio alone" if branch == "late_fusion" else
                      "they are left out of the cultural/hybrid branch's training and evaluation")
  if "train" not in splits:
    raise ValueError(f"{dataset_dir} has no train split (splits: {sorted(splits)}).")

  zero_shot = zero_shot_tags(config, tag_names, prepared.source)
  seen = np.array([t not in zero_shot for t in tag_names], bool)
  logging.info("Zero-shot tags (removed from training): %s", zero_shot or "none")

  words = load_words(config, prepared, workdir)
  tag_vectors, report = text_tags.tag_matrix(words, tag_names, oov=config.words.oov,
                                           seed=int(config.seed))

  train = splits["train"]
  train_tags = train.tags & seen[None, :]
  trainable = np.ones(len(train), bool)
  if branch in ("cultural", "hybrid"):
    trainable = train.has_factors
  train_tags = train_tags & trainable[:, None]
  songs_with_tags = int(train_tags.any(axis=1).sum())
  if songs_with_tags < 2:
    raise ValueError(f"only {songs_with_tags} training songs carry a (non-zero-shot) tag"
                     f"{' and have factors' if branch in ('cultural', 'hybrid') else ''}; "
                     "check config.data.factors (fitted on this dataset's listeners?) and "
                     "config.zero_shot.tags.")
  annotations = triplet_sampler.annotations_from_multihot(train_tags)

  tables: dict[str, Any] = {
      "annotations": annotations,
      "tag_vectors": tag_vectors.astype(np.float32),
  }
  num_factors = 0
  if factors is not None:
    num_factors = int(factors.values.shape[1])
    tables["has_factors"] = train.has_factors
    f = factors.values[np.maximum(train.factor_rows, 0)].astype(np.float32)
    f[~train.has_factors] = 0.0
    tables["factors"] = f
  if branch in AUDIO_BRANCHES:
    audio, lengths = _load_train_audio(prepared, train.track_ids, int(config.data.crop_samples),
                                       float(config.data.max_audio_gb))
    tables["audio"] = audio
    tables["lengths"] = lengths

  taxonomy = (load_taxonomy(config.eval.taxonomy) if config.eval.taxonomy
              else builtin_taxonomy() if prepared.source == "synthetic" else {})
  info = {"num_tags": len(tag_names), "tag_names": tag_names, "word_dim": int(words.dim),
          "num_factors": num_factors, "sample_rate": prepared.sample_rate,
          "coverage": coverage, "dataset": prepared.full_name, "dataset_dir": dataset_dir,
          "zero_shot_tags": zero_shot, "num_train_annotations": annotations.num_annotations,
          "oov_tags": list(report.oov_tags), "artist_names": list(prepared.artist_names),
          "num_train_examples": annotations.num_annotations}
  logging.info("Data %s: %s songs per split, %d tags (%d zero-shot), %d training annotations, "
               "word vectors %s; %s.", dataset_dir, {k: len(v) for k, v in splits.items()},
               len(tag_names), len(zero_shot), annotations.num_annotations, words,
               report.summary())
  return TagData(info=info, splits=splits, tables=tables,
                 prepared=prepared, words=words, tag_vectors=tag_vectors, tag_report=report,
                 seen=seen, factors=factors, taxonomy=taxonomy,
                 batch_size=int(config.train.batch_size), anchors=config.sampling.anchors,
                 seed=int(config.seed), annotations=annotations)
