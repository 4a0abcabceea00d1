"""Tests for musemb.ranking: brute-force equality, tie rule, one compilation and block, errors."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from launch.benchmarks import evaluation
from musemb import metrics
from musemb import ranking
from musemb import utils


def utils_has_malloc_trim():
  # A preloaded allocator (jemalloc, tcmalloc) leaves glibc's malloc_trim nothing to trim.
  preloaded = any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc"))
  return utils._malloc_trim() is not None and not preloaded  # pylint: disable=protected-access


def _brute_force(queries, items, k, exclude=None, item_mask=None):
  """Reference ranking: full float64 score matrix, stable sort on -score (ties: lower index)."""
  scores = queries.astype(np.float64) @ items.astype(np.float64).T
  allowed = np.ones(scores.shape, bool)
  if item_mask is not None:
    allowed &= item_mask[None, :]
  if exclude is not None:
    rows = np.nonzero(exclude >= 0)[0]
    allowed[rows, exclude[rows]] = False
  scores = np.where(allowed, scores, -np.inf)
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  top = np.take_along_axis(scores, order, axis=1)
  return top, np.where(np.isneginf(top), -1, order)


def _integer_data(seed, num_queries, num_items, dim, low=-2, high=3):
  # Small integers make every dot product exact in float32 and produce many ties.
  rng = np.random.default_rng(seed)
  return (rng.integers(low, high, (num_queries, dim)).astype(np.float32),
          rng.integers(low, high, (num_items, dim)).astype(np.float32))


@pytest.mark.parametrize("item_chunk", [None, 16, 7, 1000])
@pytest.mark.parametrize("with_masks", [False, True])
def test_equals_brute_force_with_ties(item_chunk, with_masks):
  queries, items = _integer_data(0, 37, 53, 4)
  rng = np.random.default_rng(1)
  exclude = item_mask = None
  if with_masks:
    exclude = rng.integers(-1, 53, 37)
    item_mask = rng.random(53) < 0.7
  k = 9
  scores, idx = ranking.top_k_scores(queries, items, k, query_chunk=8, item_chunk=item_chunk,
                                     exclude=exclude, item_mask=item_mask)
  want_scores, want_idx = _brute_force(queries, items, k, exclude, item_mask)
  assert scores.dtype == np.float32 and idx.dtype == np.int32
  assert scores.shape == idx.shape == (37, k)
  np.testing.assert_array_equal(idx, want_idx)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_equals_brute_force_random_normal():
  rng = np.random.default_rng(2)
  queries = rng.normal(size=(45, 16)).astype(np.float32)
  items = rng.normal(size=(101, 16)).astype(np.float32)
  exclude = np.arange(45)  # e.g. song-to-song retrieval, drop the query song itself
  for item_chunk in (None, 10):
    scores, idx = ranking.top_k_scores(queries, items, 12, query_chunk=16, item_chunk=item_chunk,
                                       exclude=exclude)
    want_scores, want_idx = _brute_force(queries, items, 12, exclude)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert not (idx == exclude[:, None]).any()


def test_ties_go_to_lower_index():
  queries = np.ones((3, 2), np.float32)
  items = np.zeros((10, 2), np.float32)  # all scores tie at 0
  items[6] = 1.0  # one winner
  for item_chunk in (None, 3, 4):
    _, idx = ranking.top_k_scores(queries, items, 5, query_chunk=2, item_chunk=item_chunk,
                                  exclude=np.array([-1, 0, 2]))
    np.testing.assert_array_equal(idx, [[6, 0, 1, 2, 3], [6, 1, 2, 3, 4], [6, 0, 1, 3, 4]])


def test_fewer_allowed_items_than_k_leaves_empty_slots():
  queries, items = _integer_data(3, 4, 6, 3)
  mask = np.array([True, False, True, False, False, True])
  for item_chunk in (None, 4):
    scores, idx = ranking.top_k_scores(queries, items, 5, item_mask=mask, item_chunk=item_chunk,
                                       exclude=np.array([0, -1, -1, 5]))
    want_scores, want_idx = _brute_force(queries, items, 5, np.array([0, -1, -1, 5]), mask)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert (idx[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert (idx[[0, 3], 2] == -1).all()


def test_compiles_once_across_chunks():
  # Shapes used nowhere else in the tests, so the jit cache starts without them.
  queries, items = _integer_data(4, 3 * 11 + 5, 29, 5)
  before = ranking._top_k_chunk._cache_size()
  ranking.top_k_scores(queries, items, 3, query_chunk=11, item_chunk=6)
  assert ranking._top_k_chunk._cache_size() == before + 1
  # Other query counts with the same chunk shapes reuse the compiled function.
  ranking.top_k_scores(queries[:12], items, 3, query_chunk=11, item_chunk=6)
  ranking.top_k_scores(queries[:22], items, 3, query_chunk=11, item_chunk=6)
  assert ranking._top_k_chunk._cache_size() == before + 1


def test_topk_lists_score_like_the_full_matrix():
  queries, items = _integer_data(5, 30, 40, 3)
  relevance = np.random.default_rng(6).random((30, 40)) < 0.2
  relevance[:, 0] = True
  _, idx = ranking.top_k_scores(queries, items, 10, query_chunk=7, item_chunk=9)
  full = queries.astype(np.float64) @ items.T.astype(np.float64)
  np.testing.assert_array_equal(
      metrics.precision_at_k_from_topk(idx, relevance, 10, reduce="none"),
      metrics.precision_at_k(full, relevance, 10, reduce="none"))
  np.testing.assert_allclose(
      metrics.map_at_n_from_topk(idx, relevance, 10, reduce="none"),
      metrics.map_at_n(full, relevance, 10, reduce="none"))


def test_errors_are_clear():
  queries, items = _integer_data(7, 4, 5, 3)
  with pytest.raises(ValueError, match=r"k=6 must be an integer in \[1, 5\]"):
    ranking.top_k_scores(queries, items, 6)
  with pytest.raises(ValueError, match="dimension 3 but items have 2"):
    ranking.top_k_scores(queries, items[:, :2], 2)
  with pytest.raises(ValueError, match="non-finite"):
    ranking.top_k_scores(np.full((1, 3), np.nan), items, 2)
  with pytest.raises(ValueError, match="exclude"):
    ranking.top_k_scores(queries, items, 2, exclude=np.array([0, 1, 2, 5]))
  with pytest.raises(ValueError, match="item_mask"):
    ranking.top_k_scores(queries, items, 2, item_mask=np.ones(5, np.int32))
  with pytest.raises(ValueError, match="query_chunk=0"):
    ranking.top_k_scores(queries, items, 2, query_chunk=0)
  with pytest.raises(ValueError, match="overflowed"):
    ranking.top_k_scores(np.full((1, 3), 3e38, np.float32), np.full((5, 3), 3e38, np.float32), 2)
  scores, idx = ranking.top_k_scores(queries[:0], items, 2)
  assert scores.shape == idx.shape == (0, 2)


@pytest.mark.parametrize("num_queries,query_chunk", [(1, 64), (37, 8), (64, 64), (65, 64), (10, 3)])
@pytest.mark.parametrize("k", [1, 5, 52, 53])
def test_default_path_equals_brute_force(num_queries, query_chunk, k):
  # No masks and no item chunks: the matmul + top-k program with the donated score block, the
  # last query chunk padded, k up to the number of items.
  queries, items = _integer_data(8, num_queries, 53, 4)
  scores, idx = ranking.top_k_scores(queries, items, k, query_chunk=query_chunk)
  want_scores, want_idx = _brute_force(queries, items, k)
  assert scores.shape == idx.shape == (num_queries, k)
  np.testing.assert_array_equal(idx, want_idx)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("item_chunk", [None, 4, 50])
def test_k_near_the_item_count_with_masks_and_ragged_item_chunks(item_chunk):
  # 53 items: item chunks of 4 and 50 leave a partial last chunk whose padding must never rank.
  queries, items = _integer_data(9, 21, 53, 3)
  rng = np.random.default_rng(10)
  exclude = rng.integers(-1, 53, 21)
  item_mask = np.ones(53, bool)
  item_mask[[0, 51, 52]] = False
  for k in (48, 50, 53):
    scores, idx = ranking.top_k_scores(queries, items, k, query_chunk=8, item_chunk=item_chunk,
                                       exclude=exclude, item_mask=item_mask)
    want_scores, want_idx = _brute_force(queries, items, k, exclude, item_mask)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert ((idx == -1) == np.isneginf(scores)).all()
    assert not np.isin(idx, [0, 51, 52, 53]).any()  # masked items and padding never returned


def test_masks_one_at_a_time_on_the_default_path():
  queries, items = _integer_data(11, 19, 30, 3)
  exclude = np.arange(19) % 7 - 1
  item_mask = np.arange(30) % 3 != 0
  for kwargs in ({"exclude": exclude}, {"item_mask": item_mask}):
    scores, idx = ranking.top_k_scores(queries, items, 12, query_chunk=8, **kwargs)
    want_scores, want_idx = _brute_force(queries, items, 12, kwargs.get("exclude"),
                                         kwargs.get("item_mask"))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("num_items,k", [(31, 4), (600, 3)])
def test_default_path_compiles_once_and_reuses_two_score_blocks(num_items, k):
  # 31 items, k = 4: one lax.top_k over the row; 600 items, k = 3: the two-stage top-k.
  queries, items = _integer_data(12, 3 * 13 + 2, num_items, 5)
  stage_block = ranking._stage_block(num_items, k)
  assert (stage_block is None) == (num_items == 31)
  width = num_items if stage_block is None else num_items // stage_block * stage_block
  before = ranking._rank_step._cache_size()
  ranking.top_k_scores(queries, items, k, query_chunk=13)
  ranking.top_k_scores(queries[:14], items, k, query_chunk=13)
  ranking.top_k_scores(queries[:26], items, k, query_chunk=13)
  assert ranking._rank_step._cache_size() == before + 1
  # The block a step scores into is donated and aliased to the returned block, and the block
  # it ranks from is read in place: XLA writes each chunk's scores into the buffer of the chunk
  # before the previous one instead of allocating a temporary per chunk.
  shape = (13, width) if stage_block is None else (width, 13)
  tail = items[width:] if width < num_items else None
  block = np.zeros(shape, np.float32)
  compiled = ranking._rank_step.lower(
      queries[:13], block, queries[:13], block, items[:width], tail, None, None, k=k,
      stage_block=stage_block).compile()
  stats = compiled.memory_analysis()
  if stats is not None:
    assert stats.alias_size_in_bytes >= 13 * width * 4
    assert stats.temp_size_in_bytes < 13 * width * 4


def test_pipelined_steps_rank_every_chunk_once(monkeypatch):
  # Step i scores chunk i and ranks chunk i - 1; the first step ranks an unwritten block and the
  # last scores the last chunk again. Whatever the number of chunks (one, ragged, whole), every
  # query's list comes from its own chunk's scores, and a step is run once per chunk plus one.
  calls = []
  step = ranking._rank_step

  def counted(*args, **kwargs):
    calls.append(1)
    return step(*args, **kwargs)

  counted.lower = step.lower
  monkeypatch.setattr(ranking, "_rank_step", counted)
  queries, items = _integer_data(17, 40, 700, 6, low=-3, high=4)
  want_scores, want_idx = _brute_force(queries, items, 5)
  for count, chunk in ((1, 16), (16, 16), (40, 16), (40, 8), (40, 64)):
    calls.clear()
    scores, idx = ranking.top_k_scores(queries[:count], items, 5, query_chunk=chunk)
    np.testing.assert_array_equal(idx, want_idx[:count])
    np.testing.assert_array_equal(scores, want_scores[:count].astype(np.float32))
    assert len(calls) == -(-count // min(chunk, count)) + 1


def test_compiles_ahead_and_releases_memory_once_per_program(monkeypatch):
  # The program is compiled before the device copies exist and the compiler's freed memory handed
  # back then (module docstring, Memory); a second ranking with the same shapes finds the program
  # compiled and releases only when it returns.
  calls = []
  monkeypatch.setattr(ranking.utils, "release_free_memory", lambda: calls.append(1) or True)
  queries, items = _integer_data(18, 23, 517, 5)
  before = ranking._rank_step._cache_size()
  ranking.top_k_scores(queries, items, 4, query_chunk=23)
  assert calls == [1, 1] and ranking._rank_step._cache_size() == before + 1
  ranking.top_k_scores(queries, items, 4, query_chunk=23)
  assert calls == [1, 1, 1] and ranking._rank_step._cache_size() == before + 1


@pytest.mark.parametrize("num_items", [1024, 1000, 997])
@pytest.mark.parametrize("k", [1, 7, 15])
@pytest.mark.parametrize("with_masks", [False, True])
def test_two_stage_top_k_equals_brute_force_with_ties(num_items, k, with_masks):
  # Catalogues large enough for the two-stage path, whole blocks (1024) or a ragged tail;
  # small integers give many exact ties, which must go to the lower index across blocks.
  stage_block = ranking._stage_block(num_items, k)
  assert stage_block is not None
  queries, items = _integer_data(15, 40, num_items, 3, low=-1, high=2)
  exclude = item_mask = None
  if with_masks:
    rng = np.random.default_rng(16)
    exclude = rng.integers(-1, num_items, 40)
    item_mask = rng.random(num_items) < 0.5
    item_mask[-1] = True  # the last item, in the tail when there is one
  scores, idx = ranking.top_k_scores(queries, items, k, query_chunk=16, exclude=exclude,
                                     item_mask=item_mask)
  want_scores, want_idx = _brute_force(queries, items, k, exclude, item_mask)
  np.testing.assert_array_equal(idx, want_idx)
  np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("with_masks", [False, True])
def test_two_stage_tail_and_all_negative_scores(with_masks):
  # Every score is negative and the best items sit in the ragged tail after the whole blocks
  # (997 = 62 blocks of 16 + 5): they must rank first, then the best of the blocks.
  rng = np.random.default_rng(17)
  num_items, k = 997, 15
  assert ranking._stage_block(num_items, k) is not None
  queries = rng.uniform(0.5, 1.0, (20, 4)).astype(np.float32)
  items = -rng.uniform(0.5, 1.0, (num_items, 4)).astype(np.float32)
  items[-3:] = -0.01  # the tail's last three items are the best
  mask = np.ones(num_items, bool) if with_masks else None
  scores, idx = ranking.top_k_scores(queries, items, k, item_mask=mask)
  want_scores, want_idx = _brute_force(queries, items, k)
  np.testing.assert_array_equal(idx, want_idx)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
  np.testing.assert_array_equal(idx[:, :3], np.broadcast_to([994, 995, 996], (20, 3)))


def test_two_stage_with_fewer_allowed_items_than_k():
  queries, items = _integer_data(18, 9, 800, 3)
  item_mask = np.zeros(800, bool)
  item_mask[[5, 400, 799]] = True
  scores, idx = ranking.top_k_scores(queries, items, 6, item_mask=item_mask)
  want_scores, want_idx = _brute_force(queries, items, 6, None, item_mask)
  np.testing.assert_array_equal(idx, want_idx)
  assert (idx[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
  assert set(idx[:, :3].ravel()) == {5, 400, 799}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's program structure")
def test_single_stage_program_needs_no_generated_kernels_on_cpu():
  # Where one lax.top_k ranks the whole row (k near the item count), the program is the matmul
  # (a library call) and XLA's TopK custom call: no loop/elementwise fusions, so no LLVM code
  # generator (about 18 MB resident on its first use in a process; module docstring).
  queries, items = _integer_data(13, 16, 40, 5)
  assert ranking._stage_block(40, 3) is None
  block = np.zeros((16, 40), np.float32)
  hlo = ranking._rank_step.lower(queries, block, queries, block, items, None, None, None,
                                 k=3).compile().as_text()
  entry = hlo[hlo.index("ENTRY"):]
  assert "TopK" in entry
  assert "kind=kLoop" not in entry and "kind=kInput" not in entry and "while(" not in entry


def test_non_finite_values_anywhere_are_caught():
  queries, items = _integer_data(14, 6, 9, 3)
  for bad in (np.inf, -np.inf, np.nan):
    broken = items.copy()
    broken[4, 2] = bad
    with pytest.raises(ValueError, match="items holds 1 non-finite"):
      ranking.top_k_scores(queries, broken, 2)


def test_ranking_hands_freed_pages_back(monkeypatch):
  # top_k_scores returns the arena pages its chunks freed (module docstring, Memory); where glibc
  # is the C library, malloc_trim really does shrink the resident size after interior frees.
  calls = []
  monkeypatch.setattr(ranking.utils, "release_free_memory", lambda: calls.append(1) or True)
  queries, items = _integer_data(3, 9, 40, 4)
  ranking.top_k_scores(queries, items, 3)  # compiled (and released once more) here, if not before
  calls.clear()
  ranking.top_k_scores(queries, items, 3)
  assert calls == [1]
  ranking.top_k_scores(queries, items, 3, release_memory=False)  # a caller's loop: not per chunk
  assert calls == [1]


@pytest.mark.skipif(not utils_has_malloc_trim(), reason="the C library has no malloc_trim")
def test_release_free_memory_shrinks_the_resident_size():
  # 96 KB blocks come from the heap (under glibc's mmap threshold); freeing every other one leaves
  # free chunks between live ones, which free() alone never returns to the system.
  blocks = [np.ones(96 * 1024 // 8) for _ in range(1024)]
  del blocks[::2]
  before = evaluation._resident_bytes() / 2**20  # pylint: disable=protected-access
  assert utils.release_free_memory()
  after = evaluation._resident_bytes() / 2**20  # pylint: disable=protected-access
  assert before - after > 16, (before, after)  # about 48 MB were freed between live blocks
