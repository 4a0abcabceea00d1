"""Shared fixtures: the tiny synthetic world, prepared once per test session."""

import importlib.util
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# librosa (the feature tests' reference DSP) runs in a server process of its own, never in a test
# process. Its numba code (compiled or loaded when librosa is imported) segfaulted at random in
# pytest-xdist workers that had already run JAX, TensorFlow and gensim tests: in three full runs out
# of three after one change to the ranking tests (stop 20), then again after its zero-crossing
# reference alone moved out; and a fresh interpreter that loaded code such a worker had cached
# crashed too. Fresh interpreters that compile for themselves never failed (dozens of runs). The
# server compiles into its own numba cache, not the one beside the installed package, which every
# later process would load.
_LIBROSA_SERVER = r"""
import pickle, struct, sys, traceback
import librosa
requests, replies = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr  # anything printed goes to stderr, never into the replies
while True:
  header = requests.read(8)
  if len(header) < 8:
    break
  name, args, kwargs = pickle.loads(requests.read(struct.unpack("<Q", header)[0]))
  try:
    target = librosa
    for part in name.split("."):
      target = getattr(target, part)
    reply = (True, target(*args, **kwargs))
  except Exception:  # the test process must not need librosa to unpickle the error
    reply = (False, traceback.format_exc())
  data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
  replies.write(struct.pack("<Q", len(data)) + data)
  replies.flush()
"""


class _LibrosaServer:
  """One librosa process per test process, started on first use, answering calls in order."""

  def __init__(self):
    self._proc = None
    self._cache = tempfile.mkdtemp(prefix="musemb-tests-numba-")

  def call(self, name, args, kwargs):
    if self._proc is None:
      env = dict(os.environ, NUMBA_CACHE_DIR=self._cache)
      self._proc = subprocess.Popen([sys.executable, "-c", _LIBROSA_SERVER],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    data = pickle.dumps((name, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    self._proc.stdin.write(struct.pack("<Q", len(data)) + data)
    self._proc.stdin.flush()
    header = self._proc.stdout.read(8)
    if len(header) < 8:
      code = self._proc.wait()
      self._proc = None  # the next call starts a fresh server
      raise RuntimeError(f"the librosa reference process died (exit {code}) in librosa.{name}")
    ok, value = pickle.loads(self._proc.stdout.read(struct.unpack("<Q", header)[0]))
    if not ok:
      raise RuntimeError(f"librosa.{name} raised in the reference process:\n{value}")
    return value

  def close(self):
    if self._proc is not None:
      self._proc.stdin.close()
      self._proc.wait(timeout=60)
      self._proc = None
    shutil.rmtree(self._cache, ignore_errors=True)


class _Remote:
  """`librosa.feature.mfcc(...)`, evaluated by the server: attribute access builds the dotted name,
  a call sends it with its (picklable: numpy, scalars, strings) arguments and returns the result."""

  def __init__(self, server, name=""):
    self._server, self._name = server, name

  def __getattr__(self, attr):
    if attr.startswith("__"):
      raise AttributeError(attr)
    return _Remote(self._server, f"{self._name}.{attr}" if self._name else attr)

  def __call__(self, *args, **kwargs):
    return self._server.call(self._name, args, kwargs)


@pytest.fixture(scope="session")
def librosa():
  """librosa, called in a separate process (see `_LIBROSA_SERVER`): `librosa.stft(y, n_fft=512)`."""
  if importlib.util.find_spec("librosa") is None:
    pytest.skip("librosa (a test dependency) is not installed: make install")
  server = _LibrosaServer()
  yield _Remote(server)
  server.close()


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
  """A prepared TFDS dataset of the tiny synthetic world (bag-of-frames cached beside it on use)."""
  from musemb.data import builders
  from musemb.data.sources import synthetic
  root = tmp_path_factory.mktemp("tiny_data")
  return builders.prepare(synthetic.SyntheticWorld("tiny", seed=0), str(root), sample_rate=16000)


@pytest.fixture
def tiny_config(tiny_dataset_dir):
  from configs import muslse
  config = muslse.get_config("tiny")
  config.data_dir = tiny_dataset_dir
  return config


@pytest.fixture(scope="session")
def repo_env():
  """`repo_env(**extra)`: the environment a subprocess of the tests runs with (repo on the path,
  CPU only, TensorFlow quiet), plus `extra`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def make(**extra):
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.update(extra)
    return env
  return make


@pytest.fixture(scope="session")
def final_params():
  """`final_params(workdir, best=False)`: (step, params as numpy) of a run's latest (or best)
  checkpoint, restored onto this process's devices."""
  def restore(workdir, best=False):
    import jax
    import numpy as np
    from musemb import systems, train
    system, config = systems.for_workdir(workdir)
    data = system.load_data(config, workdir)
    step, variables = train.load_variables(workdir, system, config, data.info, best=best)
    return step, jax.tree.map(np.asarray, variables["params"])
  return restore
