"""launch/benchmarks/timing.py: what it times and what it leaves out."""

import time

import jax.numpy as jnp
import pytest

from launch.benchmarks import timing


def _sleepy_step(first_s: float, each_s: float, calls: list):
  """A fake step: slow on its first call (compilation), then `each_s` per call."""
  def step(state, x, key):
    del key
    calls.append(state)
    time.sleep(first_s if len(calls) == 1 else each_s)
    return state + 1, jnp.asarray(x, jnp.float32)
  return step


def test_the_first_call_is_untimed_and_the_rest_are_counted():
  calls = []
  state, r = timing.time_training_steps(_sleepy_step(0.3, 0.02, calls), 0, (1.0,), batch_size=8,
                                        steps=5, what="fake")
  assert state == 6 and len(calls) == 6                 # one warm-up call + five timed steps
  assert 5 * 0.02 <= r["seconds"] < 0.3                 # the slow first call is not in it
  assert r["compile_and_first_step_s"] >= 0.3
  assert r["examples_per_s"] <= 8 * 5 / (5 * 0.02)


def test_a_non_finite_loss_is_an_error_naming_the_benchmark():
  with pytest.raises(RuntimeError, match="fake benchmark: the loss became nan"):
    timing.time_training_steps(_sleepy_step(0.0, 0.0, []), 0, (float("nan"),), batch_size=1,
                               steps=2, what="fake")
