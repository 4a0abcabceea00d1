"""Weighted matrix factorisation for implicit feedback (implicit ALS) in JAX.

Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets" (ICDM 2008): every
(user, item) pair gets a preference p_ui = [count_ui > 0] and a confidence c_ui, and the factors
minimise

  L(X, Y) = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + lambda (sum_u ||x_u||^2 + sum_i ||y_i||^2)

over *all* users x items pairs, zeros included. Confidence is c = 1 + alpha * count (the paper's
eq. 6 choice) or the log variant c = 1 + alpha * log(1 + count / eps). Alternating least squares
fixes one side and solves every row of the other in closed form,

  x_u = (Y^T C_u Y + lambda I)^-1 Y^T C_u p_u,

with the paper's trick Y^T C_u Y = Y^T Y + Y^T (C_u - I) Y: Y^T Y is shared by all users and
(C_u - I) is non-zero only on the user's non-zeros, so a row costs O(nnz_u f^2 + f^3) instead of
O(items f^2). `solver="cg"` replaces the f x f solve by a few conjugate-gradient steps warm-started
from the previous factors, never forming the matrix (Takacs, Pilaszy & Tikk, "Applications of the
conjugate gradient method for implicit feedback collaborative filtering", RecSys 2011; what
`implicit`'s `use_cg=True` does); `solver="exact"` solves each system by Cholesky. A CG row reads
its gathered factors Y_u twice per matrix-vector product (Y_u v, then Y_u^T (c - 1) Y_u v); the
starting residual b - A x0 = Y_u^T (c - (c - 1) Y_u x0) - (Y^T Y + lambda I) x0 folds b into the
first product, as `implicit` does, and the last step needs only p^T A p (one pass, not two), so 3
steps cost 7 passes over Y_u after one gather.

Data layout. Counts arrive as a scipy CSR matrix and are never densified. Rows are grouped by their
number of non-zeros n into buckets of padded width w, the smallest width of the ladder
`bucket_widths` (multiples of 8 growing by 1.25x: 8, 16, 24, 32, 40, 56, 72, 96, ...) with w >= n,
so padding stays under a quarter of a row above the smallest width (1.14-1.20x the real non-zeros
on the benchmark's data, against 1.44-1.48x for power-of-two widths). Each bucket is cut into
equal chunks of a fixed [chunk_rows, width] shape (index + confidence, confidence 0 marking
padding), stacked [chunks, chunk_rows, width] on the devices once; one jitted call per bucket runs
`lax.map` over its chunks, so a side costs one dispatch per bucket and one compilation per bucket
shape, whatever the number of iterations. Chunk rows are a multiple of the mesh's `data` axis and
are sharded over it; the other side's factors (and Y^T Y) are replicated. One device is the
one-element mesh, so one code path serves a laptop and a pod; `chunk_cells` bounds the gathered
[chunk_rows, width, f] block (2^13 cells: 2 MiB at f=64, sized for a CPU core's L2 cache through
the 7 passes).

`fit` stores both sides' factors internally in decreasing order of popularity (users by number of
non-zeros, items likewise) and maps them back on the way out (and for the callback): the gathers
then find the hot rows packed together, which cut a users half-step on the 50k x 100k benchmark
data from 0.35 s to 0.27 s on one CPU core. The gathers use `mode="clip"` (padding reads row 0,
masked by its zero confidence), which saves the select pass over the block that `take`'s default
out-of-bounds fill adds.

Speed (launch.benchmarks.als, 50k users x 100k items, 4M training non-zeros, f=64, 3 CG steps, 2
shared CPU cores; that module's docstring has the tables against `implicit`'s CPU ALS): a profile
of one iteration puts about half the time in the gather (XLA:CPU copies the 64 floats of a row
one scalar at a time), 40% in the 7 batched einsum passes and the rest in per-row work (the f x f
products and CG updates). XLA:CPU runs one device's program on one thread; to use several cores,
give JAX several CPU devices (`--xla_force_host_platform_device_count=N` before it starts) and the
rows are sharded over them. On CPU, `_solve_side` then waits for each bucket before dispatching
the next: executions queued ahead can fill the shared host thread pool with all-gather
participants waiting for partners that never get a thread (2 devices on 2 cores hung that way).

Compilation. Each bucket shape is one XLA program: 48 on the benchmark's data (19 user, 29 item
widths), 0.65-0.9 s of CPU each to compile, so a cold 10-iteration fit spends more CPU compiling
than iterating. The launchers turn on JAX's persistent compilation cache
(`launch.common.configure_compilation_cache`), so a rerun on the same data (a resume, a sweep over
alpha or lambda) loads the programs instead; what remains is tracing and lowering each shape to
find its cache key (about 3 s of CPU for 40 shapes on the benchmark's quick data). Folding bucket
shapes together would cut the cold cost but pads more: widths growing by 1.5x instead of 1.25x
mean 30 instead of 48 shapes and 1.26x instead of 1.16x the real non-zeros (measured 0.35/0.41 s
against 0.27/0.31 s per half-step), 2x widths 20 shapes and 1.45x.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from musemb import ranking
from musemb import sharding as sharding_lib

CONFIDENCES = ("linear", "log")
SOLVERS = ("cg", "exact")
_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- data layout


def confidence(counts: np.ndarray, *, alpha: float, kind: str = "linear",
               eps: float = 1.0) -> np.ndarray:
  """Confidence c of positive counts: 1 + alpha*count, or 1 + alpha*log(1 + count/eps) for "log".

  Args:
    counts: [nnz] positive counts (play counts, or any implicit-feedback strength).
    alpha: confidence scale, > 0 (Hu et al. use 40 for linear; van den Oord et al. 2013 use the log
      variant).
    kind: "linear" or "log".
    eps: count scale of the log variant, > 0.

  Returns:
    [nnz] float32 confidences, all > 1.
  """
  if kind not in CONFIDENCES:
    raise ValueError(f"confidence={kind!r} is not one of {CONFIDENCES}.")
  if not alpha > 0:
    raise ValueError(f"alpha={alpha!r} must be > 0 (confidence = 1 + alpha * f(count)).")
  counts = np.asarray(counts, np.float64)
  if kind == "linear":
    return (1.0 + alpha * counts).astype(np.float32)
  if not eps > 0:
    raise ValueError(f"eps={eps!r} must be > 0 for the log confidence "
                     "1 + alpha*log(1 + count/eps).")
  return (1.0 + alpha * np.log1p(counts / eps)).astype(np.float32)


def _check_counts(counts: Any, name: str = "counts") -> scipy.sparse.csr_matrix:
  if not scipy.sparse.issparse(counts):
    raise TypeError(f"{name} must be a scipy.sparse matrix (users x items, CSR), got "
                    f"{type(counts).__name__}; build one with scipy.sparse.csr_matrix((counts, "
                    "(user_idx, item_idx)), shape=(users, items)).")
  csr = scipy.sparse.csr_matrix(counts, dtype=np.float64, copy=True)
  csr.sum_duplicates()
  csr.eliminate_zeros()
  if csr.nnz and not np.all(np.isfinite(csr.data)):
    raise ValueError(f"{name} holds non-finite values; counts must be finite and >= 0.")
  if csr.nnz and csr.data.min() < 0:
    raise ValueError(f"{name} holds negative values (min {csr.data.min()}); implicit feedback "
                     "counts must be >= 0.")
  return csr


def bucket_widths(max_nnz: int, *, min_width: int = 8, growth: float = 1.25) -> np.ndarray:
  """The ladder of bucket widths: multiples of `min_width`, each at least `growth` x the last.

  w_0 = min_width and w_{k+1} = max(w_k + min_width, min_width * ceil(growth * w_k / min_width)),
  up to the first width >= max_nnz: 8, 16, 24, 32, 40, 56, 72, 96, 120, 152, ... by default. A row
  with n non-zeros goes to the smallest width >= n, so a row above min_width wastes less than
  (growth - 1) of its width plus min_width slots.

  Args:
    max_nnz: the largest number of non-zeros of a row to fit.
    min_width: smallest width and step, a positive integer.
    growth: growth factor between consecutive widths, > 1.

  Returns:
    [num_widths] int64 increasing widths, the last >= max(max_nnz, 1).
  """
  if isinstance(min_width, bool) or not isinstance(min_width, (int, np.integer)) or min_width < 1:
    raise ValueError(f"min_width={min_width!r} must be a positive integer.")
  if not growth > 1:
    raise ValueError(f"growth={growth!r} must be > 1: each bucket width is at least growth x the "
                     "previous one.")
  widths = [int(min_width)]
  while widths[-1] < max(int(max_nnz), 1):
    w = widths[-1]
    widths.append(max(w + min_width, -(-int(np.ceil(w * growth)) // min_width) * min_width))
  return np.asarray(widths, np.int64)


@dataclasses.dataclass(frozen=True)
class Bucket:
  """Rows of one side whose non-zeros fit `width`, cut into equal fixed-shape chunks.

  Attributes:
    width: padded number of non-zeros per row (a `bucket_widths` width).
    rows: [chunks, chunk_rows] int32 row ids; padding rows hold `num_rows` (out of range).
    cols: [chunks, chunk_rows, width] int32 column ids of the non-zeros; padding holds 0.
    conf: [chunks, chunk_rows, width] float32 confidences c > 1; padding holds 0.
  """
  width: int
  rows: np.ndarray
  cols: np.ndarray
  conf: np.ndarray


def make_buckets(counts: Any, *, alpha: float, confidence_kind: str = "linear", eps: float = 1.0,
                 num_shards: int = 1, min_width: int = 8, growth: float = 1.25,
                 chunk_cells: int = 1 << 13) -> list[Bucket]:
  """Groups the rows of a CSR count matrix into buckets of `bucket_widths` widths, in fixed chunks.

  A row with n non-zeros lands in the bucket of the smallest ladder width >= n; rows without
  non-zeros go to the smallest bucket (their ALS solution is the zero vector). A bucket of r rows
  and width w is cut into k = ceil(r w / chunk_cells) chunks of ceil(r / k) rows rounded up to a
  multiple of `num_shards`, so the chunks are as full as the shards allow.

  Args:
    counts: [rows, cols] scipy sparse counts >= 0.
    alpha, confidence_kind, eps: see `confidence`.
    num_shards: the mesh's data-axis size; chunk rows are padded to a multiple of it.
    min_width, growth: the width ladder (see `bucket_widths`).
    chunk_cells: target [chunk_rows, width] cells per chunk, bounding device memory per step.

  Returns:
    Buckets in increasing width; every row id appears exactly once over all buckets.
  """
  csr = _check_counts(counts)
  if num_shards < 1 or chunk_cells < 1:
    raise ValueError(f"num_shards={num_shards} and chunk_cells={chunk_cells} must be >= 1.")
  num_rows = csr.shape[0]
  conf_data = confidence(csr.data, alpha=alpha, kind=confidence_kind, eps=eps)
  nnz = np.diff(csr.indptr)
  ladder = bucket_widths(int(nnz.max(initial=0)), min_width=min_width, growth=growth)
  widths = ladder[np.searchsorted(ladder, np.maximum(nnz, 1))]
  buckets = []
  for width in np.unique(widths):
    width = int(width)
    rows = np.flatnonzero(widths == width).astype(np.int64)
    # As few chunks as fit chunk_cells, rows spread evenly over them (a multiple of the shards).
    num_chunks = max(1, -(-len(rows) * width // chunk_cells))
    chunk_rows = -(-len(rows) // num_chunks)
    chunk_rows = -(-chunk_rows // num_shards) * num_shards
    num_chunks = -(-len(rows) // chunk_rows)
    total = num_chunks * chunk_rows
    slot = np.arange(width)
    lengths = nnz[rows]
    valid = slot[None, :] < lengths[:, None]
    pos = np.where(valid, csr.indptr[rows][:, None] + slot[None, :], 0)
    cols = np.zeros((total, width), np.int32)
    conf = np.zeros((total, width), np.float32)
    if csr.nnz:
      cols[:len(rows)] = np.where(valid, csr.indices[pos], 0)
      conf[:len(rows)] = np.where(valid, conf_data[pos], 0.0)
    padded_rows = np.full(total, num_rows, np.int32)
    padded_rows[:len(rows)] = rows
    buckets.append(Bucket(width=width, rows=padded_rows.reshape(num_chunks, chunk_rows),
                          cols=cols.reshape(num_chunks, chunk_rows, width),
                          conf=conf.reshape(num_chunks, chunk_rows, width)))
  return buckets


# ----------------------------------------------------------------------------- solves


def _dot(a, b, spec):
  return jnp.einsum(spec, a, b, precision=_HIGHEST)


def _gather(table, idx):
  # "clip" rather than take's default "fill": the fill adds a select pass over the whole gathered
  # block, and every index here is in range (padding holds 0 with confidence 0).
  return jnp.take(table, idx, axis=0, mode="clip")


def _solve_exact(other, gram_reg, cols, conf):
  """Cholesky solve of every row's (Y^T C_u Y + lambda I) x = Y^T C_u p_u."""
  y_u = _gather(other, cols)
  extra = jnp.where(conf > 0, conf - 1.0, 0.0)
  b = _dot(conf, y_u, "rw,rwf->rf")
  a = gram_reg[None] + jnp.einsum("rwf,rw,rwg->rfg", y_u, extra, y_u, precision=_HIGHEST)
  chol = jnp.linalg.cholesky(a)
  return jax.scipy.linalg.cho_solve((chol, True), b[..., None])[..., 0]


