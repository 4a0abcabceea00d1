"""Tests of musemb/models/samplecnn.py: Lee et al.'s 3^9 shapes, batch statistics, heads, losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musemb import ops
from musemb.models import samplecnn

# A 3-block variant (3^4 = 81 samples) that trains in well under a second on CPU.
_SMALL = dict(widths=(4, 4, 8), stem_width=4, final_width=8, num_samples=81)


def _small(head: str = "tags", num_outputs: int = 5, **kw) -> samplecnn.SampleCNN:
  return samplecnn.SampleCNN(num_outputs=num_outputs, head=head, **{**_SMALL, **kw})


def test_full_model_maps_59049_samples_to_one_frame():
  model = samplecnn.SampleCNN(num_outputs=50)
  audio = jax.ShapeDtypeStruct((2, 59049), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), audio)
  assert set(variables) == {"params", "batch_stats"}
  out, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, audio)
  assert out.shape == (2, 50)
  shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
  # Lee et al. Table 1 (3^9 model): every stage divides the length by 3.
  expected = {"stem": (2, 19683, 128),
              "block1": (2, 6561, 128), "block2": (2, 2187, 128), "block3": (2, 729, 256),
              "block4": (2, 243, 256), "block5": (2, 81, 256), "block6": (2, 27, 256),
              "block7": (2, 9, 256), "block8": (2, 3, 256), "block9": (2, 1, 512),
              "final": (2, 1, 512)}
  assert shapes == expected
  params = variables["params"]
  assert params["stem_conv"]["kernel"].shape == (3, 1, 128)
  assert params["final_conv"]["kernel"].shape == (1, 512, 512)
  assert params["head"]["kernel"].shape == (512, 50)
  # Running mean and variance for every batch norm: stem, nine blocks, final.
  assert len(variables["batch_stats"]) == 11


def test_rejects_wrong_input_length_and_config():
  model = _small()
  with pytest.raises(ValueError, match=r"expected \[batch, 81\]"):
    model.init(jax.random.key(0), jnp.zeros((2, 80)))
  with pytest.raises(ValueError, match=r"expected \[batch, 81\]"):
    model.init(jax.random.key(0), jnp.zeros((2, 81, 1)))
  with pytest.raises(ValueError, match="3\\^\\(blocks \\+ 1\\) = 81"):
    _small(num_samples=243).init(jax.random.key(0), jnp.zeros((2, 243)))
  with pytest.raises(ValueError, match="head='softmax'"):
    _small(head="softmax").init(jax.random.key(0), jnp.zeros((2, 81)))


def test_loss_helpers_match_hand_computation():
  logits = jnp.array([[2.0, -1.0], [0.0, 3.0]])
  labels = jnp.array([[1, 0], [0, 1]])
  p = 1 / (1 + np.exp(-np.asarray(logits)))
  y = np.asarray(labels)
  ref = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
  np.testing.assert_allclose(samplecnn.bce_loss(logits, labels), ref, rtol=1e-6)

  pred = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  targets = jnp.array([[0.0, 2.0], [3.0, 4.0]])  # normalised: [0, 1], [0.6, 0.8]
  np.testing.assert_allclose(samplecnn.factor_mse_loss(pred, targets), (1 + 1 + 0 + 0) / 4,
                             rtol=1e-6)
  # Only the targets' direction matters.
  np.testing.assert_allclose(samplecnn.factor_mse_loss(pred, 7 * targets),
                             samplecnn.factor_mse_loss(pred, targets), rtol=1e-6)


def test_l2_normalize_has_finite_gradient_at_zero():
  x = jnp.array([[0.0, 0.0], [3.0, 4.0]])
  np.testing.assert_allclose(ops.l2_normalize(x), [[0, 0], [0.6, 0.8]], rtol=1e-6)
  grad = jax.grad(lambda v: ops.l2_normalize(v).sum())(x)
  assert np.all(np.isfinite(grad))


def test_factor_head_outputs_unit_vectors():
  model = _small(head="factors", num_outputs=6)
  audio = jax.random.normal(jax.random.key(1), (3, 81))
  variables = model.init(jax.random.key(0), audio)
  out = model.apply(variables, audio)
  assert out.shape == (3, 6)
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("head", ["tags", "factors"])
def test_sgd_trains_and_updates_batch_stats(head):
  model = _small(head=head, num_outputs=5)
  k_audio, k_target, k_init = jax.random.split(jax.random.key(0), 3)
  audio = 0.3 * jax.random.normal(k_audio, (8, 81)) + 0.1
  if head == "tags":
    targets = (jax.random.uniform(k_target, (8, 5)) < 0.4).astype(jnp.float32)
    loss_fn = samplecnn.bce_loss
  else:
    targets = jax.random.normal(k_target, (8, 5))
    loss_fn = samplecnn.factor_mse_loss
  variables = model.init(k_init, audio)
  tx = optax.sgd(0.05, momentum=0.9)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, batch_stats, opt_state, rng):
    def loss(p):
      out, updates = model.apply({"params": p, "batch_stats": batch_stats}, audio, train=True,
                                 rngs={"dropout": rng}, mutable=["batch_stats"])
      return loss_fn(out, targets), updates["batch_stats"]
    (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, value

  params, stats = variables["params"], variables["batch_stats"]
  losses = []
  for i in range(30):
    params, stats, opt_state, value = step(params, stats, opt_state, jax.random.key(i))
    losses.append(float(value))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
  # The running averages moved away from their initial values (mean 0, variance 1).
  init_stats = variables["batch_stats"]
  for name in ("stem_bn", "block1_bn", "final_bn"):
    assert not np.allclose(stats[name]["mean"], init_stats[name]["mean"])
    assert not np.allclose(stats[name]["var"], init_stats[name]["var"])


def test_eval_uses_running_averages_and_is_deterministic():
  model = _small(dropout_rate=0.5)
  audio = jax.random.normal(jax.random.key(1), (4, 81))
  variables = model.init(jax.random.key(0), audio)
  # Make the running averages non-trivial with a few train-mode passes.
  stats = variables["batch_stats"]
  for i in range(3):
    _, upd = model.apply({**variables, "batch_stats": stats}, audio, train=True,
                         rngs={"dropout": jax.random.key(i)}, mutable=["batch_stats"])
    stats = upd["batch_stats"]
  trained = {**variables, "batch_stats": stats}
  a = model.apply(trained, audio)
  np.testing.assert_array_equal(a, model.apply(trained, audio))
  # Running averages: an example's output does not depend on the rest of its batch.
  np.testing.assert_allclose(model.apply(trained, audio[:1]), a[:1], rtol=1e-5, atol=1e-6)
  # Train mode normalises by the batch's statistics, so it does depend on the batch.
  t_full, _ = model.apply(trained, audio, train=True, rngs={"dropout": jax.random.key(0)},
                          mutable=["batch_stats"])
  t_half, _ = model.apply(trained, audio[:2], train=True, rngs={"dropout": jax.random.key(0)},
                          mutable=["batch_stats"])
  assert not np.allclose(t_full[:2], t_half)
  # Dropout only in train mode, and only with an rng.
  t1, _ = model.apply(trained, audio, train=True, rngs={"dropout": jax.random.key(1)},
                      mutable=["batch_stats"])
  t2, _ = model.apply(trained, audio, train=True, rngs={"dropout": jax.random.key(2)},
                      mutable=["batch_stats"])
  assert not np.allclose(t1, t2)
  with pytest.raises(Exception, match="dropout"):
    model.apply(trained, audio, train=True, mutable=["batch_stats"])


def test_benchmark_quick_run_reports_throughput():
  from launch.benchmarks import samplecnn as bench
  r = bench.measure(batch_size=2, steps=1)
  # A real training step of the full module ran (its timing logic: tests/benchmarks/timing_test.py).
  assert np.isfinite(r["loss"]) and r["steps"] == 1 and r["batch_size"] == 2


def test_bfloat16_compute_keeps_float32_params_and_a_close_loss():
  audio = 0.3 * jax.random.normal(jax.random.key(1), (4, 81))
  targets = jax.random.normal(jax.random.key(2), (4, 5))
  m32, m16 = _small(head="factors"), _small(head="factors", dtype="bfloat16")
  variables = jax.jit(m32.init)(jax.random.key(0), audio)
  # The same float32 parameters either way: bfloat16 is only the computation dtype.
  v16 = jax.jit(m16.init)(jax.random.key(0), audio)
  assert all(a.dtype == b.dtype == jnp.float32 and np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(v16)))

  def loss_and_grads(model):
    def loss_fn(p):
      out, state = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, audio,
                               train=True, rngs={"dropout": jax.random.key(3)},
                               mutable=["batch_stats", "intermediates"])
      return samplecnn.factor_mse_loss(out, targets), (out, state)
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])

  (l32, (out32, s32)), g32 = loss_and_grads(m32)
  (l16, (out16, s16)), g16 = loss_and_grads(m16)
  assert s16["intermediates"]["block1"][0].dtype == jnp.bfloat16  # really computed in bf16
  assert s32["intermediates"]["block1"][0].dtype == jnp.float32
  assert out16.dtype == jnp.float32 and l16.dtype == jnp.float32
  assert abs(float(l16) - float(l32)) <= 0.02 * float(l32)
  flat32, flat16 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g32, g16))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g16))
  assert np.dot(flat32, flat16) / np.linalg.norm(flat32) / np.linalg.norm(flat16) > 0.98
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16["batch_stats"]))
  from configs import common  # pylint: disable=g-import-not-at-top
  assert common.MODEL_DTYPES == samplecnn.COMPUTE_DTYPES  # the configs' model.dtype choices
  with pytest.raises(ValueError, match="dtype='float16'"):
    _small(dtype="float16").init(jax.random.key(0), audio)
