r"""Tags, artists and similar training songs for audio files, from a trained MUSLSE run, as JSON.

  python -m launch.predict --workdir=workdirs/demo song1.mp3 song2.wav

Each file is decoded with soundfile, resampled to the dataset's rate and turned into the same MFCC
bag-of-frames as the training data (the cached codebook); unreadable files get an "error" entry.
"""

import json
import sys

from absl import app
from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained MUSLSE workdir.", required=True)
_TOP = flags.DEFINE_integer("top", 10, "How many tags / artists / songs to list.")


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give one or more audio files: python -m launch.predict --workdir=W a.mp3")
  common.setup()
  from musemb import audio, train  # pylint: disable=g-import-not-at-top
  from musemb.systems import muslse  # pylint: disable=g-import-not-at-top
  config = common.load_workdir_config(_WORKDIR.value)
  if config.system != "muslse":
    raise app.UsageError(f"{_WORKDIR.value} holds a {config.system!r} run; predict needs MUSLSE.")
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
  json.dump(results, sys.stdout, indent=2)
  sys.stdout.write("\n")


if __name__ == "__main__":
  app.run(main)
