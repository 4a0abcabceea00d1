"""Benchmark: exact top-k ranking at MUSLSE's Big-data scale, musemb vs faiss flat search (and numpy).

Weston et al. (MUSLSE) evaluate artist prediction on Big-data by ranking 26,972 artists for each
of 66,072 test songs in a d = 100 space and reading precision@k up to k = 15. This benchmark times
`musemb.ranking.top_k_scores` (its default chunking) on random embeddings of that shape against
two peers on the same data:

* faiss 1.15.1 `IndexFlatIP` (exact inner-product search, BLAS sgemm blocks and a k-heap per
  query), 2 OpenMP threads, the index built inside the timed call. faiss is a benchmark-only
  dependency installed by `bash launch/install_peers.sh`; without it the row says so.
* with `run(peers=("faiss", "numpy"))`, the obvious numpy implementation over query chunks of
  1,024 (BLAS matmul, `np.argpartition`, then a sort of the k survivors), run once (it has
  nothing to warm up); it is 7-13x slower than musemb, so the suite leaves it out by default.

For each it reports the first call (compilation included for musemb) and a second (warm) call,
in wall-clock and in CPU seconds (all threads; other jobs on the cores disturb them less), the
resident size just before the first call (after the imports, the backend start-up and the data),
the peak resident memory of the process and its working memory: that peak minus the resident
size before the call, i.e. what the ranking itself adds. A last line says plainly which of the
two memory measures musemb meets against faiss. JAX's runtime alone is about 205 MB resident once
a CPU client exists (faiss's process about 60 MB with the data), so the whole-process peak of a
JAX program cannot go under faiss's; the working memory compares what the two searches allocate.
It includes everything the first call sets off, musemb's compilation included. The JAX
process's baseline is taken after one small jitted elementwise program has run, so XLA's LLVM
code generator (about 18 MB resident on a process's first generated kernel) is already started:
the ranking serves evaluations that follow a model's forward pass, which starts it in every
musemb run, so it is not what the ranking adds. (Measured with a cold code generator the
working memory is about 18 MB higher.)

musemb and faiss each run `rounds` times (2 by default), alternating, each time in a fresh
process: this machine's speed drifts over tens of seconds (faiss's best call ranged 2.4-4.0 s
over six single-round runs), and with one run a side a drift during it decided the ratio. Each
side's row is its round with the best call; its memory columns come from its round with the
largest working memory.

Each implementation runs in its own fresh Python process, started through a tiny launcher that
reads `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` after the measurement exits. The launcher is
needed because Linux carries a process's resident size at fork into the child's ru_maxrss: a
child forked from this (possibly large) process would report at least this process's memory.
All processes generate the same data from the same seed; the peer processes never import JAX.
The suite checks that musemb's top-15 lists equal faiss's (and numpy's) query by query; where
they differ it computes both lists' scores exactly (float64) and prints the largest gap, which
stays at float32 rounding size: two GEMMs summing the 100 products in different orders can swap
items that tie to within a rounding error (14 of 66,072 queries, scores 6.7e-6 apart at most).

    python -m launch.benchmark --suite=evaluation
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

_BIG_DATA = {"queries": 66_072, "items": 26_972, "dim": 100, "k": 15}
_CHUNK = 1024
_SEED = 0

# Runs the command in its argv, then prints the peak resident size of that child in bytes. Kept
# import-light so that its own size, which its child inherits at fork, stays a few MB.
_FAISS_THREADS = 2
_IMPLS = ("musemb", "faiss", "numpy")
# numpy takes 7x musemb's time (about 30 s on idle cores, 11 minutes at load 29): opt-in.
_DEFAULT_PEERS = ("faiss",)

_LAUNCHER = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("PEAK_RSS_BYTES", rss if sys.platform == "darwin" else rss * 1024)
"""


