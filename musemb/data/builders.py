"""TFDS builders that turn a musemb source into a prepared dataset.

Every source (`musemb.data.sources.*`) becomes a `tfds.core.GeneratorBasedBuilder`, so a prepared
dataset is a plain TFDS dataset: TFRecord shards per split plus `dataset_info.json` (feature spec,
split sizes, ClassLabel vocabularies), readable with `tfds.builder_from_directory(dataset_dir)` and,
where this module is imported, with `tfds.builder("musemb_synthetic/demo-16k", data_dir=...)`.
musemb adds what TFDS has no slot for as the dataset's `MetadataDict` (`metadata.json`): the source,
sample rate, tag and artist vocabularies, artist similarity, and every input left out and why.
Playlists, plays and reviews go beside the shards as JSON lines (`tables/*.jsonl`), written inside
the same atomic build: TFDS generates into `incomplete.XXXXXX_<version>/` and renames it at the end,
so a build that fails leaves nothing that loads.

Layout on disk: `<data_dir>/musemb_<source>/<config>/1.0.0/`. The config name says what changes the
content: the source options and the audio settings, e.g. `demo-16k` (synthetic world "demo" at
16 kHz), `top50-16k` (MagnaTagATune, top-50 tags), `demo-16k-max30s` (clips cropped to 30 s).

Each example:

  track_id: Text
  audio:    Audio(shape=(None,), int16, mono, stored as raw bytes) at the config's sample rate,
            decoded with soundfile and resampled with soxr (`musemb.audio`), optionally cropped
            to `max_seconds`
  artists:  Sequence(ClassLabel(names=source.artist_names))
  tags:     Tensor([n_tags], bool): multi-hot in `source.tag_names` order
  title, album: Text ("" when unknown)

Giving a builder its source: `prepare(source, data_dir)` is the usual way (it picks the builder
class from `source.name`). Building by hand, pass the source object, or for data on disk the
directory, to the constructor:

  MusembSynthetic(config="tiny-16k", data_dir=d).download_and_prepare()    # world made from config
  MusembMtat(source=MagnaTagATune(raw_dir), data_dir=d).download_and_prepare()
  MusembFolder(source_dir=raw_dir, data_dir=d).download_and_prepare()
  MusembMtat(data_dir=d).download_and_prepare()   # TFDS's manual dir: <data_dir>/downloads/manual

A prepared dataset loads without any source. The source is iterated once per build: tracks on
disk are listed and decoded split by split on a few threads; in-memory audio (the synthetic world,
where producing a track is the costly part) is converted as it comes and parked in a spill file
until its split is written.

`metadata.json` keys: `musemb_format`, `source`, `description` (the source's own account, with its
directory), `sample_rate`, `options` (what the config name encodes, compared when `prepare` reuses
a dataset), `tag_names`, `artist_names`, `artist_similarity`, `source_skipped` (metadata rows the
importer left out: `SkipCounter.as_dict()`), `audio_skipped` ({split: SkipCounter dict}), `tables`
(row counts of the side tables) and `tags_outside_vocabulary` ({split: tags dropped because the
source's vocabulary does not hold them, e.g. below MagnaTagATune's top 50}); the MSD builder adds
`coverage` and, with AotM-2011 playlists, `playlists` (their counts and skips; see `MusembMsd`).

With `prepare(..., beam_runner=...)` (`launch.prepare --beam_runner`) the splits are generated as
an Apache Beam pipeline (the optional `beam` extra): the DirectRunner runs it in local worker
processes, a cluster runner (Dataflow, Flink, Spark) on its machines, with `data_dir` on storage
the workers share. Tracks on disk are decoded in the workers, and the synthetic world is rendered
there track by track; the records, skips and metadata are the plain path's (see the notes above
`_merge_reports` for how skips are counted across workers).

Audio that cannot be used (unreadable, empty, shorter than `min_seconds`, non-finite) is skipped,
logged and counted per split with its reason; a split whose skipped fraction exceeds
`max_bad_fraction` stops the build with a message naming the counts, example files and the flag.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Iterator

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from musemb import audio as audio_lib
from musemb import workdir as workdir_lib
from musemb.data import prepared as prepared_lib
from musemb.data.sources import records

VERSION = "1.0.0"
RELEASE_NOTES = {
    "1.0.0": "First release: int16 mono audio, artists (ClassLabel), multi-hot tags, title and "
             "album; vocabularies, artist similarity and skipped inputs in metadata.json; "
             "playlists, plays and reviews in tables/*.jsonl.",
}
TABLES_DIR = prepared_lib.TABLES_DIR
TABLE_FILES = prepared_lib.TABLE_FILES
METADATA_FORMAT = prepared_lib.METADATA_FORMAT


class TooManySkippedError(RuntimeError):
  """A split lost more tracks to bad audio than `max_bad_fraction` allows."""


# ------------------------------------------------------------------------------------------------
# Configs.


def _rate_tag(sample_rate: int) -> str:
  return f"{sample_rate // 1000}k" if sample_rate % 1000 == 0 else f"{sample_rate}hz"


def _seconds_tag(seconds: float) -> str:
  return f"{seconds:g}".replace(".", "p")


@dataclasses.dataclass(eq=False)
class MusembConfig(tfds.core.BuilderConfig):
  """Audio settings shared by every source; each builder adds its source's options.

  Attributes:
    sample_rate: rate of the stored audio (Hz).
    max_seconds: crop every clip to its first `max_seconds` (None keeps whole clips).
    min_seconds: clips shorter than this are skipped as "too_short".
  """

  sample_rate: int = 16000
  max_seconds: float | None = None
  min_seconds: float = 1.0

  def source_options(self) -> dict[str, Any]:
    return {}

  def options(self) -> dict[str, Any]:
    """Everything that decides the dataset's content, as plain JSON values."""
    return {"sample_rate": int(self.sample_rate),
            "max_seconds": None if self.max_seconds is None else float(self.max_seconds),
            "min_seconds": float(self.min_seconds),
            **self.source_options()}

  def audio_suffix(self) -> str:
    suffix = _rate_tag(self.sample_rate)
    if self.max_seconds is not None:
      suffix += f"-max{_seconds_tag(self.max_seconds)}s"
    if self.min_seconds != 1.0:
      suffix += f"-min{_seconds_tag(self.min_seconds)}s"
    return suffix


@dataclasses.dataclass(eq=False)
class SyntheticConfig(MusembConfig):
  """The built-in world: `SyntheticWorld`'s `size` ("tiny", "demo", ...), `seed`, `clip_seconds`.

  `clip_seconds=None` keeps the size's own clip length.
  """

  size: str = "demo"
  seed: int = 0
  clip_seconds: float | None = None

  def source_options(self) -> dict[str, Any]:
    return {"size": self.size, "seed": int(self.seed),
            "clip_seconds": None if self.clip_seconds is None else float(self.clip_seconds)}

  def default_name(self) -> str:
    seed = f"-seed{self.seed}" if self.seed else ""
    clip = "" if self.clip_seconds is None else f"-clip{_seconds_tag(self.clip_seconds)}s"
    return f"{self.size}{seed}{clip}-{self.audio_suffix()}"