def _solve_cg(other, gram_reg, cols, conf, x0, steps: int):
  """`steps` conjugate-gradient iterations on every row's system from x0 (Takacs et al. 2011).

  A_u v = (Y^T Y + lambda I) v + Y_u^T ((c - 1) * Y_u v) with Y_u gathered once; padding has c = 0,
  so its (c - 1) is masked to 0 and it adds nothing to b = Y_u^T c either. Passes over Y_u: 2 for
  the starting residual, 2 per step but 1 for the last.
  """
  y_u = _gather(other, cols)
  extra = jnp.where(conf > 0, conf - 1.0, 0.0)

  # r = b - A x0 in one pair of passes: b = sum_w c_w y_w (p = 1 on the non-zeros).
  r = (_dot(conf - extra * _dot(y_u, x0, "rwf,rf->rw"), y_u, "rw,rwf->rf")
       - _dot(x0, gram_reg, "rf,fg->rg"))
  x, p = x0, r
  rs = jnp.sum(r * r, axis=1)
  for k in range(steps):
    yp = _dot(y_u, p, "rwf,rf->rw")
    gp = _dot(p, gram_reg, "rf,fg->rg")
    if k == steps - 1:
      # The last step needs only p^T A p = p^T (Y^T Y + lambda I) p + sum_w (c_w - 1) (y_w . p)^2,
      # not A p itself: one pass over Y_u fewer.
      pap = jnp.sum(p * gp, axis=1) + jnp.sum(extra * yp * yp, axis=1)
    else:
      ap = gp + _dot(extra * yp, y_u, "rw,rwf->rf")
      pap = jnp.sum(p * ap, axis=1)
    # A converged row has r = p = 0; it must stay put instead of dividing 0 by 0.
    step = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1.0), 0.0)
    x = x + step[:, None] * p
    if k < steps - 1:
      r = r - step[:, None] * ap
      rs_new = jnp.sum(r * r, axis=1)
      beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
      p = r + beta[:, None] * p
      rs = rs_new
  return x


