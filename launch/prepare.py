r"""Prepares a source as a TFDS dataset, and optionally its bag-of-frames features.

The built-in synthetic world (generated, nothing to download):

  python -m launch.prepare --source=synthetic --size=demo --data_dir=/tmp/musemb_data

MagnaTagATune as published (annotations_final.csv, clip_info_final.csv, mp3 folders 0-f), with
MUSLSE's 2000-codeword bag of frames:

  python -m launch.prepare --source=mtat --source_dir=$HOME/data/mtat \
      --data_dir=$HOME/musemb_data --top_n_tags=50 --bof --n_codewords=2000

A folder of audio files with metadata.csv or metadata.jsonl (see musemb.data.sources.folder),
clips cropped to 30 s, every tag kept:

  python -m launch.prepare --source=folder --source_dir=$HOME/my_music \
      --data_dir=$HOME/musemb_data --max_seconds=30 --top_n_tags=0

The Million Song Dataset's previews with Last.fm tags (unique_tracks.txt, lastfm_tags.db and the
previews at <tid[2]>/<tid[3]>/<tid[4]>/<track id>.mp3 in one directory, or --path_pattern; see
musemb.data.sources.msd), stored as the thesis did: first 20 s of each preview at 16 kHz, top-50
tags with score > 50, split by Choi et al.'s published lists (a clone of
github.com/keunwoochoi/MSD_split_for_tagging; without --split_file the split is by artist):

  python -m launch.prepare --source=msd --source_dir=$HOME/data/msd \
      --data_dir=$HOME/musemb_data --split_file=$HOME/MSD_split_for_tagging

The same with the Art of the Mix 2011 playlists attached (aotm2011_playlists.json.gz as published;
see musemb.data.sources.aotm2011), for Lin et al.'s playlist-based tag propagation; the paper kept
only songs with audio and tags, hence --tagged_only:

  python -m launch.prepare --source=msd --source_dir=$HOME/data/msd \
      --data_dir=$HOME/musemb_data --tagged_only \
      --playlists=$HOME/data/aotm2011_playlists.json.gz --playlist_sequence=filtered

Any of these as an Apache Beam pipeline (the `beam` extra: pip install -e '.[beam]'), here on two
local worker processes; on a cluster, name its runner and pass its flags in --beam_options:

  python -m launch.prepare --source=synthetic --size=small --data_dir=/tmp/musemb_data \
      --beam_runner=DirectRunner --num_workers=2

The dataset lands in <data_dir>/musemb_<source>/<config>/1.0.0 (e.g. musemb_synthetic/demo-16k/
1.0.0); running the same command again reuses it. The command prints that directory, the split
sizes and what was skipped and why. Audio that cannot be used (unreadable, empty, shorter than
--min_seconds, NaN) is skipped and counted; a split losing more than --max_bad_fraction of its
tracks stops the build, and nothing half-written is left behind. With --bof the MFCC codebook and
every track's bag of frames are computed too and cached under <dataset dir>/derived/.
"""

from __future__ import annotations

import shlex

from absl import app
from absl import flags
from absl import logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, ["synthetic", "mtat", "folder", "msd"],
                  "Which source to prepare.")
flags.DEFINE_string("source_dir", None, "Raw data directory (mtat, folder, msd).")
flags.DEFINE_string("data_dir", None, "Root under which the prepared dataset is written.")
flags.DEFINE_string("size", "demo", "Synthetic world size: tiny, demo, small or large.")
flags.DEFINE_integer("seed", 0, "Synthetic world seed.")
flags.DEFINE_integer("sample_rate", 16000, "Sample rate of the stored audio (Hz).")
flags.DEFINE_float("max_seconds", None,
                   "Crop clips to their first max_seconds (msd: 20 unless given, as the thesis "
                   "stored; others: whole clips unless given).")
flags.DEFINE_float("min_seconds", 1.0, "Skip clips shorter than this (reason too_short).")
flags.DEFINE_integer("top_n_tags", 50,
                     "Keep the most frequent tags (mtat, folder, msd); 0 keeps all.")
flags.DEFINE_string("split_file", None,
                    "Split file: mtat (see sources.mtat) or msd (a track_id<TAB>split file or a "
                    "directory of train/valid/test id lists; see sources.msd.read_split_file).")
flags.DEFINE_string("path_pattern", "{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.mp3",
                    "MSD: where a track's preview is, with the fields {root}, {tid}, {song_id}.")
flags.DEFINE_float("min_tag_score", 50.0, "MSD: a track carries a Last.fm tag scored above this.")
flags.DEFINE_bool("tagged_only", False, "MSD: leave out tracks without a vocabulary tag.")
flags.DEFINE_string("playlists", None,
                    "MSD: AotM-2011's aotm2011_playlists.json[.gz] to attach as the playlist "
                    "table (see sources.aotm2011).")
flags.DEFINE_enum("playlist_sequence", "filtered", ["filtered", "playlist"],
                  "MSD with --playlists: each filtered_lists run is a sequence (filtered), or the "
                  "whole playlist with unmatched entries as gaps (playlist).")
flags.DEFINE_string("metadata", None,
                    "Folder source: metadata file (default: found in the folder).")