@dataclasses.dataclass(eq=False)
class MtatConfig(MusembConfig):
  """MagnaTagATune: keep the `top_n_tags` most frequent tags; optional split file."""

  top_n_tags: int | None = 50
  split_file: str | None = None

  def source_options(self) -> dict[str, Any]:
    return {"top_n_tags": self.top_n_tags, "split_file": self.split_file}

  def default_name(self) -> str:
    tags = "all" if self.top_n_tags is None else f"top{self.top_n_tags}"
    split = f"-split{_file_digest(self.split_file)}" if self.split_file else ""
    return f"{tags}{split}-{self.audio_suffix()}"


@dataclasses.dataclass(eq=False)
class FolderConfig(MusembConfig):
  """A folder of audio files with a metadata table (`AudioFolder`'s options).

  `metadata=None` finds metadata.csv/.jsonl in the folder; `top_n_tags=None` keeps every tag;
  `split_ratios` and `seed` split the rows that name no split.
  """

  metadata: str | None = None
  top_n_tags: int | None = None
  split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
  seed: int = 0

  def source_options(self) -> dict[str, Any]:
    # Like the folder itself, the metadata file names where the data is, not how it is prepared;
    # the source's description in metadata.json records both.
    return {"top_n_tags": self.top_n_tags,
            "split_ratios": [float(r) for r in self.split_ratios], "seed": int(self.seed)}

  def default_name(self) -> str:
    tags = "all" if self.top_n_tags is None else f"top{self.top_n_tags}"
    split = "" if (tuple(self.split_ratios) == (0.8, 0.1, 0.1) and not self.seed) else (
        "-split" + hashlib.sha256(json.dumps([list(self.split_ratios), self.seed]).encode()
                                  ).hexdigest()[:8])
    return f"{tags}{split}-{self.audio_suffix()}"


@dataclasses.dataclass(eq=False)
class MsdConfig(MusembConfig):
  """Million Song Dataset previews with Last.fm tags (`MillionSongDataset`'s options).

  Defaults follow the thesis (`004_*` paper, section 6.1): 16 kHz, the first 20 s of each preview,
  the top 50 Last.fm tags with score > 50. `split_file=None` splits by artist with `split_ratios`
  and `seed`. `path_pattern` says where the previews are, not what the dataset holds, so (like
  FolderConfig's metadata) it is not among the options. `playlists` (AotM-2011's
  aotm2011_playlists.json[.gz]) and `playlist_sequence` attach playlists
  (`musemb.data.sources.aotm2011`); they join the options, and the name (`-aotm<digest of the
  file>-<sequence>`), only when playlists are given, so datasets prepared without them keep their
  options and names.
  """

  max_seconds: float | None = 20.0
  top_n_tags: int | None = 50
  min_tag_score: float = 50.0
  tagged_only: bool = False
  split_file: str | None = None
  split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
  seed: int = 0
  path_pattern: str = "{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.mp3"
  playlists: str | None = None
  playlist_sequence: str = "filtered"

  def source_options(self) -> dict[str, Any]:
    options = {"top_n_tags": self.top_n_tags, "min_tag_score": float(self.min_tag_score),
               "tagged_only": bool(self.tagged_only), "split_file": self.split_file,
               "split_ratios": [float(r) for r in self.split_ratios], "seed": int(self.seed)}
    if self.playlists:
      options.update(playlists=self.playlists, playlist_sequence=self.playlist_sequence)
    return options

  def default_name(self) -> str:
    from musemb.data.sources import msd  # pylint: disable=g-import-not-at-top
    tags = "all" if self.top_n_tags is None else f"top{self.top_n_tags}"
    score = "" if self.min_tag_score == 50.0 else f"-score{_seconds_tag(self.min_tag_score)}"
    tagged = "-tagged" if self.tagged_only else ""
    if self.split_file:
      split = f"-split{msd.split_file_digest(self.split_file)}"
    elif tuple(self.split_ratios) == (0.8, 0.1, 0.1) and not self.seed:
      split = ""
    else:
      split = "-artistsplit" + hashlib.sha256(
          json.dumps([list(self.split_ratios), self.seed]).encode()).hexdigest()[:8]
    playlists = ""
    if self.playlists:
      from musemb.data.sources import aotm2011  # pylint: disable=g-import-not-at-top
      playlists = f"-aotm{aotm2011.file_digest(self.playlists)}-{self.playlist_sequence}"
    return f"{tags}{score}{tagged}{split}{playlists}-{self.audio_suffix()}"


def _file_digest(path: str) -> str:
  """8 hex digits of a file's content, so a changed split file names a new config."""
  try:
    return hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()[:8]
  except OSError as e:
    raise FileNotFoundError(f"Split file {path!r} cannot be read ({e}); pass an existing file "
                            "or no --split_file.") from e


# ------------------------------------------------------------------------------------------------
# Decoding, with skips.


def _check_array(track: records.Track, config: MusembConfig) -> np.ndarray:
  """In-memory audio (generated worlds) through the same checks, in the same order, as files."""
  where = f"<in-memory audio of track {track.id}>"
  x = np.asarray(track.audio, dtype=np.float32)
  if x.ndim not in (1, 2):
    raise audio_lib.AudioError(where, "unreadable", f"Track {track.id!r}: audio must be "
                               f"[samples] or [samples, channels], got shape {x.shape}.")
  if x.shape[0] == 0:
    raise audio_lib.AudioError(where, "empty", f"Track {track.id!r}: audio has no samples.")
  if not np.isfinite(x).all():
    raise audio_lib.AudioError(where, "nonfinite",
                               f"Track {track.id!r}: audio holds NaN or infinite samples.")
  x = audio_lib.resample(audio_lib.to_mono(x), track.sample_rate, config.sample_rate)
  if config.max_seconds is not None:
    x = x[:int(round(config.max_seconds * config.sample_rate))]
  if x.shape[0] < int(round(config.min_seconds * config.sample_rate)):
    raise audio_lib.AudioError(where, "too_short", f"Track {track.id!r}: audio lasts "
                               f"{x.shape[0] / config.sample_rate:.3f} s, shorter than "
                               f"min_seconds={config.min_seconds}.")
  return np.clip(x, -1.0, 1.0)


