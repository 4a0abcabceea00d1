r"""Predictions of a trained run as JSON: MUSLSE tags/artists for audio, won text-to-music queries.

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
"""

import json
import os
import sys

from absl import app
from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained MUSLSE or won workdir.", required=True)
_TOP = flags.DEFINE_integer("top", 10, "How many tags / artists / songs to list.")
flags.DEFINE_alias("top_k", "top")
_QUERY = flags.DEFINE_multi_string(
    "query", [], "won runs: free text (one or more words) whose nearest songs are listed.")
_ACOUSTIC_WEIGHT = flags.DEFINE_float(
    "acoustic_weight", None, "won late-fusion runs: w in [0, 1] of the acoustic scores (default: "
    "the config's, else 0.5).")


def _check_args(config, paths: list[str]) -> None:
  """Usage errors found from the flags and the run's config alone (before anything heavy loads)."""
  system = config.get("system")
  if _TOP.value < 1:
    raise app.UsageError(f"--top={_TOP.value}: give a positive number of results.")
  if _QUERY.value:
    if system != "won":
      raise app.UsageError(
          f"--query needs a tag-based retrieval (won) run; {_WORKDIR.value} holds a {system!r} "
          "run, which predicts from audio files only: pass audio files instead of --query.")
    if paths:
      raise app.UsageError("pass either --query (text -> songs) or audio files (audio -> tags), "
                           "not both; run the tool twice.")
    blank = [q for q in _QUERY.value if not q.strip()]
    if blank:
      raise app.UsageError("--query is empty: give some words, e.g. "
                           "--query=\"dark ambient piano\".")
  elif not paths:
    hint = (" or --query=\"some words\"" if system == "won" else "")
    raise app.UsageError("give one or more audio files: python -m launch.predict --workdir=W "
                         f"a.mp3{hint}")
  branch = config.get("model", {}).get("branch")
  if system == "won" and paths and branch not in ("acoustic", "late_fusion"):
    raise app.UsageError(f"{_WORKDIR.value} is a {branch!r} won run, which embeds songs from "
                         "listening data, not audio: audio files need an acoustic or late_fusion "
                         "run (use --query for text).")
  if _ACOUSTIC_WEIGHT.value is not None:
    if system != "won":
      raise app.UsageError("--acoustic_weight applies to won late-fusion runs only.")
    if not 0.0 <= _ACOUSTIC_WEIGHT.value <= 1.0:
      raise app.UsageError(f"--acoustic_weight={_ACOUSTIC_WEIGHT.value} must be in [0, 1].")
  if system not in ("muslse", "won"):
    raise app.UsageError(f"{_WORKDIR.value} holds a {system!r} run; predict needs a MUSLSE or "
                         "won run.")


def _predict_muslse(config, paths: list[str]) -> dict:
  from musemb import audio, train  # pylint: disable=g-import-not-at-top
  from musemb.systems import muslse  # pylint: disable=g-import-not-at-top
  data = muslse.load_data(config, _WORKDIR.value)
  params = train.load_params(_WORKDIR.value, config, data)
  train_emb = muslse.song_embeddings(params, data.splits["train"].idx, data.splits["train"].val)
  results = {}
  for path in paths:
    try:
      wave = audio.load_audio(path, data.prepared.sample_rate, min_seconds=0.1)
    except audio.AudioError as e:
      results[path] = {"error": str(e)}
      continue
    results[path] = muslse.predict(params, data, wave, config, top=_TOP.value,
                                   train_embeddings=train_emb)
  return results


def _predict_won(config, paths: list[str]) -> dict:
  from musemb import report_won  # pylint: disable=g-import-not-at-top
  from musemb.text import readers as text_readers  # pylint: disable=g-import-not-at-top
  workdir = _WORKDIR.value
  index = report_won.load_song_index(workdir)
  queries = []
  if _QUERY.value:
    words = text_readers.load_word_vectors(os.path.join(workdir, "words.npz"))
    for text in _QUERY.value:
      try:
        q = report_won.split_query(words, text)
      except ValueError as e:  # includes text_tags.OutOfVocabularyError
        raise SystemExit(f"error: {e}") from e
      if q.oov:
        print(f"query {text!r}: {list(q.oov)} not in the run's word vectors; ranking with "
              f"{list(q.tokens)}.", file=sys.stderr)
      queries.append(q)
  common.setup()
  from musemb import audio  # pylint: disable=g-import-not-at-top
  from musemb.systems import won  # pylint: disable=g-import-not-at-top
  config, variables, words = won.load_run(workdir)
  if queries:
    weight = _ACOUSTIC_WEIGHT.value
    if weight is None:
      weight = report_won.late_fusion_weight(config.to_dict())
    return report_won.answer_queries(
        index, queries, lambda text: won.embed_query(variables, words, config, text), _TOP.value,
        weight)
  rate = int(config.data.sample_rate)
  results = {}
  for path in paths:
    try:
      wave = audio.load_audio(path, int(rate), min_seconds=0.1)
    except audio.AudioError as e:
      results[path] = {"error": str(e)}
      continue
    indices, scores = report_won.rank_tags(won.embed_audio(variables, config, wave),
                                           index.tag_embeddings, _TOP.value)
    results[path] = {"tags": [{"name": str(index.tag_names[i]), "score": float(s)}
                              for i, s in zip(indices, scores)]}
  return results


def main(argv):
  paths = argv[1:]
  config = common.load_workdir_config(_WORKDIR.value)
  _check_args(config, paths)
  if config.system == "won":
    results = _predict_won(config, paths)
  else:
    common.setup()
    results = _predict_muslse(config, paths)
  json.dump(results, sys.stdout, indent=2)
  sys.stdout.write("\n")


if __name__ == "__main__":
  app.run(main)
