"""Tests for musemb/models/text.py: padding never matters, the LSTM reads as eqs. (12)-(14) say."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musemb.models import text as text_models

VOCAB, EMBED, HIDDEN = 13, 6, 5
TEXTS = [[3, 7, 2, 9, 4, 12], [5], [8, 1, 11]]  # token ids (1 is UNK, a real token)


def _padded(length: int, pad_value: int = 0):
  ids = np.full((len(TEXTS), length), pad_value, np.int32)
  for i, t in enumerate(TEXTS):
    ids[i, :len(t)] = t
  return jnp.asarray(ids), jnp.asarray([len(t) for t in TEXTS], jnp.int32)


@pytest.fixture(scope="module")
def lstm():
  module = text_models.BiLSTM(vocab_size=VOCAB, embed_dim=EMBED, hidden_dim=HIDDEN)
  ids, lengths = _padded(10)
  return module, module.init(jax.random.key(0), ids, lengths)


def test_mean_embedding_is_the_mean_over_real_tokens_only():
  module = text_models.MeanEmbedding(vocab_size=VOCAB, embed_dim=EMBED)
  ids, lengths = _padded(10)
  variables = module.init(jax.random.key(1), ids, lengths)
  table = np.asarray(variables["params"]["embed"]["embedding"])
  out = np.asarray(module.apply(variables, ids, lengths))
  expected = np.stack([table[t].mean(axis=0) for t in TEXTS])  # eq. (11)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # Longer padding, or padding with another id, changes nothing.
  for ids2, lengths2 in (_padded(30), _padded(10, pad_value=4)):
    np.testing.assert_allclose(np.asarray(module.apply(variables, ids2, lengths2)), out,
                               rtol=1e-6, atol=1e-7)
  # An empty text is the zero vector.
  empty = module.apply(variables, jnp.zeros((1, 10), jnp.int32), jnp.zeros((1,), jnp.int32))
  assert np.array_equal(np.asarray(empty), np.zeros((1, EMBED)))


def test_lstm_output_does_not_depend_on_padding(lstm):
  module, variables = lstm
  out10 = np.asarray(module.apply(variables, *_padded(10)))
  out30 = np.asarray(module.apply(variables, *_padded(30)))
  out_other_pad = np.asarray(module.apply(variables, *_padded(30, pad_value=6)))
  assert out10.shape == (3, 2 * HIDDEN)
  np.testing.assert_allclose(out30, out10, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out_other_pad, out10, rtol=1e-5, atol=1e-6)


def _run_cell(params, table, tokens):
  """The final hidden state of an LSTM cell with `params` reading `tokens` in the given order."""
  cell = nn.OptimizedLSTMCell(HIDDEN)
  carry = (jnp.zeros((1, HIDDEN)), jnp.zeros((1, HIDDEN)))
  for t in tokens:
    carry, _ = cell.apply({"params": params}, carry, jnp.asarray(table[t])[None])
  return np.asarray(carry[1])[0]


def test_lstm_halves_are_the_backward_then_forward_final_states(lstm):
  module, variables = lstm
  params = variables["params"]
  table = np.asarray(params["embed"]["embedding"])
  out = np.asarray(module.apply(variables, *_padded(10)))
  for i, tokens in enumerate(TEXTS):
    h_fwd = _run_cell(params["forward_cell"], table, tokens)  # eq. (12), ends at token n
    h_bwd = _run_cell(params["backward_cell"], table, tokens[::-1])  # eq. (13), ends at token 1
    np.testing.assert_allclose(out[i, :HIDDEN], h_bwd, rtol=1e-4, atol=1e-6)  # eq. (14)
    np.testing.assert_allclose(out[i, HIDDEN:], h_fwd, rtol=1e-4, atol=1e-6)
    if len(tokens) > 1:
      # The backward cell reading left to right gives something else: the direction matters.
      wrong = _run_cell(params["backward_cell"], table, tokens)
      assert np.abs(wrong - out[i, :HIDDEN]).max() > 1e-3


def test_lstm_of_an_empty_text_is_zero(lstm):
  module, variables = lstm
  ids = jnp.asarray([[0] * 10, [4, 2] + [0] * 8], jnp.int32)
  out = np.asarray(module.apply(variables, ids, jnp.asarray([0, 2], jnp.int32)))
  assert np.array_equal(out[0], np.zeros(2 * HIDDEN)) and np.abs(out[1]).sum() > 0


def test_pretrained_init_starts_from_the_given_table_and_checks_its_shape():
  matrix = np.arange(VOCAB * EMBED, dtype=np.float32).reshape(VOCAB, EMBED) / 10
  module = text_models.MeanEmbedding(vocab_size=VOCAB, embed_dim=EMBED,
                                     embedding_init=text_models.pretrained_init(matrix))
  ids, lengths = _padded(10)
  variables = module.init(jax.random.key(0), ids, lengths)
  assert np.array_equal(np.asarray(variables["params"]["embed"]["embedding"]), matrix)
  wrong = text_models.BiLSTM(vocab_size=VOCAB, embed_dim=EMBED + 1,
                             embedding_init=text_models.pretrained_init(matrix))
  with pytest.raises(ValueError, match="embed_dim"):
    wrong.init(jax.random.key(0), ids, lengths)


def test_make_text_encoder_and_input_checks():
  assert text_models.make_text_encoder("features") is None
  assert isinstance(text_models.make_text_encoder("lstm", VOCAB), text_models.BiLSTM)
  assert text_models.make_text_encoder("mean", VOCAB).embed_dim == text_models.EMBED_DIM
  with pytest.raises(ValueError, match="unknown kind"):
    text_models.make_text_encoder("bert", VOCAB)
  module = text_models.MeanEmbedding(vocab_size=VOCAB)
  with pytest.raises(ValueError, match="lengths must be"):
    module.init(jax.random.key(0), jnp.zeros((2, 4), jnp.int32), jnp.zeros((3,), jnp.int32))