@functools.lru_cache(maxsize=None)
def _compiled(mesh: Mesh, solver: str, cg_steps: int) -> tuple[Callable, Callable, Callable]:
  """Jitted (update bucket, nnz-loss bucket, dense loss terms) for one mesh and solver.

  The bucket functions take a bucket's stacked [chunks, chunk_rows(, width)] arrays and `lax.map`
  over its chunks: one dispatch per bucket, one compilation per bucket shape.
  """
  rows_sharding = NamedSharding(mesh, P(sharding_lib.DATA))
  chunks_sharding = NamedSharding(mesh, P(None, sharding_lib.DATA))
  replicated = NamedSharding(mesh, P())

  def update(own, other, gram, rows, cols, conf, regularization):
    f = other.shape[1]
    gram_reg = gram + regularization * jnp.eye(f, dtype=gram.dtype)

    def chunk(args):
      r, c, w = args
      if solver == "exact":
        return _solve_exact(other, gram_reg, c, w)
      x0 = jnp.take(own, r, axis=0, mode="fill", fill_value=0)
      x0 = jax.lax.with_sharding_constraint(x0, rows_sharding)
      return _solve_cg(other, gram_reg, c, w, x0, cg_steps)

    # Every chunk reads the old `own` (its rows are disjoint from the other chunks'), as a
    # chunk-by-chunk update would.
    x = jax.lax.with_sharding_constraint(jax.lax.map(chunk, (rows, cols, conf)), chunks_sharding)
    return own.at[rows.reshape(-1)].set(x.reshape(-1, f).astype(own.dtype), mode="drop")

  def nnz_loss(x, y, rows, cols, conf):
    # Correction to the all-zeros loss on the non-zeros: c (1 - s)^2 - s^2 per pair.
    def chunk(args):
      r, c, w = args
      x_r = jnp.take(x, r, axis=0, mode="fill", fill_value=0)
      s = _dot(x_r, _gather(y, c), "rf,rwf->rw")
      return jnp.sum(jnp.where(w > 0, w * (1.0 - s) ** 2 - s * s, 0.0), axis=1)

    return jax.lax.map(chunk, (rows, cols, conf))

  def dense_terms(x, y, regularization):
    gram = jnp.matmul(y.T, y, precision=_HIGHEST)
    zeros = jnp.sum(x * jnp.matmul(x, gram, precision=_HIGHEST))
    return zeros, regularization * (jnp.sum(x * x) + jnp.sum(y * y))

  # `own` is donated: each bucket rewrites its rows in place instead of copying every factor.
  return (jax.jit(update, out_shardings=replicated, donate_argnums=(0,)),
          jax.jit(nnz_loss, out_shardings=chunks_sharding),
          jax.jit(dense_terms, out_shardings=(replicated, replicated)))


