"""Tests for musemb/models/two_branch.py: layer order, batch norm, unit outputs, the text side."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb.models import text as text_models
from musemb.models import two_branch

RNG = np.random.default_rng(0)
AUDIO = RNG.normal(size=(6, 7)).astype(np.float32)
SENTENCES = RNG.normal(size=(6, 9)).astype(np.float32)


def _bn(x, mean, var, scale, bias, eps=1e-5):
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_branch_is_dense_relu_dense_batchnorm_l2():
  branch = two_branch.Branch(hidden_dim=5, out_dim=3)
  variables = branch.init(jax.random.key(0), AUDIO)
  p = jax.tree.map(np.asarray, variables["params"])
  assert set(p) == {"hidden", "out", "out_bn"}
  out, updates = branch.apply(variables, AUDIO, train=True, mutable=["batch_stats"])
  h = np.maximum(AUDIO @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0.0)
  z = h @ p["out"]["kernel"] + p["out"]["bias"]
  # Train mode: the batch's own statistics (biased variance), then the l2 normalisation.
  expected = _unit(_bn(z, z.mean(0), z.var(0), p["out_bn"]["scale"], p["out_bn"]["bias"]))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), 1.0, rtol=1e-5)
  # The running mean moves 10% of the way (PyTorch's momentum 0.1) from its start at 0.
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["out_bn"]["mean"]),
                             0.1 * z.mean(0), rtol=1e-4, atol=1e-6)
  # Eval mode uses the running statistics.
  stats = jax.tree.map(np.asarray, updates["batch_stats"]["out_bn"])
  evaluated = branch.apply({"params": variables["params"], **updates}, AUDIO)
  expected = _unit(_bn(z, stats["mean"], stats["var"], p["out_bn"]["scale"], p["out_bn"]["bias"]))
  np.testing.assert_allclose(np.asarray(evaluated), expected, rtol=1e-4, atol=1e-5)


def test_linear_variant_is_one_dense_layer():
  branch = two_branch.Branch(out_dim=4, linear=True, bn_last=False)
  variables = branch.init(jax.random.key(0), AUDIO)
  p = jax.tree.map(np.asarray, variables["params"])
  assert set(p) == {"out"} and "batch_stats" not in variables
  expected = _unit(AUDIO @ p["out"]["kernel"] + p["out"]["bias"])
  np.testing.assert_allclose(np.asarray(branch.apply(variables, AUDIO)), expected, rtol=1e-5)
  # With batch norm (the default) the linear branch keeps its out_bn.
  variables = two_branch.Branch(linear=True).init(jax.random.key(0), AUDIO)
  assert set(variables["params"]) == {"out", "out_bn"}
  with pytest.raises(ValueError, match="bn_hidden must be False"):
    two_branch.Branch(linear=True, bn_hidden=True).init(jax.random.key(0), AUDIO)


def test_wang_et_al_code_placement_normalises_the_hidden_layer():
  variables = two_branch.Branch(bn_hidden=True, bn_last=False).init(jax.random.key(0), AUDIO)
  assert set(variables["params"]) == {"hidden", "hidden_bn", "out"}


def test_two_branch_on_precomputed_features_and_with_an_encoder():
  model = two_branch.TwoBranch(hidden_dim=8, out_dim=4)
  variables = model.init(jax.random.key(0), AUDIO, SENTENCES)
  (a, t), _ = model.apply(variables, AUDIO, SENTENCES, train=True, mutable=["batch_stats"])
  assert a.shape == t.shape == (6, 4)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(t), axis=1), 1.0, rtol=1e-5)
  # embed_text alone is the text half of the call (eval mode).
  t_eval = model.apply(variables, SENTENCES, method=two_branch.TwoBranch.embed_text)
  _, t_both = model.apply(variables, AUDIO, SENTENCES)
  np.testing.assert_allclose(np.asarray(t_eval), np.asarray(t_both), rtol=1e-6)
  with pytest.raises(ValueError, match="no text encoder"):
    model.apply(variables, AUDIO, SENTENCES, jnp.ones(6, jnp.int32))

  encoder = text_models.MeanEmbedding(vocab_size=11, embed_dim=6)
  model = two_branch.TwoBranch(text_encoder=encoder, hidden_dim=8, out_dim=4)
  ids = jnp.asarray(RNG.integers(2, 11, (6, 5)), jnp.int32)
  lengths = jnp.asarray([5, 4, 3, 2, 1, 5], jnp.int32)
  variables = model.init(jax.random.key(0), AUDIO, ids, lengths)
  assert set(variables["params"]) == {"audio_branch", "text_branch", "text_encoder"}
  assert variables["params"]["text_branch"]["hidden"]["kernel"].shape == (6, 8)  # embed -> hidden
  a, t = model.apply(variables, AUDIO, ids, lengths)
  assert a.shape == t.shape == (6, 4)
  with pytest.raises(ValueError, match="needs text_lengths"):
    model.apply(variables, AUDIO, ids)
