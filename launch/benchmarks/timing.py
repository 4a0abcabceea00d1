"""Timing of jitted training steps, shared by the model benchmarks (samplecnn, shortchunk)."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def time_training_steps(step: Callable[..., tuple[Any, jax.Array]], state: Any, inputs: tuple,
                        *, batch_size: int, steps: int, what: str) -> tuple[Any, dict[str, Any]]:
  """Runs `step(state, *inputs, key)` once untimed (compilation) and `steps` times timed.

  Returns the final state and {batch_size, steps, seconds, step_s, examples_per_s,
  compile_and_first_step_s, loss}; a non-finite final loss is an error naming `what`.
  """
  t0 = time.perf_counter()
  state, loss = step(state, *inputs, jax.random.key(0))
  loss.block_until_ready()
  compile_and_first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(steps):
    state, loss = step(state, *inputs, jax.random.key(i + 1))
  loss.block_until_ready()
  elapsed = time.perf_counter() - t0
  if not jnp.isfinite(loss):
    raise RuntimeError(f"{what} benchmark: the loss became {float(loss)} after {steps} steps.")
  return state, {"batch_size": batch_size, "steps": steps, "seconds": elapsed,
                 "step_s": elapsed / steps, "examples_per_s": batch_size * steps / elapsed,
                 "compile_and_first_step_s": compile_and_first_s, "loss": float(loss)}


def compile_with_flops(jitted: Callable[..., Any], *args) -> tuple[Callable[..., Any], float]:
  """Compiles `jitted` for `args` ahead of time; returns (executable, XLA's FLOPs per call).

  The count is XLA's own cost analysis of the optimised program (`compiled.cost_analysis()`):
  multiply-adds count two, loops count their body once, and NaN means the backend reports none.
  The executable takes the same arguments (donation included), so nothing compiles twice.
  """
  compiled = jitted.lower(*args).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jaxlibs: one dict per computation
    analysis = analysis[0] if analysis else None
  flops = float(analysis.get("flops", float("nan"))) if analysis else float("nan")
  return compiled, flops