def _data(num_queries: int, num_items: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(_SEED)
  return (rng.standard_normal((num_queries, dim), dtype=np.float32),
          rng.standard_normal((num_items, dim), dtype=np.float32))


def _numpy_top_k(queries: np.ndarray, items: np.ndarray, k: int, chunk: int) -> np.ndarray:
  """The peer: chunked BLAS matmul, argpartition for the top k, then a sort of those k."""
  out = np.empty((queries.shape[0], k), np.int64)
  for start in range(0, queries.shape[0], chunk):
    scores = queries[start:start + chunk] @ items.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
  return out


def _resident_bytes() -> int:
  """This process's current resident set size (Linux /proc; 0 where unavailable)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    return 0


def _cpu_seconds() -> float:
  """User + system CPU seconds of this process, all threads (less disturbed by other jobs)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def faiss_available() -> bool:
  return subprocess.run([sys.executable, "-c", "import faiss"], capture_output=True).returncode == 0


def _child_main() -> None:
  """Entry point of a measurement process: argv = impl, queries, items, dim, k, chunk, out."""
  impl, num_queries, num_items, dim, k, chunk, out_path = sys.argv[1:8]
  num_queries, num_items, dim, k, chunk = map(int, (num_queries, num_items, dim, k, chunk))
  queries, items = _data(num_queries, num_items, dim)
  if impl == "musemb":
    from musemb import ranking  # pylint: disable=g-import-not-at-top

    import jax  # pylint: disable=g-import-not-at-top
    # Start the backend and XLA's code generator before the baseline RSS, as a model's forward
    # pass has done in every evaluation the ranking serves (module docstring).
    jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(4)).block_until_ready()

    def rank():
      return ranking.top_k_scores(queries, items, k)[1]
  elif impl == "faiss":
    import faiss  # pylint: disable=g-import-not-at-top
    faiss.omp_set_num_threads(_FAISS_THREADS)

    def rank():
      index = faiss.IndexFlatIP(dim)
      index.add(items)
      return index.search(queries, k)[1]
  elif impl == "numpy":

    def rank():
      return _numpy_top_k(queries, items, k, chunk)
  else:
    raise ValueError(f"unknown implementation {impl!r}; expected one of {_IMPLS}.")
  baseline = _resident_bytes()
  start, cpu = time.perf_counter(), _cpu_seconds()
  indices = rank()
  first, first_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  warm = warm_cpu = float("nan")
  if impl != "numpy":  # numpy has nothing to compile or warm up: one call is its time
    start, cpu = time.perf_counter(), _cpu_seconds()
    indices = rank()
    warm, warm_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
  np.save(out_path, np.asarray(indices, np.int64))
  print("RESULT", json.dumps({"first_s": first, "warm_s": warm, "first_cpu_s": first_cpu,
                              "warm_cpu_s": warm_cpu, "baseline_bytes": baseline}))


