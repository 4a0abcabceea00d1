"""Implicit ALS (musemb/wmf.py): closed form, CG vs exact, loss, planted recovery, devices."""

import concurrent.futures
import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from musemb import metrics
from musemb import sharding
from musemb.systems.wmf import als as wmf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _random_counts(users=40, items=70, density=0.15, seed=0):
  rng = np.random.default_rng(seed)
  dense = (rng.poisson(2.0, (users, items)) + 1) * (rng.random((users, items)) < density)
  dense[0] = 0  # a user without plays: its solution is the zero vector
  dense[1, :60] = rng.integers(1, 5, 60)  # a heavy user: the segmented class
  return scipy.sparse.csr_matrix(dense.astype(np.float64)), dense


def _dense_loss(dense, x, y, reg, conf):
  x, y = x.astype(np.float64), y.astype(np.float64)
  s = x @ y.T
  return float((conf * ((dense > 0) - s) ** 2).sum() + reg * ((x ** 2).sum() + (y ** 2).sum()))


def test_class_widths():
  assert wmf.class_widths(32) == (8, 16, 32)
  assert wmf.class_widths(16) == (8, 16)
  assert wmf.class_widths(8) == (8,)
  assert wmf.class_widths(24, min_width=4) == (4, 8, 16, 24)
  with pytest.raises(ValueError, match="min_width"):
    wmf.class_widths(4, min_width=8)
  with pytest.raises(ValueError, match="segment_width"):
    wmf.class_widths(0)