def _gram(y: jax.Array) -> jax.Array:
  return jnp.matmul(y.T, y, precision=_HIGHEST)


@dataclasses.dataclass
class _Side:
  """One side's buckets as stacked (rows, cols, conf) arrays on the mesh, rows over `data`."""
  num_rows: int
  buckets: list[tuple[jax.Array, jax.Array, jax.Array]]


def _place(buckets: list[Bucket], num_rows: int, mesh: Mesh) -> _Side:
  s = NamedSharding(mesh, P(None, sharding_lib.DATA))
  return _Side(num_rows=num_rows, buckets=[
      (jax.device_put(b.rows, s), jax.device_put(b.cols, s), jax.device_put(b.conf, s))
      for b in buckets])


def _solve_side(own: jax.Array, other: jax.Array, side: _Side, regularization: float,
                mesh: Mesh, solver: str, cg_steps: int) -> jax.Array:
  update, _, _ = _compiled(mesh, solver, cg_steps)
  gram = jax.jit(_gram, out_shardings=sharding_lib.replicated(mesh))(other)
  reg = jnp.float32(regularization)
  own = jnp.array(own, copy=True)   # the buckets donate it; never consume the caller's array
  # Several CPU devices share one host thread pool: executions dispatched ahead can fill it with
  # participants waiting in the all-gather's rendezvous for partners that never get a thread (a hang
  # seen with 2 devices on 2 cores). Waiting for each bucket keeps one collective in flight.
  sync = mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"
  for rows, cols, conf in side.buckets:
    own = update(own, other, gram, rows, cols, conf, reg)
    if sync:
      own.block_until_ready()
  return own