def decode_track(track: records.Track | _Pending, config: MusembConfig) -> np.ndarray:
  """Returns the track's audio as int16 [samples], mono at `config.sample_rate`.

  Raises:
    musemb.audio.AudioError: the audio is unreadable, empty, too short or non-finite.
  """
  if track.audio_path is not None:
    x = audio_lib.load_audio(track.audio_path, config.sample_rate, mono=True,
                             min_seconds=config.min_seconds, max_seconds=config.max_seconds)
  else:
    x = _check_array(track, config)
  return audio_lib.to_int16(x)


def _encode_audio(feature: tfds.features.Audio, samples: np.ndarray) -> np.ndarray:
  """The stored form of int16 samples under `Encoding.BYTES`.

  TFDS 4.9's `Audio.encode_example` returns numpy input unchanged, skipping the byte encoding its
  own `Tensor` base applies (the serializer then rejects the array), so the base's encoding is
  called here; the 0-d object array passes through `Audio.encode_example` as is.
  """
  return np.array(tfds.features.Tensor.encode_example(feature, samples), dtype=object)


def _map_ordered(fn: Callable[[Any], Any], items: Iterable[Any], num_workers: int
                 ) -> Iterator[tuple[Any, Any]]:
  """Yields (item, fn(item)) in input order, running up to `num_workers` calls at once.

  Decoding and resampling release the GIL, so threads overlap them; the window of pending calls is
  bounded so that memory stays flat on long sources.
  """
  if num_workers <= 1:
    for item in items:
      yield item, fn(item)
    return
  window = 4 * num_workers
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending: collections.deque = collections.deque()
    for item in items:
      pending.append((item, pool.submit(fn, item)))
      if len(pending) >= window:
        head, future = pending.popleft()
        yield head, future.result()
    while pending:
      head, future = pending.popleft()
      yield head, future.result()


def _too_many_skipped_message(split: str, skipped: records.SkipCounter, total: int,
                              max_bad_fraction: float) -> str:
  reasons = ", ".join(f"{r}={n}" for r, n in sorted(skipped.counts.items()))
  examples = "; ".join(f"{r}: {', '.join(v)}" for r, v in sorted(skipped.examples.items()))
  return (f"Split {split!r}: {skipped.total} of {total} tracks "
          f"({skipped.total / max(total, 1):.1%}) have unusable audio ({reasons}), more than "
          f"--max_bad_fraction={max_bad_fraction:g} allows. Examples: {examples}. Fix or remove "
          "those files, or pass a larger --max_bad_fraction (prepare(max_bad_fraction=...)) to "
          "accept the skips. Nothing was written: the build is atomic.")


@dataclasses.dataclass
class _ExampleMaker:
  """Turns a decoded track into its TFDS example; the same code on the plain and Beam paths.

  Picklable (plain fields and the TFDS audio feature), so Beam ships it to its workers.
  """

  source_name: str
  tag_names: list[str]
  artist_names: list[str]
  audio_feature: tfds.features.Audio

  def __post_init__(self):
    self._tag_index = {t: i for i, t in enumerate(self.tag_names)}
    self._artist_set = set(self.artist_names)

  def __call__(self, item: _Pending, samples: np.ndarray) -> tuple[dict[str, Any], int]:
    """Returns (example, number of the track's tags outside the vocabulary)."""
    unknown = [a for a in item.artists if a not in self._artist_set]
    if unknown:
      raise ValueError(f"Track {item.id!r} names artists {unknown} that are not in source "
                       f"{self.source_name!r}'s artist_names; the source must list every artist "
                       "it uses.")
    tags = np.zeros(len(self.tag_names), dtype=np.bool_)
    outside_vocab = 0
    for tag in item.tags:
      i = self._tag_index.get(tag)
      if i is None:
        outside_vocab += 1  # e.g. tags outside MTAT's top 50: the source chose the vocabulary
      else:
        tags[i] = True
    return {
        "track_id": item.id,
        "audio": _encode_audio(self.audio_feature, samples),
        "artists": item.artists,
        "tags": tags,
        "title": item.title,
        "album": item.album,
    }, outside_vocab


def _log_skip(item: _Pending, where: str, error: audio_lib.AudioError) -> None:
  logging.warning("Skipping track %s (%s): %s audio: %s", item.id, where, error.reason, error)


# ------------------------------------------------------------------------------------------------
# Apache Beam: the same generation, distributed.
#
# `prepare(..., beam_runner=...)` (launch.prepare --beam_runner) hands TFDS a runner, and each
# split is then generated as a Beam pipeline instead of a Python generator: the listing (file
# paths and metadata, or track indices for sources that render a track by index) is written to a
# file in the build folder, the workers decode or render the tracks, and TFDS's own Beam writer
# orders the examples as its plain writer does (by the hash of the same keys, salted with the
# split's name), so each split holds the same records in the same order. Where a split needs
# several shards, the Beam writer cuts them at hash-range boundaries instead of into equal counts,
# so the shard lengths differ (the small world's 1,320 training tracks: 289/361/327/343 against
# 4 x 330); read with `shuffle_files=False`, the two datasets yield the same stream.
#
# Skips cannot be counted the plain way, by mutating a SkipCounter: each worker holds its own
# copy. Instead every track that is skipped, or that carries tags outside the vocabulary, emits a
# small report on a side output (a SkipCounter of one track, with the track's position in source
# order); `_merge_reports` combines them per split (counts summed, the five earliest examples per
# reason kept, as SkipCounter keeps the first five it meets), the merged report is written beside
# the listing, and `_process_pipeline_result` turns it into the same `audio_skipped` and
# `tags_outside_vocabulary` metadata and the same `max_bad_fraction` check as the plain path.
# Side outputs are data, so a retried bundle is counted once (Beam metrics counters promise that
# only where a runner commits them), and the examples of each reason travel with the counts.
#
# One departure: a split whose every track is unusable stops the Beam build inside the pipeline
# with TFDS's own error ("The total number of generated examples is 0 for split ..."), before the
# reports are read, instead of TooManySkippedError's message; nothing is written either way.

_BEAM_WORK_DIR = ".musemb-beam"
_REPORT_TAG = "report"
_MAX_SKIP_EXAMPLES = 5  # as many as a SkipCounter keeps by default


def _renders_by_index(source: records.Source) -> bool:
  """Whether the source makes any one track on its own: `splits` (per track) and `track(i)`.

  SyntheticWorld does; on the Beam path such a source is rendered in the workers.
  """
  return (callable(getattr(source, "track", None))
          and isinstance(getattr(source, "splits", None), (list, tuple)))


def _import_beam():
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Preparing with a Beam runner needs apache-beam, an optional extra of musemb: "
        "`pip install -e '.[beam]'` (see README, \"Prepared datasets\"), or prepare without "
        f"--beam_runner. ({e})") from e
  return beam


