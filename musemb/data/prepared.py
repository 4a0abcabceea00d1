"""Reading a prepared dataset: the read side of `musemb.data.builders`.

`load_prepared(dataset_dir)` opens `<data_dir>/musemb_<source>/<config>/<version>/` (TFDS's
`builder_from_directory`) and unpacks musemb's metadata into a `Prepared`; `find_dataset_dir`
resolves a `--data_dir` root to its one dataset; `read_tables` reads the side tables (playlists,
plays, reviews) back as `musemb.data.sources.records` types; `resolve_dataset(config, workdir)`
is what every system's data adapter calls: `config.data_dir`, or the built-in synthetic world
prepared under `<workdir>/data` on first use (on multi-host jobs process 0 builds it, the others
wait: `process_zero_first`). Nothing here writes a dataset except that fallback, which goes
through `musemb.data.builders.prepare`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator

from absl import logging
from etils import epath
import jax
import ml_collections
import tensorflow_datasets as tfds

from musemb.data.sources import records

TABLES_DIR = "tables"
TABLE_FILES = {"playlists": "playlists.jsonl", "plays": "plays.jsonl", "reviews": "reviews.jsonl"}
# Bumped when the metadata layout changes; `load_prepared` refuses what it cannot read.
METADATA_FORMAT = 1


def _read_jsonl(path: epath.Path) -> Iterator[dict]:
  with path.open("r") as f:
    for line_no, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_no}: not valid JSON ({e}); the prepared dataset is "
                           "damaged, prepare it again.") from e


def read_tables(dataset_dir: epath.PathLike,
                artist_similarity: dict[str, list[str]] | None = None) -> records.SourceTables:
  """Reads the side tables of a prepared dataset back as `records` types."""
  root = epath.Path(dataset_dir) / TABLES_DIR
  missing = [name for name in TABLE_FILES.values() if not (root / name).exists()]
  if missing:
    raise FileNotFoundError(f"{root}: missing {missing}; this is not a complete musemb dataset, "
                            "prepare it again with launch.prepare.")
  return records.SourceTables(
      artist_similarity=dict(artist_similarity or {}),
      playlists=[records.Playlist(id=r["id"], track_ids=tuple(r["track_ids"]), user=r["user"])
                 for r in _read_jsonl(root / TABLE_FILES["playlists"])],
      plays=[records.Play(user=r["user"], track_id=r["track_id"], count=int(r["count"]))
             for r in _read_jsonl(root / TABLE_FILES["plays"])],
      reviews=[records.Review(id=r["id"], track_ids=tuple(r["track_ids"]), text=r["text"],
                              album=r["album"])
               for r in _read_jsonl(root / TABLE_FILES["reviews"])],
  )


@dataclasses.dataclass
class Prepared:
  """A prepared dataset with musemb's metadata unpacked.

  `builder` reads the splits (`builder.as_dataset(split=...)`); the rest comes from
  `dataset_info.json` and `metadata.json`.
  """

  builder: tfds.core.DatasetBuilder
  dataset_dir: str
  name: str                          # e.g. "musemb_synthetic"
  config_name: str                   # e.g. "demo-16k"
  version: str                       # e.g. "1.0.0"
  source: str                        # e.g. "synthetic"
  sample_rate: int
  tag_names: list[str]
  artist_names: list[str]
  artist_similarity: dict[str, list[str]]
  skipped: dict[str, Any]            # {"source": SkipCounter dict, "audio": {split: ...}}
  split_sizes: dict[str, int]
  options: dict[str, Any]

  @property
  def full_name(self) -> str:
    return f"{self.name}/{self.config_name}/{self.version}"

  def tables(self) -> records.SourceTables:
    """Playlists, plays and reviews (from `tables/*.jsonl`) and the artist similarity map."""
    return read_tables(self.dataset_dir, self.artist_similarity)

  def summary(self) -> str:
    """A few lines for logs and launchers: where, what, how big, what was left out and why."""
    sizes = ", ".join(f"{split} {n}" for split, n in sorted(
        self.split_sizes.items(), key=lambda kv: records.SPLITS.index(kv[0])
        if kv[0] in records.SPLITS else len(records.SPLITS)))
    lines = [f"Dataset {self.full_name} at {self.dataset_dir}",
             f"  source {self.source!r}, {self.sample_rate} Hz, {len(self.tag_names)} tags, "
             f"{len(self.artist_names)} artists",
             f"  tracks: {sizes}"]
    source_skips = self.skipped["source"]
    lines.append(f"  metadata rows skipped by the source: {source_skips['total']}"
                 + (f" {source_skips['by_reason']}" if source_skips["total"] else ""))
    for split, skips in self.skipped["audio"].items():
      if skips["total"]:
        lines.append(f"  {split}: {skips['total']} tracks skipped for audio {skips['by_reason']}, "
                     f"e.g. {skips['examples']}")
    if not any(s["total"] for s in self.skipped["audio"].values()):
      lines.append("  audio skipped: none")
    playlists = (self.builder.info.metadata or {}).get("playlists")
    if playlists:   # AotM-2011 playlists of the MSD (musemb.data.sources.aotm2011)
      skips = playlists["skipped"]
      lines.append(f"  playlists: {playlists['sequences']} {playlists['sequence']} sequences of "
                   f"{playlists['playlists_read']} playlists from {playlists['file']}; "
                   f"{skips['total']} items skipped" +
                   (f" {skips['by_reason']}" if skips["total"] else ""))
    return "\n".join(lines)


def load_prepared(dataset_dir: epath.PathLike) -> Prepared:
  """Opens a prepared dataset directory (`<data_dir>/musemb_<source>/<config>/<version>`)."""
  path = epath.Path(dataset_dir)
  if not (path / "dataset_info.json").exists():
    raise FileNotFoundError(f"{path} holds no prepared dataset (no dataset_info.json). Pass the "
                            "directory printed by launch.prepare, or resolve a --data_dir root "
                            "with find_dataset_dir.")
  builder = tfds.builder_from_directory(os.fspath(path))
  metadata = dict(builder.info.metadata or {})
  if metadata.get("musemb_format") != METADATA_FORMAT:
    raise ValueError(f"{path} is not a musemb prepared dataset of format {METADATA_FORMAT} "
                     f"(metadata.json has musemb_format={metadata.get('musemb_format')!r}); "
                     "prepare it again with launch.prepare.")
  return Prepared(
      builder=builder,
      dataset_dir=os.fspath(path),
      name=builder.info.name,
      config_name=builder.info.config_name,
      version=str(builder.info.version),
      source=metadata["source"],
      sample_rate=int(metadata["sample_rate"]),
      tag_names=list(metadata["tag_names"]),
      artist_names=list(metadata["artist_names"]),
      artist_similarity=dict(metadata["artist_similarity"]),
      skipped={"source": metadata["source_skipped"], "audio": dict(metadata["audio_skipped"])},
      split_sizes={name: int(s.num_examples) for name, s in builder.info.splits.items()},
      options=dict(metadata["options"]),
  )


def find_dataset_dir(data_dir: epath.PathLike, source_name: str | None = None) -> str:
  """Resolves a `--data_dir` root (or a dataset dir itself) to its single prepared dataset.

  Looks for `<data_dir>/musemb_<source>/<config>/<version>/dataset_info.json`, ignoring TFDS's
  unfinished `incomplete.*` builds.

  Raises:
    FileNotFoundError: nothing prepared there.
    ValueError: more than one candidate; the message lists them.
  """
  root = epath.Path(data_dir)
  if (root / "dataset_info.json").exists():
    return os.fspath(root)
  pattern = f"musemb_{source_name}" if source_name else "musemb_*"
  candidates = sorted(
      os.fspath(p.parent) for p in root.glob(f"{pattern}/*/*/dataset_info.json")
      if not any(part.startswith("incomplete.") for part in p.parts))
  if not candidates:
    unfinished = sorted(os.fspath(p) for p in root.glob(f"{pattern}/*/incomplete.*"))
    hint = (f" Unfinished builds (a prepare that was killed) are there: {unfinished}; delete them "
            "and run prepare again." if unfinished else "")
    raise FileNotFoundError(
        f"No prepared musemb dataset{' for source ' + repr(source_name) if source_name else ''} "
        f"under {root} (looked for {root}/{pattern}/<config>/<version>/dataset_info.json). Run "
        f"`python -m launch.prepare --source=... --data_dir={root}` first.{hint}")
  if len(candidates) > 1:
    raise ValueError(f"{len(candidates)} prepared datasets under {root}: {candidates}. Pass one of "
                     "them as --data_dir" + ("" if source_name else ", or name the source") + ".")
  return candidates[0]


def process_zero_first(fn: Callable[[], Any], name: str = "musemb.prepared") -> Any:
  """Runs `fn` on process 0, then on the others once it is done (they read what it cached).

  Building a dataset or its derived features is a write; on multi-host jobs one process does it
  and the others wait at a barrier, instead of racing to rename the same folders.
  """
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(name)
  return result if jax.process_index() == 0 else fn()


def resolve_dataset(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The prepared dataset directory: `config.data_dir`, or the built-in world under the workdir."""
  if config.data_dir:
    return find_dataset_dir(config.data_dir)
  # pylint: disable=g-import-not-at-top
  from musemb.data import builders
  from musemb.data.sources import synthetic
  # pylint: enable=g-import-not-at-top
  world = synthetic.SyntheticWorld(config.data.synthetic_size, seed=config.data.synthetic_seed,
                                   sample_rate=config.data.sample_rate)
  logging.info("config.data_dir is empty: using the built-in synthetic world (%s).",
               config.data.synthetic_size)
  return process_zero_first(lambda: builders.prepare(
      world, os.path.join(workdir, "data"), sample_rate=config.data.sample_rate,
      max_seconds=config.data.max_seconds or None))