def _side_loss(x: jax.Array, y: jax.Array, side: _Side, regularization: float, mesh: Mesh) -> float:
  _, nnz_loss, dense_terms = _compiled(mesh, "exact", 0)
  zeros, reg = dense_terms(x, y, jnp.float32(regularization))
  total = float(zeros) + float(reg)
  for rows, cols, conf in side.buckets:
    total += float(np.asarray(nnz_loss(x, y, rows, cols, conf), np.float64).sum())
  return total


def _check_args(solver: str, cg_steps: int, factors: int, regularization: float) -> None:
  if solver not in SOLVERS:
    raise ValueError(f"solver={solver!r} is not one of {SOLVERS}.")
  if solver == "cg" and (isinstance(cg_steps, bool) or not isinstance(cg_steps, int)
                         or cg_steps < 1):
    raise ValueError(f"cg_steps={cg_steps!r} must be a positive integer (3 is implicit's default).")
  if isinstance(factors, bool) or not isinstance(factors, int) or factors < 1:
    raise ValueError(f"factors={factors!r} must be a positive integer.")
  if not regularization >= 0:
    raise ValueError(f"regularization={regularization!r} must be >= 0.")


def popularity_order(counts: Any) -> tuple[np.ndarray, np.ndarray, scipy.sparse.csr_matrix]:
  """Users and items relabelled by decreasing number of non-zeros (ties keep their order).

  Returns (user_order, item_order, relabelled): new user u is old user user_order[u], new item i
  is old item item_order[i], and relabelled[u, i] = counts[user_order[u], item_order[i]] (CSR with
  sorted indices). `fit` solves in this order so that the gathered rows of the popular items (and
  of the active users) lie together in memory.
  """
  csr = _check_counts(counts)
  user_order = np.argsort(-np.diff(csr.indptr), kind="stable")
  item_order = np.argsort(-np.bincount(csr.indices, minlength=csr.shape[1]), kind="stable")
  item_rank = np.argsort(item_order)
  rows = csr[user_order]
  out = scipy.sparse.csr_matrix((rows.data, item_rank[rows.indices], rows.indptr), shape=rows.shape)
  out.sort_indices()
  return user_order, item_order, out


