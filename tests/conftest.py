"""Shared fixtures: the tiny synthetic world, prepared once per test session."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# librosa's numba functions (the reference DSP of the feature tests) cache their compiled code
# beside the installed package, where one bad compile is loaded by every later process: a test
# worker that segfaulted in its first compile of librosa's zero crossings (stop 20) left a cache
# that crashed every later call, in any process, until it was deleted. Each test process compiles
# into its own cache instead; set NUMBA_CACHE_DIR to choose one. Set before numba is imported.
if "NUMBA_CACHE_DIR" not in os.environ:
  os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="musemb-tests-numba-")
  atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)


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
