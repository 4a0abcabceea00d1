"""Benchmark: the hot training steps on an accelerator: throughput, achieved FLOP/s, share of peak.

For a lent GPU or TPU (it runs on CPU too; `quick` shrinks everything to a smoke run). Rows:

* **SampleCNN** training step (`launch.benchmarks.samplecnn`'s step: Lee et al.'s 3^9 model over
  59,049 samples, 80-factor head, SGD with momentum), in float32 and with `dtype="bfloat16"`
  (mixed precision: bf16 computation, float32 parameters; `musemb.models.samplecnn`).
* **short-chunk** training step (`launch.benchmarks.shortchunk`'s step: Won et al.'s acoustic
  branch with the on-device log-mel front end, tag branch, triplet loss, Adam), float32 and bf16
  (the log-mel front end stays float32 either way; `musemb.models.shortchunk`).
* **MUSLSE** WARP tag-prediction step (`musemb.train.make_train_step` of the `muslse` system, the
  loop's own step) on a bag-of-frames world at the issue-14 scale (`launch.benchmarks.warp.BofWorld`:
  20,000 training songs x 2,000 codewords, 160 tags, d = 100, batch 128, Adagrad). float32 only:
  the step is gathers, a few [B, 2000] x [2000, 100] products and a sampler loop, nothing a bf16
  computation dtype would speed up, and its max-norm projection wants float32 rows.
* **ALS** (`musemb.systems.wmf.als.fit`, CG solver, 3 steps, f = 64) at ten times the CPU
  benchmark's size (`launch.benchmarks.als.make_data`: 500,000 users x 1,000,000 items, 50 M
  non-zeros), float32 (the normal equations need it). Seconds per iteration after the first (which
  compiles); "examples" are non-zeros per second, both half-steps of an iteration.

FLOPs per step: for the three gradient steps, XLA's cost analysis of the compiled step
(`jitted.lower(...).compile().cost_analysis()["flops"]`, `timing.compile_with_flops`); it counts a
multiply-add as two and a loop's body once (MUSLSE's WARP sampler loop, so its count is a lower
bound). ALS is many jitted block calls, so its count is analytic (`als_flops_per_iteration`):
the conjugate-gradient passes of `musemb.systems.wmf.als._solve_cg` and the two Gram matrices on
the real non-zeros, padding not counted. Peak: `PEAK_FLOPS` by `device_kind` (dense, no sparsity);
float32 rows are compared with the peak XLA can use for float32 on that chip (TF32 tensor cores on
NVIDIA Ampere and later at JAX's default matmul precision, bf16 passes on TPU), bf16 rows with the
bf16 peak; "unknown" for other devices (CPUs included).

    python -m launch.benchmark --suite=accelerator            # on the accelerator; under 8 minutes
    python -m launch.benchmark --suite=accelerator --quick    # a smoke run (any backend)
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from launch.benchmarks import als as als_bench
from launch.benchmarks import samplecnn as samplecnn_bench
from launch.benchmarks import shortchunk as shortchunk_bench
from launch.benchmarks import timing
from launch.benchmarks import warp as warp_bench
from musemb import sharding
from musemb import train as train_lib
from musemb.models import branches
from musemb.models import samplecnn
from musemb.models import shortchunk
from musemb.systems import muslse

# (device_kind substring, bf16 FLOP/s, float32 FLOP/s as XLA runs float32 there), dense, per chip;
# the first match wins, so the more specific names come first. Vendors' data-sheet numbers:
# NVIDIA H100 SXM / H200 989 TFLOP/s bf16, 495 TF32; H100 PCIe 756 / 378; A100 312 / 156;
# L40S 362 / 183; L4 121 / 60; Google TPU v4 275, v5e 197, v5p 459, v6e 918 (float32 matmuls
# run as bf16 passes at the default precision, so the same peak).
PEAK_FLOPS = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 495e12),
    ("H200", 989e12, 495e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L4", 121e12, 60e12),
    ("TPU v4", 275e12, 275e12),
    ("TPU v5 lite", 197e12, 197e12),
    ("TPU v5e", 197e12, 197e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v5", 459e12, 459e12),
    ("TPU v6 lite", 918e12, 918e12),
    ("TPU v6e", 918e12, 918e12),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The chip's dense peak FLOP/s for `dtype` ("bfloat16" or "float32"), None if not in the table."""
  for name, bf16, f32 in PEAK_FLOPS:
    if name in device_kind:
      return bf16 if dtype == "bfloat16" else f32
  return None


@dataclasses.dataclass
class Row:
  workload: str
  dtype: str
  batch: int
  step_s: float
  examples_per_s: float
  flops_per_step: float
  flops_source: str     # "XLA" or "analytic"
  compile_s: float
  note: str = ""


def _time_step(jitted: Callable, state: Any, inputs: tuple, *, batch_size: int, steps: int,
               what: str) -> tuple[dict[str, Any], float, float]:
  """Compiles ahead of time (FLOPs from XLA), then times `steps` steps; (timings, flops, compile_s)."""
  start = time.perf_counter()
  compiled, flops = timing.compile_with_flops(jitted, state, *inputs, jax.random.key(0))
  compile_s = time.perf_counter() - start
  _, result = timing.time_training_steps(compiled, state, inputs, batch_size=batch_size,
                                         steps=steps, what=what)
  return result, flops, compile_s


