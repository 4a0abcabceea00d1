"""Process set-up shared by the launchers (kept out of the library: no side effects at import)."""

import logging
import os


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
