r"""Predictions of a trained run as JSON, through its system's predictor (`musemb.systems`).

MUSLSE run: tags, artists and similar training songs for audio files.

  python -m launch.predict --workdir=workdirs/demo song1.mp3 song2.wav

Each file is decoded with soundfile, resampled to the dataset's rate and turned into the same MFCC
bag-of-frames as the training data (the cached codebook); unreadable files get an "error" entry.

Tag-based retrieval run (`configs/won.py`, Won et al. 2021): the songs of the run's index
(`song_index.npz`) nearest a free-text query, or the tags nearest audio files.

  python -m launch.predict --workdir=workdirs/won --query="dark ambient piano" --top_k=5
  python -m launch.predict --workdir=workdirs/won song1.mp3

A multi-word query is embedded as one tag is (`musemb.text.tags.query_vector`): its phrase token
when the vocabulary has one ("deep house" -> deep_house), else the mean of the vectors of its
longest in-vocabulary pieces ("dark ambient piano" -> dark_ambient and piano), then passed through
the run's tag branch. Words with no vector are listed on stderr and left out; a query with no
known word is an error. Late-fusion runs rank by w cos(acoustic) + (1 - w) cos(cultural)
(`--acoustic_weight`, default from the config, else 0.5). `--query` may be repeated.

Album-review run (`configs/rush.py`, Rush et al.): the reviews nearest an audio file (its
AcousticBrainz-layout descriptor vector, computed at the run's descriptor rate and z-scored with the
training statistics, through the audio branch), with their albums and distances; or the albums
nearest a text (through the run's vocabulary and text branch).

  python -m launch.predict --workdir=workdirs/reviews/main song.wav
  python -m launch.predict --workdir=workdirs/reviews/main --query="warm acoustic guitar"
"""

import json
import sys

from absl import app
from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's workdir.", required=True)
_TOP = flags.DEFINE_integer("top", 10, "How many tags / artists / songs to list.")
flags.DEFINE_alias("top_k", "top")
_QUERY = flags.DEFINE_multi_string(
    "query", [], "Free text (one or more words) whose nearest songs are listed (runs with a word "
    "space, e.g. Won et al.'s).")
_ACOUSTIC_WEIGHT = flags.DEFINE_float(
    "acoustic_weight", None, "Late-fusion runs of Won et al.: w in [0, 1] of the acoustic scores "
    "(default: the config's, else 0.5).")


def _check_args(paths: list[str]) -> None:
  """Usage errors found from the flags alone (before anything heavy loads)."""
  if _TOP.value < 1:
    raise app.UsageError(f"--top={_TOP.value}: give a positive number of results.")
  if _QUERY.value and paths:
    raise app.UsageError("pass either --query (text -> songs) or audio files (audio -> tags), "
                         "not both; run the tool twice.")
  if not _QUERY.value and not paths:
    raise app.UsageError("give one or more audio files: python -m launch.predict --workdir=W "
                         "a.mp3, or --query=\"some words\" for a run that searches text.")
  if any(not q.strip() for q in _QUERY.value):
    raise app.UsageError("--query is empty: give some words, e.g. --query=\"dark ambient piano\".")


def main(argv):
  paths = argv[1:]
  _check_args(paths)
  from musemb import systems  # pylint: disable=g-import-not-at-top
  try:
    system, _ = systems.for_workdir(_WORKDIR.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  common.setup()
  from musemb import audio, train  # pylint: disable=g-import-not-at-top
  options = {} if _ACOUSTIC_WEIGHT.value is None else {"acoustic_weight": _ACOUSTIC_WEIGHT.value}
  try:
    predictor = train.load_predictor(_WORKDIR.value, **options)
  except (TypeError, ValueError) as e:   # no predictor, or options the system does not take
    raise app.UsageError(f"{_WORKDIR.value}: {e}") from e
  results = {}
  if _QUERY.value:
    if not predictor.searches_text:
      raise app.UsageError(f"{_WORKDIR.value} holds a {system.name!r} run, which predicts from "
                           "audio files only: pass audio files instead of --query.")
    for text in _QUERY.value:
      try:
        results[text] = predictor.search(text, _TOP.value)
      except ValueError as e:   # no word of the query has a vector
        raise SystemExit(f"error: {e}") from e
      if results[text].get("oov"):
        print(f"query {text!r}: {results[text]['oov']} not in the run's word vectors; ranking "
              f"with {results[text]['words']}.", file=sys.stderr)
  else:
    if predictor.sample_rate is None:
      raise app.UsageError(f"{_WORKDIR.value} holds a {system.name!r} run that does not embed "
                           "audio (e.g. a cultural or hybrid Won et al. run: its songs come from "
                           "listening data); audio files need a run that hears audio (acoustic "
                           "or late_fusion), or use --query for text.")
    for path in paths:
      try:
        wave = audio.load_audio(path, predictor.sample_rate, min_seconds=0.1)
      except audio.AudioError as e:
        results[path] = {"error": str(e)}
        continue
      results[path] = predictor.analyze(wave, _TOP.value)
  json.dump(results, sys.stdout, indent=2)
  sys.stdout.write("\n")
  if paths and all("error" in results[p] for p in paths):
    sys.exit(1)      # every file failed: a script calling the tool should notice


if __name__ == "__main__":
  app.run(main)
