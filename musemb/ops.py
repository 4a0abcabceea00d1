"""Small JAX numerics shared by models, objectives and samplers (one copy of each).

Kept at the bottom of the dependency order (it imports only JAX and numpy), so `models/`, `objectives/` and
`samplers/` can use it without importing each other.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


def mul_high_u32(a: jax.Array, b: jax.Array) -> jax.Array:
  """floor(a * b / 2^32) for uint32 a and b, exactly, without 64-bit integers.

  The high word of the 64-bit product, assembled from 16-bit halves so that no partial product
  overflows 32 bits (JAX runs without x64 by default).
  """
  a, b = jnp.asarray(a, jnp.uint32), jnp.asarray(b, jnp.uint32)
  low = jnp.uint32(0xFFFF)
  a_hi, a_lo, b_hi, b_lo = a >> 16, a & low, b >> 16, b & low
  lo_lo, hi_lo, lo_hi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi
  carry = ((lo_lo >> 16) + (hi_lo & low) + (lo_hi & low)) >> 16
  return a_hi * b_hi + (hi_lo >> 16) + (lo_hi >> 16) + carry


def uniform_below(rng: jax.Array, n: Any, shape: tuple[int, ...]) -> jax.Array:
  """int32 draws in [0, n) (n >= 1, a static int or an array broadcasting to `shape`).

  One 32-bit word per draw, mapped by multiply-high, floor(word * n / 2^32) (Lemire, "Fast Random
  Integer Generation in an Interval", 2019, without the rejection step): each value has
  probability floor(2^32 / n) / 2^32 or one 2^-32 more, a relative departure from 1/n below
  n / 2^32 (6e-6 for n = 26,972 labels). `jax.random.randint` is exactly uniform but splits its
  key and draws two words per value: three Threefry passes instead of one, and on CPU each pass is
  a rolled loop with a fixed cost of about 70 us here (README, Benchmarks, `warp`, stop 22).
  """
  if isinstance(n, (int, np.integer)) and not 1 <= int(n) <= 2**32 - 1:
    raise ValueError(f"musemb/ops.py uniform_below: n={n!r} must be in [1, 2^32 - 1]; draws "
                     "are in [0, n).")
  words = jax.random.bits(rng, shape, jnp.uint32)
  n = jnp.broadcast_to(jnp.asarray(n, jnp.uint32), shape)
  return mul_high_u32(words, n).astype(jnp.int32)
