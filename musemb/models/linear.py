"""Linear embedding models over sparse inputs: the tables MUSLSE (and its baselines) are made of.

Parameters are plain arrays in a pytree (no linen module: a table needs no layers, and plain arrays
make `vmap` over ensemble members, sharding and checkpointing trivial). A sparse input (a song's
bag-of-frames) is a padded list of feature ids `idx [..., P]` with values `val [..., P]`; padding has
value 0. Applying a table is a gather of its rows followed by a weighted sum over the bag, i.e. a
segment sum with one segment per song; the input is never densified.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normal_tables(rng: jax.Array, rows: dict[str, int], dim: int, members: int = 1,
                  std: float | None = None) -> dict[str, jax.Array]:
  """{name: [members, rows, dim]} drawn from N(0, std^2); std defaults to 1/sqrt(dim)."""
  std = 1.0 / jnp.sqrt(dim) if std is None else std
  keys = jax.random.split(rng, len(rows))
  return {name: std * jax.random.normal(k, (members, n, dim), jnp.float32)
          for k, (name, n) in zip(keys, sorted(rows.items()))}


def apply_sparse(table: jax.Array, idx: jax.Array, val: jax.Array) -> jax.Array:
  """table [F, D], idx/val [..., P] -> [..., D]: sum_p val[p] * table[idx[p]]."""
  return jnp.einsum("...p,...pd->...d", val, table[idx])


def densify(idx: jax.Array, val: jax.Array, num_features: int) -> jax.Array:
  """idx/val [n, P] -> dense [n, num_features] (duplicate ids add up; padding adds 0 to id 0)."""
  rows = jnp.broadcast_to(jnp.arange(idx.shape[0])[:, None], idx.shape)
  return jnp.zeros((idx.shape[0], num_features), val.dtype).at[rows, idx].add(val)


def max_norm(x: jax.Array, c: float) -> jax.Array:
  """Rescales the rows (last axis) of x whose l2 norm exceeds c to norm c; others unchanged."""
  norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x * jnp.minimum(1.0, c / jnp.maximum(norms, 1e-12))
