"""The tag-propagation system's data: SampleCNN's audio crops, plus the song and playlist tables.

What the loop's step needs beyond `musemb.systems.samplecnn.data` (whose reader this wraps):

* every song of the prepared splits gets an index (training songs first, then validation, then
  test, each in its split's order); a training batch carries each crop's song index (joined by
  track id through `pipeline.TrackTargets`, whose float32 values hold an index below 2^24
  exactly), so the walk of `musemb.samplers.propagation` starts from the right song;
* `tables["propagation"]`: the walk's CSR tables over the prepared dataset's playlists
  (`tables/playlists.jsonl`), joined to the splits by track id. A playlist entry that is a gap
  (None: an AotM-2011 entry matched to no track) or names a track the prepared splits lack (its
  audio was skipped) is a gap: it counts for distance and passes no tags. Validation and test
  songs stay in the playlists (distances and eq. (2)'s normaliser count them) but are outside
  `source_mask`, so their tags never reach a training target;
* `tables["song_tags"]`: [num_songs, num_tags] bool, the tags a partner passes on. Only the rows
  of source songs (training songs with at least one tag) are filled; the others are zero, so even
  a partner outside the mask would carry nothing (tests check both).

`data.top_n_tags` keeps the tags carried by the most training songs (ties in the vocabulary's
order, which for MSD and MagnaTagATune is the prepare step's popularity order): one dataset
prepared with the top 1000 tags serves the paper's 50-tag and 1000-tag setups. Counting on the
training split keeps validation and test labels out of the choice.

Songs in no playlist still train (eq. (1)); their walk finds no partner and their supportive
term is zero. How many training songs can propagate is logged and reported.

A search range per tag category (`objective.category_r`, beyond the paper: see
`search_range_groups`): `tables["ranges"]` holds one more `PropagationTables` per distinct r of
the categories (built by `build_tables` with that r: the same CSR, eq. (4)'s weights at that r)
and `tables["tag_range"]` [T] int32 says which walk each tag's targets come from: 0 is
`tables["propagation"]` (`objective.r`), k >= 1 is `tables["ranges"][k - 1]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

from absl import logging
import ml_collections
import numpy as np

from musemb.data import pipeline
from musemb.data.sources import records
from musemb.samplers import propagation
from musemb.systems.samplecnn import data as audio_data
from musemb.systems.tagprop import taxonomy as taxonomy_lib

# TrackTargets stores float32: every integer below 2^24 is exact.
MAX_SONGS = 2 ** 24


@dataclasses.dataclass(frozen=True)
class SongTable:
  """Every song of the prepared splits, in index order (train, valid, test).

  Attributes:
    track_ids: [S] str.
    splits: [S] str, each song's split.
    tags: [S, T] bool, each song's tags in the selected vocabulary (all splits: for evaluation and
      Fig. 2; what propagation may pass on is `source_tags`).
  """

  track_ids: np.ndarray
  splits: np.ndarray
  tags: np.ndarray

  def __post_init__(self):
    if len(set(self.track_ids.tolist())) != len(self.track_ids):
      raise ValueError("tagprop: a track id occurs in more than one split (or twice in one) of "
                       "the prepared dataset; prepare it again so that every track has one split.")

  @property
  def source_mask(self) -> np.ndarray:
    """[S] bool: the songs whose tags may be propagated (training songs with a tag)."""
    return (self.splits == "train") & self.tags.any(axis=1)

  @property
  def source_tags(self) -> np.ndarray:
    """[S, T] bool: `tags` with every row outside `source_mask` zeroed."""
    return self.tags & self.source_mask[:, None]

  def index(self) -> dict[str, int]:
    return {t: i for i, t in enumerate(self.track_ids.tolist())}


def select_tags(train_tags: np.ndarray, top_n: int, tag_names: Sequence[str]) -> np.ndarray:
  """Columns of the `top_n` tags carried by the most training songs (0: every column, in order).

  Ties keep the vocabulary's order (a stable sort). The columns come back in popularity order,
  so column 0 of the selected vocabulary is its most popular tag.
  """
  num_tags = train_tags.shape[1]
  if isinstance(top_n, bool) or int(top_n) != top_n or top_n < 0:
    raise ValueError(f"data.top_n_tags={top_n!r}: expected an integer >= 0 (0 keeps all tags).")
  if top_n == 0:
    return np.arange(num_tags)
  if top_n > num_tags:
    raise ValueError(f"data.top_n_tags={top_n} but the prepared dataset has {num_tags} tags; "
                     f"prepare it with --top_n_tags={top_n} (or more), or lower the setting.")
  counts = train_tags.sum(axis=0)
  order = np.argsort(-counts, kind="stable")[:top_n]
  unused = [tag_names[i] for i in order if counts[i] == 0]
  if unused:
    logging.warning("tagprop: %d of the top %d tags no training song carries (e.g. %s).",
                    len(unused), top_n, unused[:5])
  return order


def playlist_sequences(playlists: Sequence[records.Playlist], index: dict[str, int]
                       ) -> tuple[list[list[int]], dict[str, int]]:
  """Playlists as song indices, -1 at a gap; with counts of what became a gap and why.

  Counts: `playlists`, `entries`, `gaps` (None in the table: no track), `not_prepared` (a track
  id the prepared splits lack).
  """
  sequences, gaps, missing = [], 0, 0
  for playlist in playlists:
    row = []
    for track in playlist.track_ids:
      if track is None:
        gaps += 1
        row.append(-1)
      elif track in index:
        row.append(index[track])
      else:
        missing += 1
        row.append(-1)
    sequences.append(row)
  return sequences, {"playlists": len(sequences), "entries": sum(map(len, sequences)),
                     "gaps": gaps, "not_prepared": missing}


def search_range_groups(tag_names: Sequence[str], taxonomy: dict[str, list[str]],
                        category_r: dict[str, float], default_r: float, where: str = "taxonomy"
                        ) -> tuple[list[float], np.ndarray, dict[str, int]]:
  """Which search range each tag propagates with: a search range per tag category.

  Lin et al. find the improvement depends on the tag category (§V.D, Fig. 6) and name "an
  appropriate search range to each category" as future work. Here every tag of a category named
  in `category_r` takes that category's r and every other tag `default_r` (`objective.r`); the
  step draws one walk per distinct r (`musemb.samplers.propagation.grouped_targets`).

  Args:
    tag_names: [T] the run's vocabulary.
    taxonomy: {category: [tags]} (`eval.taxonomy`); tags outside the vocabulary are ignored.
    category_r: {category: r}, each a category of `taxonomy`.
    default_r: the r of every tag outside the named categories.
    where: names the taxonomy in errors.

  Returns:
    ranges: [G] the distinct search ranges, `default_r` first (group 0, always present).
    tag_group: [T] int32, each tag's index into `ranges`.
    tags_per_category: {category: tags of the vocabulary it gives its r}.
  """
  unknown = sorted(set(category_r) - set(taxonomy))
  if unknown:
    raise ValueError(f"objective.category_r names {unknown}, which are not categories of {where} "
                     f"(its categories: {sorted(taxonomy)}); set eval.taxonomy to the taxonomy "
                     "whose categories you name.")
  column = {t: i for i, t in enumerate(tag_names)}
  chosen: dict[int, tuple[str, float]] = {}
  counts = {}
  for category, r in category_r.items():
    found = [column[t] for t in dict.fromkeys(taxonomy[category]) if t in column]
    counts[category] = len(found)
    for i in found:
      if i in chosen and chosen[i][1] != r:
        raise ValueError(f"objective.category_r: tag {tag_names[i]!r} is in categories "
                         f"{chosen[i][0]!r} (r = {chosen[i][1]:g}) and {category!r} (r = {r:g}) "
                         f"of {where}; give them one r, or drop one of them.")
      chosen[i] = (category, r)
  # Group 0 is objective.r; then each other r in the order category_r names it, if a tag uses it.
  used = {r for _, r in chosen.values()}
  ranges = [float(default_r)] + [r for r in dict.fromkeys(category_r.values())
                                 if r in used and r != float(default_r)]
  tag_group = np.zeros(len(tag_names), np.int32)
  for i, (_, r) in chosen.items():
    tag_group[i] = ranges.index(r)
  return ranges, tag_group, counts


def device_tables(songs: SongTable, sequences: Sequence[Sequence[int]], r: float,
                  ranges: Sequence[float] = (), tag_group: np.ndarray | None = None
                  ) -> dict[str, Any]:
  """`{"propagation": PropagationTables, "song_tags": [S, T] bool}` for the jitted step, plus
  `"ranges"` (one `PropagationTables` per r of `ranges[1:]`) and `"tag_range"` [T] int32 when
  some tags take another search range (`search_range_groups`)."""
  build = lambda x: propagation.build_tables(sequences, len(songs.track_ids), songs.source_mask, x)
  tables = {"propagation": build(r), "song_tags": songs.source_tags}
  if len(ranges) > 1:
    tables["ranges"] = tuple(build(x) for x in ranges[1:])
    tables["tag_range"] = np.asarray(tag_group, np.int32)
  return tables


@dataclasses.dataclass
class TagpropData:
  """The loop's data object: `info`, `splits`, `tables`, `train_batch(step)`, plus what the
  evaluation and the report read (`windows`, `songs`, `sequences`)."""

  info: dict[str, Any]
  splits: dict[str, audio_data.SplitInfo]
  tables: dict[str, Any]
  audio: audio_data.AudioData
  tag_columns: np.ndarray          # [T] columns of the prepared vocabulary, popularity order
  songs: SongTable
  sequences: list[list[int]]

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """Audio crops [B, n], tags [B, T] float32 and song indices [B] int32 of `step`."""
    batch = self.audio.train_batch(step)
    return {"audio": batch["audio"], "tags": batch["tags"][:, self.tag_columns],
            "song": np.rint(batch["song"][:, 0]).astype(np.int32)}

  def windows(self, split: str, batch_size: int, window: int, max_windows: int
              ) -> Iterator[dict[str, np.ndarray]]:
    """`AudioData.windows` with the tags cut to the selected vocabulary."""
    for batch in self.audio.windows(split, batch_size, window, max_windows):
      batch["tags"] = batch["tags"][:, self.tag_columns]
      yield batch


def load_data(config: ml_collections.ConfigDict, workdir: str) -> TagpropData:
  """Opens the prepared dataset (or prepares the built-in world at `data.sample_rate`), indexes
  its songs, selects the tags, joins the playlists and builds the device tables."""
  prepared = audio_data.open_prepared(config, workdir)
  if "train" not in prepared.split_sizes:
    raise ValueError(f"{prepared.dataset_dir} has no train split (splits: "
                     f"{sorted(prepared.split_sizes)}).")
  order = ["train"] + sorted((s for s in prepared.split_sizes if s != "train"),
                             key=lambda s: records.SPLITS.index(s) if s in records.SPLITS else 9)
  labels = {split: pipeline.read_split(prepared.builder, split) for split in order}
  columns = select_tags(labels["train"].tags, config.data.top_n_tags, prepared.tag_names)
  track_ids = np.concatenate([labels[s].track_ids.astype(str) for s in order])
  if len(track_ids) >= MAX_SONGS:
    raise ValueError(f"{len(track_ids)} songs: the song index travels as float32 through "
                     f"TrackTargets, exact below {MAX_SONGS}.")
  songs = SongTable(
      track_ids=track_ids,
      splits=np.concatenate([np.full(len(labels[s]), s) for s in order]),
      tags=np.concatenate([labels[s].tags[:, columns] for s in order]))
  index = songs.index()
  splits, start = {}, 0
  for split in order:
    n = len(labels[split])
    splits[split] = audio_data.SplitInfo(labels=labels[split],
                                         target_rows=np.arange(start, start + n))
    start += n

  sequences, counts = playlist_sequences(prepared.tables().playlists, index)
  in_playlist = np.zeros(len(track_ids), bool)
  for row in sequences:
    in_playlist[[s for s in row if s >= 0]] = True
  train = songs.splits == "train"
  counts.update(train_songs=int(train.sum()), source_songs=int(songs.source_mask.sum()),
                train_songs_in_playlists=int((train & in_playlist).sum()),
                songs_in_playlists=int(in_playlist.sum()))
  logging.info("tagprop: %d playlists, %d entries (%d gaps, %d tracks not in the prepared "
               "splits: gaps too); %d of %d training songs are in a playlist, %d songs can pass "
               "tags on.", counts["playlists"], counts["entries"], counts["gaps"],
               counts["not_prepared"], counts["train_songs_in_playlists"], counts["train_songs"],
               counts["source_songs"])

  proposed = config.objective.name != "baseline"
  if proposed and not counts["train_songs_in_playlists"]:
    raise ValueError(f"{prepared.dataset_dir}: no training song is in a playlist, so nothing can "
                     "be propagated. Prepare the dataset with its playlists (launch.prepare "
                     "--source=msd --playlists=<aotm2011_playlists.json.gz>), or train the "
                     "baseline (configs/tagprop.py:...,baseline).")
  ranges, tag_group, per_category = [float(config.objective.r)], None, {}
  category_r = taxonomy_lib.parse_category_r(config.objective.get("category_r", ""))
  tag_names = [prepared.tag_names[i] for i in columns]
  if category_r and proposed:
    ranges, tag_group, per_category = search_range_groups(
        tag_names, taxonomy_lib.load_taxonomy(config.eval.taxonomy), category_r,
        float(config.objective.r), where=f"eval.taxonomy={config.eval.taxonomy!r}")
    logging.info("tagprop: search ranges %s; tags per category given its own r: %s; %d tags "
                 "keep objective.r = %g.", ranges, per_category, int((tag_group == 0).sum()),
                 config.objective.r)
    empty = [c for c, n in per_category.items() if not n]
    if empty:
      logging.warning("tagprop: objective.category_r names %s, which have no tag in the "
                      "vocabulary: their r changes nothing.", empty)
  tables = (device_tables(songs, sequences, float(config.objective.r), ranges, tag_group)
            if proposed else {})
  if train.sum() < config.train.batch_size:
    raise ValueError(f"only {int(train.sum())} training songs for batch_size="
                     f"{config.train.batch_size}; lower --config.train.batch_size.")
  targets = {"song": pipeline.TrackTargets(ids=track_ids,
                                           values=np.arange(len(track_ids), dtype=np.float32
                                                            )[:, None])}
  audio = audio_data.AudioData(
      info={}, splits=splits, tables={}, prepared=prepared, targets=targets,
      batch_size=config.train.batch_size, crop_samples=config.data.crop_samples, seed=config.seed,
      train_requires_targets=False)
  info = {"num_tags": len(columns), "tag_names": tag_names,
          "tag_train_counts": labels["train"].tags[:, columns].sum(axis=0).astype(int).tolist(),
          "sample_rate": prepared.sample_rate, "num_train_examples": int(train.sum()),
          "coverage": {s: {"tracks": len(labels[s])} for s in order},
          "playlists": counts, "dataset": prepared.full_name,
          "search_ranges": ranges, "category_tags": per_category}
  return TagpropData(info=info, splits=splits, tables=tables, audio=audio, tag_columns=columns,
                     songs=songs, sequences=sequences)