@pytest.mark.parametrize("num_shards", [1, 4])
def test_blocks_hold_every_non_zero_once_in_order(num_shards):
  csr, dense = _random_counts()
  # Tiny units so that many rows span several segments and the longest row (60 non-zeros, 15
  # segments of 4) is longer than the default unit.
  blocks = wmf.make_blocks(csr, alpha=2.0, num_shards=num_shards, segment_width=4, min_width=2,
                           chunk_cells=16 * num_shards, group=3)
  assert [(b.width, b.segmented) for b in blocks] == [(2, False), (4, False), (4, True)]
  seen = []
  for b in blocks:
    chunks = b.rows.shape[0]
    assert chunks % 3 == 0  # padded to whole groups
    assert b.cols.shape == b.conf.shape == (chunks, b.cols.shape[1], b.width)
    rows = b.rows.reshape(chunks * num_shards, -1)
    cols = b.cols.reshape(chunks * num_shards, -1, b.width)
    conf = b.conf.reshape(chunks * num_shards, -1, b.width)
    if b.segmented:
      seg = b.seg.reshape(chunks * num_shards, -1)
      assert seg.shape[1] >= 15 and seg.shape[1] % 8 == 0  # the 60-wide row fits one unit
      assert rows.shape[1] == seg.shape[1] // 2
      assert np.all(np.diff(seg, axis=1) >= 0)  # a unit's segments are sorted by row slot
    else:
      assert b.seg is None and rows.shape[1] == cols.shape[1]
      seg = np.broadcast_to(np.arange(rows.shape[1]), rows.shape)
    for u in range(rows.shape[0]):
      for slot, r in enumerate(rows[u]):
        mine = seg[u] == slot
        if r == csr.shape[0]:
          assert not conf[u][mine].any()  # padding slot
          continue
        seen.append(int(r))
        nz = np.flatnonzero(dense[r])
        flat_cols, flat_conf = cols[u][mine].reshape(-1), conf[u][mine].reshape(-1)
        assert len(flat_cols) == max(-(-len(nz) // b.width), 1) * b.width
        if not b.segmented:
          smaller = b.width // 2 if b.width > 2 else 0
          assert smaller < max(len(nz), 1) <= b.width
        else:
          assert len(nz) > 4
        np.testing.assert_array_equal(flat_cols[:len(nz)], nz)
        np.testing.assert_allclose(flat_conf[:len(nz)], 1 + 2.0 * dense[r, nz], rtol=1e-6)
        assert not flat_conf[len(nz):].any()
  assert sorted(seen) == list(range(csr.shape[0]))


def test_counts_are_canonicalised_on_a_copy_and_used_as_they_are_when_clean():
  # A hand-built CSR with an unsorted row, a duplicate (1, 3) pair and a stored zero: the layout
  # must see the summed, sorted matrix without the zero, and the caller's arrays stay untouched.
  data = np.array([2, 5, 1, 4, 0, 3], np.int64)
  indices = np.array([3, 0, 3, 3, 2, 1], np.int32)
  indptr = np.array([0, 2, 5, 6], np.int32)
  messy = scipy.sparse.csr_matrix((data.copy(), indices.copy(), indptr.copy()), shape=(3, 4))
  messy.has_sorted_indices = False
  messy.has_canonical_format = False
  clean = scipy.sparse.csr_matrix(np.array([[5, 0, 0, 2], [0, 0, 0, 5], [0, 3, 0, 0]]))
  for got, want in ((messy, clean), (clean, clean)):
    blocks = wmf.make_blocks(got, alpha=1.0, group=1)
    cells = {(int(r), int(c)): float(w) for b in blocks for r, cs, ws in
             zip(b.rows.reshape(-1), b.cols.reshape(-1, b.width), b.conf.reshape(-1, b.width))
             if r < 3 for c, w in zip(cs, ws) if w > 0}
    dense = want.toarray()
    assert cells == {(r, c): 1.0 + dense[r, c] for r, c in zip(*np.nonzero(dense))}
  np.testing.assert_array_equal(messy.data, data)
  np.testing.assert_array_equal(messy.indices, indices)
  np.testing.assert_array_equal(messy.indptr, indptr)
  # A clean integer CSR is used as it is (no copy of its non-zeros).
  assert wmf._check_counts(clean) is clean
  with pytest.raises(ValueError, match="negative"):
    wmf._check_counts(scipy.sparse.csr_matrix(np.array([[1, -2]])))


def test_blocks_are_data_independent_shapes():
  # Two matrices of different sizes and length distributions share every one-row class shape,
  # so a fit compiles one program per class, not one per row length.
  a, _ = _random_counts(users=40, items=70)
  b = scipy.sparse.random(500, 900, density=0.02, random_state=1, format="csr") * 10
  shapes = [{(blk.width, blk.segmented): blk.cols.shape[1:] for blk in
             wmf.make_blocks(m, alpha=2.0, group=4)} for m in (a, b)]
  for key in set(shapes[0]) & set(shapes[1]):
    if not key[1]:
      assert shapes[0][key] == shapes[1][key]
  assert all(len(s) <= 4 for s in shapes)


def test_popularity_order_relabels_consistently():
  csr, dense = _random_counts()
  user_order, item_order, relabelled = wmf.popularity_order(csr)
  np.testing.assert_array_equal(relabelled.toarray(), dense[user_order][:, item_order])
  assert relabelled.has_sorted_indices
  assert np.all(np.diff(np.diff(relabelled.indptr)) <= 0)
  assert np.all(np.diff(relabelled.getnnz(axis=0)) <= 0)
  assert user_order[0] == 1  # the heavy user


def test_popularity_order_relabels_in_slices(monkeypatch):
  """The column ids are relabelled in place a slice at a time; the result does not depend on
  the slices, and the ids stay int32."""
  csr, _ = _random_counts()
  want_users, want_items, want = wmf.popularity_order(csr)
  monkeypatch.setattr(wmf, "_HOST_SLICE", 7)  # many slices, one ragged
  user_order, item_order, got = wmf.popularity_order(csr)
  np.testing.assert_array_equal(user_order, want_users)
  np.testing.assert_array_equal(item_order, want_items)
  for name in ("indptr", "indices", "data"):
    np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
  assert got.indices.dtype == np.int32


def _blocks_equal(got, want):
  assert [(b.width, b.segmented) for b in got] == [(b.width, b.segmented) for b in want]
  for g, w in zip(got, want):
    for name in ("rows", "seg", "cols", "conf"):
      a, b = getattr(g, name), getattr(w, name)
      assert (a is None) == (b is None), name
      if a is not None:
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("host_slice", [7, 1 << 20])
def test_blocks_read_from_the_caller_matrix_equal_those_of_its_relabelled_copy(monkeypatch,
                                                                             host_slice):
  """fit's layout: each side's rows, in popularity order, come a slice at a time from the
  caller's matrix (users) or its plain transpose (items), relabelled and sorted per slice
  (`_RowEntries`). The blocks are those of the whole relabelled copy the layout used to make
  (`popularity_order`, then its transpose), bit for bit, so the factors did not change."""
  csr, _ = _random_counts()
  monkeypatch.setattr(wmf, "_HOST_SLICE", host_slice)
  users, items = csr.shape
  user_order, item_order, relabelled = wmf.popularity_order(csr)
  user_rank, item_rank = np.argsort(user_order), np.argsort(item_order)
  kw = dict(num_shards=2, segment_width=4, min_width=2, chunk_cells=32, group=3,
            table_rows=users + items, min_unit_segments=0)
  conf = lambda counts: wmf.confidence(counts, alpha=2.0)
  want = wmf.make_blocks(relabelled, alpha=2.0, row_offset=0, col_offset=users, **kw)
  got = wmf._make_blocks(np.diff(csr.indptr)[user_order],
                         wmf._RowEntries(csr, user_order, wmf._index_array(item_rank), conf),
                         row_offset=0, col_offset=users, **kw)
  _blocks_equal(got, want)
  by_item = scipy.sparse.csr_matrix((conf(csr.data), csr.indices, csr.indptr),
                                    shape=csr.shape).T.tocsr()
  want = wmf.make_blocks(relabelled.T.tocsr(), alpha=2.0, row_offset=users, col_offset=0, **kw)
  got = wmf._make_blocks(np.diff(by_item.indptr)[item_order],
                         wmf._RowEntries(by_item, item_order, wmf._index_array(user_rank)),
                         row_offset=users, col_offset=0, **kw)
  _blocks_equal(got, want)


def test_blocks_check_the_non_zeros_they_are_given():
  csr, _ = _random_counts()
  short = lambda rows: (np.zeros(1, np.int32), np.ones(1, np.float32))
  with pytest.raises(ValueError, match="non-zeros, expected"):
    wmf._make_blocks(np.diff(csr.indptr), short, num_shards=1, segment_width=4, min_width=2,
                     chunk_cells=16, group=1, row_offset=0, col_offset=0, table_rows=None,
                     min_unit_segments=0)


@pytest.mark.parametrize("lo,hi", [(0, 40), (40, None), (3, 9)])
def test_sums_over_row_blocks_equal_the_whole_slice(lo, hi):
  """The Gram matrices and the dense loss term sum over blocks of rows (a loop of dynamic
  slices, then the ragged rest); the sums are those over the whole slice."""
  table = np.random.default_rng(0).standard_normal((110, 6)).astype(np.float32)
  rows = table[lo:hi].astype(np.float64)
  g = rows.T @ rows
  for block_bytes in (8 * 6 * 4, 1 << 20):  # blocks of 8 rows (a loop and a rest); one slice
    got = jax.jit(lambda t: wmf._sum_over_rows(
        t, lo, hi, lambda y: (y.T @ y, (y * y).sum()), block_bytes=block_bytes))(table)
    np.testing.assert_allclose(got[0], g, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got[1], np.trace(g), rtol=1e-5)


def test_gram_programs_hold_one_block_of_rows_not_the_side():
  """A side's Gram matrix reads its rows a block at a time: the program's temporary is about one
  block (1 MB), not a copy of the side (XLA copies a sliced dot operand; each runtime thread's
  malloc arena then kept that copy's pages: 24 MB for the benchmark's items)."""
  users, items, f = 20_000, 40_000, 64
  mesh = sharding.make_mesh()
  fns = wmf._table_fns(mesh, users)
  table = jax.ShapeDtypeStruct((users + items, f), np.float32,
                               sharding=sharding.replicated(mesh))
  for name, side_rows in (("users_gram", users), ("items_gram", items)):
    analysis = fns[name].lower(table).compile().memory_analysis()
    assert analysis.temp_size_in_bytes <= 2 * wmf._ROW_BLOCK_BYTES < side_rows * f * 4 // 2, name


def test_release_frees_the_memory_placed_blocks_adopted():
  """Deleting a device array that adopted a numpy array hands the numpy array back through a
  queue JAX drains in its garbage-collection callback; `_release` (which `fit` calls before
  gathering its results) drains it, so the blocks' memory is free when `fit` returns."""
  if jax.default_backend() != "cpu":
    pytest.skip("adoption of host memory is JAX's CPU client's")
  import weakref  # pylint: disable=g-import-not-at-top
  host = wmf._host_array((64, 8), np.int32, 1)
  placed = jax.device_put(host)
  assert placed.unsafe_buffer_pointer() == host.ctypes.data  # adopted, not copied
  ref = weakref.ref(host.base)
  del host
  side = wmf._Side(other_gram="items_gram", groups=[(False, placed, None, placed, placed)])
  del placed
  assert ref() is not None
  wmf._release(side)
  assert ref() is None and not side.groups


def test_column_counts_in_slices_are_bincounts(monkeypatch):
  csr, dense = _random_counts()
  monkeypatch.setattr(wmf, "_HOST_SLICE", 7)  # many slices, one ragged
  got = wmf._column_counts(csr)
  np.testing.assert_array_equal(got, (dense > 0).sum(axis=0))
  assert got.dtype == np.int64


@pytest.mark.parametrize("host_slice", [13, 1 << 20])
def test_initial_factors_are_one_seeded_draw_in_caller_order(monkeypatch, host_slice):
  """The documented start: N(0, 0.01^2) float32 draws of numpy's generator from `seed`, users
  then items, row i for caller row i, however `fit` cuts the draws (slices into the table's
  popularity-ordered rows) and whatever the popularity order."""
  csr, _ = _random_counts()
  monkeypatch.setattr(wmf, "_HOST_SLICE", host_slice)
  x, y = wmf.fit(csr, factors=4, iterations=0, seed=5, compute_loss=False)
  rng = np.random.default_rng(5)
  want_x = rng.standard_normal((csr.shape[0], 4), np.float32)
  want_x *= 0.01
  want_y = rng.standard_normal((csr.shape[1], 4), np.float32)
  want_y *= 0.01
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)

@pytest.mark.parametrize("kind", ["linear", "log"])
def test_confidence_in_slices_is_the_whole_array_formula_bit_for_bit(monkeypatch, kind):
  counts = np.random.default_rng(0).geometric(0.05, 1000).astype(np.int64)
  monkeypatch.setattr(wmf, "_HOST_SLICE", 64)  # 15 whole slices and a ragged one
  got = wmf.confidence(counts, alpha=40.0 if kind == "linear" else 2.0, kind=kind, eps=0.5)
  f = counts * 40.0 if kind == "linear" else 2.0 * np.log1p(counts / 0.5)
  want = (1.0 + f).astype(np.float32)
  assert got.dtype == np.float32 and got.shape == counts.shape
  np.testing.assert_array_equal(got, want)
  assert wmf.confidence(np.zeros(0, np.int64), alpha=1.0).shape == (0,)


def test_blocks_are_aligned_so_placing_them_on_cpu_copies_nothing():
  """make_blocks allocates on 64-byte boundaries, where JAX's CPU client adopts a numpy array's
  memory in device_put: `fit`'s placed blocks are the layout's arrays, not a second copy."""
  csr, _ = _random_counts()
  blocks = wmf.make_blocks(csr, alpha=2.0, segment_width=4, min_width=2, chunk_cells=16)
  arrays = [a for b in blocks for a in (b.rows, b.seg, b.cols, b.conf) if a is not None]
  assert all(a.ctypes.data % 64 == 0 for a in arrays)
  if jax.default_backend() == "cpu":
    for a in arrays:
      assert jax.device_put(a).unsafe_buffer_pointer() == a.ctypes.data


def test_confidence_variants_and_errors():
  np.testing.assert_allclose(wmf.confidence(np.array([1.0, 3.0]), alpha=2.0), [3.0, 7.0])
  np.testing.assert_allclose(wmf.confidence(np.array([1.0, 3.0]), alpha=2.0, kind="log", eps=0.5),
                             1 + 2.0 * np.log1p(np.array([2.0, 6.0])), rtol=1e-6)
  with pytest.raises(ValueError, match="confidence"):
    wmf.confidence(np.ones(2), alpha=1.0, kind="square")
  with pytest.raises(ValueError, match="negative"):
    wmf.fit(scipy.sparse.csr_matrix(np.array([[1.0, -2.0]])), factors=2, iterations=1)
  with pytest.raises(ValueError, match="solver"):
    wmf.fit(scipy.sparse.csr_matrix(np.eye(3)), factors=2, iterations=1, solver="lu")
  with pytest.raises(TypeError, match="scipy.sparse"):
    wmf.fit(np.eye(3), factors=2, iterations=1)


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_exact_solve_matches_numpy_closed_form(kind):
  csr, dense = _random_counts()
  rng = np.random.default_rng(1)
  y = rng.normal(size=(csr.shape[1], 5)).astype(np.float32)
  reg, alpha, eps = 0.3, 2.0, 0.5
  x = wmf.solve_rows(csr, y, regularization=reg, alpha=alpha, confidence_kind=kind, eps=eps,
                     solver="exact")
  y64 = y.astype(np.float64)
  for u in (0, 1, 2, 7, 39):
    counts = dense[u].astype(np.float64)
    c = 1 + alpha * (counts if kind == "linear" else np.log1p(counts / eps))
    a = y64.T @ (c[:, None] * y64) + reg * np.eye(5)
    b = y64.T @ (c * (counts > 0))
    np.testing.assert_allclose(x[u], np.linalg.solve(a, b), rtol=2e-4, atol=2e-5)
  assert not x[0].any()


def test_cg_converges_to_exact_and_warm_start_helps():
  csr, _ = _random_counts()
  rng = np.random.default_rng(2)
  y = rng.normal(size=(csr.shape[1], 6)).astype(np.float32)
  kw = dict(regularization=0.5, alpha=1.0)
  exact = wmf.solve_rows(csr, y, solver="exact", **kw)
  many = wmf.solve_rows(csr, y, solver="cg", cg_steps=12, **kw)
  np.testing.assert_allclose(many, exact, rtol=1e-3, atol=1e-4)
  # Three steps from a nearby start land much closer than three steps from zero.
  near = exact + 0.001 * rng.normal(size=exact.shape).astype(np.float32)
  from_near = wmf.solve_rows(csr, y, solver="cg", cg_steps=3, init=near, **kw)
  from_zero = wmf.solve_rows(csr, y, solver="cg", cg_steps=3, **kw)
  assert np.abs(from_near - exact).max() < 0.2 * np.abs(from_zero - exact).max()


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_loss_is_exact_and_decreases_every_iteration(solver):
  csr, dense = _random_counts()
  reg, alpha = 0.1, 3.0
  losses = []
  x, y = wmf.fit(csr, factors=6, regularization=reg, alpha=alpha, iterations=6, solver=solver,
                 callback=lambda it, value, *_: losses.append((it, value)))
  assert [it for it, _ in losses] == list(range(1, 7))
  values = np.array([v for _, v in losses])
  assert np.all(np.diff(values) < 0), values
  direct = _dense_loss(dense, x, y, reg, 1 + alpha * dense)
  assert values[-1] == pytest.approx(direct, rel=1e-5)
  assert wmf.loss(csr, x, y, regularization=reg, alpha=alpha) == pytest.approx(direct, rel=1e-5)


def test_cg_reaches_the_exact_solvers_loss():
  csr, _ = _random_counts(seed=3)
  kw = dict(factors=6, regularization=0.1, alpha=3.0, iterations=10)
  final = {}
  for solver in ("exact", "cg"):
    values = []
    wmf.fit(csr, solver=solver, callback=lambda it, value, *_: values.append(value), **kw)
    final[solver] = values[-1]
  assert final["cg"] == pytest.approx(final["exact"], rel=0.01)


def test_resume_continues_the_same_trajectory():
  csr, _ = _random_counts()
  kw = dict(factors=4, regularization=0.1, alpha=2.0, solver="cg")
  x4, y4 = wmf.fit(csr, iterations=4, **kw)
  x2, y2 = wmf.fit(csr, iterations=2, **kw)
  xr, yr = wmf.fit(csr, iterations=4, user_factors=x2, item_factors=y2, start_iteration=2, **kw)
  np.testing.assert_allclose(xr, x4, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(yr, y4, rtol=1e-5, atol=1e-6)


def test_fit_is_equivariant_to_relabelling_and_callback_sees_caller_order():
  # fit solves internally in popularity order; permuting the input must permute the output.
  csr, dense = _random_counts(seed=4)
  rng = np.random.default_rng(5)
  pu, pi = rng.permutation(csr.shape[0]), rng.permutation(csr.shape[1])
  kw = dict(factors=4, regularization=0.1, alpha=2.0, solver="cg", iterations=3)
  seen = {}
  x, y = wmf.fit(csr, callback=lambda it, v, xa, ya: seen.update(x=np.asarray(xa),
                                                                   y=np.asarray(ya)), **kw)
  np.testing.assert_array_equal(seen["x"], x)
  np.testing.assert_array_equal(seen["y"], y)
  x0 = 0.01 * rng.normal(size=x.shape).astype(np.float32)
  y0 = 0.01 * rng.normal(size=y.shape).astype(np.float32)
  xa, ya = wmf.fit(csr, user_factors=x0, item_factors=y0, **kw)
  xb, yb = wmf.fit(scipy.sparse.csr_matrix(dense[pu][:, pi].astype(np.float64)),
                   user_factors=x0[pu], item_factors=y0[pi], **kw)
  np.testing.assert_allclose(xb, xa[pu], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(yb, ya[pi], rtol=1e-4, atol=1e-5)


def _count_compilations(fn):
  """Runs fn() and returns how many XLA programs were compiled meanwhile (any thread)."""
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top
  seen = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == dispatch.BACKEND_COMPILE_EVENT:
      seen.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return len(seen)


def test_one_program_per_class_compiled_once_and_none_across_iterations():
  csr, _ = _random_counts(users=41, items=73)  # a table shape no other test uses
  mesh = sharding.make_mesh(1)
  kw = dict(factors=4, regularization=0.1, alpha=2.0, solver="cg", cg_steps=2, mesh=mesh)
  updates = [wmf._compiled(mesh, "cg", 2, s)[0] for s in (False, True)]
  losses = [wmf._compiled(mesh, "exact", 0, s)[1] for s in (False, True)]
  before = [fn._cache_size() for fn in updates + losses]
  first = _count_compilations(lambda: wmf.fit(csr, iterations=1, **kw))
  after = [fn._cache_size() for fn in updates + losses]
  # Users and items share their programs: the one-row classes 8, 16 and 32 and one segmented
  # shape, for the solve and for the loss, whatever the rows' lengths.
  assert after[0] - before[0] <= 3 and after[1] - before[1] == 1
  assert after[2] - before[2] <= 3 and after[3] - before[3] == 1
  # Each compiled once, ahead of the first iteration (no second compilation when the solves
  # call them): at most 4 solves + 4 losses + 2 Gram matrices + the dense loss terms + a copy.
  assert first <= 12, first
  again = _count_compilations(lambda: wmf.fit(csr, iterations=3, **kw))
  assert again == 0, again
  assert [fn._cache_size() for fn in updates + losses] == after



def test_with_a_callback_nothing_compiles_once_the_solves_start(monkeypatch):
  """The callback's gathers back to the caller's order compile with the solves, ahead of the
  first iteration (a launcher's checkpointing callback used to compile them inside it)."""
  from jax._src import dispatch  # pylint: disable=g-import-not-at-top
  csr, _ = _random_counts(users=43, items=77)  # a table shape no other test uses
  compiled, at_solve, at_callback = [], [], []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == dispatch.BACKEND_COMPILE_EVENT:
      compiled.append(event)

  solve = wmf._solve_side

  def counting_solve(*args, **kwargs):
    at_solve.append(len(compiled))
    return solve(*args, **kwargs)

  monkeypatch.setattr(wmf, "_solve_side", counting_solve)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    x, y = wmf.fit(csr, factors=4, iterations=2, alpha=2.0, compute_loss=False,
                   mesh=sharding.make_mesh(1),
                   callback=lambda it, loss, xs, ys: at_callback.append(
                       (len(compiled), np.asarray(xs), np.asarray(ys))))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert at_solve[0] > 0  # this table shape was new: the fit compiled its programs
  assert set(at_solve) == {at_solve[0]}
  assert [c for c, _, _ in at_callback] == [at_solve[0]] * 2
  np.testing.assert_array_equal(at_callback[-1][1], x)  # the caller's order, as returned
  np.testing.assert_array_equal(at_callback[-1][2], y)

def test_recommend_filters_seen_items_like_a_brute_force_and_reuses_programs():
  # Integer factors give exact scores with many ties (lower item index first); seen counts differ
  # by user chunk, and the ranked length is rounded so that the chunks share compiled programs.
  rng = np.random.default_rng(3)
  x = rng.integers(-2, 3, (60, 4)).astype(np.float32)
  y = rng.integers(-2, 3, (700, 4)).astype(np.float32)
  counts = (rng.random((60, 700)) < rng.uniform(0.01, 0.2, (60, 1))).astype(np.float32)
  csr = scipy.sparse.csr_matrix(counts)
  k = 9
  scores = x.astype(np.float64) @ y.T.astype(np.float64)
  scores[counts > 0] = -np.inf
  want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  lengths = set()
  for start in range(0, 60, 10):
    users = np.arange(start, start + 10)
    got_scores, got = wmf.recommend(x, y, csr, users, k)
    np.testing.assert_array_equal(got, want[users])
    np.testing.assert_array_equal(got_scores, np.take_along_axis(scores[users], want[users], 1))
    lengths.add(wmf._ranked_length(k + int(counts[users].sum(axis=1).max())))
  assert len(lengths) < len({k + int(counts[u:u + 10].sum(axis=1).max()) for u in range(0, 60, 10)})
  for n in (1, 7, 8, 9, 17, 100, 619, 640, 641, 5000):
    r = wmf._ranked_length(n)
    assert n <= r <= max(n, int(n * 1.125))


def test_planted_low_rank_recovers_held_out_items():
  rng = np.random.default_rng(0)
  users, items, rank = 300, 400, 4
  # Non-negative low-rank rates: sparse gamma loadings make users prefer a few item clusters.
  theta = rng.gamma(0.1, 1.0, (users, rank))
  beta = rng.gamma(0.1, 1.0, (items, rank))
  rates = theta @ beta.T
  rates *= 0.05 * users * items / rates.sum()
  counts = rng.poisson(rates)
  held = (counts > 0) & (rng.random(counts.shape) < 0.2)
  train = np.where(held, 0, counts)
  csr = scipy.sparse.csr_matrix(train.astype(np.float64))
  x, y = wmf.fit(csr, factors=8, regularization=1.0, alpha=5.0, iterations=8, solver="cg")
  testers = np.flatnonzero(held.any(axis=1) & (train.sum(axis=1) > 0))
  k = 20
  _, top = wmf.recommend(x, y, csr, testers, k)
  for q, u in enumerate(testers[:20]):
    assert not np.isin(top[q], np.flatnonzero(train[u])).any()
  recall = metrics.recall_at_k_from_topk(top, held[testers], k)
  unseen = (train[testers] == 0).sum(axis=1)
  random_recall = float(np.mean(k / unseen))
  assert recall > 5 * random_recall, (recall, random_recall)
  # Per-user AUC of held-out items among each user's unseen items.
  scores = x[testers] @ y.T
  aucs = [metrics.roc_auc(scores[q][train[u] == 0][None], held[u][train[u] == 0][None])
          for q, u in enumerate(testers)]
  assert np.mean(aucs) > 0.75, np.mean(aucs)


_DEVICES = """
import sys
import numpy as np, scipy.sparse, jax
from musemb import sharding
from musemb.systems.wmf import als as wmf
assert jax.device_count() == 8, jax.devices()
rng = np.random.default_rng(0)
dense = (rng.poisson(2.0, (37, 53)) + 1) * (rng.random((37, 53)) < 0.2)
csr = scipy.sparse.csr_matrix(dense.astype(np.float64))
out = {}
for n in (1, 8):
  for solver in ("cg", "exact"):
    x, y = wmf.fit(csr, factors=5, regularization=0.1, alpha=2.0, iterations=3, solver=solver,
                   mesh=sharding.make_mesh(n))
    out[f"{solver}{n}_x"], out[f"{solver}{n}_y"] = x, y
np.savez(sys.argv[1], **out)
"""


def test_eight_devices_agree_with_one(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  path = str(tmp_path / "factors.npz")
  proc = subprocess.run([sys.executable, "-c", _DEVICES, path], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = np.load(path)
  for solver in ("cg", "exact"):
    for side in ("x", "y"):
      np.testing.assert_allclose(out[f"{solver}8_{side}"], out[f"{solver}1_{side}"],
                                 rtol=1e-4, atol=1e-5)


def test_a_compile_no_pool_thread_began_is_taken_over_once():
  pool = concurrent.futures.ThreadPoolExecutor(1)
  gate = threading.Event()
  busy = pool.submit(gate.wait)  # the pool's one thread is busy
  calls = []
  spec = (jax.ShapeDtypeStruct((4,), jnp.float32),)

  class Counted:  # a jitted function's lower(), counted
    def lower(self, *args):
      calls.append("waiting")
      return jax.jit(lambda x: x * 3.0).lower(*args)

  waiting = wmf._Compile(pool, Counted(), spec)
  assert waiting.take_over() and waiting.future.cancelled() and calls == ["waiting"]
  gate.set()
  busy.result()
  started = wmf._Compile(pool, Counted(), spec)
  started.future.result(timeout=60)  # the pool has run it
  assert not started.take_over()  # ... so it is not compiled again
  started.wait()
  waiting.wait()
  assert calls == ["waiting", "waiting"]
  pool.shutdown()
