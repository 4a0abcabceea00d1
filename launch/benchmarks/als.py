"""Benchmark: musemb's JAX implicit ALS (`musemb.systems.wmf.als`) against `implicit`'s CPU ALS, same data.

The question (issue 3): is our ALS at least as fast per iteration as a mature C++/Cython one with 2
threads, at equal or better held-out ranking quality? Both solve Hu, Koren & Volinsky's objective
with the same factors, regularisation, iterations and 3 warm-started conjugate-gradient steps per
row (Takacs et al. 2011):

* **ours**: `musemb.systems.wmf.als.fit(counts, alpha=ALPHA, solver="cg")`, confidence c = 1 + alpha * count,
  twice, each in a fresh process (`run_ours_process`) set up as the WMF launchers set theirs up
  (CPU devices, numpy's huge-page advice, below) with JAX's persistent compilation cache
  (`launch.common.configure_compilation_cache`) on one temporary folder: the first process starts
  with it empty (cold: every program compiles), the second finds the programs the first wrote
  (warm: the second run of the same fit, as a launcher's rerun, a resumed job or a sweep over
  alpha/lambda). The whole fit is timed from the call to its return (layout, transfers,
  compilation, 10 iterations), as implicit's `fit` is, and like it without a callback: each
  iteration's end is read from `fit`'s own per-iteration log record (`run_ours`). The suite runs
  `rounds` rounds (2) of ours cold, ours warm and implicit, each side's row being its fastest
  round, and reports each side's working memory (the resident high-water mark over the fit minus
  the resident size before it). Ours runs on the CPU devices the WMF launchers give it
  (`launch.common.configure_cpu_devices`: one per core, at most 8; 2 here), its rows sharded over
  them (XLA:CPU runs one device's program on one thread), as implicit runs on 2 threads.
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

Quality: 20% of each user's pairs are held out (`musemb.systems.wmf.fit.split_holdout`); both models rank
each evaluated user's unseen training items and are scored with recall@50 and the MSD challenge's
mAP@500 (`musemb.metrics`) on the same users. Time: seconds per ALS iteration of fitting only (no
loss evaluation); ours excludes the first iteration, which includes XLA compilation (reported
apart, and inside the whole fit); implicit's is its total fit time / iterations (it has no
compilation). The whole fit is also reported in process CPU seconds, which other jobs on the
cores disturb less than wall-clock. Ours runs with
`chunk_cells=CHUNK_CELLS` (2^13, `wmf.fit`'s default): the CG passes read each chunk's gathered
[rows, width, f] factor block 7 times, so the block (2 MiB) is sized for a core's L2 cache.

What made ours faster (wall-clock or CPU seconds on the shared 2-core machine, so each comparison
is between variants interleaved in one process, or on a stated size):

* before: power-of-two bucket widths (1.44-1.48x the real non-zeros processed), one dispatch per
  [rows, width] chunk, `take`'s default fill mode (an extra select pass over the gathered block),
  b and the starting residual as separate passes: 0.71-0.80 s (implicit 0.50-0.78 s).
* same-process A/B on 12.5k x 25k, 1M training non-zeros: `lax.map` over each bucket's chunks, the
  clip gather and the folded residual (2^15 cells, power-of-two widths): 0.106 s min / 0.128 s
  median against 0.134 / 0.185 s; widths growing by 1.25x (1.13-1.18x padding): about the same
  there, but 20% fewer cells at full size.
* relabelling users and items by popularity (`wmf.popularity_order`): users half-step 0.352 ->
  0.272 s at full size (the gathers from the 25.6 MB item factors find the hot rows together).
* chunk size: 2^12 and 2^13 cells within noise of each other, 2^14 and 2^15 slower (0.31 / 0.48 s
  against 0.27 / 0.31 s for the users / items half-steps); bucket growth 1.5 instead of 1.25:
  0.35 / 0.41 s (more padding); min width 4 instead of 8: within noise (2% fewer cells, 6 more
  bucket shapes).
* tried and dropped: a segment-sum matvec over the flat non-zeros (`jax.ops.segment_sum` is a
  serial scatter on XLA:CPU: 12.7 ms against 1.24 ms for the padded einsum on a 256 x 128 chunk);
  elementwise-multiply-and-reduce instead of the batched einsums (1.3-2x slower); gathering
  16-float cache-line slices (faster alone, slower inside the solve); default precision instead
  of HIGHEST (no difference on CPU, float32 either way).
* the last CG step needs only p^T A p (one pass over the block instead of two): within noise, kept
  as less work.

With the bucket layout this replaced, the first iteration included compiling one solve per bucket
shape (48 at full size): 31-32 s here. The results below (before the compilation cache) are per
iteration only, with the 2-device row:

| system | s/iteration (run 1, run 2) | recall@50 | map@500 |
|---|---|---|---|
| musemb, 1 CPU device | 0.803, 0.772 | 0.2673 | 0.1088 |
| musemb, 2 CPU devices | 0.986, 1.027 | 0.2673 | 0.1088 |
| implicit 0.7.3, 2 threads | 1.417, 1.391 | 0.2657 | 0.1075 |

(load average 3.5-5; ratio per iteration 0.57x / 0.55x for 1 device, 0.70x / 0.74x for 2.)

Whole fit, with the launchers' compilation cache (issue 14; one run of `python -m launch.benchmark
--suite=als`, load average 13-16 on the 2 cores, so wall-clock is about 2-4x an idle run's):

| system | whole fit s | CPU s | s/iteration | first iteration s | recall@50 | map@500 |
|---|---|---|---|---|---|---|
| musemb, cold cache | 197.88 | 63.97 | 2.437 | 172.40 | 0.2673 | 0.1088 |
| musemb, warm cache | 30.81 | 20.70 | 1.851 | 12.53 | 0.2673 | 0.1088 |
| implicit 0.7.3, 2 threads | 40.92 | 18.91 | 4.092 | - | 0.2657 | 0.1074 |

Warm: 0.75x implicit's wall-clock, 1.09x its CPU seconds. Cold: 4.84x (the 48 compilations);
the quick size (2k x 4k, 3 iterations, about 40 shapes) is all compilation: cold 361 s / 26.2 CPU
s, warm 47 s / 3.4 CPU s, against implicit's 2.0 s / 0.18 CPU s at load 23-34.

After the block layout (issue 14: at most four solve programs whatever the data, compiled in
threads while the blocks are laid out; `musemb.systems.wmf.als` docstring). Each line is one run
of this suite, with another agent's benchmarks on the cores (load average in the line); ratios
are ours / implicit's whole fit, wall-clock (CPU seconds):

| run | cold | warm | s/iteration, ours cold / implicit | recall@50 | map@500 |
|---|---|---|---|---|---|
| blocks, compiled before the first iteration (load 4.9) | 0.87x (1.09x) | 0.59x (0.85x) | 2.05 / 2.89 | 0.2673 | 0.1088 |
| + numpy init, no duplicate copies (load 2.8) | 1.24x (1.28x) | 1.20x (1.15x) | 1.69 / 1.73 | 0.2675 | 0.1091 |
| same (load 2.7) | 1.22x (1.25x) | 0.78x (0.81x) | 2.13 / 2.34 | 0.2675 | 0.1091 |
| + compiling from the shapes during the layout (load 3.1) | 1.05x (0.99x) | 1.40x (1.04x) | 1.18 / 1.56 | 0.2675 | 0.1091 |
| same (load 3-4) | 1.06x (1.09x) | 0.94x (0.97x) | 1.58 / 2.03 | 0.2675 | 0.1091 |

The cold fit went from 4.84x to about 1.05x implicit's: the compilations that were 172 s of its
first iteration at load 13-16 are now about 3.5 s of CPU, and the first iteration is 5-7 s
against 1.2-2.1 s for the next ones. It is not a clear win: per iteration ours is 0.75-0.98x
implicit's, but implicit uses 2 threads and ours one core (see the ALS docstring), so the
comparison swings with the other load on the machine. Held-out quality moved in the fourth
decimal when the initial draws moved from jax.random to numpy's generator. The quick size: cold
4.25 s / 3.3 CPU s, warm 0.71 s, against implicit's 0.19 s (load 3.9): at 100k non-zeros the
four compilations are the whole fit.

Stop 21 (load 1.3, idle otherwise): the setup allocates about 110 MB less fresh memory (aligned
blocks adopted by `device_put` without a copy, no staging copy of the long rows' cells,
confidences in slices carried as float32 values of the reordered matrix, the initial draws freed
early), factors bit-identical. Fresh pages cost up to 7-10 ms per MB on this VM, so the first
iteration is what moved:

| run | cold | warm | first iteration, warm | s/iteration, ours warm / implicit |
|---|---|---|---|---|
| aligned blocks, mask fill, sliced conf. | 1.83x (1.43x) | 1.46x (1.02x) | 3.49 s | 0.859 / 0.797 |
| same | 1.22x (0.93x) | 1.11x (0.77x) | 2.91 s | 0.795 / 0.909 |
| + draws freed once in the table | 1.26x (0.96x) | 1.07x (0.74x) | 2.68 s | 0.759 / 0.908 |
| same | 1.39x (1.07x) | 1.25x (0.87x) | 2.78 s | 0.847 / 0.852 |
| + draws overlap the compiles' tracing | 1.09x (0.85x) | 1.27x (0.91x) | 2.87 s | 0.908 / 0.897 |
| same | 1.19x (0.93x) | 1.02x (0.71x) | 2.55 s | 0.774 / 0.940 |
| + solve and loss at LLVM -O1 | 0.96x (0.69x) | 0.92x (0.59x) | 2.53 s | 0.552 / 0.829 |
| same | 1.08x (0.77x) | 0.94x (0.61x) | 2.43 s | 0.546 / 0.777 |

Stop 23, on a slower afternoon (implicit 8.5-10.1 s): the setup's last whole-length temporaries
went (column counts in slices instead of `np.bincount`'s int64 copy of the ids, block ids shifted
in place, the initial draws made slice by slice into the table, the item-side CSR freed before the
solves), factors bit-identical; peak over the process 311-323 -> 278-280 MB:

| run | cold | warm | first iteration, warm | s/iteration, ours warm / implicit |
|---|---|---|---|---|
| before (stop 22's code) | 1.03x (0.75x) | 0.96x (0.62x) | 3.44 s | 0.695 / 1.005 |
| column counts, in-place ids, CSR freed | 1.16x (0.87x) | 0.96x (0.63x) | 2.28 s | 0.644 / 0.853 |
| + draws into the table | 1.11x (0.81x) | 0.96x (0.63x) | 2.43 s | 0.616 / 0.848 |
| same | 1.22x (0.88x) | 1.04x (0.68x) | 2.65 s | 0.639 / 0.826 |
| + the callback's restores compiled with the solves | 1.05x (0.76x) | 0.94x (0.60x) | 2.09 s | 0.553 / 0.753 |
| same | 1.52x (1.07x) | 1.00x (0.64x) | 2.49 s | 0.566 / 0.771 |

The last row's cold run took 1.06 s an iteration against 0.55-0.64 s in every other run of the
stop: the machine slowed down during it. In three alternating same-sitting pairs (cold cache,
`run_ours`) the restores' change took the first iteration from 2.63-3.11 s to 2.40-2.80 s.

Stop 24: the fit touches less memory (the users' side laid out from the caller's matrix a slice
at a time, the Gram matrices summed over 1 MB row blocks instead of a copied slice, the blocks
freed before the results, one background compile thread on 2 cores; `musemb.systems.wmf.als`
docstring, Memory), and the suite changed its protocol: rounds, no timing callback (it made `fit`
gather the factors back to the caller's order each iteration: 0.5-1.0 s of a 7-9 s fit in three
alternating pairs), working memory. Ratios are ours / implicit's whole fit, wall-clock (CPU
seconds), each side's fastest of two rounds:

| run (load 1.5 at the start) | cold | warm | first iteration, cold / warm | s/iteration, ours warm / implicit | working memory, ours cold / warm / implicit |
|---|---|---|---|---|---|
| memory changes, two compile threads, timing callback (1 round of the old protocol's kind) | 1.12x (0.80x) | 1.05x (0.65x) | 2.51 / 1.88 s | 0.529 / 0.641 | 355 / 236 / 92 MB |
| + no callback, rounds | 1.19x (0.84x) | 0.98x (0.61x) | 3.04 / 2.02 s | 0.572 / 0.728 | 332 / 225 / 92 MB |
| + one compile thread | 0.72x (0.51x) | 0.77x (0.50x) | 3.46 / 2.97 s | 0.745 / 1.321 | 281 / 224 / 92 MB |
| same | 1.20x (0.85x) | 1.02x (0.65x) | 3.43 / 2.04 s | 0.627 / 0.743 | 274 / 224 / 92 MB |

In the third run the machine slowed down (implicit 13.2-13.6 s against 6.4-8.5 s in the others)
and implicit more than ours, so its ratios say little. What the runs show: per iteration ours is
0.79-0.84x implicit's; warm, the whole fit is at parity (0.98x / 1.02x); cold it is 1.2x, the
compilations (six programs) taking the first iteration from about 2.0 s to 3.0-3.4 s; ours still
touches 2.4x implicit's memory warm (224 MB against 92: the blocks, 75 MB, the table, 38 MB, and
about 55 MB of JAX's tracing and loaded programs). A solve program costs 0.66-0.75 CPU s to
compile whether or not it is wrapped in `shard_map` (0.52-0.64 on the one-row class without) or
runs its CG steps in a `fori_loop` (0.71 against 0.73-0.75), measured and not adopted.

Stop 25: both sides run with numpy's huge-page advice off (`launch.common.configure_host_memory`,
which the launchers call: the kernel here compacted memory to serve each advised fault, the
"7-10 ms per MB" above), ours on one CPU device per core as the WMF launchers now give it
(`launch.common.configure_cpu_devices`), and `fit` compiles the programs its background thread
has not begun once its layout is done:

| run (load 1.2-2.4) | cold | warm | first iteration, cold / warm | s/iteration, ours warm / implicit | working memory, ours cold / warm / implicit |
|---|---|---|---|---|---|
| advice off, 1 device | 1.07x (0.71x) | 0.96x (0.59x) | 2.53 / 1.83 s | 0.563 / 0.718 | 263 / 224 / 92 MB |
| + 2 devices | 0.98x (0.78x) | 0.81x (0.61x) | 2.63 / 1.45 s | 0.490 / 0.734 | 330 / 259 / 92 MB |
| + compiles taken over | 0.94x (0.78x) | 0.82x (0.62x) | 2.79 / 1.48 s | 0.504 / 0.751 | 368 / 264 / 92 MB |
| same | 0.86x (0.71x) | 0.72x (0.55x) | 3.03 / 1.55 s | 0.537 / 0.892 | 355 / 264 / 92 MB |

Implicit did not gain from the advice being off (three alternating triples: 7.40-10.05 s without,
7.20-8.67 s with); ours did (warm first iteration 2.17-2.46 -> 1.51-1.58 s).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

from absl import logging as absl_logging
import numpy as np
import scipy.sparse

from launch import common
from musemb.systems.wmf import als as wmf
from musemb.systems.wmf import fit as wmf_run

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
# Cells of a [rows, width] chunk (wmf.fit's default): its gathered [rows, width, f] float32 block
# (2 MiB at f=64) stays in a core's L2 cache through the 8 CG passes; see the module docstring.
CHUNK_CELLS = 1 << 13


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


# Working memory: the resident size's high-water mark over the fit minus the size just before it.
# The mark is reset first (Linux's /proc/self/clear_refs, "5"), so that imports and the data's
# loading, which can peak higher than the fit, do not count.
_MEMORY_SNIPPET = r"""
def status_kb(field):
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
def start_peak():
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  return status_kb("VmRSS")
"""

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
""" + _MEMORY_SNIPPET + r"""
resident = start_peak()
start, cpu = time.perf_counter(), time.process_time()
model.fit(conf, show_progress=False)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
working_mb = (status_kb("VmHWM") - resident) / 1024
np.savez(out_path, user_factors=np.asarray(model.user_factors, np.float32),
         item_factors=np.asarray(model.item_factors, np.float32))
print(json.dumps({"seconds": seconds, "cpu": cpu, "working_mb": working_mb}))
"""


