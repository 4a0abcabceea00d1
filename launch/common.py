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


# Where the launchers keep JAX's persistent compilation cache: MUSEMB_JAX_CACHE names the folder,
# "off" (or "0", "false", "none", empty) turns the cache off; unset means the user's cache folder.
CACHE_ENV = "MUSEMB_JAX_CACHE"
_CACHE_OFF = ("", "0", "off", "false", "none", "no")


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/musemb/jax, or ~/.cache/musemb/jax when XDG_CACHE_HOME is unset."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "musemb", "jax")


def configure_compilation_cache(path: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache for this process; returns its folder or None.

  Every compiled XLA program (whatever its compile time or size) is written under the folder, and
  a later process that compiles the same program with the same JAX, backend and flags loads it
  instead: a second run of a launcher compiles nothing. Entries depend on the shapes, so a run on
  data with other shapes (e.g. another collection's ALS buckets) compiles its own. Only the
  launchers call this (through `setup`); importing musemb never touches the cache.

  Args:
    path: the cache folder; None reads $MUSEMB_JAX_CACHE, then keeps a folder already given to JAX
      (JAX_COMPILATION_CACHE_DIR), then uses `default_cache_dir()`. "off" (or "0", "false",
      "none", "") disables the cache.

  Returns:
    The folder in use, or None when the cache is off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if path is None:
    path = os.environ.get(CACHE_ENV)
  if path is None:
    path = jax.config.jax_compilation_cache_dir or default_cache_dir()
  if path.strip().lower() in _CACHE_OFF:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    fail(f"cannot create the JAX compilation cache folder {path} ({e.strerror}); point "
         f"--jax_cache (or ${CACHE_ENV}) at a writable folder, or pass --jax_cache=off.")
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  # JAX's defaults skip programs that compile in under a second; musemb's are many small ones
  # (e.g. one per ALS bucket shape at about 0.5 s each), so cache every program.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path


# numpy advises the kernel to back every array of 4 MB or more with 2 MB transparent huge pages
# (madvise MADV_HUGEPAGE). Where the kernel's THP "defrag" mode compacts memory synchronously for
# such regions ("always", "madvise", "defer+madvise"), a fault that finds no free huge page
# stalls while the kernel migrates pages to make one. On this project's VMs (defrag "madvise",
# memory fragmented by earlier processes) 200 MB of fresh numpy arrays took 0.4-1.5 s to touch
# with the advice and 0.11-0.13 s without it (0.03 s when free huge pages happened to be there).
HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"
THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
_STALLING_DEFRAG = ("always", "madvise", "defer+madvise")


def hugepage_faults_stall(defrag_path: str = THP_DEFRAG) -> bool:
  """Whether a fault in memory advised for huge pages compacts memory synchronously here.

  Reads the selected (bracketed) mode of the kernel's THP defrag setting; False where the file is
  missing or unreadable (not Linux, THP compiled out).
  """
  try:
    with open(defrag_path) as f:
      selected = re.search(r"\[([^\]]+)\]", f.read())
  except OSError:
    return False
  return selected is not None and selected.group(1) in _STALLING_DEFRAG


def host_memory_env(defrag_path: str = THP_DEFRAG) -> dict[str, str]:
  """Environment entries that give a child process the host-memory policy of `configure_host_memory`.

  {NUMPY_MADVISE_HUGEPAGE: "0"} where faults for huge pages stall (`hugepage_faults_stall`), {}
  where they do not or where the user set NUMPY_MADVISE_HUGEPAGE (their choice stands).
  """
  if HUGEPAGE_ENV in os.environ or not hugepage_faults_stall(defrag_path):
    return {}
  return {HUGEPAGE_ENV: "0"}


def configure_host_memory(defrag_path: str = THP_DEFRAG) -> bool:
  """Turns off numpy's huge-page advice in this process where faults for huge pages stall.

  The trade (see `HUGEPAGE_ENV`): a host array in small pages costs about 0.5 ms per MB on first
  touch here, every time; in huge pages 0.15 ms when the kernel has free huge pages and 5-10 ms
  when it must compact memory for them, as it mostly had to on this project's VMs after earlier
  jobs had run. The setup of an ALS fit touches about 200 MB of fresh host memory (README,
  Benchmarks, `als`): its first iteration took 1.51-1.58 s instead of 2.17-2.46 s. Only the
  launchers call this (through `setup`), and a NUMPY_MADVISE_HUGEPAGE the user set is left to
  numpy. Returns whether the advice was turned off.
  """
  if not host_memory_env(defrag_path):
    return False
  return numpy_hugepage_advice(False) is not None


def numpy_hugepage_advice(enabled: bool) -> bool | None:
  """Sets numpy's huge-page advice for arrays it allocates from now on; returns the setting it
  replaced, or None (nothing set) where this numpy has no such switch."""
  try:
    from numpy._core import multiarray  # pylint: disable=g-import-not-at-top
  except ImportError:  # numpy 1.x
    from numpy.core import multiarray  # pylint: disable=g-import-not-at-top
  set_advice = getattr(multiarray, "_set_madvise_hugepage", None)
  return None if set_advice is None else bool(set_advice(enabled))


# CPU devices a launcher gives a CPU-bound job that shards over devices (WMF's ALS fit): XLA:CPU
# runs a program's operations mostly one after another, one device's program on one thread, so a
# 1-device fit left the second core of this project's 2-core VMs mostly idle. Each device keeps
# its own replica of a replicated array (ALS's factor table), hence the cap.
MAX_CPU_DEVICES = 8


def default_cpu_devices() -> int:
  """One CPU device per core, at most MAX_CPU_DEVICES."""
  return max(1, min(os.cpu_count() or 1, MAX_CPU_DEVICES))


def configure_cpu_devices(count: int = 0) -> int | None:
  """Gives this process's JAX `count` CPU devices (0: `default_cpu_devices()`); returns the count.

  Must run before JAX starts its backends (before any computation): launchers call it first.
  Accelerator hosts are unaffected (their meshes take the accelerators; the CPU devices stay
  unused). Leaves the devices alone, returning None, where XLA_FLAGS already sets
  --xla_force_host_platform_device_count (the tests' simulated meshes), or where JAX has started
  (logged). The launchers call it through `configure_system_devices` for a system that asks
  (WMF's ALS: `configs/wmf.py`, `wmf.cpu_devices`); the others keep one CPU device, since their
  batches and models would shard over CPU devices too.
  """
  if isinstance(count, bool) or not isinstance(count, int) or count < 0:
    raise ValueError(f"cpu_devices={count!r} must be an integer >= 0 (0: one per core, at most "
                     f"{MAX_CPU_DEVICES}).")
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  import jax  # pylint: disable=g-import-not-at-top
  count = count or default_cpu_devices()
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as e:  # JAX has already started its backends
    logging.warning("keeping JAX's CPU devices as they are (%d asked): %s", count, e)
    return None
  return count


def configure_system_devices(config) -> int | None:
  """`configure_cpu_devices` with what the config's system asks for (its `cpu_devices` verb);
  None, leaving JAX's default, for a system without one."""
  from musemb import systems  # pylint: disable=g-import-not-at-top  (imports JAX, starts nothing)
  try:
    system = systems.get(config.get("system"))
  except ValueError:  # an unknown system: the launcher's own checks report it
    return None
  return None if system.cpu_devices is None else configure_cpu_devices(system.cpu_devices(config))


def _cache_flag_value() -> str | None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "jax_cache" not in flags.FLAGS or not flags.FLAGS.is_parsed():
    return None
  return flags.FLAGS.jax_cache


def define_cache_flag() -> None:
  """Defines --jax_cache (once) for the launchers: the compilation cache folder, or "off"."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "jax_cache" not in flags.FLAGS:
    flags.DEFINE_string(
        "jax_cache", None,
        "Folder of JAX's persistent compilation cache (a second run compiles nothing); 'off' "
        f"disables it. Default: ${CACHE_ENV}, else {default_cache_dir()}.")


def setup() -> None:
  """TensorFlow on the CPU only (tf.data), quiet TF logs, the JAX compilation cache, numpy's
  huge-page advice where it stalls (`configure_host_memory`), multi-host JAX.

  The cache folder comes from --jax_cache, else $MUSEMB_JAX_CACHE, else the user's cache folder
  (see `configure_compilation_cache`); "off" turns it off.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  configure_compilation_cache(_cache_flag_value())
  configure_host_memory()
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.getLogger().addFilter(_QuietLibraries())
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from musemb import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed()


define_cache_flag()


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
