"""Process set-up shared by the launchers (kept out of the library: no side effects at import)."""

import logging
import os
import re
import sys


# TensorFlow only reads data here. Its oneDNN notice ("oneDNN custom operations are on ...") and the
# absl C++ line that precedes it ignore TF_CPP_MIN_LOG_LEVEL; without oneDNN neither is printed
# (no TensorFlow arithmetic reaches a result). Set before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


class _QuietLibraries(logging.Filter):
  """Drops INFO chatter of orbax/TFDS/absl internals (each checkpoint logs ~30 lines) from the log."""

  _PREFIXES = ("orbax", "etils", "tensorflow_datasets", "jax/_src")

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    path = record.pathname.replace(os.sep, "/")
    return not any(f"/{p}" in path for p in self._PREFIXES)


def setup() -> None:
  """TensorFlow on the CPU only (tf.data), quiet TF logs, multi-host JAX when configured."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.getLogger().addFilter(_QuietLibraries())
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from musemb import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed()


def metrics_lines(metrics: dict) -> str:
  """`metric: value` lines, sorted, for the launchers' closing log line."""
  return "\n".join(f"  {k}: {float(v):.4f}" for k, v in sorted(metrics.items()))


def read_metrics(workdir: str) -> dict:
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "metrics.json")) as f:
    return json.load(f)


def fail(message: str, status: int = 2):
  """Ends the launcher with `message` alone on stderr (a user's mistake needs no traceback)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad `--config.x=y` override reported as its message alone.

  ml_collections raises the "Did you mean ...?" errors from inside absl's parser, which would
  otherwise print a fifty-line traceback around them. Pass as `app.run(main, flags_parser=...)`.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e}\nPass --help for the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e.args[0] if e.args else e)
    # ml_collections nests its KeyError's repr in the AttributeError: unwrap the quoting.
    text = re.sub(r"\\n|\n", " ", text).replace("\\", "").replace("'", "").strip()
    fail(f"bad --config override: {text}")