def beam_download_config(beam_runner: str, beam_options: Iterable[str] = (),
                         num_workers: int | None = None) -> tfds.download.DownloadConfig:
  """TFDS's download config for a Beam build with `beam_runner` and pipeline flags.

  `beam_options` are Beam's command-line pipeline flags (e.g. `--project=... --region=...
  --temp_location=gs://...` for DataflowRunner); `data_dir` must then be storage that the workers
  share. For the DirectRunner, unless the flags say otherwise, the work runs in
  `num_workers` local processes (default: CPU count): `--direct_num_workers=N
  --direct_running_mode=multi_processing`.
  """
  beam = _import_beam()
  flags = [str(f) for f in beam_options]
  if beam_runner in ("DirectRunner", "direct"):
    if not any(f.startswith("--direct_num_workers") for f in flags):
      flags.append(f"--direct_num_workers={num_workers or os.cpu_count() or 1}")
    if not any(f.startswith("--direct_running_mode") for f in flags):
      flags.append("--direct_running_mode=multi_processing")
  options = beam.options.pipeline_options.PipelineOptions(flags)
  return tfds.download.DownloadConfig(beam_runner=beam_runner, beam_options=options)


def _empty_report() -> dict[str, Any]:
  return {"counts": {}, "examples": {}, "outside_vocab": 0}


