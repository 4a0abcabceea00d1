"""Benchmark: short-chunk CNN (acoustic branch) training throughput, examples per second.

Times the jitted training step of Won et al.'s tag-based retrieval model with the acoustic song
branch (`musemb.models.branches`, ICASSP 2021, section 2.2): 88,064 raw samples at 22,050 Hz go
through the on-device log-mel front end (1024-point FFT, hop 512, 128 mels, 173 frames) and the
seven-layer short-chunk CNN to a 256-d unit vector; 300-d word vectors go through the tag branch;
the loss is the cosine triplet loss (eq. 2, margin 0.4 as in the authors' code) with the negative
song of each triplet taken from the next row of the batch; the optimiser is Adam with learning
rate 1e-4 and (coupled, PyTorch-style) weight decay 1e-4, as in the paper. Batch norm statistics
are updated and dropout is on. Data are random and already on the device, so the number is the
model's own cost, not the input pipeline's. Compilation and a warm-up step are excluded; the state
is donated to the step as a training loop would.

    python -c "from launch.benchmarks import shortchunk; shortchunk.run()"
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from launch.benchmarks import timing
from musemb.models import branches
from musemb.models import shortchunk

_MARGIN = 0.4


def _triplet_loss(tag_emb: jax.Array, song_emb: jax.Array) -> jax.Array:
  """Mean cosine triplet loss with anchor tag i, positive song i and negative song i + 1."""
  pos = jnp.sum(tag_emb * song_emb, axis=-1)  # unit vectors: the cosine
  neg = jnp.sum(tag_emb * jnp.roll(song_emb, -1, axis=0), axis=-1)
  return jnp.mean(jax.nn.relu(_MARGIN - pos + neg))


def _make_step(tag_model: branches.TagBranch, song_model: branches.AcousticBranch,
               tx: optax.GradientTransformation):
  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, words, audio, rng):
    params, batch_stats, opt_state = state
    k_tag, k_song = jax.random.split(rng)

    def loss_fn(p):
      t, t_upd = tag_model.apply({"params": p["tag"], "batch_stats": batch_stats["tag"]}, words,
                                 train=True, rngs={"dropout": k_tag}, mutable=["batch_stats"])
      s, s_upd = song_model.apply({"params": p["song"], "batch_stats": batch_stats["song"]}, audio,
                                  train=True, rngs={"dropout": k_song}, mutable=["batch_stats"])
      stats = {"tag": t_upd["batch_stats"], "song": s_upd["batch_stats"]}
      return _triplet_loss(t, s), stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state), loss
  return step


def measure(batch_size: int,
            steps: int,
            widths: Sequence[int] = shortchunk.WON_WIDTHS,
            mel: shortchunk.MelConfig = shortchunk.MelConfig(),
            num_samples: int = shortchunk.NUM_SAMPLES,
            seed: int = 0) -> dict[str, Any]:
  """Trains `steps` timed steps (after one untimed warm-up); returns timings and the last loss."""
  if batch_size < 2 or steps < 1:
    raise ValueError(
        f"shortchunk benchmark: need batch_size >= 2 (batch norm, in-batch negatives) and "
        f"steps >= 1; got {batch_size} and {steps}.")
  tag_model = branches.TagBranch()
  song_model = branches.AcousticBranch(widths=tuple(widths), mel=mel, num_samples=num_samples)
  k_audio, k_words, k_tag, k_song = jax.random.split(jax.random.key(seed), 4)
  audio = 0.1 * jax.random.normal(k_audio, (batch_size, num_samples))
  words = jax.random.normal(k_words, (batch_size, branches.WORD_DIM))
  tag_vars = jax.jit(tag_model.init)(k_tag, words)
  song_vars = jax.jit(song_model.init)(k_song, audio)
  params = {"tag": tag_vars["params"], "song": song_vars["params"]}
  stats = {"tag": tag_vars["batch_stats"], "song": song_vars["batch_stats"]}
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-4))  # torch Adam(weight_decay)
  state = (params, stats, tx.init(params))
  step = _make_step(tag_model, song_model, tx)

  state, result = timing.time_training_steps(step, state, (words, audio), batch_size=batch_size,
                                             steps=steps, what="shortchunk")
  song_params = sum(x.size for x in jax.tree.leaves(state[0]["song"]))
  return {**result,
          "widths": tuple(int(w) for w in widths), "num_samples": num_samples,
          "song_params": int(song_params)}


def run(quick: bool = False) -> dict[str, Any]:
  """Runs the benchmark; prints a one-row table and returns the measurements (and the table).

  Args:
    quick: a smoke run: widths `won_widths(8)`, batch 4, 2 timed steps (same input length);
      otherwise the full model (`won_widths(128)`), batch 16, 10 timed steps.
  """
  widths = shortchunk.won_widths(8) if quick else shortchunk.WON_WIDTHS
  batch_size, steps = (4, 2) if quick else (16, 10)
  r = measure(batch_size, steps, widths=widths)
  device = jax.devices()[0]
  r.update(platform=device.platform, device_kind=device.device_kind,
           device_count=jax.device_count())
  lines = [
      f"Short-chunk CNN acoustic branch + tag branch, cosine triplet loss, Adam (1e-4, wd 1e-4); "
      f"{r['num_samples']:,} samples at 22,050 Hz (log-mel on device), widths {r['widths']}, "
      f"{r['song_params']:,} song-branch parameters",
      f"{device.platform} ({device.device_kind}) x{jax.device_count()}, {os.cpu_count()} cores "
      f"visible, load {os.getloadavg()[0]:.1f}",
      "",
      "| batch | steps | s/step | examples/s | compile + first step (s) |",
      "|---|---|---|---|---|",
      f"| {r['batch_size']} | {r['steps']} | {r['step_s']:.3f} | {r['examples_per_s']:.2f} | "
      f"{r['compile_and_first_step_s']:.1f} |",
  ]
  r["table"] = "\n".join(lines)
  print(r["table"])
  return r
