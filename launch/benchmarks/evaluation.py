"""Benchmark: exact top-k ranking at MUSLSE's Big-data scale, musemb vs a numpy peer.

Weston et al. (MUSLSE) evaluate artist prediction on Big-data by ranking 26,972 artists for each
of 66,072 test songs in a d = 100 space and reading precision@k up to k = 15. This benchmark times
`musemb.ranking.top_k_scores` on random embeddings of that shape, next to the obvious numpy
implementation over the same query chunks (BLAS matmul, `np.argpartition`, then a sort of the k
survivors), and reports seconds and peak resident memory of each.

Each implementation runs in its own fresh Python process, started through a tiny launcher that
reads `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` after the measurement exits. The launcher is
needed because Linux carries a process's resident size at fork into the child's ru_maxrss: a
child forked from this (possibly large) process would report at least this process's memory.
Both processes generate the same data from the same seed; the numpy process never imports JAX.

    python -c "from launch.benchmarks import evaluation; evaluation.run()"
"""

from __future__ import annotations

import json
import os
import pathlib
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


def _child_main() -> None:
  """Entry point of a measurement process: argv = impl, queries, items, dim, k, chunk, out."""
  impl, num_queries, num_items, dim, k, chunk, out_path = sys.argv[1:8]
  num_queries, num_items, dim, k, chunk = map(int, (num_queries, num_items, dim, k, chunk))
  queries, items = _data(num_queries, num_items, dim)
  if impl == "musemb":
    from musemb import ranking  # pylint: disable=g-import-not-at-top

    def rank():
      return ranking.top_k_scores(queries, items, k, query_chunk=chunk)[1]
  elif impl == "numpy":

    def rank():
      return _numpy_top_k(queries, items, k, chunk)
  else:
    raise ValueError(f"unknown implementation {impl!r}; expected 'musemb' or 'numpy'.")
  start = time.perf_counter()
  indices = rank()
  first = time.perf_counter() - start
  start = time.perf_counter()
  indices = rank()
  warm = time.perf_counter() - start
  np.save(out_path, np.asarray(indices, np.int64))
  print("RESULT", json.dumps({"first_s": first, "warm_s": warm}))


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
  return result


def run(quick: bool = False) -> str:
  """Times top-k ranking at Big-data scale against the numpy peer; prints and returns a table.

  Args:
    quick: rank a tenth of the queries (6,607 songs against all 26,972 artists).

  Returns:
    The table as a string (also printed).
  """
  sizes = dict(_BIG_DATA)
  if quick:
    sizes["queries"] //= 10
  with tempfile.TemporaryDirectory() as tmp:
    paths = {impl: os.path.join(tmp, f"{impl}.npy") for impl in ("musemb", "numpy")}
    results = {impl: _measure(impl, sizes, path) for impl, path in paths.items()}
    agree = np.mean(np.all(np.load(paths["musemb"]) == np.load(paths["numpy"]), axis=1))
  ours, peer = results["musemb"], results["numpy"]
  header = (f"top-k ranking, {sizes['queries']:,} queries x {sizes['items']:,} items, "
            f"d={sizes['dim']}, k={sizes['k']}, query chunk {_CHUNK}, {os.cpu_count()} CPUs")
  rows = [
      f"{'implementation':<44} {'first call s':>12} {'warm s':>8} {'peak MB':>8}",
      f"{'musemb.ranking.top_k_scores (JAX, lax.top_k)':<44} {ours['first_s']:>12.2f} "
      f"{ours['warm_s']:>8.2f} {ours['peak_mb']:>8.0f}",
      f"{'numpy matmul + argpartition (peer)':<44} {peer['first_s']:>12.2f} "
      f"{peer['warm_s']:>8.2f} {peer['peak_mb']:>8.0f}",
      f"{'ratio peer / musemb':<44} {peer['first_s'] / ours['first_s']:>12.2f} "
      f"{peer['warm_s'] / ours['warm_s']:>8.2f} {peer['peak_mb'] / ours['peak_mb']:>8.2f}",
      f"identical top-{sizes['k']} lists: {agree:.2%} of queries",
  ]
  table = "\n".join([header, *rows])
  print(table)
  return table