def samplecnn_row(dtype: str, *, quick: bool) -> Row:
  """The SampleCNN benchmark's step (factors head, SGD + momentum) in `dtype`."""
  batch, steps = (2, 2) if quick else (32, 20)
  kwargs = (dict(widths=(8, 8, 16), stem_width=8, final_width=16, num_samples=81) if quick
            else {})
  model = samplecnn.SampleCNN(num_outputs=80, head="factors", dtype=dtype, **kwargs)
  k_audio, k_target, k_init = jax.random.split(jax.random.key(0), 3)
  audio = 0.1 * jax.random.normal(k_audio, (batch, model.num_samples))
  targets = jax.random.normal(k_target, (batch, 80))
  variables = jax.jit(model.init)(k_init, audio)
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  r, flops, compile_s = _time_step(samplecnn_bench._make_step(model, tx), state, (audio, targets),  # pylint: disable=protected-access
                                   batch_size=batch, steps=steps, what=f"SampleCNN ({dtype})")
  return Row("SampleCNN 3^9, 59,049 samples" if not quick else "SampleCNN (quick: 3 blocks)",
             dtype, batch, r["step_s"], r["examples_per_s"], flops, "XLA", compile_s)


def shortchunk_row(dtype: str, *, quick: bool) -> Row:
  """The short-chunk benchmark's step (acoustic + tag branch, triplet loss, Adam) in `dtype`."""
  batch, steps = (2, 2) if quick else (64, 20)
  if quick:
    mel = shortchunk.MelConfig(n_fft=256, hop_length=128, n_mels=32)
    song = branches.AcousticBranch(widths=(4, 8), mel=mel, num_samples=44 * 128, dtype=dtype)
  else:
    song = branches.AcousticBranch(dtype=dtype)
  tag = branches.TagBranch()
  k_audio, k_words, k_tag, k_song = jax.random.split(jax.random.key(0), 4)
  audio = 0.1 * jax.random.normal(k_audio, (batch, song.num_samples))
  words = jax.random.normal(k_words, (batch, branches.WORD_DIM))
  tag_vars = jax.jit(tag.init)(k_tag, words)
  song_vars = jax.jit(song.init)(k_song, audio)
  params = {"tag": tag_vars["params"], "song": song_vars["params"]}
  stats = {"tag": tag_vars["batch_stats"], "song": song_vars["batch_stats"]}
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-4))
  state = (params, stats, tx.init(params))
  r, flops, compile_s = _time_step(shortchunk_bench._make_step(tag, song, tx), state,  # pylint: disable=protected-access
                                   (words, audio), batch_size=batch, steps=steps,
                                   what=f"short-chunk ({dtype})")
  return Row("short-chunk CNN + tag branch, 88,064 samples" if not quick
             else "short-chunk (quick: 2 layers)", dtype, batch, r["step_s"], r["examples_per_s"],
             flops, "XLA", compile_s)


def muslse_row(*, quick: bool) -> Row:
  """The MUSLSE loop's own WARP step on a bag-of-frames world (issue-14 scale unless quick)."""
  batch, steps = (16, 5) if quick else (128, 200)
  world = (warp_bench.BofWorld(train_songs=200, test_songs=20, codewords=100, tags=20,
                               topics=5, frames=(40, 80)) if quick else warp_bench.BofWorld())
  config = warp_bench.benchmark_config("tiny" if quick else "demo")
  config.train.batch_size = batch
  config.optimizer.name, config.optimizer.learning_rate = "adagrad", 0.1
  start = time.perf_counter()
  data = warp_bench.make_bof_world(world, batch)
  data_s = time.perf_counter() - start
  mesh = sharding.make_mesh(None)
  tables = sharding.put_replicated(data.tables, mesh)
  tx = train_lib.make_optimizer(config)
  state = train_lib.create_train_state(muslse.SYSTEM, config, data.info, tx, mesh)
  step = train_lib.make_train_step(muslse.SYSTEM, config, tx)
  batches = [sharding.shard_batch(data.train_batch(i), mesh) for i in range(min(steps, 50))]
  start = time.perf_counter()
  compiled, flops = timing.compile_with_flops(step, state, batches[0], tables)
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batches[0], tables)  # warm-up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, batches[i % len(batches)], tables)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - start) / steps
  if not np.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"MUSLSE benchmark: the loss became {float(metrics['loss'])}.")
  return Row(f"MUSLSE WARP, {world.train_songs:,} songs x {world.codewords:,} codewords",
             "float32", batch, step_s, batch / step_s, flops, "XLA, loop body once", compile_s,
             note=f"world generated in {data_s:.0f} s")


