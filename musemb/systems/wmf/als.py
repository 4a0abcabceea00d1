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

Data layout. Counts arrive as a scipy CSR matrix and are never densified. Both sides' factors live
in one [users + items, f] table (users first): a user's columns index the table's item rows and an
item's its user rows, so the two half-steps run the same programs. Rows are laid out in a few
fixed chunk shapes (`make_blocks`), one per class:

* a row with n <= 32 non-zeros (`segment_width`) takes one row of width 8, 16 or 32, the smallest
  that holds it (`class_widths`), padded with confidence 0;
* a longer row is cut into ceil(n / 32) segments of 32 that sit side by side in one unit of
  S segments and S / 2 row slots (S = 2^13 / 32 = 256, or the longest row's segments if more;
  `fit` gives both sides the larger of their two S, so they share the program), units filled
  with whole rows in order of decreasing length. The solve
  expands each per-row vector to its segments before a pass over the gathered block and sums
  each row's segments after it (`jax.ops.segment_sum` over sorted slots, one cheap pass on
  XLA:CPU: about 1/6 of a pass over the block).

Padding is 1.11x the real non-zeros for users and 1.21x for items on the benchmark's data (the
width ladder it replaces, 8, 16, 24, 32, 40, 56, ... growing by 1.25x, padded 1.13x / 1.16x but
needed one program per width: 48 there, 19 user and 29 item widths). Each class's chunks are
stacked [chunks, units, ...] and cut into calls of `_GROUP` chunks, so a call's shape does not
depend on how many rows a class has: a fit compiles at most four solve programs (and four loss
programs with `compute_loss`), whatever the data, and `fit` compiles them all at once in parallel
threads, from their shapes alone, while it lays out the blocks (`_start_compiles`). A chunk is
`num_shards` units side by side, one per device of the mesh's `data` axis, and the solve runs in
a `shard_map`: each device solves its own rows with their segments against the replicated
table. One device is the one-element mesh, so one code path serves a laptop and a pod.
`chunk_cells` bounds a unit's gathered [segments, width, f] block (2^13 cells: 2 MiB at f=64,
sized for a CPU core's cache through the 7 passes).

`fit` stores both sides' factors internally in decreasing order of popularity (users by number of
non-zeros, items likewise) and maps them back on the way out (and for the callback): the gathers
then find the hot rows packed together, which cut a users half-step on the 50k x 100k benchmark
data from 0.35 s to 0.27 s on one CPU core. The gathers use `mode="clip"` (padding reads an
in-range row, masked by its zero confidence), which saves the select pass over the block that
`take`'s default out-of-bounds fill adds.