def implicit_available() -> bool:
  return subprocess.run([sys.executable, "-c", "import implicit.cpu.als"],
                        capture_output=True).returncode == 0


@dataclasses.dataclass
class FitRun:
  """One timed fit in its own process: the factors, the wall-clock and CPU seconds of the whole
  fit, the seconds of each iteration (ours only; the first counted from the call), and its
  working memory: the process's peak resident size minus its size just before the fit (MB)."""
  user_factors: np.ndarray
  item_factors: np.ndarray
  total: float
  cpu: float
  working_mb: float
  per_iteration: list[float] | None = None

  def seconds_per_iteration(self, iterations: int) -> float:
    """Ours: the median iteration after the first (which holds the layout and compilation);
    implicit's: its whole fit over the iterations (it compiles nothing)."""
    if self.per_iteration is None:
      return self.total / iterations
    later = self.per_iteration[1:]
    return float(np.median(later)) if later else self.per_iteration[0]


def run_implicit(train: scipy.sparse.csr_matrix, *, factors: int, regularization: float,
                 iterations: int, alpha: float) -> FitRun:
  """implicit's CPU ALS on confidences 1 + alpha*count in a subprocess (OPENBLAS_NUM_THREADS=1)."""
  conf = train.astype(np.float32).tocsr()
  conf.data = wmf.confidence(conf.data, alpha=alpha)
  with tempfile.TemporaryDirectory() as tmp:
    data_path, out_path = os.path.join(tmp, "conf.npz"), os.path.join(tmp, "factors.npz")
    np.savez(data_path, data=conf.data, indices=conf.indices, indptr=conf.indptr,
             shape=np.asarray(conf.shape))
    # The host-memory policy ours runs under (`launch.common.configure_host_memory`), so that
    # both sides' numpy arrays are paged alike.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               **common.host_memory_env())
    proc = subprocess.run([sys.executable, "-c", _IMPLICIT_SCRIPT, data_path, out_path,
                           str(factors), str(regularization), str(iterations), str(NUM_THREADS)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
      raise RuntimeError(f"implicit's ALS failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out_path) as z:
      return FitRun(z["user_factors"], z["item_factors"], float(timing["seconds"]),
                    float(timing["cpu"]), float(timing["working_mb"]))


class _IterationStamps(logging.Handler):
  """Clock readings at `fit`'s per-iteration log records ("wmf iteration i/n: ...").

  `fit` logs each iteration synchronously once its table is ready, so the handler's clock marks
  the end of the iteration as a callback's would, without the callback's price: `fit` hands a
  callback the factors in the caller's order, two gathers of the whole table per iteration.
  """

  def __init__(self):
    super().__init__(level=logging.INFO)
    self.stamps: list[float] = []

  def emit(self, record: logging.LogRecord) -> None:
    if str(record.msg).startswith("wmf iteration "):
      self.stamps.append(time.perf_counter())


def run_ours(train: scipy.sparse.csr_matrix, *, factors: int, regularization: float,
             iterations: int, alpha: float
             ) -> tuple[np.ndarray, np.ndarray, list[float], float, float]:
  """`musemb.systems.wmf.als.fit` without loss evaluation or callback, as implicit's `fit` runs.

  Returns the factors, the seconds of each iteration (the first counted from the call, so it holds
  the layout, the transfers and the compilation; read from `fit`'s per-iteration log records,
  `_IterationStamps`), and the wall-clock and process CPU seconds of the whole `fit` call. (A
  timing callback cost 0.5-1.0 s of a 7-9 s fit in three alternating pairs: the factors it is
  handed are gathered back to the caller's order every iteration.)
  """
  handler = _IterationStamps()
  logger = absl_logging.get_absl_logger()
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  logger.addHandler(handler)
  try:
    cpu_start = time.process_time()
    start = time.perf_counter()
    x, y = wmf.fit(train, factors=factors, regularization=regularization, alpha=alpha,
                   iterations=iterations, solver="cg", cg_steps=CG_STEPS, seed=0,
                   compute_loss=False, chunk_cells=CHUNK_CELLS)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
  finally:
    logger.removeHandler(handler)
    absl_logging.set_verbosity(verbosity)
  if len(handler.stamps) != iterations:
    raise RuntimeError(f"fit logged {len(handler.stamps)} iterations, expected {iterations}: its "
                       "per-iteration log message changed; update _IterationStamps.")
  return x, y, list(np.diff([start, *handler.stamps])), total, cpu


_OURS_SCRIPT = r"""
import sys
import numpy as np, scipy.sparse
from launch import common
data_path, out_path, factors, reg, iterations, alpha, cache = sys.argv[1:8]
common.configure_compilation_cache(cache)
common.configure_host_memory()  # as the launchers' setup does
import jax
from launch.benchmarks import als
z = np.load(data_path)
train = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
jax.devices()  # the CPU client (about 10 ms), so that its threads are not counted as the fit's
""" + _MEMORY_SNIPPET + r"""
resident = start_peak()
x, y, per_it, total, cpu = als.run_ours(train, factors=int(factors), regularization=float(reg),
                                        iterations=int(iterations), alpha=float(alpha))
working_mb = (status_kb("VmHWM") - resident) / 1024
np.savez(out_path, user_factors=x, item_factors=y, seconds=np.asarray(per_it), total=total,
         cpu=cpu, working_mb=working_mb)
"""


def run_ours_process(train: scipy.sparse.csr_matrix, *, devices: int, cache_dir: str,
                     factors: int, regularization: float, iterations: int,
                     alpha: float) -> FitRun:
  """`run_ours` in a fresh process whose JAX sees `devices` CPU devices and caches under cache_dir.

  XLA:CPU gives each device its own thread, so `devices` > 1 is how our ALS uses several cores
  (rows sharded over the mesh's `data` axis); the device count must be set before JAX starts,
  hence the process. `cache_dir` is JAX's persistent compilation cache as the launchers set it
  (`launch.common.configure_compilation_cache`): an empty folder gives the cold fit, a folder a
  previous run filled the warm one; "off" disables the cache.
  """
  with tempfile.TemporaryDirectory() as tmp:
    data_path, out_path = os.path.join(tmp, "train.npz"), os.path.join(tmp, "factors.npz")
    np.savez(data_path, data=train.data, indices=train.indices, indptr=train.indptr,
             shape=np.asarray(train.shape))
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", _OURS_SCRIPT, data_path, out_path,
                           str(factors), str(regularization), str(iterations), str(alpha),
                           cache_dir],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
      raise RuntimeError(f"the {devices}-device run failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    with np.load(out_path) as z:
      return FitRun(z["user_factors"], z["item_factors"], float(z["total"]), float(z["cpu"]),
                    float(z["working_mb"]), list(z["seconds"]))


def run(quick: bool = False, rounds: int = 2) -> str:
  """Runs the benchmark, prints and returns its table.

  Each round fits ours cold (a fresh, empty compilation cache), ours warm (the cache the cold fit
  filled) and implicit, one after the other, each in a fresh process; this machine's speed drifts
  by 20-40% over minutes, so the rounds alternate the sides and each side's row is its round with
  the fastest whole fit (every round's whole fit is listed). Ratios compare those rows.
  """
  size = QUICK if quick else FULL
  iterations = 3 if quick else ITERATIONS
  start = time.perf_counter()
  counts = make_data(size)
  train, heldout = wmf_run.split_holdout(counts, HOLDOUT, seed=0)
  users = wmf_run.eval_users(heldout, size.eval_users, seed=0)
  kwargs = dict(factors=FACTORS, regularization=REGULARIZATION, iterations=iterations, alpha=ALPHA)
  have_implicit = implicit_available()
  names = ("cold compilation cache", "warm compilation cache")
  devices = common.default_cpu_devices()  # what the WMF launchers give the fit
  runs: dict[str, list[FitRun]] = {name: [] for name in (*names, "implicit")}
  for _ in range(rounds):
    with tempfile.TemporaryDirectory() as cache:
      # Empty for the cold process (every program compiles) and filled by it for the warm one
      # (a rerun of the same fit, as a launcher's second run).
      for name in names:
        runs[name].append(run_ours_process(train, devices=devices, cache_dir=cache, **kwargs))
    if have_implicit:
      runs["implicit"].append(run_implicit(train, **kwargs))
  lines = [f"data: {size.users:,} users x {size.items:,} items, {counts.nnz:,} non-zeros "
           f"({train.nnz:,} train), generated in {time.perf_counter() - start:.1f}s; "
           f"f={FACTORS}, lambda={REGULARIZATION}, alpha={ALPHA}, {iterations} iterations, CG "
           f"{CG_STEPS} steps, chunk_cells={CHUNK_CELLS}; quality over {len(users):,} users; "
           f"{rounds} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
           f"numpy's huge-page advice {'off' if common.host_memory_env() else 'as numpy sets it'}"
           " on both sides (launch.common.configure_host_memory)",
           "", f"| system | whole fit (s) | whole fit, CPU s | s/iteration | first iteration (s) | "
           f"working memory (MB) | recall@{RECALL_K} | map@{MAP_N} | whole fit, every round (s) |",
           "|---|---|---|---|---|---|---|---|---|"]
  recall, map_n = f"recall@{RECALL_K}", f"map@{MAP_N}"
  best, quality_of = {}, {}
  for name, fits in runs.items():
    if not fits:
      continue
    fit = best[name] = min(fits, key=lambda r: r.total)
    q = quality_of[name] = quality(fit.user_factors, fit.item_factors, train, heldout, users)
    if fit.per_iteration is not None:
      label = f"musemb (JAX CPU, {devices} device{'s' if devices > 1 else ''}, {name})"
      first = f"{fit.per_iteration[0]:.2f}"
    else:
      label, first = f"implicit 0.7.3 CPU ({NUM_THREADS} threads)", "-"
    lines.append(f"| {label} | {fit.total:.2f} | {fit.cpu:.2f} | "
                 f"{fit.seconds_per_iteration(iterations):.3f} | {first} | "
                 f"{fit.working_mb:.0f} | {q[recall]:.4f} | {q[map_n]:.4f} | "
                 f"{' / '.join(f'{r.total:.2f}' for r in fits)} |")
  if not have_implicit:
    lines += ["", INSTALL_HINT]
  else:
    theirs, qi = best["implicit"], quality_of["implicit"]
    lines.append("")
    for name in names:
      ours, q = best[name], quality_of[name]
      per_it = ours.seconds_per_iteration(iterations) / theirs.seconds_per_iteration(iterations)
      lines.append(f"ratio musemb ({name})/implicit: whole fit {ours.total / theirs.total:.2f}x "
                   f"wall-clock, {ours.cpu / theirs.cpu:.2f}x CPU seconds, time per iteration "
                   f"{per_it:.2f}x (< 1 is faster), working memory "
                   f"{ours.working_mb / max(theirs.working_mb, 1e-9):.2f}x, {map_n} "
                   f"{q[map_n] / max(qi[map_n], 1e-12):.3f}x, {recall} "
                   f"{q[recall] / max(qi[recall], 1e-12):.3f}x")
  table = "\n".join(lines)
  print(table)
  return table
