"""Benchmark: musemb's JAX implicit ALS (`musemb.wmf`) against `implicit`'s CPU ALS, same data.

The question (issue 3): is our ALS at least as fast per iteration as a mature C++/Cython one with 2
threads, at equal or better held-out ranking quality? Both solve Hu, Koren & Volinsky's objective
with the same factors, regularisation, iterations and 3 warm-started conjugate-gradient steps per
row (Takacs et al. 2011):

* **ours**: `musemb.wmf.fit(counts, alpha=ALPHA, solver="cg")`, confidence c = 1 + alpha * count;
  JAX's CPU client uses every core (2 here).
* **implicit** 0.7.3 (Frederickson, github.com/benfred/implicit):
  `implicit.cpu.als.AlternatingLeastSquares(factors, regularization, iterations=..., use_cg=True,
  num_threads=2)` fitted on the matrix of 1 + alpha * count, because implicit takes its input values
  as the confidence itself. It runs in a subprocess started with OPENBLAS_NUM_THREADS=1 set before
  numpy is imported, as implicit's README asks (its own threads do the parallel work).

Data (`make_data`): a seeded generator with a planted low-rank structure and long-tailed
popularity: items belong to one of `topics` topics and have Zipf(1.1)-distributed popularity within
it; each user has a Dirichlet(0.1) mixture over topics and a log-normal activity; each draw picks a
topic from the user's mixture, then an item by popularity; repeated draws add up and each pair's
count gets a geometric long tail. Full: 50,000 users x 100,000 items with exactly 5,000,000
non-zeros; quick: 2,000 x 4,000 with 100,000.

Quality: 20% of each user's pairs are held out (`musemb.wmf_run.split_holdout`); both models rank
each evaluated user's unseen training items and are scored with recall@50 and the MSD challenge's
mAP@500 (`musemb.metrics`) on the same users. Time: seconds per ALS iteration of fitting only (no
loss evaluation); ours excludes the first iteration, which includes XLA compilation (reported
apart); implicit's is its total fit time / iterations (it has no compilation). Ours runs with
`chunk_cells=CHUNK_CELLS` (2^15): the CG matvecs read each chunk's gathered [rows, width, f] factor
block several times, so a block that fits in cache halves the time per iteration on CPU compared
with `wmf.fit`'s default of 2^20 cells.

    bash launch/install_peers.sh        # implicit 0.7.3 into .venv (once)
    python -m launch.benchmark --suite=als [--quick]
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse

from musemb import wmf
from musemb import wmf_run

INSTALL_HINT = ("implicit is not installed in this environment; install it with "
                "`bash launch/install_peers.sh` (implicit 0.7.3, a binary wheel), then rerun "
                "`python -m launch.benchmark --suite=als`.")
NUM_THREADS = 2
FACTORS = 64
REGULARIZATION = 0.01
ALPHA = 10.0
ITERATIONS = 10
CG_STEPS = 3
HOLDOUT = 0.2
RECALL_K = 50
MAP_N = 500
# Cells of a [rows, width] chunk: its gathered [rows, width, f] float32 block (8 MiB at f=64) then
# stays in the CPU's cache through the CG steps (now also wmf.fit's default); 1 << 20 (256 MiB
# gathered) was memory-bound on CPU: 0.34 s against 0.17 s per iteration at 12.5k x 25k, 1.25M nnz.
CHUNK_CELLS = 1 << 15


@dataclasses.dataclass(frozen=True)
class DataSize:
  users: int
  items: int
  nnz: int
  topics: int = 64
  eval_users: int = 5000


FULL = DataSize(users=50_000, items=100_000, nnz=5_000_000)
QUICK = DataSize(users=2_000, items=4_000, nnz=100_000, topics=16, eval_users=1000)


def make_data(size: DataSize, seed: int = 0) -> scipy.sparse.csr_matrix:
  """[users, items] int64 counts with exactly `size.nnz` non-zeros (see the module docstring)."""
  if size.nnz > size.users * size.items // 2:
    raise ValueError(f"nnz={size.nnz} is too dense for {size.users} x {size.items}.")
  rng = np.random.default_rng(seed)
  item_topic = rng.integers(0, size.topics, size.items)
  popularity = (1.0 + rng.permutation(size.items)) ** -1.1
  # Per topic: its items and the cumulative popularity used to draw one of them.
  topic_items = [np.flatnonzero(item_topic == t) for t in range(size.topics)]
  topic_cum = [np.cumsum(popularity[ix]) / popularity[ix].sum() for ix in topic_items]
  mixture_cum = np.cumsum(rng.dirichlet(np.full(size.topics, 0.1), size.users), axis=1)
  activity = rng.lognormal(0.0, 0.7, size.users)
  activity /= activity.sum()

  # Draws with repetition (a repeated pair adds to its count) until enough distinct pairs exist.
  parts, distinct = [], 0
  while distinct < size.nnz:
    draws = int(1.3 * (size.nnz - distinct)) + 1000
    user = rng.choice(size.users, draws, p=activity)
    u = rng.random(draws)
    topic = np.empty(draws, np.int64)
    # Inverse CDF of each draw's user mixture, in blocks to bound the [block, topics] temporary.
    for s in range(0, draws, 1 << 18):
      sl = slice(s, s + (1 << 18))
      topic[sl] = (mixture_cum[user[sl]] < u[sl, None]).sum(axis=1)
    topic = np.minimum(topic, size.topics - 1)
    item = np.empty(draws, np.int64)
    r = rng.random(draws)
    for t in range(size.topics):
      sel = np.flatnonzero(topic == t)
      pick = np.minimum(np.searchsorted(topic_cum[t], r[sel]), len(topic_items[t]) - 1)
      item[sel] = topic_items[t][pick]
    parts.append(user * size.items + item)
    keys = np.concatenate(parts)
    parts = [keys]
    distinct = len(np.unique(keys))
  uniq, repeats = np.unique(keys, return_counts=True)
  keep = np.sort(rng.choice(len(uniq), size.nnz, replace=False))
  uniq, repeats = uniq[keep], repeats[keep]
  counts = repeats + rng.geometric(0.3, len(uniq)) - 1
  return scipy.sparse.csr_matrix((counts.astype(np.int64), (uniq // size.items, uniq % size.items)),
                                 shape=(size.users, size.items))


def quality(user_factors: np.ndarray, item_factors: np.ndarray, train: scipy.sparse.csr_matrix,
            heldout: scipy.sparse.csr_matrix, users: np.ndarray) -> dict[str, float]:
  """Held-out recall@50 and mAP@500 of ranking `users`' unseen items by x_u . y_i."""
  k = min(MAP_N, train.shape[1])
  topk = wmf_run.recommend_topk(user_factors, item_factors, train, users, k, chunk=500)
  return wmf_run.evaluate_topk(topk, heldout[users], recall_k=min(RECALL_K, k), map_n=k)