Speed (launch.benchmarks.als, 50k users x 100k items, 4M training non-zeros, f=64, 3 CG steps, 2
shared CPU cores; that module's docstring has the tables against `implicit`'s CPU ALS): a profile
of one iteration puts about half the time in the gather (XLA:CPU copies the 64 floats of a row
one scalar at a time), 40% in the 7 batched einsum passes and the rest in per-row work (the f x f
products and CG updates). Against the bucket layout this one costs 10-25% more CPU per
half-step (same-process A/B, load 2-4: users 0.72-0.86 s against 0.60-0.75 s, items 0.85-1.02 s
against 0.76-0.92 s): 5-8% more padded cells, the segment sums and the row slots a unit of long
rows leaves empty. Smaller units (2^11, 2^12 cells) and segments of 16 were slower still; 64
pads more. XLA:CPU runs a program's chunks one after another (a fit's process CPU is 1.3-1.5x
its wall-clock: some of the ops inside use the second core); a call's chunks split into two or
four independent loops, and separate calls dispatched together, took as long as running them in
turn (stop 21: two loops 2.0-2.1x one loop's time). Several CPU devices do run in parallel, one
thread each: with the layout and memory changes since, 2 devices on 2 cores ran an iteration in
0.47-0.53 s against 0.56-0.66 s for 1 (stop 25, four alternating pairs, warm cache), which is
why the WMF launchers give JAX one CPU device per core (`launch.common.configure_cpu_devices`,
`configs/wmf.py`'s `wmf.cpu_devices`); a caller of `fit` on the default single CPU device gets
the 1-device speed. Each device holds a replica of the table (38 MB more per device at the
benchmark's size). Stop 21 had measured no gain from several devices, with the page costs of
that layout (see "Fresh host memory"). On CPU, `_solve_side` waits for each call before dispatching
the next: executions queued ahead can fill the shared host thread pool with all-gather
participants waiting for partners that never get a thread (2 devices on 2 cores hung that way).

On CPU the solve and loss programs compile at LLVM -O1 (`_CPU_COMPILER_OPTIONS`), not XLA's
default -O3, which made them about 1.4x slower (stop 21: 0.61-0.67 s an iteration against
0.87-0.97 s, factors bit-identical).

Compilation. A program costs 0.5-0.9 s of CPU to compile here (at -O3). With one program per
bucket width (the layout before), a cold 10-iteration fit on the benchmark's data spent more CPU
compiling its 48 programs than iterating; with four, compiled in a background thread while the
blocks are laid out, compilation is a few seconds of a fit. The launchers also turn on JAX's
persistent compilation cache (`launch.common.configure_compilation_cache`), so a rerun on the
same data (a resume, a sweep over alpha or lambda) loads the programs instead.

Memory. Beyond the caller's matrix, a fit holds the blocks (8 bytes a cell, about 1.2 cells per
non-zero per side), the [users + items, f] table, and, while it lays the blocks out, one
transposed copy of the non-zeros (8 bytes each, for the items' side); the users' side reads its
rows from the caller's matrix a slice at a time (`_RowEntries`), and nothing else the setup makes
is whole-length. The Gram matrices and the dense loss term read the table a block of rows at a
time (`_sum_over_rows`), because XLA:CPU copies a sliced dot operand: a copy of a side per call,
which each runtime thread's malloc arena then kept. Before `fit` gathers its results it frees the
blocks (`_release`: `device_put` adopted them, and XLA hands adopted memory back only in JAX's
garbage-collection callback). On the benchmark's data (launch.benchmarks.als) the process's peak
over a fit with a callback went from 279-288 to 224-243 MB with these three changes (stop 24; the
blocks are bit-identical, the Gram's summation order changed: the loss after 10 iterations
agrees to 1e-6); at the Million Song Dataset's 48M listens the relabelled copy the users' side no
longer makes is about 384 MB, and a users' Gram copy was 256 MB per runtime thread.

Fresh host memory. numpy asks the kernel for transparent huge pages for every array of 4 MB or
more, and where the kernel's THP defrag mode compacts memory for them on the fault (the "madvise"
default of many distributions), a machine whose memory earlier jobs fragmented pays 5-10 ms per
MB on first touch instead of about 0.5 ms. The launchers turn that advice off where it stalls
(`launch.common.configure_host_memory`, called by their `setup`; NUMPY_MADVISE_HUGEPAGE=0 does
the same for your own scripts): the benchmark's warm first iteration, which holds the setup,
went from 2.17-2.46 s to 1.51-1.58 s (stop 25, three alternating pairs).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import gc
import os
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
# Chunks per solve call: every call of a class has this many, so its shape is data-independent.
_GROUP = 8
# XLA:CPU compiles the solve and loss programs with LLVM at -O1 instead of its default -O3: a
# benchmark iteration took 0.61-0.67 s instead of 0.87-0.97 s (-O2: 0.66-0.72 s), each program
# compiles sooner, and the factors are bit-identical (stop 21, launch.benchmarks.als data, on an
# AMD EPYC Zen 4 VM; -O0 is 2.5x slower than -O3 and changes the rounding). Measured on that CPU
# only: rerun the suite with this set to {} on another. Accelerators keep their backend's default.
_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
# Values per slice of the setup's host passes over the non-zeros (`confidence`'s float64
# temporary: 8 MB; the layout's rows, `_RowEntries`; `_popularity_order`'s relabelling).
_HOST_SLICE = 1 << 20
# Bytes of table rows per step of the Gram matrices' and dense loss terms' loops (`_sum_over_rows`).
_ROW_BLOCK_BYTES = 1 << 20


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
  if kind == "log" and not eps > 0:
    raise ValueError(f"eps={eps!r} must be > 0 for the log confidence "
                     "1 + alpha*log(1 + count/eps).")
  # The same float64 operations as 1 + alpha * f(count), on one float64 temporary of at most
  # _HOST_SLICE values updated in place, slice by slice: fresh memory costs a page fault
  # per 4 KB on first touch (4M non-zeros took 0.55 s with three whole-length temporaries).
  counts = np.asarray(counts)
  out = np.empty(counts.shape, np.float32)
  flat_in, flat_out = counts.reshape(-1), out.reshape(-1)
  value = np.empty(min(flat_in.size, _HOST_SLICE), np.float64)
  for start in range(0, flat_in.size, _HOST_SLICE):
    part = flat_in[start:start + _HOST_SLICE]
    v = value[:part.size]
    if kind == "linear":
      np.multiply(part, alpha, out=v, dtype=np.float64)
    else:
      np.divide(part, eps, out=v, dtype=np.float64)
      np.log1p(v, out=v)
      v *= alpha
    v += 1.0
    flat_out[start:start + part.size] = v
  return out


_confidence = confidence  # for `fit`, whose `confidence` argument names the kind


def _check_counts(counts: Any, name: str = "counts") -> scipy.sparse.csr_matrix:
  if not scipy.sparse.issparse(counts):
    raise TypeError(f"{name} must be a scipy.sparse matrix (users x items, CSR), got "
                    f"{type(counts).__name__}; build one with scipy.sparse.csr_matrix((counts, "
                    "(user_idx, item_idx)), shape=(users, items)).")
  # Everything downstream only reads the matrix, so a CSR of real numbers in canonical form
  # (sorted, no duplicates) without stored zeros is used as it is; anything else is fixed on a
  # copy, never on the caller's matrix. (A copy of the benchmark's 4M non-zeros cost 0.3-0.7 s in a
  # fresh process, mostly first-touch page faults.)
  csr = counts if scipy.sparse.isspmatrix_csr(counts) else scipy.sparse.csr_matrix(counts)
  if not (np.issubdtype(csr.dtype, np.integer) or np.issubdtype(csr.dtype, np.floating)):
    csr = csr.astype(np.float64)
  if not csr.has_canonical_format or (csr.nnz and not np.all(csr.data)):
    csr = csr.copy()  # the input's arrays may be shared even after a conversion
    csr.sum_duplicates()
    csr.eliminate_zeros()
  if csr.nnz and not np.all(np.isfinite(csr.data)):
    raise ValueError(f"{name} holds non-finite values; counts must be finite and >= 0.")
  if csr.nnz and csr.data.min() < 0:
    raise ValueError(f"{name} holds negative values (min {csr.data.min()}); implicit feedback "
                     "counts must be >= 0.")
  return csr


def class_widths(segment_width: int, min_width: int = 8) -> tuple[int, ...]:
  """Widths of the one-row-per-segment classes: min_width, 2 min_width, ... below segment_width,
  then segment_width itself (8, 16 by default). Rows longer than segment_width are segmented."""
  for name, value in (("segment_width", segment_width), ("min_width", min_width)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")
  if min_width > segment_width:
    raise ValueError(f"min_width={min_width} must be <= segment_width={segment_width}.")
  widths, w = [], int(min_width)
  while w < segment_width:
    widths.append(w)
    w *= 2
  return tuple(widths) + (int(segment_width),)


@dataclasses.dataclass(frozen=True)
class Block:
  """One class of rows of one side, in fixed-shape chunks of segments.

  A chunk is `num_shards` units laid side by side along axis 1 (a unit is what one device of the
  mesh's data axis solves): unit u of chunk c holds rows rows[c, u*R:(u+1)*R] and segments
  [c, u*S:(u+1)*S], where R and S are the unit's row slots and segments.

  Attributes:
    width: non-zeros per segment.
    segmented: False for a one-row-per-segment class (segment j is row slot j, seg is None);
      True when a row spans several consecutive segments of its unit.
    rows: [chunks, shards * R] int32 row ids; padding slots hold `table_rows` (out of range).
    seg: [chunks, shards * S] int32 row slot of each segment within its unit (non-decreasing in
      a unit; padding segments hold R - 1 with confidence 0), or None when not segmented.
    cols: [chunks, shards * S, width] int32 column ids of the non-zeros; padding holds the
      first column's id (`col_offset`: an in-range row, read with confidence 0).
    conf: [chunks, shards * S, width] float32 confidences c > 1; padding holds 0.
  """
  width: int
  segmented: bool
  rows: np.ndarray
  seg: np.ndarray | None
  cols: np.ndarray
  conf: np.ndarray


def _host_array(shape: tuple[int, ...], dtype: Any, fill: Any = 0) -> np.ndarray:
  """A filled numpy array whose data starts on a 64-byte boundary.

  JAX's CPU client adopts such an array's memory in `jax.device_put` instead of copying it (it
  copies one that numpy's allocator placed at 16 bytes past a boundary, the usual case for large
  arrays): the blocks `fit` places are then never copied, which spares a second ~100 MB of fresh
  pages at the benchmark's size. The blocks are never written after they are placed.
  """
  dtype = np.dtype(dtype)
  size = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(size + 64, np.uint8)
  start = -raw.ctypes.data % 64
  out = raw[start:start + size].view(dtype).reshape(shape)
  out.fill(fill)
  return out


def _unit_shape(width: int, segmented: bool, *, num_shards: int, chunk_cells: int,
                longest: int = 0, min_unit_segments: int = 0) -> tuple[int, int]:
  """(row slots, segments) of one unit of a class (see `make_blocks`); `longest` is the class's
  longest row in non-zeros (it must fit one unit)."""
  if not segmented:
    unit = max(1, chunk_cells // (width * num_shards))
    return unit, unit
  segments = max(-(-chunk_cells // (width * num_shards)), -(-int(longest) // width),
                 int(min_unit_segments))
  segments = -(-segments // 8) * 8
  return segments // 2, segments


def _class_of(nnz: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
  """Class index of rows with `nnz` non-zeros: i < len(widths) one-row, len(widths) segmented."""
  return np.searchsorted(np.asarray(widths), np.maximum(nnz, 1))


def _next_fit(segments: np.ndarray, max_segments: int, max_rows: int) -> np.ndarray:
  """Unit boundaries of rows packed in order: each unit takes rows while both capacities hold.

  Returns the [units + 1] start indices (the last is len(segments))."""
  cum = np.concatenate([[0], np.cumsum(segments)])
  starts, i = [0], 0
  while i < len(segments):
    j = min(int(np.searchsorted(cum, cum[i] + max_segments, side="right")) - 1, i + max_rows)
    i = max(j, i + 1)   # a row never exceeds max_segments (the caller sizes units for it)
    starts.append(i)
  return np.asarray(starts, np.int64)


def make_blocks(counts: Any, *, alpha: float, confidence_kind: str = "linear", eps: float = 1.0,
                num_shards: int = 1, segment_width: int = 32, min_width: int = 8,
                chunk_cells: int = 1 << 13, group: int = _GROUP, row_offset: int = 0,
                col_offset: int = 0, table_rows: int | None = None,
                min_unit_segments: int = 0) -> list[Block]:
  """Lays out the rows of a CSR count matrix in a few fixed chunk shapes (one per class).

  A row with n non-zeros joins the one-row-per-segment class of the smallest `class_widths`
  width >= n when n <= segment_width (rows without non-zeros go to the smallest; their ALS
  solution is the zero vector); a longer row is cut into ceil(n / segment_width) segments of
  `segment_width` and joins the segmented class, whose units hold consecutive segments of whole
  rows. Units hold about chunk_cells / num_shards cells: a one-row class of width w has
  chunk_cells / (w shards) rows per unit; the segmented class S = max(chunk_cells /
  (segment_width shards), the longest row's segments) segments (a multiple of 8) and S / 2 row
  slots (its rows have at least 2 segments), filled in order of decreasing length (next fit), so
  they stay full. Each class's chunks are padded to a multiple of `group`, so that every call of
  the solve sees the same [group, ...] shape: the number of shapes, hence of compilations, is one
  per class whatever the data's size and length distribution.

  Args:
    counts: [rows, cols] scipy sparse counts >= 0.
    alpha, confidence_kind, eps: see `confidence`.
    num_shards: the mesh's data-axis size (units per chunk).
    segment_width: non-zeros per segment of the segmented class, and the widest one-row class.
    min_width: the narrowest one-row class (see `class_widths`).
    chunk_cells: cells per chunk (a device solves chunk_cells / num_shards at a time).
    group: chunks per solve call.
    row_offset, col_offset: added to the row and column ids, which index one factor table
      holding both sides (`fit` keeps users then items in one [users + items, f] table, so that
      both half-steps run the same programs).
    table_rows: rows of that table; padding row ids hold it (out of range). Default: the
      larger of row_offset + rows and (with a col_offset) col_offset + cols.
    min_unit_segments: a floor on the segmented class's unit size, so that two sides (or two
      matrices) can share its shape.

  Returns:
    Blocks in increasing width, the segmented one last; every row id appears exactly once.
  """
  csr = _check_counts(counts)
  return _make_blocks(np.diff(csr.indptr), _RowEntries(csr, confidence=functools.partial(
                          confidence, alpha=alpha, kind=confidence_kind, eps=eps)),
                      num_shards=num_shards, segment_width=segment_width, min_width=min_width,
                      chunk_cells=chunk_cells, group=group, row_offset=row_offset,
                      col_offset=col_offset, table_rows=table_rows,
                      min_unit_segments=min_unit_segments, num_cols=csr.shape[1])


@dataclasses.dataclass(frozen=True, eq=False)
class _RowEntries:
  """The non-zeros of some rows of a CSR matrix, as the blocks store them.

  Called with row positions `rows` (in the blocks' row space), it returns the column ids (int32)
  and confidences (float32) of matrix rows `order[rows]` (`rows` itself when order is None),
  concatenated row by row. With `col_rank` the column ids are relabelled to col_rank[id] and each
  row's non-zeros sorted by them; with `confidence` the stored values are counts and become
  confidence(values), otherwise they are the confidences already. Only these rows' arrays are
  built, so a layout that asks for its rows a slice at a time never holds a relabelled copy of the
  whole matrix (`fit`).
  """
  matrix: scipy.sparse.csr_matrix
  order: np.ndarray | None = None
  col_rank: np.ndarray | None = None
  confidence: Callable[[np.ndarray], np.ndarray] | None = None

  def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = self.matrix[rows if self.order is None else self.order[rows]]
    cols, values = sub.indices, sub.data
    if self.confidence is not None:
      values = self.confidence(values)
    if self.col_rank is not None:
      sub = scipy.sparse.csr_matrix((values, self.col_rank[cols], sub.indptr), shape=sub.shape)
      sub.sort_indices()
      cols, values = sub.indices, sub.data
    return cols.astype(np.int32, copy=False), values.astype(np.float32, copy=False)


def _row_slices(lengths: np.ndarray, limit: int) -> list[tuple[int, int]]:
  """Consecutive [start, stop) ranges of rows holding at most `limit` values (at least a row)."""
  cum = np.concatenate([[0], np.cumsum(lengths)])
  slices, start = [], 0
  while start < len(lengths):
    stop = max(start + 1, int(np.searchsorted(cum, cum[start] + limit, side="right")) - 1)
    slices.append((start, stop))
    start = stop
  return slices


def _make_blocks(nnz: np.ndarray, entries: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 *, num_shards: int, segment_width: int, min_width: int, chunk_cells: int,
                 group: int, row_offset: int, col_offset: int, table_rows: int | None,
                 min_unit_segments: int, num_cols: int | None = None) -> list[Block]:
  """`make_blocks` of rows with `nnz` non-zeros each, whose values `entries(rows)` gives.

  `entries` (a `_RowEntries`) is asked for `_HOST_SLICE` non-zeros' worth of rows at a time,
  in the order the blocks store them, and its arrays are copied into the blocks at once: the
  layout's temporaries stay that size whatever the matrix's. `num_cols` (the columns' count,
  for the default `table_rows`) defaults to col_offset's side being absent.
  """
  for name, value in (("num_shards", num_shards), ("chunk_cells", chunk_cells),
                      ("group", group)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")
  widths = class_widths(segment_width, min_width)
  num_rows = len(nnz)
  if table_rows is None:
    table_rows = max(row_offset + num_rows,
                     col_offset + num_cols if col_offset and num_cols is not None else 0)
  # Rows by decreasing length (stable): the segmented class packs best that way, and `fit`'s
  # popularity order is already this order, which keeps popular rows together in memory.
  order = np.argsort(-nnz, kind="stable")
  cls = _class_of(nnz[order], widths)
  blocks = []
  for c, width in enumerate(widths + (segment_width,)):
    segmented = c == len(widths)
    rows = order[cls == c]
    if not len(rows):
      continue
    lengths = nnz[rows]
    unit_rows, unit_segments = _unit_shape(
        width, segmented, num_shards=num_shards, chunk_cells=chunk_cells,
        longest=int(lengths.max()), min_unit_segments=min_unit_segments)
    if segmented:
      counts_seg = -(-lengths // width)
      starts = _next_fit(counts_seg, unit_segments, unit_rows)
    else:
      starts = np.arange(0, len(rows) + unit_rows, unit_rows).clip(max=len(rows))
      starts = np.unique(starts)
    units = len(starts) - 1
    chunks = -(-units // num_shards)
    chunks = -(-chunks // group) * group
    total_units = chunks * num_shards
    unit_of_row = np.repeat(np.arange(units), np.diff(starts))
    slot = np.arange(len(rows)) - starts[unit_of_row]
    out_rows = _host_array((total_units, unit_rows), np.int32, table_rows)
    out_rows[unit_of_row, slot] = rows + row_offset
    seg_slot = _host_array((total_units, unit_segments), np.int32, unit_rows - 1)
    if segmented:
      # Row i's k-th segment sits at its unit's (first segment of i) + k.
      seg_cum = np.concatenate([[0], np.cumsum(counts_seg)])
      first_seg = seg_cum[:-1] - seg_cum[starts[unit_of_row]]
      seg_row = np.repeat(np.arange(len(rows)), counts_seg)
      k = np.arange(len(seg_row)) - seg_cum[seg_row]  # the segment's index within its row
      seg_pos = (unit_of_row * unit_segments + first_seg)[seg_row] + k
      seg_slot.reshape(-1)[seg_pos] = slot[seg_row]
    # Padding cells hold col_offset: the ids are written as they are and the offset added to the
    # whole array in place, without a [class non-zeros] temporary of shifted ids.
    cols = _host_array((total_units * unit_segments, width), np.int32)
    conf = _host_array((total_units * unit_segments, width), np.float32)
    for lo, hi in _row_slices(lengths, _HOST_SLICE):
      # Row i's j-th non-zero goes to cell j % width of its segment j // width. The rows'
      # non-zeros, in row order, fill a mask of valid cells over the rows' segments row by row.
      slice_cols, slice_conf = entries(rows[lo:hi])
      if len(slice_cols) != lengths[lo:hi].sum():
        raise ValueError(f"rows {lo}-{hi} of a class hold {len(slice_cols)} non-zeros, expected "
                         f"{lengths[lo:hi].sum()}.")
      if segmented:
        # Segment positions increase with the row and the segment (units are filled in row
        # order), so a mask over the range of these rows' segments takes their non-zeros in
        # row order.
        first, last = seg_cum[lo], seg_cum[hi]
        base = seg_pos[first]
        valid = np.zeros((seg_pos[last - 1] + 1 - base, width), bool)
        valid[seg_pos[first:last] - base] = np.arange(width) < np.minimum(
            width, lengths[seg_row[first:last]] - k[first:last] * width)[:, None]
        span = slice(base, seg_pos[last - 1] + 1)
      else:  # row i is segment i
        valid = np.arange(width) < lengths[lo:hi, None]
        span = slice(lo, hi)
      cols[span][valid] = slice_cols
      conf[span][valid] = slice_conf
    if col_offset:
      cols += np.int32(col_offset)
    blocks.append(Block(
        width=int(width), segmented=segmented,
        rows=out_rows.reshape(chunks, num_shards * unit_rows),
        seg=seg_slot.reshape(chunks, num_shards * unit_segments) if segmented else None,
        cols=cols.reshape(chunks, num_shards * unit_segments, width),
        conf=conf.reshape(chunks, num_shards * unit_segments, width)))
  return blocks


# ----------------------------------------------------------------------------- solves


def _dot(a, b, spec):
  return jnp.einsum(spec, a, b, precision=_HIGHEST)


def _gather(table, idx):
  # "clip" rather than take's default "fill": the fill adds a select pass over the whole gathered
  # block, and every index here is in range (padding holds an in-range id with confidence 0).
  return jnp.take(table, idx, axis=0, mode="clip")


def _segment_ops(seg, num_rows: int):
  """(expand [R, ...] -> [S, ...], reduce [S, ...] -> [R, ...]) for a unit's segment slots.

  With seg None (one row per segment) both are the identity. Otherwise expand reads each
  segment's row and reduce sums a row's segments (a sorted segment sum, which XLA:CPU runs as
  one pass; padding segments add exact zeros to the last slot).
  """
  if seg is None:
    return (lambda v: v), (lambda q: q)
  return ((lambda v: jnp.take(v, seg, axis=0, mode="clip")),
          (lambda q: jax.ops.segment_sum(q, seg, num_segments=num_rows, indices_are_sorted=True)))


def _solve_exact(other, gram_reg, cols, conf, seg, num_rows: int):
  """Cholesky solve of every row's (Y^T C_u Y + lambda I) x = Y^T C_u p_u."""
  _, reduce = _segment_ops(seg, num_rows)
  y_u = _gather(other, cols)
  extra = jnp.where(conf > 0, conf - 1.0, 0.0)
  b = reduce(_dot(conf, y_u, "rw,rwf->rf"))
  a = gram_reg[None] + reduce(jnp.einsum("rwf,rw,rwg->rfg", y_u, extra, y_u,
                                         precision=_HIGHEST))
  chol = jnp.linalg.cholesky(a)
  return jax.scipy.linalg.cho_solve((chol, True), b[..., None])[..., 0]


def _solve_cg(other, gram_reg, cols, conf, seg, x0, steps: int):
  """`steps` conjugate-gradient iterations on every row's system from x0 (Takacs et al. 2011).

  A_u v = (Y^T Y + lambda I) v + Y_u^T ((c - 1) * Y_u v) with Y_u gathered once per chunk;
  padding has c = 0, so its (c - 1) is masked to 0 and it adds nothing to b = Y_u^T c either.
  Per-row vectors ([R, f]) are expanded to their segments before a pass over Y_u and the
  segments' partial sums reduced back after it. Passes over Y_u: 2 for the starting residual,
  2 per step but 1 for the last.
  """
  expand, reduce = _segment_ops(seg, x0.shape[0])
  y_u = _gather(other, cols)
  extra = jnp.where(conf > 0, conf - 1.0, 0.0)

  # r = b - A x0 in one pair of passes: b = sum_w c_w y_w (p = 1 on the non-zeros).
  r = (reduce(_dot(conf - extra * _dot(y_u, expand(x0), "rwf,rf->rw"), y_u, "rw,rwf->rf"))
       - _dot(x0, gram_reg, "rf,fg->rg"))
  x, p = x0, r
  rs = jnp.sum(r * r, axis=1)
  for k in range(steps):
    yp = _dot(y_u, expand(p), "rwf,rf->rw")
    gp = _dot(p, gram_reg, "rf,fg->rg")
    if k == steps - 1:
      # The last step needs only p^T A p = p^T (Y^T Y + lambda I) p + sum_w (c_w - 1) (y_w . p)^2,
      # not A p itself: one pass over Y_u fewer.
      pap = jnp.sum(p * gp, axis=1) + reduce(jnp.sum(extra * yp * yp, axis=1))
    else:
      ap = gp + reduce(_dot(extra * yp, y_u, "rw,rwf->rf"))
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
def _compiled(mesh: Mesh, solver: str, cg_steps: int, segmented: bool
              ) -> tuple[Callable, Callable]:
  """Jitted (update a group of chunks, nnz-loss of a group) for one mesh, solver and class kind.

  Both read one factor table holding both sides (rows and columns index it), so users and items
  run the same programs. They take a group's stacked [group, ...] arrays and `lax.map` over its
  chunks inside a `shard_map` over the mesh's data axis: each device solves its own unit of every
  chunk (its rows and their segments, so a row's segment sums stay on one device) against the
  replicated table. One compilation per chunk shape: one per class.
  """
  data = sharding_lib.DATA
  unit = P(None, data)
  cells = P(None, data, None)
  seg_spec = unit if segmented else None
  replicated = NamedSharding(mesh, P())

  def local_update(table, gram_reg, rows, seg, cols, conf):
    def chunk(args):
      r, s, c, w = args
      if solver == "exact":
        return _solve_exact(table, gram_reg, c, w, s, r.shape[0])
      x0 = jnp.take(table, r, axis=0, mode="fill", fill_value=0)
      return _solve_cg(table, gram_reg, c, w, s, x0, cg_steps)
    return jax.lax.map(chunk, (rows, seg, cols, conf))

  def update(table, gram, rows, seg, cols, conf, regularization):
    f = table.shape[1]
    gram_reg = gram + regularization * jnp.eye(f, dtype=gram.dtype)
    # Every chunk reads the old table: its rows are disjoint from the other chunks', and the
    # other side's rows, which it solves against, do not change during a half-step.
    x = jax.shard_map(local_update, mesh=mesh,
                      in_specs=(P(), P(), unit, seg_spec, cells, cells),
                      out_specs=cells)(table, gram_reg, rows, seg, cols, conf)
    return table.at[rows.reshape(-1)].set(x.reshape(-1, f).astype(table.dtype), mode="drop")

  def local_loss(table, rows, seg, cols, conf):
    # Correction to the all-zeros loss on the non-zeros: c (1 - s)^2 - s^2 per pair.
    def chunk(args):
      r, s, c, w = args
      expand, _ = _segment_ops(s, r.shape[0])
      x_r = expand(jnp.take(table, r, axis=0, mode="fill", fill_value=0))
      score = _dot(x_r, _gather(table, c), "rf,rwf->rw")
      return jnp.sum(jnp.where(w > 0, w * (1.0 - score) ** 2 - score * score, 0.0), axis=1)
    return jax.lax.map(chunk, (rows, seg, cols, conf))

  def nnz_loss(table, rows, seg, cols, conf):
    return jax.shard_map(local_loss, mesh=mesh, in_specs=(P(), unit, seg_spec, cells, cells),
                         out_specs=unit)(table, rows, seg, cols, conf)

  # The table is donated: each group rewrites its rows in place instead of copying every factor.
  options = _CPU_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "cpu" else None
  return (jax.jit(update, out_shardings=replicated, donate_argnums=(0,), compiler_options=options),
          jax.jit(nnz_loss, out_shardings=NamedSharding(mesh, unit), compiler_options=options))


def _sum_over_rows(table: jax.Array, lo: int, hi: int | None, fn: Callable[[jax.Array], Any],
                   block_bytes: int = _ROW_BLOCK_BYTES) -> Any:
  """The sum of fn(rows) over consecutive blocks of the table's rows [lo, hi) (hi None: to the end).

  A side's Gram matrix is a product of a slice of the table with itself, and XLA:CPU copies a
  sliced dot operand into a temporary: 24 MB per items-side Gram at the benchmark's size. Each
  runtime thread that ran such a program kept that much in its malloc arena afterwards (two arenas
  held 30 MB each after two iterations), pages touched for nothing. Here a `fori_loop` takes
  blocks of about `block_bytes` instead (a dynamic slice each), so the temporary is one block,
  reused by every step; the rows after the last whole block are one static slice of fewer.
  """
  hi = table.shape[0] if hi is None else hi
  block = max(8, block_bytes // (table.shape[1] * table.dtype.itemsize) // 8 * 8)
  whole = (hi - lo) // block
  shapes = jax.eval_shape(fn, jax.ShapeDtypeStruct((block, table.shape[1]), table.dtype))
  total = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  if whole:
    total = jax.lax.fori_loop(
        0, whole, lambda i, acc: jax.tree.map(
            jnp.add, acc, fn(jax.lax.dynamic_slice_in_dim(table, lo + i * block, block))),
        total)
  if lo + whole * block < hi:
    total = jax.tree.map(jnp.add, total, fn(table[lo + whole * block:hi]))
  return total


@functools.lru_cache(maxsize=None)
def _table_fns(mesh: Mesh, num_users: int) -> dict[str, Callable]:
  """Jitted helpers over a [users + items, f] table: each side's Gram matrix and rows in the
  caller's order, the dense loss terms."""
  replicated = NamedSharding(mesh, P())

  def gram(table, users_side: bool):
    lo, hi = (0, num_users) if users_side else (num_users, None)
    return _sum_over_rows(table, lo, hi, lambda y: jnp.matmul(y.T, y, precision=_HIGHEST))

  def dense_terms(table, regularization):
    g = gram(table, False)
    zeros = _sum_over_rows(table, 0, num_users,
                           lambda x: jnp.sum(x * jnp.matmul(x, g, precision=_HIGHEST)))
    return zeros, regularization * jnp.sum(table * table)

  def restore(table, rank, users_side: bool):
    side = table[:num_users] if users_side else table[num_users:]
    return jnp.take(side, rank, axis=0, mode="clip")

  return {"users_restore": jax.jit(functools.partial(restore, users_side=True),
                                   out_shardings=replicated),
          "items_restore": jax.jit(functools.partial(restore, users_side=False),
                                   out_shardings=replicated),
          "users_gram": jax.jit(functools.partial(gram, users_side=True),
                                out_shardings=replicated),
          "items_gram": jax.jit(functools.partial(gram, users_side=False),
                                out_shardings=replicated),
          "dense_terms": jax.jit(dense_terms, out_shardings=(replicated, replicated))}


@dataclasses.dataclass
class _Side:
  """One side's blocks on the mesh as groups of `group` chunks: (segmented, rows, seg, cols, conf)
  per group, the unit axis sharded over the mesh's data axis. Its rows are solved against the
  table's rows of the other side, whose Gram matrix is `other_gram` ("users_gram" or
  "items_gram" of `_table_fns`)."""
  other_gram: str
  groups: list[tuple[bool, jax.Array, jax.Array | None, jax.Array, jax.Array]]


def _place(blocks: list[Block], other_gram: str, mesh: Mesh, group: int) -> _Side:
  unit = NamedSharding(mesh, P(None, sharding_lib.DATA))
  groups = []
  for b in blocks:
    for g in range(0, b.rows.shape[0], group):
      sl = slice(g, g + group)
      groups.append((b.segmented, jax.device_put(b.rows[sl], unit),
                     None if b.seg is None else jax.device_put(b.seg[sl], unit),
                     jax.device_put(b.cols[sl], unit), jax.device_put(b.conf[sl], unit)))
  return _Side(other_gram=other_gram, groups=groups)


def _release(*sides: _Side) -> None:
  """Frees the sides' placed blocks now, with the host memory they adopted.

  `jax.device_put` adopts a `_host_array` block without copying it; when the device array is
  deleted, XLA hands the numpy array back through a queue that JAX drains only in its garbage
  collection callback. Until some collection runs, the blocks (75 MB at the benchmark's size,
  about 1 GB at the Million Song Dataset's) stay allocated after `fit` has returned, and what
  `fit` allocates last cannot reuse them. A generation-0 collection runs that callback.
  """
  for side in sides:
    for group in side.groups:
      for array in group[1:]:
        if array is not None:
          array.delete()
    side.groups.clear()
  gc.collect(0)


def _ranks(rank: np.ndarray, mesh: Mesh) -> jax.Array:
  """A side's [rows] positions in the table, placed as `_start_compiles` declares them."""
  return jax.device_put(rank.astype(np.int32), sharding_lib.replicated(mesh))


def _scalar(value: float, mesh: Mesh) -> jax.Array:
  """A float32 scalar placed as `_start_compiles` declares it, so the calls find its programs."""
  return jax.device_put(np.float32(value), sharding_lib.replicated(mesh))


def _solve_side(table: jax.Array, side: _Side, num_users: int, regularization: float,
                mesh: Mesh, solver: str, cg_steps: int) -> jax.Array:
  """Solves one side's rows of the table against the other side's; returns the new table.

  Consumes `table`: the solve calls donate it and rewrite their rows in place, so the caller
  (`fit`, `solve_rows`, which made it) must not use it again. A defensive copy here cost a fresh
  [users + items, f] buffer per half-step (38 MB at the benchmark's size: above glibc's mmap
  threshold, so every copy paid its page faults again).
  """
  gram = _table_fns(mesh, num_users)[side.other_gram](table)
  reg = _scalar(regularization, mesh)
  # Several CPU devices share one host thread pool: executions dispatched ahead can fill it with
  # participants waiting in the all-gather's rendezvous for partners that never get a thread (a hang
  # seen with 2 devices on 2 cores). Waiting for each group keeps one collective in flight.
  sync = mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"
  for segmented, rows, seg, cols, conf in side.groups:
    update, _ = _compiled(mesh, solver, cg_steps, segmented)
    table = update(table, gram, rows, seg, cols, conf, reg)
    if sync:
      table.block_until_ready()
  return table


def _program_specs(row_nnz: list[np.ndarray], *, segment_width: int, min_width: int,
                   num_shards: int, chunk_cells: int, min_unit_segments: int
                   ) -> list[tuple[bool, int, int, int]]:
  """(segmented, width, unit rows, unit segments) of every class some side has rows in.

  `row_nnz` holds each side's non-zeros per row; the shapes are those `_make_blocks` gives the
  same sides (with `min_unit_segments` covering every side's longest row), known before any
  block is built, so their programs can compile while the blocks are being laid out.
  """
  widths = class_widths(segment_width, min_width)
  specs = set()
  for nnz in row_nnz:
    for c in np.unique(_class_of(nnz, widths)):
      segmented = int(c) == len(widths)
      width = segment_width if segmented else widths[int(c)]
      unit_rows, unit_segments = _unit_shape(width, segmented, num_shards=num_shards,
                                             chunk_cells=chunk_cells,
                                             min_unit_segments=min_unit_segments)
      specs.add((segmented, int(width), unit_rows, unit_segments))
  return sorted(specs)


def _start_compiles(pool: concurrent.futures.Executor, mesh: Mesh, table_rows: int,
                    factors: int, num_users: int, specs: list[tuple[bool, int, int, int]],
                    solver: str, cg_steps: int, compute_loss: bool, group: int,
                    restore: bool = False) -> list[_Compile]:
  """Submits the compilation of every program a fit runs to `pool`, from shapes alone.

  XLA compiles a program with the GIL released, so the few distinct programs (one solve per
  class and chunk shape, shared by both sides; the Gram matrices; the loss; with `restore`, the
  callback's two gathers back to the caller's order, given `_ranks`) compile in `pool`'s threads
  while `fit` lays out the blocks, instead of one after another as the first iteration reaches
  each. A compiled program lands in jit's cache (and the persistent cache, when one is set),
  where the solves then find it.
  """
  replicated = sharding_lib.replicated(mesh)
  unit = NamedSharding(mesh, P(None, sharding_lib.DATA))
  shards = sharding_lib.data_size(mesh)
  table = jax.ShapeDtypeStruct((table_rows, factors), jnp.float32, sharding=replicated)
  gram = jax.ShapeDtypeStruct((factors, factors), jnp.float32, sharding=replicated)
  reg = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
  fns = _table_fns(mesh, num_users)
  jobs = [(fns["users_gram"], (table,)), (fns["items_gram"], (table,))]
  if compute_loss:
    jobs.append((fns["dense_terms"], (table, reg)))
  if restore:
    for name, rows in (("users_restore", num_users), ("items_restore", table_rows - num_users)):
      rank = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=replicated)
      jobs.append((fns[name], (table, rank)))
  for segmented, width, unit_rows, unit_segments in specs:
    rows = jax.ShapeDtypeStruct((group, shards * unit_rows), jnp.int32, sharding=unit)
    seg = (jax.ShapeDtypeStruct((group, shards * unit_segments), jnp.int32, sharding=unit)
           if segmented else None)
    cols = jax.ShapeDtypeStruct((group, shards * unit_segments, width), jnp.int32,
                                sharding=unit)
    conf = jax.ShapeDtypeStruct((group, shards * unit_segments, width), jnp.float32,
                                sharding=unit)
    update, _ = _compiled(mesh, solver, cg_steps, segmented)
    jobs.append((update, (table, gram, rows, seg, cols, conf, reg)))
    if compute_loss:
      _, nnz_loss = _compiled(mesh, "exact", 0, segmented)
      jobs.append((nnz_loss, (table, rows, seg, cols, conf)))
  return [_Compile(pool, fn, args) for fn, args in jobs]


class _Compile:
  """One program's compilation, submitted to a pool; `wait` takes it over if it has not started.

  The pool's threads take jobs in submission order; once `fit` has laid out its blocks, its own
  thread would otherwise sit waiting for the rest, so it compiles, last first, those no pool
  thread has begun (a job the pool has started is waited for).
  """

  def __init__(self, pool: concurrent.futures.Executor, fn: Callable, args: tuple):
    self.fn, self.args = fn, args
    self.future = pool.submit(self._run)

  def _run(self) -> None:
    self.fn.lower(*self.args).compile()

  def take_over(self) -> bool:
    """Compiles in the calling thread if no pool thread has started; returns whether it did.

    A cancelled future is one this thread took over (`cancel` would succeed on it again)."""
    if self.future.cancelled() or not self.future.cancel():
      return False
    self._run()
    return True

  def wait(self) -> None:
    """Returns once the program is compiled, here if no pool thread has begun it."""
    if not self.future.cancelled() and not self.take_over():
      self.future.result()


def _compile_threads() -> int:
  """Threads that compile a fit's programs beside its layout (`_start_compiles`).

  XLA:CPU spreads one compilation over about two cores itself, and the layout needs one: on this
  2-core machine one compile thread beat two in three alternating cold pairs of the benchmark's
  fit (first iteration 2.85-3.54 s against 3.33-3.86 s, working memory 272-284 against 312-314 MB,
  two compilations' worth of compiler memory at once being the difference). Once the layout is
  done, `fit`'s own thread compiles the programs the pool has not begun (`_Compile`), instead of
  waiting: cold first iteration 2.54-3.04 s against 3.00-3.32 s in four alternating pairs on 2
  devices (stop 25), working memory 360-381 against 350-371 MB (two compilations at once).
  """
  return max(1, ((os.cpu_count() or 1) - 1) // 2)


def _side_loss(table: jax.Array, side: _Side, num_users: int, regularization: float,
               mesh: Mesh) -> float:
  """The objective from the users' side blocks (every non-zero once) and the dense terms."""
  zeros, reg = _table_fns(mesh, num_users)["dense_terms"](table, _scalar(regularization, mesh))
  total = float(zeros) + float(reg)
  for segmented, rows, seg, cols, conf in side.groups:
    _, nnz_loss = _compiled(mesh, "exact", 0, segmented)
    total += float(np.asarray(nnz_loss(table, rows, seg, cols, conf), np.float64).sum())
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
  return _popularity_order(_check_counts(counts))


def _column_counts(csr: scipy.sparse.csr_matrix) -> np.ndarray:
  """Non-zeros per column, [cols] int64, counted slice by slice.

  `np.bincount` casts int32 ids to intp first: over the whole matrix that is an 8-byte temporary
  per non-zero (32 MB of fresh pages for the benchmark's 4M, 0.2 s of page faults here; 384 MB at
  the Million Song Dataset's 48M listens). A slice's cast stays within `_HOST_SLICE` values.
  """
  counts = np.zeros(csr.shape[1], np.int64)
  for start in range(0, csr.indices.size, _HOST_SLICE):
    counts += np.bincount(csr.indices[start:start + _HOST_SLICE], minlength=csr.shape[1])
  return counts


def _draw_rows(rng: np.random.Generator, out: np.ndarray, rank: np.ndarray) -> None:
  """out[rank[j]] = 0.01 * row j of rng's [len(rank), f] float32 standard normal draws.

  Drawn `_HOST_SLICE` values at a time into one small buffer and scattered to their rows: the
  generator's stream does not depend on how it is cut, so the values are those of one
  `rng.standard_normal((len(rank), f), np.float32)` scaled in place, without that whole-size
  array (38 MB of fresh pages at the benchmark's size, for both sides).
  """
  rows = max(1, _HOST_SLICE // max(1, out.shape[1]))
  buffer = np.empty((min(rows, len(rank)), out.shape[1]), np.float32)
  for start in range(0, len(rank), rows):
    part = buffer[:min(rows, len(rank) - start)]
    rng.standard_normal(out=part, dtype=np.float32)
    part *= 0.01
    out[rank[start:start + len(part)]] = part


def _index_array(rank: np.ndarray) -> np.ndarray:
  """`rank` as int32 where its values fit (relabelled ids take 4 bytes each, not 8)."""
  return rank.astype(np.int32) if len(rank) <= np.iinfo(np.int32).max else rank


def _popularity_orders(csr: scipy.sparse.csr_matrix, item_nnz: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(user_order, item_order): rows and columns by decreasing non-zeros, ties in index order."""
  if item_nnz is None:
    item_nnz = _column_counts(csr)
  return (np.argsort(-np.diff(csr.indptr), kind="stable"),
          np.argsort(-np.asarray(item_nnz), kind="stable"))


def _popularity_order(csr: scipy.sparse.csr_matrix
                      ) -> tuple[np.ndarray, np.ndarray, scipy.sparse.csr_matrix]:
  """`popularity_order` of a checked matrix: the column ids are relabelled in place, slice by
  slice, so the copy holds no whole-length temporary beside its own arrays."""
  user_order, item_order = _popularity_orders(csr)
  item_rank = _index_array(np.argsort(item_order))
  rows = csr[user_order]
  indices = rows.indices.astype(item_rank.dtype, copy=False)
  for start in range(0, indices.size, _HOST_SLICE):
    part = indices[start:start + _HOST_SLICE]
    part[:] = item_rank[part]
  out = scipy.sparse.csr_matrix((rows.data, indices, rows.indptr), shape=rows.shape, copy=False)
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
  own = _as_factors(np.zeros(shape) if init is None else init, shape, "init", None)
  other = _as_factors(other, other.shape, "other_factors", None)
  # One table of both sides, own rows first (see `make_blocks`).
  rows = csr.shape[0]
  table = jax.device_put(np.concatenate([own, other]), sharding_lib.replicated(mesh))
  side = _place(make_blocks(csr, alpha=alpha, confidence_kind=confidence_kind, eps=eps,
                            num_shards=sharding_lib.data_size(mesh), col_offset=rows),
                "items_gram", mesh, _GROUP)
  table = np.asarray(_solve_side(table, side, rows, regularization, mesh, solver, cg_steps))
  _release(side)
  return table[:rows]


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
  x = _as_factors(user_factors, (csr.shape[0], f), "user_factors", None)
  y = _as_factors(item_factors, (csr.shape[1], f), "item_factors", None)
  table = jax.device_put(np.concatenate([x, y]), sharding_lib.replicated(mesh))
  side = _place(make_blocks(csr, alpha=alpha, confidence_kind=confidence_kind, eps=eps,
                            num_shards=sharding_lib.data_size(mesh), col_offset=csr.shape[0]),
                "items_gram", mesh, _GROUP)
  value = _side_loss(table, side, csr.shape[0], regularization, mesh)
  _release(side)
  return value


def fit(counts: Any, *, factors: int = 64, regularization: float = 0.01, alpha: float = 40.0,
        confidence: str = "linear", eps: float = 1.0, iterations: int = 15,
        solver: str = "cg", cg_steps: int = 3, seed: int = 0, mesh: Mesh | None = None,
        callback: Callable[[int, float, jax.Array, jax.Array], Any] | None = None,
        compute_loss: bool = True, user_factors: Any = None, item_factors: Any = None,
        start_iteration: int = 0, chunk_cells: int = 1 << 13,
        segment_width: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """Fits implicit-feedback WMF by alternating least squares (Hu, Koren & Volinsky 2008).

  Each iteration solves all users given the items, then all items given the users. Factors start
  as N(0, 0.01^2) draws of numpy's generator from `seed` (independent of the mesh), unless given
  (to resume). Internally both sides are solved in `popularity_order` (faster gathers) and kept
  in one table (see `make_blocks`); inputs, callback arguments and results are in the caller's
  order. All of a fit's programs (at most four solves, four losses with `compute_loss`, and
  the two gathers that hand a `callback` the factors in the caller's order) compile before the
  first iteration, in background threads while the blocks are laid out (`_compile_threads`).

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
    chunk_cells: cells per fixed-shape chunk (see `make_blocks`).
    segment_width: non-zeros per segment of rows longer than it, and the widest one-row class
      (see `make_blocks`).

  Returns:
    (user_factors [users, f], item_factors [items, f]) float32 numpy arrays.
  """
  csr = _check_counts(counts)
  _check_args(solver, cg_steps, factors, regularization)
  if (user_factors is None) != (item_factors is None):
    raise ValueError("pass both user_factors and item_factors to resume, or neither.")
  mesh = mesh or sharding_lib.make_mesh()
  num_users, num_items = csr.shape
  if user_factors is not None:
    user_factors = _as_factors(user_factors, (num_users, factors), "user_factors", None)
    item_factors = _as_factors(item_factors, (num_items, factors), "item_factors", None)
  shards = sharding_lib.data_size(mesh)
  user_nnz = np.diff(csr.indptr)
  item_nnz = _column_counts(csr)
  # Both sides share the segmented class's shape: units hold the longer side's longest row.
  min_unit_segments = -(-int(max(user_nnz.max(initial=0), item_nnz.max(initial=0)))
                        // segment_width)
  layout = dict(num_shards=shards, segment_width=segment_width, min_width=8,
                chunk_cells=chunk_cells, min_unit_segments=min_unit_segments)
  pool = concurrent.futures.ThreadPoolExecutor(_compile_threads())
  compiles = []
  if start_iteration < iterations:
    compile_start = time.perf_counter()
    compiles = _start_compiles(pool, mesh, num_users + num_items, factors, num_users,
                               _program_specs([user_nnz, item_nnz], **layout), solver, cg_steps,
                               compute_loss, _GROUP, restore=callback is not None)
  try:
    # Solved in popularity order (`popularity_order`): row u of the table holds user
    # user_order[u], row num_users + i item item_order[i].
    user_order, item_order = _popularity_orders(csr, item_nnz)
    user_rank, item_rank = np.argsort(user_order), np.argsort(item_order)
    # One [users + items, f] table: users' columns index its item rows, items' its user rows,
    # so both half-steps run the same few programs (see `make_blocks`).
    table = np.empty((num_users + num_items, factors), np.float32)
    if user_factors is None:
      # Drawn after the compilations started: their tracing holds the GIL, numpy's generator
      # does not. numpy's generator, not jax.random: the same draws on any mesh or backend, and
      # no program to compile for each table shape (0.4 s of CPU each here).
      rng = np.random.default_rng(seed)
      _draw_rows(rng, table[:num_users], user_rank)
      _draw_rows(rng, table[num_users:], item_rank)
    else:
      np.take(user_factors, user_order, axis=0, out=table[:num_users])
      np.take(item_factors, item_order, axis=0, out=table[num_users:])
      del user_factors, item_factors
    table = jax.device_put(table, sharding_lib.replicated(mesh))
    # The items' side reads the transpose: the setup's one whole-size copy of the non-zeros
    # (8 bytes each: a confidence and a user id). It is laid out first and freed, so that the
    # users' side, read from `csr` a slice at a time (`_RowEntries`), reuses its pages: fresh
    # pages cost 0.5 ms per MB on first touch here, 5-10 ms where numpy's huge-page advice makes
    # the kernel compact memory for them (`launch.common.configure_host_memory`).
    by_item = scipy.sparse.csr_matrix(
        (_confidence(csr.data, alpha=alpha, kind=confidence, eps=eps), csr.indices, csr.indptr),
        shape=csr.shape, copy=False).T.tocsr()
    kwargs = dict(group=_GROUP, table_rows=num_users + num_items, **layout)
    items = _place(_make_blocks(item_nnz[item_order],
                                _RowEntries(by_item, item_order, _index_array(user_rank)),
                                row_offset=num_users, col_offset=0, **kwargs),
                   "users_gram", mesh, _GROUP)
    del by_item
    users = _place(_make_blocks(user_nnz[user_order],
                                _RowEntries(csr, user_order, _index_array(item_rank),
                                            functools.partial(_confidence, alpha=alpha,
                                                              kind=confidence, eps=eps)),
                                row_offset=0, col_offset=num_users, **kwargs),
                   "items_gram", mesh, _GROUP)
    logging.info("wmf: %d users x %d items, %d non-zeros, %d factors, solver=%s, %d devices; "
                 "%d user and %d item solve calls per iteration", num_users, num_items, csr.nnz,
                 factors, solver, shards, len(users.groups), len(items.groups))
    # Compiled from the last: the pool thread works from the first.
    for job in reversed(compiles):
      job.take_over()
    for job in compiles:
      job.wait()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
  if compiles:
    logging.info("wmf: %d programs ready %.2fs after the start of the layout", len(compiles),
                 time.perf_counter() - compile_start)
  # Placed once, as the compiled restores expect them: the callback's gathers run every iteration.
  ranks = (_ranks(user_rank, mesh), _ranks(item_rank, mesh)) if callback is not None else None
  for it in range(start_iteration, iterations):
    start = time.perf_counter()
    table = _solve_side(table, users, num_users, regularization, mesh, solver, cg_steps)
    table = _solve_side(table, items, num_users, regularization, mesh, solver, cg_steps)
    table.block_until_ready()
    seconds = time.perf_counter() - start
    value = (_side_loss(table, users, num_users, regularization, mesh) if compute_loss
             else float("nan"))
    if not np.isfinite(value) and compute_loss:
      raise FloatingPointError(f"wmf: the loss became {value} at iteration {it + 1}; lower alpha "
                               "or raise regularization.")
    logging.info("wmf iteration %d/%d: loss %.6g (%.2fs)", it + 1, iterations, value, seconds)
    if callback is not None:
      fns = _table_fns(mesh, num_users)
      callback(it + 1, value, fns["users_restore"](table, ranks[0]),
               fns["items_restore"](table, ranks[1]))
  table = np.asarray(table)  # waits for the last solve, the blocks' last reader
  # The blocks go back to the allocator before the results are gathered, so the results take
  # their pages rather than fresh ones (38 MB at the benchmark's size).
  _release(users, items)
  del users, items
  return table[:num_users][user_rank], table[num_users:][item_rank]


def _ranked_length(length: int) -> int:
  """`length` rounded up to one of eight steps per power of two (at most 12.5% more).

  `recommend` ranks k + (the most items a user in the call has seen) and filters; that length
  differs from one call (user chunk) to the next, and each length is a program of its own for
  `ranking.top_k_scores` (k is static), compiled in 0.3-0.5 s. Rounded, a loop over user chunks
  reuses a few programs. The lists are the same: a longer top-k list starts with the shorter
  one (ties go to the lower index in both).
  """
  step = 1 << max(0, length.bit_length() - 4)
  return -(-length // step) * step


def recommend(user_factors: Any, item_factors: Any, user_items: Any, users: Any, k: int, *,
              filter_seen: bool = True, release_memory: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
  """Top-k items per user by predicted preference x_u . y_i, optionally without seen items.

  Args:
    user_factors: [users, f]; item_factors: [items, f].
    user_items: [users, items] scipy sparse counts of the training data (for filtering).
    users: [Q] user indices to recommend for.
    k: items per user, 1 <= k <= items.
    filter_seen: leave out the items each user has a non-zero count for.
    release_memory: as `musemb.ranking.top_k_scores`'s (False in a loop over user chunks).

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
    return ranking.top_k_scores(queries, item_factors, int(k), release_memory=release_memory)
  csr = _check_counts(user_items, "user_items")[users]
  seen_max = int(np.diff(csr.indptr).max()) if len(users) else 0
  kk = min(num_items, _ranked_length(int(k) + seen_max))
  scores, idx = ranking.top_k_scores(queries, item_factors, kk, release_memory=release_memory)
  out_scores = np.full((len(users), k), -np.inf, np.float32)
  out_idx = np.full((len(users), k), -1, np.int32)
  for q in range(len(users)):
    seen = csr.indices[csr.indptr[q]:csr.indptr[q + 1]]
    keep = (idx[q] >= 0) & ~np.isin(idx[q], seen)
    n = min(k, int(keep.sum()))
    out_scores[q, :n] = scores[q][keep][:n]
    out_idx[q, :n] = idx[q][keep][:n]
  return out_scores, out_idx
