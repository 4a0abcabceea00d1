"""Benchmark: what playlist tag propagation costs a SampleCNN training step (Lin et al.).

One run, one model, one batch: the tag-propagation system's own jitted training step
(`musemb.train.make_train_step` over `musemb.systems.tagprop`) with eq. (1) alone (the baseline)
and with eq. (3) (the walk of `musemb.samplers.propagation`, the partner's tags gathered from the
device table, the supportive cross-entropy), timed in alternating rounds so that a change of the
machine's load falls on both. The ratio of examples per second (with / without) is the price of
propagation inside the step; the walk alone is timed too.

The playlists are random at the scale of the paper's AotM-2011 setup (80,578 playlists of mean
length 6 over 70,427 songs, of which the 26,844 training songs pass tags on; 50 tags); the audio
is random waveforms already on the device, so the number is the step's own cost, not the input
pipeline's. Compilation and a warm-up step are excluded.

    python -m launch.benchmark --suite=propagation [--quick]
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from launch.benchmarks import timing
from musemb import sharding
from musemb import systems
from musemb import train
from musemb.samplers import propagation

# The paper's §IV.B: 80,578 playlists averaging 6 songs, 70,427 distinct songs, 26,844 of them
# with audio and tags (the training songs).
PAPER_SCALE = {"playlists": 80_578, "songs": 70_427, "sources": 26_844, "mean_length": 6}
QUICK_SCALE = {"playlists": 2_000, "songs": 2_000, "sources": 800, "mean_length": 6}


def random_tables(scale: dict[str, int], num_tags: int, r: float, seed: int = 0):
  """`{"propagation", "song_tags"}` over random playlists of the given scale."""
  rng = np.random.default_rng(seed)
  lengths = np.maximum(2, rng.poisson(scale["mean_length"], scale["playlists"]))
  flat = rng.integers(0, scale["songs"], lengths.sum())
  sequences = np.split(flat, np.cumsum(lengths)[:-1])
  source = np.zeros(scale["songs"], bool)
  source[rng.choice(scale["songs"], scale["sources"], replace=False)] = True
  tags = (rng.random((scale["songs"], num_tags)) < 0.05) & source[:, None]
  return {"propagation": propagation.build_tables(sequences, scale["songs"], source, r),
          "song_tags": tags}, np.flatnonzero(source)


def _step_runner(config, tables, mesh):
  """(step(state, batch, tables, key) -> (state, loss), initial state) for `config`."""
  system = systems.get("tagprop")
  tx = train.make_optimizer(config)
  info = {"num_tags": tables["song_tags"].shape[1]}
  state = train.create_train_state(system, config, info, tx, mesh)
  step_fn = train.make_train_step(system, config, tx)

  def step(state, batch, device_tables, key):
    del key   # the step folds its own key from the state's step
    state, metrics = step_fn(state, batch, device_tables)
    return state, metrics["loss"]
  return step, state


def measure(quick: bool = False, rounds: int = 3) -> dict[str, object]:
  """Examples per second without and with propagation; the walk's own time per batch."""
  from configs import tagprop as tagprop_config  # pylint: disable=g-import-not-at-top
  scale = QUICK_SCALE if quick else PAPER_SCALE
  batch_size, steps = (4, 5) if quick else (16, 5)
  num_tags = 50
  variant = "demo" if quick else "top50"
  t0 = time.perf_counter()
  tables, sources = random_tables(scale, num_tags, r=0.4)
  build_s = time.perf_counter() - t0
  mesh = sharding.make_mesh()
  device_tables = sharding.put_replicated(tables, mesh)
  rng = np.random.default_rng(1)
  crop = tagprop_config.get_config(variant).data.crop_samples
  batch = sharding.shard_batch({
      "audio": 0.1 * rng.standard_normal((batch_size, crop)).astype(np.float32),
      "tags": (rng.random((batch_size, num_tags)) < 0.1).astype(np.float32),
      "song": rng.choice(sources, batch_size).astype(np.int32)}, mesh)

  runners = {}
  for name, extra in (("without", ",baseline"), ("with", "")):
    config = tagprop_config.get_config(variant + extra)
    config.train.batch_size = batch_size
    runners[name] = _step_runner(config, device_tables, mesh)
  results = {name: [] for name in runners}
  for _ in range(rounds):
    for name, (step, state) in runners.items():
      state, r = timing.time_training_steps(step, state, (batch, device_tables),
                                            batch_size=batch_size, steps=steps,
                                            what=f"tag propagation ({name})")
      runners[name] = (step, state)
      results[name].append(r)

  walk = jax.jit(propagation.sample)
  songs = jnp.asarray(rng.choice(sources, batch_size), jnp.int32)
  walk(device_tables["propagation"], songs, jax.random.key(0)).weight.block_until_ready()
  t0 = time.perf_counter()
  for i in range(200):
    out = walk(device_tables["propagation"], songs, jax.random.key(i + 1))
  out.weight.block_until_ready()
  walk_s = (time.perf_counter() - t0) / 200
  best = {name: max(r["examples_per_s"] for r in rs) for name, rs in results.items()}
  step_s = {name: min(r["step_s"] for r in rs) for name, rs in results.items()}
  return {"scale": scale, "variant": variant, "batch_size": batch_size, "steps": steps,
          "rounds": rounds, "build_s": build_s, "examples_per_s": best, "step_s": step_s,
          "ratio": best["with"] / best["without"],
          "round_ratios": [w["examples_per_s"] / wo["examples_per_s"]
                           for w, wo in zip(results["with"], results["without"])],
          "walk_s": walk_s, "walk_fraction": walk_s / step_s["without"],
          "pairs": int(tables["propagation"].num_pairs)}


def run(quick: bool = False) -> str:
  """Runs the benchmark; prints and returns its table.

  Args:
    quick: the demo model (an eighth of Lee et al.'s widths), batch 4, 2,000 random playlists;
      otherwise the full 3^9 model of configs/tagprop.py:top50, batch 16, the paper's scale.
  """
  r = measure(quick)
  s = r["scale"]
  device = jax.devices()[0]
  lines = [
      f"Tag propagation in the SampleCNN training step (configs/tagprop.py:{r['variant']}, "
      f"batch {r['batch_size']}, 50 tags; {s['playlists']:,} random playlists of mean length "
      f"{s['mean_length']} over {s['songs']:,} songs, {s['sources']:,} sources, "
      f"{r['pairs']:,} eq. (4) pairs, tables built in {r['build_s']:.1f} s), {device.platform} "
      f"x{jax.device_count()}, {os.cpu_count()} cores visible, load {os.getloadavg()[0]:.1f}",
      "",
      "| step | s/step | examples/s |",
      "|---|---|---|",
      f"| eq. (1), no propagation | {r['step_s']['without']:.3f} | "
      f"{r['examples_per_s']['without']:.2f} |",
      f"| eq. (3), walk + supportive BCE | {r['step_s']['with']:.3f} | "
      f"{r['examples_per_s']['with']:.2f} |",
      "",
      f"ratio with / without: {r['ratio']:.3f} (best of {r['rounds']} alternating rounds of "
      f"{r['steps']} steps each; per round: "
      f"{', '.join(f'{x:.3f}' for x in r['round_ratios'])}). The walk alone: "
      f"{1e3 * r['walk_s']:.3f} ms per batch, {100 * r['walk_fraction']:.3g}% of a step without "
      "propagation: on a shared machine the ratio's spread across rounds is the load's, not "
      "the sampler's.",
  ]
  text = "\n".join(lines)
  print(text)
  return text