def _merge_reports(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
  """Merges split reports (associative and commutative, so Beam may merge partial merges).

  A report: `counts` {reason: skips}, `examples` {reason: [[position, where], ...]} (the
  earliest in source order, at most SkipCounter's five), `outside_vocab` (tags dropped).
  """
  merged = _empty_report()
  examples: dict[str, list] = collections.defaultdict(list)
  for report in reports:
    for reason, n in report["counts"].items():
      merged["counts"][reason] = merged["counts"].get(reason, 0) + n
    for reason, items in report["examples"].items():
      examples[reason].extend(items)
    merged["outside_vocab"] += report["outside_vocab"]
  merged["examples"] = {reason: sorted(items)[:_MAX_SKIP_EXAMPLES]
                        for reason, items in examples.items()}
  return merged


def _skip_counter_from_report(report: dict[str, Any]) -> records.SkipCounter:
  """The SkipCounter the plain path would have filled: reasons in the order first met."""
  skipped = records.SkipCounter()
  first = {reason: min(position for position, _ in items)
           for reason, items in report["examples"].items()}
  for reason in sorted(report["counts"], key=lambda r: (first.get(r, float("inf")), r)):
    skipped.counts[reason] = report["counts"][reason]
    skipped.examples[reason] = [where for _, where in report["examples"].get(reason, [])]
  return skipped


def _write_report(report: dict[str, Any], path: str) -> None:
  epath.Path(path).write_text(json.dumps(report))


def _beam_generate_track(line: str, *, split: str, config: MusembConfig,
                         make_example: _ExampleMaker, source: records.Source | None):
  """One listed track in a Beam worker: (key, example), plus a report when it is skipped or
  loses tags (see the comment above)."""
  beam = _import_beam()
  row = json.loads(line)
  position = row.pop("position")
  if "index" in row:  # a source that renders a track by index (source is then given)
    track = source.track(row["index"])
    if track.split != split:
      raise ValueError(f"Track {row['index']} of source {source.name!r} is in split "
                       f"{track.split!r}, but its `splits` entry says {split!r}.")
    item = _Pending(id=track.id, artists=list(track.artists), tags=list(track.tags),
                    title=track.title or "", album=track.album or "",
                    audio_path=track.audio_path)
    target = track
  else:
    item = target = _Pending(**row)
  try:
    samples = decode_track(target, config)
  except audio_lib.AudioError as e:
    where = item.audio_path or item.id
    _log_skip(item, where, e)
    yield beam.pvalue.TaggedOutput(_REPORT_TAG, {
        "counts": {e.reason: 1}, "examples": {e.reason: [[position, where]]},
        "outside_vocab": 0})
    return
  example, outside_vocab = make_example(item, samples)
  if outside_vocab:
    yield beam.pvalue.TaggedOutput(_REPORT_TAG, {**_empty_report(), "outside_vocab": outside_vocab})
  yield item.id, example


# ------------------------------------------------------------------------------------------------
# Side tables.


def _write_jsonl(path: epath.Path, rows: Iterable[dict]) -> int:
  n = 0
  with path.open("w") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
      f.write("\n")
      n += 1
  return n


def write_tables(dataset_dir: epath.PathLike, tables: records.SourceTables) -> dict[str, int]:
  """Writes playlists, plays and reviews as `tables/*.jsonl`; returns the row counts."""
  root = epath.Path(dataset_dir) / TABLES_DIR
  root.mkdir(parents=True, exist_ok=True)
  return {
      "playlists": _write_jsonl(root / TABLE_FILES["playlists"],
                                ({"id": p.id, "track_ids": list(p.track_ids), "user": p.user}
                                 for p in tables.playlists)),
      "plays": _write_jsonl(root / TABLE_FILES["plays"],
                            ({"user": p.user, "track_id": p.track_id, "count": int(p.count)}
                             for p in tables.plays)),
      "reviews": _write_jsonl(root / TABLE_FILES["reviews"],
                              ({"id": r.id, "track_ids": list(r.track_ids), "text": r.text,
                                "album": r.album} for r in tables.reviews)),
  }



# ------------------------------------------------------------------------------------------------
# Builders.


@dataclasses.dataclass
class _Pending:
  """A track waiting for its split to be written: a path to decode, spilled samples or an error."""

  id: str
  artists: list[str]
  tags: list[str]
  title: str
  album: str
  audio_path: str | None = None
  spill: tuple[str, int, int] | None = None  # (file, byte offset, samples)
  error: audio_lib.AudioError | None = None



class _MusembBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared machinery: features, metadata, side tables, decoding with skips.

  Subclasses set `SOURCE_NAME`, `BUILDER_CONFIGS` and `_make_source(source_dir)`.
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = RELEASE_NOTES
  SOURCE_NAME = ""
  CONFIG_CLASS: type[MusembConfig] = MusembConfig
  _beam = False  # set per build by `_download_and_prepare`
  # TFDS derives this from the package through `importlib_resources`, a backport this stack does
  # not install (ModuleNotFoundError at download_and_prepare); it only locates the (absent)
  # checksums file, so name this file directly.
  code_path = epath.Path(__file__)

  def __init__(self, *, source: records.Source | None = None,
               source_dir: epath.PathLike | None = None, max_bad_fraction: float = 0.05,
               num_workers: int | None = None, **kwargs):
    """Args:
      source: the source to generate from; not needed to load a prepared dataset.
      source_dir: raw data directory to build the source from when `source` is None (default:
        TFDS's manual dir, `<data_dir>/downloads/manual`).
      max_bad_fraction: largest fraction of a split's tracks that may be skipped for bad audio.
      num_workers: threads decoding audio (default: min(8, CPU count)).
      **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`, `config`, `version`).
    """
    if source is not None and source.name != self.SOURCE_NAME:
      raise ValueError(f"{type(self).__name__} builds sources named {self.SOURCE_NAME!r}, got a "
                       f"source named {source.name!r}; use prepare(source, ...) to pick the "
                       "builder from the source.")
    if not 0.0 <= max_bad_fraction <= 1.0:
      raise ValueError(f"max_bad_fraction={max_bad_fraction} must lie in [0, 1].")
    self._source = source
    self._source_dir = None if source_dir is None else os.fspath(source_dir)
    self._max_bad_fraction = max_bad_fraction
    self._num_workers = num_workers or min(8, os.cpu_count() or 1)
    super().__init__(**kwargs)

  # -- source ------------------------------------------------------------------------------------

  def _make_source(self, source_dir: str | None) -> records.Source:
    raise NotImplementedError

  def _get_source(self) -> records.Source:
    if self._source is None:
      source_dir = self._source_dir
      if source_dir is None and self.MANUAL_DOWNLOAD_INSTRUCTIONS:
        source_dir = os.fspath(epath.Path(self.data_dir_root) / "downloads" / "manual")
      self._source = self._make_source(source_dir)
    return self._source

  # -- TFDS hooks --------------------------------------------------------------------------------

  def _info(self) -> tfds.core.DatasetInfo:
    info_path = epath.Path(self.data_dir) / "dataset_info.json"
    if self._source is None and self._source_dir is None and info_path.exists():
      # A prepared dataset carries its own features; no source needed to read it.
      proto = tfds.core.dataset_info.read_proto_from_builder_dir(self.data_dir)
      info = tfds.core.DatasetInfo.from_proto(self, proto)
      return info
    source = self._get_source()
    config = self.builder_config
    features = tfds.features.FeaturesDict({
        "track_id": tfds.features.Text(),
        # Raw bytes: 2 bytes a sample, where the default int64 varints take about 6.
        "audio": tfds.features.Audio(shape=(None,), dtype=np.int16,
                                     sample_rate=config.sample_rate,
                                     encoding=tfds.features.Encoding.BYTES),
        "artists": tfds.features.Sequence(
            tfds.features.ClassLabel(names=list(source.artist_names))),
        "tags": tfds.features.Tensor(shape=(len(source.tag_names),), dtype=np.bool_),
        "title": tfds.features.Text(),
        "album": tfds.features.Text(),
    })
    metadata = tfds.core.MetadataDict(
        musemb_format=METADATA_FORMAT,
        source=source.name,
        description=source.description(),
        sample_rate=int(config.sample_rate),
        options=config.options(),
        tag_names=list(source.tag_names),
        artist_names=list(source.artist_names),
        artist_similarity={},
        source_skipped=records.SkipCounter().as_dict(),
        audio_skipped={},
        tables={},
    )
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"musemb prepared dataset from source {source.name!r}: "
                    f"{source.description()}",
        features=features,
        metadata=metadata,
    )

  # TFDS prints "Downloading and preparing dataset ..." to stdout; nothing is downloaded here.
  def _log_download_bytes(self) -> None:
    logging.info("Building %s from the source (nothing is downloaded).", self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("Prepared %s.", self.data_dir)

  def _download_and_prepare(self, dl_manager, download_config):
    # TFDS runs the generation as a Beam pipeline when it is given a runner or options.
    self._beam = (download_config.beam_runner is not None
                  or download_config.beam_options is not None)
    self._beam_reports = {}
    if self._beam:
      try:
        super()._download_and_prepare(dl_manager, download_config)
      finally:  # the listings and reports must not land in the dataset
        work = epath.Path(self.data_dir) / _BEAM_WORK_DIR
        if work.exists():
          work.rmtree()
      return
    # In-memory audio is decoded once, in the listing pass, and parked here until its split is
    # written (see `_list_tracks`); local disk beside the data when there is one.
    root = os.fspath(self.data_dir_root)
    self._spill_dir = tempfile.mkdtemp(prefix=".musemb-spill-",
                                       dir=root if os.path.isdir(root) else None)
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      shutil.rmtree(self._spill_dir, ignore_errors=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # The source reads its own files.
    source = self._get_source()
    tables = source.tables()
    # We are inside TFDS's incomplete dir here, so the tables share the build's atomic rename.
    counts = write_tables(self.data_dir, tables)
    self.info.metadata["tables"] = counts
    self.info.metadata["artist_similarity"] = {
        str(k): [str(a) for a in v] for k, v in tables.artist_similarity.items()}
    per_split = self._beam_listing(source) if self._beam else self._list_tracks(source)
    self.info.metadata["source_skipped"] = source.skipped.as_dict()
    if not any(per_split.values()):
      raise ValueError(f"Source {source.name!r} ({source.description()}) yielded no tracks; "
                       "check its directory and metadata.")
    logging.info("Source %s: %s tracks per split.", source.name,
                 {k: len(v) for k, v in per_split.items()})
    # Audio files the metadata names but the disk lacks never reach a split, so they are held to
    # the same limit here, over the whole source: a half-copied data set must not build quietly.
    missing = source.skipped.counts.get("missing_audio_file", 0)
    listed = sum(len(v) for v in per_split.values()) + missing
    if missing > self._max_bad_fraction * listed:
      examples = source.skipped.examples.get("missing_audio_file", [])[:3]
      raise TooManySkippedError(
          f"{missing} of the {listed} audio files that {source.name!r}'s metadata lists are "
          f"missing (e.g. {examples}), more than --max_bad_fraction={self._max_bad_fraction:g} "
          "allows. Check --source_dir (and --audio_dir), finish copying the audio, or pass a "
          "larger --max_bad_fraction.")
    # TFDS refuses a split that yields nothing, so only splits with tracks are generated.
    generate = self._beam_generate if self._beam else self._generate_examples
    return {split: generate(split, pending) for split, pending in per_split.items() if pending}

  def _list_tracks(self, source: records.Source) -> dict[str, list[_Pending]]:
    """One pass over `source.tracks()`: what each split will hold, in source order.

    Tracks on disk stay paths (decoded later, in parallel, split by split); in-memory audio
    (generated worlds, where producing a track is the expensive part) is checked and converted
    here and its int16 samples are appended to a per-split spill file, so that the source is
    iterated exactly once whatever its size.
    """
    config = self.builder_config
    per_split: dict[str, list[_Pending]] = {split: [] for split in records.SPLITS}
    files: dict[str, Any] = {}
    try:
      for track in source.tracks():
        pending = _Pending(id=track.id, artists=list(track.artists), tags=list(track.tags),
                           title=track.title or "", album=track.album or "",
                           audio_path=track.audio_path)
        if track.audio_path is None:
          try:
            samples = decode_track(track, config)
          except audio_lib.AudioError as e:
            pending.error = e
          else:
            if track.split not in files:
              files[track.split] = open(os.path.join(self._spill_dir, f"{track.split}.int16"), "wb")
            f = files[track.split]
            pending.spill = (os.path.join(self._spill_dir, f"{track.split}.int16"), f.tell(),
                             len(samples))
            f.write(samples.tobytes())
        per_split[track.split].append(pending)
    finally:
      for f in files.values():
        f.close()
    return per_split

  def _example_maker(self) -> _ExampleMaker:
    source = self._get_source()
    return _ExampleMaker(source_name=source.name, tag_names=list(source.tag_names),
                         artist_names=list(source.artist_names),
                         audio_feature=self.info.features["audio"])

  def _generate_examples(self, split: str, pending: list[_Pending]):
    config = self.builder_config
    make_example = self._example_maker()
    skipped = records.SkipCounter()
    kept = 0
    outside_vocab = 0

    def load(item: _Pending) -> np.ndarray | audio_lib.AudioError:
      if item.error is not None:
        return item.error
      if item.spill is not None:
        path, offset, count = item.spill
        return np.fromfile(path, dtype=np.int16, count=count, offset=offset)
      try:
        return decode_track(item, config)
      except audio_lib.AudioError as e:
        return e

    for item, result in _map_ordered(load, pending, self._num_workers):
      if isinstance(result, audio_lib.AudioError):
        where = item.audio_path or item.id
        skipped.add(result.reason, where)
        _log_skip(item, where, result)
        continue
      example, outside = make_example(item, result)
      outside_vocab += outside
      kept += 1
      yield item.id, example
    self._finish_split(split, skipped, kept, outside_vocab)

  def _finish_split(self, split: str, skipped: records.SkipCounter, kept: int,
                    outside_vocab: int) -> None:
    """Records a generated split's skips in the metadata; raises if it lost too many tracks."""
    total = kept + skipped.total
    self.info.metadata["audio_skipped"][split] = skipped.as_dict()
    self.info.metadata["source_skipped"] = self._get_source().skipped.as_dict()
    self.info.metadata.setdefault("tags_outside_vocabulary", {})[split] = outside_vocab
    if skipped.total:
      logging.warning("Split %s: skipped %d of %d tracks for bad audio: %s", split,
                      skipped.total, total, dict(skipped.counts))
    if kept == 0 or skipped.total > self._max_bad_fraction * total:
      raise TooManySkippedError(_too_many_skipped_message(split, skipped, total,
                                                          self._max_bad_fraction))

  # -- Apache Beam -------------------------------------------------------------------------------

  def _beam_listing(self, source: records.Source) -> dict[str, list[dict]]:
    """What each split will hold, as small JSON rows for the workers; no audio is touched.

    A source that renders one track by index (`_renders_by_index`) lists indices, so that the
    rendering itself happens in the workers; other sources list their tracks' files (and the
    metadata that goes with them). `position` is the track's place in source order, which puts
    the skip examples in the order the plain path meets them.
    """
    per_split: dict[str, list[dict]] = {split: [] for split in records.SPLITS}
    if _renders_by_index(source):
      for index, split in enumerate(source.splits):
        per_split[split].append({"position": index, "index": index})
      return per_split
    for position, track in enumerate(source.tracks()):
      if track.audio_path is None:
        raise ValueError(
            f"Source {source.name!r} yields track {track.id!r} with in-memory audio but cannot "
            "render a track by index (it needs `splits` and `track(index)`, as SyntheticWorld "
            "has), so its audio cannot be made in the Beam workers; prepare it without "
            "--beam_runner.")
      per_split[track.split].append({
          "position": position, "id": track.id, "artists": list(track.artists),
          "tags": list(track.tags), "title": track.title or "", "album": track.album or "",
          "audio_path": track.audio_path})
    return per_split

  def _beam_generate(self, split: str, rows: list[dict]):
    """A `beam.PTransform` making the split's examples; its skips go to a report file.

    The listing is written as JSON lines into the build's own folder (on a cluster, `data_dir`
    is shared storage, as TFDS's Beam path requires anyway) and read back in the pipeline, so a
    million tracks do not travel inside the pipeline graph. Each worker decodes (or renders) its
    tracks and emits, beside the examples, a small report for every track that was skipped or
    lost tags outside the vocabulary; `_merge_reports` merges these per split (counts summed,
    the earliest examples in source order kept) and the merged report is written next to the
    listing. `_process_pipeline_result` reads it once the pipeline has run.
    """
    beam = _import_beam()
    work = epath.Path(self.data_dir) / _BEAM_WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    listing = work / f"{split}-tracks.jsonl"
    with listing.open("w") as f:
      for row in rows:
        f.write(json.dumps(row))  # ASCII with escapes: no encoding question anywhere
        f.write("\n")
    report = work / f"{split}-report.json"
    self._beam_reports[split] = (os.fspath(report), len(rows))
    source = self._get_source()
    generate = functools.partial(
        _beam_generate_track, split=split, config=self.builder_config,
        make_example=self._example_maker(),
        source=source if _renders_by_index(source) else None)

    @beam.ptransform_fn
    def generate_split(pipeline):
      outputs = (pipeline
                 | "ReadListing" >> beam.io.ReadFromText(os.fspath(listing))
                 # Spread the tracks over the workers: a small listing is one bundle otherwise.
                 | "Spread" >> beam.Reshuffle()
                 | "Decode" >> beam.FlatMap(generate).with_outputs(_REPORT_TAG, main="examples"))
      _ = (outputs[_REPORT_TAG]
           | "MergeReports" >> beam.CombineGlobally(_merge_reports)
           | "WriteReport" >> beam.Map(_write_report, path=os.fspath(report)))
      return outputs.examples

    return generate_split()  # pylint: disable=no-value-for-parameter

  def _process_pipeline_result(self, pipeline_result) -> None:
    """After the Beam pipeline: each split's merged report into the metadata, as the plain path."""
    del pipeline_result
    for split, (report_path, listed) in self._beam_reports.items():
      report = json.loads(epath.Path(report_path).read_text())
      skipped = _skip_counter_from_report(report)
      self._finish_split(split, skipped, listed - skipped.total, report["outside_vocab"])


class MusembSynthetic(_MusembBuilder):
  """The built-in synthetic world (`musemb.data.sources.synthetic.SyntheticWorld`)."""

  SOURCE_NAME = "synthetic"
  CONFIG_CLASS = SyntheticConfig
  BUILDER_CONFIGS = [
      SyntheticConfig(name="tiny-16k", size="tiny",
                      description="Tiny synthetic world at 16 kHz, for tests."),
      SyntheticConfig(name="demo-16k", size="demo",
                      description="Demo synthetic world at 16 kHz."),
  ]
  DEFAULT_CONFIG_NAME = "demo-16k"

  def _make_source(self, source_dir: str | None) -> records.Source:
    del source_dir  # generated, nothing on disk
    from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
    config = self.builder_config
    return synthetic.SyntheticWorld(size=config.size, seed=config.seed,
                                    sample_rate=config.sample_rate,
                                    clip_seconds=config.clip_seconds)


class MusembMtat(_MusembBuilder):
  """MagnaTagATune in its published layout (`musemb.data.sources.mtat.MagnaTagATune`)."""

  SOURCE_NAME = "mtat"
  CONFIG_CLASS = MtatConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put MagnaTagATune as published (annotations_final.csv, clip_info_final.csv and the mp3 "
      "folders 0-f) in one directory and pass it as --source_dir (or as the manual dir).")
  BUILDER_CONFIGS = [
      MtatConfig(name="top50-16k", top_n_tags=50,
                 description="MagnaTagATune, 50 most frequent tags, 16 kHz mono."),
  ]
  DEFAULT_CONFIG_NAME = "top50-16k"

  def _make_source(self, source_dir: str | None) -> records.Source:
    from musemb.data.sources import mtat  # pylint: disable=g-import-not-at-top
    config = self.builder_config
    return mtat.MagnaTagATune(_existing_dir(source_dir, "MagnaTagATune"),
                              top_n_tags=config.top_n_tags, split_file=config.split_file)


class MusembFolder(_MusembBuilder):
  """A folder of audio files plus a metadata table (`musemb.data.sources.folder.AudioFolder`)."""

  SOURCE_NAME = "folder"
  CONFIG_CLASS = FolderConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the audio files and their metadata table (see musemb.data.sources.folder) in one "
      "directory and pass it as --source_dir (or as the manual dir).")
  BUILDER_CONFIGS = [
      FolderConfig(name="all-16k", description="Audio folder, every tag, 16 kHz mono."),
  ]
  DEFAULT_CONFIG_NAME = "all-16k"

  def _make_source(self, source_dir: str | None) -> records.Source:
    from musemb.data.sources import folder  # pylint: disable=g-import-not-at-top
    config = self.builder_config
    return folder.AudioFolder(_existing_dir(source_dir, "audio folder"),
                              metadata=config.metadata, top_n_tags=config.top_n_tags,
                              split_ratios=tuple(config.split_ratios), seed=config.seed)


class MusembMsd(_MusembBuilder):
  """MSD previews with Last.fm tags (`musemb.data.sources.msd.MillionSongDataset`).

  Adds `coverage` to metadata.json: how many catalogue tracks had a preview and tags
  (`MsdCoverage.as_dict()`); with AotM-2011 playlists also `playlists`: the file, the sequence
  mode, how many sequences and songs were kept and what was skipped and why
  (`Aotm2011Playlists.as_dict()`).
  """

  SOURCE_NAME = "msd"
  CONFIG_CLASS = MsdConfig
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the MSD catalogue unique_tracks.txt, the Last.fm tags lastfm_tags.db and the preview "
      "folders (by default <tid[2]>/<tid[3]>/<tid[4]>/<track id>.mp3; see "
      "musemb.data.sources.msd) in one directory and pass it as --source_dir (or as the manual "
      "dir).")
  BUILDER_CONFIGS = [
      MsdConfig(name="top50-16k-max20s", top_n_tags=50, max_seconds=20.0,
                description="MSD previews, first 20 s at 16 kHz mono, top-50 Last.fm tags "
                            "(score > 50), split by artist."),
  ]
  DEFAULT_CONFIG_NAME = "top50-16k-max20s"

  def _make_source(self, source_dir: str | None) -> records.Source:
    from musemb.data.sources import msd  # pylint: disable=g-import-not-at-top
    config = self.builder_config
    return msd.MillionSongDataset(
        _existing_dir(source_dir, "Million Song Dataset"), path_pattern=config.path_pattern,
        top_n_tags=config.top_n_tags, min_tag_score=config.min_tag_score,
        tagged_only=config.tagged_only, split_file=config.split_file,
        split_ratios=tuple(config.split_ratios), seed=config.seed, playlists=config.playlists,
        playlist_sequence=config.playlist_sequence)

  def _split_generators(self, dl_manager):
    generators = super()._split_generators(dl_manager)
    source = self._get_source()
    self.info.metadata["coverage"] = source.coverage.as_dict()
    if source.playlist_report is not None:
      self.info.metadata["playlists"] = source.playlist_report.as_dict()
    return generators