_IMPLICIT_SCRIPT = r"""
import json, sys, time
import numpy as np, scipy.sparse
from implicit.cpu.als import AlternatingLeastSquares
data_path, out_path, factors, reg, iterations, threads = sys.argv[1:7]
z = np.load(data_path)
conf = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
model = AlternatingLeastSquares(factors=int(factors), regularization=float(reg),
                                iterations=int(iterations), use_cg=True,
                                num_threads=int(threads), random_state=0)
start = time.perf_counter()
model.fit(conf, show_progress=False)
seconds = time.perf_counter() - start
np.savez(out_path, user_factors=np.asarray(model.user_factors, np.float32),
         item_factors=np.asarray(model.item_factors, np.float32))
print(json.dumps({"seconds": seconds}))
"""


def implicit_available() -> bool:
  return subprocess.run([sys.executable, "-c", "import implicit.cpu.als"],
                        capture_output=True).returncode == 0


def run_implicit(train: scipy.sparse.csr_matrix, *, factors: int, regularization: float,
                 iterations: int, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
  """implicit's CPU ALS on confidences 1 + alpha*count in a subprocess (OPENBLAS_NUM_THREADS=1).

  Returns (user factors, item factors, seconds of `fit`).
  """
  conf = train.astype(np.float32).tocsr()
  conf.data = wmf.confidence(conf.data, alpha=alpha)
  with tempfile.TemporaryDirectory() as tmp:
    data_path, out_path = os.path.join(tmp, "conf.npz"), os.path.join(tmp, "factors.npz")
    np.savez(data_path, data=conf.data, indices=conf.indices, indptr=conf.indptr,
             shape=np.asarray(conf.shape))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _IMPLICIT_SCRIPT, data_path, out_path,
                           str(factors), str(regularization), str(iterations), str(NUM_THREADS)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
      raise RuntimeError(f"implicit's ALS failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    with np.load(out_path) as z:
      return z["user_factors"], z["item_factors"], float(seconds)


def run_ours(train: scipy.sparse.csr_matrix, *, factors: int, regularization: float,
             iterations: int, alpha: float) -> tuple[np.ndarray, np.ndarray, list[float]]:
  """`musemb.wmf.fit` without loss evaluation; returns factors and per-iteration seconds."""
  stamps = [time.perf_counter()]

  def tick(it, loss, x, y):
    del it, loss, x
    y.block_until_ready()
    stamps.append(time.perf_counter())

  x, y = wmf.fit(train, factors=factors, regularization=regularization, alpha=alpha,
                 iterations=iterations, solver="cg", cg_steps=CG_STEPS, seed=0,
                 compute_loss=False, callback=tick, chunk_cells=CHUNK_CELLS)
  return x, y, list(np.diff(stamps))


def run(quick: bool = False) -> str:
  """Runs the benchmark, prints and returns its table."""
  size = QUICK if quick else FULL
  iterations = 3 if quick else ITERATIONS
  start = time.perf_counter()
  counts = make_data(size)
  train, heldout = wmf_run.split_holdout(counts, HOLDOUT, seed=0)
  users = wmf_run.eval_users(heldout, size.eval_users, seed=0)
  lines = [f"data: {size.users:,} users x {size.items:,} items, {counts.nnz:,} non-zeros "
           f"({train.nnz:,} train), generated in {time.perf_counter() - start:.1f}s; "
           f"f={FACTORS}, lambda={REGULARIZATION}, alpha={ALPHA}, {iterations} iterations, CG "
           f"{CG_STEPS} steps, chunk_cells={CHUNK_CELLS}; quality over {len(users):,} users",
           "", f"| system | s/iteration | first iteration (s) | recall@{RECALL_K} | map@{MAP_N} |",
           "|---|---|---|---|---|"]
  kwargs = dict(factors=FACTORS, regularization=REGULARIZATION, iterations=iterations, alpha=ALPHA)
  x, y, per_it = run_ours(train, **kwargs)
  ours_s = float(np.median(per_it[1:])) if len(per_it) > 1 else per_it[0]
  q = quality(x, y, train, heldout, users)
  lines.append(f"| musemb (JAX, {os.cpu_count()} cores) | {ours_s:.3f} | {per_it[0]:.2f} | "
               f"{q[f'recall@{RECALL_K}']:.4f} | {q[f'map@{MAP_N}']:.4f} |")
  if not implicit_available():
    lines += ["", INSTALL_HINT]
  else:
    xi, yi, seconds = run_implicit(train, **kwargs)
    qi = quality(xi, yi, train, heldout, users)
    theirs_s = seconds / iterations
    lines.append(f"| implicit 0.7.3 CPU ({NUM_THREADS} threads) | {theirs_s:.3f} | - | "
                 f"{qi[f'recall@{RECALL_K}']:.4f} | {qi[f'map@{MAP_N}']:.4f} |")
    lines += ["", f"ratio musemb/implicit: time per iteration {ours_s / theirs_s:.2f}x "
              f"(< 1 is faster), map@{MAP_N} {q[f'map@{MAP_N}'] / max(qi[f'map@{MAP_N}'], 1e-12):.3f}x"
              f", recall@{RECALL_K} "
              f"{q[f'recall@{RECALL_K}'] / max(qi[f'recall@{RECALL_K}'], 1e-12):.3f}x"]
  table = "\n".join(lines)
  print(table)
  return table