def _as_factors(x: Any, shape: tuple[int, int], name: str, mesh: Mesh | None) -> Any:
  """Checked float32 factors, placed replicated on `mesh` (or the numpy array when mesh is None)."""
  x = np.asarray(x, np.float32)
  if x.shape != shape:
    raise ValueError(f"{name} has shape {x.shape}, expected {shape} (rows, factors).")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} holds non-finite values.")
  return x if mesh is None else jax.device_put(x, sharding_lib.replicated(mesh))


def solve_rows(counts: Any, other_factors: Any, *, regularization: float, alpha: float,
               confidence_kind: str = "linear", eps: float = 1.0, solver: str = "exact",
               cg_steps: int = 3, init: Any = None, mesh: Mesh | None = None) -> np.ndarray:
  """One ALS half-step: every row of `counts` solved against the fixed `other_factors`.

  Args:
    counts: [rows, cols] scipy sparse counts (users x items to solve users; transpose for items).
    other_factors: [cols, f] the fixed side Y.
    regularization, alpha, confidence_kind, eps: the objective (see module docstring).
    solver: "exact" (Cholesky per row) or "cg" (`cg_steps` steps from `init`).
    init: [rows, f] starting point for CG; zeros when None.
    mesh: device mesh; all devices when None.

  Returns:
    [rows, f] float32 x_u = argmin of row u's part of the objective (approximately for CG).
  """
  csr = _check_counts(counts)
  other = np.asarray(other_factors, np.float32)
  if other.ndim != 2 or other.shape[0] != csr.shape[1]:
    raise ValueError(f"other_factors has shape {other.shape}, expected ({csr.shape[1]}, f): one "
                     "row per column of counts.")
  _check_args(solver, cg_steps, other.shape[1], regularization)
  mesh = mesh or sharding_lib.make_mesh()
  shape = (csr.shape[0], other.shape[1])
  own = _as_factors(np.zeros(shape) if init is None else init, shape, "init", mesh)
  side = _place(make_buckets(csr, alpha=alpha, confidence_kind=confidence_kind, eps=eps,
                             num_shards=sharding_lib.data_size(mesh)), csr.shape[0], mesh)
  other = _as_factors(other, other.shape, "other_factors", mesh)
  return np.asarray(_solve_side(own, other, side, regularization, mesh, solver, cg_steps))


