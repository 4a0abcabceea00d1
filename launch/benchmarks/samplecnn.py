"""Benchmark: SampleCNN training throughput (examples per second) on the CPU.

Times a jitted training step of the full 3^9 model of Lee et al. (SMC 2017) as Platt's thesis trains
it for latent-factor regression (`musemb.models.samplecnn`, 59,049 raw samples in, the `factors`
head with 80 factors, `factor_mse_loss`, SGD with momentum 0.9 as in Lee et al. and the thesis,
batch norm statistics updated every step, dropout on). Data are random waveforms already on the
device, so the number is the model's own cost, not the input pipeline's. Compilation and a warm-up
step are excluded; the state is donated to the step as a training loop would.

    python -c "from launch.benchmarks import samplecnn; samplecnn.run()"
"""

from __future__ import annotations

import functools
import os

import jax
import optax

from launch.benchmarks import timing
from musemb.models import samplecnn

_NUM_FACTORS = 80


def _make_step(model: samplecnn.SampleCNN, tx: optax.GradientTransformation):
  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, audio, targets, rng):
    params, batch_stats, opt_state = state

    def loss_fn(p):
      out, updates = model.apply({"params": p, "batch_stats": batch_stats}, audio, train=True,
                                 rngs={"dropout": rng}, mutable=["batch_stats"])
      return samplecnn.factor_mse_loss(out, targets), updates["batch_stats"]

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_stats, opt_state), loss
  return step


def measure(batch_size: int, steps: int, seed: int = 0) -> dict[str, float]:
  """Trains `steps` timed steps (after one untimed warm-up); returns timings and the last loss."""
  model = samplecnn.SampleCNN(num_outputs=_NUM_FACTORS, head="factors")
  k_audio, k_target, k_init = jax.random.split(jax.random.key(seed), 3)
  audio = 0.1 * jax.random.normal(k_audio, (batch_size, model.num_samples))
  targets = jax.random.normal(k_target, (batch_size, _NUM_FACTORS))
  variables = model.init(k_init, audio[:1])
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  step = _make_step(model, tx)

  _, result = timing.time_training_steps(step, state, (audio, targets), batch_size=batch_size,
                                         steps=steps, what="SampleCNN")
  return result


def run(quick: bool = False) -> str:
  """Runs the benchmark; prints and returns a one-row table.

  Args:
    quick: batch 2, 3 timed steps (a smoke run); otherwise batch 16, 10 timed steps.
  """
  batch_size, steps = (2, 3) if quick else (16, 10)
  r = measure(batch_size, steps)
  device = jax.devices()[0]
  lines = [
      f"SampleCNN 3^9 training step (59,049 samples, {_NUM_FACTORS}-factor head, SGD+momentum), "
      f"{device.platform} x{jax.device_count()}, {os.cpu_count()} cores visible, "
      f"load {os.getloadavg()[0]:.1f}",
      "",
      "| batch | steps | s/step | examples/s | compile + first step (s) |",
      "|---|---|---|---|---|",
      f"| {r['batch_size']} | {r['steps']} | {r['step_s']:.3f} | {r['examples_per_s']:.2f} | "
      f"{r['compile_and_first_step_s']:.1f} |",
  ]
  text = "\n".join(lines)
  print(text)
  return text
