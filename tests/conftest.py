"""Shared fixtures: the tiny synthetic world, prepared once per test session."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


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
