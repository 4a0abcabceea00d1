"""Chunked exact top-k ranking by dot product, the engine behind every retrieval evaluation.

MUSLSE (Weston, Bengio, Hamel) scores every (song, label) pair by the dot product of their
embeddings and reads off the top of each song's ranking: on Big-data that is 66,072 test songs
against 26,972 artists. `top_k_scores` computes those rankings without ever holding the whole
[queries, items] score matrix: queries go through in fixed-size chunks, each scored against all
items and reduced to its top k by one jit-compiled step that scores one chunk while it ranks the
chunk before (Pipelining, below), and each chunk's [chunk, k] result is copied into one
preallocated host array. The last chunk is padded, so a whole
evaluation compiles once. The same function runs on CPU and on accelerators.

Two-stage top-k. `lax.top_k` over whole 26,972-item rows took 2.8 s of the Big-data ranking's 6.8 s
on 2 idle cores (on CPU it is one thread walking every score; the matmul took 3.2 s). Where k is
small against the catalogue, the row is cut into blocks of B items (B = sqrt(N / k) rounded up to a
power of two: 64 at Big-data's N = 26,972, k = 15; `_stage_block`), and (1) each block's maximum is
taken, (2) `lax.top_k` picks the k blocks with the highest maxima, (3) `lax.top_k` ranks those k * B
scores, gathered in index order, together with the ragged tail of fewer than B items after the last
whole block. This is exact: a block left out has k blocks ranked before it, each holding an item
that ranks before all of the left-out block's items, so none of them is in the top k. Ties go to the
lower index in both stages (`lax.top_k` ranks an equal value at a lower position first; block ids
are sorted back into index order before the gather). On the Big-data shape it takes the time after
the matmul from about 2.8 s to about 1 s (launch.benchmarks.evaluation: the whole ranking from
6.8-7.1 s to 3.9-4.7 s on idle cores, faiss 3.3-4.7 s in the same runs: 0.80-0.99x faiss's speed;
four later runs 0.80-1.17x; the matmul alone is 2.85-3.16 s of the 3.4-3.7 s; stop 22, two
alternating rounds a side on quieter cores: 0.85-0.87x, faiss's blocked OpenBLAS sgemm being the
faster GEMM there, README, Benchmarks, `evaluation`). The tail is scored
by a second small matmul, so the items are never padded or copied on the host. Where the
candidates would be more than half of the row (k close to N) one `lax.top_k` ranks the row.
The two-stage program lays the scores out [items, queries] (the items are the matmul's left
operand): a block maximum is then a maximum over consecutive rows, vectorised across the chunk's
queries, and the matmul itself was 5-17% faster that way round (stop 22). Pipelined, four
alternating fresh processes (stop 26): 3.36-4.64 s against 3.66-4.95 s for [queries, items].

Pipelining (issue 14, stop 26). On CPU the matmul runs on every core and the selection (block
maxima, the two `TopK` calls, the sort and the gather) mostly on one, so in sequence one core
idled through the selection, 0.5-1 s of a Big-data ranking. Each call of `_rank_step` therefore
scores chunk i into one score block and ranks chunk i - 1 from the other. The two halves share
no buffer, and XLA's CPU runtime runs a program's independent operations concurrently, so the
selection of one chunk overlaps the matmul of the next. It costs a second score block (below)
and one step more than there are chunks: the first step ranks a block nothing has written yet,
its result dropped, and the last scores the last chunk again to rank it. In the
launch.benchmarks.evaluation suite, four runs alternating with the sequential program in one
sitting (load 1.7-2.3, this machine's slow day): best call 0.89x / 1.13x / 0.92x / 1.04x faiss's
speed against 0.67x / 0.79x / 0.74x / 0.92x, working memory 43-46 MB against 40-41 MB (faiss
48 MB); two later runs 0.97x and 1.14x. On an accelerator the two halves simply run in one
program.

Memory. Five choices keep what a ranking adds to the process small (Big-data scale,
launch.benchmarks.evaluation, peak resident size minus the size just before the first call):

* The score blocks are donated. Each step returns the score block it wrote and is handed back,
  to write into, the block the step before it ranked (`donate_argnames`), so XLA writes every
  chunk's scores into one of two buffers, allocated once per call. A block that is a temporary of
  each execution is instead allocated afresh per chunk by whichever runtime thread runs it, and
  glibc keeps a freed copy of it in each of those threads' malloc arenas: with blocks of 256 x
  26,972 (27.6 MB) that was 124-161 MB of working memory against faiss's 46. A fresh block per
  chunk also pays its page faults every time, which slowed the block-maximum pass 2-4x.
* The freed pages go back to the system when the call returns (`musemb.utils.release_free_memory`,
  glibc's `malloc_trim`). Without it each call left 20-40 MB of freed buffers in the runtime
  threads' malloc arenas and the next call allocated beside them: over two Big-data calls the
  working memory was 46-50 MB against faiss's 47-48, with it 40-42 MB, the second call peaking
  where the first did (stop 22, launch.benchmarks.evaluation, two rounds a side).
* The masks (`exclude`, `item_mask`) enter the block-maximum reduction and the candidates, never
  the stored block, so no second [query_chunk, items] buffer exists. The -inf -> -1 index fill
  and the overflow check run on the host, on the [Q, k] results.
* Compiled ahead. `_compile_step` compiles the step before the items are copied and the blocks
  allocated, and hands the compiler's freed memory back right after. Compiled inside the first
  call, the compiler's transient memory (a first call added 46-47 MB to the process, a warm call
  25 MB) sat on top of the copies and the block; with two blocks that would have been 53-54 MB,
  compiled ahead 42.5-44 MB (fresh processes, peak resident size minus the size before the call,
  stop 26).
* Query chunks of 64: each block is 64 x 26,972 float32 = 6.9 MB. Larger chunks make the matmul
  faster on CPU (it streams the items once per chunk: 10-20% at 128) and cost twice the block's
  size again per doubling (sequential, 128 queries a chunk and one block: 0.85x faiss's speed,
  50 MB). The input check reads each matrix's min and max (NaN and inf
  show there) instead of building a [Q, d] boolean array (6.6 MB for the Big-data queries).

On CPU the two-stage program needs XLA's LLVM code generator (the sort of the block ids, the
gather); a process's first generated kernel costs about 18 MB resident. Every musemb evaluation
follows a jitted model's forward pass, which has started it already, so the benchmark measures
the ranking's memory after it. The one-`lax.top_k` program is the matmul and XLA's TopK call
alone and needs no generated kernels.

`item_chunk` scores the items in chunks too, merging each chunk's top-k into a running list in a
`lax.scan` (for catalogues too large for a [query_chunk, items] block); it always applies the
masks in the program and so compiles with the code generator. It is not the default: weighed as
a way to shrink the block (256 x 2,048 is 2 MB), a loop over item tiles cost 20-40% more CPU
(each step copies its item tile out of the items before the matmul, and merges) and its loop
and merges need generated kernels (the 18 MB start-up plus about 20 MB for compiling it), so it
used more memory than small query chunks over whole rows.

Ties go to the lower item index, everywhere: `lax.top_k` keeps the lower index first among equal
values, and merging the running top-k of earlier (lower-index) item chunks ahead of a new chunk's
top-k keeps that order. This is the tie rule of `musemb.metrics` for precision@k and mAP@n, so
the top-k lists can be scored with `musemb.metrics.precision_at_k_from_topk` and friends.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musemb import utils


def _stage_block(num_items: int, k: int) -> int | None:
  """Items per block of the two-stage top-k, or None where one `lax.top_k` over the row is used.

  The block size B balances the two stages' inputs (num_items / B block maxima, k * B
  candidates): sqrt(num_items / k) rounded up to a power of two, at least 8. Two stages pay off
  only where the candidates (k blocks plus the ragged tail of fewer than B items) are at most
  half of the row.
  """
  size = 8
  while size * size * k < num_items:
    size *= 2
  whole = num_items // size
  candidates = k * size + num_items - whole * size
  return size if whole >= k and 2 * candidates <= num_items else None


def _select(scores: jax.Array, queries: jax.Array, tail: jax.Array | None,
            item_valid: jax.Array | None, exclude: jax.Array | None, k: int,
            stage_block: int | None) -> tuple[jax.Array, jax.Array]:
  """Top-k items of one query chunk from its score block.

  Args:
    scores: the chunk's scores against the leading M items: [query_chunk, M] for one
      `lax.top_k` (stage_block None), [M, query_chunk] (items first) for the two stages.
    queries: [query_chunk, d] float32, for the tail's scores.
    tail, item_valid, exclude, k, stage_block: as in `_rank_step`.

  Returns:
    scores [query_chunk, k] float32 (-inf for masked-out items) and indices [query_chunk, k]
    int32, best first.
  """
  if stage_block is None:
    rows, width = scores.shape
    if item_valid is not None:
      idx = jnp.arange(width, dtype=jnp.int32)
      ok = item_valid[None, :width] & (idx[None, :] != exclude[:, None])
      scores = jnp.where(ok, scores, -jnp.inf)
    return jax.lax.top_k(scores, k)

  # Two stages, exact: (1) the k blocks with the highest maxima hold the top k items of the
  # whole blocks (a block left out has k blocks ranked before it, each with an item ranked
  # before all of its items); (2) one lax.top_k over those blocks' scores, gathered in index
  # order, and the tail's. Ties go to the lower index in both: lax.top_k ranks an equal block
  # maximum or score at a lower position first, and positions follow item indices. With the
  # items first, a block maximum is a maximum over consecutive rows, vectorised across queries.
  width, rows = scores.shape
  num_blocks = width // stage_block
  blocks = scores.reshape(num_blocks, stage_block, rows)
  if item_valid is not None:
    # The masks enter the reduction (fused into it), not the stored block: no second
    # [M, rows] buffer.
    idx = jnp.arange(width, dtype=jnp.int32)
    ok = item_valid[:width, None] & (idx[:, None] != exclude[None, :])
    blocks = jnp.where(ok.reshape(blocks.shape), blocks, -jnp.inf)
  _, best_blocks = jax.lax.top_k(blocks.max(axis=1).T, k)
  best_blocks = jnp.sort(best_blocks, axis=1)
  cols = (best_blocks[:, :, None] * stage_block
          + jnp.arange(stage_block, dtype=jnp.int32)).reshape(rows, k * stage_block)
  candidates = scores[cols, jnp.arange(rows, dtype=jnp.int32)[:, None]]
  if tail is not None:
    tail_cols = width + jnp.arange(tail.shape[0], dtype=jnp.int32)
    cols = jnp.concatenate([cols, jnp.broadcast_to(tail_cols, (rows, tail.shape[0]))], axis=1)
    candidates = jnp.concatenate(
        [candidates, jnp.dot(queries, tail.T, precision=jax.lax.Precision.HIGHEST)], axis=1)
  if item_valid is not None:
    allowed = item_valid[cols] & (cols != exclude[:, None])
    candidates = jnp.where(allowed, candidates, -jnp.inf)
  top_scores, pos = jax.lax.top_k(candidates, k)
  return top_scores, jnp.take_along_axis(cols, pos, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "stage_block"), donate_argnames=("block",),
                   keep_unused=True)
def _rank_step(queries: jax.Array, block: jax.Array, prev_queries: jax.Array,
               prev_block: jax.Array, items: jax.Array, tail: jax.Array | None,
               item_valid: jax.Array | None, prev_exclude: jax.Array | None, k: int,
               stage_block: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step of the pipelined ranking: scores a chunk and ranks the chunk before it.

  The two halves are independent, so XLA's CPU runtime runs the previous chunk's selection (one
  thread) beside this chunk's matmul (module docstring, Pipelining).

  Args:
    queries: [query_chunk, d] float32, the chunk to score.
    block: donated: its buffer receives this chunk's scores (returned as the third output; the
      next step's prev_block). [query_chunk, M] for one `lax.top_k`, [M, query_chunk] for the two
      stages. Its values are not read.
    prev_queries: [query_chunk, d] float32, the previous chunk.
    prev_block: the previous chunk's scores, as `block` (read, not donated; the next step's
      `block`).
    items: [M, d] float32: all N items for one `lax.top_k`; with stage_block, the leading
      M = (N // stage_block) * stage_block items, in whole blocks.
    tail: [N - M, d] float32, the items after the whole blocks (None when there are none).
    item_valid: [N] bool, False for masked-out items; None for no mask (then `prev_exclude` is
      None too).
    prev_exclude: [query_chunk] int32 item index to drop per previous query, -1 for none.
    k: number of items to keep.
    stage_block: items per block of the two-stage top-k (`_stage_block`), or None for one
      `lax.top_k` over the whole row.

  Returns:
    The previous chunk's scores [query_chunk, k] float32 (-inf for masked-out items) and indices
    [query_chunk, k] int32, best first (the caller maps -inf slots to index -1), and this chunk's
    score block.
  """
  del block  # Donated and aliased to the third output; XLA computes the scores into it.
  # HIGHEST keeps float32 dot products on accelerators, whose default would round the inputs
  # to bfloat16/TF32 and reorder near-ties relative to a float32 reference.
  if stage_block is None:
    scores = jnp.dot(queries, items.T, precision=jax.lax.Precision.HIGHEST)
  else:
    scores = jnp.dot(items, queries.T, precision=jax.lax.Precision.HIGHEST)
  top_scores, top_idx = _select(prev_block, prev_queries, tail, item_valid, prev_exclude, k,
                                stage_block)
  return top_scores, top_idx, scores


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_chunk(queries: jax.Array, items: jax.Array, item_valid: jax.Array,
                 exclude: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Top-k items of one query chunk, scanning over the item chunks.

  Args:
    queries: [query_chunk, d] float32.
    items: [item_chunks, item_chunk, d] float32, zero-padded.
    item_valid: [item_chunks, item_chunk] bool, False for padding and masked-out items.
    exclude: [query_chunk] int32 item index to drop per query, -1 for none.
    k: number of items to keep.

  Returns:
    scores [query_chunk, k] float32 (-inf where fewer than k items are allowed) and indices
    [query_chunk, k] int32, best first.
  """
  num_chunks, chunk, _ = items.shape
  chunk_k = min(k, chunk)

  def merge(best, xs):
    best_scores, best_idx = best
    chunk_items, chunk_valid, offset = xs
    # HIGHEST keeps float32 dot products on accelerators, whose default would round the inputs
    # to bfloat16/TF32 and reorder near-ties relative to a float32 reference.
    scores = jnp.dot(queries, chunk_items.T, precision=jax.lax.Precision.HIGHEST)
    idx = offset + jnp.arange(chunk, dtype=jnp.int32)
    allowed = chunk_valid[None, :] & (idx[None, :] != exclude[:, None])
    scores = jnp.where(allowed, scores, -jnp.inf)
    top_scores, top_pos = jax.lax.top_k(scores, chunk_k)
    # The running list holds lower indices than this chunk, so putting it first keeps ties in
    # index order through the stable merge.
    cand_scores = jnp.concatenate([best_scores, top_scores], axis=1)
    cand_idx = jnp.concatenate([best_idx, idx[top_pos]], axis=1)
    new_scores, pick = jax.lax.top_k(cand_scores, k)
    return (new_scores, jnp.take_along_axis(cand_idx, pick, axis=1)), None

  init = (jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
          jnp.full((queries.shape[0], k), -1, jnp.int32))
  offsets = jnp.arange(num_chunks, dtype=jnp.int32) * chunk
  (scores, idx), _ = jax.lax.scan(merge, init, (items, item_valid, offsets))
  return scores, jnp.where(scores == -jnp.inf, -1, idx)


def _block_shape(qchunk: int, width: int, stage_block: int | None) -> tuple[int, int]:
  """A score block's shape: [queries, items] for one `lax.top_k`, [items, queries] for two."""
  return (qchunk, width) if stage_block is None else (width, qchunk)


# The `_rank_step` programs compiled by `_compile_step` in this process (their shapes and
# settings): only a first compilation hands memory back.
_COMPILED_STEPS: set[tuple] = set()


def _compile_step(qchunk: int, dim: int, num_items: int, width: int, masked: bool, k: int,
                  stage_block: int | None) -> None:
  """Compiles `_rank_step` for a ranking's shapes ahead of its first call (module docstring,
  Memory).

  `jit(...).lower(...).compile()` puts the program in `_rank_step`'s cache, so the ranking's
  calls find it there. Compiling before the items are copied and the score blocks allocated,
  and handing the compiler's freed memory back to the system right after, keeps the compiler's
  transient memory from adding to theirs in the peak resident size. Shapes compiled before in
  this process are skipped (nothing compiled, nothing released).
  """
  key = (qchunk, dim, num_items, width, masked, k, stage_block, jax.default_backend())
  if key in _COMPILED_STEPS:
    return
  shape = _block_shape(qchunk, width, stage_block)
  f32 = lambda *dims: jax.ShapeDtypeStruct(dims, np.float32)
  _rank_step.lower(
      f32(qchunk, dim), f32(*shape), f32(qchunk, dim), f32(*shape), f32(width, dim),
      f32(num_items - width, dim) if width < num_items else None,
      jax.ShapeDtypeStruct((num_items,), np.bool_) if masked else None,
      jax.ShapeDtypeStruct((qchunk,), np.int32) if masked else None,
      k=k, stage_block=stage_block).compile()
  _COMPILED_STEPS.add(key)
  utils.release_free_memory()


def _as_matrix(x: Any, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D [count, dim]; got shape {x.shape}.")
  # min and max propagate NaN and show inf, without a [count, dim] boolean temporary.
  if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
    raise ValueError(
        f"{name} holds {np.count_nonzero(~np.isfinite(x))} non-finite values (NaN/inf); "
        "embeddings must be finite to be ranked. Check the model output.")
  return x


def _check_positive(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name}={value!r} must be a positive integer.")
  return int(value)


def top_k_scores(queries: Any, items: Any, k: int, *, query_chunk: int = 64,
                 item_chunk: int | None = None, exclude: Any = None,
                 item_mask: Any = None, release_memory: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k items per query by dot product, computed in fixed-shape chunks.

  Memory beyond the inputs and the [Q, k] outputs is a copy of the items on the device and two
  [query_chunk, N] float32 score blocks, reused in turn by every chunk (6.9 MB each for
  64 x 26,972), plus the [query_chunk, k] results of two chunks in flight. With item_chunk set the block is
  [query_chunk, item_chunk], a temporary of each chunk, and the items are padded to whole chunks.
  See the module docstring for the measurements behind the default chunk.

  Args:
    queries: [Q, d] query embeddings (cast to float32).
    items: [N, d] item embeddings (cast to float32).
    k: number of items to return per query, 1 <= k <= N.
    query_chunk: queries scored per compiled call; the last chunk is padded. With fewer than
      query_chunk queries the chunk is Q itself (no padding, one compilation per such Q). Larger
      chunks cost block memory (query_chunk * N * 4 bytes) and, on CPU, save little time; an
      accelerator may want more rows per call.
    item_chunk: if set, items are scored this many at a time and the per-chunk top-k merged, so
      no [query_chunk, N] block exists; None scores all items at once.
    exclude: optional [Q] int, one item index per query to leave out (e.g. the query song
      itself when it is also in the catalogue); -1 leaves nothing out.
    item_mask: optional [N] bool, True for the items that may be returned.
    release_memory: hand the pages the call freed back to the system when it returns
      (`musemb.utils.release_free_memory`; module docstring, Memory). A caller that ranks chunk
      after chunk in a loop passes False, so each chunk reuses the previous one's pages, and
      releases once after the loop. The compiler's freed memory is handed back after a first
      compilation whatever this says (once per program and process).

  Returns:
    scores: [Q, k] float32, highest first; ties go to the lower item index.
    indices: [Q, k] int32 item indices. Where a query has fewer than k allowed items (item_mask,
      exclude) the remaining slots hold index -1 and score -inf.

  Raises:
    ValueError: on bad shapes, k outside [1, N], non-finite embeddings, or a dot product that
      overflows float32.
  """
  queries = _as_matrix(queries, "queries")
  items = _as_matrix(items, "items")
  num_queries, dim = queries.shape
  num_items = items.shape[0]
  if items.shape[1] != dim:
    raise ValueError(
        f"queries have dimension {dim} but items have {items.shape[1]}; both must embed into "
        "the same space.")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_items:
    raise ValueError(
        f"k={k!r} must be an integer in [1, {num_items}] (the number of items); lower k or "
        "rank a larger catalogue.")
  k = int(k)
  query_chunk = _check_positive(query_chunk, "query_chunk")
  if item_chunk is not None:
    item_chunk = _check_positive(item_chunk, "item_chunk")

  masked = exclude is not None or item_mask is not None
  if exclude is None:
    exclude = np.full(num_queries, -1, np.int32)
  else:
    exclude = np.asarray(exclude)
    if exclude.shape != (num_queries,) or not np.issubdtype(exclude.dtype, np.integer):
      raise ValueError(
          f"exclude must be an integer array of shape ({num_queries},); got shape "
          f"{exclude.shape}, dtype {exclude.dtype}.")
    if exclude.size and (exclude.min() < -1 or exclude.max() >= num_items):
      raise ValueError(
          f"exclude holds values in [{exclude.min()}, {exclude.max()}]; expected item indices in "
          f"[0, {num_items}) or -1 for none.")
    exclude = exclude.astype(np.int32)
  if item_mask is None:
    item_mask = np.ones(num_items, bool)
  else:
    item_mask = np.asarray(item_mask)
    if item_mask.shape != (num_items,) or item_mask.dtype != np.bool_:
      raise ValueError(
          f"item_mask must be a bool array of shape ({num_items},); got shape {item_mask.shape}, "
          f"dtype {item_mask.dtype}.")

  if num_queries == 0:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)

  # Queries: every call sees the same [qchunk, d] shape, so the function compiles once.
  # Only the last chunk is padded (a padded copy of all queries would be 26 MB at Big-data scale).
  qchunk = min(query_chunk, num_queries)

  if item_chunk is None:
    stage_block = _stage_block(num_items, k)
    # Two-stage top-k: the whole blocks are scored into the donated block, the ragged tail apart.
    width = num_items if stage_block is None else num_items // stage_block * stage_block
    shape = _block_shape(qchunk, width, stage_block)
    # Compiled before the device copies and the score blocks exist (module docstring, Memory).
    _compile_step(qchunk, dim, num_items, width, masked, k, stage_block)
    items_dev = jax.device_put(items[:width])
    tail_dev = jax.device_put(items[width:]) if width < num_items else None
    valid_dev = jax.device_put(item_mask) if masked else None
    # Two score blocks, written in turn: a step scores its chunk into one while the previous
    # chunk is ranked from the other. Their first values are never read (the first step's
    # ranking is discarded), and their pages are written only by the copy device_put makes
    # (jnp.empty would compile a kernel of its own).
    block = jax.device_put(np.empty(shape, np.float32))
    prev_block = jax.device_put(np.empty(shape, np.float32))
  else:
    # Items: pad to whole chunks once; padding is invalid, so it never reaches the top-k.
    ichunk = min(item_chunk, num_items)
    num_ichunks = -(-num_items // ichunk)
    pad_items = num_ichunks * ichunk - num_items
    items_dev = jnp.asarray(
        np.pad(items, ((0, pad_items), (0, 0))).reshape(num_ichunks, ichunk, dim))
    valid_dev = jnp.asarray(np.pad(item_mask, (0, pad_items)).reshape(num_ichunks, ichunk))
    block = prev_block = tail_dev = None

  # Each chunk's result goes straight into the output arrays. The next chunk is dispatched
  # before the previous one's result is read, so the host never leaves the device idle.
  scores = np.empty((num_queries, k), np.float32)
  indices = np.empty((num_queries, k), np.int32)
  starts = list(range(0, num_queries, qchunk))

  def chunk(start):
    q, e = queries[start:start + qchunk], exclude[start:start + qchunk]
    if len(q) < qchunk:
      q = np.pad(q, ((0, qchunk - len(q)), (0, 0)))
      e = np.pad(e, (0, qchunk - len(e)), constant_values=-1)
    return q, e

  def store(done, result):
    rows = min(qchunk, num_queries - done)
    scores[done:done + rows] = np.asarray(result[0])[:rows]
    indices[done:done + rows] = np.asarray(result[1])[:rows]

  pending = None
  if block is None:
    for start in [*starts, None]:
      ready = pending
      if start is not None:
        q, e = chunk(start)
        pending = start, _top_k_chunk(q, items_dev, valid_dev, e, k=k)
      if ready is not None:
        store(*ready)
  else:
    # Step i scores chunk i and ranks chunk i - 1; a last step ranks the last chunk (scoring the
    # last chunk again, its result unused). The first step's ranking is of an unwritten block.
    prev_q, prev_e = chunk(starts[0])
    for i in range(len(starts) + 1):
      q, e = chunk(starts[min(i, len(starts) - 1)])
      top_scores, top_idx, new_block = _rank_step(
          q, block, prev_q, prev_block, items_dev, tail_dev, valid_dev,
          prev_e if masked else None, k=k, stage_block=stage_block)
      block, prev_block = prev_block, new_block
      prev_q, prev_e = q, e
      ready, pending = pending, (starts[i - 1], (top_scores, top_idx)) if i else None
      if ready is not None:
        store(*ready)
    store(*pending)
  # Free the device copies (items, block) before returning, not whenever Python drops them.
  for array in (items_dev, tail_dev, valid_dev, block, prev_block):
    if array is not None:
      array.delete()
  # ... and hand the pages the call freed back to the system (module docstring, Memory).
  if release_memory:
    utils.release_free_memory()
  indices[np.isneginf(scores)] = -1
  if np.isnan(scores).any() or np.isposinf(scores).any():
    raise ValueError(
        "A dot product of finite embeddings overflowed float32 (inf or NaN score); rescale the "
        "queries or items (e.g. l2-normalise them).")
  return scores, indices