def _existing_dir(source_dir: str | None, what: str) -> str:
  if source_dir is None or not epath.Path(source_dir).is_dir():
    raise FileNotFoundError(f"The {what} source directory {source_dir!r} does not exist; pass "
                            "source=... or source_dir=... (launch.prepare --source_dir=DIR).")
  return source_dir


BUILDERS: dict[str, type[_MusembBuilder]] = {
    cls.SOURCE_NAME: cls for cls in (MusembSynthetic, MusembMtat, MusembFolder, MusembMsd)}


# ------------------------------------------------------------------------------------------------
# Public helpers.


def _source_options(source: records.Source) -> dict[str, Any]:
  """The options a source object was built with, as its builder config names them."""
  if source.name == "synthetic":
    from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
    size = getattr(source, "size", "custom")
    clip = getattr(source, "clip_seconds", None)
    if size in synthetic.SIZES and clip == synthetic.SIZES[size].clip_seconds:
      clip = None  # the size's own length: no override to name
    return {"size": size, "seed": int(getattr(source, "seed", 0)),
            "clip_seconds": None if clip is None else float(clip)}
  if source.name == "mtat":
    split_file = getattr(source, "split_file", None)
    return {"top_n_tags": getattr(source, "top_n_tags", 50),
            "split_file": None if split_file is None else os.path.abspath(split_file)}
  if source.name == "folder":
    return {"top_n_tags": getattr(source, "top_n_tags", None),
            "split_ratios": tuple(float(r) for r in getattr(source, "split_ratios",
                                                            (0.8, 0.1, 0.1))),
            "seed": int(getattr(source, "seed", 0))}
  if source.name == "msd":
    split_file = getattr(source, "split_file", None)
    return {"top_n_tags": getattr(source, "top_n_tags", 50),
            "min_tag_score": float(getattr(source, "min_tag_score", 50.0)),
            "tagged_only": bool(getattr(source, "tagged_only", False)),
            "split_file": None if split_file is None else os.path.abspath(split_file),
            "split_ratios": tuple(float(r) for r in getattr(source, "split_ratios",
                                                            (0.8, 0.1, 0.1))),
            "seed": int(getattr(source, "seed", 0)),
            "playlists": getattr(source, "playlists", None),
            "playlist_sequence": getattr(source, "playlist_sequence", "filtered")}
  return {}