def als_flops_per_iteration(users: int, items: int, nnz: int, factors: int, cg_steps: int) -> float:
  """Multiply-adds x 2 of one ALS iteration (users then items) with `_solve_cg`, no padding.

  Per half-step solving N rows against the other side's M rows: the Gram matrix Y^T Y (2 M f^2);
  the starting residual, two passes over the gathered rows (4 nnz f) and x0 (Y^T Y + lambda I)
  (2 N f^2); each CG step one pass for Y_u p (2 nnz f) and p (Y^T Y + lambda I) (2 N f^2), and all
  but the last one more pass for the back-projection (2 nnz f). Vector updates are O(N f), left out.
  """
  f, s = factors, cg_steps
  per_side_nnz = (4 + 2 * s + 2 * (s - 1)) * nnz * f
  return float(2 * per_side_nnz + 2 * (users + items) * f * f * (s + 1)
               + 2 * (users + items) * f * f)


def als_row(*, quick: bool) -> Row:
  """`musemb.systems.wmf.als.fit` (CG) on `als_bench.make_data` at ten times the CPU suite's size,
  timed by `als_bench.run_ours`."""
  size = (als_bench.DataSize(users=200, items=400, nnz=2_000, topics=4) if quick
          else als_bench.DataSize(users=10 * als_bench.FULL.users, items=10 * als_bench.FULL.items,
                                  nnz=10 * als_bench.FULL.nnz))
  iterations = 2 if quick else 3
  start = time.perf_counter()
  counts = als_bench.make_data(size)
  data_s = time.perf_counter() - start
  # Timed as the CPU suite times it: no callback (one would gather the factors back to the
  # caller's order every iteration), iterations read from fit's own log records.
  _, _, per_it, _, _ = als_bench.run_ours(counts, factors=als_bench.FACTORS,
                                          regularization=als_bench.REGULARIZATION,
                                          iterations=iterations, alpha=als_bench.ALPHA)
  per_it = np.asarray(per_it)
  step_s = float(np.median(per_it[1:]))
  flops = als_flops_per_iteration(size.users, size.items, counts.nnz, als_bench.FACTORS,
                                  als_bench.CG_STEPS)
  return Row(f"ALS CG f={als_bench.FACTORS}, {size.users:,} x {size.items:,}, "
             f"{counts.nnz:,} nnz (per iteration)", "float32", counts.nnz, step_s,
             counts.nnz / step_s, flops, "analytic", float(per_it[0]),
             note=f"data generated in {data_s:.0f} s; 'compile' = first iteration")


WORKLOADS = ("samplecnn", "shortchunk", "muslse", "als")


def run(quick: bool = False, only: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the rows (of `only`, a subset of `WORKLOADS`; all by default), prints and returns the table.

  A row that fails prints its error in the table and the others still run; the run then raises, so
  a broken row is never mistaken for a result. Returns {rows, table}.
  """
  only = WORKLOADS if only is None else tuple(only)
  unknown = sorted(set(only) - set(WORKLOADS))
  if unknown:
    raise ValueError(f"accelerator suite: unknown workloads {unknown}; choose from {WORKLOADS}.")
  device = jax.devices()[0]
  kind = device.device_kind
  jobs = [(f"samplecnn {d}", lambda d=d: samplecnn_row(d, quick=quick))
          for d in ("float32", "bfloat16")]
  jobs += [(f"shortchunk {d}", lambda d=d: shortchunk_row(d, quick=quick))
           for d in ("float32", "bfloat16")]
  jobs += [("muslse", lambda: muslse_row(quick=quick)), ("als", lambda: als_row(quick=quick))]
  jobs = [(name, job) for name, job in jobs if name.split()[0] in only]
  rows, failures = [], []
  suite_start = time.perf_counter()
  for name, job in jobs:
    try:
      rows.append(job())
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"{name}: {type(e).__name__}: {e}")
  lines = [
      f"accelerator suite{' (quick)' if quick else ''}: {device.platform} ({kind}) "
      f"x{jax.device_count()}, JAX {jax.__version__}, {os.cpu_count()} host cores, load "
      f"{os.getloadavg()[0]:.1f}; total {time.perf_counter() - suite_start:.0f} s",
      "",
      "| workload | dtype | batch | s/step | examples/s | GFLOP/step (source) | achieved TFLOP/s | "
      "peak TFLOP/s | of peak | compile (s) |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    achieved = r.flops_per_step / r.step_s
    peak = peak_flops(kind, r.dtype)
    share = f"{achieved / peak:.1%}" if peak and np.isfinite(achieved) else "unknown"
    peak_s = f"{peak / 1e12:.0f}" if peak else "unknown"
    lines.append(
        f"| {r.workload} | {r.dtype} | {r.batch:,} | {r.step_s:.4f} | {r.examples_per_s:,.1f} | "
        f"{r.flops_per_step / 1e9:,.4g} ({r.flops_source}) | {achieved / 1e12:.3f} | {peak_s} | "
        f"{share} | {r.compile_s:.1f} |")
  notes = [f"{r.workload}: {r.note}" for r in rows if r.note]
  if notes:
    lines += [""] + notes
  if failures:
    lines += ["", "FAILED:"] + failures
  table = "\n".join(lines)
  print(table)
  if failures:
    raise RuntimeError(f"accelerator suite: {len(failures)} row(s) failed: {failures}")
  return {"rows": rows, "table": table}