def loss(counts: Any, user_factors: Any, item_factors: Any, *, regularization: float,
         alpha: float, confidence_kind: str = "linear", eps: float = 1.0,
         mesh: Mesh | None = None) -> float:
  """The weighted objective L(X, Y) of Hu et al. over all users x items pairs, exactly.

  The implicit zeros (c = 1, p = 0) contribute sum_u x_u^T (Y^T Y) x_u; each non-zero then adds
  c (1 - s)^2 - s^2 with s = x_u . y_i, so the cost is O(nnz f + (users + items) f^2).

  Args:
    counts: [users, items] scipy sparse counts.
    user_factors: [users, f]; item_factors: [items, f].
    regularization, alpha, confidence_kind, eps: the objective.
    mesh: device mesh; all devices when None.

  Returns:
    The objective as a Python float (chunk sums accumulated in float64).
  """
  csr = _check_counts(counts)
  mesh = mesh or sharding_lib.make_mesh()
  f = np.shape(user_factors)[-1]
  x = _as_factors(user_factors, (csr.shape[0], f), "user_factors", mesh)
  y = _as_factors(item_factors, (csr.shape[1], f), "item_factors", mesh)
  side = _place(make_buckets(csr, alpha=alpha, confidence_kind=confidence_kind, eps=eps,
                             num_shards=sharding_lib.data_size(mesh)), csr.shape[0], mesh)
  return _side_loss(x, y, side, regularization, mesh)