def _measure(impl: str, sizes: dict[str, int], out_path: str) -> dict[str, float]:
  """Runs one implementation in a fresh process under the launcher; returns times and peak RSS."""
  child = ("from launch.benchmarks.evaluation import _child_main; _child_main()")
  args = [str(sizes[key]) for key in ("queries", "items", "dim", "k")]
  cmd = [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", child, impl, *args, str(_CHUNK),
         out_path]
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(
        f"The {impl} measurement process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  result = {}
  for line in proc.stdout.splitlines():
    if line.startswith("RESULT "):
      result.update(json.loads(line[len("RESULT "):]))
    elif line.startswith("PEAK_RSS_BYTES "):
      result["peak_mb"] = int(line.split()[1]) / 2**20
  result["base_mb"] = result.pop("baseline_bytes") / 2**20
  result["work_mb"] = result["peak_mb"] - result["base_mb"]
  return result


def _near_ties(ours: np.ndarray, peer: np.ndarray, queries: np.ndarray,
               items: np.ndarray) -> tuple[int, float]:
  """Queries whose lists differ, and the largest gap between the two lists' exact scores there.

  Two float32 GEMMs that add the d products in different orders (XLA's and faiss's BLAS) can
  swap items whose scores are within a rounding error; the exact (float64) score of each list's
  i-th item then differs by about that error. Returns (number of differing queries, the largest
  |exact score of ours[i] - exact score of peer[i]| over them and over i).
  """
  rows = np.flatnonzero(np.any(ours != peer, axis=1))
  if not len(rows):
    return 0, 0.0
  q = queries[rows].astype(np.float64)

  def exact(idx):
    return np.einsum("qd,qkd->qk", q, items[idx[rows]].astype(np.float64))

  return len(rows), float(np.max(np.abs(exact(ours) - exact(peer))))


def _combine(rounds: list[dict[str, float]]) -> dict[str, float]:
  """One implementation's rounds as one row: the round with the best call gives the times, and
  the round with the largest working memory gives the memory columns (all three from that one
  round, so working = peak - before still holds; a lucky round cannot make them look smaller)."""
  best = min(rounds, key=lambda r: np.nanmin([r["first_s"], r["warm_s"]]))
  most = max(rounds, key=lambda r: r["work_mb"])
  out = dict(best)
  for key in ("base_mb", "peak_mb", "work_mb"):
    out[key] = most[key]
  out["rounds"] = len(rounds)
  return out


def run(quick: bool = False, peers: tuple[str, ...] = _DEFAULT_PEERS, rounds: int = 2) -> str:
  """Times top-k ranking at Big-data scale against faiss (and numpy); prints and returns a table.

  Args:
    quick: rank a tenth of the queries (6,607 songs against all 26,972 artists), one round.
    peers: the peers to run, from ("faiss", "numpy"); faiss is skipped with a note when missing.
    rounds: how many times musemb and faiss each run, alternating (musemb, faiss, musemb, ...),
      each time in a fresh process: the machine's speed drifts over tens of seconds, and a drift
      during one side's only run would decide the ratio. Each side's row is its round with the
      best call; its memory columns come from its round with the largest working memory. numpy
      runs once.

  Returns:
    The table as a string (also printed).
  """
  sizes = dict(_BIG_DATA)
  if quick:
    sizes["queries"] //= 10
  unknown = set(peers) - set(_IMPLS[1:])
  if unknown:
    raise ValueError(f"unknown peers {sorted(unknown)}; expected some of {_IMPLS[1:]}.")
  impls = ["musemb"] + [impl for impl in _IMPLS[1:]
                        if impl in peers and (impl != "faiss" or faiss_available())]
  with tempfile.TemporaryDirectory() as tmp:
    paths = {impl: os.path.join(tmp, f"{impl}.npy") for impl in impls}
    repeats = 1 if quick else max(1, int(rounds))
    measured = {impl: [] for impl in impls}
    for round_ in range(repeats):
      for impl in impls:
        if impl != "numpy" or round_ == 0:
          measured[impl].append(_measure(impl, sizes, paths[impl]))
    results = {impl: _combine(rs) for impl, rs in measured.items()}
    ours_idx = np.load(paths["musemb"])
    peers_idx = {impl: np.load(paths[impl]) for impl in impls if impl != "musemb"}
  queries, items = _data(sizes["queries"], sizes["items"], sizes["dim"])
  agree = {impl: np.mean(np.all(ours_idx == idx, axis=1)) for impl, idx in peers_idx.items()}
  ties = {impl: _near_ties(ours_idx, idx, queries, items) for impl, idx in peers_idx.items()}
  del queries, items
  names = {"musemb": "musemb.ranking.top_k_scores (JAX, lax.top_k)",
           "faiss": f"faiss IndexFlatIP ({_FAISS_THREADS} threads, peer)",
           "numpy": f"numpy matmul + argpartition (chunk {_CHUNK})"}
  header = (f"top-k ranking, {sizes['queries']:,} queries x {sizes['items']:,} items, "
            f"d={sizes['dim']}, k={sizes['k']}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}; {results['musemb']['rounds']} round(s) for musemb and each peer but "
            f"numpy (once), alternating; each side's best-call round shown, memory from its round "
            f"with the largest working memory")
  rows = [f"{'implementation':<46} {'first call s':>12} {'warm s':>8} {'CPU s first/warm':>16} "
          f"{'before MB':>9} {'peak MB':>8} {'working MB':>10}"]
  for impl in impls:
    r = results[impl]
    cpu = f"{r['first_cpu_s']:.2f} / {r['warm_cpu_s']:.2f}"
    rows.append(f"{names[impl]:<46} {r['first_s']:>12.2f} {r['warm_s']:>8.2f} {cpu:>16} "
                f"{r['base_mb']:>9.0f} {r['peak_mb']:>8.0f} {r['work_mb']:>10.0f}")
  ours = results["musemb"]
  for impl in impls[1:]:
    peer = results[impl]
    peer_best = np.nanmin([peer["first_s"], peer["warm_s"]])
    peer_cpu = np.nanmin([peer["first_cpu_s"], peer["warm_cpu_s"]])
    rows.append(f"ratio {impl} / musemb: first call {peer['first_s'] / ours['first_s']:.2f}x, "
                f"best call {peer_best / min(ours['first_s'], ours['warm_s']):.2f}x, best CPU "
                f"seconds {peer_cpu / min(ours['first_cpu_s'], ours['warm_cpu_s']):.2f}x (> 1: "
                f"musemb faster), peak memory {peer['peak_mb'] / ours['peak_mb']:.2f}x, working "
                f"memory {peer['work_mb'] / max(ours['work_mb'], 1e-9):.2f}x; identical "
                f"top-{sizes['k']} lists: {agree[impl]:.2%} of queries ({ties[impl][0]} differ; "
                f"there the two lists' exact float64 scores differ by at most "
                f"{ties[impl][1]:.1e}, float32 rounding near-ties)")
  if "faiss" in impls:
    peer = results["faiss"]

    def verdict(ours_mb, peer_mb):
      return "under" if ours_mb < peer_mb else "NOT under"

    rows.append(
        f"memory against faiss: working memory (what the ranking adds) {ours['work_mb']:.0f} MB "
        f"vs {peer['work_mb']:.0f} MB, {verdict(ours['work_mb'], peer['work_mb'])} faiss's; "
        f"whole-process peak {ours['peak_mb']:.0f} MB vs {peer['peak_mb']:.0f} MB, "
        f"{verdict(ours['peak_mb'], peer['peak_mb'])} (the JAX process is {ours['base_mb']:.0f} "
        f"MB resident before the call, faiss's {peer['base_mb']:.0f} MB)")
  if "faiss" in peers and "faiss" not in impls:
    rows.append("faiss is not installed: `bash launch/install_peers.sh` (faiss-cpu 1.15.1), then "
                "rerun `python -m launch.benchmark --suite=evaluation`.")
  table = "\n".join([header, *rows])
  print(table)
  return table
