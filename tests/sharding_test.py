"""musemb/sharding.py: the mesh, batch placement over `data`, replicated tables, clear errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from musemb import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_device_is_the_one_element_mesh():
  mesh = sharding.make_mesh(1)
  assert mesh.axis_names == (sharding.DATA, sharding.MODEL)
  assert mesh.devices.shape == (1, 1) and sharding.data_size(mesh) == 1
  batch = sharding.shard_batch({"song": np.arange(4, dtype=np.int32)}, mesh)
  np.testing.assert_array_equal(np.asarray(batch["song"]), np.arange(4))
  assert batch["song"].sharding.spec == jax.sharding.PartitionSpec(sharding.DATA)


def test_errors_name_the_fix():
  with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
    sharding.make_mesh(len(jax.devices()) + 1)
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh(1, model_axis=2)


def test_initialize_distributed_is_a_no_op_without_a_cluster(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MUSEMB_DISTRIBUTED"):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
  sharding.initialize_distributed()
  assert not called
  monkeypatch.setenv("MUSEMB_DISTRIBUTED", "1")
  sharding.initialize_distributed()
  assert called == [1]


_EIGHT = r"""
import jax, numpy as np
from musemb import sharding
mesh = sharding.make_mesh()
assert sharding.data_size(mesh) == 8, mesh
try:
  sharding.check_batch_size(12, mesh)
  raise SystemExit("batch 12 on 8 devices was accepted")
except ValueError as e:
  assert "multiple of 8" in str(e), e
sharding.check_batch_size(16, mesh)
batch = sharding.shard_batch({"x": np.arange(32, dtype=np.float32).reshape(16, 2)}, mesh)
x = batch["x"]
# Rows split over the data axis: each device holds 2 consecutive rows, the global array is whole.
assert x.shape == (16, 2) and len(x.addressable_shards) == 8
for shard in x.addressable_shards:
  assert shard.data.shape == (2, 2)
  lo = shard.index[0].start
  np.testing.assert_array_equal(np.asarray(shard.data), np.arange(32).reshape(16, 2)[lo:lo + 2])
tables = sharding.put_replicated({"t": np.ones((3, 4), np.float32)}, mesh)
assert all(s.data.shape == (3, 4) for s in tables["t"].addressable_shards)
# A jitted reduction over the sharded batch equals the host one (the collective is inserted).
total = jax.jit(lambda b, t: b["x"].sum() + t["t"].sum())(batch, tables)
assert float(total) == float(np.arange(32).sum() + 12), total
print("ok")
"""


def test_eight_devices_split_the_batch_and_replicate_the_tables():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", _EIGHT], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
