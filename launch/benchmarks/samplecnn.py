"""Benchmark: SampleCNN training throughput (examples per second) on the CPU, against PyTorch.

Times a jitted training step of the full 3^9 model of Lee et al. (SMC 2017) as Platt's thesis trains
it for latent-factor regression (`musemb.models.samplecnn`, 59,049 raw samples in, the `factors`
head with 80 factors, `factor_mse_loss`, SGD with momentum 0.9 as in Lee et al. and the thesis,
batch norm statistics updated every step, dropout on). Data are random waveforms already on the
device, so the number is the model's own cost, not the input pipeline's. Compilation and a warm-up
step are excluded; the state is donated to the step as a training loop would.

The peer is the same model and step in PyTorch (`TorchSampleCNN`: the same layers, widths, batch
norm momentum, dropout, head, loss and optimiser, eager mode on the CPU with all cores as torch
threads), timed the same way in the same process on the same batch size; the table checks that
both models have the same number of parameters. PyTorch is a benchmark-only peer, installed by
`bash launch/install_peers.sh`; without it the table has the musemb row only.

    python -c "from launch.benchmarks import samplecnn; samplecnn.run()"
"""

from __future__ import annotations

import functools
import os
import time

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


def torch_available() -> bool:
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def measure_torch(batch_size: int, steps: int, seed: int = 0) -> dict[str, float]:
  """The same training step in PyTorch (eager, CPU, all cores): one warm-up step, `steps` timed."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  torch.set_num_threads(os.cpu_count() or 1)
  flax_model = samplecnn.SampleCNN(num_outputs=_NUM_FACTORS, head="factors")

  def conv_bn_relu(c_in, c_out, kernel, stride, padding):
    # Flax's BatchNorm momentum m keeps m of the running average; PyTorch's momentum is 1 - m.
    return [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding),
            nn.BatchNorm1d(c_out, eps=1e-5, momentum=1.0 - flax_model.bn_momentum), nn.ReLU()]

  layers = conv_bn_relu(1, flax_model.stem_width, 3, 3, 0)
  width = flax_model.stem_width
  for w in flax_model.widths:
    layers += conv_bn_relu(width, w, 3, 1, 1) + [nn.MaxPool1d(3)]
    width = w
  layers += conv_bn_relu(width, flax_model.final_width, 1, 1, 0)
  layers += [nn.Flatten(), nn.Dropout(flax_model.dropout_rate),
             nn.Linear(flax_model.final_width, _NUM_FACTORS)]
  model = nn.Sequential(*layers).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  audio = 0.1 * torch.randn(batch_size, 1, flax_model.num_samples)
  targets = torch.nn.functional.normalize(torch.randn(batch_size, _NUM_FACTORS), dim=-1)

  def step():
    opt.zero_grad(set_to_none=True)
    pred = torch.nn.functional.normalize(model(audio), dim=-1)  # the factors head's l2 norm
    loss = torch.mean(torch.square(pred - targets))
    loss.backward()
    opt.step()
    return loss

  t0 = time.perf_counter()
  step()
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    loss = step()
  elapsed = time.perf_counter() - t0
  loss = loss.detach()
  if not torch.isfinite(loss):
    raise RuntimeError(f"PyTorch SampleCNN benchmark: the loss became {float(loss)}.")
  return {"batch_size": batch_size, "steps": steps, "seconds": elapsed,
          "step_s": elapsed / steps, "examples_per_s": batch_size * steps / elapsed,
          "compile_and_first_step_s": first, "loss": float(loss),
          "params": sum(p.numel() for p in model.parameters()),
          "version": torch.__version__, "threads": torch.get_num_threads()}


def run(quick: bool = False) -> str:
  """Runs the benchmark (and its PyTorch peer when installed); prints and returns the table.

  Args:
    quick: batch 2, 3 timed steps (a smoke run); otherwise batch 16, 10 timed steps.
  """
  batch_size, steps = (2, 3) if quick else (16, 10)
  r = measure(batch_size, steps)
  ours_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(
      samplecnn.SampleCNN(num_outputs=_NUM_FACTORS, head="factors").init, jax.random.key(0),
      jax.ShapeDtypeStruct((2, 3 ** 10), jax.numpy.float32))["params"]))
  device = jax.devices()[0]
  lines = [
      f"SampleCNN 3^9 training step (59,049 samples, {_NUM_FACTORS}-factor head, SGD+momentum), "
      f"{device.platform} x{jax.device_count()}, {os.cpu_count()} cores visible, "
      f"load {os.getloadavg()[0]:.1f}",
      "",
      "| system | parameters | batch | steps | s/step | examples/s | compile + first step (s) |",
      "|---|---|---|---|---|---|---|",
      f"| musemb (JAX {jax.__version__}) | {ours_params:,} | {r['batch_size']} | {r['steps']} | "
      f"{r['step_s']:.3f} | {r['examples_per_s']:.2f} | {r['compile_and_first_step_s']:.1f} |",
  ]
  if torch_available():
    t = measure_torch(batch_size, steps)
    lines.append(
        f"| PyTorch {t['version']} CPU ({t['threads']} threads) | {t['params']:,} | "
        f"{t['batch_size']} | {t['steps']} | {t['step_s']:.3f} | {t['examples_per_s']:.2f} | "
        f"{t['compile_and_first_step_s']:.1f} |")
    if t["params"] != ours_params:
      raise RuntimeError(f"SampleCNN benchmark: the PyTorch model has {t['params']:,} parameters, "
                         f"musemb's {ours_params:,}; they must be the same model.")
    lines += ["", f"ratio musemb/PyTorch examples/s: "
                  f"{r['examples_per_s'] / t['examples_per_s']:.2f}x (> 1: musemb is faster)"]
  else:
    lines += ["", "PyTorch is not installed here; `bash launch/install_peers.sh` installs the "
                  "peer (torch 2.13.0, CPU), then rerun `python -m launch.benchmark "
                  "--suite=samplecnn`."]
  text = "\n".join(lines)
  print(text)
  return text