flags.DEFINE_float("max_bad_fraction", 0.05,
                   "Largest fraction of a split's tracks that may be skipped for bad audio.")
flags.DEFINE_string("config_name", None,
                    "Name of the dataset config (default: derived from the options).")
flags.DEFINE_integer("num_workers", None,
                     "Threads decoding audio (default: min(8, CPUs)); with "
                     "--beam_runner=DirectRunner, local worker processes (default: CPUs).")
flags.DEFINE_string("beam_runner", None,
                    "Generate the dataset as an Apache Beam pipeline on this runner: DirectRunner "
                    "(local processes, see --num_workers), or a cluster's (DataflowRunner, "
                    "FlinkRunner, SparkRunner, ...; --data_dir must then be storage the workers "
                    "share). Same dataset, skips and metadata as without it. Needs the beam "
                    "extra: pip install -e '.[beam]'.")
flags.DEFINE_string("beam_options", "",
                    "Beam pipeline flags, space-separated, e.g. '--direct_num_workers=4' or "
                    "'--project=P --region=R --temp_location=gs://B/tmp'.")
flags.DEFINE_bool("bof", False, "Also compute the MFCC codebook and bag-of-frames features.")
flags.DEFINE_integer("n_codewords", 2000, "Bag of frames: codebook size.")
flags.DEFINE_integer("bof_batch_size", 16, "Bag of frames: clips per MFCC batch.")
flags.mark_flags_as_required(["source", "data_dir"])


def make_source():
  """The source the flags describe."""
  top_n = FLAGS.top_n_tags or None
  if FLAGS.source == "synthetic":
    from musemb.data.sources import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.SyntheticWorld(FLAGS.size, seed=FLAGS.seed, sample_rate=FLAGS.sample_rate)
  if FLAGS.playlists and FLAGS.source != "msd":
    raise app.UsageError(f"--playlists is read by --source=msd only (AotM-2011 names MSD songs), "
                         f"not --source={FLAGS.source}.")
  if not FLAGS.source_dir:
    raise app.UsageError(f"--source={FLAGS.source} needs --source_dir (the raw data directory).")
  if FLAGS.source == "mtat":
    from musemb.data.sources import mtat  # pylint: disable=g-import-not-at-top
    return mtat.MagnaTagATune(FLAGS.source_dir, top_n_tags=top_n, split_file=FLAGS.split_file)
  if FLAGS.source == "msd":
    from musemb.data.sources import msd  # pylint: disable=g-import-not-at-top
    return msd.MillionSongDataset(FLAGS.source_dir, path_pattern=FLAGS.path_pattern,
                                  top_n_tags=top_n, min_tag_score=FLAGS.min_tag_score,
                                  tagged_only=FLAGS.tagged_only, split_file=FLAGS.split_file,
                                  playlists=FLAGS.playlists,
                                  playlist_sequence=FLAGS.playlist_sequence)
  from musemb.data.sources import folder  # pylint: disable=g-import-not-at-top
  return folder.AudioFolder(FLAGS.source_dir, metadata=FLAGS.metadata, top_n_tags=top_n)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.beam_options and not FLAGS.beam_runner:
    raise app.UsageError("--beam_options is read only with --beam_runner (e.g. "
                         "--beam_runner=DirectRunner).")
  common.setup()   # TensorFlow quiet and off the accelerators (it only reads data here)
  from musemb import features  # pylint: disable=g-import-not-at-top
  from musemb.data import builders  # pylint: disable=g-import-not-at-top
  from musemb.data import prepared as prepared_lib  # pylint: disable=g-import-not-at-top
  from musemb.data import derived  # pylint: disable=g-import-not-at-top

  source = make_source()
  max_seconds = FLAGS.max_seconds
  if max_seconds is None and FLAGS.source == "msd":
    from musemb.data.sources import msd  # pylint: disable=g-import-not-at-top
    max_seconds = msd.DEFAULT_CLIP_SECONDS
  dataset_dir = builders.prepare(
      source, FLAGS.data_dir, sample_rate=FLAGS.sample_rate, max_seconds=max_seconds,
      min_seconds=FLAGS.min_seconds, max_bad_fraction=FLAGS.max_bad_fraction,
      config_name=FLAGS.config_name, num_workers=FLAGS.num_workers,
      beam_runner=FLAGS.beam_runner, beam_options=shlex.split(FLAGS.beam_options))
  prepared = prepared_lib.load_prepared(dataset_dir)
  print(prepared.summary())
  if FLAGS.bof:
    config = derived.BofConfig(mfcc=features.MfccConfig(sample_rate=prepared.sample_rate),
                               n_codewords=FLAGS.n_codewords)
    _, bags = derived.compute_bag_of_frames(dataset_dir, config, batch_size=FLAGS.bof_batch_size)
    print(f"Bag of frames (K={config.n_codewords}, config {config.hash()[:12]}) at "
          f"{derived.cache_dir(dataset_dir, config)}")
    for split, bag in bags.items():
      nnz = bag.nnz_per_row()
      print(f"  {split}: {len(bag)} tracks, {nnz.mean():.1f} distinct codewords per track "
            f"(max {nnz.max()})")
  logging.info("Done: %s", dataset_dir)
  print(dataset_dir)


if __name__ == "__main__":
  app.run(main)
