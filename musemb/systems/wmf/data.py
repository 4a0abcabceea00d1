"""WMF's data adapter: the play counts named by a config, and tags for chapter 5's proxy task.

The built-in world knows its tracks' tags; MSD-keyed items (`lfm1b_msd`, or `taste_profile` with
the catalogue) read the top-N Last.fm tags above the score threshold from `proxy.lastfm_tags`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np

from musemb.data.sources import listening


def tag_matrix(item_ids: Sequence[str], tags_by_item: Mapping[str, Sequence[str]],
               tag_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """The [items, T] bool tag matrix of `item_ids` in `tag_names`' column order.

  Args:
    item_ids: [items] ids, e.g. factors.npz's item_ids.
    tags_by_item: id -> its tags (e.g. the mapping `listening.msd_track_tags` returns); tags not
      in `tag_names` are ignored.
    tag_names: [T] the vocabulary, e.g. the top-50 tags.

  Returns:
    (tags [items, T] bool, labelled [items] bool): `labelled` says which ids `tags_by_item` knows.
    Unknown items have all-False rows; select `labelled` rows before the proxy task, since an
    untagged item is not a negative for every tag.
  """
  column = {t: j for j, t in enumerate(tag_names)}
  if len(column) != len(tag_names):
    raise ValueError(f"tag_names has duplicates ({len(tag_names)} names, {len(column)} distinct).")
  tags = np.zeros((len(item_ids), len(tag_names)), bool)
  labelled = np.zeros(len(item_ids), bool)
  for i, item in enumerate(item_ids):
    item_tags = tags_by_item.get(str(item))
    if item_tags is None:
      continue
    labelled[i] = True
    for t in item_tags:
      j = column.get(t)
      if j is not None:
        tags[i, j] = True
  return tags, labelled


def synthetic_item_tags(item_ids: Sequence[str], size: str = "demo",
                        seed: int = 0) -> tuple[np.ndarray, list[str]]:
  """The built-in world's tags for its track ids (the item ids of its plays).

  Args:
    item_ids: [items] synthetic track ids ("syn000123"), e.g. factors.npz's item_ids.
    size, seed: the `SyntheticWorld` that generated the plays (config.data.synthetic_size/_seed).

  Returns:
    (tags [items, T] bool, tag_names [T]) with the world's noisy tags, most frequent tag first.
  """
  from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
  world = synthetic.SyntheticWorld(size, seed=seed)
  tags_by_item = {world.track_id(i): t for i, t in enumerate(world.track_tags)}
  tags, labelled = tag_matrix(item_ids, tags_by_item, world.tag_names)
  if not labelled.all():
    unknown = [str(item_ids[i]) for i in np.flatnonzero(~labelled)[:3]]
    raise ValueError(f"{int((~labelled).sum())} item ids are not tracks of the synthetic world "
                     f"(size {size!r}, seed {seed}), e.g. {unknown}; pass the size and seed the "
                     "plays were generated with.")
  return tags, list(world.tag_names)


def proxy_tags(config: ml_collections.ConfigDict, items: list[str]
               ) -> tuple[np.ndarray, list[str], np.ndarray] | None:
  """(tags [items, T], tag names, labelled [items]) for chapter 5's proxy task, or None.

  The built-in world knows its tracks' tags; MSD-keyed items (`lfm1b_msd`, or `taste_profile` with
  the catalogue) read the top-N Last.fm tags above the score threshold from `proxy.lastfm_tags`.
  """
  if config.data.source == "synthetic":
    tags, names = synthetic_item_tags(items, config.data.synthetic_size,
                                            config.data.synthetic_seed)
    return tags, names, np.ones(len(items), bool)
  db = config.proxy.get("lastfm_tags", "")
  if not db:
    logging.info("wmf: no proxy task (set --config.proxy.lastfm_tags=<lastfm_tags.db> for "
                 "MSD-keyed items).")
    return None
  names, tags_by_item = listening.msd_track_tags(
      db, top_n=config.proxy.top_n_tags, min_score=config.proxy.min_tag_score, track_ids=items)
  tags, labelled = tag_matrix(items, tags_by_item, names)
  labelled &= tags.any(axis=1)   # tracks without a vocabulary tag say nothing about the tags
  logging.info("wmf: proxy task on %d of %d items that carry one of the top %d tags.",
               int(labelled.sum()), len(items), len(names))
  return tags, names, labelled
