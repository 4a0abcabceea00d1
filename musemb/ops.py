"""Small JAX numerics shared by models, objectives and samplers (one copy of each).

Kept at the bottom of the dependency order (it imports only JAX), so `models/`, `objectives/` and
`samplers/` can use it without importing each other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||, eps)` along `axis` (zero rows stay zero).

  Written with the squared norm so that a zero row has a zero gradient: `jnp.linalg.norm` has a NaN
  gradient at 0, which a head whose inputs batch norm zeroed (batch of one) would hit.
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


# Computation dtypes the models accept (`model.dtype`; configs/common.MODEL_DTYPES mirrors it,
# since configs import nothing heavier than ml_collections). Parameters stay float32 either way.
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str, module: str) -> jnp.dtype:
  """The jnp dtype for a model's `dtype` option `name`; a ValueError naming `module` otherwise."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"{module}: dtype={name!r}; expected one of {COMPUTE_DTYPES}.")
  return jnp.dtype(name)