def builder_class(source_name: str) -> type[_MusembBuilder]:
  try:
    return BUILDERS[source_name]
  except KeyError:
    raise ValueError(f"No builder for source {source_name!r}; known sources: "
                     f"{sorted(BUILDERS)}.") from None


def make_config(source: records.Source, *, sample_rate: int = 16000,
                max_seconds: float | None = None, min_seconds: float = 1.0,
                config_name: str | None = None) -> MusembConfig:
  """The builder config for `source` with these audio settings (named after them by default)."""
  cls = builder_class(source.name)
  if sample_rate <= 0:
    raise ValueError(f"sample_rate={sample_rate} must be positive.")
  if max_seconds is not None and max_seconds < min_seconds:
    raise ValueError(f"max_seconds={max_seconds} is below min_seconds={min_seconds}: every clip "
                     "would be skipped.")
  fields = dict(sample_rate=int(sample_rate), max_seconds=max_seconds,
                min_seconds=float(min_seconds), **_source_options(source))
  config = cls.CONFIG_CLASS(name="unnamed", **fields)
  config.name = config_name or config.default_name()
  config.description = f"{source.description()} Options: {json.dumps(config.options())}"
  return config


def prepare(source: records.Source, data_dir: epath.PathLike, *, sample_rate: int = 16000,
            max_seconds: float | None = None, min_seconds: float = 1.0,
            max_bad_fraction: float = 0.05, config_name: str | None = None,
            num_workers: int | None = None, beam_runner: str | None = None,
            beam_options: Iterable[str] = ()) -> str:
  """Builds `source` into a TFDS dataset under `data_dir` unless it is there; returns its dir.

  The dataset lands in `<data_dir>/musemb_<source.name>/<config_name>/1.0.0`. An existing dataset
  at that path is reused only if it was built with the same options (sample rate, cropping, source
  options); otherwise this raises and asks for another `config_name` or removal of the old one.
  The source's content beyond its options is not compared: after changing the files of a source,
  remove the old dataset directory (or pick a new config_name).

  Args:
    source: a `records.Source` named "synthetic", "mtat", "folder" or "msd".
    data_dir: root directory of prepared datasets.
    sample_rate: Hz of the stored audio (resampled with soxr).
    max_seconds: keep only each clip's first `max_seconds` (None: whole clips).
    min_seconds: skip clips shorter than this, counted as "too_short".
    max_bad_fraction: the build fails when a split loses a larger fraction of its tracks to
      unusable audio.
    config_name: overrides the name derived from the options (e.g. "demo-16k-max30s").
    num_workers: threads decoding audio files (default min(8, CPU count)); with
      `beam_runner="DirectRunner"`, the number of local worker processes (default: CPU count).
    beam_runner: generate the splits as an Apache Beam pipeline on this runner ("DirectRunner"
      for local processes, "DataflowRunner", "FlinkRunner", ...; needs the `beam` extra). The
      dataset, its skips and its metadata are those of the plain path (see
      `beam_download_config` and the notes on the Beam path above `_merge_reports`).
    beam_options: Beam pipeline flags, e.g. ["--direct_num_workers=4"] or a cluster's
      ["--project=...", "--temp_location=gs://..."].

  Raises:
    TooManySkippedError: too much unusable audio in a split; nothing is written.
    ValueError: options that clash with an existing dataset or a reserved config name.
    musemb.workdir.WorkdirBusyError: another live prepare is building into `data_dir`.
  """
  cls = builder_class(source.name)
  config = make_config(source, sample_rate=sample_rate, max_seconds=max_seconds,
                       min_seconds=min_seconds, config_name=config_name)
  dataset_dir = epath.Path(data_dir) / cls.name / config.name / str(cls.VERSION)
  if (dataset_dir / "dataset_info.json").exists():
    prepared = prepared_lib.load_prepared(dataset_dir)
    stored = prepared.builder.info.metadata.get("options")
    if stored != config.options():
      raise ValueError(f"{dataset_dir} was prepared with options {stored}, but {config.options()} "
                       "were asked for. Pass another config_name, or delete that directory to "
                       "rebuild it.")
    logging.info("Reusing prepared dataset %s.", dataset_dir)
    return os.fspath(dataset_dir)

  # One build per data_dir at a time: two would race for TFDS's final rename. Holding the lock
  # also means whatever a killed build left behind is nobody's, so it is cleared first.
  with workdir_lib.Lock(os.path.join(os.fspath(data_dir), ".musemb-prepare.lock"),
                        f"launch.prepare of {cls.name}/{config.name}"):
    if (dataset_dir / "dataset_info.json").exists():    # built while we waited for the lock
      return os.fspath(dataset_dir)
    _remove_leftovers(epath.Path(data_dir))
    download_config = (None if beam_runner is None else
                       beam_download_config(beam_runner, beam_options, num_workers))
    return _build(cls, source, config, data_dir, max_bad_fraction, num_workers, download_config)


