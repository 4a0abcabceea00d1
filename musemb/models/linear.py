"""Linear embedding models over sparse inputs: the tables MUSLSE (and its baselines) are made of.

Parameters are plain arrays in a pytree (no linen module: a table needs no layers, and plain arrays
make `vmap` over ensemble members, sharding and checkpointing trivial). A sparse input (a song's
bag-of-frames) is a padded list of feature ids `idx [..., P]` with values `val [..., P]`; padding has
value 0. Applying a table is a weighted sum of the rows of a bag's features, in one of two forms
(`apply_sparse`): a gather of the rows and a segment sum (memory and work per bag: P rows), or the
batch's bags scattered into dense rows `[n, F]` and one matrix product with the table (work F per
bag, but a GEMM, and its gradient with respect to the table another GEMM instead of a scatter-add
of n*P rows). Tables and data on disk stay sparse; only a batch's bags are densified, inside the
step, when that is the faster form (DESIGN: "Inside a step, pick the form that is fastest for the
batch").
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


BAG_FORMS = ("auto", "gather", "dense")
# `auto` densifies when F <= DENSE_FACTOR * P. Measured on 2 cores (the MUSLSE step with its
# gradient, d = 100, B = 128, F = 2,000 codewords, P = 683: the `bags20k` world of
# launch/benchmarks/warp.py), the dense form's step took 1/7-1/10 of the gather's at F / P = 3
# (README, Benchmarks, `warp`): its F / P times more multiply-adds run as GEMMs, where the gather
# form's forward gathers B * P rows and its gradient scatter-adds as many, which XLA's CPU backend
# does row by row. The factor 8 keeps the dense form while the extra work is within what that
# speed-up pays for, and the gather where bags are tiny against the vocabulary (F = 1M, P = 50:
# memory B * F and 20,000x the work).
DENSE_FACTOR = 8


def apply_sparse(table: jax.Array, idx: jax.Array, val: jax.Array, form: str = "auto"
                 ) -> jax.Array:
  """table [F, D], idx/val [..., P] -> [..., D]: sum_p val[p] * table[idx[p]].

  form: "gather" (gather the P rows of each bag, weighted sum), "dense" (scatter the bags into
  dense rows [n, F], one GEMM) or "auto" (dense when F <= DENSE_FACTOR * P). The forms agree up to
  float32 summation order.
  """
  if form not in BAG_FORMS:
    raise ValueError(f"musemb/models/linear.py apply_sparse: form={form!r}; expected one of "
                     f"{BAG_FORMS} (model.bag_form in configs/muslse.py).")
  if idx.shape != val.shape:
    raise ValueError(f"musemb/models/linear.py apply_sparse: idx {idx.shape} and val {val.shape} "
                     "must have the same shape [..., P].")
  num_features, width = table.shape[0], idx.shape[-1]
  if form == "dense" or (form == "auto" and num_features <= DENSE_FACTOR * width):
    lead = idx.shape[:-1]
    dense = densify(idx.reshape(-1, width), val.reshape(-1, width), num_features)
    return (dense @ table).reshape(*lead, table.shape[-1])
  return jnp.einsum("...p,...pd->...d", val, table[idx])


def densify(idx: jax.Array, val: jax.Array, num_features: int) -> jax.Array:
  """idx/val [n, P] -> dense [n, num_features] (duplicate ids add up; padding adds 0 to id 0)."""
  rows = jnp.broadcast_to(jnp.arange(idx.shape[0])[:, None], idx.shape)
  return jnp.zeros((idx.shape[0], num_features), val.dtype).at[rows, idx].add(val)


def max_norm(x: jax.Array, c: float) -> jax.Array:
  """Rescales the rows (last axis) of x whose l2 norm exceeds c to norm c; others unchanged."""
  norms = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x * jnp.minimum(1.0, c / jnp.maximum(norms, 1e-12))