def fit(counts: Any, *, factors: int = 64, regularization: float = 0.01, alpha: float = 40.0,
        confidence: str = "linear", eps: float = 1.0, iterations: int = 15,
        solver: str = "cg", cg_steps: int = 3, seed: int = 0, mesh: Mesh | None = None,
        callback: Callable[[int, float, jax.Array, jax.Array], Any] | None = None,
        compute_loss: bool = True, user_factors: Any = None, item_factors: Any = None,
        start_iteration: int = 0, chunk_cells: int = 1 << 13,
        bucket_growth: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
  """Fits implicit-feedback WMF by alternating least squares (Hu, Koren & Volinsky 2008).

  Each iteration solves all users given the items, then all items given the users. Factors start
  as N(0, 0.01^2) draws from `seed` (independent of the mesh), unless given (to resume). Internally
  both sides are solved in `popularity_order` (faster gathers); inputs, callback arguments and
  results are in the caller's order.

  Args:
    counts: [users, items] scipy sparse play counts >= 0 (CSR or anything convertible).
    factors: f, the number of latent factors.
    regularization: lambda.
    alpha, confidence, eps: confidence 1 + alpha*count ("linear") or 1 + alpha*log(1 + count/eps)
      ("log").
    iterations: ALS iterations to run (up to `iterations`, counting from `start_iteration`).
    solver: "cg" (`cg_steps` warm-started conjugate-gradient steps per row, Takacs et al. 2011) or
      "exact" (Cholesky per row).
    seed: initialisation seed.
    mesh: device mesh (`musemb.sharding.make_mesh`); all devices when None.
    callback: called after each iteration as callback(iteration, loss, user_factors, item_factors)
      with 1-based iteration, the objective (NaN when compute_loss is False) and the factors as
      replicated jax arrays.
    compute_loss: whether to evaluate the objective after each iteration (about one half-step's
      gather cost).
    user_factors, item_factors: starting factors [users, f], [items, f] (both or neither).
    start_iteration: iterations already done by the given factors (for logging and resumption).
    chunk_cells: cells per fixed-shape chunk (see `make_buckets`).
    bucket_growth: growth of the bucket width ladder (see `bucket_widths`); smaller pads less but
      compiles more bucket shapes.

  Returns:
    (user_factors [users, f], item_factors [items, f]) float32 numpy arrays.
  """
  csr = _check_counts(counts)
  _check_args(solver, cg_steps, factors, regularization)
  if (user_factors is None) != (item_factors is None):
    raise ValueError("pass both user_factors and item_factors to resume, or neither.")
  mesh = mesh or sharding_lib.make_mesh()
  num_users, num_items = csr.shape
  if user_factors is None:
    ku, ki = jax.random.split(jax.random.key(seed))
    user_factors = 0.01 * np.asarray(jax.random.normal(ku, (num_users, factors), jnp.float32))
    item_factors = 0.01 * np.asarray(jax.random.normal(ki, (num_items, factors), jnp.float32))
  user_factors = _as_factors(user_factors, (num_users, factors), "user_factors", None)
  item_factors = _as_factors(item_factors, (num_items, factors), "item_factors", None)
  user_order, item_order, csr = popularity_order(csr)
  user_rank, item_rank = np.argsort(user_order), np.argsort(item_order)
  x = _as_factors(user_factors[user_order], (num_users, factors), "user_factors", mesh)
  y = _as_factors(item_factors[item_order], (num_items, factors), "item_factors", mesh)
  restore = jax.jit(lambda a, rank: jnp.take(a, rank, axis=0, mode="clip"),
                    out_shardings=sharding_lib.replicated(mesh))

  shards = sharding_lib.data_size(mesh)
  kwargs = dict(alpha=alpha, confidence_kind=confidence, eps=eps, num_shards=shards,
                chunk_cells=chunk_cells, growth=bucket_growth)
  users = _place(make_buckets(csr, **kwargs), num_users, mesh)
  items = _place(make_buckets(csr.T.tocsr(), **kwargs), num_items, mesh)
  logging.info("wmf: %d users x %d items, %d non-zeros, %d factors, solver=%s, %d devices; "
               "%d user buckets, %d item buckets", num_users, num_items, csr.nnz, factors, solver,
               shards, len(users.buckets), len(items.buckets))
  for it in range(start_iteration, iterations):
    start = time.perf_counter()
    x = _solve_side(x, y, users, regularization, mesh, solver, cg_steps)
    y = _solve_side(y, x, items, regularization, mesh, solver, cg_steps)
    y.block_until_ready()
    seconds = time.perf_counter() - start
    value = _side_loss(x, y, users, regularization, mesh) if compute_loss else float("nan")
    if not np.isfinite(value) and compute_loss:
      raise FloatingPointError(f"wmf: the loss became {value} at iteration {it + 1}; lower alpha "
                               "or raise regularization.")
    logging.info("wmf iteration %d/%d: loss %.6g (%.2fs)", it + 1, iterations, value, seconds)
    if callback is not None:
      callback(it + 1, value, restore(x, user_rank), restore(y, item_rank))
  return np.asarray(x)[user_rank], np.asarray(y)[item_rank]


def recommend(user_factors: Any, item_factors: Any, user_items: Any, users: Any, k: int, *,
              filter_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Top-k items per user by predicted preference x_u . y_i, optionally without seen items.

  Args:
    user_factors: [users, f]; item_factors: [items, f].
    user_items: [users, items] scipy sparse counts of the training data (for filtering).
    users: [Q] user indices to recommend for.
    k: items per user, 1 <= k <= items.
    filter_seen: leave out the items each user has a non-zero count for.

  Returns:
    scores [Q, k] float32 and indices [Q, k] int32, best first; slots beyond a user's unseen items
    hold index -1 and score -inf.
  """
  users = np.asarray(users, np.int64)
  item_factors = np.asarray(item_factors, np.float32)
  queries = np.asarray(user_factors, np.float32)[users]
  num_items = item_factors.shape[0]
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_items:
    raise ValueError(f"k={k!r} must be an integer in [1, {num_items}].")
  if not filter_seen:
    return ranking.top_k_scores(queries, item_factors, int(k))
  csr = _check_counts(user_items, "user_items")[users]
  seen_max = int(np.diff(csr.indptr).max()) if len(users) else 0
  kk = min(num_items, int(k) + seen_max)
  scores, idx = ranking.top_k_scores(queries, item_factors, kk)
  out_scores = np.full((len(users), k), -np.inf, np.float32)
  out_idx = np.full((len(users), k), -1, np.int32)
  for q in range(len(users)):
    seen = csr.indices[csr.indptr[q]:csr.indptr[q + 1]]
    keep = (idx[q] >= 0) & ~np.isin(idx[q], seen)
    n = min(k, int(keep.sum()))
    out_scores[q, :n] = scores[q][keep][:n]
    out_idx[q, :n] = idx[q][keep][:n]
  return out_scores, out_idx
