"""Device mesh and batch placement: one code path from one CPU to a multi-host pod.

Every jitted step takes arrays placed on a `jax.sharding.Mesh` with a `data` axis (and a `model` axis
of size 1 unless a config asks for row-sharded label tables). One device is the one-element mesh.
Batches are built per process and assembled into global arrays with
`jax.make_array_from_process_local_data`, as big_vision and the flax examples do.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
MODEL = "model"


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` for multi-host jobs; single-host runs skip it.

  It runs when the environment says the job spans hosts: `JAX_COORDINATOR_ADDRESS` (with
  `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`), a Cloud TPU pod (`TPU_WORKER_HOSTNAMES`), or
  `MUSEMB_DISTRIBUTED=1`, which lets JAX auto-detect the cluster (e.g. SLURM).

  `jax.distributed.initialize` reads only the coordinator's address from the environment; the
  process count and id are passed here from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, without
  which a plain launch (no SLURM, Open MPI or TPU metadata to detect) fails with "Number of
  processes must be defined".
  """
  if (os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TPU_WORKER_HOSTNAMES")
      or os.environ.get("MUSEMB_DISTRIBUTED") == "1"):
    kwargs = {}
    if os.environ.get("JAX_NUM_PROCESSES"):
      kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if os.environ.get("JAX_PROCESS_ID"):
      kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def make_mesh(num_devices: int | None = None, model_axis: int = 1) -> Mesh:
  """A `(data, model)` mesh over the first `num_devices` devices (all by default)."""
  devices = jax.devices()
  n = len(devices) if not num_devices else num_devices
  if n > len(devices):
    raise ValueError(f"mesh asks for {n} devices but only {len(devices)} are visible; on CPU set "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate more.")
  if n % model_axis:
    raise ValueError(f"model axis {model_axis} does not divide the {n} devices.")
  grid = np.asarray(devices[:n]).reshape(n // model_axis, model_axis)
  return Mesh(grid, (DATA, MODEL))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def data_size(mesh: Mesh) -> int:
  return mesh.shape[DATA]


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  n = data_size(mesh)
  if batch_size % n:
    raise ValueError(f"batch_size {batch_size} is not divisible by the {n} devices of the data axis; "
                     f"pick a multiple of {n} (--config.train.batch_size).")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process batch (leading axis = this process's share) -> global arrays sharded over `data`."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree of host arrays on every device of the mesh (tables, small constants)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x), sharding), tree)