def _remove_leftovers(data_dir: epath.Path) -> None:
  """Removes the `incomplete.*` build folders and spill folders of builds that were killed."""
  leftovers = [*data_dir.glob("musemb_*/*/incomplete.*"), *data_dir.glob(".musemb-spill-*")]
  for path in leftovers:
    logging.warning("Removing %s, left by a prepare that did not finish.", path)
    shutil.rmtree(os.fspath(path), ignore_errors=True)


def _build(cls, source: records.Source, config: MusembConfig, data_dir: epath.PathLike,
           max_bad_fraction: float, num_workers: int | None,
           download_config: tfds.download.DownloadConfig | None = None) -> str:
  predefined = {c.name: c for c in cls.BUILDER_CONFIGS}
  if config.name in predefined:
    if predefined[config.name].options() != config.options():
      raise ValueError(f"Config name {config.name!r} is reserved by {cls.name} for options "
                       f"{predefined[config.name].options()}; these are {config.options()}. "
                       "Choose another config_name.")
    config_arg: str | MusembConfig = config.name  # TFDS wants the predefined instance itself
  else:
    config_arg = config
  builder = cls(source=source, config=config_arg, data_dir=os.fspath(data_dir),
                max_bad_fraction=max_bad_fraction, num_workers=num_workers)
  logging.info("Preparing %s into %s%s.", source.description(), builder.data_dir,
               "" if download_config is None else
               f" with Beam's {download_config.beam_runner}")
  builder.download_and_prepare(download_config=download_config)
  return os.fspath(builder.data_dir)
