"""Tests for musemb.ops: the shared numerics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb import ops


def test_mul_high_is_the_exact_high_word_of_the_product():
  rng = np.random.default_rng(0)
  edges = np.array([0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF], np.uint64)
  a = np.concatenate([rng.integers(0, 2**32, 20_000, dtype=np.uint64), np.repeat(edges, 8)])
  b = np.concatenate([rng.integers(0, 2**32, 20_000, dtype=np.uint64), np.tile(edges, 8)])
  got = np.asarray(ops.mul_high_u32(a.astype(np.uint32), b.astype(np.uint32)))
  np.testing.assert_array_equal(got.astype(np.uint64), (a * b) >> np.uint64(32))


@pytest.mark.parametrize("n", [1, 7, 47, 26_972])
def test_uniform_below_stays_in_range_and_is_uniform(n):
  draws = np.asarray(ops.uniform_below(jax.random.key(n), n, (400_000,)))
  assert draws.dtype == np.int32 and draws.min() >= 0 and draws.max() < n
  if n > 1:
    counts = np.bincount(draws, minlength=n)
    expected = len(draws) / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # Chi-square with n - 1 degrees of freedom: mean n - 1, sd sqrt(2 (n - 1)); 5 sd is far out.
    assert abs(chi2 - (n - 1)) < 5 * np.sqrt(2 * (n - 1)), chi2


def test_uniform_below_takes_a_bound_per_draw():
  bounds = jnp.asarray([1, 2, 3, 1000], jnp.int32)
  draws = np.asarray(ops.uniform_below(jax.random.key(1), bounds[None, :], (5000, 4)))
  assert (draws >= 0).all() and (draws < np.asarray(bounds)[None, :]).all()
  assert (draws[:, 0] == 0).all()
  assert set(np.unique(draws[:, 2])) == {0, 1, 2}


@pytest.mark.parametrize("n", [0, -3, 2**32])
def test_uniform_below_rejects_a_static_bound_outside_its_range(n):
  with pytest.raises(ValueError, match="uniform_below"):
    ops.uniform_below(jax.random.key(0), n, (3,))
